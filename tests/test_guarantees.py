"""The guarantees para advertises most loudly, each pinned by a test that fails when it is removed.

- **One queue per target, first come first served.** Integrations into one branch wait for
  each other and land in the order they arrived (`Repo.target_lock`).
- **Only the user reaches the sidecar.** A peer with another uid is disconnected without an
  answer, on the JSON-RPC socket and on the MCP socket `<socket>.mcp` (SO_PEERCRED). CI runs
  as root, where file modes stop no one: the test opens the modes and connects as another uid.
- **The target moves by compare-and-swap.** Someone committing to the target while an
  integration is in flight makes it fail with `busy` and land nothing:
  `test_target_moved_during_integration_gets_busy_and_lands_nothing` (written with the
  change of `integrate.advance_target`; tools/mutants.py runs it against mutation M1).

`python tools/mutants.py` removes each of these guarantees in turn and expects a failing run.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest

from conftest import Sidecar, rev, wait_until
from para_rpc import PROTOCOL_VERSION, __version__

pytest.register_assert_rewrite("integrate_util")
from integrate_util import (Api, BlockingCheck, api, assert_checkout_clean_at, changed_files, events,  # noqa: E402,F401
                            first_parent_chain, last_event, launch, message, outcome, parents, start)


# ---- the integration queue is FIFO ----------------------------------------------------------------

def test_queued_integrations_land_in_arrival_order(api: Api, tmp_path: Path) -> None:
    """Ten integrations into main: the first one holds the queue (its check blocks), the
    other nine arrive one at a time while it waits; once it is released they land one by
    one, in exactly the order they arrived, each on top of the one before."""
    repo = api.repo
    names = [f"s{i}" for i in range(10)]
    for n in names:
        start(api, n, {f"{n}.txt": f"work of {n}\n"})
    base = rev(repo, "main")
    check = BlockingCheck(tmp_path)
    procs = {"s0": launch("integrate", "s0 lands", "--session", "s0", cwd=repo, env=check.env())}
    try:
        check.wait_blocked(procs["s0"])
        for n in names[1:]:
            seen = last_event(api)
            procs[n] = launch("integrate", f"{n} lands", "--session", n, cwd=repo)
            # `queued` is emitted in the same step that joins the queue: once it is visible,
            # n is in line behind the ones before it.
            wait_until(lambda: [e for e in events(api, seen, "queued") if e["session"] == n]
                       or procs[n].poll() is not None, what=f"{n} to be queued")
            assert procs[n].poll() is None, f"{n} did not wait in the queue: {outcome(procs[n])}"
        assert {n: s["status"] for n, s in api.sessions().items()} == {n: "integrating" for n in names}
        assert rev(repo, "main") == base  # nothing landed while the first check blocks
        check.release(0)
        results = {n: outcome(p) for n, p in procs.items()}
    finally:
        check.release(0)
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert {n: rc for n, (rc, _) in results.items()} == {n: 0 for n in names}, results

    chain = list(reversed(first_parent_chain(repo, "main", base)))
    assert [message(repo, c) for c in chain] == [f"{n} lands" for n in names]
    prev = base
    for n, c in zip(names, chain):
        assert parents(repo, c) == [prev] and changed_files(repo, c) == [f"{n}.txt"]
        prev = c
    # (Those that waited together land with one move of main, each as its own commit in that
    # order; each says so when its worktree is gone, which they finish side by side.)
    landed = {e["session"]: e["data"]["commit"] for e in events(api, 0, "integrated")}
    assert landed == dict(zip(names, chain))
    assert check.runs() == 1  # the check ran for s0 only (the others were sent without it)
    assert_checkout_clean_at(repo, "main")


# ---- peers with another uid are refused on both sockets ------------------------------------------

UNPRIVILEGED = 65534  # `nobody`: exists as a uid whether or not /etc/passwd names it

def _peer(path: Path, payload: str) -> dict:
    """Connect, send one request, and report whether the connection was accepted, whether
    anything came back, and whether it was then closed."""
    result = {"uid": os.getuid(), "connected": False, "answer": "", "closed": False}
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    try:
        s.connect(str(path))
        result["connected"] = True
        s.sendall(payload.encode())
        chunk = s.recv(65536)
        if chunk:
            result["answer"] = chunk[:300].decode("utf-8", "replace")  # an answer began: enough to know
        else:
            result["closed"] = True
    except (ConnectionResetError, BrokenPipeError):
        result["closed"] = True
    except OSError as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        s.close()
    return result


def _jsonrpc_hello() -> str:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "para/hello",
                       "params": {"client": "intruder", "version": __version__, "protocol": PROTOCOL_VERSION}})
    return f"Content-Length: {len(body.encode())}\r\n\r\n{body}"


def _mcp_initialize(cwd: Path) -> str:
    preamble = json.dumps({"para_mcp": 1, "cwd": str(cwd), "env": {}, "client": "intruder"})
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "intruder", "version": "0"}}})
    return preamble + "\n" + init + "\n"


def _connect_as(uid: int | None, path: Path, payload: str) -> dict:
    """`_peer` in a forked child that first becomes `uid` (None: stays ourselves). A fork,
    not a new program: the child needs no access to this checkout or its interpreter."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            os.write(w, json.dumps(_peer(path, payload)).encode())
        except BaseException as e:
            os.write(w, json.dumps({"error": repr(e)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result = json.loads(data or b"{}")
    assert "error" not in result, result
    return result


@pytest.fixture
def open_sockets(sidecar: Sidecar, repo: Path) -> dict[str, tuple[Path, str]]:
    """The sidecar's two sockets, with their directory and file modes opened to everyone,
    so that only the peer-uid check can keep another user out. (As root, modes stop no one
    anyway; opening them makes the test mean the same on every machine.)"""
    if os.getuid() != 0:
        pytest.fail("connecting as another uid needs root (CI runs the suite as root); run this test "
                    "as root, for example in a container, to check the sidecar's peer-uid refusal")
    mcp_sock = sidecar.socket.with_name(sidecar.socket.name + ".mcp")
    os.chmod(sidecar.socket.parent, 0o755)
    for sock in (sidecar.socket, mcp_sock):
        assert stat.S_ISSOCK(os.stat(sock).st_mode)
        os.chmod(sock, 0o666)
    return {"json-rpc": (sidecar.socket, _jsonrpc_hello()), "mcp": (mcp_sock, _mcp_initialize(repo))}


@pytest.mark.parametrize("which", ["json-rpc", "mcp"])
def test_a_peer_with_another_uid_is_disconnected_without_an_answer(open_sockets, sidecar: Sidecar,
                                                                   which: str) -> None:
    """docs/protocol.md, "Peer check": a peer with another uid is disconnected at once,
    without a message. The same request from our own uid is answered (so the refusal is the
    uid check, not a bad request or a closed socket)."""
    path, payload = open_sockets[which]
    intruder = _connect_as(UNPRIVILEGED, path, payload)
    assert intruder["uid"] == UNPRIVILEGED
    assert intruder["connected"], f"the socket modes did not let uid {UNPRIVILEGED} connect: {intruder}"
    assert intruder["answer"] == "" and intruder["closed"], f"uid {UNPRIVILEGED} was served: {intruder}"

    owner = _connect_as(None, path, payload)
    assert owner["connected"] and owner["answer"], owner
    assert '"result"' in owner["answer"] or "Content-Length" in owner["answer"], owner

    # The sidecar is unharmed and still serves its user.
    with sidecar.connect() as conn:
        assert conn.request("para/hello", {"client": "test", "version": __version__,
                                           "protocol": PROTOCOL_VERSION})["pid"] == sidecar.pid
