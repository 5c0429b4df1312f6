"""The data para keeps and returns, as msgspec Structs.

`Session` is what the store persists (one JSON document per row); what methods return on
the wire (snake_case keys) is declared in results.py.
"""

from __future__ import annotations

import enum
import time
from typing import Any

import msgspec

from para_rpc.errors import Code, ParaError


class Status(str, enum.Enum):
    active = "active"            # worktree exists, agent or human at work
    review = "review"            # finished: committed, worktree removed, branch kept
    integrating = "integrating"  # an integration of this session is in flight
    conflicted = "conflicted"    # integration paused on conflicts in the session's worktree
    integrated = "integrated"    # landed on its target; kept as history
    cancelled = "cancelled"      # branch archived under para/archived/..., worktree removed


# A name may be reused once its previous session reached one of these.
HISTORY = frozenset({Status.integrated})


def now() -> float:
    return round(time.time(), 3)


class Op(msgspec.Struct, kw_only=True):
    """A multi-step operation in flight: the journal entry repaired after a crash."""

    kind: str
    started_at: float = msgspec.field(default_factory=now)
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class Sandbox(msgspec.Struct, kw_only=True):
    """How an agent is confined (para_rpc/sandbox.py): bubblewrap, and whether it keeps the network."""

    kind: str = "bwrap"
    network: bool = True


class Binding(msgspec.Struct, kw_only=True):
    """A session-bound channel: the socket an agent's `para` reaches the sidecar on, which
    serves only that session's methods to a client that says the session's token."""

    socket: str                     # <sidecar socket dir>/bound/<random>/sock
    root: str                       # the repository's main checkout (every request's cwd)
    session: str
    token_sha256: str               # the token itself is only in the agent's environment


class AgentRun(msgspec.Struct, kw_only=True):
    """An agent process working in a session."""

    profile: str
    mode: str                       # headless | tmux | editor
    argv: list[str]
    started_at: float = msgspec.field(default_factory=now)
    pid: int | None = None          # the agent_runner process
    exit_file: str | None = None
    log: str | None = None
    window: str | None = None       # tmux window id
    skip_permissions: bool = False
    exit_code: int | None = None
    ended_at: float | None = None
    lost: bool = False              # the runner vanished without recording an exit
    stops: list[dict[str, Any]] = msgspec.field(default_factory=list)  # what para signalled, when, why
    settled: bool = False           # after the exit: leftovers stopped, outside changes compared
    stopped_at: float | None = None  # `para stop`: the user stopped it (the session stays)
    sandbox: Sandbox | None = None  # confined by bubblewrap (None: runs with all the user's rights)
    channel: str | None = None      # its session-bound socket (PARA_SOCKET), while the session lives
    executor: str = "local"         # where it runs (para_rpc/executors); runs recorded before: local
    # On another machine: where (host, the worker's repo id, worktree, socket...), as its executor
    # recorded it, and the last time its commits were brought home (harvest).
    placement: dict[str, Any] = msgspec.field(default_factory=dict)
    harvested_commit: str | None = None
    harvested_at: float | None = None


class Message(msgspec.Struct, kw_only=True):
    """A follow-up for a session's agent (`para send`): read by the running agent through
    `para messages` / the answer to its `para status`, else given to it by `para restart`."""

    id: int
    text: str
    at: float = msgspec.field(default_factory=now)
    read_at: float | None = None
    read_by: str | None = None      # messages | status | restart


class QueuedLaunch(msgspec.Struct, kw_only=True):
    """An agent launch waiting for a slot under `agent.max_running`: what `_launch` gets."""

    profile: str
    mode: str
    argv: list[str]
    skip_permissions: bool = False
    queued_at: float = msgspec.field(default_factory=now)
    reason: str = "dispatch"        # dispatch | restart
    sandbox: Sandbox | None = None  # the launch is confined like its dispatch asked
    executor: str = "local"         # where it will run


class Report(msgspec.Struct, kw_only=True):
    """What the agent last said about itself with `para status`."""

    task: str
    tests: str = "unknown"
    todos_done: int | None = None
    todos_total: int | None = None
    blocked: str | None = None
    updated_at: float = msgspec.field(default_factory=now)


class IntegrationRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A session's integration: in flight, paused on conflicts, or done. Stored as the plain
    `integration` object; this is its declaration, and what sessions are sent with. The fields
    are in the order the service writes them, so the object sent keeps the stored one's order."""

    target: str
    strategy: str                   # squash | merge | rebase | ff
    message: str | None = None
    pre: str | None = None          # the session branch before the integration (abort restores it)
    resume_status: str | None = None  # what the session goes back to if the integration fails
    stamp: str | None = None        # names the backup refs of this integration
    old: str | None = None          # the target before landing
    kind: str | None = None         # paused: merge | rebase
    files: list[str] | None = None  # paused: the conflicted files
    hunks: dict[str, Any] | None = None
    check: dict[str, Any] | None = None  # integrate.check: {ok, exit, output}
    backups: list[dict[str, Any]] | None = None
    leftover: str | None = None     # ref keeping changes written after the integration started
    late: str | None = None         # ref keeping commits made on the branch after its tip was kept
    commit: str | None = None       # the target after landing
    landed_at: float | None = None
    noop: bool | None = None        # landing changed nothing
    config_changed: bool | None = None  # the landing changed .para/config.json


