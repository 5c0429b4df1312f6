"""Helpers and fixtures shared by the agent tests (test_agents*.py).

The agents are real processes: the executables in tests/agents/ (configured
as custom launcher profiles through PARA_AGENTS, which the CLI forwards with
each request) and the built-in `scripted` profile. Everything the tests
check goes through the real `para` CLI or the sidecar's JSON-RPC socket, and
git itself.

Isolation on top of conftest.py: every test gets its own tmux server
(TMUX_TMPDIR is a fresh directory, TMUX is unset; the server is killed at
teardown; tests that involve tmux run their own sidecar, `own_sidecar`, so
that it inherits that TMUX_TMPDIR) and any agent process still running for
the test's runtime directory is killed, by its pid, at teardown. A test module
imports the fixtures it wants from here (an imported autouse fixture applies to
that module only).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (CLI_TIMEOUT, PARA_ARGV, Sidecar, cli_env, pid_alive, proc_environ, run_para, shutdown_sidecar,
                      start_sidecar, wait_until)
from para_rpc.client import Connection
from para_rpc.errors import ParaError

AGENTS_DIR = Path(__file__).resolve().parent / "agents"
STEP = str(AGENTS_DIR / "step_agent.py")
PROBE = str(AGENTS_DIR / "probe_agent.py")
FOOTER = 'When done: para integrate "<one-line summary of your change>"'
ENDED = ("exited", "failed", "lost")


# ---- profiles ----------------------------------------------------------------------

def step_profile(*steps: str) -> dict[str, Any]:
    """A custom profile running tests/agents/step_agent.py with these steps (placeholders allowed)."""
    return {"command": [STEP, *steps]}


def agents_env(**profiles: dict[str, Any]) -> dict[str, str]:
    """The CLI environment that configures these custom profiles (PARA_AGENTS)."""
    return {"PARA_AGENTS": json.dumps(profiles)}


# ---- the sidecar, over JSON-RPC ------------------------------------------------------

class Api:
    """Requests to the test sidecar for one repository; a fresh connection per call,
    so it keeps working across sidecar restarts (same socket path)."""

    def __init__(self, socket: Path, repo: Path) -> None:
        self.socket = socket
        self.repo = repo

    def call(self, method: str, cwd: str | Path | None = None, **params: Any) -> Any:
        with Connection.open(self.socket, timeout=30) as conn:
            return conn.request(method, {"cwd": str(cwd or self.repo), **params})

    def dispatch(self, name: str | None, prompt: str, agent: str, profiles: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
        """`para/dispatch` over JSON-RPC: for setup, where the CLI is not what is tested."""
        full_env = {**(agents_env(**profiles) if profiles else {}), **(env or {})}
        return self.call("para/dispatch", env=full_env, name=name, prompt=prompt, agent=agent, **params)

    def for_repo(self, repo: Path) -> "Api":
        return Api(self.socket, repo)

    def sessions(self) -> dict[str, dict[str, Any]]:
        """Every session row (all statuses) by name (`para/list` runs git in every active
        worktree; tests wait for things through events instead, which need no git)."""
        return {s["name"]: s for s in self.call("para/list", all=True)["sessions"]}

    def evidence(self, name: str) -> dict[str, Any] | None:
        """`para status show NAME` as data; None when there is no live session of that name."""
        try:
            return self.call("para/status", session=name)["sessions"][0]
        except ParaError:
            return None

    def events(self) -> list[dict[str, Any]]:
        return self.call("para/events", limit=1000)["events"]

    def plans(self) -> list[dict[str, Any]]:
        return self.call("para/plans")["plans"]

    def wait_agent(self, name: str, states: tuple[str, ...] = ENDED, timeout: float = 60.0) -> dict[str, Any]:
        """Poll until the session's agent is in one of `states`; return the evidence."""
        def check() -> dict[str, Any] | None:
            ev = self.evidence(name)
            return ev if ev and ev["agent"] and ev["agent"]["state"] in states else None
        return wait_until(check, timeout, f"the agent of {name} to be {'/'.join(states)}", interval=0.05)

    def wait_event(self, kind: str, session: str | None = None, timeout: float = 60.0,
                   **data: Any) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            for e in self.events():
                if e["kind"] == kind and (session is None or e["session"] == session) and \
                        all(e["data"].get(k) == v for k, v in data.items()):
                    return e
            return None
        return wait_until(check, timeout, f"a {kind} event for {session or 'the repo'}", interval=0.05)

    def wait_plan(self, state: str, timeout: float = 90.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            plans = self.plans()
            return plans[-1] if plans and plans[-1]["state"] == state else None
        return wait_until(check, timeout, f"the plan to be {state}", interval=0.05)


# ---- processes -------------------------------------------------------------------------

def agent_pids(runtime: Path) -> list[int]:
    """Agent runners and test agents started for this test (found through /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not any(m in cmdline for m in (b"para_rpc.agent_runner", str(AGENTS_DIR).encode(),
                                          b"para_rpc.scripted_agent")):
            continue
        pid = int(entry.name)
        if pid_alive(pid) and proc_environ(pid).get("PARA_RUNTIME_DIR") == str(runtime):
            found.append(pid)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL one process we started, and its process group when it leads one."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tmux(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """tmux against this test's own server (TMUX_TMPDIR)."""
    res = subprocess.run(["tmux", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=CLI_TIMEOUT)
    if check and res.returncode != 0:
        raise AssertionError(f"tmux {' '.join(args)} failed: {res.stderr}")
    return res


# ---- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tmux_bin() -> str:
    """tmux must exist: install it with apt if it does not; fail loudly if that fails."""
    path = shutil.which("tmux")
    if path is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = [] if os.geteuid() == 0 else ["sudo", "-n"]
        res = subprocess.run([*cmd, "apt-get", "install", "-y", "tmux"], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            subprocess.run([*cmd, "apt-get", "update"], capture_output=True, text=True, env=env)
            res = subprocess.run([*cmd, "apt-get", "install", "-y", "tmux"], capture_output=True, text=True,
                                 env=env)
        path = shutil.which("tmux")
        if path is None:
            pytest.fail(f"tmux is required and `apt-get install -y tmux` failed ({res.returncode}):\n"
                        f"{res.stdout}\n{res.stderr}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def agent_scripts() -> None:
    for p in (STEP, PROBE):
        mode = os.stat(p).st_mode
        if not mode & 0o100:
            os.chmod(p, mode | 0o111)


@pytest.fixture(autouse=True)
def agent_env(monkeypatch: pytest.MonkeyPatch, runtime_dir: Path, agent_scripts: None) -> Iterator[Path]:
    """A private tmux server per test; leftover agents and the tmux server go at teardown."""
    tdir = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    os.chmod(tdir, 0o700)
    monkeypatch.setenv("TMUX_TMPDIR", str(tdir))
    for k in ("TMUX", "TMUX_PANE"):
        monkeypatch.delenv(k, raising=False)
    yield tdir
    for pid in agent_pids(runtime_dir):
        kill_tree(pid)
    if shutil.which("tmux"):
        tmux("kill-server")
    shutil.rmtree(tdir, ignore_errors=True)


@pytest.fixture
def api(agent_env: Path, sidecar: Any, repo: Path) -> Api:
    return Api(sidecar.socket, repo)


@pytest.fixture
def own_sidecar(agent_env: Path, runtime_dir: Path) -> Iterator[Sidecar]:
    """A sidecar started by the test itself, after `agent_env`: its environment (which
    its agents and its tmux commands inherit) has this test's TMUX_TMPDIR. The
    conftest `sidecar` is warmed up before the test, with the environment of that
    moment, so tests that involve tmux use this one instead (never both)."""
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
    yield sc
    shutdown_sidecar(sc, wait=False)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A directory outside the repository where agents leave what they saw."""
    d = tmp_path / "out"
    d.mkdir()
    return d


# ---- dispatch through the CLI -----------------------------------------------------------

def dispatch(repo: Path, *args: str, profiles: dict[str, Any] | None = None, cwd: Path | None = None,
             check: bool = True, input: str | None = None, env: dict[str, str | None] | None = None,
             as_json: bool = True) -> Any:
    """`para dispatch ARGS --json` with these custom profiles; the parsed result
    (or the error object when check=False and it failed), and the process."""
    full_env = {**(agents_env(**profiles) if profiles else {}), **(env or {})}
    proc = run_para("dispatch", *args, *(["--json"] if as_json else []), cwd=cwd or repo, check=check,
                    input=input, env=full_env)
    data = json.loads(proc.stdout) if as_json and proc.stdout.strip() else None
    return data, proc


def popen_para(*args: str, cwd: Path, env: dict[str, str | None] | None = None) -> subprocess.Popen:
    return subprocess.Popen([*PARA_ARGV, *args], cwd=cwd, env=cli_env(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class LineReader:
    """Collects a subprocess's stdout in a thread, so a test can wait for text with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.text = ""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            with self.lock:
                self.text += line

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        wait_until(lambda: needle in self.text, timeout, f"{needle!r} in the output")


# ---- a test editor --------------------------------------------------------------------------

class Editor:
    """An editor connection: subscribes with editor=true and answers `para/runInTerminal`
    by running the given argv in the given worktree (or never answers, or refuses).

    `Connection.request()` ignores server-to-client requests, so this reads the
    connection itself, in a thread."""

    def __init__(self, socket: Path, behaviour: str = "run") -> None:
        # run | silent | refuse | run-in-group (the agent joins the editor's own process group, as
        # a terminal without job control would run it)
        self.behaviour = behaviour
        self.conn = Connection.open(socket, timeout=None)
        assert self.conn.request("para/subscribe", {"editor": True}) == {"subscribed": True, "editor": True}
        self.requests: list[dict[str, Any]] = []
        self.procs: list[subprocess.Popen] = []
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.closed:
            try:
                msg = self.conn.read()
            except (ParaError, OSError):
                return
            if msg.get("method") != "para/runInTerminal" or "id" not in msg:
                continue  # notifications (the connection is also subscribed to events)
            p = msg["params"]
            self.requests.append(p)
            if self.behaviour == "silent":
                continue
            if self.behaviour == "refuse":
                self.conn.send({"jsonrpc": "2.0", "id": msg["id"], "result": {"ok": False}})
                continue
            proc = subprocess.Popen(p["argv"], cwd=p["worktree"], env={**os.environ, **p["env"]},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=self.behaviour != "run-in-group")
            self.procs.append(proc)
            self.conn.send({"jsonrpc": "2.0", "id": msg["id"], "result": {"ok": True, "pid": proc.pid}})

    def close(self) -> None:
        self.closed = True
        try:
            self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()
        self.thread.join(timeout=10)
        for proc in self.procs:
            if proc.poll() is None:
                kill_tree(proc.pid)
            proc.wait(timeout=10)


def editors(socket: Path) -> Iterator[Callable[..., Editor]]:
    made: list[Editor] = []

    def make(behaviour: str = "run") -> Editor:
        e = Editor(socket, behaviour)
        made.append(e)
        return e
    yield make
    for e in made:
        e.close()


@pytest.fixture
def editor(sidecar: Any) -> Iterator[Callable[..., Editor]]:
    """`editor(behaviour="run")` connects a test editor to the test sidecar."""
    yield from editors(sidecar.socket)


def wait_file(path: Path, timeout: float = 60.0) -> Path:
    wait_until(path.exists, timeout, f"{path} to exist", interval=0.02)
    return path


def assert_nothing_created(repo: Path, before: dict[str, Any], api: Api) -> None:
    """No branch, no worktree, no session row, no worktree directory: the state of `before`
    (a `git_state(repo)` taken before)."""
    from conftest import git_state

    assert git_state(repo) == before
    assert api.sessions() == {}
    wt_dir = repo / ".para" / "worktrees"
    assert not wt_dir.exists() or not any(wt_dir.iterdir())
