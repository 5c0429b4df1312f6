// Every `para.*` command, as a small factory over the Ctx: the quick picks and input boxes,
// then one request. A command invoked from a tree item gets the item; from the palette it asks.
import * as fs from "node:fs";
import * as path from "node:path";
import * as vscode from "vscode";
import * as args from "./args";
import * as config from "./config";
import type { Ctx } from "./ctx";
import * as ext from "./lsp_ext";
import type { TreeNode } from "./tree_model";

type Target = TreeNode | { session?: string; confirmed?: boolean } | string | undefined;
export type Cmd = (...a: unknown[]) => Promise<void>;

function targetName(t: Target): string | undefined {
  if (typeof t === "string") return t;
  return t?.session;
}

async function pickSession(
  ctx: Ctx,
  verb: keyof typeof args.ACCEPTS,
  t: Target,
  title: string,
): Promise<ext.Session | undefined> {
  const named = targetName(t);
  if (!ctx.snapshot.list || (named && !ctx.session(named))) await ctx.refresh();
  if (named) {
    const s = ctx.session(named);
    if (!s) throw new Error(`no session named ${named}`);
    return s;
  }
  const candidates = args.eligible(ctx.snapshot.list?.sessions ?? [], verb);
  if (candidates.length === 0) {
    void vscode.window.showInformationMessage(
      `para: no session to ${verb} (${args.ACCEPTS[verb].join(", ")} sessions only)`,
    );
    return undefined;
  }
  const pick = await vscode.window.showQuickPick(
    candidates.map((s) => ({ label: s.name, description: s.state, detail: s.task ?? undefined, session: s })),
    { title, placeHolder: "session" },
  );
  return pick?.session;
}

async function pickProfile(ctx: Ctx): Promise<string | undefined> {
  let configured: string[] = [];
  let fallback = "";
  try {
    const agents = (await ctx.request(ext.config, {
      cwd: ctx.cwd,
      action: "get",
      key: "agents",
    })) as ext.ConfigGetResult;
    if (agents.value && typeof agents.value === "object") configured = Object.keys(agents.value);
    const def = (await ctx.request(ext.config, {
      cwd: ctx.cwd,
      action: "get",
      key: "agent.default",
    })) as ext.ConfigGetResult;
    fallback = typeof def.value === "string" ? def.value : "";
  } catch {
    // the built-in profiles are still offered
  }
  const names = [...new Set([...ext.BUILTIN_PROFILES, ...configured])];
  if (fallback) names.sort((a, b) => Number(b === fallback) - Number(a === fallback));
  const pick = await vscode.window.showQuickPick(
    names.map((n) => ({ label: n, description: n === fallback ? "default (agent.default)" : undefined })),
    { title: "Para: agent profile", placeHolder: "which agent works on it" },
  );
  return pick?.label;
}

async function taskFiles(ctx: Ctx, pattern: string): Promise<string[]> {
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!folder) return [];
  const found = await vscode.workspace.findFiles(
    new vscode.RelativePattern(folder, pattern),
    "**/{.para,.git,node_modules}/**",
    500,
  );
  return found.map((u) => path.relative(ctx.cwd, u.fsPath).split(path.sep).join("/")).sort();
}

function confirm(message: string, detail: string, ...buttons: string[]): Thenable<string | undefined> {
  return vscode.window.showWarningMessage(message, { modal: true, detail }, ...buttons);
}

