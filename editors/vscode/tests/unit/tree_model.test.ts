import { strict as assert } from "node:assert";
import { test } from "node:test";
import type * as ext from "../../src/lsp_ext";
import {
  agentNode,
  ago,
  collisions,
  fileNodes,
  mergeChanged,
  parseNameStatus,
  rootNodes,
  sessionContext,
  stateIcon,
} from "../../src/tree_model";

function session(name: string, status: ext.Status, extra: Partial<ext.Session> = {}): ext.Session {
  return {
    name,
    status,
    state: status,
    branch: `para/${name}`,
    worktree: `/r/.para/worktrees/${name}`,
    base_branch: "main",
    base_commit: "a".repeat(40),
    created_at: 1,
    updated_at: 1,
    current: false,
    dirty: false,
    worktree_exists: status === "active" || status === "conflicted",
    branch_exists: true,
    head: "b".repeat(40),
    ahead: null,
    task: null,
    archived_branch: null,
    pending_op: null,
    integration: null,
    agent: null,
    report: null,
    plan: null,
    notes: [],
    outside_changes: [],
    ports: [],
    queued: null,
    queue_position: null,
    messages: [],
    head_branch: `para/${name}`,
    detached: false,
    ...extra,
  };
}

const list: ext.ListResult = {
  repo: "/r",
  current: null,
  sessions: [
    session("a", "active"),
    session("b", "review"),
    session("old", "integrated"),
    session("gone", "cancelled"),
    session("c", "conflicted", { integration: { target: "main", strategy: "squash", files: ["x.txt"] } }),
  ],
};

const status: ext.StatusResult = {
  repo: "/r",
  plans: [],
  sessions: [
    {
      name: "a",
      status: "active",
      task: "do a",
      ahead: 2,
      diffstat: null,
      last_activity: 1,
      stale: false,
      plan: null,
      integration: null,
      report: { task: "editing a.txt", tests: "passed", todos_done: 1, todos_total: 3, blocked: null, updated_at: 1 },
      agent: {
        profile: "scripted",
        mode: "editor",
        pid: 5,
        state: "running",
        exit_code: null,
        started_at: 1,
        ended_at: null,
        log: null,
        window: null,
        stops: [],
      },
    },
  ],
};

const conflicts: ext.ConflictsResult = {
  clean: false,
  sessions: [
    {
      session: "a",
      target: "main",
      commit: null,
      includes_uncommitted: false,
      clean: true,
      files: [],
      hunks: {},
      unrelated: false,
    },
    {
      session: "b",
      target: "main",
      commit: null,
      includes_uncommitted: false,
      clean: false,
      files: ["m.txt"],
      hunks: {},
      unrelated: false,
    },
  ],
  pairs: [{ a: "a", b: "b", files: ["shared.txt"], hunks: {} }],
  unrelated: [],
};

test("history (cancelled, integrated) is behind the filter", () => {
  const names = (h: boolean) => rootNodes({ list, status, conflicts: null }, h).map((n) => n.label);
  assert.deepEqual(names(false), ["a", "b", "c"]);
  assert.deepEqual(names(true), ["a", "b", "old", "gone", "c"]);
});

test("a session item shows state, agent, commits ahead, collisions and the last self-report", () => {
  const [a, b] = rootNodes({ list, status, conflicts }, false);
  assert.equal(a.description, "active · agent running · 2 ahead · collides with b · “editing a.txt”");
  assert.match(a.tooltip ?? "", /reports: editing a\.txt · tests passed · todos 1\/3/);
  assert.equal(b.description, "review · collides with a · conflicts with main");
  assert.equal(a.icon, "git-branch");
});

test("a session's ports (session.ports) show in its description and tooltip", () => {
  const withPorts = { ...list, sessions: [session("p", "active", { ports: [20000, 20001] })] };
  const [p] = rootNodes({ list: withPorts, status: null, conflicts: null }, false);
  assert.equal(p.description, "active · :20000 :20001");
  assert.match(p.tooltip ?? "", /^ports: 20000 20001 \(PARA_PORT 20000\)$/m);
  const [a] = rootNodes({ list, status: null, conflicts: null }, false);
  assert.doesNotMatch(a.tooltip ?? "", /ports/);
});

test("context values drive the menus: status first, then worktree and agent flags", () => {
  assert.equal(sessionContext(list.sessions[0], status.sessions[0]), "session.active.worktree.agent");
  assert.equal(sessionContext(list.sessions[1], undefined), "session.review");
  assert.equal(stateIcon("finish-pending"), "loading~spin");
  assert.equal(stateIcon("conflicted"), "warning");
});

test("collisions are symmetric and unique", () => {
  assert.deepEqual(collisions("b", conflicts), { target: ["m.txt"], with: ["a"] });
  assert.deepEqual(collisions("zzz", conflicts), { target: [], with: [] });
  assert.deepEqual(collisions("a", null), { target: [], with: [] });
});

