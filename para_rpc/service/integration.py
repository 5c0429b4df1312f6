"""Integration as the service runs it: the per-target queue, session states, events,
continue/abort, dry runs and the conflict forecast (integrate.py holds the git side)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from para_rpc import config, git, integrate
from para_rpc.errors import Code, ParaError
from para_rpc.model import (
    Op,
    Session,
    Status,
    journaled,
    now,
    pending,
    recorded,
    to_builtins,
)
from para_rpc.names import validate_branch_name
from para_rpc.params import (
    ConflictsParams,
    ContinueParams,
    IntegrateParams,
    SessionParams,
)
from para_rpc.service.core import (
    STATUS_CONCURRENCY,
    Repo,
    _check_message,
    _utc_stamp,
)
from para_rpc.service.remote import Remote, remote


class Integration(Remote):
    """Integration operations."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Sessions, Dispatching)
        async def _show(self, repo: Repo, s: Session, cwd: str) -> dict[str, Any]: ...
        def _agent_session_ended(self, repo: Repo, s: Session, forgotten: bool = False) -> None: ...
        async def _teardown(self, repo: Repo, s: Session, cfg: dict[str, Any] | None = None) -> list[str]: ...
        def _teardown_warnings(self, s: Session) -> list[str]: ...
        def _release(self, repo: Repo, s: Session) -> None: ...
        async def _refuse_linked(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> None: ...

    async def integrate(self, p: IntegrateParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        strategy = p.strategy or cfg["integrate.strategy"]
        message = _check_message(p.message) if p.message is not None else None
        s = self._find(repo, p.session, p.cwd)
        target = validate_branch_name(p.target, "target branch") if p.target is not None else s.base_branch
        if target == s.branch:
            raise ParaError(Code.invalid_input, "a session cannot be integrated into its own branch")
        if not _branch_file_names_one(repo, target) and await git.resolve(repo.root, f"refs/heads/{target}") is None:
            raise ParaError(Code.not_found, f"target branch {target!r} does not exist", branch=target)
        if p.dry_run:  # the same checks as the real one, so the forecast never promises what it refuses
            self._check_integrable(s)
            await self._refuse_linked(repo, s, cfg)
            return await self._predict(repo, s, target, strategy, message)
        config.usable(cfg["integrate.check"])  # an unapproved project-file check: refused before anything changes
        async with repo.session_lock(s.name):
            s = self._find(repo, s.name, p.cwd)
            self._check_integrable(s)
            await self._refuse_linked(repo, s, cfg)
            if s.agent is not None and remote(s.agent):  # its work is on its host: committed there, brought home
                if strategy == "rebase":
                    raise ParaError(Code.invalid_input, f"session {s.name} runs on executor {s.agent.executor}: "
                                    "the rebase strategy rewrites its branch, which its agent holds there; "
                                    "integrate with --strategy squash or merge", session=s.name)
                await self._remote_commit_and_harvest(repo, s, message or f"{s.name}: work in progress")
            f = await self._save_or_refuse(repo, s, "integrate")
            # The work in progress is committed first. (What is written after this status was
            # read does not land: `_after_landing` saves it under `<stamp>-leftover`.)
            committed = None  # (HEAD, which is on the session branch: `_save_or_refuse`)
            if f is not None and f.status:
                await git.stage_all(s.worktree)
                if await git.has_staged(s.worktree):
                    committed = await git.commit(s.worktree, message or f"{s.name}: work in progress")
            # HEAD is on the session branch (`_save_or_refuse`): the worktree listing just read gave its tip.
            known = committed or (f.head if f is not None and f.branch == s.branch else None)
            pre = known or await git.resolve(repo.root, f"refs/heads/{s.branch}")
            if pre is None:
                raise ParaError(Code.not_found, f"branch {s.branch!r} of session {s.name!r} is gone", session=s.name)
            if message is not None and f is not None and f.branch == s.branch and not f.status and not f.gitlinks:
                # Clean, its index is the tip's tree: with no gitlink there, none can land
                # (and with a message given, whether it shares history with the target is not asked).
                related = True
            else:
                related = await self._refuse_bare_gitlinks(repo, s, target, pre)
            if message is None:
                message = await self._default_message(repo, s, target, pre, strategy, related)
            s.integration = {"target": target, "strategy": strategy, "message": message, "pre": pre,
                             "resume_status": s.status.value, "stamp": _utc_stamp()}
            return await self._land(repo, s, cfg)

    def _check_integrable(self, s: Session) -> None:
        if s.status is Status.conflicted:
            raise ParaError(Code.wrong_state, f"session {s.name!r} is paused on conflicts in {s.worktree}; "
                            f"resolve them and run `para continue {s.name}`, or `para abort {s.name}`",
                            session=s.name, files=(s.integration or {}).get("files", []))
        self._require(s, (Status.active, Status.review), "integrate")

    async def _default_message(self, repo: Repo, s: Session, target: str, tip: str, strategy: str,
                               related: bool) -> str:
        """(`related`: whether `tip` and `target` share history, which the caller has already read.)"""
        if strategy == "merge":
            return f"Merge session {s.name} into {target}"
        subjects = (await git.out(repo.root, "log", "--format=%s", f"refs/heads/{target}..{tip}")).splitlines() \
            if related else []
        return subjects[0] if len(subjects) == 1 else f"Integrate session {s.name}"

    async def _land(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> dict[str, Any]:
        """Queue on the target, compute the result, gate it, move the target, clean up."""
        rec = recorded(s)
        s.status = Status.integrating
        s.op = Op(kind="integrate", data={"target": rec["target"]})
        repo.store.save(s)
        self.emit(repo, "queued", s.name, target=rec["target"])
        self.busy += 1
        try:
            new, old = await self._in_queue(repo, s, cfg)
            return await self._after_landing(repo, s, new, old, cfg)
        except Exception as e:
            if s.status is Status.integrating and not ((op := pending(s)) is not None and op.data.get("landed")):
                # Failed before the target moved: the session goes back to where it was.
                s.status = Status(rec.get("resume_status", "active"))
                s.op, s.integration = None, None
                repo.store.save(s)
                code = e.code if isinstance(e, ParaError) else Code.internal
                self.emit(repo, "integration_failed", s.name, target=rec["target"], code=code.name,
                          message=str(e), check=rec.get("check"))
            raise
        finally:
            self.busy -= 1

    async def _in_queue(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> tuple[str, str]:
        """Wait in the target's queue, then land (the target's old and new commit). Twenty
        agents integrating at once are the normal case: whoever's turn it is lands all the
        waiting integrations that can go together (clean merges with no check to run; each its
        own commit, one after the other) with one read of the target and its checkout, one
        compare-and-swap of the target and one update of its checkout. The others go alone,
        in their turn, as does everyone after a landing together failed."""
        target = recorded(s)["target"]
        me = _Landing(s, cfg, asyncio.get_running_loop().create_future())
        waiting = repo.landings.setdefault(target, [])
        waiting.append(me)
        lock = repo.target_lock(target)
        held = False
        try:
            # Landed by an earlier turn's group, it has nothing left to wait for: not for the
            # turns before its own (one may run a check for minutes), while the session stays
            # "integrating" with its work in the target.
            held = await _turn(lock, me.landed)
            if me.landed.done():
                return me.landed.result()
            if me.alone or not _can_go_together(me):
                return await self._merge_and_move(repo, s, cfg, await git.signs_commits(repo.root))
            group = [w for w in waiting if not w.landed.done() and not w.alone and _can_go_together(w)][:GROUP_LIMIT]
            landed = await self._land_together(repo, target, group)
            if me.landed.done():
                return me.landed.result()
            if not landed:  # (failed together: said by going alone, each in its turn)
                for w in group:
                    w.alone = True
            return await self._merge_and_move(repo, s, cfg, await git.signs_commits(repo.root))
        finally:
            if held:
                lock.release()
            waiting.remove(me)

    async def _land_together(self, repo: Repo, target: str, group: list[_Landing]) -> bool:
        """Land `group` on `target` in order, each as its own commit on the one before: the
        same git as `_merge_and_move` without a rewrite or a check, once for the group where it
        can be (reads, the target's move, its checkout) and per integration only where it must
        (merge-tree, commit-tree). One that would need its worktree (a conflict, a rebase that
        replays) is left to go alone. False when the group could not land: nothing moved, and
        every one goes alone (so that each failure is said to whom it belongs)."""
        ref = f"refs/heads/{target}"
        try:
            # (Whether commits are signed too: asked once for the group, in its turn.)
            heads, wts, root_dirty, sign = await asyncio.gather(
                git.commits_of(repo.root, [ref, *(f"refs/heads/{w.s.branch}" for w in group)]),
                git.worktrees(repo.root),
                git.dirty_paths(repo.root) if integrate.main_checkout_on(repo.common_dir, target) else _nothing(),
                git.signs_commits(repo.root))
            if ref not in heads:
                return False
            first = heads[ref][0]
            old, old_tree = heads[ref]
            going: list[tuple[_Landing, str, str, str]] = []  # (integration, target before it, after it, its tip)
            for w in group:
                rec = recorded(w.s)
                if f"refs/heads/{w.s.branch}" not in heads:
                    w.alone = True
                    continue
                tip = heads[f"refs/heads/{w.s.branch}"][0]
                try:
                    cand = await integrate.candidate(repo.root, rec["strategy"], old, tip, rec["message"],
                                                     sign=sign, old_tree=old_tree)
                except ParaError:  # (ff after the group moved the target: said when it goes alone)
                    cand = integrate.Candidate(False)
                if not cand.clean or cand.commit is None or cand.tree is None:
                    w.alone = True
                    continue
                going.append((w, old, cand.commit, tip))
                old, old_tree = cand.commit, cand.tree
            if not going:
                return True  # (nothing could go together: each goes alone)
            last = going[-1][2]
            for w, before, after, tip in going:
                recorded(w.s)["old"] = before
                # (before the target moves; `tip`: what of the session branch lands, _after_landing)
                journaled(w.s).data.update(old=before, new=after, moved=[first, last], tip=tip)
                repo.store.save(w.s)
            if last != first:
                for w, _, _, _ in going:
                    await self._absorb_objects(repo, w.s)
                await git.absorb_reachable(repo.common_dir, last, [first])
                names = ", ".join(w.s.name for w, _, _, _ in going)
                keep = _free_backups(repo, {_integrated_ref(w.s): tip for w, _, _, tip in going})
                moved = await integrate.advance_target(repo.root, target, first, last, f"para: integrate {names}",
                                                       wts, repo.common_dir,
                                                       {os.path.realpath(repo.root): root_dirty}
                                                       if root_dirty is not None else None, keep)
                for w, _, _, _ in going:
                    _note_move(journaled(w.s).data, moved, keep, _integrated_ref(w.s), alone=len(going) == 1)
        except Exception as e:
            for w in group:
                w.alone = True
            if isinstance(e, ParaError):
                return False
            raise
        for w, before, after, _ in going:
            journaled(w.s).data["landed"] = True
            w.landed.set_result((after, before))
        return True

    async def _merge_and_move(self, repo: Repo, s: Session, cfg: dict[str, Any], sign: bool) -> tuple[str, str]:
        """What runs while the integration holds its target's queue: the fewer git processes
        here, the sooner the next integration of that target starts. The target, the session
        branch (one listing) and the worktrees (for the checkout of the target) are read at once."""
        rec = recorded(s)
        target, strategy = rec["target"], rec["strategy"]
        ref = f"refs/heads/{target}"
        # The queue is what twenty agents integrating at once wait for: what it needs is read at
        # once, the status of the main checkout too when that is where the target is checked out
        # (as it mostly is: read here, not after the merge, it is one step less in the queue).
        root = os.path.realpath(repo.root)
        heads, wts, root_dirty = await asyncio.gather(
            git.commits_of(repo.root, [ref, f"refs/heads/{s.branch}"]), git.worktrees(repo.root),
            git.dirty_paths(repo.root) if integrate.main_checkout_on(repo.common_dir, target) else _nothing())
        listed: list[git.Worktree] | None = wts
        dirty = {root: root_dirty} if root_dirty is not None else None
        if ref not in heads or f"refs/heads/{s.branch}" not in heads:
            raise ParaError(Code.not_found, f"branch {(target if ref not in heads else s.branch)!r} disappeared")
        (old, old_tree), (tip, _) = heads[ref], heads[f"refs/heads/{s.branch}"]
        rec["old"] = old
        cand = await integrate.candidate(repo.root, strategy, old, tip, rec["message"], sign=sign, old_tree=old_tree)
        # A rebase, or a conflict, needs the session's own worktree; that rewrites its branch.
        rewrite = not cand.clean or (strategy == "rebase" and cand.commit is None)
        backup = None
        landing = tip  # (what of the session branch lands: after a merge or rebase in its worktree, that)
        if rewrite and remote(s.agent):
            # Its conflicts go where its agent is: the target merged in its worktree on the host.
            stopped = await self._remote_merge(repo, s, target, old)
            if stopped:
                await self._pause(repo, s, "merge", stopped)
            tip = landing = await git.resolve(repo.root, f"refs/heads/{s.branch}") or tip
            cand = await integrate.candidate(repo.root, strategy, old, tip, rec["message"], sign=sign, old_tree=old_tree)
            listed = dirty = None  # (the merge on its host took a while: the worktrees are read again)
            if not cand.clean:
                raise ParaError(Code.internal, f"merge of {target} into {s.branch} on its host did not resolve "
                                "its conflicts")
            rewrite = False
        elif rewrite:
            wt = await self._ensure_worktree(repo, s)
            if strategy == "rebase":
                backup = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{rec['stamp']}-rebase", tip)
                stopped, kind = await integrate.rebase_onto(wt, old), "rebase"
            else:
                stopped = await integrate.merge_target_into(wt, old, f"Merge {target} into {s.branch}")
                kind = "merge"
            if stopped:
                await self._pause(repo, s, kind, stopped)
            landing = await git.out(wt, "rev-parse", "HEAD")
            cand = await integrate.candidate(repo.root, strategy, old, landing, rec["message"], sign=sign,
                                             old_tree=old_tree)
            listed = dirty = None  # (the worktrees were listed before this one changed: read again)
            if not cand.clean:  # cannot happen after a completed merge of the target; be loud if it does
                raise ParaError(Code.internal, f"merge of {target} into {s.branch} did not resolve its conflicts")
        new = cand.commit
        if new is None:  # a clean candidate of a rebase already replayed is its tip: be loud if not
            raise ParaError(Code.internal, f"integrating {s.branch} into {target} computed no commit")
        try:
            if new != old and cfg["integrate.check"]:
                config.usable(cfg["integrate.check"])  # never an unapproved project-file check (trust.py)
                ok, rc, output = await integrate.run_check(
                    repo.root, os.path.join(repo.root, ".para", "scratch"), new, cfg["integrate.check"],
                    cfg["integrate.check_timeout"])
                rec["check"] = {"ok": ok, "exit": rc, "output": output}
                listed = dirty = None  # (a check can take minutes: the worktrees are read again after it)
                if not ok:
                    raise ParaError(Code.check_failed, f"the check `{cfg['integrate.check']}` failed "
                                    f"({'timed out' if rc is None else f'exit {rc}'}); {target} did not move",
                                    output=output, exit=rc, session=s.name)
            d = journaled(s).data
            d.update(old=old, new=new, tip=landing)  # journal before the target moves
            # (A group it was in and that failed named its move here: the repair must go by this one.)
            d.pop("moved", None)
            repo.store.save(s)
            if new != old:
                await self._absorb_objects(repo, s)  # out of the sandboxed agent's reach first
                await git.absorb_reachable(repo.common_dir, new, [old])  # all of them, or it fails here
                keep = _free_backups(repo, {_integrated_ref(s): landing})
                moved = await integrate.advance_target(repo.root, target, old, new, f"para: integrate {s.name}",
                                                       listed, repo.common_dir, dirty, keep)
                _note_move(d, moved, keep, _integrated_ref(s), alone=True)
        except ParaError:
            if rewrite:  # the target did not move: the session goes back to how this attempt found it
                await self._restore_branch(repo, s, tip)
                if backup:
                    await git.delete_ref(repo.root, backup)
            raise
        journaled(s).data["landed"] = True
        return new, old

    async def _restore_branch(self, repo: Repo, s: Session, commit: str) -> None:
        if await git.status(s.worktree):
            snap = await git.snapshot(s.worktree, f"para: changes in {s.name} during a failed integration")
            await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-failed", snap)
        await integrate.abort_in(s.worktree, commit)

    async def _pause(self, repo: Repo, s: Session, kind: str, files: list[str]) -> None:
        hunks = await integrate.worktree_hunks(s.worktree, files)
        rec = recorded(s)
        rec.update(kind=kind, files=files, hunks=hunks)
        s.status, s.op = Status.conflicted, None
        repo.store.save(s)
        self.emit(repo, "conflicted", s.name, target=rec["target"], worktree=s.worktree,
                  files=files, hunks=hunks)
        where = s.worktree
        if remote(s.agent):
            assert s.agent is not None
            where = f"{s.agent.placement.get('worktree')} on executor {s.agent.executor} (where its agent is)"
        raise ParaError(Code.conflict, f"session {s.name!r} conflicts with {rec['target']} in "
                        f"{len(files)} file(s): {', '.join(files[:10])}. Resolve them in {where}, then run "
                        f"`para continue` (or `para abort` to go back)", session=s.name, worktree=s.worktree,
                        files=files, hunks=hunks, target=rec["target"])

    async def _ensure_worktree(self, repo: Repo, s: Session) -> str:
        async with repo.lock:
            if not await self._has_worktree(repo, s):
                if os.path.lexists(s.worktree):
                    raise ParaError(Code.already_exists, f"{s.worktree} exists but is not this session's "
                                    "worktree; move it away first", path=s.worktree)
                await git.prune_worktrees(repo.root)
                s.git_dir = await git.add_worktree(repo.root, s.worktree, s.branch)
        return s.worktree

    async def _after_landing(self, repo: Repo, s: Session, new: str, old: str,
                             cfg: dict[str, Any]) -> dict[str, Any]:
        """The target holds the work: save the branch tip, remove worktree and branch, record history."""
        rec = recorded(s)
        stamp = rec.get("stamp") or _utc_stamp()
        op = pending(s)
        d = op.data if op is not None else {}
        # The project file says which commands para runs: a landing that changes it says so
        # (as the move of the target read old..new, else by its blob before and after). The
        # session branch's tip: from its ref file when that names what landed, else from git
        # (one process for both).
        config_changed: bool | None = d.get("config_changed")
        try:
            tip: str | None = git.commit_in_files(repo.common_dir, s.branch, [d.get("tip")])
        except LookupError:
            tip, config_changed = None, None
        if config_changed is None:
            before, after, at_tip = await git.objects(repo.root, [f"{old}:{config.PROJECT_FILE}",
                                                                 f"{new}:{config.PROJECT_FILE}",
                                                                 f"refs/heads/{s.branch}^{{commit}}"])
            config_changed = before != after
            tip = at_tip[0] if at_tip is not None else None
        # What of the branch landed, as journaled then (a journal from before it was: the tip now).
        # Commits after it did not land: kept under -late before the branch goes (below).
        landed = d.get("tip") or tip
        warnings: list[str] = []
        unsaved = False  # (its tip could not be kept under a backup ref: then the branch stays)
        if landed:
            # (Made with the move of the target when it could be: `kept`, for what was journaled.)
            kept = d.get("kept") if d.get("tip") == landed else None
            try:
                kept = kept or await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{stamp}-integrated",
                                                    landed)
                warnings.append(f"the session branch's tip {landed[:10]} is kept under {kept} "
                                f"for clean.backup_days ({cfg['clean.backup_days']})")
            except ParaError as e:  # the work has landed: the branch keeps the tip instead
                unsaved = True
                s.notes.append(f"branch {s.branch} kept: its tip {landed[:10]} could not be saved under "
                               f"refs/para/backup/{s.name}/ ({e.data.get('stderr') or e.message})")
                warnings.append(s.notes[-1])
        removed = False
        async with self._agent_frozen(repo, s) as frozen:
            try:
                f = await self._worktree_facts(repo, s, tip)
                if f is not None:
                    # Before the save: the teardown runs with the agent thawed (to stop its
                    # servers), and what they write meanwhile is saved with the rest: the facts
                    # are read again then (with no teardown run, the agent stayed frozen).
                    ran_before = s.op is not None and s.op.data.get("teardown_done")
                    await self._teardown(repo, s, cfg)
                    if s.op is None or (s.op.data.get("teardown_done") and not ran_before):
                        f = await self._worktree_facts(repo, s)
            except ParaError as e:  # the work has landed: a directory git does not know is left alone
                f = None
                s.notes.append(f"worktree left in place: {e.message}")
            if f is not None:
                warnings += await self._busy_warnings(s)
                # The target has the work; anything else in the worktree (HEAD moved off the branch,
                # submodule or nested repository content) is saved before the worktree goes.
                backups = await self._save_worktree(repo, s, f, stamp)
                if backups:
                    rec["backups"] = backups
                    warnings += self._backup_warnings(backups)
                nested = f.nested()
                if f.branch == s.branch and any(e[3:].rstrip("/") not in nested for e in f.status):
                    # written after integration started: keep it
                    snap = await git.snapshot(s.worktree, f"para: changes left in {s.name} after integration",
                                              exclude=nested)
                    ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{stamp}-leftover", snap)
                    rec["leftover"] = ref
                    warnings.append(f"changes written in the worktree after the integration started did not land; "
                                    f"they were saved as {ref}")
                try:
                    # (Not under the repository's lock: git removes distinct worktrees side by side,
                    # the session's lock keeps para's other work off this one, and a prune meanwhile
                    # is what remove_worktree finishes from. A group landed together goes at once.)
                    left = await git.remove_worktree(repo.root, s.worktree)
                    removed = True
                    if left:
                        s.notes.append(left)
                        warnings.append(left)
                except ParaError as e:  # the work has landed: what is left is said, not a failed integrate
                    s.notes.append(f"worktree not fully removed: {e.message}")
                    warnings.append(s.notes[-1])
            else:
                async with repo.lock:  # a worktree deleted by hand still holds its branch until pruned
                    await git.prune_worktrees(repo.root)
        listed: list[git.Worktree] | None = None
        deleted = False
        kept_at = None  # (the branch's tip as it was checked for late commits: what deleting it may take)
        if landed and not unsaved:
            try:
                late_warnings, kept_at = await self._keep_late_commits(repo, s, landed, stamp)
                warnings += late_warnings
            except ParaError as e:  # (as above: the branch keeps them instead)
                unsaved = True
                s.notes.append(f"branch {s.branch} kept: the commits made on it after {landed[:10]} landed could "
                               f"not be saved under refs/para/backup/{s.name}/ ({e.data.get('stderr') or e.message})")
                warnings.append(s.notes[-1])
        if tip and not cfg["integrate.keep_branch"] and not unsaved:
            holder = None
            if not removed:  # (else its worktree, which had it checked out, is gone)
                async with repo.lock:
                    listed = await git.worktrees(repo.root)
                holder = next((w.path for w in listed if w.branch == s.branch and not w.prunable), None)
            if holder is not None:
                s.notes.append(f"branch {s.branch} kept: it is checked out in {holder}")
                warnings.append(s.notes[-1])
            else:
                # Git refuses when a worktree made since by hand has it checked out, or when one
                # it could not fully remove is still listed: the branch stays, and that is said.
                try:
                    slipped = await _delete_branch(repo, s.branch, kept_at)
                    deleted = True
                    if slipped and landed:  # (committed between the check above and the delete)
                        warnings += (await self._keep_late_commits(repo, s, landed, stamp, slipped))[0]
                except ParaError as e:
                    s.notes.append(f"branch {s.branch} kept: {e.data.get('stderr') or e.message}")
                    warnings.append(s.notes[-1])
        rec.update(commit=new, old=old, landed_at=now(), noop=new == old)
        rec["config_changed"] = config_changed
        rec.pop("files", None), rec.pop("hunks", None), rec.pop("kind", None)
        s.head_commit = tip
        s.status, s.op = Status.integrated, None
        self._release(repo, s)  # ports and exclude lines: also when the worktree was gone before
        repo.store.save(s)
        await self._sweep_object_dirs(repo)  # (its sandbox's objects into the common store)
        self.emit(repo, "integrated", s.name, target=rec["target"], commit=new, strategy=rec["strategy"])
        if config_changed:
            self.emit(repo, "config_changed", s.name, target=rec["target"], commit=new, path=config.PROJECT_FILE)
        self._agent_session_ended(repo, s)
        if removed and deleted:  # (what the answer shows of them: no worktree, no branch)
            wts: dict[str, git.Worktree] = {}
            branches: dict[str, tuple[str, int]] = {}
        else:  # (deleting the branch moved no worktree: the listing above still holds for the answer)
            wts, branches = await asyncio.gather(
                self._worktree_state(repo) if listed is None else _by_path(listed), git.refs(repo.root, "refs/heads/"))
        result: dict[str, Any] = to_builtins(self._info(repo, s, wts, branches))
        result["warnings"] = warnings + self._frozen_warnings(frozen, s) + self._teardown_warnings(s)
        return result

    async def _keep_late_commits(self, repo: Repo, s: Session, landed: str, stamp: str,
                                 now_at: str | None = None) -> tuple[list[str], str | None]:
        """Commits made on the session branch after what landed (a teardown with the agent
        thawed, anything in the worktree before it went, an agent while it waited in the queue)
        are kept under -late, and said: the branch is about to be deleted, or stays (with
        integrate.keep_branch) holding work that did not land. A branch moved back to what
        landed, or behind it, holds nothing new. `now_at`: the tip to check (else the branch's,
        read now). Returns the warnings and the tip checked."""
        if now_at is None:
            try:
                now_at = git.branch_file(repo.common_dir, s.branch)
            except LookupError:
                now_at = await git.resolve(repo.root, f"refs/heads/{s.branch}")
        if now_at is None or now_at == landed or await git.is_ancestor(repo.root, now_at, landed):
            return [], now_at
        late = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{stamp}-late", now_at)
        recorded(s)["late"] = late
        return [f"commits made on {s.branch} after the integration started did not land; they are kept under {late}"], now_at

    async def continue_(self, p: ContinueParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        config.usable(cfg["integrate.check"])  # an unapproved project-file check: refused before anything changes
        async with self._locked(repo, p.session, p.cwd) as s:
            self._require(s, Status.conflicted, "continue")
            rec = recorded(s)
            if remote(s.agent):  # resolved on its host: committed there, brought home, landed
                await self._remote_continue(repo, s, rec, p.force)
                self.emit(repo, "continued", s.name, target=rec["target"])
                rec["resume_status"] = Status.active.value
                return await self._land(repo, s, cfg)
            if not os.path.isdir(s.worktree):
                raise ParaError(Code.wrong_state, f"the worktree {s.worktree} is gone; `para abort {s.name}`",
                                session=s.name)
            if await git.in_progress(s.worktree) is None and rec["kind"] in ("merge", "rebase"):
                # Resolved by hand with git commit / rebase --continue: nothing left to complete.
                stopped = []
            else:
                sides = [side for side in (":2", ":3", rec.get("pre"), rec.get("old")) if side]
                picks: list[str] = []
                if rec["kind"] == "rebase" and rec.get("pre") and rec.get("old"):
                    picks = (await git.out(repo.root, "rev-list", f"{rec['old']}..{rec['pre']}")).split()
                try:
                    stopped = await integrate.continue_in(s.worktree, rec["kind"], rec["files"],
                                                          rec.get("hunks") or {}, sides, force=p.force, picks=picks)
                except ParaError as e:  # the refusal names where to resolve, for every front end's hint
                    e.data.setdefault("session", s.name)
                    e.data.setdefault("worktree", s.worktree)
                    raise
            if stopped:
                s.status = Status.integrating  # _pause expects to move from an in-flight state
                await self._pause(repo, s, rec["kind"], stopped)
            self.emit(repo, "continued", s.name, target=rec["target"])
            rec["resume_status"] = Status.active.value
            return await self._land(repo, s, cfg)

    async def abort(self, p: SessionParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        async with self._locked(repo, p.session, p.cwd) as s:
            self._require(s, Status.conflicted, "abort")
            rec = recorded(s)
            saved = None
            if os.path.isdir(s.worktree):
                if await git.status(s.worktree):
                    snap = await git.snapshot(s.worktree, f"para: conflict resolution in progress in {s.name}")
                    saved = {"ref": await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-aborted",
                                                         snap), "commit": snap}
                await integrate.abort_in(s.worktree, rec["pre"])
            else:
                await git.update_ref(repo.root, f"refs/heads/{s.branch}", rec["pre"])
            s.status, s.integration = Status.active, None
            repo.store.save(s)
        self.emit(repo, "aborted", s.name, restored=rec["pre"], saved=saved)
        result = await self._show(repo, s, p.cwd)
        result["restored"], result["saved"] = rec["pre"], saved
        result["warnings"] = [f"the conflict resolution in progress was saved under {saved['ref']}"] if saved else []
        return result

    async def _session_commit(self, s: Session) -> tuple[str | None, bool]:
        """The session's work as one commit: a snapshot when its worktree is dirty."""
        if os.path.isdir(s.worktree):
            try:
                if await git.status(s.worktree):
                    return await git.snapshot(s.worktree, f"para: forecast snapshot of {s.name}"), True
                return await git.out(s.worktree, "rev-parse", "HEAD"), False
            except ParaError:
                pass
        return s.head_commit, False

    async def _predict(self, repo: Repo, s: Session, target: str, strategy: str,
                       message: str | None) -> dict[str, Any]:
        old = await git.resolve(repo.root, f"refs/heads/{target}")
        if old is None:  # checked by the caller; deleted since
            raise ParaError(Code.not_found, f"target branch {target!r} does not exist", branch=target)
        tip, dirty = await self._session_commit(s)
        if tip is None:
            tip = await git.resolve(repo.root, f"refs/heads/{s.branch}")
        if tip is None:
            raise ParaError(Code.not_found, f"session {s.name!r} has no branch to integrate", session=s.name)
        result: dict[str, Any] = {"dry_run": True, "session": s.name, "target": target, "strategy": strategy,
                                  "target_commit": old, "includes_uncommitted": dirty}
        try:
            cand = await integrate.candidate(repo.root, "merge" if strategy == "rebase" else strategy,
                                             old, tip, message or "dry run")
        except ParaError as e:
            return {**result, "clean": False, "error": e.message, "conflicts": [], "hunks": {}}
        fork = await git.merge_base(repo.root, old, tip)
        log_ = (await git.out(repo.root, "log", "--format=%H%x00%s", f"{fork}..{tip}")) if fork else ""
        result.update(clean=cand.clean, conflicts=cand.conflicts, hunks=cand.hunks,
                      commits=[dict(zip(("sha", "subject"), line.split("\0", 1))) for line in log_.splitlines()],
                      noop=cand.clean and cand.commit == old)
        if cand.clean and cand.tree:
            result["diffstat"] = (await git.out(repo.root, "diff", "--stat", old, cand.tree))
        if strategy == "rebase":
            result["note"] = "rebase replays commit by commit; the forecast is that of merging the result"
        return result

    async def conflicts(self, p: ConflictsParams) -> dict[str, Any]:
        """Which active sessions will collide with each other or with their target,
        uncommitted work included, before anyone integrates.

        Linear in the number of sessions where they touch different files: each session's
        changed paths are computed once (since a common ancestor of them all) and only pairs
        whose paths meet are merged; every answer is kept by commit ids, and a clean
        worktree's commit or a dirty one's snapshot by what could change it (`_dirty`), so
        asking again with nothing changed costs almost no git."""
        repo = await self.repo(p.cwd)
        target = validate_branch_name(p.target, "target branch") if p.target is not None else None
        if target is not None and await git.resolve(repo.root, f"refs/heads/{target}") is None:
            raise ParaError(Code.not_found, f"target branch {target!r} does not exist", branch=target)
        sessions = [s for s in repo.store.live() if s.status in (Status.active, Status.review, Status.conflicted)]
        sem = asyncio.Semaphore(STATUS_CONCURRENCY)
        wts = await self._worktree_state(repo)
        present = {s.name: (s.worktree, wt) for s in sessions
                   if (wt := wts.get(os.path.realpath(s.worktree))) is not None and not wt.prunable
                   and wt.head and os.path.isdir(s.worktree)}
        dirty = await self._dirty(repo, list(present.values()))

        async def snap(s: Session) -> tuple[str | None, bool]:
            if s.name not in present:
                commit, is_dirty = await self._session_commit(s)
                return commit or await git.resolve(repo.root, f"refs/heads/{s.branch}"), is_dirty
            path, wt = present[s.name]
            if not dirty.get(path):
                return wt.head, False
            known = self._dirty_cache.get(wt.path)
            kept = self._snapshots.get(wt.path)
            if known is not None and kept is not None and kept[0] == known[0]:
                return kept[1], True
            async with sem:
                commit, is_dirty = await self._session_commit(s)
            if known is not None and commit and is_dirty:
                self._snapshots[wt.path] = (known[0], commit)
            return commit or await git.resolve(repo.root, f"refs/heads/{s.branch}"), is_dirty

        snaps = dict(zip([s.name for s in sessions], await asyncio.gather(*(snap(s) for s in sessions))))
        settings = self._merge_settings(repo)  # (kept forecasts hold only while these are unchanged)
        tips: dict[str, str | None] = {}
        for s in sessions:
            t = target or s.base_branch
            if t not in tips:
                tips[t] = await git.resolve(repo.root, f"refs/heads/{t}")

        async def forecast(a: str, b: str) -> tuple[bool, list[str], dict[str, list[list[int]]]] | None:
            """None when the two have no history in common (nothing to forecast; one such pair
            must not hide the forecast of all the others)."""
            if (settings, a, b) in self._forecasts:
                return self._forecasts[(settings, a, b)]
            async with sem:
                try:
                    clean, tree, files = await git.merge_tree(repo.root, a, b)
                except ParaError as e:
                    if not e.data.get("unrelated"):
                        raise
                    answer = None
                else:
                    answer = clean, files, (await integrate.tree_hunks(repo.root, tree, files)) if files else {}
            self._forecasts[(settings, a, b)] = answer
            return answer

        commits = {name: commit for name, (commit, _) in snaps.items() if commit}
        usable = [s for s in sessions if s.name in commits]
        # (session, its target's tip) for the sessions whose target exists
        against = [(s, tip) for s in usable if (tip := tips[target or s.base_branch])]
        vs_target = await asyncio.gather(*(forecast(tip, commits[s.name]) for s, tip in against))
        pairs = await self._pairs_that_may_collide(repo, usable, commits, sem)
        vs_pairs = await asyncio.gather(*(forecast(commits[a.name], commits[b.name]) for a, b in pairs))
        if len(self._forecasts) > 20_000:
            self._forecasts.clear()
        report = []
        for (s, _), fc in zip(against, vs_target):
            clean, files, hunks = fc or (False, [], {})
            report.append({"session": s.name, "target": target or s.base_branch, "commit": commits[s.name],
                           "includes_uncommitted": snaps[s.name][1], "clean": clean, "files": files,
                           "hunks": hunks, "unrelated": fc is None})
        collisions = [{"a": a.name, "b": b.name, "files": fc[1], "hunks": fc[2]}
                      for (a, b), fc in zip(pairs, vs_pairs) if fc is not None and not fc[0]]
        unrelated = [{"a": a.name, "b": b.name} for (a, b), fc in zip(pairs, vs_pairs) if fc is None]
        return {"sessions": report, "pairs": collisions, "unrelated": unrelated,
                "clean": all(r["clean"] for r in report) and not collisions}

    async def _pairs_that_may_collide(self, repo: Repo, usable: list[Session], commits: dict[str, str],
                                      sem: asyncio.Semaphore) -> list[tuple[Session, Session]]:
        """The pairs of sessions whose merge can conflict, from what each changed since a
        common ancestor of them all: both changed one path; one changed a path the other has
        as a directory (file/directory); one deleted in a directory the other added to (a
        directory renamed on one side). A path one side left as it was merges cleanly. Where
        they share no history, every pair, as merge-tree is what says so."""
        every = [(a, b) for i, a in enumerate(usable) for b in usable[i + 1:]]
        ids = sorted({commits[s.name] for s in usable})
        if len(ids) < 2:
            return every
        base = self._bases.get(tuple(ids)) or await git.merge_base_all(repo.root, ids)
        if base is None:
            return every
        if len(self._bases) > 1000:
            self._bases.clear()
        self._bases[tuple(ids)] = base

        async def paths(commit: str) -> dict[str, str]:
            if (base, commit) not in self._changed_paths:
                async with sem:
                    self._changed_paths[(base, commit)] = await git.changed_path_kinds(repo.root, base, commit)
            return self._changed_paths[(base, commit)]
        changed = dict(zip(ids, await asyncio.gather(*(paths(c) for c in ids))))
        if len(self._changed_paths) > 20_000:
            self._changed_paths.clear()
        # Index what each changed, so the pairs come from shared keys instead of from every pair.
        index: dict[tuple[str, str], list[int]] = {}  # (kind of key, key) -> sessions
        for i, s in enumerate(usable):
            keys: set[tuple[str, str]] = set()
            for path, kind in changed[commits[s.name]].items():
                keys.add(("path", path))
                parent = os.path.dirname(path)
                if kind in "AD":
                    keys.add(("added in" if kind == "A" else "deleted in", parent))
                while parent:
                    keys.add(("dir", parent))
                    parent = os.path.dirname(parent)
            for k in keys:
                index.setdefault(k, []).append(i)
        meet: set[tuple[int, int]] = set()

        def pair(xs: list[int], ys: list[int]) -> None:
            for i in xs:
                for j in ys:
                    if i != j:
                        meet.add((min(i, j), max(i, j)))
        for (what, name), holders in index.items():
            if what == "path":
                pair(holders, holders)
                pair(holders, index.get(("dir", name), []))
            elif what == "deleted in":
                pair(holders, index.get(("added in", name), []))
        return [(usable[i], usable[j]) for i, j in sorted(meet)]


def _branch_file_names_one(repo: Repo, branch: str) -> bool:
    """Whether `branch` is there by its loose ref file (no git process). (One naming an object
    that is not a commit is refused in the queue, where the target is read, before it moves.)"""
    try:
        git.branch_file(repo.common_dir, branch)
    except LookupError:
        return False
    return True


GROUP_LIMIT = 64  # integrations landed together at most (one journal entry each)


async def _delete_branch(repo: Repo, branch: str, kept: str | None) -> str | None:
    """git.delete_branch under the repository's lock, where the branches of integrations landed
    together meet: whoever gets the lock deletes those waiting for it too, in one `git branch -D`
    (one after the other they would hold the lock, and their owners' answers, a git process each)."""
    mine: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    repo.deleting[branch] = (kept, mine)
    try:
        async with repo.lock:
            if not mine.done():
                # (Its own is there unless a batch that took it failed: then it goes again, here.)
                batch = {**repo.deleting, branch: (kept, mine)}
                repo.deleting.clear()
                got = await git.delete_branches(repo.root, {b: k for b, (k, _) in batch.items()})
                for b, (_, fut) in batch.items():
                    r = got[b]
                    if isinstance(r, ParaError):
                        fut.set_exception(r)
                    else:
                        fut.set_result(r)
    finally:
        entry = repo.deleting.get(branch)
        if entry is not None and entry[1] is mine:  # (cancelled while it waited)
            del repo.deleting[branch]
    return mine.result()


def _integrated_ref(s: Session) -> str:
    """Where the session branch's tip is kept once it has landed (`<stamp>-integrated`)."""
    return f"refs/para/backup/{s.name}/{recorded(s)['stamp']}-integrated"


def _free_backups(repo: Repo, wanted: dict[str, str]) -> dict[str, str]:
    """Of `wanted` ({ref: commit}), those nothing is in the way of by the ref files: made
    with the move of the target. The rest (all, when the files cannot say) are made after,
    by create_ref, which finds a free name."""
    try:
        packed = git.packed_names(repo.common_dir)
        return {ref: sha for ref, sha in wanted.items()
                if git.in_the_way_in_files(repo.common_dir, ref, packed) is None
                and git.writing_in_the_way(repo.common_dir, ref) is None}
    except LookupError:
        return {}


def _note_move(d: dict[str, Any], moved: integrate.Advanced, keep: dict[str, str], ref: str, alone: bool) -> None:
    """Journal what `_after_landing` then need not ask git: the backup made with the move, and
    whether the project file changed. (Landed with others, and the group's old..new changes
    it: which of them did is asked of each. One that changed it back would hide it: that the
    group's changes lack it says nothing changed it for good.)"""
    if moved.kept and ref in keep:
        d["kept"] = ref
    if moved.changes is not None and (alone or config.PROJECT_FILE not in moved.changes):
        d["config_changed"] = config.PROJECT_FILE in moved.changes


@dataclass
class _Landing:
    """One integration waiting in its target's queue."""

    s: Session
    cfg: dict[str, Any]
    landed: asyncio.Future[tuple[str, str]]  # (new, old): set by whoever landed it
    alone: bool = False  # lands by itself, in its turn


async def _turn(lock: asyncio.Lock, landed: asyncio.Future[Any]) -> bool:
    """Wait for `lock` (True: held, for the caller to release) or for `landed` to be set
    (False), whichever comes first. One that stops waiting keeps no place in the queue and
    holds no lock (asyncio.Lock hands a turn given meanwhile to the next waiter)."""
    acquiring = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait((acquiring, landed), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # (cancelled: a turn given meanwhile is handed on)
        acquiring.cancel()
        acquiring.add_done_callback(lambda t: None if t.cancelled() else lock.release())
        raise
    if not acquiring.done():
        acquiring.cancel()
        await asyncio.wait((acquiring,))  # (not `await acquiring`: its cancellation is not ours)
    if acquiring.cancelled():
        return False
    if landed.done():
        lock.release()
        return False
    return True


def _can_go_together(w: _Landing) -> bool:
    """No check to run on it (each would need the commit it lands), no host it lives on."""
    return not w.cfg["integrate.check"] and not remote(w.s.agent)


async def _nothing() -> None:
    return None


async def _by_path(listed: list[git.Worktree]) -> dict[str, git.Worktree]:
    """A `git worktree list` already read, as `_worktree_state` gives it."""
    return {w.path: w for w in listed}
