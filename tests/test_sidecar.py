"""para_rpc.server.sidecar (and server/lsp.py): the one long-running process per user.

Single instance, private socket, autostart by clients, graceful stop, idle
exit, subscriptions, and per-connection `exit`.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from para_rpc import PROTOCOL_VERSION, __version__, client
from para_rpc.client import Connection
from para_rpc.errors import Code, ParaError
from para_rpc.server.sidecar import EXIT_ALREADY_RUNNING

from conftest import (PARA_ARGV, SIDECAR_ARGV, cli_env, pid_alive, raw_request, sidecar_pids,
                      start_sidecar, wait_until)


def hello(conn: Connection) -> dict:
    return conn.request("para/hello", {"client": "test", "version": __version__, "protocol": PROTOCOL_VERSION})


# ---- handshake ---------------------------------------------------------------------------

def test_hello_reports_version_protocol_and_pid(sidecar, rpc):
    info = hello(rpc)
    assert info["name"] == "para"
    assert info["version"] == __version__
    assert info["protocol"] == PROTOCOL_VERSION
    assert info["pid"] == sidecar.pid
    assert info["busy"] == 0


def test_hello_lists_the_repositories_served(sidecar, rpc, para, repo):
    assert hello(rpc)["repos"] == []
    para("list")
    assert hello(rpc)["repos"] == [str(repo)]


# ---- the socket --------------------------------------------------------------------------

def test_socket_is_0600_in_a_0700_directory(sidecar):
    st = os.stat(sidecar.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sidecar.socket.parent).st_mode) == 0o700


def test_a_runtime_directory_open_to_others_is_refused_not_changed(runtime_dir, para, repo):
    """An existing directory is the user's: para never chmods it (see test_hygiene.py)."""
    os.chmod(runtime_dir, 0o755)
    res = para("sidecar", "start", check=False)
    assert res.returncode == 9 and "PARA_RUNTIME_DIR" in res.stderr and "chmod 700" in res.stderr
    assert stat.S_IMODE(os.stat(runtime_dir).st_mode) == 0o755
    assert not (runtime_dir / "sidecar.sock").exists()
    os.chmod(runtime_dir, 0o700)
    para("sidecar", "start")
    assert stat.S_IMODE(os.stat(runtime_dir / "sidecar.sock").st_mode) == 0o600


def test_a_second_sidecar_on_the_same_socket_exits_with_status_3(sidecar):
    inode = os.stat(sidecar.socket).st_ino
    second = subprocess.run([*SIDECAR_ARGV, "--idle-timeout", "0"], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=60)
    assert second.returncode == EXIT_ALREADY_RUNNING == 3
    assert "already running" in second.stderr
    # The first one is untouched and still serving on the same socket.
    assert os.stat(sidecar.socket).st_ino == inode
    with sidecar.connect() as conn:
        assert hello(conn)["pid"] == sidecar.pid


# ---- stopping ----------------------------------------------------------------------------

def test_sigterm_exits_cleanly_and_removes_the_socket(sidecar):
    sidecar.proc.send_signal(signal.SIGTERM)
    assert sidecar.proc.wait(timeout=30) == 0
    assert not sidecar.socket.exists()
    # The single-instance lock was released: a new sidecar can start right away.
    again = start_sidecar(sidecar.socket.parent, "--idle-timeout", "0")
    try:
        with again.connect() as conn:
            assert hello(conn)["pid"] == again.pid
    finally:
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(timeout=30) == 0


def test_para_shutdown_request_stops_the_sidecar(sidecar, rpc):
    assert rpc.request("para/shutdown", {}) == {"stopping": True, "setups_stopped": []}
    assert sidecar.proc.wait(timeout=30) == 0
    assert not sidecar.socket.exists()


def test_idle_timeout_exits_once_no_client_is_connected(runtime_dir):
    sc = start_sidecar(runtime_dir, "--idle-timeout", "1")
    conn = sc.connect()
    hello(conn)
    # While a client is connected the sidecar is not idle, however long that lasts.
    with pytest.raises(subprocess.TimeoutExpired):
        sc.proc.wait(timeout=3)
    conn.close()
    assert sc.proc.wait(timeout=30) == 0
    assert not sc.socket.exists()
    assert "idle for" in sc.log_path.read_text()


def test_stale_socket_left_by_a_killed_sidecar_is_replaced(runtime_dir, para, repo):
    first = start_sidecar(runtime_dir, "--idle-timeout", "0")
    first.proc.kill()
    first.proc.wait(timeout=30)
    assert first.socket.exists()  # nobody cleaned up after SIGKILL
    para("list")
    (pid,) = wait_until(lambda: sidecar_pids(runtime_dir), what="an autostarted sidecar")
    assert pid != first.pid


# ---- autostart ---------------------------------------------------------------------------

