"""Shared fixtures: real git repositories, a real sidecar process, the real `para` CLI.

Nothing here is mocked. Every test runs with:

- a private environment (fresh HOME, no user or system git config, a git
  identity, PARA_CONFIG pointing at a per-test file, PARA_RUNTIME_DIR a fresh
  0700 directory under /tmp with a short path: unix socket paths are limited
  to ~100 bytes);
- any sidecar that appears in that runtime directory (started by the `sidecar`
  fixture or autostarted by the CLI) stopped at teardown, by its pid (reaped
  later, so no test waits for a sidecar to exit unless it is about that).

A module that sets `SHARED_SIDECAR = True` shares one runtime dir and one
sidecar among its tests (each test still has its own repositories), as one
user's sidecar serves all their repositories: it saves a sidecar start per test.
"""

from __future__ import annotations

import ast
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from para_rpc.client import Connection
from para_rpc.errors import Code

PYTHON = sys.executable
PARA_SCRIPT = Path(sys.executable).with_name("para")
# The installed `para` script, never a `python -m para_rpc` stand-in: the CLI's fast paths key on
# argv[0] == "para", so a stand-in would test another path (see _require_para_script).
PARA_ARGV = [str(PARA_SCRIPT)]
SIDECAR_ARGV = [PYTHON, "-m", "para_rpc.server.sidecar"]

CLI_TIMEOUT = 60          # a CLI call that takes longer than this is hung, not slow
EXIT_CODES = {c.exit for c in Code}
IDENTITY = {"GIT_AUTHOR_NAME": "Para Test", "GIT_AUTHOR_EMAIL": "test@para.invalid",
            "GIT_COMMITTER_NAME": "Para Test", "GIT_COMMITTER_EMAIL": "test@para.invalid"}


# ---- a terminal ---------------------------------------------------------------

def in_terminal(argv: list[str], cwd: Path, env: dict[str, str], answers: list[tuple[str, str]] = [],
                timeout: float = 60.0) -> tuple[int, str]:
    """Run `argv` on a pty; answer each prompt (a text to wait for, what to type); return the
    exit status and all it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    out = ""
    answered = 0   # what was read before the last answer: a prompt is looked for after it
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk.decode(errors="replace")
                while pending and pending[0][0] in out[answered:]:
                    os.write(leader, pending.pop(0)[1].encode())
                    answered = len(out)
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)


# ---- counting git processes ----------------------------------------------------

def bare_imports(statement: str, watch: set[str]) -> list[str]:
    """Which of the modules `watch` a bare `python -S` (nothing but the standard library's
    start and para_rpc on its path) has loaded after running `statement`."""
    import para_rpc
    root = str(Path(para_rpc.__file__).parent.parent)
    code = (f"import sys; sys.path.insert(0, sys.argv[1]); {statement}; "
            f"print(sorted(m for m in sys.modules if m in {sorted(watch)!r}))")
    proc = subprocess.run([sys.executable, "-S", "-c", code, root], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ast.literal_eval(proc.stdout)


def counting_git(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose `git` is the real one behind a wrapper that appends each call's
    arguments to a file (one line per git process): for tests of how much git work para does."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "git-calls"
    real = shutil.which("git")
    assert real
    # (Under a lock: para runs some reads at once, and the shell's printf may write a line in parts.)
    (bindir / "git").write_text(f'#!/bin/sh\n{{ flock 9; printf "%s\\n" "$*" >> {calls}; }} 9>>{calls}.lock\n'
                                f'exec {real} "$@"\n')
    (bindir / "git").chmod(0o755)
    return dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}"), calls


# ---- polling -----------------------------------------------------------------

def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone: PID 1 here may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def proc_environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def sidecar_pids(runtime_dir: str | Path) -> list[int]:
    """Live sidecar processes serving `runtime_dir` (found through /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"para_rpc.server.sidecar" not in cmdline:
            continue
        pid = int(entry.name)
        if pid_alive(pid) and proc_environ(pid).get("PARA_RUNTIME_DIR") == str(runtime_dir):
            found.append(pid)
    return sorted(found)


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM one process we started, then SIGKILL it if it does not go."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


# ---- git -----------------------------------------------------------------------

def git(*args: str, cwd: str | Path, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None) -> str:
    """Run git (with `env` added to the environment); return stripped stdout. With check,
    a failure fails the test with git's stderr."""
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, input=input,
                         stdin=None if input is not None else subprocess.DEVNULL, timeout=CLI_TIMEOUT,
                         env={**os.environ, **env} if env else None)
    if check and res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout.strip()


