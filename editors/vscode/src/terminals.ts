// Agents in VS Code terminals: the answer to the sidecar's para/runInTerminal. The argv runs as
// is (shellPath = argv[0], shellArgs = the rest), never through a shell command line.
import * as vscode from "vscode";
import type * as ext from "./lsp_ext";

// para waits agent.editor_timeout (default 5 s) for the answer and then runs the agent
// elsewhere; a terminal whose process is not up by then is closed, never left running twice.
const PID_WAIT_MS = 4000;

export class AgentTerminals implements vscode.Disposable {
  private bySession = new Map<string, vscode.Terminal>();
  private disposables: vscode.Disposable[] = [];
  readonly onChanged = new vscode.EventEmitter<void>();

  constructor(private enabled: () => boolean) {
    this.disposables.push(
      vscode.window.onDidCloseTerminal((t) => {
        for (const [name, term] of this.bySession) {
          if (term === t) this.bySession.delete(name);
        }
        this.onChanged.fire();
      }),
    );
  }

  has(session: string): boolean {
    return this.bySession.has(session);
  }

  show(session: string): boolean {
    const t = this.bySession.get(session);
    t?.show();
    return t !== undefined;
  }

  // `para stop`: the agent's processes were signalled; its terminal has nothing left to show.
  stopped(session: string): void {
    const t = this.bySession.get(session);
    if (!t) return;
    this.bySession.delete(session);
    t.dispose();
    this.onChanged.fire();
  }

  async run(p: ext.RunInTerminalParams): Promise<ext.RunInTerminalResult> {
    if (!this.enabled()) return { ok: false };
    if (!Array.isArray(p.argv) || p.argv.length === 0 || !p.argv.every((a) => typeof a === "string")) {
      return { ok: false };
    }
    const terminal = vscode.window.createTerminal({
      name: p.title || `para: ${p.session}`,
      shellPath: p.argv[0],
      shellArgs: p.argv.slice(1),
      cwd: p.worktree,
      env: p.env,
      iconPath: new vscode.ThemeIcon("hubot"),
    });
    const pid = await Promise.race([
      Promise.resolve(terminal.processId),
      new Promise<undefined>((r) => setTimeout(() => r(undefined), PID_WAIT_MS)),
    ]);
    if (!pid) {
      terminal.dispose();
      return { ok: false };
    }
    this.bySession.set(p.session, terminal);
    terminal.show(true);
    this.onChanged.fire();
    return { ok: true, pid };
  }

  dispose(): void {
    this.disposables.forEach((d) => d.dispose());
    this.onChanged.dispose();
  }
}
