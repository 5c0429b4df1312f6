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
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, ClassVar

import attrs
import msgspec
from cattrs import Converter, transform_error
from cattrs.errors import BaseValidationError
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcInvalidParams,
    JsonRpcMethodNotFound,
    JsonRpcServerError,
)
from pygls.lsp.server import LanguageServer
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    LanguageServerProtocol,
    default_converter,
    lsp_method,
)

from para_rpc import __version__
from para_rpc.errors import ParaError
from para_rpc.methods import SERVICE_METHODS
from para_rpc.model import DomainEvent
from para_rpc.params import TRANSPORT_METHODS
from para_rpc.server.bound import BOUND_NOTIFICATIONS, Gate
from para_rpc.service import Service
from para_rpc.service.invoke import BadParams, invoke
from para_rpc.service.ports import PROGRESS

log = logging.getLogger("para.lsp")


# A message body larger than this is refused and its connection closed: nothing para
# accepts comes near it, and the body would otherwise be buffered whole.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_HEADER_LINE = 8192
PARSE_ERROR, INVALID_REQUEST = -32700, -32600


def _plain(obj: dict[str, Any], cls: type[Any]) -> Any:
    # Only the members the class knows: JSON-RPC extension members are ignored. A
    # missing `params` (allowed by JSON-RPC) is None, which every method reads as {}.
    return cls(**{a.name: obj.get(a.name) for a in attrs.fields(cls)})


def _converter() -> Converter:
    conv: Converter = default_converter()  # type: ignore[no-untyped-call]  # pygls leaves it unannotated
    for cls in (JsonRPCRequestMessage, JsonRPCNotification, JsonRPCResponseMessage):
        conv.register_structure_hook(cls, _plain)
    return conv


CONVERTER = _converter()


class ParaProtocol(LanguageServerProtocol):
    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Generator[Any, Any, types.InitializeResult]:
        # para is not a language server: advertising text document sync would make an LSP
        # client (a VS Code language client) stream every open file to the sidecar.
        result = yield from super().lsp_initialize(params)
        result.capabilities.text_document_sync = None
        return result

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> Generator[Any, Any, None]:
        # The built-in handler calls sys.exit(): in a shared sidecar, `exit`
        # only ends this client's connection.
        if isinstance(self._server, ParaServer):  # always: ParaServer is the only server made with it
            self._server.close()
        yield from ()


