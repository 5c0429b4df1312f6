"""The one error type of para_rpc and its stable codes.

A `ParaError` raised anywhere in the service travels unchanged to every front
end: the JSON-RPC error (`code` = the numeric `rpc` value, `data.code` = the
name), the CLI exit status (`exit`), and later MCP tool errors. Codes are part
of the public contract (docs/protocol.md); never renumber one.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    from enum import Enum as _Table
    from typing import Any
else:
    class _Codes(type):
        """What para uses of an Enum class, without `enum` (~3.5 ms of every `para` process's
        start): members in order (iteration, len, `Code[name]`, `Code(value)`, `__members__`).
        mypy checks Code as the Enum it reads above; tests/test_error_codes.py holds the two equal."""

        def __init__(cls, name, bases, namespace):
            super().__init__(name, bases, namespace)
            members = {}
            for key, value in namespace.items():
                if isinstance(value, tuple) and not key.startswith("_"):
                    member = object.__new__(cls)
                    object.__setattr__(member, "_name", key)
                    object.__setattr__(member, "_value", value)
                    type.__setattr__(cls, key, member)
                    members[key] = member
            type.__setattr__(cls, "__members__", type(type.__dict__)(members))  # (a read-only view, as Enum's)

        def __setattr__(cls, key, value):
            if key in cls.__members__:
                raise AttributeError(f"cannot reassign member {key!r}")
            super().__setattr__(key, value)

        def __call__(cls, value):
            if isinstance(value, cls):
                return value
            for member in cls.__members__.values():
                if member._value == value:
                    return member
            raise ValueError(f"{value!r} is not a valid {cls.__qualname__}")

        def __getitem__(cls, key):
            return cls.__members__[key]

        def __iter__(cls):
            return iter(cls.__members__.values())

        def __len__(cls):
            return len(cls.__members__)

    class _Table(metaclass=_Codes):
        __slots__ = ("_name", "_value")

        name = property(lambda self: self._name)
        value = property(lambda self: self._value)

        def __setattr__(self, key, value):
            raise AttributeError(f"cannot set {key!r} of {self}")

        def __repr__(self):
            return f"<{type(self).__name__}.{self._name}: {self._value!r}>"

        def __str__(self):
            return f"{type(self).__name__}.{self._name}"

        def __format__(self, spec):
            return str(self).__format__(spec)

        def __hash__(self):
            return hash(self._name)

        def __reduce_ex__(self, protocol):
            return type(self), (self._value,)

        def __copy__(self):
            return self

        def __deepcopy__(self, memo):
            return self


class Code(_Table):
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
