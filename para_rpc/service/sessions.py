"""The session lifecycle: start, list, show, finish, cancel, recover, resume, clean.

Each multi-step operation records an `Op` on the session before its first step and clears
it after the last; its `_do_*` half is written to be safe to run again (see repair.py).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import os
import re
import shutil
import time
from typing import TYPE_CHECKING, Any

import msgspec

from para_rpc import config, git
from para_rpc.errors import Code, ParaError
from para_rpc.model import (
    AgentRun,
    Op,
    Session,
    Status,
    journaled,
    pending,
    to_builtins,
)
from para_rpc.names import friendly_name, validate_branch_name, validate_session_name
from para_rpc.params import (
    CancelParams,
    CleanParams,
    FinishParams,
    IntegrateParams,
    ListParams,
    ReopenParams,
    RestartParams,
    ResumeParams,
    SessionParams,
    StartParams,
)
from para_rpc.results import Event, ListResult
from para_rpc.service.core import (
    WIP_MESSAGE,
    Repo,
    WorktreeFacts,
    _canonical_cwd,
    _check_message,
    _repo_files_key,
    _stat_key,
    _utc_stamp,
    log,
)
from para_rpc.service.remote import Remote, leave_placement, remote


def _dirs_key(dirs: tuple[str, ...]) -> object:
    """Each directory resolved, and which directory that is (`_stat_key`): it changes when
    one is moved, or one above it, or a link on the way is changed (a worktree's watch
    follows its directory, not its path)."""
    return tuple(os.path.realpath(d) for d in dirs), _stat_key(list(dirs))


# `<UTC stamp>` as `_utc_stamp` writes it into archive and backup ref names.
_STAMP = re.compile(r"/(\d{8}-\d{6})(?=[-/]|$)")


def _para_state_file(repo: Repo, name: str) -> str | None:
    """Para's state file for session `name`, if Para left one."""
    path = os.path.join(repo.root, ".para", "state", f"{name}.state")
    return path if os.path.lexists(path) else None


def _made_at(ref: str) -> float | None:
    """When para made an archive or backup ref, from the stamp in its name (the commit's
    own date says when the work was done, not when it was saved); None without one."""
    m = _STAMP.search(ref)
    if m is None:
        return None
    try:
        return calendar.timegm(time.strptime(m.group(1), "%Y%m%d-%H%M%S"))
    except ValueError:
        return None



def _archive_names(prefix: str, stamp: str, name: str) -> list[str]:
    """The names a cancel archives a branch under, in the order they are tried."""
    return ([f"{prefix}/archived/{stamp}{'' if n == 1 else f'-{n}'}/{name}" for n in range(1, 100)]
            + [f"{prefix}/archived-{stamp}{'' if n == 1 else f'-{n}'}/{name}" for n in range(1, 100)])


async def _first_free(repo: Repo, names: list[str]) -> tuple[str | None, str | None]:
    """The first of the branch `names` that can be made, and what is in the way of the first
    name (None when nothing is). From the loose ref files and packed-refs (no git process on
    every cancel); where those cannot say, from one listing of the refs around them. Either
    way, what no listing shows counts too (a lock file, the reflog's place: `branch -m` would
    fail there after the worktree went)."""
    first = f"refs/heads/{names[0]}"
    try:
        packed = git.packed_names(repo.common_dir)

        def in_way(ref: str) -> str | None:
            return git.in_the_way_in_files(repo.common_dir, ref, packed) or git.writing_in_the_way(repo.common_dir, ref)

        return next((a for a in names if in_way(f"refs/heads/{a}") is None), None), in_way(first)
    except LookupError:
        family = git.ref_family(first)
        near = await git.refs(repo.root, family) if family else {}

        def listed(ref: str) -> str | None:
            try:
                beside = git.writing_in_the_way(repo.common_dir, ref)
            except LookupError as e:  # (cannot be read: not chosen)
                beside = str(e)
            return ref if ref in near else git.blocking_ref(ref, near) or beside

        return next((a for a in names if listed(f"refs/heads/{a}") is None), None), listed(first)