def test_the_cli_autostarts_a_sidecar_when_none_runs(runtime_dir, para, para_json, repo):
    assert sidecar_pids(runtime_dir) == []
    assert not (runtime_dir / "sidecar.sock").exists()
    assert para_json("list") == {"repo": str(repo), "current": None, "sessions": []}
    (pid,) = sidecar_pids(runtime_dir)
    status = para_json("sidecar", "status")
    assert status["running"] is True
    assert status["pid"] == pid
    assert status["socket"] == str(runtime_dir / "sidecar.sock")
    # The next call reuses it.
    para("list")
    assert sidecar_pids(runtime_dir) == [pid]


def test_an_autostarted_sidecar_says_when_it_listens_and_passes_on_no_pipe(runtime_dir, para_json, repo, tmp_path):
    """The CLI that starts a sidecar waits on a pipe, not a polling loop: the sidecar writes to
    it once its socket listens (a connection then succeeds at once), and what it starts (here a
    session's setup) inherits neither the pipe's variable nor its descriptor."""
    proc = client.spawn_sidecar()
    ready = client._READY.pop(proc.pid)
    try:
        assert os.read(ready, 1) == b"1"  # (blocks until the sidecar says so)
    finally:
        os.close(ready)
    with Connection.open(runtime_dir / "sidecar.sock", timeout=10) as conn:  # no retry needed
        assert conn.request("para/hello", {})["pid"] == proc.pid
    seen = tmp_path / "setup-saw.json"
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"session": {"setup": [
        sys.executable, "-c", "import json, os, sys; json.dump({'env': sorted(os.environ), 'fds': os.listdir("
        "'/proc/self/fd')}, open(sys.argv[1], 'w'))", str(seen)]}}))
    para_json("start", "ready")
    saw = json.loads(seen.read_text())
    assert "PARA_READY_FD" not in saw["env"] and "PARA_SESSION" in saw["env"]
    assert sorted(saw["fds"], key=int)[:3] == ["0", "1", "2"] and len(saw["fds"]) <= 4, saw["fds"]


