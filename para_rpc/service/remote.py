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
and cancel, and on a slow sweep (`harvest_interval` of the executor, default 30 s). Every new
checkpoint is also kept as `refs/para/backup/<name>/<stamp>-checkpoint` (the last
CHECKPOINTS_KEPT of them): the harvest replaces `refs/para/checkpoint/<name>`, the backup
outlives a loss, a resume and a cancel.

Worker loss: a host that does not answer the poll is not an ended run. Only after the
executor's `lost_after` seconds of failures in a row is the run `lost`: its session stays
active with everything harvested (its branch, its worktree mirroring the last checkpoint, the
backup ref), an `agent_lost` event and a note say what may be missing (the changes after the
last harvest), and `para resume NAME --executor OTHER` continues from there. A host that
answers within the grace changes nothing. A lost run is no longer remote (`remote()`): its
session's work is all here, so finish, integrate and cancel use the local worktree and never
wait for the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import msgspec

from para_rpc import config, executors, git
from para_rpc.errors import Code, ParaError
from para_rpc.model import AgentRun, Session, Status, now
from para_rpc.service.core import Repo, ServiceCore, _utc_stamp, log

HARVEST_INTERVAL = 30.0
REMOTE_POLL_SECONDS = 2.0  # a poll of a remote run is an exec on its host: not every agent tick
CHECKPOINTS_KEPT = 5       # checkpoint backups per session (`para clean` ages out the rest too)


def remote(run: AgentRun | None) -> bool:
    """Whether the run's work lives on another host that this sidecar follows (a lost run's
    does not: everything it left is here)."""
    return run is not None and run.executor != "local" and bool(run.placement) and not run.lost


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if at else "its start (nothing was harvested)"


def _append(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)


# A session resumed on another executor leaves its old placement behind: a host that was cut off
# may come back holding work done after the last harvest. Kept in the session's `extra` under
# this key, until that host answers: then that work is saved in backup refs and the host freed.
LEFT = "left_placements"
LEFT_RETRY_SECONDS = 10.0


def leave_placement(s: Session, run: AgentRun | None, executor: str) -> None:
    """Record `run`'s placement as left behind (a resume moved the session to `executor`);
    one the session returns to is its own again (its worktree there is reused), not left."""
    kept = [e for e in s.extra.get(LEFT) or [] if e.get("executor") != executor]
    if run is not None and run.executor != executor:
        kept.append({"executor": run.executor, "since": now(), "run": msgspec.to_builtins(run)})
    if kept:
        s.extra[LEFT] = kept
    else:
        s.extra.pop(LEFT, None)


