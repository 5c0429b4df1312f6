// The connection module against a real sidecar, through `para lsp` (tests/test_vscode.py
// starts nothing itself: it gives a repository and an isolated runtime directory, and
// `para lsp` autostarts the sidecar as it does for a user).
import { strict as assert } from "node:assert";
import { ChildProcess, execFile, spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { Emitter } from "../../src/emitter";
import { ParaConnection, ParaError, State } from "../../src/connection";
import * as ext from "../../src/lsp_ext";

const PARA = process.env.PARA_BIN ?? "";
const REPO = process.env.PARA_TEST_REPO ?? "";
const WAIT_MS = 60_000; // an event that takes longer than this is not coming

function next<T>(em: Emitter<T>, pred: (v: T) => boolean, what: string, seen: T[] = []): Promise<T> {
  const early = seen.find(pred);
  if (early !== undefined) return Promise.resolve(early);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sub.dispose();
      reject(new Error(`no ${what} within ${WAIT_MS} ms`));
    }, WAIT_MS);
    const sub = em.on((v) => {
      if (pred(v)) {
        clearTimeout(timer);
        sub.dispose();
        resolve(v);
      }
    });
  });
}

function para(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(PARA, args, { cwd: REPO }, (err, stdout, stderr) =>
      err ? reject(new Error(`para ${args.join(" ")}: ${stderr}`)) : resolve(stdout),
    ),
  );
}

function git(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile("git", args, { cwd: REPO }, (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout))),
  );
}

let conn: ParaConnection;
const events: ext.ParaEvent[] = [];
const changes: ext.SessionsChanged[] = [];
const asked: ext.RunInTerminalParams[] = [];
const agents: ChildProcess[] = [];

function connected(c: ParaConnection): Promise<ext.HelloResult> {
  const s = c.state;
  if (s.kind === "connected") return Promise.resolve(s.hello);
  return next(c.onState, (x: State) => x.kind === "connected", "connected state").then(
    (x) => (x as Extract<State, { kind: "connected" }>).hello,
  );
}

before(async () => {
  assert.ok(PARA && REPO, "PARA_BIN and PARA_TEST_REPO must be set (tests/test_vscode.py does)");
  conn = new ParaConnection({ paraPath: PARA, cwd: REPO, clientName: "vscode-protocol-test", editor: true });
  conn.onEvent.on((e) => events.push(e));
  conn.onSessionsChanged.on((n) => changes.push(n));
  // What a VS Code terminal does with the request: run argv as is in the worktree with the
  // added env, as its own process group, and answer with the pid.
  conn.setRunInTerminal(async (p) => {
    asked.push(p);
    const child = spawn(p.argv[0], p.argv.slice(1), {
      cwd: p.worktree,
      env: { ...process.env, ...p.env },
      stdio: "ignore",
      detached: true,
    });
    agents.push(child);
    await new Promise((resolve, reject) => child.once("spawn", resolve).once("error", reject));
    return { ok: true, pid: child.pid! };
  });
  await conn.start();
});

after(() => {
  conn.stop();
});

test("hello and subscribe through para lsp", async () => {
  const hello = await connected(conn);
  assert.equal(hello.name, "para");
  assert.equal(hello.protocol, ext.PROTOCOL_VERSION);
  const list = await conn.request(ext.list, { cwd: REPO });
  assert.equal(list.repo, REPO);
});

test("a CLI change arrives as para/event then para/sessionsChanged", async () => {
  await para("start", "cli-a");
  const ev = await next(conn.onEvent, (e) => e.kind === "started" && e.session === "cli-a", "started event", events);
  assert.equal(ev.data.branch, "para/cli-a");
  const ch = await next(
    conn.onSessionsChanged,
    (n) => n.kind === "started" && n.sessions.includes("cli-a"),
    "sessionsChanged",
    changes,
  );
  assert.equal(ch.repo, REPO);
  assert.ok(events.indexOf(ev) >= 0 && changes.indexOf(ch) >= 0);
});

test("a para failure keeps its stable name and data", async () => {
  await assert.rejects(conn.request(ext.show, { cwd: REPO, session: "nope" }), (e: unknown) => {
    assert.ok(e instanceof ParaError);
    assert.equal(e.code, "not_found");
    assert.equal(e.data.session, "nope");
    return true;
  });
});

