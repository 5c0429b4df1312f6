// What the Sessions view shows, as plain data: built from para/list, para/status and
// para/conflicts answers, with no VS Code types, so that node --test checks it directly.
import type * as ext from "./lsp_ext";

export type Collapsible = "none" | "collapsed" | "expanded";

export interface TreeNode {
  id: string;
  kind: "session" | "file" | "agent" | "plan" | "step" | "task" | "info";
  label: string;
  description?: string;
  tooltip?: string;
  icon: string; // a codicon id (ThemeIcon)
  contextValue: string;
  collapsible: Collapsible;
  session?: string;
  path?: string; // file nodes: repository-relative path; agent nodes: the log file
  children?: TreeNode[]; // static children (plans); sessions load theirs lazily
}

export interface Snapshot {
  list: ext.ListResult | null;
  status: ext.StatusResult | null;
  conflicts: ext.ConflictsResult | null;
}

export interface ChangedFile {
  status: string; // git's letter: A, M, D, R, C, T, U, or "?" for untracked
  path: string;
  oldPath?: string;
}

const HISTORY = new Set(["cancelled", "integrated"]);

const ICONS: Record<string, string> = {
  active: "git-branch",
  dirty: "edit",
  review: "eye",
  integrating: "sync~spin",
  conflicted: "warning",
  integrated: "check",
  cancelled: "circle-slash",
  missing: "question",
  "off-branch": "debug-disconnect",
};

export function stateIcon(state: string): string {
  if (state.endsWith("-pending")) return "loading~spin";
  return ICONS[state] ?? "circle-outline";
}

export function isHistory(s: Pick<ext.Session, "status">): boolean {
  return HISTORY.has(s.status);
}

// Who else a session's work collides with, from a para/conflicts forecast.
export function collisions(name: string, c: ext.ConflictsResult | null): { target: string[]; with: string[] } {
  if (!c) return { target: [], with: [] };
  const mine = c.sessions.find((s) => s.session === name);
  const others = c.pairs.filter((p) => p.a === name || p.b === name).map((p) => (p.a === name ? p.b : p.a));
  return { target: mine && !mine.clean ? mine.files : [], with: [...new Set(others)].sort() };
}

// How long ago `ts` (seconds since the epoch) was, as para's CLI says it: 12s, 4m, 2h, 3d.
export function ago(ts: number, now: number = Date.now() / 1000): string {
  const d = Math.max(0, Math.floor(now - ts));
  for (const [unit, n] of [
    ["d", 86400],
    ["h", 3600],
    ["m", 60],
  ] as const) {
    if (d >= n) return `${Math.floor(d / n)}${unit}`;
  }
  return `${d}s`;
}

// An agent placed on another machine by an executor (issue 16); a local one shows nothing extra.
export function isRemote(a: ext.AgentEvidence | null | undefined): a is ext.AgentEvidence {
  return !!a && (a.executor ?? "local") !== "local";
}

// "runs on h1 (build1.lan)" ("ran on" once it ended), the same words as `para status`.
export function runsOn(a: ext.AgentEvidence): string {
  return `${a.state === "running" ? "runs" : "ran"} on ${a.executor}${a.host ? ` (${a.host})` : ""}`;
}

// "last harvest 12s ago (3f2a9c1d0e)", or "never harvested": its work exists on the host only.
export function harvest(a: ext.AgentEvidence, now?: number): string {
  if (!a.harvested_at) return "never harvested";
  return `last harvest ${ago(a.harvested_at, now)} ago${a.harvested_commit ? ` (${a.harvested_commit.slice(0, 10)})` : ""}`;
}

