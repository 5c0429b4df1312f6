"""What this sidecar runs or pauses on the side of an operation, and how none of it outlives
the sidecar: the `session.setup`/`session.teardown` hooks in flight, and the agent processes
an operation froze (SIGSTOP) while it saved and removed a worktree.

Each is journaled where a crash leaves it (the hook's process group and start time in the
session's `Op`, the frozen pids and start times in the session's record), so that:
- a graceful stop stops the setups in flight (their starts roll back) and thaws or stops
  the frozen agents before the sidecar exits;
- the next sidecar, at its start, reopens every repository this one served (a list kept
  next to the socket) and repairs them there and then, not when someone happens to run
  para in that repository again: a leftover hook group is stopped, a frozen agent thawed
  (its worktree is still there) or stopped (it is gone);
- a hook that calls back into para is refused what would recurse or wait for itself
  (`forbidden`): starting sessions, or cancelling, finishing or integrating its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from para_rpc import agents, git, runtime, trust, workspace
from para_rpc.errors import Code, ParaError
from para_rpc.model import AgentRun, Session, Status, to_builtins
from para_rpc.service.core import Repo, ServiceCore, _utc_stamp, log

# The methods (Service attributes) a hook may not call: start/dispatch recurse without end
# (each new session runs the setup again); the others wait for the session lock the hook's
# own operation holds.
_NEVER_FROM_A_HOOK = ("start", "dispatch")
_NOT_ON_ITS_OWN_SESSION = ("cancel", "finish", "integrate")


@dataclass
class RunningHook:
    repo: Repo
    session: str
    kind: str                           # setup | teardown
    pid: int                            # its process group (it leads it)
    task: asyncio.Task[Any] | None      # the operation that runs it
    stopped: str | None = None          # why para stopped it before it ended


class Hooks(ServiceCore):
    """Hooks in flight, frozen agents, known repositories."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Dispatching)
        def _agent_job(self, key: str, coro: Coroutine[Any, Any, None]) -> None: ...
        async def _stop_agent(self, repo: Repo, sid: int | None, name: str, run: AgentRun, delay: float,
                              reason: str, worktree: str | None = None) -> None: ...

    # ---- hooks in flight ------------------------------------------------------------------

    def _hook_started(self, repo: Repo, s: Session, kind: str, pid: int) -> None:
        """Journal a hook's process group with its start time (a crash repair stops that group,
        and only that one, wherever its members went) and follow it while it runs."""
        self.hooks[pid] = RunningHook(repo, s.name, kind, pid, asyncio.current_task())
        if s.op is not None:
            s.op.data[f"{kind}_pid"] = pid
            s.op.data[f"{kind}_start"] = workspace.proc_start(pid)
            repo.store.save(s)

    def _hook_ended(self, s: Session, kind: str, pid: int | None) -> str | None:
        """Forget a hook that ended; why para stopped it, if it did."""
        hook = self.hooks.pop(pid, None) if pid is not None else None
        if s.op is not None:
            s.op.data.pop(f"{kind}_pid", None)
            s.op.data.pop(f"{kind}_start", None)
        return hook.stopped if hook is not None else None

    def _stop_hook(self, hook: RunningHook, reason: str) -> None:
        if hook.stopped is None:
            hook.stopped = reason
        log.info("%s: stopping session.%s (pid %d): %s", hook.session, hook.kind, hook.pid, reason)
        workspace.kill_group(hook.pid)

    def _running_setup(self, repo: Repo, name: str) -> RunningHook | None:
        return next((h for h in self.hooks.values() if h.repo is repo and h.session == name and h.kind == "setup"),
                    None)

    def stop_setups(self, reason: str) -> list[dict[str, Any]]:
        """Stop every setup in flight (their starts roll back); what was stopped."""
        stopped = []
        for hook in list(self.hooks.values()):
            if hook.kind == "setup":
                self._stop_hook(hook, reason)
                stopped.append({"session": hook.session, "pid": hook.pid, "repo": hook.repo.root})
        return stopped

    def abandoned(self, task: asyncio.Task[Any]) -> None:
        """The client of the operation `task` went away (Ctrl-C of `para start`): the setup it
        runs is its own, and goes; the start rolls back."""
        for hook in list(self.hooks.values()):
            if hook.task is task and hook.kind == "setup":
                self._stop_hook(hook, "its client went away before the start completed")

    async def _stop_preparing(self, repo: Repo, name: str | None, cwd: str) -> tuple[Session, int, str] | None:
        """`cancel` of a session whose start is still running its setup: stop the setup and wait
        for the start to roll back (it holds the session lock until then). Returns the session
        as it was, the setup's pid and when it was stopped, or None when no setup of it was running."""
        if name is None:
            name = self.session_name_at(cwd)
        s = repo.store.get(name) if name else None
        hook = self._running_setup(repo, s.name) if s is not None and s.op is not None else None
        if s is None or hook is None:
            return None
        since = _utc_stamp()
        self._stop_hook(hook, "stopped by `para cancel`")
        async with repo.session_lock(s.name):
            pass  # the start has finished unwinding
        return s, hook.pid, since

    async def _start_stopped(self, repo: Repo, s: Session, pid: int, since: str, cwd: str) -> dict[str, Any]:
        """The result of a `cancel` that stopped a start's setup: the session as it was, now
        gone (nothing was committed in it: there is nothing to archive), and what happened."""
        s.status, s.op = Status.cancelled, None
        result: dict[str, Any] = to_builtins(self._info(repo, s, {}, {}, cwd=os.path.realpath(cwd)))
        result.update(ahead=0, commits=[], diffstat="", saved=None, backups=[], state="cancelled")
        found = await git.refs(repo.root, f"refs/para/backup/{s.name}/")
        backup = max((r for r in found if r.endswith("-start") and r.rsplit("/", 1)[1] >= since), default=None)
        result["warnings"] = [f"stopping session.setup (pid {pid})",
                              f"the start of {s.name!r} was rolled back: its worktree and branch were removed"
                              + (f"; what the worktree held was saved under {backup}" if backup else "")]
        self.emit(repo, "cancelled", s.name, archived_branch=None, saved=None, backups=[], start_rolled_back=True)
        return result

    def refuse_hook_caller(self, attr: str, p: Any) -> None:
        """Refuse what a hook's process tree (the peer of this request and its ancestors, their
        process groups and sessions) may not ask for: `forbidden`."""
        if not self.hooks or attr not in _NEVER_FROM_A_HOOK + _NOT_ON_ITS_OWN_SESSION:
            return
        peer = trust.PEER_PID.get()
        if not peer:
            return
        lineage = workspace.lineage(peer)
        hook = next((h for h in self.hooks.values() if h.pid in lineage), None)
        if hook is None:
            return
        what = f"session.{hook.kind} of session {hook.session!r} (pid {hook.pid})"
        if attr in _NEVER_FROM_A_HOOK:
            raise ParaError(Code.forbidden, f"this request comes from the {what}: a hook may not {attr} sessions "
                            "(each new session would run the hook again, without end); start them from your shell",
                            caller=what)
        target = getattr(p, "session", None)
        if target is None:  # named by its cwd: the hook's own worktree, where it runs
            own = hook.repo.store.get(hook.session)
            cwd = os.path.realpath(getattr(p, "cwd", "") or "/")
            top = os.path.realpath(own.worktree) if own is not None else None
            target = hook.session if top and (cwd == top or cwd.startswith(top + os.sep)) else None
        if target == hook.session:
            raise ParaError(Code.forbidden, f"this request comes from the {what}: a hook may not {attr} its own "
                            f"session (the {hook.kind} runs inside that session's operation, which would wait for "
                            "it); exit non-zero to fail the setup instead", caller=what, session=hook.session)

    # ---- agents frozen by an operation -----------------------------------------------------

    @staticmethod
    def _journal_frozen(repo: Repo, s: Session, stopped: dict[int, int]) -> None:
        """Record (or, given nothing, clear) the processes an operation froze, where the next
        sidecar finds them if this one dies before they run again or are stopped."""
        if stopped:
            s.extra["frozen"] = {str(pid): start for pid, start in stopped.items()}
        elif "frozen" in s.extra:
            del s.extra["frozen"]
        else:
            return
        repo.store.save(s)

    async def _release_frozen(self, repo: Repo, final: bool = False) -> list[str]:
        """Frozen agent processes no operation of this sidecar will release (a crashed or
        stopping sidecar's): they continue when the session's worktree is still there (or
        an operation on it is left unfinished); else the session ended and its agent is
        stopped now, as the agent of an ended session is (SIGTERM, then SIGCONT so they act
        on it): by the usual stop job when the sidecar goes on (`final` false: recorded, with
        its event), directly when it is exiting. Returns what was done."""
        done = []
        for s in repo.store.all():
            frozen = s.extra.get("frozen")
            if not isinstance(frozen, dict) or not frozen:
                continue
            pids = await asyncio.to_thread(agents.still_running, {int(p): int(t) for p, t in frozen.items()})
            if not pids:
                self._journal_frozen(repo, s, {})
                continue
            keep = s.op is not None or os.path.isdir(s.worktree)
            run = s.agent
            if keep:
                await asyncio.to_thread(agents.thaw_run, pids)
            elif (not final and run is not None and run.exit_code is None and not run.lost and run.pid
                  and run.exit_file):
                # (registered before the poller's follow-up, which would wait out agent.stop_grace)
                self._agent_job(f"stop:{run.exit_file}", self._stop_agent(repo, s.id, s.name, run, 0.0,
                                                                          f"its session was {s.status.value}",
                                                                          worktree=s.worktree))
            else:
                await asyncio.to_thread(agents.end_frozen, pids)
            verb = "continued" if keep else "stopped"
            log.info("%s: %s %d agent process(es) a sidecar had left paused", s.name, verb, len(pids))
            done.append(f"{s.name}: {verb} {len(pids)} paused agent process(es)")
            self._journal_frozen(repo, s, {})
        return done

    async def release_all_frozen(self) -> list[str]:
        """At a graceful stop: no agent stays paused behind this sidecar."""
        done = []
        for repo in list(self.repos.values()):
            with contextlib.suppress(Exception):
                done += await self._release_frozen(repo, final=True)
        return done

    # ---- the rollback of a start that does not complete -------------------------------------

    async def _save_before_undo(self, repo: Repo, s: Session) -> str | None:
        """Before a start is undone: what its worktree holds (edits someone made there while the
        setup ran, and what the setup made) kept under refs/para/backup/<name>/<stamp>-start,
        so the undo loses nothing. Returns the ref, or None when there was nothing to keep."""
        try:
            if not os.path.isdir(s.worktree) or not await git.status(s.worktree):
                return None
            snap = await git.snapshot(s.worktree, f"para: what the worktree of {s.name} held when its start "
                                      "was undone")
            ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-start", snap)
        except (ParaError, OSError) as e:
            log.warning("%s: could not save the worktree before undoing its start: %s", s.name, e)
            return None
        log.warning("%s: the start was undone; what its worktree held is saved under %s", s.name, ref)
        return ref

    # ---- repositories served before ---------------------------------------------------------

    def _remember_repo(self, repo: Repo) -> None:
        if self.socket:
            with contextlib.suppress(OSError):
                runtime.remember_repo(self.socket, repo.root)

    async def reopen_known(self) -> list[str]:
        """At start: open every repository this sidecar's predecessor served, so what it left
        (journaled operations, hook groups, frozen agents, agents of ended sessions) is
        repaired now. One that no longer exists is forgotten; one another sidecar serves is
        left to it. Returns the roots opened."""
        if not self.socket:
            return []
        opened, gone = [], []
        for root in runtime.known_repos(self.socket):
            if not os.path.isdir(root):
                gone.append(root)
                continue
            try:
                await self.repo(root)
                opened.append(root)
            except ParaError as e:
                if e.code is Code.not_a_repository:
                    gone.append(root)
                log.info("not reopening %s: %s", root, e.message)
            except Exception:  # noqa: BLE001 one repository must not keep the others unrepaired
                log.exception("reopening %s failed", root)
        if gone:
            with contextlib.suppress(OSError):
                runtime.forget_repos(self.socket, gone)
        return opened
