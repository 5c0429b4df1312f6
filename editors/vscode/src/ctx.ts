// One Ctx owns all state: the connection, the latest answers of para/list, para/status and
// para/conflicts, the agent terminals, the status bar; every disposable goes through it.
import * as fs from "node:fs";
import * as vscode from "vscode";
import { ParaConnection, ParaError, State, toParaError } from "./connection";
import { changedFiles, show } from "./git_files";
import * as ext from "./lsp_ext";
import { StatusBar } from "./status";
import { SessionStore } from "./store";
import { AgentTerminals } from "./terminals";
import { ChangedFile, Snapshot } from "./tree_model";
import * as config from "./config";
import { errorActions } from "./args";

export const GIT_SCHEME = "para-git";

// A trace for the end-to-end test's measurements (activation, tree updates); off unless set.
const TRACE = process.env.PARA_VSCODE_TRACE;

export function trace(event: string, data: Record<string, unknown> = {}): void {
  if (TRACE) fs.appendFileSync(TRACE, JSON.stringify({ event, t: Date.now(), ...data }) + "\n");
}

export class Ctx implements vscode.Disposable {
  readonly conn: ParaConnection;
  readonly terminals: AgentTerminals;
  readonly out = vscode.window.createOutputChannel("Para");
  readonly onChanged = new vscode.EventEmitter<void>();
  readonly store: SessionStore;
  showHistory = false;
  private statusBar = new StatusBar();
  private files = new Map<string, Promise<ChangedFile[]>>();
  private disposables: vscode.Disposable[] = [];

  constructor(
    readonly extension: vscode.ExtensionContext,
    readonly cwd: string,
  ) {
    this.terminals = new AgentTerminals(config.agentTerminals);
    this.conn = new ParaConnection({
      paraPath: config.paraPath(),
      cwd,
      clientName: "vscode",
      editor: config.agentTerminals(),
      log: (line) => this.out.appendLine(line),
    });
    this.conn.setRunInTerminal((p) => this.terminals.run(p));
    this.store = new SessionStore({
      cwd,
      request: (type, params) => this.conn.request(type, params),
      log: (line) => this.out.appendLine(line),
    });
    this.store.onChanged.on(() => this.render());
    this.push(
      this.out,
      this.onChanged,
      this.statusBar,
      this.terminals,
      this.terminals.onChanged.event(() => this.onChanged.fire()),
    );
    this.conn.onState.on((s) => this.stateChanged(s));
    this.conn.onSessionsChanged.on((n) => this.sessionsChanged(n));
    this.conn.onEvent.on((e) => this.event(e));
    this.conn.onOpenWorktree.on((p) => {
      void vscode.commands.executeCommand("vscode.openFolder", vscode.Uri.file(p.worktree), { forceNewWindow: true });
    });
    this.conn.onStopTerminal.on((p) => this.terminals.stopped(p.session));
    this.push(
      vscode.workspace.registerTextDocumentContentProvider(GIT_SCHEME, {
        provideTextDocumentContent: (uri) => {
          const q = JSON.parse(uri.query) as { cwd: string; rev: string };
          return q.rev ? show(q.cwd, q.rev, uri.path.replace(/^\//, "")) : "";
        },
      }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration("para.path")) {
          this.conn.configure({ paraPath: config.paraPath() });
          void this.conn.restart();
        }
        if (e.affectsConfiguration("para.agentTerminals")) {
          void this.conn.setEditor(config.agentTerminals()).catch(() => undefined);
        }
      }),
    );
    void vscode.commands.executeCommand("setContext", "para.showHistory", false);
  }

  push(...d: vscode.Disposable[]): void {
    this.disposables.push(...d);
  }

  start(): Promise<void> {
    return this.conn.start();
  }

  get state(): State {
    return this.conn.state;
  }

  request<P, R>(type: import("vscode-jsonrpc/node").RequestType<P, R, void>, params: P): Promise<R> {
    return this.conn.request(type, params);
  }

  // A URI whose content is `path` at `rev` in the repository (or worktree) at `cwd`.
  gitUri(cwd: string, rev: string, path: string): vscode.Uri {
    return vscode.Uri.from({ scheme: GIT_SCHEME, path: "/" + path, query: JSON.stringify({ cwd, rev }) });
  }

  get snapshot(): Snapshot {
    return this.store.snapshot;
  }

  session(name: string): ext.Session | undefined {
    return this.snapshot.list?.sessions.find((s) => s.name === name);
  }

