"""What the service needs from the outside, handed in through its constructor.

The service publishes domain events (a typed `DomainEvent`; it never names a wire method:
each transport decides what an event becomes, `para/event` and `para/sessionsChanged` for
JSON-RPC subscribers, resource updates for MCP clients), asks whether an editor that can
run agents is connected, and asks one to run an agent in a terminal. A sidecar wires these
to its transports; a test or a library user passes its own, or nothing (then events go
nowhere and there is no editor).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from para_rpc.errors import Code, ParaError
from para_rpc.model import Binding, DomainEvent


async def _no_editor(request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    return None


async def _no_channels(binding: Binding) -> None:
    raise ParaError(Code.config_error, "this service has no transport for session-bound sockets, so it "
                    "cannot run a sandboxed agent")


@dataclass
class Ports:
    # Every event, once it is stored; called on the event loop, must not block.
    publish: Callable[[DomainEvent], None] = field(default=lambda event: None)
    # Whether an editor that runs agents in its terminals is connected.
    editor_available: Callable[[], bool] = field(default=lambda: False)
    # Ask an editor to run an agent (`{session, worktree, title, argv, env}`) within `timeout`
    # seconds; its answer (`{ok, pid?}`), or None when no editor did.
    run_in_editor: Callable[[dict[str, Any], float], Awaitable[dict[str, Any] | None]] = _no_editor
    # Tell the connected editors something (`open`: open a session's worktree; `stop_terminal`:
    # close the terminal of an agent that was stopped); returns how many editors were told.
    notify_editors: Callable[[str, dict[str, Any]], int] = field(default=lambda kind, payload: 0)
    # Listen on a session-bound socket (service/channel.py), serving it through the Gate of
    # that binding; stop listening on one (connections already open may finish).
    bind_channel: Callable[[Binding], Awaitable[None]] = _no_channels
    unbind_channel: Callable[[str], None] = field(default=lambda socket: None)


# Where the caller of the request being served wants progress lines (MCP progress
# notifications, JSON-RPC `$/progress`): set by a transport around one call, read by the
# service for what that call waits on (the output of `session.setup`). None: nobody asked.
PROGRESS: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("para_progress",
                                                                                      default=None)
