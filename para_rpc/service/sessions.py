"""The session lifecycle: start, list, show, finish, cancel, recover, resume, clean.

Each multi-step operation records an `Op` on the session before its first step and clears
it after the last; its `_do_*` half is written to be safe to run again (see repair.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any

from para_rpc import git
from para_rpc.errors import Code, ParaError
from para_rpc.model import Op, Session, Status, to_builtins
from para_rpc.names import friendly_name, validate_branch_name, validate_session_name
from para_rpc.params import (CancelParams, CleanParams, FinishParams, IntegrateParams, ListParams,
                             SessionParams, StartParams)
from para_rpc.service.core import WIP_MESSAGE, Repo, ServiceCore, _check_message, _utc_stamp


class Sessions(ServiceCore):
    """The session lifecycle operations."""

    async def start(self, p: StartParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        name = validate_session_name(p.name) if p.name is not None else None
        base, base_commit = await self._base(repo, p.base, cfg)
        prefix = cfg["branch_prefix"]
        async with repo.lock:
            taken_branches = {r[len("refs/heads/"):] for r in await git.refs(repo.root, f"refs/heads/{prefix}/")}

            def taken(n: str) -> bool:
                return (repo.store.get(n) is not None or f"{prefix}/{n}" in taken_branches
                        or os.path.lexists(os.path.join(repo.worktrees_dir, n)))

            if name is None:
                name = friendly_name(taken)
            existing = repo.store.get(name)
            if existing is not None:
                hint = ("`para recover " + name + "` brings it back" if existing.status is Status.cancelled
                        else "`para resume " + name + "` reopens it")
                raise ParaError(Code.already_exists, f"session {name!r} already exists ({existing.status.value}); "
                                f"{hint}, or choose another name", session=name)
            branch = f"{prefix}/{name}"
            path = os.path.join(repo.worktrees_dir, name)
            if branch in taken_branches:
                raise ParaError(Code.already_exists, f"branch {branch!r} already exists; `para recover {name}` "
                                f"or `para resume {name}` may adopt it, or delete it with `git branch -D {branch}`",
                                branch=branch)
            if os.path.lexists(path):
                raise ParaError(Code.already_exists, f"worktree path {path} already exists; "
                                "move it away or run `para clean`", path=path)
            s = Session(name=name, branch=branch, worktree=path, base_branch=base, base_commit=base_commit,
                        op=Op(kind="start"))
            repo.store.save(s)
            try:
                await git.add_worktree(repo.root, path, branch, new_at=base_commit)
            except BaseException:
                await self._undo_start(repo, s)
                raise
            s.op = None
            repo.store.save(s)
        self.emit(repo, "started", name, branch=branch, worktree=path, base=base)
        return self._known(repo, s, p.cwd, worktree=True, ahead=0)

    async def _undo_start(self, repo: Repo, s: Session) -> None:
        """Remove what a failed or interrupted start created; nothing there is anyone's work yet."""
        wts = await self._worktree_state(repo)
        if s.worktree in wts:
            await git.remove_worktree(repo.root, s.worktree)
        if os.path.isdir(s.worktree):
            shutil.rmtree(s.worktree)
        await git.prune_worktrees(repo.root)
        if await git.resolve(repo.root, f"refs/heads/{s.branch}") == s.base_commit:
            await git.delete_branch(repo.root, s.branch)
        repo.store.delete(s)

    async def list(self, p: ListParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        sessions = repo.store.all() if p.all else [
            s for s in repo.store.live() if s.status is not Status.cancelled]
        wts, branches = await asyncio.gather(self._worktree_state(repo), git.refs(repo.root, "refs/heads/"))
        await self._adopt_out_of_band(repo, sessions, wts)
        active = [s.worktree for s in sessions if s.status is Status.active and s.worktree in wts]
        dirty = await self._dirty(active)
        cwd = os.path.realpath(p.cwd)
        current = self._session_at(repo, cwd)
        infos = [self._info(repo, s, wts, branches, dirty.get(s.worktree, False),
                            cwd if current is not None and current.id == s.id else None) for s in sessions]
        return {"repo": repo.root, "current": current.name if current else None,
                "sessions": to_builtins(infos)}

    async def _adopt_out_of_band(self, repo: Repo, sessions: list[Session],
                                 wts: dict[str, git.Worktree]) -> None:
        """Record changes made behind para's back instead of overwriting them."""
        for s in sessions:
            wt = wts.get(s.worktree)
            if s.status is not Status.active or s.op is not None or wt is None:
                continue
            if wt.branch and wt.branch != s.branch:
                note = f"branch renamed outside para: {s.branch} -> {wt.branch} (adopted)"
                s.notes.append(note)
                s.branch = wt.branch
                repo.store.save(s)
                self.emit(repo, "adopted", s.name, note=note)

    async def _show(self, repo: Repo, s: Session, cwd: str) -> dict[str, Any]:
        wts, branches = await asyncio.gather(self._worktree_state(repo), git.refs(repo.root, "refs/heads/"))
        info = self._info(repo, s, wts, branches, cwd=os.path.realpath(cwd))
        result = to_builtins(info)
        tip = s.branch if info.branch_exists else (s.archived_branch or s.head_commit)
        if info.worktree_exists:
            result["dirty"] = bool(await git.status(s.worktree))
            if s.status is Status.active and result["dirty"]:
                result["state"] = "dirty"
        if tip and await git.resolve(repo.root, tip):
            result["ahead"] = await git.count(repo.root, f"{s.base_commit}..{tip}")
            result["commits"] = await asyncio.to_thread(git.commit_log, repo.root, f"{s.base_commit}..{tip}")
            stat = await git.run(repo.root, "diff", "--shortstat", s.base_commit, tip)
            result["diffstat"] = stat.out.strip()
        return result

    def _known(self, repo: Repo, s: Session, cwd: str, *, worktree: bool,
               ahead: int | None = None) -> dict[str, Any]:
        """A session's info right after an operation that just established the git facts
        (no git process: start and cancel stay close to raw git's cost)."""
        branch = s.branch if s.status is not Status.cancelled else s.archived_branch
        tip = s.head_commit or s.base_commit
        wts = {s.worktree: git.Worktree(s.worktree, tip, s.branch)} if worktree else {}
        result = to_builtins(self._info(repo, s, wts, {f"refs/heads/{branch}": (tip, 0)},
                                        cwd=os.path.realpath(cwd)))
        result["ahead"] = ahead
        if ahead == 0:
            result.update(commits=[], diffstat="")
        return result

    async def show(self, p: SessionParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        return await self._show(repo, self._find(repo, p.session, p.cwd, history=True), p.cwd)

    async def finish(self, p: FinishParams) -> dict[str, Any]:
        if p.integrate:
            if p.branch is not None or p.squash is not None:
                raise ParaError(Code.invalid_input, "--integrate lands the work on the base branch; "
                                "it cannot be combined with --branch or --squash/--no-squash")
            return await self.integrate(IntegrateParams(cwd=p.cwd, env=p.env, session=p.session,
                                                        message=p.message))
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        message = _check_message(p.message)
        new_branch = validate_branch_name(p.branch) if p.branch is not None else None
        async with self._locked(repo, p.session, p.cwd) as s:
            self._require(s, Status.active, "finish")
            wt = (await self._worktree_state(repo)).get(s.worktree)
            if wt is None or not os.path.isdir(s.worktree):
                raise ParaError(Code.wrong_state, f"the worktree of {s.name!r} is missing; "
                                f"`para resume {s.name}` recreates it from its branch", session=s.name)
            if wt.branch is None:
                raise ParaError(Code.wrong_state, f"HEAD is detached in {s.worktree}; "
                                f"check out {s.branch} there first", session=s.name)
            if new_branch and new_branch != s.branch and await git.branch_exists(repo.root, new_branch):
                raise ParaError(Code.already_exists, f"branch {new_branch!r} already exists", branch=new_branch)
            squash = cfg["finish.squash"] if p.squash is None else p.squash
            fork = await git.merge_base(s.worktree, f"refs/heads/{s.base_branch}", "HEAD") or s.base_commit
            if not await git.status(s.worktree) and await git.count(s.worktree, f"{fork}..HEAD") == 0:
                raise ParaError(Code.nothing_to_do, f"session {s.name!r} has no changes to finish; "
                                f"`para cancel {s.name}` closes it", session=s.name)
            s.op = Op(kind="finish", data={"message": message, "squash": squash, "branch": new_branch,
                                           "stamp": _utc_stamp()})
            repo.store.save(s)
            self.busy += 1
            try:
                await self._do_finish(repo, s)
            finally:
                self.busy -= 1
        self.emit(repo, "finished", s.name, branch=s.branch, commit=s.head_commit)
        self._agent_session_ended(repo, s)
        return await self._show(repo, s, p.cwd)

    async def _do_finish(self, repo: Repo, s: Session) -> None:
        d = s.op.data
        if os.path.isdir(s.worktree):
            await git.stage_all(s.worktree)
            if await git.has_staged(s.worktree):
                await git.commit(s.worktree, d["message"])
            fork = await git.merge_base(s.worktree, f"refs/heads/{s.base_branch}", "HEAD") or s.base_commit
            n = await git.count(s.worktree, f"{fork}..HEAD")
            last = (await git.out(s.worktree, "log", "-1", "--format=%B")).strip() if n else ""
            if d["squash"] and (n > 1 or (n == 1 and last != d["message"])):
                head = await git.out(s.worktree, "rev-parse", "HEAD")
                await git.update_ref(repo.root, f"refs/para/backup/{s.name}/{d['stamp']}-finish", head)
                await git.reset_soft(s.worktree, fork)
                await git.commit(s.worktree, d["message"])
            left = await git.status(s.worktree)
            if left:
                raise ParaError(Code.dirty, f"could not commit everything in {s.worktree} "
                                f"(for example {left[0][3:]!r}); the worktree is kept", session=s.name)
            s.head_commit = await git.out(s.worktree, "rev-parse", "HEAD")
            async with repo.lock:
                await git.remove_worktree(repo.root, s.worktree)
        else:
            s.head_commit = await git.resolve(repo.root, f"refs/heads/{s.branch}") or s.head_commit
        if d.get("branch") and d["branch"] != s.branch:
            async with repo.lock:
                if await git.branch_exists(repo.root, s.branch):
                    await git.rename_branch(repo.root, s.branch, d["branch"])
            s.branch = d["branch"]
        s.status, s.op = Status.review, None
        repo.store.save(s)

    async def cancel(self, p: CancelParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        async with self._locked(repo, p.session, p.cwd) as s:
            self._require(s, (Status.active, Status.review, Status.conflicted), "cancel")
            stamp = _utc_stamp()
            archive = f"{cfg['branch_prefix']}/archived/{stamp}/{s.name}"
            n = 2
            while await git.branch_exists(repo.root, archive):
                archive = f"{cfg['branch_prefix']}/archived/{stamp}-{n}/{s.name}"
                n += 1
            s.op = Op(kind="cancel", data={"archive": archive, "discard": p.discard, "stamp": stamp})
            repo.store.save(s)
            self.busy += 1
            try:
                saved = await self._do_cancel(repo, s)
            finally:
                self.busy -= 1
        self.emit(repo, "cancelled", s.name, archived_branch=s.archived_branch, saved=saved)
        self._agent_session_ended(repo, s)
        result = self._known(repo, s, p.cwd, worktree=False)
        result["saved"] = saved
        return result

    async def _do_cancel(self, repo: Repo, s: Session) -> dict[str, str] | None:
        """Save the work, archive the branch, remove the worktree. Returns what was saved where."""
        d = s.op.data
        saved = None
        if await self._has_worktree(repo, s):
            if await git.status(s.worktree):
                if d["discard"]:
                    snap = await git.snapshot(s.worktree, f"para: uncommitted work of {s.name} discarded by cancel")
                    ref = f"refs/para/backup/{s.name}/{d['stamp']}-discarded"
                    await git.update_ref(repo.root, ref, snap)
                    saved = {"ref": ref, "commit": snap}
                else:
                    await git.stage_all(s.worktree)
                    sha = await git.commit(s.worktree, WIP_MESSAGE, verify=False)
                    saved = {"branch": d["archive"], "commit": sha}
            async with repo.lock:
                await git.remove_worktree(repo.root, s.worktree)
        async with repo.lock:
            if await git.branch_exists(repo.root, s.branch):
                s.head_commit = await git.resolve(repo.root, f"refs/heads/{s.branch}")
                await git.rename_branch(repo.root, s.branch, d["archive"])
        s.archived_branch = d["archive"]
        s.status, s.op = Status.cancelled, None
        repo.store.save(s)
        return saved

    async def recover(self, p: SessionParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        prefix = cfg["branch_prefix"]
        async with repo.lock:
            archives = await git.refs(repo.root, f"refs/heads/{prefix}/archived/")
        if p.session is None:
            cancelled = [s for s in repo.store.live() if s.status is Status.cancelled]
            if not cancelled:
                raise ParaError(Code.not_found, "there is no cancelled session to recover")
            if len(cancelled) > 1:
                raise ParaError(Code.invalid_input, "several cancelled sessions: "
                                + ", ".join(s.name for s in cancelled) + "; name the one to recover",
                                sessions=[s.name for s in cancelled])
            name = cancelled[0].name
        else:
            name = validate_session_name(p.session)
        async with repo.session_lock(name):
            s = repo.store.get(name)
            if s is None:
                # An archive without a record (made by Para itself, or state lost): adopt the newest.
                found = sorted(r for r in archives if r.rsplit("/", 1)[-1] == name)
                if not found:
                    raise ParaError(Code.not_found, f"no cancelled session or archived branch named {name!r}",
                                    session=name)
                archive = found[-1][len("refs/heads/"):]
                base, base_commit = await self._base(repo, None, cfg)
                s = Session(name=name, branch=f"{prefix}/{name}", base_branch=base,
                            worktree=os.path.join(repo.worktrees_dir, name),
                            base_commit=await git.merge_base(repo.root, base_commit, archive) or base_commit,
                            status=Status.cancelled, archived_branch=archive,
                            notes=[f"adopted from archived branch {archive}"])
            elif s.status is not Status.cancelled:
                raise ParaError(Code.wrong_state, f"session {name!r} is {s.status.value}, not cancelled; "
                                f"`para resume {name}` reopens it", session=name)
            elif s.archived_branch and f"refs/heads/{s.archived_branch}" not in archives:
                # `clean --force` deleted the archive but kept its commits under a backup ref.
                kept = await git.refs(repo.root, "refs/para/backup/clean/")
                found = sorted(r for r in kept if r.endswith("/" + s.archived_branch))
                if not found:
                    raise ParaError(Code.not_found, f"the archived branch {s.archived_branch} of {name!r} "
                                    "no longer exists and no backup of it is left", session=name)
                async with repo.lock:
                    await git.create_branch(repo.root, s.archived_branch, kept[found[-1]][0])
            branch = f"{prefix}/{name}"
            if await git.branch_exists(repo.root, branch):
                raise ParaError(Code.already_exists, f"branch {branch!r} already exists; rename or delete it "
                                "before recovering", branch=branch)
            path = os.path.join(repo.worktrees_dir, name)
            if os.path.lexists(path):
                raise ParaError(Code.already_exists, f"path {path} already exists; move it away first", path=path)
            s.branch, s.worktree = branch, path
            s.op = Op(kind="recover")
            repo.store.save(s)
            await self._do_recover(repo, s)
        self.emit(repo, "recovered", name, branch=s.branch, worktree=s.worktree)
        return await self._show(repo, s, p.cwd)

    async def _do_recover(self, repo: Repo, s: Session) -> None:
        async with repo.lock:
            if s.archived_branch and await git.branch_exists(repo.root, s.archived_branch):
                await git.rename_branch(repo.root, s.archived_branch, s.branch)
            if not await self._has_worktree(repo, s):
                await git.prune_worktrees(repo.root)
                await git.add_worktree(repo.root, s.worktree, s.branch)
        s.archived_branch, s.status, s.op = None, Status.active, None
        repo.store.save(s)

    async def resume(self, p: SessionParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        if p.session is not None and repo.store.get(validate_session_name(p.session)) is None:
            await self._adopt_branch(repo, p.session, repo.config(p.env))
        async with self._locked(repo, p.session, p.cwd) as s:
            if s.status is Status.cancelled:
                raise ParaError(Code.wrong_state, f"session {s.name!r} is cancelled; `para recover {s.name}` "
                                "brings it back", session=s.name)
            recreated = False
            if not await self._has_worktree(repo, s):
                if not await git.branch_exists(repo.root, s.branch):
                    raise ParaError(Code.not_found, f"neither the worktree nor the branch {s.branch!r} of "
                                    f"{s.name!r} exists; nothing to resume", session=s.name)
                if os.path.lexists(s.worktree):
                    raise ParaError(Code.already_exists, f"{s.worktree} exists but is not a worktree of "
                                    "this repository; move it away first", path=s.worktree)
                s.op = Op(kind="resume")
                repo.store.save(s)
                await self._do_resume(repo, s)
                recreated = True
        if recreated:
            self.emit(repo, "resumed", s.name, worktree=s.worktree)
        result = await self._show(repo, s, p.cwd)
        result["recreated"] = recreated
        return result

    async def _adopt_branch(self, repo: Repo, name: str, cfg: dict[str, Any]) -> None:
        """Take a `<prefix>/<name>` branch that no session owns (left by Para, or by a lost
        store) under para as a session in review; resume then gives it a worktree."""
        branch = f"{cfg['branch_prefix']}/{name}"
        tip = await git.resolve(repo.root, f"refs/heads/{branch}")
        if tip is None:
            return  # nothing to adopt: _find reports the unknown session
        base, base_tip = await self._base(repo, None, cfg)
        s = Session(name=name, branch=branch, worktree=os.path.join(repo.worktrees_dir, name), base_branch=base,
                    base_commit=await git.merge_base(repo.root, base_tip, tip) or base_tip,
                    status=Status.review, head_commit=tip, notes=[f"adopted existing branch {branch}"])
        repo.store.save(s)
        self.emit(repo, "adopted", name, branch=branch)

    async def _do_resume(self, repo: Repo, s: Session) -> None:
        async with repo.lock:
            if not await self._has_worktree(repo, s):
                await git.prune_worktrees(repo.root)
                await git.add_worktree(repo.root, s.worktree, s.branch)
        if s.status is Status.review:
            s.status = Status.active
        s.op = None
        repo.store.save(s)

    async def clean(self, p: CleanParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        prefix = cfg["branch_prefix"]
        actions: list[dict[str, Any]] = []
        kept: list[dict[str, Any]] = []
        async with repo.lock:
            wts = await self._worktree_state(repo)
            heads = await git.refs(repo.root, "refs/heads/")
            live = repo.store.live()
            prunable = [w.path for w in wts.values() if w.prunable]
            if prunable:
                actions.append({"kind": "prune_worktrees", "paths": prunable,
                                "reason": "worktree directories that no longer exist"})
            for s in live:
                if s.op is not None:
                    continue
                has_branch = f"refs/heads/{s.branch}" in heads or (
                    s.archived_branch and f"refs/heads/{s.archived_branch}" in heads)
                has_wt = s.worktree in wts and not wts[s.worktree].prunable
                if not has_branch and not has_wt:
                    actions.append({"kind": "forget_session", "session": s.name,
                                    "reason": "neither its branch nor its worktree exists"})
            known = {s.branch for s in live} | {s.archived_branch for s in live if s.archived_branch}
            cutoff = time.time() - cfg["clean.archive_days"] * 86400
            base_tip = await self._base_for_clean(repo, cfg)
            for ref, (sha, ts) in heads.items():
                branch = ref[len("refs/heads/"):]
                if not branch.startswith(prefix + "/"):
                    continue
                archived = branch.startswith(f"{prefix}/archived/")
                if archived and ts > cutoff:
                    continue
                if not archived and branch in known:
                    continue
                integrated = base_tip is not None and await git.is_integrated(repo.root, sha, base_tip)
                entry = {"kind": "delete_branch", "branch": branch, "commit": sha,
                         "reason": ("archived more than %d days ago" % cfg["clean.archive_days"]) if archived
                         else "a para branch no session owns", "integrated": integrated}
                if integrated or p.force:
                    actions.append(entry)
                else:
                    kept.append({**entry, "why_kept": "holds commits not in the base branch (use --force)"})
            backup_cutoff = time.time() - cfg["clean.backup_days"] * 86400
            for ref, (sha, ts) in (await git.refs(repo.root, "refs/para/backup/")).items():
                if ts < backup_cutoff:
                    actions.append({"kind": "delete_backup", "ref": ref, "commit": sha,
                                    "reason": "backup older than %d days" % cfg["clean.backup_days"]})
            if not p.dry_run:
                await self._apply_clean(repo, actions, live)
        if actions and not p.dry_run:
            self.emit(repo, "cleaned", None, actions=len(actions))
        return {"dry_run": p.dry_run, "actions": actions, "kept": kept}

    async def _base_for_clean(self, repo: Repo, cfg: dict[str, Any]) -> str | None:
        try:
            return (await self._base(repo, None, cfg))[1]
        except ParaError:
            return None

    async def _apply_clean(self, repo: Repo, actions: list[dict[str, Any]], live: list[Session]) -> None:
        by_name = {s.name: s for s in live}
        stamp = _utc_stamp()
        for a in actions:
            if a["kind"] == "prune_worktrees":
                await git.prune_worktrees(repo.root)
            elif a["kind"] == "forget_session":
                self._agent_session_ended(repo, by_name[a["session"]], forgotten=True)
                repo.store.delete(by_name[a["session"]])
            elif a["kind"] == "delete_branch":
                if not a["integrated"]:  # forced: keep the commits reachable for the backup period
                    await git.update_ref(repo.root, f"refs/para/backup/clean/{stamp}/{a['branch']}", a["commit"])
                await git.delete_branch(repo.root, a["branch"])
            elif a["kind"] == "delete_backup":
                await git.delete_ref(repo.root, a["ref"])
