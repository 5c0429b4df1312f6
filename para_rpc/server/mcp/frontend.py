"""The MCP frontend of one sidecar: its `MCPServer`, the calls into the service, events
turned into resource updates (both `subscriptions/listen` streams, 2026-07-28, and
`resources/subscribe`, every handshake-era version), and serving one connection."""

import asyncio
import json
import logging
import os
import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ResourceUpdated,
    ServerEvent,
)
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)

from para_rpc import __version__
from para_rpc.errors import Code, ParaError
from para_rpc.model import DomainEvent
from para_rpc.names import validate_session_name
from para_rpc.server.mcp import resources, tools
from para_rpc.server.mcp.guide import GUIDE
from para_rpc.server.mcp.http import BearerGate
from para_rpc.server.mcp.streams import PEER, Lines, Out, Peer
from para_rpc.service import Service
from para_rpc.service.invoke import CLIENT_GONE, invoke

log = logging.getLogger("para.mcp")
SEND_TIMEOUT = 10.0


class _Bus(InMemorySubscriptionBus):
    """The SDK's bus, counting its listeners (open `subscriptions/listen` streams): with none,
    and no `resources/subscribe`, an event is not turned into updates no one gets."""

    def __init__(self) -> None:
        super().__init__()
        self.listening = 0

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        self.listening += 1
        done = False

        def once() -> None:
            nonlocal done
            if not done:
                done = True
                self.listening -= 1
            unsubscribe()
        return once