def commit_file(cwd: str | Path, path: str, content: str, message: str) -> str:
    """Write a file, commit it, return the new commit."""
    p = Path(cwd, path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content)
    git("add", "--", path, cwd=cwd)
    git("commit", "-q", "-m", message, cwd=cwd)
    return git("rev-parse", "HEAD", cwd=cwd)


def rev(cwd: str | Path, name: str) -> str | None:
    out = git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", cwd=cwd, check=False)
    return out or None


def branches(cwd: str | Path) -> list[str]:
    return git("for-each-ref", "--format=%(refname:short)", "refs/heads/", cwd=cwd).splitlines()


def worktree_paths(cwd: str | Path) -> list[str]:
    out = git("worktree", "list", "--porcelain", cwd=cwd)
    return [line[len("worktree "):] for line in out.splitlines() if line.startswith("worktree ")]


def make_repo(path: Path, branch: str = "main") -> Path:
    """A repository on `branch` with two commits (the second adds a tracked .gitignore)."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", branch, str(path), cwd=path.parent)
    commit_file(path, "README.md", "# demo\n", "initial commit")
    commit_file(path, ".gitignore", "*.log\nbuild/\n", "add .gitignore")
    return Path(os.path.realpath(path))


# ---- environment -------------------------------------------------------------------

def pytest_sessionstart(session: pytest.Session) -> None:
    _require_para_script()


def _require_para_script() -> None:
    """Fail the run at once, with the fix, when the `para` console script is not installed
    next to this Python (instead of silently testing `python -m para_rpc`)."""
    if not PARA_SCRIPT.exists():
        raise pytest.UsageError(f"{PARA_SCRIPT} does not exist: the tests run the installed `para` script; "
                                "install the package into this environment (pip install -e '.[test]')")


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Git identity, an empty HOME and no global/system git config for the whole run."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    mp.setenv("HOME", str(home))
    for k, v in IDENTITY.items():
        mp.setenv(k, v)
    mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
    mp.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for k in list(os.environ):
        if k.startswith(("PARA_", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")) \
                or k in ("XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "XDG_DATA_HOME", "EDITOR", "VISUAL"):
            mp.delenv(k)
    yield
    mp.undo()


def new_runtime() -> tuple[Path, Path]:
    """A fresh private runtime dir under /tmp (short: socket paths are limited to ~100 bytes),
    and the path of a user config file that belongs with it (not created)."""
    d = Path(tempfile.mkdtemp(prefix="p", dir="/tmp"))
    os.chmod(d, 0o700)
    return d, Path(tempfile.gettempdir(), f"{d.name}-user-config.json")


class _Processes:
    """Sidecars being stopped. A stopped sidecar takes a quarter of a second to exit:
    it is reaped later (and killed at the end of the session if it hangs) instead
    of making every test wait for it.

    A sidecar is signalled at most once: one already asked to stop (by para/shutdown
    or an earlier SIGTERM) or already on its way out (it no longer accepts connections)
    is left to exit by itself; only one still alive at the end of the session is killed.
    Signalling an exiting sidecar again could kill it mid-shutdown (once its event loop
    is gone, SIGTERM has the default action), which would hide a shutdown bug."""

    def __init__(self) -> None:
        self.stopping: list[tuple[int, subprocess.Popen | None]] = []
        self.dirs: list[Path] = []

    def asked(self, pid: int, proc: subprocess.Popen | None = None) -> None:
        """`pid` was asked to stop some other way (para/shutdown): only reap it later."""
        if all(p != pid for p, _ in self.stopping):
            self.stopping.append((pid, proc))

    def stop(self, pid: int, proc: subprocess.Popen | None = None) -> None:
        """SIGTERM now, unless it was already asked to stop or is exiting;
        make sure it is gone at the end of the session."""
        if any(p == pid for p, _ in self.stopping):
            self.reap()
            return
        if pid_alive(pid):
            if _accepting(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    return
            self.stopping.append((pid, proc))
        self.reap()

    def reap(self) -> None:
        still = []
        for pid, proc in self.stopping:
            if proc is not None:
                proc.poll()
            if pid_alive(pid):
                still.append((pid, proc))
        self.stopping = still

    def finish(self) -> None:
        for pid, proc in self.stopping:
            stop_pid(pid)
            if proc is not None:
                proc.poll()
        self.stopping.clear()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
            Path(tempfile.gettempdir(), f"{d.name}-user-config.json").unlink(missing_ok=True)


def _accepting(pid: int) -> bool:
    """Whether sidecar `pid` still accepts connections on its socket (a sidecar that is
    stopping has closed its listening socket; connecting then fails)."""
    env = proc_environ(pid)
    sock = env.get("PARA_SOCKET") or (env.get("PARA_RUNTIME_DIR") and f"{env['PARA_RUNTIME_DIR']}/sidecar.sock")
    if not sock:
        return True
    try:
        Connection.open(sock, timeout=5).close()
    except OSError:
        return False
    return True


PROCESSES = _Processes()


@pytest.fixture(scope="session", autouse=True)
def _processes() -> Iterator[_Processes]:
    yield PROCESSES
    PROCESSES.finish()


def _shared(request: pytest.FixtureRequest) -> bool:
    return bool(getattr(request.module, "SHARED_SIDECAR", False))


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh private PARA_RUNTIME_DIR and PARA_CONFIG for every test; every sidecar
    that served this directory is stopped at teardown.

    A module that sets `SHARED_SIDECAR = True` gets one runtime dir (and one
    sidecar) for all its tests instead, as one user's sidecar serves all their
    repositories; each test still has its own repositories."""
    if _shared(request):
        d, cfg = request.getfixturevalue("_module_runtime")
    else:
        d, cfg = new_runtime()
        PROCESSES.dirs.append(d)
    monkeypatch.setenv("PARA_RUNTIME_DIR", str(d))
    monkeypatch.setenv("PARA_CONFIG", str(cfg))
    yield d
    if not _shared(request):
        for pid in sidecar_pids(d):
            PROCESSES.stop(pid)


