"""The JSON-RPC transport: one pygls server object per connection, one shared Service.

pygls' own starters serve a single client and exit the process when it says
`exit`; here each accepted connection gets its own `ParaServer`, whose
protocol closes only that connection on `exit`. Params stay plain dicts
(pygls would turn them into namedtuples) and are converted with msgspec into
the structs of `params.py`; results are sent as plain builtins. The same
operations are also `workspace/executeCommand` commands named `para.<verb>`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import msgspec
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcMethodNotFound, JsonRpcServerError
from pygls.io_ import run_async
from pygls.lsp.server import LanguageServer
from pygls.protocol import (JsonRPCNotification, JsonRPCRequestMessage, JsonRPCResponseMessage,
                            LanguageServerProtocol, default_converter, lsp_method)

from para_rpc import __version__
from para_rpc.errors import Code, ParaError
from para_rpc.params import SERVICE_METHODS, TRANSPORT_METHODS
from para_rpc.service import Service

log = logging.getLogger("para.lsp")


def _plain(obj: dict, cls: type) -> Any:
    return cls(**obj)


def _converter():
    conv = default_converter()
    for cls in (JsonRPCRequestMessage, JsonRPCNotification, JsonRPCResponseMessage):
        conv.register_structure_hook(cls, _plain)
    return conv


CONVERTER = _converter()


class ParaProtocol(LanguageServerProtocol):
    @lsp_method(types.EXIT)
    def lsp_exit(self, *args):
        # The built-in handler calls sys.exit(): in a shared sidecar, `exit`
        # only ends this client's connection.
        self._server.close()
        yield from ()


class ParaServer(LanguageServer):
    def __init__(self, service: Service, hub: "Hub") -> None:
        super().__init__("para", __version__, protocol_cls=ParaProtocol,
                         converter_factory=lambda: CONVERTER)
        self.service = service
        self.hub = hub
        self.stop_event = threading.Event()
        self.subscribed = False
        self.editor = False
        self.writer: asyncio.StreamWriter | None = None
        self.connected_at = time.monotonic()
        for method, fn in HANDLERS.items():
            self.feature(method)(fn)
        for command, fn in COMMANDS.items():
            self.command(command)(fn)

    def close(self) -> None:
        self.stop_event.set()
        if self.writer is not None:
            self.writer.close()

    def report_server_error(self, error: Exception, source: Any) -> None:
        # The default shows a message in the client's window; a CLI has none. pygls also
        # reports every error it answered a request with: those are the client's business
        # (bad input, unknown session; unexpected ones were logged by call_service).
        if isinstance(error, (JsonRpcServerError, JsonRpcInvalidParams, JsonRpcMethodNotFound)):
            log.debug("request answered with an error: %s", error)
        else:
            log.error("connection error: %s", error)


class Hub:
    """The set of open connections, and broadcast to the subscribed ones."""

    def __init__(self) -> None:
        self.conns: set[ParaServer] = set()
        self.on_idle_change = lambda: None
        self.request_stop = lambda: None

    def editor_available(self) -> bool:
        return any(ls.editor for ls in self.conns)

    async def editor_request(self, params: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Ask the most recently connected editor to run an agent in a terminal."""
        for ls in sorted((c for c in self.conns if c.editor), key=lambda c: -c.connected_at):
            try:
                answer = await asyncio.wait_for(ls.protocol.send_request_async("para/runInTerminal", params),
                                                timeout)
            except Exception as e:  # timeout, closed connection, or an error answer
                log.info("editor did not run the agent: %s", e)
                continue
            if isinstance(answer, dict):
                return answer
        return None

    def broadcast(self, method: str, payload: dict[str, Any]) -> None:
        for ls in list(self.conns):
            if ls.subscribed:
                try:
                    ls.protocol.notify(method, payload)
                except Exception as e:  # a client that went away must not stop the others
                    log.info("dropping notification to a closed connection: %s", e)

    async def serve(self, service: Service, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        ls = ParaServer(service, self)
        ls.writer = writer
        ls.protocol.set_writer(writer)
        self.conns.add(ls)
        self.on_idle_change()
        try:
            await run_async(stop_event=ls.stop_event, reader=reader, protocol=ls.protocol,
                            logger=log, error_handler=ls.report_server_error)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.conns.discard(ls)
            writer.close()
            self.on_idle_change()


def _rpc_error(e: ParaError) -> JsonRpcServerError:
    return JsonRpcServerError(e.message, e.code.rpc, {"code": e.code.name, **e.data})


async def call_service(service: Service, method: str, params: Any) -> Any:
    """Decode params, run the operation (shielded from request cancellation so a
    multi-step operation is never abandoned half way), map errors."""
    params_cls, attr = SERVICE_METHODS[method]
    try:
        p = msgspec.convert(params if params is not None else {}, params_cls)
    except msgspec.ValidationError as e:
        raise JsonRpcInvalidParams(f"{method}: {e}") from None
    try:
        return await asyncio.shield(getattr(service, attr)(p))
    except ParaError as e:
        raise _rpc_error(e) from None
    except Exception as e:
        log.exception("%s failed", method)
        raise _rpc_error(ParaError(Code.internal, f"{method} failed unexpectedly: {e.__class__.__name__}: {e}"))


def _make_handler(method: str):
    async def handler(ls: ParaServer, params: Any = None) -> Any:
        return await call_service(ls.service, method, params)
    handler.__name__ = "handle_" + method.replace("/", "_")
    return handler


def _make_command(method: str):
    async def command(ls: ParaServer, *args: Any) -> Any:
        return await call_service(ls.service, method, args[0] if args else {})
    command.__name__ = "command_" + method.replace("/", "_")
    return command


def _transport_params(method: str, params: Any) -> Any:
    """Decode the params of a connection-level method (unknown keys and wrong types refused)."""
    try:
        return msgspec.convert(params if params is not None else {}, TRANSPORT_METHODS[method])
    except msgspec.ValidationError as e:
        raise JsonRpcInvalidParams(f"{method}: {e}") from None


async def _subscribe(ls: ParaServer, params: Any = None) -> dict[str, Any]:
    p = _transport_params("para/subscribe", params)
    ls.subscribed = p.events
    ls.editor = p.editor
    return {"subscribed": ls.subscribed, "editor": ls.editor}


async def _unsubscribe(ls: ParaServer, params: Any = None) -> dict[str, Any]:
    _transport_params("para/unsubscribe", params)
    ls.subscribed = ls.editor = False
    return {"subscribed": False}


async def _shutdown_sidecar(ls: ParaServer, params: Any = None) -> dict[str, Any]:
    _transport_params("para/shutdown", params)
    asyncio.get_running_loop().call_soon(ls.hub.request_stop)
    return {"stopping": True}


HANDLERS: dict[str, Any] = {m: _make_handler(m) for m in SERVICE_METHODS}
HANDLERS.update({"para/subscribe": _subscribe, "para/unsubscribe": _unsubscribe,
                 "para/shutdown": _shutdown_sidecar})
assert set(HANDLERS) == set(SERVICE_METHODS) | set(TRANSPORT_METHODS)
COMMANDS: dict[str, Any] = {"para." + m.split("/", 1)[1]: _make_command(m)
                            for m in SERVICE_METHODS if m != "para/hello"}