  sessionStatus(name: string): ext.SessionStatus | undefined {
    return this.snapshot.status?.sessions.find((s) => s.name === name);
  }

  changedFiles(name: string): Promise<ChangedFile[]> {
    const s = this.session(name);
    if (!s) return Promise.resolve([]);
    let p = this.files.get(name);
    if (!p) {
      p = changedFiles(s, this.cwd).catch((e: unknown) => {
        this.out.appendLine(`changed files of ${name}: ${String(e)}`);
        return [];
      });
      this.files.set(name, p);
    }
    return p;
  }

  setShowHistory(on: boolean): void {
    this.showHistory = on;
    void vscode.commands.executeCommand("setContext", "para.showHistory", on);
    this.onChanged.fire();
  }

  // Re-read the sessions, soon (events come in bursts: one refresh per burst).
  scheduleRefresh(delay?: number): void {
    this.store.schedule(delay);
  }

  refresh(): Promise<void> {
    return this.state.kind === "connected" ? this.store.refresh() : Promise.resolve();
  }

  private render(): void {
    this.files.clear();
    const live = (this.snapshot.list?.sessions ?? []).filter((s) => !["cancelled", "integrated"].includes(s.status));
    void vscode.commands.executeCommand("setContext", "para.sessionCount", live.length);
    this.statusBar.update(this.state, this.snapshot);
    trace("rendered", { sessions: live.map((s) => `${s.name}:${s.state}`) });
    this.onChanged.fire();
  }

  private stateChanged(s: State): void {
    void vscode.commands.executeCommand("setContext", "para.state", s.kind);
    if (s.kind === "connected") {
      this.scheduleRefresh(0);
    } else if (s.kind !== "connecting") {
      this.files.clear();
      this.store.clear();
    }
    this.statusBar.update(s, this.snapshot);
  }

  private sessionsChanged(n: ext.SessionsChanged): void {
    for (const name of n.sessions) this.files.delete(name);
    this.scheduleRefresh();
  }

  private event(e: ext.ParaEvent): void {
    trace("event", { kind: e.kind, session: e.session });
    if (e.kind === "conflicted" && e.session) {
      const files = (e.data.files as string[] | undefined) ?? [];
      void this.conflictNotice(e.session, String(e.data.target ?? ""), files);
    }
  }

  private async conflictNotice(session: string, target: string, files: string[]): Promise<void> {
    const pick = await vscode.window.showWarningMessage(
      `para: integrating ${session} into ${target} paused on conflicts in ${files.join(", ")}`,
      "Open conflicted files",
      "Continue",
      "Abort",
    );
    if (pick === "Open conflicted files") await vscode.commands.executeCommand("para.openConflicts", session);
    if (pick === "Continue") await vscode.commands.executeCommand("para.continue", { session });
    if (pick === "Abort") await vscode.commands.executeCommand("para.abort", { session, confirmed: true });
  }

  // `para: <message>`, with follow-ups chosen by error.data.code.
  async showError(e: unknown): Promise<void> {
    const err = toParaError(e);
    // A paused integration is announced by its `conflicted` event (with its actions) already.
    if (err.code === "conflict" && !err.data.markers && err.data.files) return;
    const actions = errorActions(err.code);
    const pick = await vscode.window.showErrorMessage(`para: ${err.message}`, ...actions);
    const session = typeof err.data.session === "string" ? err.data.session : undefined;
    switch (pick) {
      case "Restart sidecar":
        await vscode.commands.executeCommand("para.restartSidecar");
        break;
      case "Edit configuration":
        await vscode.commands.executeCommand("para.editConfig");
        break;
      case "Open conflicted files":
        await vscode.commands.executeCommand("para.openConflicts", session, err);
        break;
      case "Continue":
        await vscode.commands.executeCommand("para.continue", { session });
        break;
      case "Abort":
        await vscode.commands.executeCommand("para.abort", { session });
        break;
      case "Show sessions":
        await vscode.commands.executeCommand("workbench.view.extension.para");
        break;
    }
  }

  // Run a command body; a para failure becomes `para: <message>` with its actions.
  async guard(body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (e) {
      if (e instanceof ParaError || (e as { code?: unknown }).code !== undefined) await this.showError(e);
      else await this.showError(new ParaError(String(e), "internal"));
    }
  }

  dispose(): void {
    this.store.dispose();
    this.conn.stop();
    this.conn.onState.clear();
    this.disposables.forEach((d) => d.dispose());
  }
}