@pytest.fixture(scope="module")
def _module_runtime() -> Iterator[tuple[Path, Path]]:
    d, cfg = new_runtime()
    PROCESSES.dirs.append(d)
    yield d, cfg
    for pid in sidecar_pids(d):
        PROCESSES.stop(pid)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository on `main` with two commits."""
    return make_repo(tmp_path / "repo")


# ---- the sidecar ------------------------------------------------------------------

@dataclass
class Sidecar:
    proc: subprocess.Popen
    socket: Path
    log_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def connect(self, timeout: float = 30.0) -> Connection:
        return Connection.open(self.socket, timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for p in (self.log_path, self.stderr_path):
            try:
                parts.append(f"--- {p} ---\n" + "\n".join(p.read_text().splitlines()[-lines:]))
            except OSError:
                pass
        return "\n".join(parts)


def start_sidecar(runtime: Path, *extra: str, env: dict[str, str] | None = None) -> Sidecar:
    """Start `python -m para_rpc.server.sidecar` on `runtime`/sidecar.sock; wait until it accepts."""
    sock = runtime / "sidecar.sock"
    stderr_path = runtime / f"sidecar-{time.monotonic_ns()}.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([*SIDECAR_ARGV, *extra], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=env or dict(os.environ), start_new_session=True)
    sc = Sidecar(proc, sock, runtime / "sidecar.sock.log", stderr_path)
    wait_ready(sc)
    return sc


def wait_ready(sc: Sidecar) -> None:
    def ready() -> bool:
        if sc.proc.poll() is not None:
            raise AssertionError(f"sidecar exited with {sc.proc.returncode}\n{sc.log_tail()}")
        try:
            Connection.open(sc.socket, timeout=5).close()
            return True
        except OSError:
            return False
    wait_until(ready, what="the sidecar to accept connections")


def shutdown_sidecar(sc: Sidecar, wait: bool = True) -> None:
    """Ask it to stop with para/shutdown (SIGTERM if it does not answer); kill it if it hangs."""
    if sc.proc.poll() is None:
        try:
            with sc.connect(timeout=5) as conn:
                conn.request("para/shutdown", {})
        except Exception:
            sc.proc.send_signal(signal.SIGTERM)
        if not wait:
            PROCESSES.asked(sc.pid, sc.proc)
            return
        try:
            sc.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            sc.proc.kill()
            sc.proc.wait(timeout=5)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Remember each phase's report; attach the sidecar log to a failing test's report."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    funcargs = getattr(item, "funcargs", {})
    if rep.failed and rep.when == "call" and "runtime_dir" in funcargs and "sidecar" not in funcargs:
        # (the `sidecar` fixture prints its own log at teardown)
        log = Path(funcargs["runtime_dir"], "sidecar.sock.log")
        try:
            rep.sections.append(("sidecar log (tail)", "\n".join(log.read_text().splitlines()[-40:])))
        except OSError:
            pass
    return rep


_MODULE_SIDECARS: dict[str, Sidecar] = {}


@pytest.fixture
def sidecar(runtime_dir: Path, request: pytest.FixtureRequest) -> Iterator[Sidecar]:
    """The real sidecar (`--idle-timeout 0`), a separate process on a socket in the
    test's runtime dir, started with the test's environment. Stopped at teardown
    (the module's shared one at the end of the module); its log is printed if the
    test failed."""
    shared = _shared(request)
    sc = _MODULE_SIDECARS.get(str(runtime_dir)) if shared else None
    if sc is None or sc.proc.poll() is not None:  # (a test may have stopped the shared one)
        for pid in sidecar_pids(runtime_dir):
            stop_pid(pid)
        sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
        if shared:
            _MODULE_SIDECARS[str(runtime_dir)] = sc
    else:
        wait_ready(sc)
    yield sc
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== sidecar log tail (pid {sc.pid}, exit {sc.proc.poll()}) =====\n{sc.log_tail()}")
    if not shared:
        shutdown_sidecar(sc, wait=False)


@pytest.fixture
def rpc(sidecar: Sidecar) -> Iterator[Connection]:
    """A JSON-RPC connection to the test sidecar."""
    conn = sidecar.connect()
    yield conn
    conn.close()


class Service:
    """Calls `para/<verb>` over one JSON-RPC connection, with `cwd` defaulting to the
    test repository: for setting up a situation quickly when the CLI is not what
    the test is about."""

    def __init__(self, conn: Connection, cwd: Path) -> None:
        self.conn = conn
        self.cwd = cwd

    def __call__(self, verb: str, cwd: str | Path | None = None, **params: Any) -> Any:
        return self.conn.request(f"para/{verb}", {"cwd": str(cwd or self.cwd), **params})


@pytest.fixture
def svc(rpc: Connection, repo: Path) -> Service:
    """`svc("start", name="x")` -> the result of para/start in the test repository."""
    return Service(rpc, repo)


def raw_request(conn: Connection, method: str, params: Any, msg_id: int = 9000) -> dict[str, Any]:
    """Send one request and return the whole response message (result or error)."""
    conn.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    while True:
        msg = conn.read()
        if msg.get("id") == msg_id and "method" not in msg:
            return msg


# ---- the CLI --------------------------------------------------------------------

def cli_env(env: dict[str, str | None] | None = None) -> dict[str, str]:
    full = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return full


def run_para(*args: str, cwd: str | Path, check: bool = True, input: str | None = None,
             env: dict[str, str | None] | None = None, timeout: float = CLI_TIMEOUT
             ) -> subprocess.CompletedProcess:
    """Run the real `para` CLI. stdin is never a TTY (closed unless `input` is given)."""
    proc = subprocess.run([*PARA_ARGV, *args], cwd=cwd, env=cli_env(env), capture_output=True, text=True,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          timeout=timeout)
    where = f"`para {' '.join(args)}` in {cwd} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, where
    assert proc.returncode in EXIT_CODES | {0}, f"undocumented exit status: {where}"
    if check:
        assert proc.returncode == 0, where
    return proc


@pytest.fixture
def para(request: pytest.FixtureRequest) -> Callable[..., subprocess.CompletedProcess]:
    """`para(*args, cwd=repo, check=True, input=None, env=None)` -> CompletedProcess."""
    def call(*args: str, cwd: str | Path | None = None, **kw: Any) -> subprocess.CompletedProcess:
        return run_para(*args, cwd=cwd if cwd is not None else request.getfixturevalue("repo"), **kw)
    return call


@pytest.fixture
def para_json(para: Callable[..., subprocess.CompletedProcess]) -> Callable[..., Any]:
    """`para_json(*args, ...)`: the same with --json; returns the parsed stdout
    (the `{"error": ...}` object when the command failed and check=False)."""
    def call(*args: str, **kw: Any) -> Any:
        proc = para(*args, "--json", **kw)
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"`para {' '.join(args)} --json` printed no JSON:\n{proc.stdout}\n{proc.stderr}")
    return call


# ---- state snapshots -----------------------------------------------------------------

def git_state(repo: Path) -> dict[str, str]:
    """Everything git knows that para could change: refs (with targets) and worktrees."""
    return {"refs": git("for-each-ref", "--format=%(refname) %(objectname)", cwd=repo),
            "worktrees": git("worktree", "list", "--porcelain", cwd=repo),
            "head": git("symbolic-ref", "-q", "HEAD", cwd=repo, check=False) or rev(repo, "HEAD") or "",
            "status": git("status", "--porcelain", "--untracked-files=all", cwd=repo)}


def session_state(repo: Path) -> list[dict[str, Any]]:
    proc = run_para("list", "--all", "--json", cwd=repo)
    return [{k: s[k] for k in ("name", "status", "state", "branch", "worktree", "head", "base_commit",
                               "archived_branch", "worktree_exists", "branch_exists", "dirty")}
            for s in json.loads(proc.stdout)["sessions"]]


def full_state(repo: Path) -> dict[str, Any]:
    return {**git_state(repo), "sessions": session_state(repo)}