export function sessionDescription(
  s: ext.Session,
  st: ext.SessionStatus | undefined,
  c: ext.ConflictsResult | null,
  now?: number,
): string {
  const parts: string[] = [s.state];
  if (s.integration && s.status === "integrating") parts.push(`→ ${s.integration.target}`);
  if (st?.agent) parts.push(`agent ${st.agent.state}`);
  if (isRemote(st?.agent)) {
    const a = st.agent;
    parts.push(`@${a.executor} (${a.harvested_at ? `harvest ${ago(a.harvested_at, now)} ago` : "never harvested"})`);
  }
  if (st?.ahead) parts.push(`${st.ahead} ahead`);
  if (s.ports?.length) parts.push(`:${s.ports.join(" :")}`);
  const col = collisions(s.name, c);
  if (col.with.length) parts.push(`collides with ${col.with.join(", ")}`);
  if (col.target.length) parts.push(`conflicts with ${c?.sessions.find((x) => x.session === s.name)?.target}`);
  if (st?.report) parts.push(`“${st.report.task}”`);
  return parts.join(" · ");
}

export function sessionTooltip(s: ext.Session, st: ext.SessionStatus | undefined, now?: number): string {
  const lines = [`${s.name}: ${s.state}`, `branch ${s.branch} (from ${s.base_branch})`];
  if (s.task) lines.push(`task: ${s.task}`);
  if (s.ports?.length) lines.push(`ports: ${s.ports.join(" ")} (PARA_PORT ${s.ports[0]})`);
  if (st?.agent) {
    const a = st.agent;
    lines.push(`agent: ${a.profile} (${a.mode}) ${a.state}${a.exit_code !== null ? `, exit ${a.exit_code}` : ""}`);
    if (isRemote(a)) lines.push(`${runsOn(a)}, ${harvest(a, now)}`);
  }
  const r = st?.report;
  if (r) {
    const todos = r.todos_total ? ` · todos ${r.todos_done ?? 0}/${r.todos_total}` : "";
    lines.push(`reports: ${r.task} · tests ${r.tests}${todos}${r.blocked ? ` · blocked: ${r.blocked}` : ""}`);
  }
  if (s.status === "conflicted" && s.integration?.files?.length) {
    lines.push(`conflicted files: ${s.integration.files.join(", ")}`);
  }
  for (const n of s.notes.slice(-3)) lines.push(`note: ${n}`);
  return lines.join("\n");
}

export function sessionContext(s: ext.Session, st: ext.SessionStatus | undefined): string {
  const flags = [`session.${s.status}`];
  if (s.worktree_exists) flags.push("worktree");
  if (st?.agent) flags.push(st.agent.log ? "log" : "agent");
  return flags.join(".");
}

export function sessionNodes(snap: Snapshot, showHistory: boolean, now?: number): TreeNode[] {
  const sessions = snap.list?.sessions ?? [];
  const byName = new Map((snap.status?.sessions ?? []).map((s) => [s.name, s]));
  return sessions
    .filter((s) => showHistory || !isHistory(s))
    .map((s) => {
      const st = byName.get(s.name);
      return {
        id: `session:${s.name}`,
        kind: "session" as const,
        label: s.name,
        description: sessionDescription(s, st, snap.conflicts, now),
        tooltip: sessionTooltip(s, st, now),
        icon: stateIcon(s.state),
        contextValue: sessionContext(s, st),
        collapsible: "collapsed" as const,
        session: s.name,
      };
    });
}

export function planNodes(snap: Snapshot): TreeNode[] {
  return (snap.status?.plans ?? []).map((p) => ({
    id: `plan:${p.id}`,
    kind: "plan" as const,
    label: `plan ${p.id}`,
    description: `${p.state} · step ${Math.min(p.current + 1, p.steps.length)}/${p.steps.length} · ${p.source}`,
    tooltip: p.reason ?? undefined,
    icon: p.state === "failed" ? "error" : p.state === "done" ? "check-all" : "list-ordered",
    contextValue: `plan.${p.state}`,
    collapsible: "expanded" as const,
    children: p.steps.map((step, i) => ({
      id: `plan:${p.id}:step:${step.number}`,
      kind: "step" as const,
      label: `step ${step.number}`,
      description: i < p.current ? "done" : i === p.current ? p.state : "waiting",
      icon: i < p.current ? "pass" : i === p.current ? "play-circle" : "circle-outline",
      contextValue: "plan.step",
      collapsible: "expanded" as const,
      children: step.tasks.map((t) => ({
        id: `plan:${p.id}:task:${t.file}`,
        kind: "task" as const,
        label: t.name,
        description: `${t.state} · ${t.file}`,
        icon: t.state === "integrated" ? "check" : t.state === "failed" ? "error" : "circle-outline",
        contextValue: `plan.task.${t.state}`,
        collapsible: "none" as const,
        session: t.name,
      })),
    })),
  }));
}