class Sessions(Remote):
    """The session lifecycle operations."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Integration, Dispatching, Repair)
        async def integrate(self, p: IntegrateParams) -> dict[str, Any]: ...
        def _agent_session_ended(self, repo: Repo, s: Session, forgotten: bool = False) -> None: ...
        async def _repair(self, repo: Repo, s: Session) -> None: ...
        def _env_config(self, cfg: dict[str, Any]) -> dict[str, Any]: ...
        def _allocate_ports(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> None: ...
        async def _prepare(self, repo: Repo, s: Session, cfg: dict[str, Any], env_cfg: dict[str, Any],
                           keep_on_failure: bool, undone: str = ...) -> list[str]: ...
        async def _teardown(self, repo: Repo, s: Session, cfg: dict[str, Any] | None = None) -> list[str]: ...
        def _teardown_warnings(self, s: Session) -> list[str]: ...
        def _release(self, repo: Repo, s: Session) -> None: ...
        async def _prepare_reopened(self, repo: Repo, s: Session, cfg: dict[str, Any], env_cfg: dict[str, Any],
                                    keep_on_failure: bool, kind: str, before: Status, ports: list[int],
                                    archive: str | None) -> list[str]: ...
        async def _save_before_undo(self, repo: Repo, s: Session) -> str | None: ...
        async def _stop_preparing(self, repo: Repo, name: str | None, cwd: str
                                  ) -> tuple[Session, int, str] | None: ...
        async def _start_stopped(self, repo: Repo, s: Session, pid: int, since: str, cwd: str) -> dict[str, Any]: ...
        async def restart(self, p: RestartParams, executor: str | None = None) -> dict[str, Any]: ...

    async def start(self, p: StartParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        env_cfg = self._env_config(cfg)  # an unapproved project setup/copy/link/env: refused here
        name = validate_session_name(p.name) if p.name is not None else None
        base, base_commit = await self._base(repo, p.base, cfg)
        prefix = cfg["branch_prefix"]
        wdir = repo.worktrees_dir(cfg)
        async with repo.lock:
            # (All branches under the prefix only to make up a name: a named start asks of its own.)
            taken_branches = None if name is not None else \
                {r[len("refs/heads/"):] for r in await git.refs(repo.root, f"refs/heads/{prefix}/")}

            def taken(n: str) -> bool:
                return (repo.store.get(n) is not None or f"{prefix}/{n}" in (taken_branches or ())
                        or os.path.lexists(os.path.join(wdir, n)))

            if name is None:
                name = friendly_name(taken)
            existing = repo.store.get(name)
            if existing is not None:
                hint = ("`para recover " + name + "` brings it back" if existing.status is Status.cancelled
                        else "`para resume " + name + "` reopens it")
                raise ParaError(Code.already_exists, f"session {name!r} already exists ({existing.status.value}); "
                                f"{hint}, or choose another name", session=name)
            branch = f"{prefix}/{name}"
            path = os.path.join(wdir, name)
            if branch in taken_branches if taken_branches is not None else await self._branch_exists(repo, branch):
                # Never suggest deleting a branch that holds work the base lacks.
                spare = await git.is_ancestor(repo.root, f"refs/heads/{branch}", base_commit)
                raise ParaError(Code.already_exists, f"branch {branch!r} already exists; `para recover {name}` "
                                f"or `para resume {name}` may adopt it, or "
                                + (f"delete it with `git branch -D {branch}` (it holds nothing {base} lacks)" if spare
                                   else f"rename it with `git branch -m {branch} NEW` (it holds commits {base} lacks)"),
                                branch=branch)
            if os.path.lexists(path):
                raise ParaError(Code.already_exists, f"worktree path {path} already exists; "
                                "move it away or run `para clean`", path=path)
            s = Session(name=name, branch=branch, worktree=path, base_branch=base, base_commit=base_commit,
                        op=Op(kind="start"))
            self._allocate_ports(repo, s, cfg)
            repo.store.save(s)
            try:
                s.git_dir = await git.add_worktree(repo.root, path, branch, new_at=base_commit)
            except BaseException:
                await self._undo_start(repo, s)
                raise
            # The base was read from its loose ref, which names an object, not always a commit
            # (a tag written there by hand): the branch git made is at the commit it peeled to.
            with contextlib.suppress(LookupError):
                s.base_commit = git.branch_file(repo.common_dir, branch)
        # The setup may take minutes: outside the repository lock, under the session's (taken
        # with no await in between, so nothing acts on the session half made).
        async with repo.session_lock(name):
            try:
                warnings = await self._prepare(repo, s, cfg, env_cfg, p.keep_on_failure)
            except BaseException as e:
                own = isinstance(e, ParaError) and e.code is Code.setup_failed and "stopped" not in e.data
                async with repo.lock:
                    backup = await self._undo_start(repo, s, keep=not own)
                if backup and isinstance(e, ParaError):
                    e.message += f"; what the worktree held was saved under {backup}"
                    e.data["backup"] = backup
                raise
            s.op = None
            repo.store.save(s)
        self.emit(repo, "started", name, branch=branch, worktree=path, base=base)
        result = self._known(repo, s, p.cwd, worktree=True, ahead=0)
        if warnings:
            result["warnings"] = warnings
        return result

    async def _undo_start(self, repo: Repo, s: Session, keep: bool = True) -> str | None:
        """Remove what a failed or interrupted start created, after keeping what its worktree
        holds (someone may have edited there while the setup ran), unless `keep` is false (a
        setup that failed by itself: what it made is its own, and its log says why). Returns
        that backup ref."""
        backup = await self._save_before_undo(repo, s) if keep else None
        wts = await self._worktree_state(repo)
        if os.path.realpath(s.worktree) in wts and os.path.isdir(s.worktree):  # (a setup may have removed it)
            await git.remove_worktree(repo.root, s.worktree)
        if os.path.isdir(s.worktree):
            shutil.rmtree(s.worktree)
        await git.prune_worktrees(repo.root)
        if await git.resolve(repo.root, f"refs/heads/{s.branch}") == s.base_commit:
            await git.delete_branch(repo.root, s.branch)
        repo.store.delete(s)
        return backup

    async def list_sessions(self, p: ListParams) -> ListResult:
        repo = await self.repo(p.cwd)
        key = None if p.verbose else await self._list_key(repo, p)
        where = (repo.common_dir, p.all, p.cwd)
        hit = self._lists.get(where)
        if key is not None and hit is not None and hit[0] == key and _dirs_key(hit[1]) == hit[2]:
            return hit[3]  # (shared by the callers of an unchanged list: read only)
        live = repo.store.live()
        sessions = repo.store.all() if p.all else [s for s in live if s.status is not Status.cancelled]
        heads = tuple(sorted({os.path.dirname(s.worktree) for s in sessions}))
        heads_key = _dirs_key(heads)
        wts, branches = await self._listed_refs(repo)
        resolved: dict[str, str] = {}  # (the sessions' worktrees resolved from their directory's, read once)
        await self._adopt_out_of_band(repo, sessions, wts, branches, resolved)
        active = [(s.worktree, wt) for s in sessions
                  if s.status is Status.active and (wt := wts.get(git.realpath_in(s.worktree, resolved))) is not None]
        dirty = await self._dirty(repo, active)
        cwd = os.path.realpath(p.cwd)
        current = self._session_at(repo, cwd, resolved, live)
        paths = [git.realpath_in(s.worktree, resolved) for s in sessions]
        # (A paused integration keeps its worktree too: watched as an active one's, so a list
        # that shows it can be kept as well.)
        unwatched = [path for s, path in zip(sessions, paths) if s.status is not Status.active
                     and (wt := wts.get(path)) is not None and not wt.prunable and not self.watcher.watching(path)]
        if unwatched and self.watcher.available:
            await asyncio.to_thread(self._watch_all, unwatched)
        tokens = self.watcher.tokens(paths)
        infos = [self._info(repo, s, wts, branches, dirty.get(s.worktree, False),
                            cwd if current is not None and current.id == s.id else None, path, live, token)
                 for s, path, token in zip(sessions, paths, tokens)]
        if p.verbose:
            last = repo.store.last_events([s.name for s in sessions])
            for info in infos:
                ev = last.get(info.name)
                info.last_event = msgspec.convert(ev, Event) if ev else None
        result = ListResult(repo=repo.root, current=current.name if current else None, sessions=infos)
        if key is not None and self._listed_from_watched(repo, sessions, paths, tokens, wts, heads, resolved):
            if len(self._lists) > 64:  # (one per repository, `--all` and directory asked from)
                self._lists.clear()
            self._lists[where] = (key, heads, heads_key, result)
        return result

    async def _list_key(self, repo: Repo, p: ListParams) -> object:
        """What a `list` answer is made from, besides the sessions' directories (`_dirs_key`):
        the sessions stored, the branches and worktrees git lists, every event in a watched
        worktree or git directory (the watcher's generation), the configuration `git status`
        reads and its failures, and where the caller is. None when any of it is not watched.
        Taken before the answer is made: what changes meanwhile makes the next one anew."""
        listed = await self._listed_key(repo)
        generation = self.watcher.generation()
        if listed is None or generation is None:
            return None
        return (repo.store, repo.store.version(), listed, generation, _repo_files_key(repo, "info/exclude"),
                self._status_changes, os.path.realpath(p.cwd), _canonical_cwd(repo, p.cwd))

    def _listed_from_watched(self, repo: Repo, sessions: list[Session], paths: list[str],
                             tokens: list[tuple[int, int] | None], wts: dict[str, git.Worktree],
                             heads: tuple[str, ...], resolved: dict[str, str]) -> bool:
        """Whether everything a `list` answer read from outside git and the store is watched,
        so `_list_key` sees it change: each registered worktree (its files, its directory
        going), its `.git` where it was read (not a link: what a link names changes unseen),
        each active one's git directory under the common `worktrees/` (its index and HEAD), no
        link among the sessions' directories (`_dirs_key` sees those directories, not where a
        link points), and no `git status` that failed."""
        if any(resolved.get("\0" + head) != "" for head in heads):
            return False
        own = os.path.join(repo.common_dir, "worktrees") + os.sep
        for s, path, token in zip(sessions, paths, tokens):
            wt = wts.get(path)
            if wt is None or wt.prunable:
                continue  # (what it shows does not depend on its directory)
            if token is None or path in self._status_failed:
                return False
            if s.status is Status.active or s.git_dir:  # (its `.git` was read: kept only if watched, `_dotgit`)
                kept = self._dotgits.get(path)
                if kept is None or kept[0] != token:
                    return False
                # (A git dir reached through a link is watched by neither root, red team rtl:
                # only its index's stat, which `_dirty` keys on, would tell.)
                gitdir = kept[1][1]
                if s.status is Status.active and not (gitdir and gitdir.startswith(own)
                                                      and os.path.realpath(gitdir) == gitdir):
                    return False
        return True

    async def _adopt_out_of_band(self, repo: Repo, sessions: list[Session],
                                 wts: dict[str, git.Worktree],
                                 branches: dict[str, tuple[str, int]], resolved: dict[str, str]) -> None:
        """Record changes made behind para's back instead of overwriting them. A worktree on
        another branch is a rename only if the session branch is gone; otherwise HEAD simply
        left it (state `off-branch`), and the session branch still holds the session's work.
        (`resolved`: as for `git.realpath_in`, shared by the caller.)"""
        for s in sessions:
            wt = wts.get(git.realpath_in(s.worktree, resolved))
            if s.status is not Status.active or s.op is not None or wt is None:
                continue
            if wt.branch and wt.branch != s.branch and f"refs/heads/{s.branch}" not in branches \
                    and f"refs/heads/{wt.branch}" in branches:
                self._adopt_rename(repo, s, wt.branch)

    async def _show(self, repo: Repo, s: Session, cwd: str) -> dict[str, Any]:
        wts, branches = await asyncio.gather(self._worktree_state(repo), git.refs(repo.root, "refs/heads/"))
        info = self._info(repo, s, wts, branches, cwd=os.path.realpath(cwd))
        result: dict[str, Any] = to_builtins(info)
        tip = s.branch if info.branch_exists else (s.archived_branch or s.head_commit)
        if info.worktree_exists:
            result["dirty"] = bool(await git.status(s.worktree))
            if s.status is Status.active and result["dirty"] and result["state"] != "queued":
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
        wts = {os.path.realpath(s.worktree): git.Worktree(s.worktree, tip, s.branch)} if worktree else {}
        result: dict[str, Any] = to_builtins(self._info(repo, s, wts, {f"refs/heads/{branch}": (tip, 0)},
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
            if remote(s.agent):  # its work is on its host: committed there, brought home
                await self._remote_commit_and_harvest(repo, s, message)
            async with self._agent_frozen(repo, s) as frozen:
                f = await self._save_or_refuse(repo, s, "finish")
                busy = await self._busy_warnings(s) if f is not None else []
                if f is None:
                    raise ParaError(Code.wrong_state, f"the worktree of {s.name!r} is missing; "
                                    f"`para resume {s.name}` recreates it from its branch", session=s.name)
                if new_branch and new_branch != s.branch and await git.branch_exists(repo.root, new_branch):
                    raise ParaError(Code.already_exists, f"branch {new_branch!r} already exists", branch=new_branch)
                squash = cfg["finish.squash"] if p.squash is None else p.squash
                fork = await git.merge_base(s.worktree, f"refs/heads/{s.base_branch}", "HEAD") or s.base_commit
                if not f.status and await git.count(s.worktree, f"{fork}..HEAD") == 0:
                    raise ParaError(Code.nothing_to_do, f"session {s.name!r} has no changes to finish; "
                                    f"`para cancel {s.name}` closes it", session=s.name)
                s.op = Op(kind="finish", data={"message": message, "squash": squash, "branch": new_branch,
                                               "stamp": _utc_stamp()})
                repo.store.save(s)
                self.busy += 1
                try:
                    backups, pre_squash = await self._do_finish(repo, s, cfg)
                except ParaError:
                    await self._undo_refused_finish(repo, s)
                    raise
                finally:
                    self.busy -= 1
        self.emit(repo, "finished", s.name, branch=s.branch, commit=s.head_commit)
        self._agent_session_ended(repo, s)
        result = await self._show(repo, s, p.cwd)
        if backups:
            result["backups"] = backups
        result["warnings"] = ([f"the branch before the squash is kept under {pre_squash}"] if pre_squash else []) \
            + self._backup_warnings(backups) + self._frozen_warnings(frozen, s) + busy + self._teardown_warnings(s)
        return result

    async def _undo_refused_finish(self, repo: Repo, s: Session) -> None:
        """A finish refused before its worktree was removed (a rejecting pre-commit hook,
        something git cannot commit) leaves the session as it was: active, its branch at
        its tip, no pending operation. The pending marker is for crashes only."""
        d = s.op.data if s.op is not None else {}
        if s.op is None or d.get("removed"):
            return  # past the point of no return: the repair completes it
        if d.get("pre_squash") and await git.resolve(s.worktree, "HEAD") != d["pre_squash"]:
            await git.reset_soft(s.worktree, d["pre_squash"])  # the squash had moved the branch back
        s.op = None
        repo.store.save(s)

    async def _do_finish(self, repo: Repo, s: Session, cfg: dict[str, Any] | None = None
                         ) -> tuple[list[dict[str, Any]], str | None]:
        """Commit (and squash) the work, save what the worktree holds besides, remove it.
        Returns the backups `_save_worktree` made and the ref keeping the pre-squash tip.
        `cfg`: the request's configuration (the teardown it names); a repair has none."""
        d = journaled(s).data
        backups: list[dict[str, Any]] = []
        f = await self._worktree_facts(repo, s)
        if f is not None:
            problem = self._head_problem(s, f)
            if problem:  # HEAD moved away since finish began (or before its repair)
                raise ParaError(Code.wrong_state, f"cannot finish {s.name!r}: {problem}", session=s.name)
            # Before the commit: the teardown runs with the agent thawed (to stop its servers), and
            # what they write meanwhile is committed with the rest.
            await self._teardown(repo, s, cfg)
            f = await self._worktree_facts(repo, s)
            problem = self._head_problem(s, f) if f is not None else None
            if problem:
                raise ParaError(Code.wrong_state, f"cannot finish {s.name!r}: session.teardown left {problem}",
                                session=s.name)
        if f is not None:
            nested = f.nested()
            await git.stage_all(s.worktree, exclude=nested)
            if await git.has_staged(s.worktree):
                await git.commit(s.worktree, d["message"])
            fork = await git.merge_base(s.worktree, f"refs/heads/{s.base_branch}", "HEAD") or s.base_commit
            n = await git.count(s.worktree, f"{fork}..HEAD")
            last = (await git.out(s.worktree, "log", "-1", "--format=%B")).strip() if n else ""
            if d["squash"] and (n > 1 or (n == 1 and last != d["message"])):
                head = await git.out(s.worktree, "rev-parse", "HEAD")
                d["pre_squash_ref"] = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{d['stamp']}-finish",
                                                           head)
                d["pre_squash"] = head
                await git.reset_soft(s.worktree, fork)
                await git.commit(s.worktree, d["message"])
            left = [e for e in await git.status(s.worktree) if e[3:].rstrip("/") not in nested]
            if left:
                raise ParaError(Code.dirty, f"could not commit everything in {s.worktree} "
                                f"(for example {left[0][3:]!r}); the worktree is kept", session=s.name)
            s.head_commit = await git.out(s.worktree, "rev-parse", "HEAD")
            backups = await self._save_worktree(repo, s, f, d["stamp"])
            async with repo.lock:
                await git.remove_worktree(repo.root, s.worktree)
            d["removed"] = True
        else:
            s.head_commit = await git.resolve(repo.root, f"refs/heads/{s.branch}") or s.head_commit
        if d.get("branch") and d["branch"] != s.branch:
            async with repo.lock:
                if await git.branch_exists(repo.root, s.branch):
                    await git.rename_branch(repo.root, s.branch, d["branch"])
            s.branch = d["branch"]
        s.status, s.op = Status.review, None
        self._release(repo, s)  # ports and exclude lines: also when the worktree was gone before
        repo.store.save(s)
        return backups, d.get("pre_squash_ref")

    async def cancel(self, p: CancelParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        # A start still running its setup holds the session lock for as long as the setup runs
        # (up to session.setup_timeout): the setup is stopped, the start rolls back.
        preparing = await self._stop_preparing(repo, p.session, p.cwd)
        if preparing is not None and repo.store.get(preparing[0].name) is None:
            return await self._start_stopped(repo, *preparing, p.cwd)
        if p.session is not None and repo.store.get(validate_session_name(p.session)) is None:
            last = next((x for x in reversed(repo.store.all()) if x.name == p.session), None)
            if last is not None:  # an integration that ran just before this cancel (issue 9.13)
                self._refuse_integrated(last, "before this cancel arrived")
        async with self._locked(repo, p.session, p.cwd) as s:
            if s.op is not None and p.force:
                s = await self._force_clear(repo, s)
            self._require(s, (Status.active, Status.review, Status.conflicted), "cancel")
            if remote(s.agent):  # stopped on its host first, then everything it did brought home
                await self._remote_stop_and_harvest(repo, s, "cancel")
            async with self._agent_frozen(repo, s) as frozen:
                # A paused rebase detaches HEAD by design: saved, not refused.
                f = await self._save_or_refuse(repo, s, "cancel", force=p.force or s.status is Status.conflicted)
                busy = await self._busy_warnings(s) if f is not None else []
                stamp = _utc_stamp()
                archive = f"{cfg['branch_prefix']}/archived/{stamp}/{s.name}"
                # Taken: the next number. In the way (a ref named `<prefix>/archived` itself, which
                # a sandboxed agent can write under refs/heads/para/): another name, said in a
                # note, rather than a cancel refused until someone deletes that ref (rt13 RA8).
                names = _archive_names(cfg["branch_prefix"], stamp, s.name)
                # Checked before anything is removed: a rename that fails after the worktree
                # went would leave the cancel half done.
                free, in_way = await _first_free(repo, names)
                if free is None:
                    blocker = in_way or f"refs/heads/{archive}"
                    fix = (f"`git update-ref -d {blocker}` after making sure nothing needs it" if blocker.startswith("refs/")
                           else f"delete {os.path.join(repo.common_dir, blocker)} after making sure nothing needs it")
                    raise ParaError(Code.wrong_state, f"cannot cancel {s.name!r}: {blocker} is in the way of "
                                    f"its archive branch {archive} (git cannot hold both); rename or delete it "
                                    f"({fix}), then cancel again", session=s.name, ref=blocker)
                if not free.startswith(f"{cfg['branch_prefix']}/archived/"):
                    s.notes.append(f"archived as {free}: {in_way} is in the way of {archive}")
                archive = free
                s.op = Op(kind="cancel", data={"archive": archive, "discard": p.discard, "stamp": stamp})
                repo.store.save(s)
                self.busy += 1
                try:
                    saved, backups = await self._do_cancel(repo, s, f, cfg)
                except ParaError:
                    op = pending(s)  # read again: the cancel may have cleared it
                    if op is not None and not op.data.get("removed"):
                        s.op = None  # refused before the worktree went: the session stays as it was
                        repo.store.save(s)
                    raise
                finally:
                    self.busy -= 1
        self.emit(repo, "cancelled", s.name, archived_branch=s.archived_branch, saved=saved, backups=backups)
        self._agent_session_ended(repo, s)
        result = self._known(repo, s, p.cwd, worktree=False)
        result["saved"], result["backups"] = saved, backups
        result["warnings"] = (self._backup_warnings(backups) + self._frozen_warnings(frozen, s) + busy
                              + self._teardown_warnings(s))
        if saved and saved.get("branch"):
            result["warnings"].insert(0, f"uncommitted work was committed as {saved['commit'][:10]} on {saved['branch']}")
        elif saved:
            result["warnings"].insert(0, f"uncommitted work was discarded from the worktree; a snapshot of it is "
                                         f"kept under {saved['ref']}")
        return result

    async def _do_cancel(self, repo: Repo, s: Session, f: WorktreeFacts | None, cfg: dict[str, Any] | None = None
                         ) -> tuple[dict[str, str] | None, list[dict[str, Any]]]:
        """Save the work, archive the branch, remove the worktree (`f`: its facts, None when
        it has none). Returns what was saved where: the work-in-progress commit or discard
        snapshot, and the backups of `_save_worktree`."""
        d = journaled(s).data
        saved, backups = None, []
        if f is not None:
            # Before the save: the teardown runs with the agent thawed (to stop its servers), and
            # what they write meanwhile is saved with the rest: the facts are read again then.
            # With no teardown run the agent stayed frozen since `f` was read (four git
            # processes saved on every cancel).
            ran_before = d.get("teardown_done")
            await self._teardown(repo, s, cfg)
            if d.get("teardown_done") and not ran_before:
                f = await self._worktree_facts(repo, s)
        if f is not None:
            backups = await self._save_worktree(repo, s, f, d["stamp"])
            nested = f.nested()
            # With HEAD off the session branch, _save_worktree kept HEAD and the uncommitted work.
            if f.branch == s.branch and any(e[3:].rstrip("/") not in nested for e in f.status):
                if d["discard"]:
                    snap = await git.snapshot(s.worktree, f"para: uncommitted work of {s.name} discarded by cancel",
                                              exclude=nested)
                    ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{d['stamp']}-discarded", snap)
                    saved = {"ref": ref, "commit": snap}
                else:
                    await git.stage_all(s.worktree, exclude=nested)
                    if await git.has_staged(s.worktree):
                        sha = await git.commit(s.worktree, WIP_MESSAGE, verify=False)
                        saved = {"branch": d["archive"], "commit": sha}
            async with repo.lock:
                await git.remove_worktree(repo.root, s.worktree)
            d["removed"] = True
        async with repo.lock:
            try:  # (read from its ref file when that can say: a git process less on every cancel)
                tip: str | None = git.commit_in_files(repo.common_dir, s.branch,
                                                      (s.base_commit, (saved or {}).get("commit")))
            except LookupError:
                tip = await git.resolve(repo.root, f"refs/heads/{s.branch}")  # (a branch at a non-commit: None)
            if tip is not None or await git.branch_exists(repo.root, s.branch):
                s.head_commit = tip
                await self._archive(repo, s, d)
                s.archived_branch = d["archive"]
            elif not (s.archived_branch and await git.branch_exists(repo.root, s.archived_branch)):
                s.archived_branch = d["archive"]  # (an unfinished recover that never renamed keeps its archive)
        s.status, s.op = Status.cancelled, None
        self._release(repo, s)  # ports and exclude lines: also when the worktree was gone before
        s.queued = None  # a queued agent goes with it (a recovered session does not start one unasked)
        repo.store.save(s)
        await self._sweep_object_dirs(repo)  # (its sandbox's objects into the common store)
        return saved, backups

    async def _archive(self, repo: Repo, s: Session, d: dict[str, Any]) -> None:
        """Rename the session branch to its archive `d["archive"]`. The name was free when the
        cancel chose it; something may have come in its way since (a file at its reflog's
        place, which agents can write, while the worktree was being removed): then the next
        free name, journaled, rather than a cancel left half done that a retry fails alike."""
        try:
            await git.rename_branch(repo.root, s.branch, d["archive"])
            return
        except ParaError:
            prefix, _, rest = d["archive"].partition("/archived")
            free, _ = await _first_free(repo, _archive_names(prefix, d["stamp"], s.name)) if rest else (None, None)
            if free is None or free == d["archive"]:
                raise
        s.notes.append(f"archived as {free}: {d['archive']} could no longer be made")
        d["archive"] = free
        repo.store.save(s)
        await git.rename_branch(repo.root, s.branch, free)

    async def _force_clear(self, repo: Repo, s: Session) -> Session:
        """`cancel --force` on a session with an unfinished operation: run its repair once more;
        if that still cannot complete it, keep the branch tip under
        refs/para/backup/<name>/<stamp>-forced and drop the operation, so the cancel can run
        (and save the worktree as any cancel does)."""
        kind = journaled(s).kind
        if kind == "start":  # a start runs under the repository lock, not the session's
            async with repo.lock:
                await self._repair(repo, s)
        else:
            await self._repair(repo, s)
        fresh = repo.store.by_id(s.id) if s.id is not None else None
        if fresh is None:
            raise ParaError(Code.not_found, f"the unfinished {kind} of {s.name!r} was undone; "
                            "the session no longer exists", session=s.name)
        s = fresh
        if s.op is None:
            return s  # the repair completed it: cancel what it left, if it still can be
        tip = await git.resolve(repo.root, f"refs/heads/{s.branch}")
        if tip:
            await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-forced", tip)
        if s.status is Status.integrating:
            s.status = Status((s.integration or {}).get("resume_status", "active"))
            s.integration = None
        elif s.status is Status.cancelled and (tip or await self._has_worktree(repo, s)):
            s.status = Status.active  # a recover that got half way
        s.notes.append(f"unfinished {kind} dropped by `para cancel --force`"
                       + (f" (branch tip kept under refs/para/backup/{s.name}/)" if tip else ""))
        s.op = None
        repo.store.save(s)
        return s

    async def recover(self, p: ReopenParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        env_cfg = self._env_config(cfg)  # an unapproved project setup/copy/link/env: refused here
        prefix = cfg["branch_prefix"]
        async with repo.lock:
            archives = await git.refs(repo.root, f"refs/heads/{prefix}/archived/", f"refs/heads/{prefix}/archived-*/*")
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
                    self._find(repo, name, p.cwd)  # an integrated session says so (wrong_state)
                    raise ParaError(Code.not_found, f"no cancelled session or archived branch named {name!r}",
                                    session=name)
                archive = found[-1][len("refs/heads/"):]
                s = await self._adopt_archive(repo, name, archive, cfg, f"adopted from archived branch {archive}",
                                              save=False)
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
                raise ParaError(Code.already_exists, f"branch {branch!r} already exists; "
                                + await self._move_aside_hint(repo, branch, s.archived_branch)
                                + " before recovering", branch=branch)
            path = repo.worktree_path(cfg, name)
            if os.path.lexists(path):
                raise ParaError(Code.already_exists, f"path {path} already exists; move it away first", path=path)
            before = (s.branch, s.worktree, s.archived_branch)
            s.branch, s.worktree = branch, path
            async with repo.lock:
                self._allocate_ports(repo, s, cfg)  # a worktree again: its ports again (cancel released them)
            s.op = Op(kind="recover")
            repo.store.save(s)
            await self._do_recover(repo, s)
            try:
                prepared = await self._prepare_reopened(repo, s, cfg, env_cfg, p.keep_on_failure, "recover",
                                                        Status.cancelled, [], before[2])
            except BaseException:
                if s.status is Status.cancelled:  # rolled back: the record as it was
                    s.branch, s.worktree = before[0], before[1]
                    repo.store.save(s)
                raise
        self.emit(repo, "recovered", name, branch=s.branch, worktree=s.worktree)
        result = await self._show(repo, s, p.cwd)
        result["backup_refs"], warnings = await self._session_backups(repo, s)
        result["warnings"] = prepared + warnings
        return result

    async def _session_backups(self, repo: Repo, s: Session) -> tuple[list[dict[str, Any]], list[str]]:
        """Every backup ref kept for sessions of this name (newest first), and a warning for
        each repository that was inside the worktree: recover does not put those back."""
        found = await git.refs(repo.root, f"refs/para/backup/{s.name}/")
        listed = sorted(({"ref": ref, "commit": sha, "made_at": _made_at(ref)} for ref, (sha, _) in found.items()),
                        key=lambda b: (b["made_at"] or 0, b["ref"]), reverse=True)
        warnings = []
        for ref in sorted(found):
            if "/sub/" in ref and ref.endswith("/HEAD") and "/sub/" not in ref.split("/sub/", 1)[1]:
                prefix = ref[:-len("/HEAD")]
                path = prefix.split("/sub/", 1)[1]
                warnings.append(f"a repository that was inside the worktree at {path} is not restored by recover; "
                                f"its commits are under {prefix}/ (to restore it: `git -C {s.worktree} clone "
                                f"--no-checkout {repo.common_dir} {path}`, then in it `git fetch origin "
                                f"{prefix}/HEAD && git checkout FETCH_HEAD`)")
        return listed, warnings

    async def _move_aside_hint(self, repo: Repo, branch: str, archive: str | None) -> str:
        """How to get `branch` out of the way: deleting it is suggested only when the
        archive holds every commit it has."""
        lacks = None
        if archive and await git.branch_exists(repo.root, archive):
            lacks = await git.count(repo.root, f"refs/heads/{archive}..refs/heads/{branch}")
        if lacks == 0:
            return f"it holds nothing {archive} lacks: delete it (`git branch -D {branch}`) or rename it"
        held = f"{lacks} commit(s) {archive} lacks" if lacks else "commits the archive may lack"
        return f"it holds {held}, so do not delete it: rename it (`git branch -m {branch} NEW-NAME`)"

    async def _do_recover(self, repo: Repo, s: Session) -> None:
        async with repo.lock:
            if s.archived_branch and await git.branch_exists(repo.root, s.archived_branch):
                await git.rename_branch(repo.root, s.archived_branch, s.branch)
            if not await self._has_worktree(repo, s):
                await git.prune_worktrees(repo.root)
                s.git_dir = await git.add_worktree(repo.root, s.worktree, s.branch)
        s.archived_branch, s.status, s.op = None, Status.active, None
        repo.store.save(s)

    async def resume(self, p: ResumeParams) -> dict[str, Any]:
        if p.executor is not None:
            return await self._resume_on(p, p.executor)
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        if p.session is not None and repo.store.get(validate_session_name(p.session)) is None:
            await self._adopt_branch(repo, p.session, cfg)
        warnings: list[str] = []
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
                env_cfg = self._env_config(cfg)  # an unapproved project setup/copy/link/env: refused here
                before, ports = s.status, list(s.ports)
                async with repo.lock:  # afresh: ports it still listed may be another session's now
                    self._allocate_ports(repo, s, cfg)
                s.op = Op(kind="resume")
                repo.store.save(s)
                await self._do_resume(repo, s)
                warnings = await self._prepare_reopened(repo, s, cfg, env_cfg, p.keep_on_failure, "resume",
                                                        before, ports, None)
                recreated = True
        if recreated:
            self.emit(repo, "resumed", s.name, worktree=s.worktree)
        result = await self._show(repo, s, p.cwd)
        result["recreated"] = recreated
        if warnings:
            result["warnings"] = warnings
        return result

    async def _resume_on(self, p: ResumeParams, executor: str) -> dict[str, Any]:
        """`para resume NAME --executor X`: the session's agent, which is not running (lost with
        its host, exited, stopped), relaunched on X from what the session holds here: its
        branch (every harvested commit) and its local worktree (a remote run's last checkpoint,
        mirrored), whose uncommitted work a new worktree on a host gets as uncommitted changes.
        Everything is checked before anything changes."""
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        table = config.usable(cfg["executors"])
        if executor != "local" and executor not in table:
            raise ParaError(Code.not_found, f"no executor named {executor!r} (configured: "
                            f"{', '.join(['local', *sorted(table)])}; see `para executor list`)", executor=executor)
        s = self._find(repo, p.session, p.cwd)
        if s.status is not Status.active:
            raise ParaError(Code.wrong_state, f"session {s.name!r} is {s.status.value}; only an active session's "
                            "agent is resumed" + (f" (`para recover {s.name}` first)" if s.status is Status.cancelled
                                                  else ""), session=s.name, status=s.status.value)
        run = s.agent
        if s.queued is not None:
            raise ParaError(Code.wrong_state, f"the agent of {s.name} waits for a slot already; it starts when one "
                            "frees", session=s.name)
        if run is None:
            raise ParaError(Code.wrong_state, f"session {s.name} has no agent to resume (it was started with "
                            "`para start`); use `para dispatch` for a new session", session=s.name)
        if run.exit_code is None and not run.lost:
            on = f" on executor {run.executor}" if run.executor != "local" else ""
            raise ParaError(Code.wrong_state, f"the agent of {s.name} is still running{on}: `para stop {s.name}` "
                            "first" + (" (an agent whose host does not answer counts as lost after its executor's "
                                       "lost_after seconds)" if on else ""), session=s.name, executor=run.executor)
        if run.sandbox is not None and executor != "local":
            raise ParaError(Code.invalid_input, f"the agent of {s.name} ran in the sandbox, which confines agents on "
                            f"this machine; resume it with --executor local", session=s.name, executor=executor)
        if not os.path.isdir(s.worktree):  # (the local worktree is what is resumed from)
            await self.resume(ResumeParams(cwd=p.cwd, env=p.env, session=s.name, keep_on_failure=p.keep_on_failure))
        if run.executor != "local" and run.placement:
            await self._quiet_old_placement(repo, s.name, run)
        result = await self.restart(RestartParams(cwd=p.cwd, env=p.env, session=s.name), executor=executor)
        # An SSH host keeps the old worktree: what it holds beyond the last harvest is fetched
        # when that host answers again (remote.py, LEFT). (A Kubernetes pod took its disk with it.)
        kind = (table.get(run.executor) or {}).get("kind")
        async with repo.session_lock(s.name):
            now_ = repo.store.get(s.name)
            if now_ is not None:
                leave_placement(now_, run if kind == "ssh" and run.placement else None, executor)
                repo.store.save(now_)
        s = self._find(repo, s.name, p.cwd)
        self.emit(repo, "resumed", s.name, worktree=s.worktree, executor=executor, previous_executor=run.executor,
                  lost=run.lost, queued=s.queued is not None)
        result["recreated"] = False
        return result

    async def _quiet_old_placement(self, repo: Repo, name: str, run: AgentRun) -> None:
        """Before a resume: the old run's host, if it answers again, has its agent stopped
        there (a host back from a partition still runs it, working where no harvest looks).
        Its worktree there stays (it may hold work never harvested): a host that does not
        answer now has it fetched and freed when it does (leave_placement)."""
        ex = self._executor(repo, run.executor)
        try:
            await asyncio.wait_for(ex.stop(run, 0.0), 15.0)
        except (ParaError, TimeoutError) as e:
            log.info("the old agent of %s on executor %s not stopped: %s", name, run.executor,
                     getattr(e, "message", "no answer"))

    async def _adopt_branch(self, repo: Repo, name: str, cfg: dict[str, Any]) -> None:
        """Take a `<prefix>/<name>` branch that no session owns (left by Para, or by a lost
        store) under para: active when a worktree has it checked out, else in review
        (resume then gives it a worktree)."""
        branch = f"{cfg['branch_prefix']}/{name}"
        tip = await git.resolve(repo.root, f"refs/heads/{branch}")
        if tip is None:
            return  # nothing to adopt: _find reports the unknown session
        wt = next((w for w in (await git.worktrees(repo.root))[1:] if w.branch == branch and not w.prunable), None)
        await self._adopt(repo, name, branch, tip, wt.path if wt else None, cfg, f"adopted existing branch {branch}")

    async def _adopt(self, repo: Repo, name: str, branch: str, tip: str, worktree: str | None,
                     cfg: dict[str, Any], note: str) -> Session:
        """A session for a branch para finds without one (its state was lost)."""
        base, base_tip = await self._base(repo, None, cfg)
        s = Session(name=name, branch=branch, worktree=worktree or repo.worktree_path(cfg, name), base_branch=base,
                    base_commit=await git.merge_base(repo.root, base_tip, tip) or base_tip,
                    status=Status.active if worktree else Status.review, head_commit=tip, notes=[note])
        if worktree:  # a worktree already: its ports, as every session with one holds (no await: no race)
            try:
                self._allocate_ports(repo, s, cfg)
            except ParaError as e:
                s.notes.append(f"no ports: {e.message}")
        repo.store.save(s)
        self.emit(repo, "adopted", name, branch=branch, note=note)
        return s

    async def _adopt_archive(self, repo: Repo, name: str, archive: str, cfg: dict[str, Any], note: str,
                             save: bool = True) -> Session:
        """A cancelled session for an archived branch para finds without one (archived by Para,
        or its state was lost); `para recover` brings it back."""
        base, base_tip = await self._base(repo, None, cfg)
        s = Session(name=name, branch=f"{cfg['branch_prefix']}/{name}", base_branch=base,
                    worktree=repo.worktree_path(cfg, name),
                    base_commit=await git.merge_base(repo.root, base_tip, archive) or base_tip,
                    status=Status.cancelled, archived_branch=archive, notes=[note])
        if save:
            repo.store.save(s)
            self.emit(repo, "adopted", name, branch=archive, note=note)
        return s

    async def _do_resume(self, repo: Repo, s: Session) -> None:
        async with repo.lock:
            if not await self._has_worktree(repo, s):
                await git.prune_worktrees(repo.root)
                s.git_dir = await git.add_worktree(repo.root, s.worktree, s.branch)
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
                wt = wts.get(os.path.realpath(s.worktree))
                has_wt = wt is not None and not wt.prunable
                if not has_branch and not has_wt:
                    actions.append({"kind": "forget_session", "session": s.name,
                                    "reason": "neither its branch nor its worktree exists"})
            known = {s.branch for s in live} | {s.archived_branch for s in live if s.archived_branch}
            cutoff = time.time() - cfg["clean.archive_days"] * 86400
            from_para = {x.archived_branch or x.branch: x.extra["para_state"] for x in repo.store.all()
                         if x.extra.get("para_state")}
            base_tip = await self._base_for_clean(repo, cfg)
            # git refuses to delete a branch checked out anywhere; one checked out in a linked
            # worktree without a session is a session whose state was lost: adopt it.
            checked_out = {w.branch: w for w in wts.values() if w.branch and not w.prunable}
            for ref, (sha, ts) in heads.items():
                branch = ref[len("refs/heads/"):]
                if not branch.startswith(prefix + "/"):
                    continue
                archived = branch.startswith(f"{prefix}/archived/")
                if not archived and branch in known:
                    continue
                if branch in checked_out:
                    entry = await self._clean_checked_out(repo, prefix, branch, sha, checked_out[branch], base_tip)
                    (actions if entry["kind"] == "adopt_session" else kept).append(entry)
                    continue
                if archived and (_made_at(ref) or ts) > cutoff:
                    continue
                para_file = from_para.get(branch) or _para_state_file(repo, branch.rsplit("/", 1)[-1])
                if para_file:  # Para's, not para's: never deleted
                    kept.append({"kind": "delete_branch", "branch": branch, "commit": sha,
                                 "reason": "a branch Para left", "integrated": None,
                                 "why_kept": f"Para's state file {para_file} names this session; para deletes "
                                 "only what it made (delete it by hand, `git branch -D`, if it is not needed)"})
                    continue
                integrated = base_tip is not None and await git.is_integrated(repo.root, sha, base_tip)
                entry = {"kind": "delete_branch", "branch": branch, "commit": sha,
                         "reason": (f"archived more than {cfg['clean.archive_days']:d} days ago") if archived
                         else "a para branch no session owns", "integrated": integrated}
                if integrated or p.force:
                    actions.append(entry)
                else:
                    kept.append({**entry, "why_kept": "holds commits not in the base branch (use --force)"})
            backup_cutoff = time.time() - cfg["clean.backup_days"] * 86400
            for ref, (sha, _) in (await git.refs(repo.root, "refs/para/backup/")).items():
                made = _made_at(ref)
                entry = {"kind": "delete_backup", "ref": ref, "commit": sha,
                         "reason": f"backup older than {cfg['clean.backup_days']:d} days"}
                if made is None:
                    kept.append({**entry, "reason": "a backup ref without a stamp in its name",
                                 "why_kept": "its age is unknown (para names its backups with the UTC time "
                                 "they were made); delete it by hand (`git update-ref -d REF`) if it is not needed"})
                elif made < backup_cutoff:
                    actions.append(entry)
            if not p.dry_run:
                await self._apply_clean(repo, actions, live, cfg)
        if actions and not p.dry_run:
            self.emit(repo, "cleaned", None, actions=len(actions))
        return {"dry_run": p.dry_run, "actions": actions, "kept": kept}

    async def _clean_checked_out(self, repo: Repo, prefix: str, branch: str, sha: str, wt: git.Worktree,
                                 base_tip: str | None) -> dict[str, Any]:
        """What clean does with a para branch no session owns that a worktree has checked out:
        adopt it as the session it was, or keep it and say why (never delete it)."""
        name = branch[len(prefix) + 1:]
        why = None
        if branch.startswith(f"{prefix}/archived/"):
            why = f"checked out in {wt.path}"
        elif wt.path == repo.root:
            why = "checked out in the main checkout"
        elif base_tip is None:
            why = f"checked out in {wt.path}; no base branch to adopt it against"
        elif repo.store.get(name) is not None:
            why = f"checked out in {wt.path}, but a session named {name!r} already exists"
        else:
            try:
                validate_session_name(name)
            except ParaError:
                why = f"checked out in {wt.path}, but {name!r} is not a usable session name"
        if why is None:
            return {"kind": "adopt_session", "session": name, "branch": branch, "commit": sha,
                    "worktree": wt.path, "reason": "checked out in a worktree with no session (para's state was lost)"}
        return {"kind": "delete_branch", "branch": branch, "commit": sha, "reason": "a para branch no session owns",
                "integrated": None, "why_kept": why}

    async def _base_for_clean(self, repo: Repo, cfg: dict[str, Any]) -> str | None:
        try:
            return (await self._base(repo, None, cfg))[1]
        except ParaError:
            return None

    async def _apply_clean(self, repo: Repo, actions: list[dict[str, Any]], live: list[Session],
                           cfg: dict[str, Any]) -> None:
        by_name = {s.name: s for s in live}
        stamp = _utc_stamp()
        for a in actions:
            if a["kind"] == "prune_worktrees":
                await git.prune_worktrees(repo.root)
            elif a["kind"] == "forget_session":
                self._agent_session_ended(repo, by_name[a["session"]], forgotten=True)
                repo.store.delete(by_name[a["session"]])
            elif a["kind"] == "adopt_session":
                await self._adopt(repo, a["session"], a["branch"], a["commit"], a["worktree"], cfg,
                                  f"adopted by clean: {a['branch']} was checked out in {a['worktree']}")
            elif a["kind"] == "delete_branch":
                if not a["integrated"]:  # forced: keep the commits reachable for the backup period
                    await git.create_ref(repo.root, f"refs/para/backup/clean/{stamp}/{a['branch']}", a["commit"])
                slipped = await git.delete_branch(repo.root, a["branch"], a["commit"])
                if slipped:  # (committed since clean looked at it: kept all the same)
                    await git.create_ref(repo.root, f"refs/para/backup/clean/{stamp}/{a['branch']}-late", slipped)
            elif a["kind"] == "delete_backup":
                await git.delete_ref(repo.root, a["ref"])
