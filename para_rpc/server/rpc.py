"""The JSON-RPC transport: framing, the message loop, and the `para/...` methods.

Each accepted connection is a `Conn`; one `Service` is shared. This module answers the
`para/...` requests itself, with the stdlib only: a CLI call never waits for pygls and
lsprotocol (a quarter of a second of imports) when it autostarts the sidecar. Everything
else on the wire (LSP's `initialize`, `shutdown`, `exit`, `workspace/executeCommand`, an
unknown method) goes to the connection's pygls server (server/lsp.py), loaded the first
time any connection needs it, off the event loop. Params stay plain dicts and are converted
with msgspec into the structs of `params.py`; results are sent as plain builtins.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import msgspec

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
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32602, -32603
REQUEST_CANCELLED = -32800
CANCEL_REQUEST, EXIT = "$/cancelRequest", "exit"
# What pygls sends (it is the same wire whichever half of this transport answers).
CONTENT_TYPE = b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n"


class RpcError(Exception):
    """An error answer: JSON-RPC code, message and data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


_encoder = msgspec.json.Encoder()


def _encode(msg: dict[str, Any]) -> bytes:
    """A message's JSON: msgspec's C encoder (a `list` of a hundred sessions is ~90 KB, which
    `json` takes ~1 ms to write). What msgspec refuses and `json` takes goes the `json` way:
    a lone surrogate (a file name that is not UTF-8, as Python decodes it) is sent escaped,
    `\\udcff`, as before."""
    try:
        return _encoder.encode(msg)
    except (UnicodeEncodeError, TypeError):
        return json.dumps(msg).encode()


def para_error(e: ParaError) -> RpcError:
    """A ParaError as its JSON-RPC error (its stable code name in `data`)."""
    return RpcError(e.code.rpc, e.message, {"code": e.code.name, **e.data})


async def call_service(service: Service, method: str, params: Any) -> Any:
    """The service's one call path (service/invoke.py), its errors as JSON-RPC errors."""
    try:
        return await invoke(service, method, params)
    except BadParams as e:
        raise RpcError(INVALID_PARAMS, e.message) from None
    except ParaError as e:
        raise para_error(e) from None


# ---- the pygls half, loaded once, when some connection first needs it ------------------------

_lsp_loading: asyncio.Future[Any] | None = None


def preload_lsp() -> asyncio.Future[Any]:
    """server/lsp.py (pygls, lsprotocol), imported in a worker thread: the event loop keeps
    serving the other connections meanwhile."""
    global _lsp_loading
    if _lsp_loading is None:
        log.info("loading the LSP transport (pygls)")
        _lsp_loading = asyncio.ensure_future(asyncio.to_thread(importlib.import_module, "para_rpc.server.lsp"))
        _lsp_loading.add_done_callback(lambda f: f.cancelled() or f.exception())
    return _lsp_loading


def load_lsp() -> Awaitable[Any]:
    return asyncio.shield(preload_lsp())  # a connection that goes away must not cancel the import


class Conn:
    """One client connection."""

    def __init__(self, service: Service, hub: Hub, writer: asyncio.StreamWriter, gate: Gate | None = None) -> None:
        self.service = service
        self.hub = hub
        self.writer = writer
        self.gate = gate  # a session-bound connection: every message passes it first
        self.closed = False
        self.subscribed = False
        self.editor = False
        self.connected_at = time.monotonic()
        self.lsp: Any = None  # its pygls server (server/lsp.py ParaServer), once it speaks LSP
        self.tasks: dict[Any, asyncio.Task[Any]] = {}  # requests in flight, by id
        self.asked: dict[str, asyncio.Future[Any]] = {}  # our requests to the client, by id
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.closed = True
        self.writer.close()

    def send(self, msg: dict[str, Any]) -> None:
        if self.writer.is_closing():
            raise ConnectionError("the connection is closed")
        body = _encode(msg)
        self.writer.write(b"Content-Length: %d\r\n%s\r\n" % (len(body), CONTENT_TYPE) + body)

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    async def request(self, method: str, params: Any) -> Any:
        """Ask the client something (an editor: `para/runInTerminal`); its answer or RpcError."""
        msg_id = f"para-{next(self._ids)}"
        answer = self.asked[msg_id] = asyncio.get_running_loop().create_future()
        try:
            self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
            return await answer
        finally:
            self.asked.pop(msg_id, None)

    def answer(self, msg_id: Any, result: Any = None, error: RpcError | None = None) -> None:
        msg: dict[str, Any] = {"id": msg_id, "jsonrpc": "2.0"}
        if error is not None:
            msg["error"] = error.to_dict()
        else:
            msg["result"] = result
        try:
            self.send(msg)
        except ConnectionError:
            log.info("dropping the answer to request %r: the connection is closed", msg_id)

    # -- the para/... methods

    def run(self, msg: dict[str, Any]) -> None:
        """Start a `para/...` request (or notification) as a task of its own, like pygls does:
        one connection may have several in flight."""
        handler = HANDLERS[msg["method"]]
        task = asyncio.ensure_future(handler(self, msg.get("params")))
        if "id" not in msg:
            task.add_done_callback(_log_failure)
            return
        msg_id = msg["id"]
        self.tasks[msg_id] = task

        def done(t: asyncio.Task[Any]) -> None:
            if self.tasks.get(msg_id) is t:
                del self.tasks[msg_id]
            if t.cancelled():
                self.answer(msg_id, error=RpcError(REQUEST_CANCELLED, f'Request with id "{msg_id}" is canceled'))
            elif isinstance(t.exception(), RpcError):
                self.answer(msg_id, error=t.exception())  # type: ignore[arg-type]  # (checked just above)
            elif (e := t.exception()) is not None:
                log.error("request %r failed", msg_id, exc_info=e)
                self.answer(msg_id, error=RpcError(INTERNAL_ERROR, f"{type(e).__name__}: {e}"))
            else:
                self.answer(msg_id, t.result())
        task.add_done_callback(done)

    def cancel(self, params: Any) -> bool:
        """`$/cancelRequest` for one of ours: True if it was (a read stops; a mutation is shielded)."""
        task = self.tasks.get(params.get("id")) if isinstance(params, dict) else None
        if task is None:
            return False
        task.cancel()
        return True

    def answered(self, msg: dict[str, Any]) -> bool:
        """The client's answer to one of our requests: True if it was one."""
        future = self.asked.get(msg["id"]) if isinstance(msg.get("id"), str) else None
        if future is None or future.done():
            return False
        if "error" in msg:
            err = msg["error"] if isinstance(msg["error"], dict) else {}
            future.set_exception(RpcError(err.get("code", INTERNAL_ERROR), str(err.get("message", "")),
                                          err.get("data")))
        else:
            future.set_result(msg.get("result"))
        return True


