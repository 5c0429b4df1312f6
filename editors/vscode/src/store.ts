// The latest answers of para/list, para/status and para/conflicts, re-read when para says
// something changed. No "vscode" import: node --test drives it with a scripted request function.
import { Emitter } from "./emitter";
import * as ext from "./lsp_ext";
import type { Snapshot } from "./tree_model";

type Request = <P, R>(type: import("vscode-jsonrpc/node").RequestType<P, R, void>, params: P) => Promise<R>;

export interface StoreOptions {
  cwd: string;
  request: Request;
  log?: (line: string) => void;
  burstMs?: number; // events come in bursts: one refresh per burst
  conflictsMs?: number; // the collision forecast snapshots every session: less often
  retryMs?: number; // a refresh that failed is tried again (no later event may come to trigger one)
}

const EMPTY: Snapshot = { list: null, status: null, conflicts: null };

export class SessionStore {
  readonly onChanged = new Emitter<Snapshot>();
  private snap: Snapshot = EMPTY;
  private refreshTimer: NodeJS.Timeout | undefined;
  private conflictsTimer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private failures = 0;
  private generation = 0;

  constructor(private opts: StoreOptions) {}

  get snapshot(): Snapshot {
    return this.snap;
  }

  schedule(delay = this.opts.burstMs ?? 30): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => void this.refresh(), delay);
  }

  // One refresh at a time, in order: an older answer never replaces a newer one.
  refresh(): Promise<void> {
    this.chain = this.chain.then(() => this.read());
    return this.chain;
  }

  clear(): void {
    this.generation++;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.conflictsTimer);
    this.snap = EMPTY;
    this.onChanged.fire(this.snap);
  }

  dispose(): void {
    this.generation++;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.conflictsTimer);
    this.onChanged.clear();
  }

  private async read(): Promise<void> {
    const gen = this.generation;
    try {
      const [list, status] = await Promise.all([
        this.opts.request(ext.list, { cwd: this.opts.cwd, all: true }),
        this.opts.request(ext.status, { cwd: this.opts.cwd, all: true }),
      ]);
      if (gen !== this.generation) return;
      this.snap = { ...this.snap, list, status };
      this.failures = 0;
    } catch (e) {
      this.opts.log?.(`refresh: ${e instanceof Error ? e.message : String(e)}`);
      if (gen === this.generation && ++this.failures <= 3) this.schedule(this.opts.retryMs ?? 1000);
      return;
    }
    this.onChanged.fire(this.snap);
    clearTimeout(this.conflictsTimer);
    this.conflictsTimer = setTimeout(() => void this.readConflicts(), this.opts.conflictsMs ?? 1000);
  }

  private async readConflicts(): Promise<void> {
    const gen = this.generation;
    const live = (this.snap.list?.sessions ?? []).filter((s) => ["active", "review", "conflicted"].includes(s.status));
    let conflicts: ext.ConflictsResult | null = null;
    if (live.length > 0) {
      try {
        conflicts = await this.opts.request(ext.conflicts, { cwd: this.opts.cwd });
      } catch (e) {
        this.opts.log?.(`conflicts: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
    }
    if (gen !== this.generation) return;
    // only the forecast is replaced: the list and status may have been re-read meanwhile
    this.snap = { ...this.snap, conflicts };
    this.onChanged.fire(this.snap);
  }
}
