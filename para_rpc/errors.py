"""The one error type of para_rpc and its stable codes.

A `ParaError` raised anywhere in the service travels unchanged to every front
end: the JSON-RPC error (`code` = the numeric `rpc` value, `data.code` = the
name), the CLI exit status (`exit`), and later MCP tool errors. Codes are part
of the public contract (docs/protocol.md); never renumber one.
"""

from __future__ import annotations

import enum

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    from typing import Any


class Code(enum.Enum):
    # name = (json-rpc code, cli exit status, one-line meaning)
    internal = (-32000, 1, "unexpected failure inside para (a bug; see the sidecar log)")
    invalid_input = (-32001, 2, "a parameter is malformed or not allowed")
    not_a_repository = (-32002, 2, "the directory is not inside a usable git repository")
    not_found = (-32003, 3, "the named session, branch or file does not exist")
    already_exists = (-32004, 4, "a session, branch or path with that name already exists")
    wrong_state = (-32005, 4, "the session is not in a state that allows this operation")
    git_failed = (-32006, 5, "a git command failed")
    config_error = (-32007, 6, "the configuration is invalid")
    conflict = (-32008, 7, "the change conflicts with the target; resolution is needed")
    busy = (-32009, 8, "another process holds the lock (for example a second sidecar)")
    sidecar_unavailable = (-32010, 9, "the sidecar could not be reached or started")
    version_mismatch = (-32011, 9, "client and sidecar speak different protocol versions")
    nothing_to_do = (-32012, 10, "the operation has nothing to act on")
    dirty = (-32013, 11, "uncommitted changes are in the way")
    check_failed = (-32014, 12, "the configured integration check failed; the target did not move")
    untrusted = (-32015, 13, "commands from the repository's .para/config.json are not approved (`para trust`)")
    forbidden = (-32016, 14, ("an agent of a session asked for what only the user may do (approve commands, change "
                              "them), a session-bound socket was asked for more than its session, or a setup or "
                              "teardown hook asked to start sessions or to end its own"))
    setup_failed = (-32017, 15, "the `session.setup` command failed or timed out; the session was rolled back (see its log)")

    @property
    def rpc(self) -> int:
        return self.value[0]

    @property
    def exit(self) -> int:
        return self.value[1]

    @property
    def meaning(self) -> str:
        return self.value[2]


_BY_RPC = {c.rpc: c for c in Code}


class ParaError(Exception):
    """An expected failure with a stable code, a human message and optional data."""

    def __init__(self, code: Code, message: str, **data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_rpc(self) -> dict[str, Any]:
        """The JSON-RPC `error` object."""
        return {"code": self.code.rpc, "message": self.message,
                "data": {"code": self.code.name, **self.data}}

    @classmethod
    def from_rpc(cls, error: dict[str, Any]) -> ParaError:
        data = dict(error.get("data") or {})
        name = data.pop("code", None)
        rpc = error.get("code")
        by_rpc = _BY_RPC.get(rpc) if isinstance(rpc, int) else None
        code = Code[name] if name in Code.__members__ else by_rpc if by_rpc is not None else Code.internal
        if code is Code.internal and by_rpc is None:
            # A protocol-level error (invalid params, method not found): keep
            # its text and treat it as bad input rather than a para bug.
            code = Code.invalid_input
        data.pop("traceback", None)
        return cls(code, str(error.get("message", "unknown error")), **data)

    def __repr__(self) -> str:
        return f"ParaError({self.code.name}, {self.message!r})"
