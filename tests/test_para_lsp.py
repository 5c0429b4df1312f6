"""`para lsp`: the editor's entry point, as gopls `-remote=auto` is.

An editor starts `para lsp` with stdio and speaks LSP-framed JSON-RPC to it as if it had
connected to the sidecar's socket: no preamble, no socket path, no version handling.

- It finds the sidecar or starts one, with the version policy of every para client
  (`client.connect`): a sidecar of another version is replaced when idle, and refused with
  a clear message and exit 9 when busy (it is never used).
- It exits 0 when the editor closes stdin (or ends the connection with LSP `shutdown` +
  `exit`), leaving the sidecar up for everyone else.
- When the sidecar goes away under it (a crash, a restart, `para sidecar stop`), every
  request the editor still waits for gets a `sidecar_unavailable` error answer, then the
  editor's stdout closes and `para lsp` exits 9 with a message on stderr: never a hang.
- Real Neovim (`vim.lsp.rpc.start({"para", "lsp"}, …)`) runs the whole editor flow.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from para_rpc import PROTOCOL_VERSION, __version__
from para_rpc.client import Connection

from conftest import (PARA_ARGV, PARA_SCRIPT, PYTHON, Sidecar, branches, cli_env, commit_file, pid_alive,
                      run_para, sidecar_pids, stop_pid, wait_until)
from nvim_util import run_lua

TIMEOUT = 30  # an answer that takes longer than this is never coming


class Editor:
    """The editor's end of `para lsp`: raw LSP frames on the process's stdin and stdout."""

    def __init__(self, cwd: Path, env: dict[str, str | None] | None = None) -> None:
        self.proc = subprocess.Popen([*PARA_ARGV, "lsp"], cwd=cwd, env=cli_env(env), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.notifications: list[dict[str, Any]] = []
        self.raw = b""  # everything para lsp wrote to stdout
        self.ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                self.inbox.put(None)  # EOF
                return
            self.raw += chunk
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = int(dict(line.split(b": ", 1) for line in head.split(b"\r\n"))[b"Content-Length"])
                if len(rest) < length:
                    break
                self.inbox.put(json.loads(rest[:length]))
                buf = rest[length:]

    def send(self, msg: dict[str, Any]) -> None:
        body = json.dumps(msg).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send_request(self, method: str, params: Any = None) -> int:
        msg_id = next(self.ids)
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    def next_message(self, timeout: float = TIMEOUT) -> dict[str, Any] | None:
        """The next message from the sidecar; None at the end of para lsp's stdout."""
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"para lsp wrote nothing for {timeout}s") from None

    def answer(self, msg_id: int) -> dict[str, Any]:
        """The whole response to request `msg_id` (notifications on the way are kept)."""
        while True:
            msg = self.next_message()
            assert msg is not None, f"para lsp closed stdout before answering request {msg_id}"
            if "method" in msg:
                self.notifications.append(msg)
            elif msg.get("id") == msg_id:
                return msg

    def request(self, method: str, params: Any = None) -> Any:
        msg = self.answer(self.send_request(method, params))
        assert "error" not in msg, f"{method}: {msg['error']}"
        return msg["result"]

    def notification(self, method: str, **match: Any) -> dict[str, Any]:
        """The first notification `method` whose params contain `match`."""
        def fits(m: dict[str, Any]) -> bool:
            return m.get("method") == method and all(m["params"].get(k) == v for k, v in match.items())
        while not any(fits(m) for m in self.notifications):
            msg = self.next_message()
            assert msg is not None, f"para lsp closed stdout before {method} {match}"
            if "method" in msg:
                self.notifications.append(msg)
        return next(m for m in self.notifications if fits(m))

    def close_stdin(self) -> None:
        self.proc.stdin.close()

    def exit_status(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        """Wait for para lsp to exit: (its status, its stderr)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"para lsp did not exit within {timeout}s") from None
        err = self.proc.stderr.read().decode()
        assert "Traceback" not in err, err
        return rc, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def editors():
    made: list[Editor] = []

    def make(cwd: Path, env: dict[str, str | None] | None = None) -> Editor:
        ed = Editor(cwd, env)
        made.append(ed)
        return ed
    yield make
    for ed in made:
        ed.kill()


def hello(ed: Editor) -> dict[str, Any]:
    return ed.request("para/hello", {"client": "test-editor", "version": __version__, "protocol": PROTOCOL_VERSION})


def sidecar_answers(runtime: Path) -> dict[str, Any]:
    with Connection.open(runtime / "sidecar.sock", timeout=TIMEOUT) as conn:
        return conn.request("para/hello", {"client": "test"})


# ---- the editor's flow ---------------------------------------------------------------------

def test_an_editor_session_through_para_lsp(sidecar: Sidecar, repo: Path, runtime_dir: Path, editors) -> None:
    """hello -> subscribe(editor) -> start -> list -> a CLI change arrives as notifications ->
    LSP shutdown -> stdin closed: para lsp exits 0 and the sidecar stays up."""
    ed = editors(repo)
    info = hello(ed)
    assert ed.raw.startswith(b"Content-Length: ")  # no preamble: the first bytes are the answer
    assert (info["name"], info["version"], info["protocol"], info["pid"]) == \
        ("para", __version__, PROTOCOL_VERSION, sidecar.pid)
    assert ed.request("para/subscribe", {"events": True, "editor": True}) == {"subscribed": True, "editor": True}
    started = ed.request("para/start", {"cwd": str(repo), "name": "ed-own"})
    assert started["name"] == "ed-own" and Path(started["worktree"]).is_dir()
    listed = ed.request("para/list", {"cwd": str(repo)})
    assert [s["name"] for s in listed["sessions"]] == ["ed-own"]

    run_para("start", "ed-cli", cwd=repo)  # another process changes things
    event = ed.notification("para/event", session="ed-cli", kind="started")
    assert event["params"]["repo"] == str(repo)
    changed = ed.notification("para/sessionsChanged", kind="started", sessions=["ed-cli"])
    assert changed["params"]["repo"] == str(repo)
    assert {"para/ed-own", "para/ed-cli"} <= set(branches(repo))

    assert ed.request("shutdown") is None  # LSP shutdown: this connection only
    ed.close_stdin()
    assert ed.next_message() is None  # a clean end of stdout
    rc, err = ed.exit_status()
    assert rc == 0 and err == ""
    assert pid_alive(sidecar.pid) and sidecar_answers(runtime_dir)["pid"] == sidecar.pid


def test_lsp_exit_ends_para_lsp_with_status_0(sidecar: Sidecar, repo: Path, runtime_dir: Path, editors) -> None:
    """An LSP client leaves with `shutdown` then `exit` and waits for the server to go:
    the sidecar closes that connection, and para lsp exits 0 without stdin being closed."""
    ed = editors(repo)
    assert ed.request("initialize", {"processId": os.getpid(), "rootUri": repo.as_uri(), "capabilities": {}}
                      )["serverInfo"]["name"] == "para"
    ed.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    assert ed.request("para/list", {"cwd": str(repo)})["sessions"] == []
    assert ed.request("shutdown") is None
    ed.send({"jsonrpc": "2.0", "method": "exit"})
    assert ed.next_message() is None
    rc, err = ed.exit_status()
    assert rc == 0 and err == ""
    assert sidecar_answers(runtime_dir)["pid"] == sidecar.pid


def test_para_shutdown_from_the_editor_stops_the_sidecar_and_ends_para_lsp_with_0(
        sidecar: Sidecar, repo: Path, runtime_dir: Path, editors) -> None:
    """The editor asked the sidecar to stop (`para/shutdown`, e.g. a "Stop sidecar" command):
    its going away is no failure."""
    ed = editors(repo)
    hello(ed)
    assert ed.request("para/shutdown", {}) == {"stopping": True, "setups_stopped": []}
    assert ed.next_message() is None
    assert ed.exit_status() == (0, "")
    assert sidecar.proc.wait(timeout=TIMEOUT) == 0 and sidecar_pids(runtime_dir) == []


def test_para_lsp_starts_the_sidecar_when_none_runs(repo: Path, runtime_dir: Path, editors) -> None:
    assert sidecar_pids(runtime_dir) == []
    ed = editors(repo)
    info = hello(ed)
    assert sidecar_pids(runtime_dir) == [info["pid"]]
    assert ed.request("para/list", {"cwd": str(repo)})["repo"] == str(repo)
    ed.close_stdin()
    rc, err = ed.exit_status()
    assert rc == 0 and err == ""
    assert sidecar_answers(runtime_dir)["pid"] == info["pid"]  # left running for the next client


def test_messages_are_forwarded_whole_however_the_editor_cuts_them(sidecar: Sidecar, repo: Path,
                                                                   editors) -> None:
    """Two requests in one write, a third cut in the middle of its header and again in its
    (non-ASCII) body: each is answered once, in full."""
    ed = editors(repo)
    def frame(msg_id: int, params: dict[str, Any]) -> bytes:
        body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "para/hello", "params": params},
                          ensure_ascii=False).encode()
        return b"Content-Length: %d\r\n\r\n" % len(body) + body
    third = frame(3, {"client": "éditeur ✓"})
    for piece in (frame(1, {}) + frame(2, {"client": "x"}) + third[:9], third[9:30], third[30:]):
        ed.proc.stdin.write(piece)
        ed.proc.stdin.flush()
    answers = [ed.answer(i) for i in (1, 2, 3)]
    assert [a["result"]["pid"] for a in answers] == [sidecar.pid] * 3
    ed.close_stdin()
    assert ed.exit_status() == (0, "")


# ---- version policy ---------------------------------------------------------------------------

OTHER_VERSION = "0.0.1+other"
OTHER_SIDECAR = f"""
import sys
import para_rpc
para_rpc.__version__ = {OTHER_VERSION!r}  # a sidecar of another para release
from para_rpc.server import sidecar
sys.exit(sidecar.main(sys.argv[1:]))
"""

BLOCKING_CHECK = """\
import pathlib, sys, time
ctl = pathlib.Path(sys.argv[1])
(ctl / "blocked").write_text("check")
deadline = time.monotonic() + 120          # never outlive the test by much
while not (ctl / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
"""


@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    """A control directory for the blocking integrate.check; released at teardown."""
    d = tmp_path / "ctl"
    d.mkdir()
    (tmp_path / "check.py").write_text(BLOCKING_CHECK)
    yield d
    (d / "release").write_text("")


def blocking_check(ctl: Path) -> dict[str, str]:
    """The env (forwarded with a request) that makes an integration wait in its check until released."""
    return {"PARA_INTEGRATE_CHECK": f"{PYTHON} {ctl.parent / 'check.py'} {ctl}"}


def session_with_work(conn_request, repo: Path, name: str) -> None:
    wt = Path(conn_request("para/start", {"cwd": str(repo), "name": name})["worktree"])
    commit_file(wt, f"{name}.txt", "work\n", f"work of {name}")


def test_a_busy_sidecar_of_another_version_is_refused_not_replaced(repo: Path, runtime_dir: Path, ctl: Path,
                                                                    editors) -> None:
    """A sidecar of another version with an operation in flight is neither used nor stopped:
    para lsp says so on stderr, writes nothing to the editor, and exits 9."""
    proc = subprocess.Popen([PYTHON, "-c", OTHER_SIDECAR, "--idle-timeout", "0"], env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or sidecar_answers_or_none(runtime_dir),
                   what="the other-version sidecar")
        with Connection.open(runtime_dir / "sidecar.sock", timeout=TIMEOUT) as conn:
            assert conn.request("para/hello", {})["version"] == OTHER_VERSION
            session_with_work(conn.request, repo, "feat")
            conn.send({"jsonrpc": "2.0", "id": 77, "method": "para/integrate",
                       "params": {"cwd": str(repo), "session": "feat", "message": "land",
                                  "env": blocking_check(ctl)}})
            wait_until(lambda: (ctl / "blocked").exists(), what="the integration to be in its check")
            assert sidecar_answers(runtime_dir)["busy"] >= 1

            ed = editors(repo)
            ed.close_stdin()
            rc, err = ed.exit_status()
            assert rc == 9, err
            assert err.startswith("para lsp: ") and OTHER_VERSION in err and __version__ in err
            assert "para sidecar restart" in err
            assert ed.next_message() is None and ed.raw == b""

            # the other sidecar still runs, and its operation finishes
            assert proc.poll() is None and sidecar_answers(runtime_dir)["version"] == OTHER_VERSION
            (ctl / "release").write_text("")
            while True:
                msg = conn.read()
                if msg.get("id") == 77:
                    break
            assert msg["result"]["status"] == "integrated", msg
    finally:
        stop_pid(proc.pid)
        proc.wait()


def sidecar_answers_or_none(runtime: Path) -> dict[str, Any] | None:
    try:
        return sidecar_answers(runtime)
    except OSError:
        return None


def test_an_idle_sidecar_of_another_version_is_replaced(repo: Path, runtime_dir: Path, editors) -> None:
    proc = subprocess.Popen([PYTHON, "-c", OTHER_SIDECAR, "--idle-timeout", "0"], env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or sidecar_answers_or_none(runtime_dir),
                   what="the other-version sidecar")
        ed = editors(repo)
        info = hello(ed)
        assert info["version"] == __version__ and info["pid"] != proc.pid
        assert proc.wait(timeout=TIMEOUT) == 0  # asked to stop, and it did
        ed.close_stdin()
        assert ed.exit_status()[0] == 0
    finally:
        stop_pid(proc.pid)
        proc.wait()


# ---- the sidecar going away ---------------------------------------------------------------------

def test_sidecar_killed_while_a_request_is_in_flight(sidecar: Sidecar, repo: Path, ctl: Path, editors) -> None:
    """SIGKILL of the sidecar while the editor waits for an answer: the editor gets a
    sidecar_unavailable error for that request, then the end of the stream; para lsp exits 9
    and says why on stderr."""
    ed = editors(repo)
    hello(ed)
    session_with_work(ed.request, repo, "feat")
    waiting = ed.send_request("para/integrate", {"cwd": str(repo), "session": "feat", "message": "land",
                                                 "env": blocking_check(ctl)})
    wait_until(lambda: (ctl / "blocked").exists(), what="the integration to be in its check")

    os.kill(sidecar.pid, signal.SIGKILL)
    answer = ed.answer(waiting)
    assert answer["error"]["data"]["code"] == "sidecar_unavailable", answer
    assert answer["error"]["code"] == -32010 and "para/integrate" in answer["error"]["message"]
    assert ed.next_message() is None
    rc, err = ed.exit_status()
    assert rc == 9, err
    assert err.startswith("para lsp: the sidecar closed the connection") and "sidecar.sock.log" in err


def test_sidecar_stopped_under_an_idle_editor(sidecar: Sidecar, repo: Path, editors) -> None:
    """`para sidecar stop` while an editor is connected: its stream ends, para lsp exits 9 with
    a message (the editor sees a clear close, not a hang)."""
    ed = editors(repo)
    hello(ed)
    assert "sidecar stopped" in run_para("sidecar", "stop", cwd=repo).stdout
    assert ed.next_message() is None
    rc, err = ed.exit_status()
    assert rc == 9 and err.startswith("para lsp: the sidecar closed the connection"), err


# ---- real Neovim ----------------------------------------------------------------------------------

NVIM_SCRIPT = r"""
local repo = os.getenv("REPO")
local notes, exited = {}, nil
local function out(kind, value) io.stdout:write(kind .. " " .. vim.json.encode(value) .. "\n") end

local rpc = vim.lsp.rpc.start({ "para", "lsp" }, {
  notification = function(method, params) table.insert(notes, { method = method, params = params }) end,
  server_request = function(method, params) return { ok = false }, nil end,
  on_exit = function(code, signal) exited = { code = code, signal = signal } end,
}, { cwd = repo })

local function req(method, params)
  local r
  rpc.request(method, params, function(err, result) r = { err = err, result = result } end)
  assert(vim.wait(30000, function() return r ~= nil end, 10), "no response to " .. method)
  assert(r.err == nil, method .. ": " .. vim.inspect(r.err))
  return r.result
end

out("hello", req("para/hello", { client = "nvim", protocol = 1 }))
out("subscribe", req("para/subscribe", { events = true, editor = true }))
out("start", req("para/start", { cwd = repo, name = "nv-own" }))
out("list", req("para/list", { cwd = repo }))

local cli = vim.system({ "para", "start", "nv-cli" }, { cwd = repo }):wait()
assert(cli.code == 0, "para start nv-cli: " .. cli.stderr)
local function noted(method)
  for _, n in ipairs(notes) do
    if n.method == method and (n.params.session == "nv-cli" or vim.deep_equal(n.params.sessions, { "nv-cli" })) then
      return n
    end
  end
end
assert(vim.wait(30000, function() return noted("para/event") and noted("para/sessionsChanged") end, 10),
       "no notification of the CLI's change: " .. vim.inspect(notes))
out("event", noted("para/event").params)
out("changed", noted("para/sessionsChanged").params)

req("shutdown", nil)
rpc.notify("exit", nil)
assert(vim.wait(30000, function() return exited ~= nil end, 10), "para lsp did not exit")
out("exit", exited)
vim.cmd("qa!")
"""


def test_neovim_runs_the_editor_flow_through_para_lsp(sidecar: Sidecar, repo: Path, runtime_dir: Path,
                                                      tmp_path: Path) -> None:
    """Real Neovim 0.11.4: `vim.lsp.rpc.start({"para", "lsp"}, dispatchers)` runs hello ->
    subscribe(editor) -> start -> list -> a CLI change arrives as notifications -> shutdown;
    para lsp then exits 0 and the sidecar stays up."""
    res = run_lua(NVIM_SCRIPT, tmp_path, cwd=repo,
                  env={"REPO": str(repo), "PATH": f"{PARA_SCRIPT.parent}{os.pathsep}{os.environ['PATH']}"})
    assert res.returncode == 0, f"nvim exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    seen = {kind: json.loads(value) for kind, _, value in (line.partition(" ") for line in res.stdout.splitlines())}
    assert seen["hello"]["pid"] == sidecar.pid and seen["hello"]["version"] == __version__
    assert seen["subscribe"] == {"subscribed": True, "editor": True}
    assert seen["start"]["name"] == "nv-own"
    assert [s["name"] for s in seen["list"]["sessions"]] == ["nv-own"]
    assert seen["event"]["kind"] == "started" and seen["event"]["repo"] == str(repo)
    assert seen["changed"] == {"kind": "started", "repo": str(repo), "sessions": ["nv-cli"]}
    assert seen["exit"] == {"code": 0, "signal": 0}
    assert {"para/nv-own", "para/nv-cli"} <= set(branches(repo))
    assert sidecar_answers(runtime_dir)["pid"] == sidecar.pid
