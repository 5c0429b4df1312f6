// The para protocol as this extension uses it (docs/protocol.md). Every method name and wire
// type lives in this file only, so a version generated from the server's Structs can replace
// it. Keys are snake_case exactly as on the wire: there is no conversion layer.
import { NotificationType, RequestType } from "vscode-jsonrpc/node";

export const PROTOCOL_VERSION = 1;

export interface Common {
  cwd: string;
  env?: Record<string, string>;
}

export interface HelloParams {
  client?: string;
  version?: string | null;
  protocol?: number | null;
}
export interface HelloResult {
  name: string;
  version: string;
  protocol: number;
  pid: number;
  started_at: number;
  repos: string[];
  busy: number;
}

export interface SubscribeParams {
  events?: boolean;
  editor?: boolean;
}
export interface SubscribeResult {
  subscribed: boolean;
  editor: boolean;
}

export interface Report {
  task: string;
  tests: "passed" | "failed" | "unknown";
  todos_done: number | null;
  todos_total: number | null;
  blocked: string | null;
  updated_at: number;
}

export interface IntegrationRecord {
  target: string;
  strategy: string;
  message?: string | null;
  pre?: string;
  kind?: "merge" | "rebase";
  files?: string[];
  commit?: string;
  [key: string]: unknown;
}

export interface AgentRun {
  profile: string;
  mode: string;
  pid: number | null;
  log: string | null;
  window: string | null;
  exit_code: number | null;
  [key: string]: unknown;
}

export interface Session {
  name: string;
  status: string;
  state: string;
  branch: string;
  worktree: string;
  base_branch: string;
  base_commit: string;
  created_at: number;
  updated_at: number;
  current: boolean;
  dirty: boolean;
  worktree_exists: boolean;
  branch_exists: boolean;
  head: string | null;
  ahead: number | null;
  task: string | null;
  archived_branch: string | null;
  pending_op: string | null;
  integration: IntegrationRecord | null;
  agent: AgentRun | null;
  notes: string[];
}

export interface SessionDetail extends Session {
  commits?: { sha: string; subject: string; author: string; time: number }[];
  diffstat?: string;
}

export interface ListParams extends Common {
  all?: boolean;
}
export interface ListResult {
  repo: string;
  current: string | null;
  sessions: Session[];
}

export interface SessionParams extends Common {
  session?: string | null;
}

export interface StartParams extends Common {
  name?: string | null;
  base?: string | null;
}

export interface FinishParams extends SessionParams {
  message: string;
}

export interface IntegrateParams extends SessionParams {
  message?: string | null;
  dry_run?: boolean;
}
export interface IntegrateForecast {
  dry_run: true;
  session: string;
  target: string;
  strategy: string;
  clean: boolean;
  conflicts: string[];
  commits?: { sha: string; subject: string }[];
  noop?: boolean;
  diffstat?: string;
  error?: string;
}

export interface ContinueParams extends SessionParams {
  force?: boolean;
}

export interface CancelParams extends SessionParams {
  discard?: boolean;
}

export interface DispatchParams extends Common {
  name?: string | null;
  prompt?: string | null;
  file?: string | null;
  agent?: string | null;
  mode?: "auto" | "headless" | "tmux" | "editor" | null;
}

export interface StatusParams extends Common {
  session?: string | null;
  all?: boolean;
}
export interface AgentStatus {
  profile: string;
  mode: string;
  pid: number | null;
  state: "running" | "exited" | "failed" | "lost" | "unknown";
  exit_code: number | null;
  log: string | null;
  window: string | null;
}
export interface SessionStatus {
  name: string;
  status: string;
  task: string | null;
  report: Report | null;
  agent: AgentStatus | null;
  ahead: number | null;
  diffstat: string | null;
  stale: boolean;
  plan: number | null;
}
export interface PlanTask {
  file: string;
  name: string;
  session_id: number | null;
  state: "waiting" | "running" | "integrated" | "failed";
}
export interface Plan {
  id: number;
  source: string;
  steps: { number: number; tasks: PlanTask[] }[];
  state: "running" | "done" | "failed";
  current: number;
  reason: string | null;
}
export interface StatusResult {
  repo: string;
  sessions: SessionStatus[];
  plans: Plan[];
}

export interface ConflictsResult {
  sessions: { session: string; target: string; clean: boolean; files: string[] }[];
  pairs: { a: string; b: string; files: string[] }[];
  clean: boolean;
}

export interface ConfigParams {
  cwd?: string | null;
  action?: "show" | "get" | "set" | "path";
  key?: string | null;
}
export interface ConfigPathResult {
  paths: { user: string; project?: string };
}
export interface ConfigGetResult {
  key: string;
  value: unknown;
  source: string;
}

export interface SessionsChanged {
  repo: string;
  sessions: string[];
  kind: string;
}
export interface ParaEvent {
  id: number;
  ts: number;
  session: string | null;
  kind: string;
  data: Record<string, unknown>;
  repo: string;
}
export interface RunInTerminalParams {
  session: string;
  worktree: string;
  title: string;
  argv: string[];
  env: Record<string, string>;
}
export type RunInTerminalResult = { ok: true; pid: number } | { ok: false };

export type Empty = Record<string, never>;

export const hello = new RequestType<HelloParams, HelloResult, void>("para/hello");
export const subscribe = new RequestType<SubscribeParams, SubscribeResult, void>("para/subscribe");
export const shutdown = new RequestType<Empty, { stopping: boolean }, void>("para/shutdown");
export const list = new RequestType<ListParams, ListResult, void>("para/list");
export const show = new RequestType<SessionParams, SessionDetail, void>("para/show");
export const start = new RequestType<StartParams, SessionDetail, void>("para/start");
export const finish = new RequestType<FinishParams, SessionDetail, void>("para/finish");
export const integrate = new RequestType<IntegrateParams, Session | IntegrateForecast, void>("para/integrate");
export const continue_ = new RequestType<ContinueParams, Session, void>("para/continue");
export const abort = new RequestType<SessionParams, SessionDetail, void>("para/abort");
export const cancel = new RequestType<CancelParams, Session, void>("para/cancel");
export const recover = new RequestType<SessionParams, SessionDetail, void>("para/recover");
export const resume = new RequestType<SessionParams, SessionDetail, void>("para/resume");
export const dispatch = new RequestType<DispatchParams, SessionDetail | { plan: Plan }, void>("para/dispatch");
export const status = new RequestType<StatusParams, StatusResult, void>("para/status");
export const conflicts = new RequestType<Common, ConflictsResult, void>("para/conflicts");
export const config = new RequestType<ConfigParams, ConfigPathResult | ConfigGetResult, void>("para/config");

export const sessionsChanged = new NotificationType<SessionsChanged>("para/sessionsChanged");
export const event = new NotificationType<ParaEvent>("para/event");
export const runInTerminal = new RequestType<RunInTerminalParams, RunInTerminalResult, void>("para/runInTerminal");

// Built-in launcher profiles (docs/protocol.md, para/dispatch `agent`).
export const BUILTIN_PROFILES = ["claude", "codex", "gemini", "aider", "opencode", "scripted"];

// Error names of docs/protocol.md "Error codes" that the extension reacts to.
export type ErrorName =
  | "internal"
  | "invalid_input"
  | "not_a_repository"
  | "not_found"
  | "already_exists"
  | "wrong_state"
  | "git_failed"
  | "config_error"
  | "conflict"
  | "busy"
  | "sidecar_unavailable"
  | "version_mismatch"
  | "nothing_to_do"
  | "dirty"
  | "check_failed"
  | "untrusted";