test("an agent dispatched in editor mode runs through para/runInTerminal and reaches review", async () => {
  const res = await conn.request(ext.dispatch, {
    cwd: REPO,
    file: "tasks/TASK_1_hello.md",
    agent: "scripted",
    mode: "editor",
    name: "ed",
  });
  assert.ok("name" in res && res.name === "ed");
  const dispatched = await next(
    conn.onEvent,
    (e) => e.kind === "dispatched" && e.session === "ed",
    "dispatched",
    events,
  );
  assert.equal(dispatched.data.mode, "editor");
  assert.equal(asked.length, 1);
  const p = asked[0];
  assert.equal(p.session, "ed");
  assert.equal(p.worktree, res.worktree);
  assert.equal(p.title, "para: ed");
  assert.ok(Array.isArray(p.argv) && p.argv.length > 1);
  assert.equal(p.env.PARA_SESSION, "ed");
  assert.equal(dispatched.data.pid, agents[0].pid);
  const exited = await next(
    conn.onEvent,
    (e) => e.kind === "agent_exited" && e.session === "ed",
    "agent_exited",
    events,
  );
  assert.deepEqual([exited.data.exit_code, exited.data.status], [0, "review"]);
  const show = await conn.request(ext.show, { cwd: REPO, session: "ed" });
  assert.equal(show.status, "review");
  assert.equal(await git("show", `${show.branch}:hello.txt`), "hello from the agent\n");
});

test("para open from a shell asks this editor (para/openWorktree); stop and send answer", async () => {
  const opened: ext.OpenWorktreeParams[] = [];
  const sub = conn.onOpenWorktree.on((p) => opened.push(p));
  const started = await conn.request(ext.start, { cwd: REPO, name: "opened" });
  await para("open", "opened");
  const got = await next(conn.onOpenWorktree, (p) => p.session === "opened", "openWorktree", opened);
  sub.dispose();
  assert.deepEqual(got, { session: "opened", worktree: started.worktree, repo: REPO });
  const res = await conn.request(ext.send, { cwd: REPO, session: "opened", message: "hello" });
  assert.deepEqual([res.id, res.delivery], [1, "kept"]);
  const stopped = await conn.request(ext.stop, { cwd: REPO, session: "opened" });
  assert.equal(stopped.stopped, false);
  await conn.request(ext.cancel, { cwd: REPO, session: "opened" });
});

test("para/sessionsChanged follows every session operation of another client", async () => {
  await para("cancel", "cli-a");
  await next(
    conn.onSessionsChanged,
    (n) => n.kind === "cancelled" && n.sessions.includes("cli-a"),
    "cancelled",
    changes,
  );
  await para("recover", "cli-a");
  await next(
    conn.onSessionsChanged,
    (n) => n.kind === "recovered" && n.sessions.includes("cli-a"),
    "recovered",
    changes,
  );
});

test("the sidecar killed under it: the connection comes back by itself, subscribed again", async () => {
  const before = await connected(conn);
  const down = next(conn.onState, (s) => s.kind === "down", "down state");
  process.kill(before.pid, "SIGKILL");
  await down;
  const back = await next(conn.onState, (s) => s.kind === "connected", "reconnection");
  const hello = (back as Extract<State, { kind: "connected" }>).hello;
  assert.notEqual(hello.pid, before.pid);
  await para("start", "after-kill");
  await next(
    conn.onSessionsChanged,
    (n) => n.sessions.includes("after-kill"),
    "sessionsChanged after reconnection",
    changes,
  );
});

test("restartSidecar stops the sidecar and connects to a new one", async () => {
  const before = await connected(conn);
  await conn.restartSidecar();
  const hello = await connected(conn);
  assert.notEqual(hello.pid, before.pid);
  const list = await conn.request(ext.list, { cwd: REPO });
  assert.ok(list.sessions.some((s) => s.name === "after-kill"));
});

test("para not found: a clear state with the fix, and requests fail with it", async () => {
  const missing = new ParaConnection({ paraPath: "/nonexistent/bin/para", cwd: REPO, retryDelaysMs: [] });
  await missing.start();
  assert.equal(missing.state.kind, "missing");
  assert.match((missing.state as { message: string }).message, /was not found: .*para\.path/);
  await assert.rejects(missing.request(ext.list, { cwd: REPO }), /was not found/);
  missing.stop();
});

test("stop() ends para lsp; the sidecar stays up for the others", async () => {
  const hello = await connected(conn);
  conn.stop();
  assert.equal(conn.state.kind, "stopped");
  const again = new ParaConnection({ paraPath: PARA, cwd: REPO });
  await again.start();
  assert.equal((await connected(again)).pid, hello.pid);
  again.stop();
});