class Session(msgspec.Struct, kw_only=True):
    id: int | None = None            # store row id (set by the store)
    name: str
    branch: str
    worktree: str
    base_branch: str
    base_commit: str
    status: Status = Status.active
    created_at: float = msgspec.field(default_factory=now)
    updated_at: float = msgspec.field(default_factory=now)
    task: str | None = None
    head_commit: str | None = None   # branch tip recorded at finish/cancel
    archived_branch: str | None = None
    op: Op | None = None
    integration: dict[str, Any] | None = None  # the integration in progress, paused, or done
    agent: AgentRun | None = None
    report: Report | None = None
    plan: int | None = None          # id of the plan this session belongs to
    notes: list[str] = msgspec.field(default_factory=list)  # out-of-band changes adopted
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    # Files that changed outside an agent's worktree while it ran (on the agent's session and on
    # the session whose worktree changed): {agent, location, session, path, status, was}.
    outside_changes: list[dict[str, Any]] = msgspec.field(default_factory=list)
    messages: list[Message] = msgspec.field(default_factory=list)
    queued: QueuedLaunch | None = None  # its agent waits for a slot (agent.max_running)
    ports: list[int] = msgspec.field(default_factory=list)  # session.ports: reserved while the worktree lives
    # The worktree's private git dir as git made it (`<common>/worktrees/<id>`): what a sandbox
    # may write, never read back from the worktree's `.git` file, which its agent controls.
    git_dir: str | None = None


def queue_position(sessions: list[Session], s: Session) -> int | None:
    """1-based place of `s` among the queued launches of `sessions` (oldest first)."""
    if s.queued is None:
        return None
    ahead = [x for x in sessions if x.queued is not None and x.status is Status.active
             and (x.queued.queued_at, x.id or 0) < (s.queued.queued_at, s.id or 0)]
    return len(ahead) + 1


class PlanTask(msgspec.Struct, kw_only=True):
    file: str
    name: str
    # The text read when the plan was made: what its agent gets, even if the file changes
    # before its step starts (None only in plans made before texts were stored).
    text: str | None = None
    session_id: int | None = None
    state: str = "waiting"          # waiting | running | integrated | failed


class PlanStep(msgspec.Struct, kw_only=True):
    number: int
    tasks: list[PlanTask]


class Plan(msgspec.Struct, kw_only=True):
    """Numbered task files: tasks sharing a number run in parallel; step n starts once
    every task of the steps before it has been integrated."""

    id: int | None = None
    source: str
    steps: list[PlanStep]
    agent: str
    profile: dict[str, Any] | None = None  # the resolved profile, so later steps need no caller env
    workflow: str = "integrate"
    mode: str
    skip_permissions: bool = False
    base: str | None = None
    sandbox: Sandbox | None = None  # every step's agents are confined like this
    executor: str = "local"         # and run there
    state: str = "running"          # running | done | failed
    current: int = 0                # index into steps
    reason: str | None = None
    created_at: float = msgspec.field(default_factory=now)
    updated_at: float = msgspec.field(default_factory=now)


class DomainEvent(msgspec.Struct, kw_only=True):
    """Something that happened to a repository's sessions, as the service publishes it (once
    stored, with its id); each transport decides what it becomes on its wire."""

    repo: str                       # the repository's main checkout
    id: int
    ts: float
    session: str | None
    kind: str                       # see docs/protocol.md, "Event kinds"
    data: dict[str, Any] = msgspec.field(default_factory=dict)


def integration_record(rec: dict[str, Any] | None) -> IntegrationRecord | None:
    """A stored integration record as its declaration. A key this version does not declare
    (written by an older one) is left out rather than failing every read of the session."""
    if rec is None:
        return None
    return msgspec.convert({k: v for k, v in rec.items() if k in IntegrationRecord.__struct_fields__},
                           IntegrationRecord)


def journaled(s: Session) -> Op:
    """The operation a `_do_*` step or a repair continues: its caller journaled it first."""
    if s.op is None:
        raise ParaError(Code.internal, f"session {s.name} has no journaled operation to continue", session=s.name)
    return s.op


def recorded(s: Session) -> dict[str, Any]:
    """The integration record a step continues: its caller (or the paused integration) wrote it."""
    if s.integration is None:
        raise ParaError(Code.internal, f"session {s.name} has no integration record to continue", session=s.name)
    return s.integration


def pending(s: Session) -> Op | None:
    """`s.op` as it is now (a plain read the type checker does not narrow: the steps that
    ran in between may have cleared it)."""
    return s.op


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
