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


class Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class RepoParams(Base, kw_only=True):
    cwd: str
    env: dict[str, str] = {}


class HelloParams(Base, kw_only=True):
    client: str = "unknown"
    version: str | None = None
    protocol: int | None = None


class StartParams(RepoParams, kw_only=True):
    name: str | None = None
    base: str | None = None


class ListParams(RepoParams, kw_only=True):
    all: bool = False


class SessionParams(RepoParams, kw_only=True):
    """For methods acting on one session: `session` names it, else it is found from `cwd`."""
    session: str | None = None


class FinishParams(SessionParams, kw_only=True):
    message: str
    branch: str | None = None
    squash: bool | None = None
    integrate: bool = False


class IntegrateParams(SessionParams, kw_only=True):
    message: str | None = None
    strategy: Literal["squash", "merge", "rebase", "ff"] | None = None
    target: str | None = None
    dry_run: bool = False


class ContinueParams(SessionParams, kw_only=True):
    force: bool = False  # stage everything as it is, even conflicts nobody resolved


class ConflictsParams(RepoParams, kw_only=True):
    target: str | None = None


class TaskSpec(Base, kw_only=True):
    """One task of a batch dispatch: `prompt` or `file` (one of them), an optional session name."""
    name: str | None = None
    prompt: str | None = None
    file: str | None = None


class DispatchParams(RepoParams, kw_only=True):
    """One task (`prompt` or `file`), a plan (`file` naming a directory, or `files`), or
    several independent tasks at once (`tasks`, each failing or starting on its own)."""
    name: str | None = None
    prompt: str | None = None
    file: str | None = None
    files: list[str] = []
    tasks: list[TaskSpec] = []
    agent: str | None = None
    mode: Literal["auto", "headless", "tmux", "editor"] | None = None
    skip_permissions: bool = False
    base: str | None = None
    in_tmux: bool = False


class ReportParams(SessionParams, kw_only=True):
    task: str
    tests: Literal["passed", "failed", "unknown"] | None = None
    todos: str | None = None
    blocked: str | None = None


class StatusParams(SessionParams, kw_only=True):
    all: bool = False


class WaitParams(RepoParams, kw_only=True):
    sessions: list[str] = []
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


class CleanParams(RepoParams, kw_only=True):
    dry_run: bool = False
    force: bool = False


class ConfigParams(Base, kw_only=True):
    cwd: str | None = None
    env: dict[str, str] = {}
    action: Literal["show", "get", "set", "path"] = "show"
    key: str | None = None
    value: str | None = None
    scope: Literal["user", "project"] = "user"


class TrustParams(RepoParams, kw_only=True):
    """`show` changes nothing; `approve` (a human's decision, refused to agents) records the
    project file's content, only if its SHA-256 is `sha256` (required: the digest `show`
    returned, so what is approved is what was seen); `revoke` forgets it."""
    action: Literal["show", "approve", "revoke"] = "show"
    sha256: str | None = None


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
NOTIFICATIONS = ("para/sessionsChanged", "para/event")
# Requests the sidecar sends to clients (editors that subscribed with editor=true).
SERVER_REQUESTS = ("para/runInTerminal",)
