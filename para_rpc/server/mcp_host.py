"""The sidecar's MCP listeners, without importing the MCP SDK up front.

`McpHost` binds the unix socket `<socket>.mcp` (0600, peers' uid checked like
the JSON-RPC socket) before the JSON-RPC socket exists, so a client that has
reached the sidecar can always connect to it too. The SDK (about a second of
CPU for its imports) loads in a worker thread when the first MCP client
connects, or once the sidecar has run for PRELOAD_AFTER seconds, so short-lived
sidecars and the CLI's first requests never pay for it and a long-lived
sidecar has it ready before an AI client arrives. Optionally it also serves MCP over streamable HTTP on a loopback address,
every request authenticated by a bearer token written to `<socket>.mcp-token`
(0600); the URL goes to `<socket>.mcp-url`.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from para_rpc import trust
from para_rpc.errors import Code, ParaError
from para_rpc.runtime import bind_private_unix, mcp_socket_path, unbind_private_unix

log = logging.getLogger("para.mcp")
MAX_LINE = 64 * 1024 * 1024
PRELOAD_AFTER = 10.0


def parse_http_address(value: str) -> tuple[str, int]:
    """`127.0.0.1:PORT`, `[::1]:PORT` or `localhost:PORT`; loopback only."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ParaError(Code.invalid_input, f"--mcp-http wants HOST:PORT on loopback, got {value!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ParaError(Code.invalid_input, f"MCP over HTTP is served on loopback addresses only, not {host!r}")
    return host, int(port)


def _write_private(path: Path, text: str) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class McpHost:
    def __init__(self, service: Any, sock_path: Path,
                 peer_ok: Callable[[asyncio.StreamWriter], bool]) -> None:
        self.service = service
        self.path = mcp_socket_path(sock_path)
        self.token_path = sock_path.with_name(sock_path.name + ".mcp-token")
        self.url_path = sock_path.with_name(sock_path.name + ".mcp-url")
        self.peer_ok = peer_ok
        self.conns: set[asyncio.StreamWriter] = set()
        self.frontend: Any = None
        self._loading: asyncio.Future[Any] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ino: int | None = None
        self._http: Any = None
        self._preload_timer: asyncio.TimerHandle | None = None
        self.on_idle_change: Callable[[], None] = lambda: None

    # -- lifecycle

    async def listen(self) -> None:
        self._server, self._ino = await bind_private_unix(self.path, self._on_connect, limit=MAX_LINE)

    def preload(self, delay: float = PRELOAD_AFTER) -> None:
        """Build the MCP server in a worker thread after `delay` seconds (if no client asked first)."""
        def go() -> None:
            if self._loading is None:
                log.info("loading the MCP server ahead of its first client")
                self._loading = asyncio.ensure_future(self._build())
                self._loading.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._preload_timer = asyncio.get_running_loop().call_later(delay, go)

    def _load(self) -> Awaitable[Any]:
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._build())
        return asyncio.shield(self._loading)  # a waiter that goes away must not cancel the build

    async def _build(self) -> Any:
        def build() -> Any:
            mod = importlib.import_module("para_rpc.server.mcp")
            return mod.McpFrontend(self.service)
        try:
            self.frontend = await asyncio.to_thread(build)
        except Exception:
            log.exception("the MCP server could not be built")
            raise
        log.info("MCP ready on %s", self.path)
        return self.frontend

    async def serve_http(self, address: str) -> str:
        host, port = parse_http_address(address)
        frontend = await self._load()
        token = secrets.token_urlsafe(32)
        mod = importlib.import_module("para_rpc.server.mcp")
        self._http = mod.HttpServer(frontend, host, port, token)
        _write_private(self.token_path, token + "\n")
        _write_private(self.url_path, self._http.url + "\n")
        self._http.start()
        url: str = self._http.url
        log.info("MCP over streamable HTTP on %s (bearer token in %s)", url, self.token_path)
        return url

    async def close(self) -> None:
        if self._preload_timer is not None:
            self._preload_timer.cancel()
        if self._server is not None:
            self._server.close()
        for w in list(self.conns):
            w.close()
        if self._http is not None:
            await self._http.stop()
            for p in (self.token_path, self.url_path):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
        unbind_private_unix(self.path, self._ino)
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()

    # -- events from the service

    def publish(self, event: Any) -> None:
        """A domain event (before the SDK is loaded nobody can be listening)."""
        if self.frontend is not None:
            try:
                self.frontend.publish(event)
            except Exception:
                log.exception("MCP event delivery failed")

    # -- connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.peer_ok(writer):
            writer.close()
            return
        self.conns.add(writer)
        self.on_idle_change()
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:  # the `para mcp` bridge: whose is it?
            pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
            trust.PEER_PID.set(pid)
        try:
            frontend = await self._load()
            await frontend.serve_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("MCP connection failed")
        finally:
            self.conns.discard(writer)
            writer.close()
            self.on_idle_change()
