// The one connection to para: spawns `para lsp` (which finds or starts the sidecar and applies
// the version policy), speaks plain JSON-RPC through vscode-jsonrpc, says hello, subscribes and
// reconnects. Imports nothing from "vscode" so that node --test can drive it against a real
// sidecar.
import { ChildProcess, spawn } from "node:child_process";
import {
  createMessageConnection,
  MessageConnection,
  RequestType,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-jsonrpc/node";
import { Emitter } from "./emitter";
import * as ext from "./lsp_ext";

export type State =
  | { kind: "stopped" }
  | { kind: "connecting" }
  | { kind: "connected"; hello: ext.HelloResult }
  | { kind: "missing"; message: string }
  | { kind: "mismatch"; message: string }
  | { kind: "down"; message: string };

export interface ConnectionOptions {
  paraPath: string;
  cwd: string;
  env?: NodeJS.ProcessEnv;
  clientName?: string;
  editor?: boolean;
  // Delays before each automatic reconnection attempt after an unexpected end; when they are
  // used up the state stays "down" until restart().
  retryDelaysMs?: number[];
  log?: (line: string) => void;
}

// A para failure with its stable name (error.data.code); protocol-level errors get "protocol".
export class ParaError extends Error {
  constructor(
    message: string,
    readonly code: ext.ErrorName | "protocol",
    readonly data: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export function toParaError(e: unknown): ParaError {
  if (e instanceof ParaError) return e;
  if (e instanceof ResponseError) {
    const data = (e.data ?? {}) as Record<string, unknown>;
    const code = typeof data.code === "string" ? (data.code as ext.ErrorName) : "protocol";
    return new ParaError(e.message, code, data);
  }
  return new ParaError(e instanceof Error ? e.message : String(e), "sidecar_unavailable");
}

// The version policy an editor owes (protocol.md "Handshake and versions"): refuse another
// protocol; para lsp already replaced an idle sidecar of another version.
export function checkHello(h: ext.HelloResult): string | null {
  if (h.name !== "para") return `the server at the other end is not para (it says "${String(h.name)}")`;
  if (h.protocol !== ext.PROTOCOL_VERSION) {
    return (
      `the para sidecar speaks protocol ${h.protocol} (version ${h.version}), this extension speaks ` +
      `protocol ${ext.PROTOCOL_VERSION}: update the extension or para, then restart the sidecar`
    );
  }
  return null;
}

export class ParaConnection {
  readonly onState = new Emitter<State>();
  readonly onSessionsChanged = new Emitter<ext.SessionsChanged>();
  readonly onEvent = new Emitter<ext.ParaEvent>();
  // To editors only (subscribed with editor: true): `para open` and `para stop`.
  readonly onOpenWorktree = new Emitter<ext.OpenWorktreeParams>();
  readonly onStopTerminal = new Emitter<ext.StopTerminalParams>();
  private runHandler: (p: ext.RunInTerminalParams) => Promise<ext.RunInTerminalResult> = () =>
    Promise.resolve({ ok: false });
  private state_: State = { kind: "stopped" };
  private proc: ChildProcess | undefined;
  private conn: MessageConnection | undefined;
  private generation = 0;
  private retries = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private ready: Promise<void> | undefined;

  constructor(private opts: ConnectionOptions) {}

  get state(): State {
    return this.state_;
  }

  // The answer to para/runInTerminal; until one is set the connection declines ({ok: false}).
  setRunInTerminal(handler: (p: ext.RunInTerminalParams) => Promise<ext.RunInTerminalResult>): void {
    this.runHandler = handler;
  }

  // Change settings that take effect at the next (re)connection (path to para, editor offer).
  configure(opts: Partial<ConnectionOptions>): void {
    this.opts = { ...this.opts, ...opts };
  }

  // Offer (or withdraw) this editor for para/runInTerminal, now and at every reconnection.
  async setEditor(editor: boolean): Promise<void> {
    this.opts = { ...this.opts, editor };
    if (this.conn && this.state_.kind === "connected") {
      await this.conn.sendRequest(ext.subscribe, { events: true, editor });
    }
  }

  start(): Promise<void> {
    if (this.ready && (this.state_.kind === "connected" || this.state_.kind === "connecting")) return this.ready;
    this.ready = this.connect();
    return this.ready;
  }

  async restart(): Promise<void> {
    this.retries = 0;
    this.close();
    await this.start();
  }

  // Stop the sidecar itself (para/shutdown); the next start() autostarts a fresh one.
  async restartSidecar(): Promise<void> {
    if (this.conn && this.state_.kind === "connected") {
      const gen = this.generation;
      const ended = new Promise<void>((resolve) => this.proc?.once("exit", () => resolve()));
      try {
        await this.conn.sendRequest(ext.shutdown, {});
      } catch {
        // it may already be going away: the reconnection below starts a new one anyway
      }
      if (gen === this.generation) await ended;
    }
    await this.restart();
  }

  stop(): void {
    this.close();
    this.setState({ kind: "stopped" });
  }

  async request<P, R>(type: RequestType<P, R, void>, params: P): Promise<R> {
    await this.start().catch(() => undefined);
    const conn = this.conn;
    if (!conn || this.state_.kind !== "connected") {
      const why = "message" in this.state_ ? this.state_.message : "not connected to the para sidecar";
      throw new ParaError(why, this.state_.kind === "mismatch" ? "version_mismatch" : "sidecar_unavailable");
    }
    try {
      return await conn.sendRequest(type, params);
    } catch (e) {
      throw toParaError(e);
    }
  }

  private setState(s: State): void {
    this.state_ = s;
    this.opts.log?.(`state: ${s.kind}${"message" in s ? `: ${s.message}` : ""}`);
    this.onState.fire(s);
  }

  private close(): void {
    this.generation++;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const { conn, proc } = this;
    this.conn = undefined;
    this.proc = undefined;
    conn?.dispose();
    if (proc && proc.exitCode === null) {
      proc.stdin?.end(); // para lsp exits 0 when its stdin closes; the sidecar stays up
    }
  }

  private async connect(): Promise<void> {
    this.close();
    const gen = this.generation;
    this.setState({ kind: "connecting" });
    const proc = spawn(this.opts.paraPath, ["lsp"], {
      cwd: this.opts.cwd,
      env: this.opts.env ?? process.env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.proc = proc;
    let stderr = "";
    proc.stderr?.setEncoding("utf8");
    proc.stderr?.on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-4000);
      this.opts.log?.(`para lsp: ${chunk.trimEnd()}`);
    });
    // Nothing is written before the process runs: a failed spawn (no such file) is a state,
    // not a write on a destroyed pipe.
    const spawnError = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      proc.once("spawn", () => resolve(null));
      proc.once("error", resolve);
    });
    proc.on("error", () => undefined);
    if (gen !== this.generation) return;
    if (spawnError) {
      this.proc = undefined;
      this.setState({
        kind: "missing",
        message:
          spawnError.code === "ENOENT"
            ? `"${this.opts.paraPath}" was not found: install para (pip install para_rpc) or set "para.path" to its full path`
            : `cannot start "${this.opts.paraPath} lsp": ${spawnError.message}`,
      });
      return;
    }
    const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));

    const conn = createMessageConnection(new StreamMessageReader(proc.stdout!), new StreamMessageWriter(proc.stdin!));
    this.conn = conn;
    conn.onRequest(ext.runInTerminal, (p) => this.runHandler(p));
    conn.onNotification(ext.sessionsChanged, (p) => this.onSessionsChanged.fire(p));
    conn.onNotification(ext.event, (p) => this.onEvent.fire(p));
    conn.onNotification(ext.openWorktree, (p) => this.onOpenWorktree.fire(p));
    conn.onNotification(ext.stopTerminal, (p) => this.onStopTerminal.fire(p));
    conn.onError(() => undefined); // the exit handler below decides what a broken stream means
    conn.listen();

    void exited.then(async (code) => {
      if (gen !== this.generation) return; // closed on purpose
      this.conn?.dispose();
      this.conn = undefined;
      await this.lost(code, stderr);
    });

    const handshake = (async () => {
      const h = await conn.sendRequest(ext.hello, {
        client: this.opts.clientName ?? "vscode",
        protocol: ext.PROTOCOL_VERSION,
      });
      const refused = checkHello(h);
      if (refused) return { refused };
      await conn.sendRequest(ext.subscribe, { events: true, editor: this.opts.editor ?? true });
      return { hello: h };
    })();

    const outcome = await Promise.race([
      handshake.then(
        (r) => ({ kind: "hello" as const, ...r }),
        (e: unknown) => ({ kind: "failed" as const, error: e }),
      ),
      exited.then((code) => ({ kind: "exit" as const, code })),
    ]);
    if (gen !== this.generation) return;
    if (outcome.kind === "hello" && "hello" in outcome && outcome.hello) {
      this.retries = 0;
      this.setState({ kind: "connected", hello: outcome.hello });
      return;
    }
    if (outcome.kind === "hello" && "refused" in outcome && outcome.refused) {
      this.close();
      this.setState({ kind: "mismatch", message: outcome.refused });
      return;
    }
    // The stream broke before the handshake: usually para lsp exited, and the exit handler
    // reports why; a para lsp still running after a refused hello is ended here.
    const code = await Promise.race([exited, new Promise<"alive">((r) => setTimeout(() => r("alive"), 2000))]);
    if (code === "alive" && gen === this.generation) {
      this.close();
      this.setState({ kind: "down", message: toParaError((outcome as { error: unknown }).error).message });
    }
  }

  private async lost(code: number | null, stderr: string): Promise<void> {
    const said =
      stderr
        .trim()
        .split("\n")
        .pop()
        ?.replace(/^para lsp: /, "") ?? "";
    if (code === 9 && /version|protocol/i.test(said)) {
      this.setState({ kind: "mismatch", message: said });
      return;
    }
    const message = said || `para lsp exited with status ${String(code)}`;
    const delays = this.opts.retryDelaysMs ?? [200, 1000, 3000];
    if (this.retries < delays.length) {
      const delay = delays[this.retries++];
      this.setState({ kind: "down", message: `${message}; reconnecting` });
      const gen = this.generation;
      await new Promise<void>((resolve) => {
        this.retryTimer = setTimeout(resolve, delay);
      });
      if (gen === this.generation) {
        this.ready = this.connect();
        await this.ready;
      }
      return;
    }
    this.setState({ kind: "down", message });
  }
}