def _log_failure(t: asyncio.Task[Any]) -> None:
    if not t.cancelled() and t.exception() is not None and not isinstance(t.exception(), RpcError):
        log.error("a notification's handler failed", exc_info=t.exception())


class Hub:
    """The set of open connections, and broadcast to the subscribed ones."""

    def __init__(self) -> None:
        self.conns: set[Conn] = set()
        self.on_idle_change: Callable[[], None] = lambda: None
        self.request_stop: Callable[[], list[dict[str, Any]]] = list

    def editor_available(self) -> bool:
        return any(c.editor for c in self.conns)

    async def run_in_terminal(self, params: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Ask the most recently connected editor to run an agent in a terminal."""
        for c in sorted((c for c in self.conns if c.editor), key=lambda c: -c.connected_at):
            try:
                answer = await asyncio.wait_for(c.request("para/runInTerminal", params), timeout)
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
        for c in list(self.conns):
            if c.editor:
                try:
                    c.notify(self.EDITOR_NOTIFICATIONS[kind], payload)
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
        for c in list(self.conns):
            if c.subscribed:
                try:
                    c.notify(method, payload)
                except Exception as e:  # noqa: BLE001 a client that went away must not stop the others
                    log.info("dropping notification to a closed connection: %s", e)

    async def serve(self, service: Service, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, gate: Gate | None = None) -> None:
        conn = Conn(service, self, writer, gate)
        self.conns.add(conn)
        self.on_idle_change()
        try:
            await _read_messages(conn, reader)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.conns.discard(conn)
            writer.close()
            for future in conn.asked.values():
                if not future.done():
                    future.set_exception(ConnectionError("the connection closed"))
            self.on_idle_change()


class _FramingError(Exception):
    """The byte stream is not LSP framing: the connection cannot be resynchronized."""


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


async def _read_messages(conn: Conn, reader: asyncio.StreamReader) -> None:
    """The connection's message loop. pygls' own (`run_async`) drops a message it cannot
    convert without a word, so a client waits forever: here every request gets an answer
    (a result, a JSON-RPC error), and framing that cannot be resynchronized gets an error
    and a closed connection."""
    while not conn.closed:
        try:
            body = await _read_frame(reader)
        except _FramingError as e:
            log.info("closing a connection: %s", e)
            conn.answer(None, error=RpcError(PARSE_ERROR, f"Parse error: {e}; closing the connection"))
            return
        if body is None:
            return
        try:
            msg = json.loads(body, parse_constant=_not_json)
        except ValueError as e:  # bad JSON or bad UTF-8; the framing itself is intact
            conn.answer(None, error=RpcError(PARSE_ERROR, f"Parse error: {e}"))
            continue
        bad = _envelope_error(msg)
        if bad is not None:
            if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                log.info("ignoring a malformed notification: %s", bad[1])
            else:
                conn.answer(bad[0], error=RpcError(INVALID_REQUEST, f"Invalid Request: {bad[1]}"))
            continue
        if "method" not in msg:  # an answer to a request of ours, or (once loaded) of pygls'
            if not conn.answered(msg) and conn.lsp is not None:
                conn.lsp.take(msg)
            continue
        is_request = "id" in msg
        if msg.get("params") == []:
            msg["params"] = None  # positional params with nothing in them: Neovim's empty table
        if conn.gate is not None:
            # A session-bound connection (service/channel.py): the gate admits (and rewrites)
            # each message before it is routed, or it never runs.
            if not is_request:
                if msg["method"] not in BOUND_NOTIFICATIONS:
                    log.info("ignoring %s on a session-bound connection", msg["method"])
                    continue
            else:
                try:
                    msg["params"] = conn.gate.admit(msg["method"], msg.get("params"))
                except ParaError as e:
                    conn.answer(msg["id"], error=para_error(e))
                    continue
        shut_down = conn.lsp is not None and conn.lsp.shut_down()
        if shut_down and msg["method"] != EXIT:
            if is_request:
                conn.answer(msg["id"], error=RpcError(INVALID_REQUEST, "Invalid Request: this connection was shut "
                                                                       "down (LSP shutdown); send exit or close it"))
            continue
        if msg["method"] in HANDLERS:
            conn.run(msg)
        elif msg["method"] == CANCEL_REQUEST and conn.cancel(msg.get("params")):
            pass
        else:
            if conn.lsp is None:
                lsp = await load_lsp()
                if conn.writer.is_closing():
                    return
                conn.lsp = lsp.attach(conn)
            conn.lsp.take(msg)


# ---- the para/... handlers --------------------------------------------------------------------

Handler = Callable[[Conn, Any], Awaitable[Any]]


def _make_handler(method: str) -> Handler:
    async def handler(conn: Conn, params: Any = None) -> Any:
        as_text = isinstance(params, dict) and params.pop("resultAsText", None) is True
        result = await _with_progress(conn, method, params)
        # A session-bound connection: its answers are about its session only.
        result = conn.gate.answer(method, result) if conn.gate is not None else result
        return _as_text(result) if as_text else result
    handler.__name__ = "handle_" + method.replace("/", "_")
    return handler


def _as_text(result: Any) -> str:
    """The result as `para ... --json` prints it, `json.dumps(result, indent=2)`, written by
    msgspec's C formatter: the CLI's pure-Python indenting took ~1 ms of every `list` at a
    hundred sessions. Where msgspec would write other text, `json` writes it: text beyond
    ASCII and DEL (json escapes them: `\\u00e9`, `\\u007f`; control characters both escape
    alike) and a lone surrogate (which msgspec refuses). What is left to differ are floats no
    result holds today: in exponent form msgspec writes its shortest (`1e16`, `1e-7`, `0.00001`
    for json's `1e+16`, `1e-07`, `1e-05`: the same numbers), and NaN as `null`."""
    try:
        text = msgspec.json.format(_encoder.encode(result), indent=2)
    except (UnicodeEncodeError, TypeError, msgspec.DecodeError):
        return json.dumps(result, indent=2)
    return text.decode() if text.isascii() and b"\x7f" not in text else json.dumps(result, indent=2)


async def _with_progress(conn: Conn, method: str, params: Any) -> Any:
    # LSP's work-done progress: a request carrying `workDoneToken` gets what the service
    # reports meanwhile (the output of session.setup) as `$/progress` notifications.
    token = params.pop("workDoneToken", None) if isinstance(params, dict) else None
    if not isinstance(token, (str, int)) or isinstance(token, bool):
        return await call_service(conn.service, method, params)

    def report(text: str) -> None:
        try:
            conn.notify("$/progress", {"token": token, "value": {"kind": "report", "message": text}})
        except Exception as e:  # noqa: BLE001 a client that went away still gets its request served
            log.info("dropping a progress notification: %s", e)

    ctx = PROGRESS.set(report)
    try:
        return await call_service(conn.service, method, params)
    finally:
        PROGRESS.reset(ctx)


def _transport_params(method: str, params: Any) -> Any:
    """Decode the params of a connection-level method (unknown keys and wrong types refused)."""
    try:
        return msgspec.convert(params if params is not None else {}, TRANSPORT_METHODS[method])
    except msgspec.ValidationError as e:
        raise RpcError(INVALID_PARAMS, f"{method}: {e}") from None


async def _subscribe(conn: Conn, params: Any = None) -> dict[str, Any]:
    p = _transport_params("para/subscribe", params)
    conn.subscribed = p.events
    conn.editor = p.editor
    return {"subscribed": conn.subscribed, "editor": conn.editor}


async def _unsubscribe(conn: Conn, params: Any = None) -> dict[str, Any]:
    _transport_params("para/unsubscribe", params)
    conn.subscribed = conn.editor = False
    return {"subscribed": False}


async def _shutdown_sidecar(conn: Conn, params: Any = None) -> dict[str, Any]:
    _transport_params("para/shutdown", params)
    return {"stopping": True, "setups_stopped": conn.hub.request_stop()}


HANDLERS: dict[str, Handler] = {m: _make_handler(m) for m in SERVICE_METHODS}
HANDLERS.update({"para/subscribe": _subscribe, "para/unsubscribe": _unsubscribe,
                 "para/shutdown": _shutdown_sidecar})
assert set(HANDLERS) == set(SERVICE_METHODS) | set(TRANSPORT_METHODS)