class McpFrontend:
    """The MCP server of one sidecar, bound to its Service."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.bus = _Bus()
        self.server = MCPServer(
            "para", version=__version__, title="para",
            description="Parallel AI agents in git worktrees, coordinated by one sidecar.",
            instructions=GUIDE, subscriptions=self.bus)
        # resources/subscribe per connection (handshake-era clients): which URIs each wants pushed,
        # as the client spelled them -> as updates are published (`subscription_key`)
        self.subscribed: weakref.WeakKeyDictionary[Connection, dict[str, str]] = weakref.WeakKeyDictionary()
        low = self.server._lowlevel_server
        low.add_request_handler("resources/subscribe", SubscribeRequestParams, self._subscribe)
        low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe)
        tools.register(self)
        resources.register(self)
        # after the handlers: the capabilities (resources.subscribe) are derived from them
        self._init_options = low.create_initialization_options()

    # -- events from the Service (called on the loop by Service.emit, through its publish port)

    def publish(self, event: DomainEvent) -> None:
        """A domain event, as MCP clients see it: resource updates of the sessions it touches
        (and of the plans, whose tasks follow their sessions)."""
        if not self.bus.listening and not self.subscribed:
            return
        plain = ["para://sessions", "para://plans"] + ([f"para://session/{event.session}"] if event.session else [])
        uris = plain + [in_repo(u, event.repo) for u in plain]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.create_task(self._publish(uris))

    async def _publish(self, uris: list[str]) -> None:
        for uri in uris:
            try:
                await self.bus.publish(ResourceUpdated(uri=uri))
            except Exception:  # a listener that went away must not break the emitter
                log.exception("resource update for %s failed", uri)
        # Every subscriber at once: one that stopped reading must not hold up the others.
        # Each subscriber hears of the URIs it subscribed, spelled as it spelled them, in the
        # order above (a session's own update last).
        await asyncio.gather(*(self._send_updates(conn, [given for key in uris for given, k in wanted.items() if k == key])
                               for conn, wanted in list(self.subscribed.items())
                               if not set(wanted.values()).isdisjoint(uris)))

    async def _send_updates(self, conn: Connection, uris: list[str]) -> None:
        for uri in uris:
            try:
                await asyncio.wait_for(conn.send_resource_updated(uri), SEND_TIMEOUT)
            except TimeoutError:
                # It stopped reading: it loses its subscriptions (it may subscribe again) rather
                # than cost every later event another wait.
                self.subscribed.pop(conn, None)
                log.warning("dropped the subscriptions of an MCP client that stopped reading (%s)", uri)
                return
            except Exception:
                log.warning("resource update for %s to a subscriber failed", uri, exc_info=True)

    # -- resources/subscribe (2024-11-05 .. 2025-11-25; 2026-07-28 uses subscriptions/listen)

    @staticmethod
    def _connection(ctx: ServerRequestContext[Any, Any]) -> Connection:
        # The SDK's per-request session proxies one Connection; updates outlive the request,
        # so they go to the connection (its standalone channel), held weakly.
        conn: Connection = ctx.session._connection
        return conn

    async def _subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        key = subscription_key(uri)
        if key is None:
            raise MCPError(code=INVALID_PARAMS, message=f"{uri!r} cannot be subscribed; these can: para://sessions, "
                           "para://plans, para://session/<name>, each optionally with ?repo=<absolute path>",
                           data={"uri": uri})
        self.subscribed.setdefault(self._connection(ctx), {})[uri] = key
        return EmptyResult()

    async def _unsubscribe(self, ctx: ServerRequestContext[Any, Any],
                           params: UnsubscribeRequestParams) -> EmptyResult:
        self.subscribed.get(self._connection(ctx), {}).pop(str(params.uri), None)
        return EmptyResult()

    # -- calling the service

    def cwd(self, repo: object) -> str:
        peer = PEER.get()
        if repo is not None:
            if not isinstance(repo, str) or not repo or "\0" in repo:
                raise ParaError(Code.invalid_input, "repo must be a path")
            path = os.path.expanduser(repo)
            if not os.path.isabs(path):
                if peer is None or not peer.cwd:
                    raise ParaError(Code.invalid_input, "repo must be an absolute path on this connection")
                path = os.path.join(peer.cwd, path)
            return os.path.normpath(path)
        if peer is None or not peer.cwd:
            raise ParaError(Code.invalid_input, "this connection has no default repository; pass repo=<absolute path>")
        return peer.cwd

    async def call(self, method: str, repo: str | None, **params: Any) -> dict[str, Any]:
        """One service method; a failure is the ParaError itself (the tool layer turns it into
        the error result, the resource layer into a resource error)."""
        peer = PEER.get()
        data = {"cwd": self.cwd(repo), "env": dict(peer.env) if peer else {},
                **{k: v for k, v in params.items() if v is not None}}
        result: dict[str, Any] = await invoke(self.service, method, data)  # every result is an object
        return result

    # -- serving a connection

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readline()
        if not first:
            return
        peer, pushback = Peer(), None
        try:
            hello = json.loads(first)
        except ValueError:
            hello = None
        if isinstance(hello, dict) and hello.get("para_mcp"):
            cwd = hello.get("cwd")
            if isinstance(cwd, str) and os.path.isabs(cwd) and "\0" not in cwd:
                peer.cwd = cwd
            env = hello.get("env")
            if isinstance(env, dict):
                peer.env = {k: v for k, v in env.items()
                            if isinstance(k, str) and isinstance(v, str) and k.startswith("PARA_")}
            peer.client = str(hello.get("client", "para mcp"))[:100]
        else:
            pushback = first  # a client speaking MCP directly, without the bridge's preamble
        token = PEER.set(peer)
        # A start whose client is gone stops its setup and rolls back, as on a JSON-RPC
        # connection (service/invoke.py; the tool calls run in this context). Gone is the end
        # of its input: the SDK then answers what is in flight "Connection closed", so a start
        # going on would be one its client was told had failed.
        gone = asyncio.Event()
        gone_token = CLIENT_GONE.set(gone)
        try:
            lines = Lines(reader, pushback, on_end=gone.set)
            # Lines and Out are the part of anyio's AsyncFile that stdio_server uses (readline, write, flush)
            async with stdio_server(stdin=lines, stdout=Out(writer)) as (rs, ws):  # type: ignore[arg-type]
                await self.server._lowlevel_server.run(rs, ws, self._init_options)
        finally:
            gone.set()
            CLIENT_GONE.reset(gone_token)
            PEER.reset(token)

    # -- streamable HTTP (optional, loopback, bearer token)

    def http_app(self, token: str, host: str) -> Any:
        return BearerGate(self.server.streamable_http_app(host=host), token)


def in_repo(uri: str, repo: str) -> str:
    """`uri` of one repository, as the `?repo=` resource templates name it."""
    return f"{uri}?repo={urllib.parse.quote(repo, safe='/')}"


def subscription_key(uri: str) -> str | None:
    """The URI as updates are published for it, or None when it cannot be subscribed: a
    repository named by `?repo=` is compared by its real path, however the client encoded it."""
    base, _, query = uri.partition("?")
    if base not in ("para://sessions", "para://plans"):
        if not base.startswith("para://session/"):
            return None
        try:
            validate_session_name(base[len("para://session/"):])
        except ParaError:
            return None
    if not query:
        return base
    repo = urllib.parse.parse_qs(query).get("repo")
    if not repo or len(repo) != 1 or not os.path.isabs(repo[0]) or "\0" in repo[0]:
        return None
    return in_repo(base, os.path.realpath(repo[0]))