export function rootNodes(snap: Snapshot, showHistory: boolean, now?: number): TreeNode[] {
  return [...planNodes(snap), ...sessionNodes(snap, showHistory, now)];
}

export function fileNodes(session: string, files: ChangedFile[]): TreeNode[] {
  return files.map((f) => ({
    id: `file:${session}:${f.path}`,
    kind: "file" as const,
    label: f.path.split("/").pop() ?? f.path,
    description:
      `${f.status === "?" ? "U" : f.status} ${f.path.includes("/") ? f.path.slice(0, f.path.lastIndexOf("/")) : ""}`.trim(),
    tooltip: f.oldPath ? `${f.oldPath} → ${f.path}` : f.path,
    icon: f.status === "D" ? "diff-removed" : f.status === "A" || f.status === "?" ? "diff-added" : "diff-modified",
    contextValue: "file",
    collapsible: "none" as const,
    session,
    path: f.path,
  }));
}

// The agent child of a session: its VS Code terminal while one runs here, else its log file.
export function agentNode(
  session: string,
  st: ext.SessionStatus | undefined,
  hasTerminal: boolean,
  now?: number,
): TreeNode | null {
  const a = st?.agent;
  // on another host: where, and the age of the work brought home (its log is the harvested copy)
  const where = isRemote(a) ? ` on ${a.executor}${a.host ? ` (${a.host})` : ""}` : "";
  const tooltip = isRemote(a) ? `${runsOn(a)}, ${harvest(a, now)}` : undefined;
  if (hasTerminal) {
    return {
      id: `agent:${session}`,
      kind: "agent",
      label: "agent terminal",
      description: a ? `${a.profile} ${a.state}${where}` : undefined,
      tooltip,
      icon: "terminal",
      contextValue: "agent.terminal",
      collapsible: "none",
      session,
    };
  }
  if (a?.log) {
    return {
      id: `agent:${session}`,
      kind: "agent",
      label: "agent log",
      description: `${a.profile} ${a.state}${where}`,
      tooltip,
      icon: "output",
      contextValue: "agent.log",
      collapsible: "none",
      session,
      path: a.log,
    };
  }
  if (a) {
    return {
      id: `agent:${session}`,
      kind: "agent",
      label: `agent (${a.mode})`,
      description: `${a.profile} ${a.state}${where}`,
      tooltip,
      icon: "hubot",
      contextValue: "agent.other",
      collapsible: "none",
      session,
    };
  }
  return null;
}

// `git diff --name-status -z` output: "M\0path\0", renames/copies "R100\0old\0new\0".
export function parseNameStatus(out: string): ChangedFile[] {
  const parts = out.split("\0");
  const files: ChangedFile[] = [];
  for (let i = 0; i < parts.length;) {
    const code = parts[i++];
    if (!code) continue;
    const letter = code[0];
    if (letter === "R" || letter === "C") {
      const oldPath = parts[i++];
      const path = parts[i++];
      if (path !== undefined) files.push({ status: letter, path, oldPath });
    } else {
      const path = parts[i++];
      if (path !== undefined) files.push({ status: letter, path });
    }
  }
  return files;
}

// Tracked changes plus untracked files (`git ls-files -z --others --exclude-standard`),
// sorted by path; a path listed as both keeps git's letter.
export function mergeChanged(tracked: ChangedFile[], untrackedOut: string): ChangedFile[] {
  const seen = new Map(tracked.map((f) => [f.path, f]));
  for (const p of untrackedOut.split("\0")) {
    if (p && !seen.has(p)) seen.set(p, { status: "?", path: p });
  }
  return [...seen.values()].sort((a, b) => a.path.localeCompare(b.path));
}