class Remote(ServiceCore):
    """Harvest and placement ends for agents on other machines."""

    def _fetch_left_soon(self, repo: Repo, sessions: list[Session]) -> None:
        """From the agent poll: for each session with placements left behind, try again every
        LEFT_RETRY_SECONDS, in the background."""
        tried: dict[str, float] = self.__dict__.setdefault("_left_tried", {})
        jobs: dict[str, asyncio.Task[None]] = self.__dict__.setdefault("_left_jobs", {})
        for s in sessions:
            if not s.extra.get(LEFT) or s.id is None:
                continue
            key = f"{repo.root}\0{s.id}"
            if (key in jobs and not jobs[key].done()) or time.monotonic() - tried.get(key, -LEFT_RETRY_SECONDS) \
                    < LEFT_RETRY_SECONDS:
                continue
            tried[key] = time.monotonic()
            jobs[key] = asyncio.get_running_loop().create_task(self._fetch_left(repo, s.id, s.name))

    async def _fetch_left(self, repo: Repo, sid: int, name: str) -> None:
        """Each placement left behind whose host answers: its agent stopped, its work (commits
        and uncommitted files) saved under refs/para/backup/<name>/<stamp>-left-on-<executor>-*
        (never moved onto the session's branch: the session went on elsewhere), the host freed.
        A host that still does not answer is tried again later."""
        try:
            async with repo.session_lock(name):
                s = repo.store.by_id(sid)
                if s is None:
                    return
                left = []
                for entry in s.extra.get(LEFT) or []:
                    try:
                        await self._fetch_one_left(repo, s, entry)
                    except (ParaError, msgspec.ValidationError, TimeoutError, KeyError, TypeError) as e:
                        log.info("work left by %s on executor %s not fetched yet: %s", name, entry.get("executor"),
                                 getattr(e, "message", e))
                        left.append(entry)
                if left:
                    s.extra[LEFT] = left
                else:
                    s.extra.pop(LEFT, None)
                repo.store.save(s)
        except Exception:  # noqa: BLE001 a background job: logged, tried again
            log.exception("fetching the work left by %s failed", name)

    async def _fetch_one_left(self, repo: Repo, s: Session, entry: dict[str, Any]) -> None:
        executor = str(entry["executor"])
        run = msgspec.convert(entry["run"], AgentRun)
        ex = self._executor(repo, executor)
        state = await ex.poll(run)
        if state.unreachable:
            raise ParaError(Code.config_error, state.unreachable)
        if state.state == "alive":
            await asyncio.wait_for(ex.stop(run, 0.0), 30.0)
        base = f"refs/para/backup/{s.name}/{_utc_stamp()}-left-on-{executor}"
        into = (f"{base}-tip", f"{base}-checkpoint")
        tip = await asyncio.wait_for(ex.harvest(run, into), 120.0)
        checkpoint = await git.resolve(repo.root, into[1])
        if tip and checkpoint is None and (tip == run.harvested_commit or await git.is_ancestor(
                repo.root, tip, await git.resolve(repo.root, f"refs/heads/{s.branch}") or tip)):
            await git.run(repo.root, "update-ref", "-d", into[0], tip, check=False)  # (nothing it lacks)
            saved: list[str] = []
        else:
            saved = [r for r, sha in zip(into, (tip, checkpoint), strict=True) if sha]
        await asyncio.wait_for(ex.release(run), 60.0)
        what = (f"work its agent left on executor {executor} after the last harvest was saved as "
                f"{' and '.join(saved)} (not on its branch: merge what you want of it)") if saved else \
            f"executor {executor}, where its agent ran before, answered again: nothing new there; freed"
        s.notes.append(what)
        self.emit(repo, "left_work_saved", s.name, executor=executor, refs=saved, message=what)

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
            if checkpoint and checkpoint != before:
                await self._keep_checkpoint(repo, s.name, checkpoint, run)
            await self._pull_log(repo, run)
            run.harvested_commit, run.harvested_at = tip or run.harvested_commit, now()
            s.head_commit = await git.resolve(repo.root, ref) or s.head_commit
            repo.store.save(s)
            self.emit(repo, "harvested", s.name, commit=tip, checkpoint=checkpoint, executor=run.executor)
            return tip

    @staticmethod
    async def _keep_checkpoint(repo: Repo, name: str, checkpoint: str, run: AgentRun) -> None:
        """A new checkpoint kept under refs/para/backup/<name>/ (the last few): the one the
        harvest holds is replaced by the next, and a lost host sends none again."""
        ref = await git.create_ref(repo.root, f"refs/para/backup/{name}/{_utc_stamp()}-checkpoint", checkpoint,
                                   message="para: checkpoint of the agent's uncommitted work")
        run.placement = {**run.placement, "backup": ref}
        found = await git.refs(repo.root, f"refs/para/backup/{name}/")
        kept = sorted(r for r in found if "-checkpoint" in r.rsplit("/", 1)[-1])  # (names start with the stamp)
        for old in kept[:-CHECKPOINTS_KEPT]:
            if old != ref:
                await git.run(repo.root, "update-ref", "-d", old, found[old][0], check=False)

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
        # Rounds per executor: every run there is polled in the same round (the executor sends
        # them as one request), once per round, whatever its own start time.
        rounds: dict[str, float] = self.__dict__.setdefault("_remote_rounds", {})
        polled: dict[str, float] = self.__dict__.setdefault("_remote_polled", {})
        key, where = run.exit_file or s.name, f"{repo.root}\0{run.executor}"
        t = time.monotonic()
        if t - rounds.get(where, -REMOTE_POLL_SECONDS) >= REMOTE_POLL_SECONDS:
            rounds[where] = t
        if polled.get(key, -1.0) >= rounds[where]:
            return None
        polled[key] = rounds[where]
        state = await self._executor(repo, run.executor).poll(run)
        if state.unreachable:
            return await self._unreachable(repo, s, state.unreachable)
        first = self.__dict__.get("_unreachable_since", {}).pop(key, None)
        if first is not None:
            self.emit(repo, "agent_reachable", s.name, executor=run.executor, after=round(time.time() - first, 3))
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

    async def _unreachable(self, repo: Repo, s: Session, why: str) -> executors.RunState:
        """A poll its host did not answer: still `alive` within the executor's `lost_after`
        (counted from the first failure in a row this sidecar saw), then `lost`, with an
        event and a note naming what the session holds and what may be missing."""
        run = s.agent
        assert run is not None
        since: dict[str, float] = self.__dict__.setdefault("_unreachable_since", {})
        key = run.exit_file or s.name
        ex = self._executor(repo, run.executor)
        grace = float(getattr(ex, "lost_after", lambda: 60.0)())
        if key not in since:
            since[key] = time.time()
            self.emit(repo, "agent_unreachable", s.name, executor=run.executor, reason=why, lost_after=grace)
        first = since[key]
        if time.time() - first < grace:
            return executors.RunState(state="alive", unreachable=why)
        since.pop(key, None)
        tip = run.harvested_commit or await git.resolve(repo.root, f"refs/heads/{s.branch}")
        backup = run.placement.get("backup") if run.placement.get("checkpoint") else None
        held = f"its branch {s.branch} at {(tip or '')[:10]}" + (
            f" and its uncommitted work as of then in {backup} (also in its local worktree)" if backup else
            " (it had no uncommitted work then)")
        reason = (f"its host (executor {run.executor}) has not answered for {int(time.time() - first)} s ({why}). "
                  f"Changes after {_when(run.harvested_at)} on {run.executor} may be missing; the session holds "
                  f"everything harvested until then: {held}. `para resume {s.name} --executor NAME` continues "
                  "from there")
        self.emit(repo, "agent_lost", s.name, executor=run.executor, message=f"the agent of {s.name} is lost: {reason}",
                  reason=why, harvested_commit=tip, harvested_at=run.harvested_at, backup=backup,
                  worktree=run.placement.get("worktree"))
        # (the agent poll records it, with `reason` as the session's note)
        return executors.RunState(state="lost", ended_at=time.time(), reason=reason)

    @staticmethod
    async def _local_checkpoint(repo: Repo, s: Session) -> str:
        """The local worktree's uncommitted work as a commit on its branch's tip, kept under
        refs/para/backup/<name>/<stamp>-resume, for a worktree made anew on a host; "" when
        there is none (or the worktree is not on the tip, so it could not be put back there)."""
        if not os.path.isdir(s.worktree):
            return ""
        tip = await git.resolve(repo.root, f"refs/heads/{s.branch}")
        if tip is None or await git.resolve(s.worktree, "HEAD") != tip:
            return ""
        snap = await git.snapshot(s.worktree, f"para: uncommitted work of {s.name}, taken to its new host")
        if await git.tree_of(repo.root, snap) == await git.tree_of(repo.root, tip):
            return ""
        return await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-resume", snap,
                                    message="para: uncommitted work taken to another host")

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
