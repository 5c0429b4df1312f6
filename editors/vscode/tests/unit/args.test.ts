import { strict as assert } from "node:assert";
import { test } from "node:test";
import {
  dispatchParams,
  eligible,
  errorActions,
  forecastSummary,
  planDirectories,
  validateFollowUp,
  validateMessage,
  validateSessionName,
} from "../../src/args";
import { checkHello, toParaError } from "../../src/connection";
import { ResponseError } from "vscode-jsonrpc/node";
import type * as ext from "../../src/lsp_ext";

test("session names follow para/start's rule", () => {
  for (const ok of ["", "fix-login", "a", "A_1", "x".repeat(64)]) assert.equal(validateSessionName(ok), null, ok);
  for (const bad of ["-a", "a-", "a--b", "a__b", "a b", "ä", "archived", "ARCHIVED", "x".repeat(65), "a/b"]) {
    assert.notEqual(validateSessionName(bad), null, bad);
  }
  assert.equal(validateMessage("  "), "a message is required");
  assert.equal(validateMessage("a\0b"), "no NUL characters");
  assert.equal(validateMessage("lands"), null);
});

test("dispatch params: exactly one task source, editor mode only when agent terminals are on", () => {
  assert.deepEqual(
    dispatchParams("/r", { kind: "file", file: "tasks/TASK_1_a.md" }, { agent: "scripted", editorTerminals: true }),
    {
      cwd: "/r",
      file: "tasks/TASK_1_a.md",
      agent: "scripted",
      mode: "editor",
    },
  );
  assert.deepEqual(dispatchParams("/r", { kind: "prompt", prompt: "fix it" }, { name: "n", editorTerminals: false }), {
    cwd: "/r",
    prompt: "fix it",
    name: "n",
  });
});

test("plan directories are those holding TASK_<n>_<slug>.md files", () => {
  assert.deepEqual(
    planDirectories([
      "tasks/TASK_1_a.md",
      "tasks/TASK_2_b.md",
      "tasks/notes.md",
      "plans/x/TASK_1_y.md",
      "TASK_3_top.md",
    ]),
    [".", "plans/x", "tasks"],
  );
});

test("the integrate confirmation comes from the dry run", () => {
  const base: ext.IntegrateForecast = {
    dry_run: true,
    session: "s",
    target: "main",
    strategy: "squash",
    target_commit: "c".repeat(40),
    includes_uncommitted: false,
    clean: true,
    conflicts: [],
    hunks: {},
    commits: [{ sha: "1", subject: "x" }],
    noop: false,
    diffstat: " 1 file changed, 1 insertion(+)\n",
  };
  assert.deepEqual(forecastSummary(base), {
    ok: true,
    text: "Land 1 commit of s onto main (squash): 1 file changed, 1 insertion(+).",
  });
  assert.match(forecastSummary({ ...base, clean: false, conflicts: ["a", "b"] }).text, /will conflict in: a, b/);
  assert.equal(forecastSummary({ ...base, error: "not a fast-forward" }).ok, false);
  assert.match(forecastSummary({ ...base, noop: true }).text, /already has everything/);
});

test("error follow-ups are chosen by error.data.code", () => {
  assert.deepEqual(errorActions("conflict"), ["Open conflicted files", "Continue", "Abort"]);
  assert.deepEqual(errorActions("version_mismatch"), ["Restart sidecar"]);
  assert.deepEqual(errorActions("invalid_input"), []);
  const e = toParaError(new ResponseError(-32003, "no session named 'x'", { code: "not_found", session: "x" }));
  assert.deepEqual([e.code, e.message, e.data.session], ["not_found", "no session named 'x'", "x"]);
  assert.equal(toParaError(new ResponseError(-32602, "bad params")).code, "protocol");
});

test("a sidecar of another protocol is refused with a fix", () => {
  const h: ext.HelloResult = { name: "para", version: "9.0", protocol: 1, pid: 1, started_at: 0, repos: [], busy: 0 };
  assert.equal(checkHello(h), null);
  assert.match(checkHello({ ...h, protocol: 2 }) ?? "", /speaks protocol 2 .*restart the sidecar/);
  assert.match(checkHello({ ...h, name: "gopls" }) ?? "", /not para/);
});

test("commands offer only sessions in a state they accept", () => {
  const s = (name: string, status: string) => ({ name, status }) as ext.Session;
  const all = [s("a", "active"), s("r", "review"), s("c", "conflicted"), s("x", "cancelled"), s("i", "integrated")];
  assert.deepEqual(
    eligible(all, "integrate").map((x) => x.name),
    ["a", "r"],
  );
  assert.deepEqual(
    eligible(all, "abort").map((x) => x.name),
    ["c"],
  );
  assert.deepEqual(
    eligible(all, "recover").map((x) => x.name),
    ["x"],
  );
});

test("follow-ups for agents: plain text, 1 to 20000 characters; stop/restart/send pick live sessions", () => {
  assert.equal(validateFollowUp("also update the README"), null);
  for (const bad of ["", "   ", "\x1b[31mred", "bell\x07", "x".repeat(20001)])
    assert.notEqual(validateFollowUp(bad), null);
  assert.equal(validateFollowUp("two\nlines\tand a tab"), null);
  const s = (name: string, status: string) => ({ name, status }) as unknown as ext.Session;
  const all = [s("a", "active"), s("r", "review"), s("c", "conflicted"), s("x", "cancelled")];
  assert.deepEqual(
    eligible(all, "restart").map((x) => x.name),
    ["a"],
  );
  assert.deepEqual(
    eligible(all, "stop").map((x) => x.name),
    ["a", "c"],
  );
  assert.deepEqual(
    eligible(all, "send").map((x) => x.name),
    ["a", "c"],
  );
});
