// The files a session changed, read with git directly (argv lists, never a shell): the view
// needs exact paths, which para/diff's --stat summary shortens. No "vscode" import.
import { execFile } from "node:child_process";
import type * as ext from "./lsp_ext";
import { ChangedFile, mergeChanged, parseNameStatus } from "./tree_model";

export function git(cwd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("git", args, { cwd, maxBuffer: 64 * 1024 * 1024, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err) reject(new Error(`git ${args.join(" ")}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

// What the session changed against its fork point: the live worktree (uncommitted and
// untracked work included) while it exists, else its recorded tip.
export async function changedFiles(s: ext.Session, repoCwd: string): Promise<ChangedFile[]> {
  if (s.worktree_exists) {
    const [tracked, untracked] = await Promise.all([
      git(s.worktree, ["diff", "--name-status", "-z", "-M", s.base_commit, "--"]),
      git(s.worktree, ["ls-files", "-z", "--others", "--exclude-standard"]),
    ]);
    return mergeChanged(parseNameStatus(tracked), untracked);
  }
  if (!s.head) return [];
  return parseNameStatus(await git(repoCwd, ["diff", "--name-status", "-z", "-M", s.base_commit, s.head, "--"]));
}

// A file's content at a revision ("" when it does not exist there: an added or deleted file).
export async function show(cwd: string, rev: string, path: string): Promise<string> {
  try {
    return await git(cwd, ["show", `${rev}:${path}`]);
  } catch {
    return "";
  }
}