def test_five_clis_autostarting_at_once_share_one_sidecar(runtime_dir, repo):
    procs = [subprocess.Popen([*PARA_ARGV, "list", "--json"], cwd=repo, env=cli_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(5)]
    results = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "Traceback" not in err
        assert json.loads(out)["sessions"] == []
    # Sidecars that lost the race exit with status 3; exactly one remains, and it is the one serving.
    survivors = wait_until(lambda: (lambda pids: pids if len(pids) == 1 else None)(sidecar_pids(runtime_dir)),
                           what="exactly one sidecar")
    with Connection.open(runtime_dir / "sidecar.sock", timeout=30) as conn:
        assert hello(conn)["pid"] == survivors[0]


def test_sidecar_subcommands_start_status_stop_restart(runtime_dir, para, para_json, repo):
    status = para("sidecar", "status", check=False)
    assert status.returncode == Code.sidecar_unavailable.exit == 9
    assert "no sidecar running" in status.stdout

    started = para_json("sidecar", "start")
    pid = started["pid"]
    assert started["version"] == __version__ and pid_alive(pid)
    assert para_json("sidecar", "start")["pid"] == pid  # a no-op when one runs
    status = para_json("sidecar", "status")
    assert status["running"] is True and status["pid"] == pid and status["protocol"] == PROTOCOL_VERSION
    assert f"pid {pid}" in para("sidecar", "status").stdout

    restarted = para_json("sidecar", "restart")
    assert restarted["pid"] != pid
    assert not pid_alive(pid)
    assert sidecar_pids(runtime_dir) == [restarted["pid"]]

    assert para_json("sidecar", "stop") == {"stopped": True, "setups_stopped": []}
    wait_until(lambda: not pid_alive(restarted["pid"]), what="the sidecar to exit")
    assert not (runtime_dir / "sidecar.sock").exists()
    assert para("sidecar", "status", check=False).returncode == 9
    assert "no sidecar was running" in para("sidecar", "stop").stdout


# ---- many clients ------------------------------------------------------------------------

def next_notification(conn: Connection, method: str) -> dict:
    """The next notification named `method` (the connection's read timeout bounds the wait)."""
    for msg in conn.notifications():
        if msg["method"] == method:
            return msg["params"]
    raise AssertionError("unreachable")


def test_subscribed_clients_get_sessions_changed_and_others_get_nothing(sidecar, para, repo):
    subscribers = [sidecar.connect(timeout=20) for _ in range(5)]
    silent = sidecar.connect(timeout=20)
    try:
        for conn in subscribers:
            assert conn.request("para/subscribe", {})["subscribed"] is True
        hello(silent)

        para("start", "alpha")
        for conn in subscribers:
            change = next_notification(conn, "para/sessionsChanged")
            assert change == {"repo": str(repo), "sessions": ["alpha"], "kind": "started"}
        # Notifications are written before the CLI's reply, so anything meant for
        # `silent` would arrive before this reply.
        hello(silent)
        assert silent.pending_notifications == []

        # One client leaves the LSP way (shutdown, then exit): only its connection closes.
        leaving = subscribers.pop()
        assert leaving.request("shutdown", None) is None
        leaving.notify("exit", None)
        with pytest.raises(ParaError) as exc:
            leaving.read()
        assert exc.value.code is Code.sidecar_unavailable
        assert sidecar.proc.poll() is None

        para("cancel", "alpha")
        for conn in subscribers:
            change = next_notification(conn, "para/sessionsChanged")
            assert change["sessions"] == ["alpha"] and change["kind"] == "cancelled"
        assert hello(silent)["pid"] == sidecar.pid
        assert silent.pending_notifications == []
    finally:
        for conn in [*subscribers, silent]:
            conn.close()


def test_event_notifications_carry_the_logged_event(sidecar, rpc, para, repo):
    rpc.request("para/subscribe", {})
    para("start", "beta")
    event = next_notification(rpc, "para/event")
    assert event["kind"] == "started" and event["session"] == "beta" and event["repo"] == str(repo)
    logged = rpc.request("para/events", {"cwd": str(repo)})["events"]
    assert [e["id"] for e in logged if e["kind"] == "started"] == [event["id"]]


def test_unsubscribe_stops_notifications(sidecar, rpc, para):
    rpc.request("para/subscribe", {})
    assert rpc.request("para/unsubscribe", {}) == {"subscribed": False}
    para("start", "gamma")
    hello(rpc)
    assert rpc.pending_notifications == []


def test_a_client_vanishing_mid_stream_does_not_disturb_the_others(sidecar, para):
    stay = sidecar.connect(timeout=20)
    gone = sidecar.connect(timeout=20)
    try:
        for conn in (stay, gone):
            conn.request("para/subscribe", {})
        gone.close()
        para("start", "delta")
        assert next_notification(stay, "para/sessionsChanged")["sessions"] == ["delta"]
        assert hello(stay)["pid"] == sidecar.pid
    finally:
        stay.close()


def test_operations_are_also_workspace_execute_commands(sidecar, rpc, para_json, repo):
    para_json("start", "epsilon")
    via_command = rpc.request("workspace/executeCommand",
                              {"command": "para.list", "arguments": [{"cwd": str(repo)}]})
    via_method = rpc.request("para/list", {"cwd": str(repo)})
    assert via_command == via_method
    assert [s["name"] for s in via_command["sessions"]] == ["epsilon"]


@pytest.mark.parametrize("junk", [
    b"Content-Length: 5\r\n\r\nhello",
    b"no headers at all\r\n\r\n",
    b"Content-Length: 2\r\n\r\n[]",
    b'Content-Length: 26\r\n\r\n{"jsonrpc":"2.0","method":5}',
    b"Content-Length: 99999999999\r\n\r\n{}",
], ids=["not-json", "no-header", "array", "bad-method", "huge-length"])
def test_malformed_frames_do_not_disturb_the_sidecar_or_other_clients(sidecar, rpc, junk):
    with sidecar.connect(timeout=5) as bad:
        bad.sock.sendall(junk)
        assert hello(rpc)["pid"] == sidecar.pid
    assert hello(rpc)["pid"] == sidecar.pid
    with sidecar.connect() as fresh:
        assert hello(fresh)["pid"] == sidecar.pid
    assert sidecar.proc.poll() is None


def test_expected_errors_are_not_logged_as_errors(sidecar, rpc, para, repo):
    """The sidecar log is where a para bug shows up (Code.internal says "see the sidecar
    log"): a user's bad input must not fill it with ERROR lines."""
    para("show", "nope", check=False)
    para("start", "--", "../x", check=False)
    raw_request(rpc, "para/start", {"cwd": str(repo), "bogus": 1})
    raw_request(rpc, "para/nope", {})
    assert hello(rpc)["pid"] == sidecar.pid
    errors = [line for line in sidecar.log_path.read_text().splitlines() if " ERROR " in line]
    assert errors == []


def test_unknown_method_is_method_not_found(sidecar, rpc):
    reply = raw_request(rpc, "para/nope", {})
    assert reply["error"]["code"] == -32601
    assert hello(rpc)["pid"] == sidecar.pid


def test_a_request_the_client_cancels_is_answered_as_cancelled(sidecar, rpc, para_json, repo):
    """LSP's `$/cancelRequest` for a read in flight (a `para/wait` that would wait ten minutes):
    it ends at once with -32800, and the connection serves on."""
    para_json("start", "waited")
    rpc.send({"jsonrpc": "2.0", "id": 77, "method": "para/wait",
              "params": {"cwd": str(repo), "sessions": ["waited"], "timeout": 600}})
    rpc.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 77}})
    reply = rpc.read()
    while reply.get("id") != 77:
        reply = rpc.read()
    assert reply["error"]["code"] == -32800, reply
    assert hello(rpc)["pid"] == sidecar.pid
