"""Protocol paths no other test reaches: the blocking `para/wait` over JSON-RPC, MCP clients
without the bridge's preamble, relative `repo` arguments, an oversize MCP message, a missing
resource, a wait long enough to report progress, event paging past 1000, the bridge when the
sidecar goes away, and a repository already served by another sidecar.

Every client here is either a raw socket (framing written by the test) or the real `mcp`
client through the real `para mcp` bridge.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from conftest import (PARA_ARGV, PROCESSES, Sidecar, cli_env, new_runtime, shutdown_sidecar, start_sidecar,
                      wait_until)
from para_rpc import PROTOCOL_VERSION, __version__
from para_rpc.client import Connection
from para_rpc.errors import Code, ParaError
from para_rpc.runtime import mcp_socket_path
from mcp_util import call, call_error, mcp_client

HELLO = {"client": "test", "version": __version__, "protocol": PROTOCOL_VERSION}


def response(conn: Connection) -> dict[str, Any]:
    """The next response on the connection (notifications skipped)."""
    while True:
        msg = conn.read()
        if "id" in msg and "method" not in msg:
            return msg


# ---- JSON-RPC para/wait ------------------------------------------------------------------------

def test_para_wait_blocks_until_another_connection_changes_the_session(sidecar: Sidecar, svc, repo: Path) -> None:
    """docs/protocol.md, para/wait: the request is answered when a named session changes
    status (here: another client cancels it), not before, and says which one changed."""
    svc("start", name="w")
    with sidecar.connect(timeout=90) as waiter:
        waiter.send({"jsonrpc": "2.0", "id": 1, "method": "para/wait",
                     "params": {"cwd": str(repo), "sessions": ["w"], "timeout": 60}})
        # A request sent after it on the same connection is answered first: the wait is open.
        waiter.send({"jsonrpc": "2.0", "id": 2, "method": "para/hello", "params": HELLO})
        first = response(waiter)
        assert first["id"] == 2 and first["result"]["pid"] == sidecar.pid, first

        svc("cancel", session="w")  # another connection changes the session
        done = response(waiter)
    assert done["id"] == 1, done
    result = done["result"]
    assert result["changed"] == ["w"] and result["timed_out"] is False
    assert result["sessions"]["w"]["status"] == "cancelled"


def test_para_wait_times_out_without_a_change(sidecar: Sidecar, svc, repo: Path) -> None:
    svc("start", name="w")
    newest = svc("events", after=0, limit=1000)["events"][-1]["id"]
    result = svc("wait", sessions=["w"], timeout=0.2)
    assert result == {"changed": [], "timed_out": True,
                      "sessions": {"w": {"status": "active", "agent_exit_code": None, "integration": None}},
                      "events": [], "last_event": newest}


def test_a_repository_served_by_another_sidecar_is_refused_with_busy(sidecar: Sidecar, svc, repo: Path) -> None:
    """One repository, one sidecar: a second sidecar (another socket) asked about a repository
    the first one serves answers `busy`, naming the first one's pid, and changes nothing."""
    svc("list")
    other_dir, _ = new_runtime()
    PROCESSES.dirs.append(other_dir)
    other = start_sidecar(other_dir, "--idle-timeout", "0",
                          env={**os.environ, "PARA_RUNTIME_DIR": str(other_dir)})
    try:
        with other.connect() as conn:
            with pytest.raises(ParaError) as e:
                conn.request("para/list", {"cwd": str(repo)})
        assert e.value.code is Code.busy and f"pid {sidecar.pid}" in e.value.message
        assert svc("list")["sessions"] == []  # the first one still serves it
    finally:
        shutdown_sidecar(other)


# ---- MCP on the socket --------------------------------------------------------------------------

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}


