"""The params of every `para/<verb>` request, one msgspec Struct each.

Transports convert the incoming JSON into these (unknown keys refused, types
checked) before the service sees it. `cwd` is the directory the request is
about: it selects the repository and, where a session name is optional, the
session whose worktree contains it. `env` carries the caller's PARA_*
configuration overrides (see config.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# Integers a client sends are bounded where they are declared, so a value no store or
# clock can hold (after = 10**30) is refused as invalid params, not an internal error.
# Within the bounds, each method's documented clamp applies.
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]

# Sizes are bounded the same way: a hostile size (a 10 MB commit message, 100 000 task
# files, a megabyte of name) is refused as invalid params before anything is stored, run
# or written to git. The bounds are far above any real use; names get their real limits
# from names.py.
MAX_NAME = 1024              # session, branch, agent, client names
MAX_PATH = 4096              # PATH_MAX
MAX_TEXT = 1 << 20           # commit messages, report fields, config values (1 Mi characters)
MAX_PROMPT = 4 << 20         # a task given inline
MAX_ITEMS = 1000             # task files in one plan, sessions waited on, env entries
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
PathStr = Annotated[str, msgspec.Meta(max_length=MAX_PATH)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Env = Annotated[dict[Name, Text], msgspec.Meta(max_length=MAX_ITEMS)]


class Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class RepoParams(Base, kw_only=True):
    cwd: PathStr
    env: Env = {}


class HelloParams(Base, kw_only=True):
    client: Name = "unknown"
    version: Name | None = None
    protocol: int | None = None
    # On a session-bound socket (an agent's PARA_SOCKET): that session's token (PARA_TOKEN).
    # Ignored elsewhere.
    token: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class StartParams(RepoParams, kw_only=True):
    name: Name | None = None
    base: Name | None = None
    keep_on_failure: bool = False  # a failed session.setup keeps the session (a warning) instead of rolling back


class ListParams(RepoParams, kw_only=True):
    all: bool = False
    verbose: bool = False   # each session also carries its newest event (`last_event`)


class SessionParams(RepoParams, kw_only=True):
    """For methods acting on one session: `session` names it, else it is found from `cwd`."""
    session: Name | None = None


class ReopenParams(SessionParams, kw_only=True):
    """`para/resume` and `para/recover`: a worktree they recreate is prepared as at start."""
    keep_on_failure: bool = False  # a failed session.setup keeps the worktree instead of rolling back


class ResumeParams(ReopenParams, kw_only=True):
    """`para/resume`; with `executor`, the session's agent (not running: lost with its host,
    exited or stopped) is relaunched there, from the branch and its uncommitted work."""
    executor: Name | None = None  # `local` or a configured executor


class FinishParams(SessionParams, kw_only=True):
    message: Text
    branch: Name | None = None
    squash: bool | None = None
    integrate: bool = False


class IntegrateParams(SessionParams, kw_only=True):
    message: Text | None = None
    strategy: Literal["squash", "merge", "rebase", "ff"] | None = None
    target: Name | None = None
    dry_run: bool = False


class ContinueParams(SessionParams, kw_only=True):
    force: bool = False  # stage everything as it is, even conflicts nobody resolved


class ConflictsParams(RepoParams, kw_only=True):
    target: Name | None = None


class TaskSpec(Base, kw_only=True):
    """One task of a batch dispatch: `prompt` or `file` (one of them), an optional session name."""
    name: Name | None = None
    prompt: Annotated[str, msgspec.Meta(max_length=MAX_PROMPT)] | None = None
    file: PathStr | None = None


class DispatchParams(RepoParams, kw_only=True):
    """One task (`prompt` or `file`), a plan (`file` naming a directory, or `files`), or
    several independent tasks at once (`tasks`, each failing or starting on its own)."""
    name: Name | None = None
    prompt: Annotated[str, msgspec.Meta(max_length=MAX_PROMPT)] | None = None
    file: PathStr | None = None
    files: Annotated[list[PathStr], msgspec.Meta(max_length=MAX_ITEMS)] = []
    tasks: Annotated[list[TaskSpec], msgspec.Meta(max_length=MAX_ITEMS)] = []
    agent: Name | None = None
    mode: Literal["auto", "headless", "tmux", "editor"] | None = None
    skip_permissions: bool = False
    base: Name | None = None
    in_tmux: bool = False
    sandbox: bool | None = None   # confine the agent with bubblewrap (default: config agent.sandbox)
    network: bool | None = None   # a sandboxed agent keeps the network (default: config agent.network)
    keep_on_failure: bool = False  # as for start: a failed session.setup keeps the session
    executor: Name | None = None  # where the agent runs: `local` or a configured executor (default: agent.executor)


class ExecutorsParams(RepoParams, kw_only=True):
    check: Name | None = None    # connect to this executor and check its host (git, python, para's version)


class ReportParams(SessionParams, kw_only=True):
    task: Text
    tests: Literal["passed", "failed", "unknown"] | None = None
    todos: Text | None = None
    blocked: Text | None = None


class StatusParams(SessionParams, kw_only=True):
    all: bool = False


class WaitParams(RepoParams, kw_only=True):
    sessions: Annotated[list[Name], msgspec.Meta(max_length=MAX_ITEMS)] = []
    timeout: Seconds = 60.0
    # The `last_event` of the previous wait: events since then count, so nothing is missed
    # between two waits. Without it, only what happens from now on counts.
    after_event: Count | None = None


class DiffParams(SessionParams, kw_only=True):
    stat_only: bool = False
    max_bytes: Count = 200_000


class CancelParams(SessionParams, kw_only=True):
    discard: bool = False
    force: bool = False  # HEAD off the session branch, or an unfinished operation: save a backup, cancel anyway


class StopParams(SessionParams, kw_only=True):
    pass


class RestartParams(SessionParams, kw_only=True):
    prompt: Text | None = None   # the follow-up, added to the original task (or given to a `resume` profile)
    stop: bool = False           # stop a still running agent first instead of refusing


class SendParams(SessionParams, kw_only=True):
    message: Text


class MessagesParams(SessionParams, kw_only=True):
    wait: Seconds = 0.0          # block until a message arrives, at most this long (clamped to 3600)
    all: bool = False            # every message, read or not (marks nothing)


class OpenParams(SessionParams, kw_only=True):
    editor: Literal["code", "cursor", "nvim"] | None = None  # run this one; never ask a connected editor


class CleanParams(RepoParams, kw_only=True):
    dry_run: bool = False
    force: bool = False


class ConfigParams(Base, kw_only=True):
    cwd: PathStr | None = None
    env: Env = {}
    action: Literal["show", "get", "set", "reset", "path"] = "show"
    key: Name | None = None
    value: Text | None = None
    scope: Literal["user", "project"] = "user"


class TrustParams(RepoParams, kw_only=True):
    """`show` changes nothing; `approve` (a human's decision, refused to agents) records the
    project file's content, only if its SHA-256 is `sha256` (required: the digest `show`
    returned, so what is approved is what was seen); `revoke` forgets it."""
    action: Literal["show", "approve", "revoke"] = "show"
    sha256: Name | None = None


class EventsParams(RepoParams, kw_only=True):
    after: Count = 0
    limit: Count = 200


class SubscribeParams(Base, kw_only=True):
    events: bool = True
    editor: bool = False  # this connection answers para/runInTerminal (it can run agents)


class EmptyParams(Base, kw_only=True):
    pass


# The method table (params, result, service attribute, mutating) is in methods.py.
TRANSPORT_METHODS: dict[str, type[Base]] = {
    "para/subscribe": SubscribeParams,
    "para/unsubscribe": EmptyParams,
    "para/shutdown": EmptyParams,
}
NOTIFICATIONS = ("para/sessionsChanged", "para/event", "para/openWorktree", "para/stopTerminal")
# Requests the sidecar sends to clients (editors that subscribed with editor=true).
SERVER_REQUESTS = ("para/runInTerminal",)