class ParaServer(LanguageServer):
    def __init__(self, service: Service, hub: Hub, gate: Gate | None = None) -> None:
        super().__init__("para", __version__, protocol_cls=ParaProtocol,
                         converter_factory=lambda: CONVERTER)
        self.service = service
        self.hub = hub
        self.gate = gate  # a session-bound connection: every message passes it first
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
        self.on_idle_change: Callable[[], None] = lambda: None
        self.request_stop: Callable[[], list[dict[str, Any]]] = list

    def editor_available(self) -> bool:
        return any(ls.editor for ls in self.conns)

    async def run_in_terminal(self, params: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Ask the most recently connected editor to run an agent in a terminal."""
        for ls in sorted((c for c in self.conns if c.editor), key=lambda c: -c.connected_at):
            try:
                answer = await asyncio.wait_for(ls.protocol.send_request_async("para/runInTerminal", params),
                                                timeout)
            except Exception as e:  # noqa: BLE001 timeout, closed connection, or an error answer
                log.info("editor did not run the agent: %s", e)
                continue
            if isinstance(answer, dict):
                return answer
        return None

    # What the service's `notify_editors` kinds are on this wire.
    EDITOR_NOTIFICATIONS: ClassVar[dict[str, str]] = {"open": "para/openWorktree", "stop_terminal": "para/stopTerminal"}

    def notify_editors(self, kind: str, payload: dict[str, Any]) -> int:
        """Send a notification to every editor connection (subscribed with editor=true)."""
        told = 0
        for ls in list(self.conns):
            if ls.editor:
                try:
                    ls.protocol.notify(self.EDITOR_NOTIFICATIONS[kind], payload)
                    told += 1
                except Exception as e:  # noqa: BLE001 a client that went away must not stop the others
                    log.info("dropping an editor notification to a closed connection: %s", e)
        return told

    def publish(self, event: DomainEvent) -> None:
        """A domain event, as JSON-RPC subscribers see it: `para/event` (the event) and
        `para/sessionsChanged` (which sessions of which repository to read again)."""
        self.broadcast("para/event", msgspec.to_builtins(event))
        self.broadcast("para/sessionsChanged", {"repo": event.repo, "sessions": [event.session] if event.session
                                                else [], "kind": event.kind})

    def broadcast(self, method: str, payload: dict[str, Any]) -> None:
        for ls in list(self.conns):
            if ls.subscribed:
                try:
                    ls.protocol.notify(method, payload)
                except Exception as e:  # noqa: BLE001 a client that went away must not stop the others
                    log.info("dropping notification to a closed connection: %s", e)

    async def serve(self, service: Service, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, gate: Gate | None = None) -> None:
        ls = ParaServer(service, self, gate)
        ls.writer = writer
        ls.protocol.set_writer(writer)
        self.conns.add(ls)
        self.on_idle_change()
        try:
            await _read_messages(ls, reader)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.conns.discard(ls)
            writer.close()
            self.on_idle_change()


class _FramingError(Exception):
    """The byte stream is not LSP framing: the connection cannot be resynchronized."""


def _send_error(ls: ParaServer, msg_id: Any, code: int, message: str, data: Any = None) -> None:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "error": error}).encode()
    if ls.writer is not None and not ls.writer.is_closing():
        ls.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """One message body, or None at the end of the stream."""
    length = None
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise _FramingError("the stream ended inside a header") from None
            return None
        except asyncio.LimitOverrunError:
            raise _FramingError("a header line is too long") from None
        if len(line) > MAX_HEADER_LINE:
            raise _FramingError("a header line is too long")
        if not line.strip():
            if length is None:
                raise _FramingError("a message without a Content-Length header")
            break
        name, sep, value = line.partition(b":")
        if not sep:
            raise _FramingError(f"not a header: {line[:60]!r}")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if not value.isdigit():
                raise _FramingError(f"bad Content-Length: {value[:30]!r}")
            length = int(value)
            if length > MAX_MESSAGE_BYTES:
                raise _FramingError(f"a message of {length} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    return await reader.readexactly(length)


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _envelope_error(msg: Any) -> tuple[Any, str] | None:
    """(the id to answer with, why) if `msg` is not a JSON-RPC 2.0 message para can route."""
    if isinstance(msg, list):
        return None, "batch requests are not supported; send one request per message"
    if not isinstance(msg, dict):
        return None, f"a message must be a JSON object, got {type(msg).__name__}"
    msg_id = msg.get("id")
    if "id" in msg and (isinstance(msg_id, bool) or not isinstance(msg_id, (str, int, type(None)))):
        return None, "`id` must be a string, a number or null"
    if msg.get("jsonrpc") != "2.0":
        return msg_id, 'the message must carry "jsonrpc": "2.0"'
    if "method" not in msg:
        if "id" in msg and ("result" in msg or "error" in msg):
            return None  # a client's answer to a request of ours (para/runInTerminal)
        return msg_id, "a request needs a `method`"
    if not isinstance(msg["method"], str):
        return msg_id, "`method` must be a string"
    return None


async def _read_messages(ls: ParaServer, reader: asyncio.StreamReader) -> None:
    """The connection's message loop. pygls' own (`run_async`) drops a message it cannot
    convert without a word, so a client waits forever: here every request gets an answer
    (a result, a JSON-RPC error), and framing that cannot be resynchronized gets an error
    and a closed connection."""
    protocol = ls.protocol
    while not ls.stop_event.is_set():
        try:
            body = await _read_frame(reader)
        except _FramingError as e:
            log.info("closing a connection: %s", e)
            _send_error(ls, None, PARSE_ERROR, f"Parse error: {e}; closing the connection")
            return
        if body is None:
            return
        try:
            msg = json.loads(body, parse_constant=_not_json)
        except ValueError as e:  # bad JSON or bad UTF-8; the framing itself is intact
            _send_error(ls, None, PARSE_ERROR, f"Parse error: {e}")
            continue
        bad = _envelope_error(msg)
        if bad is not None:
            if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                log.info("ignoring a malformed notification: %s", bad[1])
            else:
                _send_error(ls, bad[0], INVALID_REQUEST, f"Invalid Request: {bad[1]}")
            continue
        is_request = "method" in msg and "id" in msg
        if "method" in msg and msg.get("params") == []:
            msg["params"] = None  # positional params with nothing in them: Neovim's empty table
        if ls.gate is not None and "method" in msg:
            # A session-bound connection (service/channel.py): the gate admits (and rewrites)
            # each message before pygls sees it, or it never runs.
            if not is_request:
                if msg["method"] not in BOUND_NOTIFICATIONS:
                    log.info("ignoring %s on a session-bound connection", msg["method"])
                    continue
            else:
                try:
                    msg["params"] = ls.gate.admit(msg["method"], msg.get("params"))
                except ParaError as e:
                    _send_error(ls, msg["id"], e.code.rpc, e.message, {"code": e.code.name, **e.data})
                    continue
        if is_request and protocol._shutdown and msg["method"] != types.EXIT:
            _send_error(ls, msg["id"], INVALID_REQUEST, "Invalid Request: this connection was shut down "
                                                        "(LSP shutdown); send exit or close it")
            continue
        try:
            message = protocol.structure_message(msg)
        except Exception as e:  # noqa: BLE001 the params do not fit the method's LSP type
            if is_request:
                cause = e.__cause__ or e
                why = "; ".join(transform_error(cause)) if isinstance(cause, BaseValidationError) else cause
                _send_error(ls, msg["id"], JsonRpcInvalidParams.CODE, f"Invalid Params: {msg['method']}: {why}")
            continue
        protocol.handle_message(message)


def _rpc_error(e: ParaError) -> JsonRpcServerError:
    # pygls leaves JsonRpcServerError.__init__ unannotated
    return JsonRpcServerError(e.message, e.code.rpc, {"code": e.code.name, **e.data})  # type: ignore[no-untyped-call]


async def call_service(service: Service, method: str, params: Any) -> Any:
    """The service's one call path (service/invoke.py), its errors as JSON-RPC errors."""
    try:
        return await invoke(service, method, params)
    except BadParams as e:
        raise JsonRpcInvalidParams(e.message) from None
    except ParaError as e:
        raise _rpc_error(e) from None


Handler = Callable[..., Awaitable[Any]]


def _make_handler(method: str) -> Handler:
    async def handler(ls: ParaServer, params: Any = None) -> Any:
        # LSP's work-done progress: a request carrying `workDoneToken` gets what the service
        # reports meanwhile (the output of session.setup) as `$/progress` notifications.
        token = params.pop("workDoneToken", None) if isinstance(params, dict) else None
        if ls.gate is not None:  # a session-bound connection: its answers are about its session only
            return ls.gate.answer(method, await _with_progress(ls, method, params, token))
        return await _with_progress(ls, method, params, token)
    handler.__name__ = "handle_" + method.replace("/", "_")
    return handler


async def _with_progress(ls: ParaServer, method: str, params: Any, token: Any) -> Any:
    if not isinstance(token, (str, int)) or isinstance(token, bool):
        return await call_service(ls.service, method, params)

    def report(text: str) -> None:
        try:
            ls.protocol.notify(types.PROGRESS, types.ProgressParams(
                token=token, value=types.WorkDoneProgressReport(message=text)))
        except Exception as e:  # noqa: BLE001 a client that went away still gets its request served
            log.info("dropping a progress notification: %s", e)

    ctx = PROGRESS.set(report)
    try:
        return await call_service(ls.service, method, params)
    finally:
        PROGRESS.reset(ctx)


def _make_command(method: str) -> Handler:
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
    return {"stopping": True, "setups_stopped": ls.hub.request_stop()}


HANDLERS: dict[str, Handler] = {m: _make_handler(m) for m in SERVICE_METHODS}
HANDLERS.update({"para/subscribe": _subscribe, "para/unsubscribe": _unsubscribe,
                 "para/shutdown": _shutdown_sidecar})
assert set(HANDLERS) == set(SERVICE_METHODS) | set(TRANSPORT_METHODS)
COMMANDS: dict[str, Handler] = {"para." + m.split("/", 1)[1]: _make_command(m)
                            for m in SERVICE_METHODS if m != "para/hello"}