class RawMcp:
    """Newline-delimited MCP straight on <socket>.mcp, as a client that is not `para mcp` speaks it."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(90)
        self.sock.connect(str(mcp_socket_path(sidecar.socket)))
        self.file = self.sock.makefile("rb")

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def answer(self, msg_id: int) -> dict[str, Any]:
        while True:
            line = self.file.readline()
            assert line, "the sidecar closed the MCP connection"
            msg = json.loads(line)
            if msg.get("id") == msg_id and "method" not in msg:
                return msg

    def tool(self, msg_id: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": {"name": name, "arguments": args}})
        return self.answer(msg_id)["result"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_an_mcp_client_without_the_bridge_preamble_is_served(sidecar: Sidecar, svc, repo: Path) -> None:
    """A client speaking MCP directly on the socket (no `para mcp` preamble): it is served, has
    no default repository, and must pass `repo` as an absolute path."""
    svc("start", name="raw")
    c = RawMcp(sidecar)
    try:
        c.send(INIT)
        init = c.answer(1)
        assert init["result"]["serverInfo"]["name"] == "para", init
        c.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

        listed = c.tool(2, "para_list", {"repo": str(repo)})
        assert not listed.get("isError"), listed
        assert [s["name"] for s in listed["structuredContent"]["sessions"]] == ["raw"]
        for msg_id, args, says in ((3, {}, "this connection has no default repository; pass repo=<absolute path>"),
                                   (4, {"repo": "relative/path"}, "repo must be an absolute path on this connection")):
            refused = c.tool(msg_id, "para_list", args)
            assert refused.get("isError") and says in refused["content"][0]["text"], refused
    finally:
        c.close()


async def test_a_relative_repo_is_taken_from_the_bridge_s_directory(sidecar: Sidecar, svc, repo: Path) -> None:
    """Through `para mcp`, a relative `repo` is resolved against the directory the bridge runs
    in; a repo that is not a path is refused."""
    svc("start", name="rel")
    async with mcp_client(repo.parent) as c:
        listed = await call(c, "para_list", {"repo": repo.name})
        assert [s["name"] for s in listed["sessions"]] == ["rel"]
        assert "repo must be a path" in await call_error(c, "para_list", {"repo": ""})


def test_an_oversize_mcp_message_drops_only_that_connection(sidecar: Sidecar) -> None:
    """An MCP message over 64 MiB (no newline in sight) ends that connection; the sidecar logs
    it and keeps serving new MCP connections."""
    c = RawMcp(sidecar)
    try:
        c.send(INIT)
        c.answer(1)
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(65):
                c.sock.sendall(chunk)
            eof = c.file.readline()
        except (BrokenPipeError, ConnectionResetError):
            eof = b""
        assert eof == b""
    finally:
        c.close()
    assert "dropping an MCP connection" in sidecar.log_path.read_text()
    again = RawMcp(sidecar)
    try:
        again.send(INIT)
        assert again.answer(1)["result"]["serverInfo"]["name"] == "para"
    finally:
        again.close()


async def test_a_missing_session_resource_is_a_resource_error(sidecar: Sidecar, repo: Path) -> None:
    async with mcp_client(repo) as c:
        with pytest.raises(MCPError) as e:
            await c.read_resource("para://session/nope")
        assert "not_found" in str(e.value) and "nope" in str(e.value)


async def test_a_long_para_wait_reports_progress_while_it_waits(sidecar: Sidecar, svc, repo: Path) -> None:
    """para_wait reports progress at least every second while nothing happens, then its
    timeout (a client with a progress token sees the wait is alive)."""
    svc("start", name="slow")
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    async with mcp_client(repo) as c:
        r = await call(c, "para_wait", {"sessions": ["slow"], "timeout": 2}, progress_callback=on_progress)
    assert r["timed_out"] is True and r["changed"] == []
    assert progress[0] == (0, 2, "waiting for slow") and progress[-1] == (2, 2, "timed out")
    between = progress[1:-1]
    assert between and all(m == "waiting for slow" and 0 < p <= 2 for p, _, m in between), progress
    assert [p for p, _, _ in progress] == sorted(p for p, _, _ in progress)


async def test_para_wait_pages_through_more_than_a_thousand_events(sidecar: Sidecar, svc, repo: Path) -> None:
    """Events are read 1000 at a time: a wait from event 0 returns every one of them, and the
    newest event id is found even when more than 1000 precede it."""
    svc("start", name="chatty")
    for i in range(1001):
        svc("report", session="chatty", task=f"step {i}")
    newest = svc("events", after=0, limit=1000)["events"]
    total = len(newest) + len(svc("events", after=newest[-1]["id"], limit=1000)["events"])
    assert total == 1002  # started + 1001 status reports
    async with mcp_client(repo) as c:
        fresh = await call(c, "para_wait", {"sessions": ["chatty"], "timeout": 0})  # no cursor: the newest
        everything = await call(c, "para_wait", {"sessions": ["chatty"], "timeout": 0, "after_event": 0})
    ids = [e["id"] for e in everything["events"]]
    assert len(ids) == total and ids == sorted(ids) and len(set(ids)) == total
    assert fresh["last_event"] == everything["last_event"] == ids[-1]
    assert everything["changed"] == ["chatty"]  # its `started` event; status reports are not changes


def test_the_bridge_exits_clearly_when_the_sidecar_goes_away(sidecar: Sidecar, repo: Path) -> None:
    """`para mcp` during a session whose sidecar stops: it says so on stderr (naming the log)
    and exits with sidecar_unavailable, instead of hanging the AI client."""
    bridge = subprocess.Popen([*PARA_ARGV, "mcp"], cwd=repo, env=cli_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        bridge.stdin.write(json.dumps(INIT).encode() + b"\n")
        bridge.stdin.flush()
        assert json.loads(bridge.stdout.readline())["id"] == 1
        shutdown_sidecar(sidecar)
        bridge.wait(timeout=60)  # its stdin stays open: only the sidecar can have ended it
        err = bridge.stderr.read()
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    assert bridge.returncode == Code.sidecar_unavailable.exit, (bridge.returncode, err)
    assert b"the sidecar closed the connection" in err and b"Traceback" not in err
