"""Sessions whose agent runs on another machine (an SSH executor, issue 16): bringing its
commits home (harvest), keeping the local worktree a mirror of them, and ending the placement.

The session keeps its local branch and worktree, so everything that reads them (list, diff,
show, conflicts, the merge queue) works unchanged. The agent's worktree is on the host; its
commits come home by harvest, never by a push from the host: the worker's snapshot (branch
tip, plus a checkpoint commit of uncommitted work made with a private index) arrives as a
bundle into `refs/para/remote/<name>` and `refs/para/checkpoint/<name>`, then the session's
branch moves by compare-and-swap, fast-forward only (never a rewind: a branch that moved
here in another way stays, with a note). The local worktree is a read-only mirror: after each
harvest its files are the checkpoint's tree (or the tip's), its index the tip, so the agent's
uncommitted work shows as uncommitted here too. Edits made in it by hand are overwritten by
the next harvest: the agent's copy on the host is the one that counts.

Harvests happen on every status report of the agent, when it exits, before integrate, finish
and cancel, and on a slow sweep (`harvest_interval` of the executor, default 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from para_rpc import config, executors, git
from para_rpc.errors import Code, ParaError
from para_rpc.model import AgentRun, Session, Status, now
from para_rpc.service.core import Repo, ServiceCore, log

HARVEST_INTERVAL = 30.0
REMOTE_POLL_SECONDS = 2.0  # a poll of a remote run is an exec on its host: not every agent tick


def remote(run: AgentRun | None) -> bool:
    return run is not None and run.executor != "local" and bool(run.placement)


def _append(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)


class Remote(ServiceCore):
    """Harvest and placement ends for agents on other machines."""

    def _harvest_interval(self, repo: Repo, run: AgentRun) -> float:
        with contextlib.suppress(ParaError):
            entry = config.usable(repo.config({})["executors"]).get(run.executor) or {}
            return float(entry.get("harvest_interval") or HARVEST_INTERVAL)
        return HARVEST_INTERVAL

    async def _harvest_run(self, repo: Repo, s: Session) -> str | None:
        """Harvest `s` (its caller holds the session lock, or none is needed): its branch
        fast-forwarded to the host's tip, its worktree mirroring the host's, the run's
        harvested_commit/at recorded and saved. Returns the tip harvested."""
        run = s.agent
        if not remote(run):
            return None
        assert run is not None
        locks: dict[str, asyncio.Lock] = self.__dict__.setdefault("_harvest_locks", {})
        async with locks.setdefault(f"{repo.root}\0{s.name}", asyncio.Lock()):
            ex = self._executor(repo, run.executor)
            before = run.placement.get("checkpoint")
            tip = await ex.harvest(run)
            checkpoint = run.placement.get("checkpoint")
            ref = f"refs/heads/{s.branch}"
            old = await git.resolve(repo.root, ref)
            if tip and old != tip:
                if old is None or await git.is_ancestor(repo.root, old, tip):
                    await git.update_ref(repo.root, ref, tip, old, message=f"para: harvest of {s.name}")
                    await self._mirror(s, run, old, before, tip, checkpoint)
                else:
                    note = (f"the host's {s.branch} ({tip[:10]}) is not ahead of the local branch ({(old or '')[:10]}); "
                            f"the local branch did not move (the host's commits are under refs/para/remote/{s.name})")
                    if note not in s.notes:
                        s.notes.append(note)
                        self.emit(repo, "harvest_diverged", s.name, local=old, remote=tip)
            elif tip and checkpoint != before:
                await self._mirror(s, run, old, before, tip, checkpoint)
            await self._pull_log(repo, run)
            run.harvested_commit, run.harvested_at = tip or run.harvested_commit, now()
            s.head_commit = await git.resolve(repo.root, ref) or s.head_commit
            repo.store.save(s)
            self.emit(repo, "harvested", s.name, commit=tip, checkpoint=checkpoint, executor=run.executor)
            return tip

    @staticmethod
    async def _mirror(s: Session, run: AgentRun, old_tip: str | None, old_checkpoint: str | None, tip: str,
                      checkpoint: str | None) -> None:
        """The local worktree follows the host's: files = the checkpoint (or tip), index = tip.
        First the index is set to what the files hold now, so paths the new state lacks go."""
        wt = s.worktree
        if not os.path.isdir(wt):
            return
        was = old_checkpoint or old_tip
        try:
            if was:
                await git.run(wt, "read-tree", "--reset", was)
            await git.run(wt, "read-tree", "-u", "--reset", checkpoint or tip)
            if checkpoint:
                await git.run(wt, "read-tree", "--reset", tip)
        except ParaError as e:
            s.notes.append(f"the local worktree could not follow the harvest: {e.message}")
        run.placement = {**run.placement, "mirrored": checkpoint or tip}

    async def _pull_log(self, repo: Repo, run: AgentRun) -> None:
        """The host's agent log, appended to the local copy `para logs` reads."""
        if not run.log:
            return
        try:
            have = os.path.getsize(run.log)
        except OSError:
            have = 0
        try:
            data = await self._executor(repo, run.executor).logs(run, have)
        except ParaError as e:
            log.info("log of %s not pulled: %s", run.placement.get("session"), e.message)
            return
        if data:
            await asyncio.to_thread(_append, run.log, data)

    def _harvest_soon(self, repo: Repo, name: str) -> None:
        """A harvest in the background (a status report, the sweep): one at a time per session."""
        tasks: dict[str, asyncio.Task[None]] = self.__dict__.setdefault("_harvest_tasks", {})
        key = f"{repo.root}\0{name}"
        if key in tasks and not tasks[key].done():
            return

        async def one() -> None:
            try:
                async with repo.session_lock(name):
                    s = repo.store.get(name)
                    if s is not None and remote(s.agent):
                        await self._harvest_run(repo, s)
            except Exception:  # noqa: BLE001 a background job: logged, the next one tries again
                log.exception("harvest of %s failed", name)

        tasks[key] = asyncio.get_running_loop().create_task(one())

    async def _remote_poll(self, repo: Repo, s: Session) -> executors.RunState | None:
        """A remote run's state, at most every REMOTE_POLL_SECONDS; None between polls. When it
        ended, its work is harvested before the exit is recorded; while it runs, the sweep."""
        run = s.agent
        assert run is not None
        polled: dict[str, float] = self.__dict__.setdefault("_remote_polled", {})
        key = run.exit_file or s.name
        if time.monotonic() - polled.get(key, 0.0) < REMOTE_POLL_SECONDS:
            return None
        polled[key] = time.monotonic()
        state = await self._executor(repo, run.executor).poll(run)
        if state.state == "alive":
            if time.time() - (run.harvested_at or run.started_at) > self._harvest_interval(repo, run):
                self._harvest_soon(repo, s.name)
            return state
        # `s` was read before the poll: an integrate or cancel may have ended the session since.
        # The harvest works on the session as it is now, under its lock; while an operation holds
        # that, this exit is looked at on the next poll (the operation harvests for itself).
        lock = repo.session_lock(s.name)
        if lock.locked():
            return None
        async with lock:
            now_ = repo.store.by_id(s.id) if s.id is not None else None
            if now_ is None or now_.agent is None or now_.agent.exit_file != run.exit_file:
                return state
            if now_.status in (Status.active, Status.conflicted):  # (an ended session's work was taken)
                try:
                    await self._harvest_run(repo, now_)
                except ParaError as e:
                    now_.notes.append(f"its work could not be harvested when its agent ended: {e.message}")
                    repo.store.save(now_)
        return state

    async def _remote_commit_and_harvest(self, repo: Repo, s: Session, message: str) -> None:
        """Before integrate/finish: the host's uncommitted work committed there, then brought home."""
        run = s.agent
        assert run is not None
        ex = self._executor(repo, run.executor)
        commit = getattr(ex, "commit", None)
        if commit is not None:
            await commit(run, message)
        await self._harvest_run(repo, s)

    async def _remote_stop_and_harvest(self, repo: Repo, s: Session, reason: str) -> dict[str, Any] | None:
        """Before cancel: stop the agent on its host (a dropped connection would not), then
        bring its work home, so the cancel archives everything it did."""
        run = s.agent
        if not remote(run):
            return None
        assert run is not None
        ex = self._executor(repo, run.executor)
        result = None
        if run.exit_code is None and not run.lost:
            result = await ex.stop(run, 0.0 if reason == "cancel" else float(repo.config({})["agent.stop_grace"]))
            if result["pids"]:
                run.stops.append({"at": now(), "reason": f"its session is being {reason}led", **result})
        await self._harvest_run(repo, s)
        return result

    async def _end_placement(self, repo: Repo, name: str, run: AgentRun, delay: float) -> None:
        """After the session ended: give a still running agent `delay` seconds (it may be
        waiting for the answer to its own integrate), stop it, free the host (worktree, branch,
        run dir, socket)."""
        try:
            ex = self._executor(repo, run.executor)
            deadline = time.monotonic() + delay
            while (await ex.poll(run)).state == "alive":
                if time.monotonic() >= deadline:
                    await ex.stop(run, float(repo.config({})["agent.stop_grace"]))
                    break
                await asyncio.sleep(0.5)
            await ex.release(run)
        except Exception:  # noqa: BLE001 a background job: logged, the next sidecar tries again
            log.exception("releasing the placement of %s failed", name)

    async def _remote_merge(self, repo: Repo, s: Session, target: str, target_commit: str) -> list[str]:
        """The target merged into the session's worktree on its host (the objects it lacks sent
        as a bundle), then harvested: the conflicted paths, or [] when the merge went through."""
        run = s.agent
        assert run is not None
        ex = self._executor(repo, run.executor)
        merge = getattr(ex, "merge", None)
        if merge is None:
            raise ParaError(Code.internal, f"executor {run.executor} cannot merge on its host")
        have = [sha for sha in (run.harvested_commit, run.placement.get("base")) if sha]
        # (the target branch, which the caller's target lock holds at target_commit: a bundle names refs)
        bundle = await git.bundle(repo.root, f"refs/heads/{target}", exclude=have)
        got = await merge(run, target_commit, bundle)
        await self._harvest_run(repo, s)
        return [str(f) for f in got.get("conflicted") or []]

    async def _remote_continue(self, repo: Repo, s: Session, rec: dict[str, Any], force: bool) -> None:
        """`para continue` of a session paused on conflicts in its host's worktree: what it holds
        now is brought home first; conflict markers still in the conflicted files refuse (as for
        a local session, unless forced); then the merge is committed there and harvested."""
        await self._harvest_run(repo, s)
        left = [f for f in rec.get("files") or [] if _has_markers(os.path.join(s.worktree, f))]
        if left and not force:
            run = s.agent
            assert run is not None
            raise ParaError(Code.conflict, f"conflict markers are still in {', '.join(left[:10])} in "
                            f"{run.placement.get('worktree')} on executor {run.executor}: resolve them there "
                            f"(or `para continue --force {s.name}` to commit them as they are)",
                            session=s.name, files=left)
        await self._remote_commit_and_harvest(repo, s, f"Merge {rec['target']} into {s.branch}")


def _has_markers(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            lines = f.read(1 << 22).splitlines()
    except OSError:
        return False
    return any(x.startswith(b"<<<<<<< ") for x in lines) and any(x.startswith(b">>>>>>> ") for x in lines)
