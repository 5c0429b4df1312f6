import { strict as assert } from "node:assert";
import { test } from "node:test";
import type { RequestType } from "vscode-jsonrpc/node";
import type * as ext from "../../src/lsp_ext";
import { SessionStore } from "../../src/store";

function listOf(state: string): ext.ListResult {
  return { repo: "/r", current: null, sessions: [{ name: "a", status: "active", state } as ext.Session] };
}

function stateOf(store: SessionStore): string | undefined {
  return store.snapshot.list?.sessions[0].state;
}

const STATUS: ext.StatusResult = { repo: "/r", sessions: [], plans: [] };
const CONFLICTS: ext.ConflictsResult = { sessions: [], pairs: [], unrelated: [], clean: true };

// A scripted sidecar: list answers come from `lists`, conflicts answer when released.
function fake(lists: (ext.ListResult | Error)[]) {
  let releaseConflicts: (() => void) | undefined;
  const conflictsAsked = new Promise<void>((asked) => {
    (fake as unknown as { asked: () => void }).asked = asked;
  });
  const calls: string[] = [];
  const request = <P, R>(type: RequestType<P, R, void>): Promise<R> => {
    calls.push(type.method);
    if (type.method === "para/list") {
      const next = lists.shift();
      if (!next) throw new Error("no more list answers scripted");
      return next instanceof Error ? Promise.reject(next) : Promise.resolve(next as R);
    }
    if (type.method === "para/status") return Promise.resolve(STATUS as R);
    (fake as unknown as { asked: () => void }).asked();
    return new Promise<R>((resolve) => {
      releaseConflicts = () => resolve(CONFLICTS as R);
    });
  };
  return { request, calls, conflictsAsked, release: () => releaseConflicts?.() };
}

test("a slow collision forecast never brings back an older list (regression: the view showed a finished session as running)", async () => {
  const f = fake([listOf("dirty"), listOf("review")]);
  const store = new SessionStore({ cwd: "/r", request: f.request, conflictsMs: 0 });
  await store.refresh();
  await f.conflictsAsked; // the forecast of the "dirty" list is under way...
  await store.refresh(); // ...when the session changes and the list is read again
  assert.equal(store.snapshot.list?.sessions[0].state, "review");
  const done = new Promise((r) => store.onChanged.on(r));
  f.release();
  await done;
  assert.equal(store.snapshot.list?.sessions[0].state, "review");
  assert.deepEqual(store.snapshot.conflicts, CONFLICTS);
  store.dispose();
});

test("a refresh that failed is tried again by itself", async () => {
  const f = fake([new Error("git failed"), listOf("active")]);
  const store = new SessionStore({ cwd: "/r", request: f.request, retryMs: 5, conflictsMs: 60_000 });
  const filled = new Promise((r) => store.onChanged.on(r));
  await store.refresh();
  assert.equal(store.snapshot.list, null);
  await filled;
  assert.equal(stateOf(store), "active");
  store.dispose();
});

test("refreshes run one at a time, in order", async () => {
  const f = fake([listOf("one"), listOf("two"), listOf("three")]);
  const store = new SessionStore({ cwd: "/r", request: f.request, conflictsMs: 60_000 });
  const seen: string[] = [];
  store.onChanged.on((s) => seen.push(s.list?.sessions[0].state ?? ""));
  await Promise.all([store.refresh(), store.refresh(), store.refresh()]);
  assert.deepEqual(seen, ["one", "two", "three"]);
  store.clear();
  assert.equal(store.snapshot.list, null);
  store.dispose();
});
