"""The LSP half of the JSON-RPC transport: a pygls server for a connection that speaks LSP.

server/rpc.py answers the `para/...` methods itself and hands a connection's other messages
here (`attach`, the first time it sends one): LSP's `initialize`, `shutdown` and `exit`, and
`workspace/executeCommand`, whose commands `para.<verb>` are the same operations. pygls'
own starters serve a single client and exit the process when it says `exit`; here each such
connection gets its own `ParaServer`, whose protocol closes only that connection on `exit`.
Params stay plain dicts (pygls would turn them into namedtuples). Imported only when a
client first needs it: pygls and lsprotocol cost a quarter of a second of start-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

import attrs
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
from para_rpc.methods import SERVICE_METHODS
from para_rpc.server.rpc import RpcError, call_service

if TYPE_CHECKING:
    from para_rpc.server.rpc import Conn

log = logging.getLogger("para.lsp")


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
    def __init__(self, conn: Conn) -> None:
        super().__init__("para", __version__, protocol_cls=ParaProtocol,
                         converter_factory=lambda: CONVERTER)
        self.conn = conn
        self.service = conn.service
        self.stop_event = threading.Event()
        self.protocol.set_writer(conn.writer)
        for command, fn in COMMANDS.items():
            self.command(command)(fn)

    def close(self) -> None:
        self.stop_event.set()
        self.conn.close()

    def shut_down(self) -> bool:
        """Whether the client sent LSP `shutdown` (it may only say `exit` now)."""
        return bool(self.protocol._shutdown)

    def take(self, msg: dict[str, Any]) -> None:
        """A decoded message of the connection that is not para's own: pygls handles it."""
        try:
            message = self.protocol.structure_message(msg)
        except Exception as e:  # noqa: BLE001 the params do not fit the method's LSP type
            if "method" in msg and "id" in msg:
                cause = e.__cause__ or e
                why = "; ".join(transform_error(cause)) if isinstance(cause, BaseValidationError) else cause
                self.conn.answer(msg["id"], error=RpcError(JsonRpcInvalidParams.CODE,
                                                           f"Invalid Params: {msg['method']}: {why}"))
            return
        self.protocol.handle_message(message)

    def report_server_error(self, error: Exception, source: Any) -> None:
        # The default shows a message in the client's window; a CLI has none. pygls also
        # reports every error it answered a request with: those are the client's business
        # (bad input, unknown session; unexpected ones were logged by call_service).
        if isinstance(error, (JsonRpcServerError, JsonRpcInvalidParams, JsonRpcMethodNotFound)):
            log.debug("request answered with an error: %s", error)
        else:
            log.error("connection error: %s", error)


def attach(conn: Conn) -> ParaServer:
    """The pygls server of a connection that has started to speak LSP."""
    return ParaServer(conn)


Handler = Callable[..., Awaitable[Any]]


def _make_command(method: str) -> Handler:
    async def command(ls: ParaServer, *args: Any) -> Any:
        try:
            return await call_service(ls.service, method, args[0] if args else {})
        except RpcError as e:
            if e.code == JsonRpcInvalidParams.CODE:
                raise JsonRpcInvalidParams(e.message) from None
            # pygls leaves JsonRpcServerError.__init__ unannotated
            raise JsonRpcServerError(e.message, e.code, e.data) from None  # type: ignore[no-untyped-call]
    command.__name__ = "command_" + method.replace("/", "_")
    return command


COMMANDS: dict[str, Handler] = {"para." + m.split("/", 1)[1]: _make_command(m)
                                for m in SERVICE_METHODS if m != "para/hello"}
