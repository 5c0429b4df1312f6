"""The one call path from a transport into the service.

Every front end (JSON-RPC connections, `workspace/executeCommand`, MCP tools) calls
`invoke(service, method, params)`: the params are converted into the method's Struct
(unknown keys and wrong types refused: `BadParams`), a mutating operation runs shielded,
so a client that disconnects or cancels never abandons it half way, a mutating method
counts as work in flight while it runs (the sidecar waits for those before it exits), an
error about one session names it, and anything unexpected becomes the `internal` error with
its traceback in the log. Transports keep only the mapping of `ParaError` to their wire.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import msgspec

from para_rpc.errors import Code, ParaError
from para_rpc.methods import METHODS

log = logging.getLogger("para.service")

# Set (by the transport) when the connection a request came on closes: a start whose client
# went away (Ctrl-C of `para start`) stops its setup and rolls back, rather than going on alone.
CLIENT_GONE: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar("para_client_gone",
                                                                                   default=None)
ABANDONABLE = ("start", "dispatch")


class BadParams(ParaError):
    """The params do not fit the method's Struct (JSON-RPC answers -32602)."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.invalid_input, message)


def convert(method: str, params: Any) -> Any:
    """The params of `method` as its Struct; BadParams naming what is wrong."""
    m = METHODS[method]
    where = _not_text(params, "params")
    if where is not None:
        # JSON's `\udcff` escape decodes to a lone surrogate: what Python makes of bytes that are
        # not UTF-8 (an argument, a directory name). Nothing can store or compare it as text.
        raise BadParams(f"{method}: {where} is not valid UTF-8 text (it holds bytes that are not UTF-8, "
                        "or a lone surrogate escape)")
    try:
        return msgspec.convert(params if params is not None else {}, m.params)
    except msgspec.ValidationError as e:
        raise BadParams(f"{method}: {e}") from None


async def invoke(service: Any, method: str, params: Any) -> Any:
    """Run `method` with raw (decoded JSON) params; the result as plain data (a method that
    returns its result Struct is encoded here), or a ParaError."""
    p = convert(method, params)
    m = METHODS[method]
    fn = getattr(service, m.attr)
    if m.mutates:
        service.refuse_hook_caller(m.attr, p)  # a setup/teardown calling back into para (hooking.py)

    async def run() -> Any:
        if m.mutates:
            service.busy += 1
        try:
            result = await fn(p)
            return msgspec.to_builtins(result) if isinstance(result, msgspec.Struct) else result
        finally:
            if m.mutates:
                service.busy -= 1

    try:
        # Only a mutation is shielded: a read (a long `wait`) ends with the client that asked.
        if not m.mutates:
            return await run()
        inner = asyncio.ensure_future(run())
        gone = CLIENT_GONE.get() if m.attr in ABANDONABLE else None
        if gone is not None:
            watch = asyncio.ensure_future(gone.wait())
            inner.add_done_callback(lambda _: watch.cancel())
            watch.add_done_callback(lambda w: None if w.cancelled() else service.abandoned(inner))
        return await asyncio.shield(inner)
    except ParaError as e:
        if hasattr(p, "session") and "session" not in e.data:
            # An error about one session names it, also when the client gave only its cwd.
            name = p.session or service.session_name_at(p.cwd)
            if name:
                e.data["session"] = name
        raise
    except Exception as e:
        log.exception("%s failed", method)
        raise ParaError(Code.internal, f"{method} failed unexpectedly: {e.__class__.__name__}: {e}; "
                        "see the sidecar log") from None


def _not_text(value: Any, where: str) -> str | None:
    """Where in `value` (decoded JSON) a string holds a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
    elif isinstance(value, dict):
        for k, v in value.items():
            found = _not_text(k, f"{where} key") or _not_text(v, f"{where}.{k}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _not_text(v, f"{where}[{i}]")
            if found is not None:
                return found
    return None
