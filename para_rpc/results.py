"""What every `para/...` method returns, declared once as msgspec Structs.

The service still builds plain data (the wire keeps its snake_case keys and every key it
has); these declarations say exactly what that data is, strictly: `methods.METHODS` names
each method's result type(s), tests/test_results.py decodes the real answers of a whole
lifecycle into them with unknown keys refused, the MCP tools' output schemas are their JSON
schemas, and generated client bindings start from them. A field added to a result is added
here in the same commit.
"""

from __future__ import annotations

from typing import Any

import msgspec

from para_rpc.model import (
    AgentRun,
    IntegrationRecord,
    Message,
    Plan,
    QueuedLaunch,
    Report,
    Status,
)


class Result(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Commit(Result, kw_only=True):
    sha: str
    subject: str
    author: str | None = None   # (a dry run's forecast lists sha and subject only)
    time: int | None = None     # committer time, seconds since the epoch


class SessionDetail(Result, kw_only=True):
    """One session (start, show, finish, cancel, recover, resume, abort, a single dispatch):
    its record, the facts read from git, and what the operation adds."""

    name: str
    status: Status
    state: str              # status refined by git facts: active|dirty|missing|off-branch|<op>-pending|...
    branch: str
    worktree: str
    base_branch: str
    base_commit: str
    created_at: float
    updated_at: float
    current: bool
    dirty: bool
    worktree_exists: bool
    branch_exists: bool
    head: str | None
    ahead: int | None
    task: str | None
    archived_branch: str | None
    pending_op: str | None
    integration: IntegrationRecord | None
    agent: AgentRun | None
    report: Report | None
    plan: int | None
    notes: list[str]
    outside_changes: list[dict[str, Any]]
    head_branch: str | None
    detached: bool
    ports: list[int]                           # session.ports reserved for it (PARA_PORT is the first)
    queued: QueuedLaunch | None                # its agent waits for a slot (agent.max_running)
    queue_position: int | None                 # 1 = starts at the next free slot
    messages: list[Message]                    # follow-ups sent with `para send` (read or not)
    commits: list[Commit] | None = None       # show, and right after start
    diffstat: str | None = None
    prompt_file: str | None = None             # dispatch
    recreated: bool | None = None              # resume
    restored: str | None = None                # abort: the pre-integration commit
    saved: Any = None                          # abort, cancel: what was saved and where
    backups: list[dict[str, Any]] | None = None  # finish, cancel
    # cancel, finish, integrate, continue, abort, recover: what para saved or left, in words
    warnings: list[str] | None = None
    backup_refs: list[BackupRef] | None = None   # recover: every backup kept for this name, newest first
    last_event: Event | None = None              # list with verbose: the session's newest event


class BackupRef(Result, kw_only=True):
    ref: str
    commit: str
    made_at: float | None   # from the stamp in the ref's name; None for a ref without one


class ListResult(Result, kw_only=True):
    repo: str
    current: str | None
    sessions: list[SessionDetail]


class IntegrateResult(SessionDetail, kw_only=True):
    """integrate and continue: the session after landing."""
    note: str | None = None   # MCP only: a landing that changed .para/config.json says what that means


class IntegrateDryRun(Result, kw_only=True):
    dry_run: bool
    session: str
    target: str
    strategy: str
    target_commit: str | None
    includes_uncommitted: bool
    clean: bool
    conflicts: list[str]
    hunks: dict[str, Any]
    commits: list[Commit] | None = None
    noop: bool | None = None
    diffstat: str | None = None
    error: str | None = None
    note: str | None = None


class ConflictForecast(Result, kw_only=True):
    session: str
    target: str
    commit: str | None
    includes_uncommitted: bool
    clean: bool
    files: list[str]
    hunks: dict[str, Any]
    unrelated: bool


class ConflictPair(Result, kw_only=True):
    a: str
    b: str
    files: list[str]
    hunks: dict[str, Any]


class UnrelatedPair(Result, kw_only=True):
    a: str
    b: str


class ConflictsResult(Result, kw_only=True):
    sessions: list[ConflictForecast]
    pairs: list[ConflictPair]
    unrelated: list[UnrelatedPair]
    clean: bool


class PlanResult(Result, kw_only=True):
    """A plan dispatched: its steps, the first one started."""
    plan: Plan


class FailedTask(Result, kw_only=True):
    task: str     # the task's name, file, or #<position>
    code: str     # the error code's name
    error: str


class DispatchBatch(Result, kw_only=True):
    """Several tasks dispatched in one call (`tasks`): each started or failed on its own."""
    sessions: list[SessionDetail]
    plans: list[Plan]          # tasks whose file is a directory of task files, each run as a plan
    failed: list[FailedTask]


class ReportResult(Result, kw_only=True):
    session: str
    report: Report | None
    messages: list[Message] | None = None   # follow-ups from `para send` not read before: read now


class StopResult(Result, kw_only=True):
    """`para/stop`: whether an agent was stopped (the session stays), and how."""
    session: str
    stopped: bool
    message: str
    dequeued: bool = False            # it was waiting for a slot: taken out of the queue
    signals: list[str] | None = None
    pids: list[int] | None = None
    left_running: list[int] | None = None


class SendResult(Result, kw_only=True):
    """`para/send`: the follow-up is stored; how the agent will see it."""
    session: str
    id: int
    delivery: str       # running (the agent reads it) | kept (`para restart` gives it)
    unread: int


class MessagesResult(Result, kw_only=True):
    """`para/messages`: the follow-ups not read before (now read), or every one with `all`."""
    session: str
    messages: list[Message]


class OpenResult(Result, kw_only=True):
    """`para/open`: `editor` when a connected editor was asked to open the worktree, else
    `argv`: the front end runs that command (a local editor)."""
    session: str
    worktree: str
    via: str                     # editor | argv
    editors: int = 0             # connected editors asked
    argv: list[str] | None = None


class AgentEvidence(Result, kw_only=True):
    profile: str
    mode: str
    pid: int | None
    state: str     # running | exited | failed | lost | unknown
    exit_code: int | None
    started_at: float
    ended_at: float | None
    log: str | None
    window: str | None
    stops: list[dict[str, Any]]
    executor: str = "local"              # where it runs (an SSH executor's name: on that host)
    harvested_commit: str | None = None  # on another host: the branch tip last brought home
    harvested_at: float | None = None    # and when
    host: str | None = None              # on another host: which one (the executor's `host`), for display


class Evidence(Result, kw_only=True):
    """What a session's agent says (its report) next to what the sidecar sees."""
    name: str
    status: Status
    task: str | None
    report: Report | None
    agent: AgentEvidence | None
    ahead: int | None
    diffstat: str | None
    last_activity: float
    stale: bool
    plan: int | None
    integration: IntegrationRecord | None
    queue_position: int | None = None   # its agent waits for a slot (agent.max_running)
    unread_messages: int | None = None  # follow-ups its agent has not read yet


class StatusResult(Result, kw_only=True):
    repo: str
    sessions: list[Evidence]
    plans: list[Plan]


class Event(Result, kw_only=True):
    id: int
    ts: float
    session: str | None
    kind: str
    data: dict[str, Any]


class WaitedSession(Result, kw_only=True):
    status: Status
    agent_exit_code: int | None
    integration: IntegrationRecord | None


class WaitResult(Result, kw_only=True):
    changed: list[str]
    timed_out: bool
    sessions: dict[str, WaitedSession]
    events: list[Event]
    last_event: int   # give it back as `after_event` on the next wait


class DiffResult(Result, kw_only=True):
    session: str
    base: str
    commit: str
    includes_uncommitted: bool
    stat: str
    truncated: bool | None = None   # absent with stat_only
    patch: str | None = None


class PlansResult(Result, kw_only=True):
    plans: list[Plan]


class CleanResult(Result, kw_only=True):
    dry_run: bool
    actions: list[dict[str, Any]]
    kept: list[dict[str, Any]]


class AdoptedSession(Result, kw_only=True):
    session: str
    status: str                  # para's status: active, review or cancelled
    para_status: str             # what Para's state file said: Active, Finished or Cancelled
    branch: str
    archived_branch: str | None
    worktree: str | None         # when it is active
    file: str                    # the Para state file it came from (left in place)


class LeftBehind(Result, kw_only=True):
    file: str
    session: str
    why: str


class AdoptResult(Result, kw_only=True):
    state_dir: str
    adopted: list[AdoptedSession]
    already: list[str]           # names para already has a session (or history) of: not read again
    left: list[LeftBehind]


class ConfigEntry(Result, kw_only=True):
    value: Any
    source: str
    # a value set by the project file that decides what para runs (config.GATED_KEYS): whether the
    # user approved the file's content (`para trust`), and that content's SHA-256
    trusted: bool | None = None
    sha256: str | None = None
    refused: dict[str, str] | None = None   # `agents`: the project's profiles withheld, with why


class ConfigShow(Result, kw_only=True):
    paths: dict[str, str]
    values: dict[str, ConfigEntry]
    env: dict[str, str]
    descriptions: dict[str, str]


class ConfigValue(ConfigEntry, kw_only=True):
    key: str


class ConfigSet(Result, kw_only=True):
    key: str
    value: Any
    scope: str
    path: str


class ConfigReset(Result, kw_only=True):
    key: str
    removed: bool    # false: the file did not set it (nothing was written)
    scope: str
    path: str
    value: Any       # the effective value now, and where it comes from
    source: str


class ConfigPaths(Result, kw_only=True):
    paths: dict[str, str]


class EventsResult(Result, kw_only=True):
    events: list[Event]


class TrustResult(Result, kw_only=True):
    repo: str
    file: str
    exists: bool
    sha256: str | None
    commands: list[dict[str, Any]]   # {key, argv} (and the profile) of each project command
    settings: list[dict[str, Any]]   # the project file's other settings that need approval too
    refused: list[dict[str, Any]]
    approved: bool
    approval: dict[str, Any] | None
    store: str
    action: str


class HelloResult(Result, kw_only=True):
    name: str
    version: str
    protocol: int
    pid: int
    started_at: float
    repos: list[str]
    busy: int


# ---- the connection level and the sidecar's side of the wire ------------------------------
# Answered or sent by the transports, not the service; declared here so that the bindings and
# docs/protocol.md are generated from one place (tests/test_gen.py checks them on the wire).


class SubscribeResult(Result, kw_only=True):
    """`para/subscribe` and `para/unsubscribe`: whether this connection gets notifications."""
    subscribed: bool
    editor: bool | None = None   # (para/unsubscribe answers `subscribed: false` alone)


class StoppedSetup(Result, kw_only=True):
    """A `session.setup` a stopping sidecar stopped: its start was rolled back."""
    session: str
    pid: int
    repo: str


class ShutdownResult(Result, kw_only=True):
    stopping: bool
    setups_stopped: list[StoppedSetup] = []


class SessionsChanged(Result, kw_only=True):
    """`para/sessionsChanged`: something about these sessions changed; refresh."""
    repo: str
    sessions: list[str]   # the session concerned, or [] for repository-wide events
    kind: str


class RunInTerminalParams(Result, kw_only=True):
    """`para/runInTerminal`: run `argv` as is (no shell) in `worktree`, with `env` added."""
    session: str
    worktree: str
    title: str
    argv: list[str]
    env: dict[str, str]


class OpenWorktreeParams(Result, kw_only=True):
    """`para/openWorktree` (to editors): open this session's worktree (a folder)."""
    session: str
    worktree: str
    repo: str


class StopTerminalParams(Result, kw_only=True):
    """`para/stopTerminal` (to editors): the agent of `session` was stopped; close the
    terminal that ran it (`pid`: the process the editor started)."""
    session: str
    pid: int | None = None


class RunInTerminalResult(Result, kw_only=True):
    """An editor's answer: `ok` with the pid of the process it started, or not `ok`."""
    ok: bool
    pid: int | None = None


class ExecutorInfo(Result, kw_only=True):
    """One place agents can run: `local`, or an entry of config `executors`."""
    name: str
    kind: str                      # local | ssh
    host: str | None = None
    port: int | None = None
    user: str | None = None
    root: str | None = None        # where the host keeps para's repository caches and worktrees
    env_passthrough: list[str] = []
    max_running: int = 0


class WorkerCheck(Result, kw_only=True):
    """What `check` found on the host: the versions there (para's is this sidecar's)."""
    name: str
    para: str
    protocol: int
    python: str | None = None
    git: str | None = None


class ExecutorsResult(Result, kw_only=True):
    executors: list[ExecutorInfo]
    checked: WorkerCheck | None = None
