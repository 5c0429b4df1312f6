"""Crash repair: finish or undo the operation a crashed sidecar left in a session's `Op`."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from para_rpc import git, integrate, workspace
from para_rpc.errors import ParaError
from para_rpc.model import Session, Status, journaled
from para_rpc.service.core import Repo, ServiceCore, WorktreeFacts, _utc_stamp, log


class Repair(ServiceCore):
    """Crash repair."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Sessions, Integration)
        async def _do_cancel(self, repo: Repo, s: Session, f: WorktreeFacts | None,
                             cfg: dict[str, Any] | None = None
                             ) -> tuple[dict[str, str] | None, list[dict[str, Any]]]: ...
        async def _do_finish(self, repo: Repo, s: Session, cfg: dict[str, Any] | None = None
                             ) -> tuple[list[dict[str, Any]], str | None]: ...
        async def _do_recover(self, repo: Repo, s: Session) -> None: ...
        async def _do_resume(self, repo: Repo, s: Session) -> None: ...
        async def _undo_start(self, repo: Repo, s: Session, keep: bool = True) -> str | None: ...
        async def _after_landing(self, repo: Repo, s: Session, new: str, old: str,
                                 cfg: dict[str, Any]) -> dict[str, Any]: ...

    async def _repair(self, repo: Repo, s: Session) -> None:
        """Finish or undo the operation a crashed sidecar left in `s.op`."""
        kind = journaled(s).kind
        backup = None
        try:
            d = journaled(s).data
            for hook in ("setup", "teardown"):
                # Killed during a hook: its group (by pgid and start time, wherever its members
                # went) is stopped before anything is redone, so no hook runs twice at once.
                if d.get(f"{hook}_pid"):
                    if await asyncio.to_thread(workspace.stop_leftover, d[f"{hook}_pid"], d.get(f"{hook}_start")):
                        log.warning("%s: stopped the session.%s (pid %d) a crashed sidecar left running",
                                    s.name, hook, d[f"{hook}_pid"])
                    d.pop(f"{hook}_pid", None)
                    d.pop(f"{hook}_start", None)
            if kind == "start":
                wts = await self._worktree_state(repo)
                tip = await git.resolve(repo.root, f"refs/heads/{s.branch}")
                wt = wts.get(os.path.realpath(s.worktree))
                # Files in a worktree still being prepared are the setup's, not anyone's work.
                touched = tip != s.base_commit or (not d.get("preparing") and await git.status(s.worktree))
                if wt and tip and (touched or wt.branch != s.branch):
                    s.op = None  # someone already works there: keep it
                    repo.store.save(s)
                else:
                    backup = await self._undo_start(repo, s)
                    if backup:
                        self._note_in_setup_log(repo, s, f"para: the start of {s.name} was undone after a sidecar "
                                                f"crash; what its worktree held is saved under {backup}")
            elif kind == "finish":
                await self._do_finish(repo, s)
            elif kind == "cancel":
                await self._do_cancel(repo, s, await self._worktree_facts(repo, s))
            elif kind == "recover":
                await self._do_recover(repo, s)
            elif kind == "resume":
                await self._do_resume(repo, s)
            elif kind == "integrate":
                await self._repair_integration(repo, s)
            else:
                log.warning("unknown pending op %s on %s", kind, s.name)
                return
            self.emit(repo, "repaired", s.name, op=kind, **({"backup": backup} if backup else {}))
        except ParaError as e:
            note = f"could not repair interrupted {kind}: {e.message}"
            log.warning("%s: %s", s.name, note)
            if note not in s.notes:
                s.notes.append(note)
                repo.store.save(s)

    @staticmethod
    def _note_in_setup_log(repo: Repo, s: Session, line: str) -> None:
        """Where the user looks after a start that did not complete (errors name this log)."""
        path = os.path.join(repo.root, ".para", "logs", f"{s.name}.setup.log")
        try:
            fd = workspace.open_log(path)
        except (OSError, ParaError):
            return
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    async def _repair_integration(self, repo: Repo, s: Session) -> None:
        """The target is at the old or the new commit (it moves by compare-and-swap), or, for
        integrations landed together, at the first one's old or the last one's new commit
        (`moved`): complete the landing if it moved, else put the session back as it was."""
        rec, d = s.integration or {}, journaled(s).data
        target: str = d.get("target") or rec.get("target") or ""
        tip = await git.resolve(repo.root, f"refs/heads/{target}")
        first, last = d.get("moved") or (d.get("old"), d.get("new"))
        if first and last and tip == last:
            if last != first:  # (the checkout of the target moves once for all of them)
                behind = await integrate.sync_checkout_after_crash(repo.root, target, first, last)
                if behind:
                    self._report_checkout_behind(repo, s, target, first, last, *behind)
            await self._after_landing(repo, s, d["new"], d["old"], repo.config({}))
            return
        if os.path.isdir(s.worktree) and rec.get("pre"):
            await self._undo_materialized_conflict(repo, s, rec["pre"])
        s.status = Status(rec.get("resume_status", "active"))
        s.op, s.integration = None, None
        s.notes.append(f"an integration into {target} was interrupted by a sidecar crash; "
                       f"{target} was left unchanged at {(tip or '?')[:10]}")
        repo.store.save(s)

    async def _undo_materialized_conflict(self, repo: Repo, s: Session, pre: str) -> None:
        """Put the session's worktree back at `pre` after a crash inside the `git merge` or
        `git rebase` that materializes a conflict. A merge killed with git after it wrote the
        files with markers and the unmerged index but before MERGE_HEAD shows no merge in
        progress: its unmerged entries (or markers `pre` does not have) still betray it.
        What the worktree holds is kept under a backup ref before the reset."""
        wt = s.worktree
        if not await git.in_progress(wt):
            unmerged = await git.unmerged_paths(wt)
            if not unmerged and not await integrate.new_marker_files(wt, pre, sorted(await git.dirty_paths(wt))):
                return  # nothing of the integration reached the worktree
        if await git.status(wt):
            snap = await git.snapshot(wt, f"para: {s.name} as an interrupted integration left it")
            ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-interrupted", snap)
            s.notes.append(f"what the interrupted integration left in the worktree was saved under {ref}")
        await integrate.abort_in(wt, pre)

    def _report_checkout_behind(self, repo: Repo, s: Session, target: str, old: str, new: str,
                                worktree: str, reason: str) -> None:
        """The landing was completed but the checkout of the target could not be brought along
        (left untouched): until it is, its `git status` shows the landed work as staged
        reverts, and committing there would undo it. Say so where the user looks."""
        note = (f"{target} moved to {new[:10]} (this session landed), but the checkout of {target} at {worktree} "
                f"could not be brought along after a sidecar crash and was left untouched ({reason}). "
                f"Do not commit there yet: move the files git names out of the way, then run "
                f"`git read-tree -m -u {old} {new}` in {worktree}")
        log.warning("%s: %s", s.name, note)
        s.notes.append(note)
        self.emit(repo, "checkout_behind", s.name, target=target, worktree=worktree, old=old, new=new,
                  reason=reason)
