"""Executors: where an agent runs. The service decides *that* an agent runs and for which
session; an executor places it (issue 16). `local` (this machine: headless, tmux, or an
editor terminal), an SSH host (ssh.py) or a Kubernetes Job (k8s.py, the same worker requests
over the pod's exec stream): one module each, with the same functions.

Every executor runs the agent under the detached runner (agent_runner: exit file, so a
restarted sidecar learns how it ended) and gives it the session-bound channel, never the
sidecar's own socket: `bind` turns the local bound socket (service/channel.py) into the path
the agent uses (the same path locally; a remote unix socket forwarded over the connection on
an SSH host). What the agent may ask there is decided by server/bound.py, whatever the executor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import msgspec

from para_rpc.errors import Code, ParaError
from para_rpc.model import AgentRun

# An editor asked to open a terminal: (request, timeout) -> its answer, None when none answered.
EditorLauncher = Callable[[dict[str, Any], float], Awaitable[dict[str, Any] | None]]


class LaunchSpec(msgspec.Struct, kw_only=True):
    """What crosses the seam: everything the executor needs to start one agent run."""

    session: str
    worktree: str
    argv: list[str]                 # rendered (placeholders are paths the agent sees)
    env: dict[str, str]             # its whole environment (the local sidecar's, PARA_*, session.env)
    keep: list[str] = msgspec.field(default_factory=list)  # of `env`, what para sets (for tmux/editor)
    log: str                        # where a headless agent's output goes
    prompt_file: str                # a headless agent's stdin
    editor_timeout: float = 10.0
    # For an executor on another machine, which has no copy of the repository:
    repo_root: str = ""             # the local main checkout (where code comes from and commits go)
    branch: str = ""                # the session's branch, whose tip the worktree starts at
    files: dict[str, str] = msgspec.field(default_factory=dict)  # written into its worktree (relative paths)
    # A resumed session's last checkpoint (a local ref; its commit's parent is the branch tip):
    # its uncommitted work, put back as uncommitted changes in a worktree made anew.
    checkpoint: str = ""


# Placeholders an executor on another machine renders with its own paths: argv elements cannot
# hold NUL (neither can a prompt given as an argument), so these never come from a task.
REMOTE_WORKTREE = "\0worktree\0"
REMOTE_PROMPT_FILE = "\0prompt_file\0"


class RunState(msgspec.Struct, kw_only=True, frozen=True):
    """What `poll` found: `alive`, `exited` (with its code and end time) or `lost` (the
    runner is gone without saying how it ended). `unreachable` (with `alive`): its host did not
    answer, why; the service counts a run lost only once that lasted the executor's grace."""

    state: Literal["alive", "exited", "lost"]
    exit_code: int | None = None
    ended_at: float | None = None
    unreachable: str | None = None
    reason: str | None = None       # `lost`: what the executor knows of why (a pod's eviction message)


class Started(msgspec.Struct, kw_only=True):
    """`start`'s answer: the run as recorded, and for a runner this sidecar forked, a way to
    wait for it (so its exit is noticed at once, not at the next poll)."""

    run: AgentRun
    wait: Callable[[], Awaitable[int]] | None = None
    note: str | None = None         # for the session's notes (e.g. the mode it fell back to)


class Executor(Protocol):
    """One place agents run. All methods take the recorded AgentRun: a restarted sidecar has
    nothing else."""

    name: str

    async def prepare(self, spec: LaunchSpec) -> dict[str, Any]:
        """Make the worker ready for `spec` (materialise the worktree); the placement to record."""
        ...

    async def start(self, run: AgentRun, spec: LaunchSpec, editor: EditorLauncher | None) -> Started:
        """Start the detached runner with the agent; `run` comes back with its pid/window/log."""
        ...

    async def bind(self, run: AgentRun, socket: str) -> str:
        """Make the local bound socket reachable where the agent runs; the path it uses."""
        ...

    async def poll(self, run: AgentRun) -> RunState: ...

    async def harvest(self, run: AgentRun, into: tuple[str, str] | None = None) -> str | None:
        """Bring the session's commits home; the branch tip harvested (None: nothing to do).
        `into`: (tip ref, checkpoint ref) to put them in instead of the session's own."""
        ...

    async def logs(self, run: AgentRun, offset: int, limit: int = 1 << 20) -> bytes: ...

    async def stop(self, run: AgentRun, grace: float, worktree: str | None = None) -> dict[str, Any]:
        """TERM the run's processes (and strays working in its `worktree`), KILL after `grace`:
        {"signals", "pids", "left_running"}."""
        ...

    async def release(self, run: AgentRun) -> None:
        """The session ended: free what the placement holds on the worker."""
        ...

    async def reconcile(self, runs: list[AgentRun]) -> list[AgentRun]:
        """After a sidecar restart: reconnect to the runs recorded as running; those re-bound."""
        ...


def known(table: dict[str, dict[str, Any]] | None = None) -> list[str]:
    return ["local", *sorted(table or {})]


def get(name: str, table: dict[str, dict[str, Any]] | None = None) -> Executor:
    """The executor called `name`: `local`, or one of config `executors` (`table`, as the
    service read it). One object per configured entry, kept while its entry is unchanged,
    so its connection is reused by every session placed there."""
    from para_rpc.executors import local  # (one module per executor, loaded when used)

    if name == "local":
        return local.LOCAL
    entry = (table or {}).get(name)
    if entry is None:
        raise ParaError(Code.config_error, f"no executor named {name!r} (known: {', '.join(known(table))})",
                        executor=name)
    if entry.get("kind") == "k8s":
        from para_rpc.executors import k8s

        return k8s.executor(name, entry)
    from para_rpc.executors import ssh

    return ssh.executor(name, entry)
