"""The sidecar process: one per user, owning all session state.

Single instance: an exclusive flock on `<socket>.lock` (which holds our pid).
The socket lives in a 0700 directory, is created 0600, and every connecting
peer's uid is checked. SIGTERM/SIGINT or `para/shutdown` stop it gracefully:
no new connections, in-flight operations finish, then the socket is removed.
With an idle timeout it exits once no client is connected and no operation
has run for that long.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path
from typing import Any

from para_rpc import __version__, config, runtime, trust
from para_rpc.errors import ParaError
from para_rpc.model import Binding, DomainEvent
from para_rpc.server.bound import Gate
from para_rpc.server.mcp_host import PRELOAD_AFTER, McpHost, parse_http_address
from para_rpc.server.rpc import Hub, preload_lsp
from para_rpc.service import Service
from para_rpc.service.invoke import CLIENT_GONE
from para_rpc.service.ports import Ports

log = logging.getLogger("para.sidecar")
EXIT_ALREADY_RUNNING = 3
BOUND_CONNECTIONS_MAX = 16  # open connections per session-bound socket (see bind_channel)


def peer_creds(writer: asyncio.StreamWriter) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a unix socket connection."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    creds = peer_creds(writer)
    return creds[1] if creds else None


def acquire_lock() -> int | None:
    """Take the single-instance lock; None if another sidecar holds it."""
    path = runtime.lock_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _take_ready_fd() -> int | None:
    """The pipe the CLI that started us waits on (client.spawn_sidecar), out of the environment
    so that nothing we start inherits the variable; None unless it names a pipe."""
    value = os.environ.pop(runtime.READY_FD_ENV, None)
    try:
        fd = int(value) if value is not None else None
        return fd if fd is not None and stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (ValueError, OSError):
        return None


def _tell_ready(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.write(fd, b"1")
    except OSError:  # the CLI that waited went away: nothing to tell
        pass
    finally:
        os.close(fd)


async def serve(idle_timeout: float, mcp_http: str | None = None, ready_fd: int | None = None) -> int:
    sock_path = runtime.socket_path()
    runtime.ensure_private_dir(sock_path.parent)
    lock_fd = acquire_lock()
    if lock_fd is None:
        log.error("another sidecar already holds %s", runtime.lock_path())
        print(f"para sidecar: already running ({runtime.lock_path()})", file=sys.stderr)
        return EXIT_ALREADY_RUNNING

    hub = Hub()
    mcp: McpHost | None = None

    def publish(event: DomainEvent) -> None:  # JSON-RPC subscribers and MCP clients
        hub.publish(event)
        if mcp is not None:
            mcp.publish(event)

    channels: dict[str, tuple[asyncio.AbstractServer, int]] = {}

    async def bind_channel(binding: Binding) -> None:
        """Listen on a session-bound socket: same uid check, every message through its Gate."""
        live, warned = 0, False

        async def on_bound(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal live, warned
            if live >= BOUND_CONNECTIONS_MAX:
                # One agent needs one to three connections; a flood would take the sidecar's
                # file descriptors from every client. Logged once: a log line per refused
                # attempt would fill the disk instead.
                if not warned:
                    warned = True
                    log.warning("session %s: more than %d connections on its bound socket; further ones "
                                "are closed at once (logged once)", binding.session, BOUND_CONNECTIONS_MAX)
                writer.close()
                return
            live += 1
            try:
                await serve_bound(reader, writer)
            finally:
                live -= 1

        async def serve_bound(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            creds = peer_creds(writer)
            if creds is not None and creds[1] != os.getuid():
                log.warning("refused a bound connection from uid %s", creds[1])
                writer.close()
                return
            trust.PEER_PID.set(creds[0] if creds else None)
            gone = asyncio.Event()
            CLIENT_GONE.set(gone)
            try:
                await hub.serve(service, reader, writer, gate=Gate(binding))
            finally:
                gone.set()

        unbind_channel(binding.socket)
        channels[binding.socket] = await runtime.bind_private_unix(Path(binding.socket), on_bound)

    def unbind_channel(socket: str) -> None:
        entry = channels.pop(socket, None)
        if entry is not None:
            entry[0].close()
            runtime.unbind_private_unix(Path(socket), entry[1])

    service = Service(Ports(publish=publish, editor_available=hub.editor_available,
                            run_in_editor=hub.run_in_terminal, bind_channel=bind_channel, notify_editors=hub.notify_editors,
                            unbind_channel=unbind_channel), socket=str(sock_path))
    mcp = McpHost(service, sock_path, lambda w: _peer_uid(w) in (None, os.getuid()))
    stop = asyncio.Event()
    last_activity = time.monotonic()

    def touch() -> None:
        nonlocal last_activity
        last_activity = time.monotonic()

    hub.on_idle_change = touch
    mcp.on_idle_change = touch

    def request_stop() -> list[dict[str, Any]]:
        """`para/shutdown`: the setups in flight are stopped at once (their starts roll back), so
        the sidecar exits promptly instead of waiting for them; they are named in the answer."""
        stopped = service.stop_setups("the sidecar is stopping (`para sidecar stop`)")
        asyncio.get_running_loop().call_soon(stop.set)  # (after this answer is on its way)
        return stopped

    hub.request_stop = request_stop

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        creds = peer_creds(writer)
        if creds is not None and creds[1] != os.getuid():
            log.warning("refused a connection from uid %s", creds[1])
            writer.close()
            return
        # Every request of this connection runs in this task's context: the service can tell
        # an agent of a session from the user (trust.forbid_agent).
        trust.PEER_PID.set(creds[0] if creds else None)
        gone = asyncio.Event()  # (a start whose client went away stops its setup: service/invoke.py)
        CLIENT_GONE.set(gone)
        try:
            await hub.serve(service, reader, writer)
        finally:
            gone.set()

    await mcp.listen()  # before the JSON-RPC socket: whoever reaches us finds MCP too
    server, sock_ino = await runtime.bind_private_unix(sock_path, on_connect)  # (we hold the lock)
    _tell_ready(ready_fd)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    mcp.preload()
    lsp_preload = loop.call_later(PRELOAD_AFTER, preload_lsp)  # (an editor's `initialize` then waits for none)
    try:  # the agents of live sandboxed sessions hold these paths: listen there again
        restored = await service.restore_channels()
        if restored:
            log.info("listening again on %d session-bound socket(s)", restored)
    except Exception:
        log.exception("restoring session-bound sockets failed")
    if mcp_http:
        try:
            await mcp.serve_http(mcp_http)
        except (ParaError, OSError) as e:
            log.error("MCP over HTTP not started: %s", getattr(e, "message", e))
    log.info("para sidecar %s (pid %d) serving %s, idle timeout %ss",
             __version__, os.getpid(), sock_path, idle_timeout or "off")
    # What the previous sidecar left in the repositories it served (a crash, a stop): repaired
    # now, not when someone next runs para there (a frozen agent would wait that long).
    reopening = asyncio.create_task(service.reopen_known())

    async def idle_watch() -> None:
        while not stop.is_set():
            await asyncio.sleep(min(1.0, idle_timeout / 4) if idle_timeout else 5.0)
            if hub.conns or mcp.conns or service.busy or service.agents_running():
                touch()
            elif idle_timeout and time.monotonic() - last_activity >= idle_timeout:
                log.info("idle for %ss, exiting", idle_timeout)
                stop.set()

    watcher = asyncio.create_task(idle_watch())
    await stop.wait()
    log.info("stopping")
    server.close()
    service.stop_setups("the sidecar is stopping")  # (SIGTERM: the same as para/shutdown)
    deadline = time.monotonic() + 60
    while service.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for _ in range(20):  # (let the answers of what just finished reach their clients first)
        await asyncio.sleep(0)
    reopening.cancel()
    released = await service.release_all_frozen()  # no agent stays paused behind this sidecar
    if released:
        log.info("paused agent processes released: %s", "; ".join(released))
    lsp_preload.cancel()
    await mcp.close()
    for ls in list(hub.conns):
        ls.close()
    watcher.cancel()
    for socket_ in list(channels):  # (their registry stays: the next sidecar binds them again)
        unbind_channel(socket_)
    runtime.unbind_private_unix(sock_path, sock_ino)
    service.close()
    os.close(lock_fd)
    log.info("stopped")
    return 0


def _idle_default() -> float:
    try:
        return float(config.values(None, os.environ)["sidecar.idle_timeout"])
    except ParaError as e:
        log.error("%s; idle timeout off", e.message)
        return 0.0


def _use_pidfd_child_watcher() -> None:
    """On Python 3.11 asyncio waits for every child process with a new thread
    (ThreadedChildWatcher): starting it blocks the event loop about a millisecond
    per git process, which the sidecar spawns by the hundred. A pidfd watcher
    (what 3.12+ uses by default where the kernel supports it) needs no thread."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # kernel older than 5.3, or pidfds not permitted
        return
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="para-sidecar", description="Run the para sidecar in the foreground.")
    ap.add_argument("--idle-timeout", type=float, default=None,
                    help="seconds without clients before exiting (0 = never)")
    ap.add_argument("--log-level", default=os.environ.get("PARA_LOG_LEVEL", "INFO"))
    ap.add_argument("--stderr", action="store_true", help="log to stderr instead of the log file")
    ap.add_argument("--mcp-http", metavar="HOST:PORT", default=os.environ.get("PARA_MCP_HTTP") or None,
                    help="also serve MCP over streamable HTTP on this loopback address, with a bearer token "
                         "in <socket>.mcp-token (env PARA_MCP_HTTP; off by default)")
    args = ap.parse_args(argv)
    ready_fd = _take_ready_fd()
    if args.mcp_http:
        try:
            parse_http_address(args.mcp_http)
        except ParaError as e:
            print(f"para sidecar: {e.message}", file=sys.stderr)
            return e.code.exit
    try:
        runtime.ensure_private_dir(runtime.socket_path().parent)
        if not args.stderr:
            runtime.create_private(runtime.log_path())
    except ParaError as e:
        print(f"para sidecar: {e.message}", file=sys.stderr)
        return e.code.exit
    handler = logging.StreamHandler() if args.stderr else logging.FileHandler(runtime.log_path())
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    logging.getLogger("pygls").setLevel(logging.CRITICAL)  # it logs expected errors with tracebacks
    idle = args.idle_timeout if args.idle_timeout is not None else _idle_default()
    _use_pidfd_child_watcher()
    return asyncio.run(serve(idle, args.mcp_http, ready_fd))


if __name__ == "__main__":
    sys.exit(main())
