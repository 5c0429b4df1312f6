// Building request params and messages from what the user picked or typed: pure functions,
// tested with node --test.
import type * as ext from "./lsp_ext";

// The session-name rule of para/start (the sidecar checks it again; this only spares a
// round trip and shows the reason while typing).
export function validateSessionName(name: string): string | null {
  if (name === "") return null; // empty = let para draw a friendly name
  if (name.length > 64) return "at most 64 characters";
  if (!/^[A-Za-z0-9_-]+$/.test(name)) return "only ASCII letters, digits, - and _";
  if (!/^[A-Za-z0-9]/.test(name) || !/[A-Za-z0-9]$/.test(name)) return "must start and end with a letter or digit";
  if (/--|__/.test(name)) return "no doubled - or _";
  if (name.toLowerCase() === "archived") return '"archived" is reserved';
  return null;
}

export function validateMessage(message: string): string | null {
  if (message.trim() === "") return "a message is required";
  if (message.includes("\0")) return "no NUL characters";
  return null;
}

export type TaskChoice = { kind: "file"; file: string } | { kind: "prompt"; prompt: string };

export function dispatchParams(
  cwd: string,
  task: TaskChoice,
  opts: { name?: string; agent?: string; editorTerminals: boolean },
): ext.DispatchParams {
  const p: ext.DispatchParams = { cwd };
  if (task.kind === "file") p.file = task.file;
  else p.prompt = task.prompt;
  if (opts.name) p.name = opts.name;
  if (opts.agent) p.agent = opts.agent;
  // With agent terminals on, ask for the editor explicitly; off, para's own agent.mode decides.
  if (opts.editorTerminals) p.mode = "editor";
  return p;
}

// Plans are directories of TASK_<n>_<slug>.md files (para/dispatch).
export const TASK_FILE = /^TASK_(\d+)_[^/]+\.md$/;

export function planDirectories(relPaths: string[]): string[] {
  const dirs = new Set<string>();
  for (const p of relPaths) {
    const i = p.lastIndexOf("/");
    if (TASK_FILE.test(p.slice(i + 1))) dirs.add(i < 0 ? "." : p.slice(0, i));
  }
  return [...dirs].sort();
}

// The confirmation text for an integration, from its dry run.
export function forecastSummary(f: ext.IntegrateForecast): { ok: boolean; text: string } {
  if (f.error) return { ok: false, text: `${f.session} cannot land on ${f.target}: ${f.error}` };
  if (f.noop) return { ok: true, text: `${f.target} already has everything from ${f.session}.` };
  const commits = f.commits?.length ?? 0;
  const what = `${commits} commit${commits === 1 ? "" : "s"} of ${f.session} onto ${f.target} (${f.strategy})`;
  if (!f.clean) {
    return {
      ok: true,
      text: `Landing ${what} will conflict in: ${f.conflicts.join(", ")}. You resolve them in the session's worktree.`,
    };
  }
  return { ok: true, text: `Land ${what}: ${f.diffstat?.trim() || "no file changes"}.` };
}

// Follow-up actions offered with an error, chosen by its stable name (error.data.code).
export function errorActions(code: string): string[] {
  switch (code) {
    case "conflict":
      return ["Open conflicted files", "Continue", "Abort"];
    case "version_mismatch":
    case "sidecar_unavailable":
      return ["Restart sidecar"];
    case "config_error":
      return ["Edit configuration"];
    case "wrong_state":
    case "dirty":
    case "not_found":
      return ["Show sessions"];
    default:
      return [];
  }
}

// Sessions a command may act on, by status.
export const ACCEPTS: Record<string, string[]> = {
  integrate: ["active", "review"],
  finish: ["active"],
  continue: ["conflicted"],
  abort: ["conflicted"],
  cancel: ["active", "review", "conflicted"],
  recover: ["cancelled"],
  resume: ["active", "review", "conflicted"],
  worktree: ["active", "conflicted"],
  stop: ["active", "conflicted", "integrating"],
  restart: ["active"],
  send: ["active", "conflicted", "integrating"],
  any: ["active", "review", "conflicted", "integrating"],
};

// A follow-up for an agent (para/send, para/restart): what the sidecar accepts, said before sending.
export function validateFollowUp(text: string): string | null {
  const t = text.trim();
  if (!t) return "say what the agent should do";
  if (t.length > 20000) return "at most 20000 characters";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(t)) return "plain text only (no control characters)";
  return null;
}

export function eligible(sessions: ext.Session[], verb: keyof typeof ACCEPTS): ext.Session[] {
  const ok = new Set(ACCEPTS[verb]);
  return sessions.filter((s) => ok.has(s.status));
}
