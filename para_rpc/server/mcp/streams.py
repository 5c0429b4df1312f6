"""Stream plumbing: who is on an MCP connection (the bridge's preamble), and the socket's
byte stream as the text lines the SDK's stdio transport reads and writes."""

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("para.mcp")
MAX_LINE = 64 * 1024 * 1024   # one MCP message (a 1 MB task is fine; a runaway peer is not)


@dataclass
class Peer:
    """What the bridge told us about the MCP client on this connection."""

    cwd: str | None = None                 # default repository for tools without `repo`
    env: dict[str, str] = field(default_factory=dict)
    client: str = "unknown"


PEER: contextvars.ContextVar[Peer | None] = contextvars.ContextVar("para_mcp_peer", default=None)


class Lines:
    """The MCP byte stream from the socket as an async iterator of text lines."""

    def __init__(self, reader: asyncio.StreamReader, pushback: bytes | None,
                 on_end: Callable[[], None] = lambda: None) -> None:
        self.reader, self.pushback, self.on_end = reader, pushback, on_end

    def __aiter__(self) -> "Lines":
        return self

    async def __anext__(self) -> str:
        if self.pushback is not None:
            line, self.pushback = self.pushback, None
        else:
            try:
                line = await self.reader.readline()
            except (ValueError, asyncio.LimitOverrunError, ConnectionError):
                log.warning("dropping an MCP connection: message over %d bytes or connection error", MAX_LINE)
                self.on_end()
                raise StopAsyncIteration from None
        if not line:
            self.on_end()
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class Out:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