export function createCommands(ctx: Ctx): Record<string, Cmd> {
  const cwd = ctx.cwd;
  const cmd =
    (body: (t: Target, ...rest: unknown[]) => Promise<void>): Cmd =>
    (t?: unknown, ...rest: unknown[]) =>
      ctx.guard(() => body(t as Target, ...rest));

  return {
    "para.start": cmd(async () => {
      const name = await vscode.window.showInputBox({
        title: "Para: Start Session",
        prompt: "Session name (empty: para picks one)",
        placeHolder: "fix-login",
        validateInput: (v) => args.validateSessionName(v.trim()),
      });
      if (name === undefined) return;
      const s = await ctx.request(ext.start, { cwd, name: name.trim() || null });
      ctx.scheduleRefresh(0);
      void vscode.window.setStatusBarMessage(`para: started ${s.name} in ${s.worktree}`, 5000);
    }),

    "para.dispatch": cmd(async () => {
      const files = await taskFiles(ctx, "tasks/**/*.md");
      const items: (vscode.QuickPickItem & { file?: string })[] = [
        ...files.map((f) => ({ label: f, file: f, iconPath: new vscode.ThemeIcon("file") })),
        { label: "Write a prompt…", iconPath: new vscode.ThemeIcon("edit") },
      ];
      const pick = await vscode.window.showQuickPick(items, {
        title: "Para: Dispatch Agent — task",
        placeHolder: "task file (tasks/) or a prompt",
      });
      if (!pick) return;
      let task: args.TaskChoice;
      if (pick.file) task = { kind: "file", file: pick.file };
      else {
        const prompt = await vscode.window.showInputBox({
          title: "Para: Dispatch Agent — prompt",
          prompt: "What should the agent do?",
          validateInput: (v) => (v.trim() ? null : "the task is required"),
        });
        if (prompt === undefined) return;
        task = { kind: "prompt", prompt };
      }
      const agent = await pickProfile(ctx);
      if (agent === undefined) return;
      const name = await vscode.window.showInputBox({
        title: "Para: Dispatch Agent — session name",
        prompt: "Session name (empty: from the task file, else para picks one)",
        validateInput: (v) => args.validateSessionName(v.trim()),
      });
      if (name === undefined) return;
      const res = await ctx.request(
        ext.dispatch,
        args.dispatchParams(cwd, task, { name: name.trim(), agent, editorTerminals: config.agentTerminals() }),
      );
      ctx.scheduleRefresh(0);
      if ("name" in res) void vscode.window.setStatusBarMessage(`para: ${agent} works in ${res.name}`, 5000);
    }),

    "para.dispatchPlan": cmd(async () => {
      const dirs = args.planDirectories(await taskFiles(ctx, "**/TASK_*.md"));
      if (dirs.length === 0) {
        void vscode.window.showInformationMessage(
          "para: no directory with TASK_<n>_<slug>.md files (for example tasks/)",
        );
        return;
      }
      const dir = await vscode.window.showQuickPick(dirs, {
        title: "Para: Dispatch Plan",
        placeHolder: "directory of TASK_<n>_<slug>.md files",
      });
      if (!dir) return;
      const agent = await pickProfile(ctx);
      if (agent === undefined) return;
      const p = args.dispatchParams(
        cwd,
        { kind: "file", file: dir },
        { agent, editorTerminals: config.agentTerminals() },
      );
      const res = await ctx.request(ext.dispatch, p);
      ctx.scheduleRefresh(0);
      // a plan's answer carries the plan itself; a session's `plan` is only the plan's id
      const plan = "plan" in res && typeof res.plan === "object" ? res.plan : null;
      if (plan) void vscode.window.setStatusBarMessage(`para: plan ${plan.id} started`, 5000);
    }),

    "para.integrate": cmd(async (t) => {
      const s = await pickSession(ctx, "integrate", t, "Para: Integrate");
      if (!s) return;
      const forecast = (await ctx.request(ext.integrate, {
        cwd,
        session: s.name,
        dry_run: true,
      })) as ext.IntegrateForecast;
      const summary = args.forecastSummary(forecast);
      if (!summary.ok) throw new Error(summary.text);
      const go = await confirm(`Integrate ${s.name} into ${forecast.target}?`, summary.text, "Integrate");
      if (go !== "Integrate") return;
      const message = await vscode.window.showInputBox({
        title: `Para: Integrate ${s.name}`,
        prompt: "Commit message (empty: para's default)",
        validateInput: (v) => (v.includes("\0") ? "no NUL characters" : null),
      });
      if (message === undefined) return;
      const landed = await vscode.window.withProgress(
        {
          location: vscode.ProgressLocation.Notification,
          title: `para: integrating ${s.name} into ${forecast.target}…`,
        },
        () => ctx.request(ext.integrate, { cwd, session: s.name, message: message.trim() || null }),
      );
      ctx.scheduleRefresh(0);
      const commit = "integration" in landed ? landed.integration?.commit : undefined;
      void vscode.window.showInformationMessage(
        `para: ${s.name} landed on ${forecast.target}${commit ? ` (${commit.slice(0, 10)})` : ""}`,
      );
    }),

    "para.continue": cmd(async (t) => {
      const s = await pickSession(ctx, "continue", t, "Para: Continue Integration");
      if (!s) return;
      await vscode.workspace.saveAll(false);
      await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `para: continuing the integration of ${s.name}…` },
        () => ctx.request(ext.continue_, { cwd, session: s.name }),
      );
      ctx.scheduleRefresh(0);
      void vscode.window.showInformationMessage(`para: ${s.name} landed`);
    }),

    "para.abort": cmd(async (t) => {
      const s = await pickSession(ctx, "abort", t, "Para: Abort Integration");
      if (!s) return;
      const confirmed = typeof t === "object" && t !== null && "confirmed" in t && t.confirmed === true;
      if (!confirmed) {
        const go = await confirm(
          `Abort the integration of ${s.name}?`,
          "Its branch goes back to the commit it had before; a resolution in progress is kept under refs/para/backup/.",
          "Abort Integration",
        );
        if (go !== "Abort Integration") return;
      }
      const res = await ctx.request(ext.abort, { cwd, session: s.name });
      ctx.scheduleRefresh(0);
      void vscode.window.showInformationMessage(
        `para: ${s.name} is back at ${String((res as { restored?: string }).restored ?? "").slice(0, 10)}`,
      );
    }),

    "para.finish": cmd(async (t) => {
      const s = await pickSession(ctx, "finish", t, "Para: Finish Session");
      if (!s) return;
      const message = await vscode.window.showInputBox({
        title: `Para: Finish ${s.name}`,
        prompt: "Commit message (the session is squashed into one commit and kept for review)",
        validateInput: args.validateMessage,
      });
      if (message === undefined) return;
      await ctx.request(ext.finish, { cwd, session: s.name, message: message.trim() });
      ctx.scheduleRefresh(0);
    }),

    "para.cancel": cmd(async (t) => {
      const s = await pickSession(ctx, "cancel", t, "Para: Cancel Session");
      if (!s) return;
      const go = await confirm(
        `Cancel ${s.name}?`,
        "Uncommitted work is committed onto its branch (or, with Discard, kept only as a backup ref), the worktree is removed and the branch archived. Para: Recover brings it back.",
        "Cancel Session",
        "Discard Uncommitted Work",
      );
      if (!go) return;
      await ctx.request(ext.cancel, { cwd, session: s.name, discard: go === "Discard Uncommitted Work" });
      ctx.scheduleRefresh(0);
    }),

    "para.recover": cmd(async (t) => {
      const s = await pickSession(ctx, "recover", t, "Para: Recover Session");
      if (!s) return;
      await ctx.request(ext.recover, { cwd, session: s.name });
      ctx.scheduleRefresh(0);
    }),

    "para.resume": cmd(async (t) => {
      const s = await pickSession(ctx, "resume", t, "Para: Resume Session");
      if (!s) return;
      const res = await ctx.request(ext.resume, { cwd, session: s.name });
      ctx.scheduleRefresh(0);
      const open = await vscode.window.showInformationMessage(`para: ${s.name} is at ${res.worktree}`, "Open Worktree");
      if (open) await vscode.commands.executeCommand("para.openWorktree", s.name);
    }),

    "para.stopAgent": cmd(async (t) => {
      const s = await pickSession(ctx, "stop", t, "Para: Stop Agent");
      if (!s) return;
      const r = await ctx.request(ext.stop, { cwd, session: s.name });
      ctx.scheduleRefresh(0);
      void vscode.window.showInformationMessage(`para: ${r.message}`);
    }),

    "para.restartAgent": cmd(async (t) => {
      const s = await pickSession(ctx, "restart", t, "Para: Restart Agent");
      if (!s) return;
      const followUp = await vscode.window.showInputBox({
        title: `Para: Restart Agent of ${s.name}`,
        prompt: "A follow-up added to its task (empty: the task as it was, with unread messages)",
        validateInput: (v) => (v.trim() ? args.validateFollowUp(v) : null),
      });
      if (followUp === undefined) return;
      const running = ctx.sessionStatus(s.name)?.agent?.state === "running";
      if (running) {
        const go = await confirm(
          `The agent of ${s.name} is still running.`,
          "Stop it and relaunch it?",
          "Stop and Restart",
        );
        if (!go) return;
      }
      const r = await ctx.request(ext.restart, {
        cwd,
        session: s.name,
        prompt: followUp.trim() || null,
        stop: running,
      });
      ctx.scheduleRefresh(0);
      void vscode.window.setStatusBarMessage(
        r.queue_position ? `para: ${s.name} queued (position ${r.queue_position})` : `para: restarted ${s.name}`,
        5000,
      );
    }),

    "para.sendMessage": cmd(async (t) => {
      const s = await pickSession(ctx, "send", t, "Para: Send Message to Agent");
      if (!s) return;
      const message = await vscode.window.showInputBox({
        title: `Para: Message for the agent of ${s.name}`,
        prompt: "A follow-up; a running agent reads it with its next status report, else Restart gives it",
        validateInput: (v) => args.validateFollowUp(v),
      });
      if (message === undefined) return;
      const r = await ctx.request(ext.send, { cwd, session: s.name, message: message.trim() });
      void vscode.window.setStatusBarMessage(
        r.delivery === "running" ? `para: message ${r.id} for ${s.name}` : `para: message kept until Restart Agent`,
        5000,
      );
    }),

    "para.openWorktree": cmd(async (t) => {
      const s = await pickSession(ctx, "worktree", t, "Para: Open Worktree");
      if (!s) return;
      await vscode.commands.executeCommand("vscode.openFolder", vscode.Uri.file(s.worktree), { forceNewWindow: true });
    }),

    "para.openTerminal": cmd(async (t) => {
      const s = await pickSession(ctx, "any", t, "Para: Open Terminal");
      if (!s) return;
      if (ctx.terminals.show(s.name)) return;
      const agent = ctx.sessionStatus(s.name)?.agent;
      if (agent?.window && agent.state === "running") {
        // the agent runs in tmux: attach to its window (para attach, an argv, no shell line)
        vscode.window
          .createTerminal({ name: `para: ${s.name}`, shellPath: config.paraPath(), shellArgs: ["attach", s.name], cwd })
          .show();
        return;
      }
      if (!s.worktree_exists)
        throw new Error(`${s.name} has no worktree (${s.state}): Para: Resume Session recreates it`);
      vscode.window.createTerminal({ name: `${s.name}`, cwd: s.worktree }).show();
    }),

    "para.showLog": cmd(async (t) => {
      const s = await pickSession(ctx, "any", t, "Para: Show Agent Log");
      if (!s) return;
      const agent = ctx.sessionStatus(s.name)?.agent;
      if (agent?.log && fs.existsSync(agent.log)) {
        await vscode.window.showTextDocument(vscode.Uri.file(agent.log), { preview: true });
      } else if (!ctx.terminals.show(s.name)) {
        throw new Error(
          agent ? `${s.name}'s agent runs in ${agent.mode} mode and has no log file` : `${s.name} has no agent`,
        );
      }
    }),

    "para.showDiff": cmd(async (t) => {
      const s = await pickSession(ctx, "any", t, "Para: Show Diff");
      if (!s) return;
      const node = typeof t === "object" && t !== null && "path" in t ? (t as TreeNode) : undefined;
      const files = await ctx.changedFiles(s.name);
      const shown = node?.path ? files.filter((f) => f.path === node.path) : files;
      if (shown.length === 0) {
        void vscode.window.showInformationMessage(`para: ${s.name} changed nothing yet`);
        return;
      }
      const right = (p: string, status: string): vscode.Uri =>
        s.worktree_exists
          ? status === "D"
            ? ctx.gitUri(cwd, "", p)
            : vscode.Uri.file(path.join(s.worktree, p))
          : ctx.gitUri(cwd, status === "D" ? "" : (s.head ?? ""), p);
      const left = (p: string, status: string, old?: string): vscode.Uri =>
        ctx.gitUri(cwd, status === "A" || status === "?" ? "" : s.base_commit, old ?? p);
      if (shown.length === 1) {
        const f = shown[0];
        await vscode.commands.executeCommand(
          "vscode.diff",
          left(f.path, f.status, f.oldPath),
          right(f.path, f.status),
          `${s.name}: ${f.path} (against ${s.base_branch})`,
        );
        return;
      }
      await vscode.commands.executeCommand(
        "vscode.changes",
        `${s.name} against ${s.base_branch}`,
        shown.map((f) => [right(f.path, f.status), left(f.path, f.status, f.oldPath), right(f.path, f.status)]),
      );
    }),

    "para.openConflicts": cmd(async (t, errData) => {
      const name = targetName(t);
      if (!name) return;
      await ctx.refresh();
      const s = ctx.session(name);
      if (!s) return;
      const fromError = (errData as { data?: { markers?: string[]; files?: string[] } } | undefined)?.data;
      const files =
        fromError?.files ?? fromError?.markers?.map((m) => m.replace(/:\d+$/, "")) ?? s.integration?.files ?? [];
      for (const f of [...new Set(files)]) {
        const output = vscode.Uri.file(path.join(s.worktree, f));
        try {
          // VS Code's merge editor, with git's stages as base and sides (what the git extension does)
          await vscode.commands.executeCommand("_open.mergeEditor", {
            base: ctx.gitUri(s.worktree, ":1", f),
            input1: {
              uri: ctx.gitUri(s.worktree, ":2", f),
              title: s.integration?.kind === "rebase" ? "Target" : "Session",
            },
            input2: {
              uri: ctx.gitUri(s.worktree, ":3", f),
              title: s.integration?.kind === "rebase" ? "Session" : "Target",
            },
            output,
          });
        } catch {
          await vscode.window.showTextDocument(output, { preview: false });
        }
      }
    }),

    "para.conflicts": cmd(async () => {
      const res = await ctx.request(ext.conflicts, { cwd });
      const lines = ["# para conflicts forecast", ""];
      for (const s of res.sessions) {
        lines.push(
          `- **${s.session}** → ${s.target}: ${s.clean ? "lands cleanly" : `conflicts in ${s.files.join(", ")}`}`,
        );
      }
      for (const p of res.pairs) lines.push(`- **${p.a}** and **${p.b}** collide in ${p.files.join(", ")}`);
      if (res.sessions.length === 0) lines.push("No session to forecast.");
      else if (res.clean) lines.push("", "Everything lands cleanly.");
      const doc = await vscode.workspace.openTextDocument({ language: "markdown", content: lines.join("\n") + "\n" });
      await vscode.window.showTextDocument(doc, { preview: true });
    }),

    "para.editConfig": cmd(async () => {
      const res = (await ctx.request(ext.config, { cwd, action: "path" })) as ext.ConfigPathResult;
      const choices = [{ label: "User configuration", detail: res.paths.user }];
      if (res.paths.project)
        choices.push({ label: "Project configuration (.para/config.json)", detail: res.paths.project });
      const pick =
        choices.length === 1
          ? choices[0]
          : await vscode.window.showQuickPick(choices, { title: "Para: Edit Configuration" });
      if (!pick) return;
      const file = pick.detail;
      // a file that does not exist yet opens untitled at its path: saving creates it
      const uri = fs.existsSync(file) ? vscode.Uri.file(file) : vscode.Uri.file(file).with({ scheme: "untitled" });
      await vscode.window.showTextDocument(uri);
    }),

    "para.restartSidecar": cmd(async () => {
      await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: "para: restarting the sidecar" },
        () => ctx.conn.restartSidecar(),
      );
    }),

    "para.refresh": cmd(async () => {
      if (ctx.state.kind !== "connected") await ctx.conn.restart();
      await ctx.refresh();
    }),
    "para.showHistory": cmd(async () => ctx.setShowHistory(true)),
    "para.hideHistory": cmd(async () => ctx.setShowHistory(false)),
  };
}