test("plans show their steps and tasks", () => {
  const plan: ext.Plan = {
    id: 3,
    source: "tasks",
    agent: "scripted",
    profile: null,
    workflow: "integrate",
    mode: "headless",
    skip_permissions: false,
    sandbox: null,
    executor: "local",
    base: null,
    created_at: 1,
    updated_at: 1,
    state: "running",
    current: 1,
    reason: null,
    steps: [
      {
        number: 1,
        tasks: [{ file: "tasks/TASK_1_a.md", name: "a", text: "do a", session_id: 1, state: "integrated" }],
      },
      { number: 2, tasks: [{ file: "tasks/TASK_2_b.md", name: "b", text: "do b", session_id: 2, state: "running" }] },
    ],
  };
  const [p] = rootNodes({ list: null, status: { ...status, plans: [plan] }, conflicts: null }, false);
  assert.equal(p.label, "plan 3");
  assert.equal(p.description, "running · step 2/2 · tasks");
  assert.deepEqual(
    p.children?.map((s) => [s.label, s.description, s.children?.map((t) => t.label)]),
    [
      ["step 1", "done", ["a"]],
      ["step 2", "running", ["b"]],
    ],
  );
});

test("git --name-status -z is parsed exactly, renames included, odd names intact", () => {
  const out = "M\0src/a b.ts\0R087\0old name.txt\0new\tname.txt\0A\0ünï.md\0D\0gone\0";
  assert.deepEqual(parseNameStatus(out), [
    { status: "M", path: "src/a b.ts" },
    { status: "R", path: "new\tname.txt", oldPath: "old name.txt" },
    { status: "A", path: "ünï.md" },
    { status: "D", path: "gone" },
  ]);
  assert.deepEqual(parseNameStatus(""), []);
  const merged = mergeChanged(parseNameStatus("M\0b.txt\0"), "a.txt\0b.txt\0");
  assert.deepEqual(merged, [
    { status: "?", path: "a.txt" },
    { status: "M", path: "b.txt" },
  ]);
  const nodes = fileNodes("s", merged);
  assert.deepEqual(
    nodes.map((n) => [n.label, n.description, n.path, n.icon]),
    [
      ["a.txt", "U", "a.txt", "diff-added"],
      ["b.txt", "M", "b.txt", "diff-modified"],
    ],
  );
  assert.equal(fileNodes("s", [{ status: "M", path: "d/e/f.ts" }])[0].description, "M d/e");
});

test("the agent child is its terminal when one runs here, else its log", () => {
  assert.equal(agentNode("a", status.sessions[0], true)?.contextValue, "agent.terminal");
  const headless = { ...status.sessions[0], agent: { ...status.sessions[0].agent!, mode: "headless", log: "/l" } };
  assert.deepEqual(
    [agentNode("a", headless, false)?.label, agentNode("a", headless, false)?.path],
    ["agent log", "/l"],
  );
  assert.equal(agentNode("a", undefined, false), null);
});

test("an agent on another host: where it runs and its last harvest, in the item, tooltip and agent child", () => {
  const now = 10_000;
  const a0 = status.sessions[0].agent!;
  const on = (agent: Partial<ext.AgentEvidence>): ext.StatusResult => ({
    ...status,
    sessions: [{ ...status.sessions[0], agent: { ...a0, mode: "headless", log: "/l", ...agent } }],
  });
  const item = (st: ext.StatusResult) => rootNodes({ list, status: st, conflicts: null }, false, now)[0];
  // never harvested: its work exists on the host only
  const never = on({ executor: "h1", host: "build1.lan", harvested_at: null, harvested_commit: null });
  assert.equal(item(never).description, "active · agent running · @h1 (never harvested) · 2 ahead · “editing a.txt”");
  assert.match(item(never).tooltip ?? "", /^runs on h1 \(build1\.lan\), never harvested$/m);
  assert.equal(agentNode("a", never.sessions[0], false, now)?.description, "scripted running on h1 (build1.lan)");
  // harvested 75 s ago: the age and the tip brought home
  const sha = "3f2a9c1d0e".padEnd(40, "7");
  const got = on({ executor: "h1", host: "build1.lan", harvested_at: now - 75, harvested_commit: sha });
  assert.match(item(got).description ?? "", / · @h1 \(harvest 1m ago\) · /);
  assert.match(item(got).tooltip ?? "", /^runs on h1 \(build1\.lan\), last harvest 1m ago \(3f2a9c1d0e\)$/m);
  assert.equal(
    agentNode("a", got.sessions[0], false, now)?.tooltip,
    "runs on h1 (build1.lan), last harvest 1m ago (3f2a9c1d0e)",
  );
  // lost: it ran there; what was harvested is what is kept
  const lost = on({ executor: "h1", host: "build1.lan", state: "lost", harvested_at: now - 5, harvested_commit: sha });
  assert.match(item(lost).description ?? "", /agent lost · @h1 \(harvest 5s ago\)/);
  assert.match(item(lost).tooltip ?? "", /^ran on h1 \(build1\.lan\), last harvest 5s ago \(3f2a9c1d0e\)$/m);
  // local (and a result from before executors, without the field): nothing extra anywhere
  for (const local of [on({ executor: "local" }), on({})]) {
    const n = item(local);
    assert.doesNotMatch(`${n.description}\n${n.tooltip}`, /@|runs on|ran on|harvest/);
    assert.equal(agentNode("a", local.sessions[0], false, now)?.tooltip, undefined);
  }
  assert.deepEqual([ago(now - 3, now), ago(now - 7200, now), ago(now - 3 * 86400, now)], ["3s", "2h", "3d"]);
});
