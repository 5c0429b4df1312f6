"""The service: the single owner of session state, and every operation on it.

Transports call `Service.<verb>(params)` and get plain data back; they never
touch git or the store. Each repository gets a `Repo` with its store, a lock
for structural git operations (worktree add/remove, branch create/rename/
delete: concurrent `git worktree add` on one repository is racy) and one lock
per session. Multi-step operations record an `Op` on the session before their
first step and clear it after the last; every step is written to be safe to
run again, so `_repair` simply re-runs (or, for a start, undoes) whatever a
crashed sidecar left half done.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from para_rpc import PROTOCOL_VERSION, __version__, agents, config, git, integrate
from para_rpc.errors import Code, ParaError
from para_rpc.model import (AgentRun, Op, Plan, PlanStep, PlanTask, Report, Session, SessionInfo, Status, now,
                            to_builtins)
from para_rpc.names import friendly_name, validate_branch_name, validate_session_name
from para_rpc.params import (CancelParams, CleanParams, ConfigParams, ConflictsParams, DiffParams,
                             DispatchParams, EventsParams, FinishParams, HelloParams, IntegrateParams,
                             ListParams, RepoParams, ReportParams, SessionParams, StartParams, StatusParams,
                             WaitParams)
from para_rpc.store import Store

log = logging.getLogger("para.service")

EXCLUDE_LINES = ("/.para/*", "!/.para/config.json", "/.para-agent.md")
WIP_MESSAGE = "para: work in progress saved by `para cancel`"
STATUS_CONCURRENCY = 8
AGENT_POLL_SECONDS = 1.0


def _utc_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


@dataclass
class Repo:
    """One repository the sidecar serves."""

    common_dir: str
    root: str                      # the main worktree
    store: Store
    lock_fd: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    target_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    plan_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tick: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) on every event
    poller: asyncio.Task | None = None

    @property
    def worktrees_dir(self) -> str:
        return os.path.join(self.root, ".para", "worktrees")

    def session_lock(self, name: str) -> asyncio.Lock:
        return self.session_locks.setdefault(name, asyncio.Lock())

    def target_lock(self, branch: str) -> asyncio.Lock:
        """The integration queue of one target branch (asyncio.Lock wakes waiters FIFO)."""
        return self.target_locks.setdefault(branch, asyncio.Lock())

    def config(self, env: dict[str, str]) -> dict[str, Any]:
        return config.values(self.root, env)


class Service:
    def __init__(self, notify: Callable[[str, dict[str, Any]], None] | None = None,
                 socket: str = "") -> None:
        self.socket = socket  # given to agents so their `para` reaches this sidecar
        self.repos: dict[str, Repo] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._where_cache: dict[str, git.Where] = {}  # cwd -> repository facts (2 git calls saved)
        self.notify = notify or (lambda method, payload: None)
        self.started_at = now()
        self.busy = 0  # operations in flight (the sidecar waits for them before exiting)

    # ---- repositories ------------------------------------------------------

    async def repo(self, cwd: str) -> Repo:
        if not isinstance(cwd, str) or not cwd or not os.path.isabs(cwd):
            raise ParaError(Code.invalid_input, f"cwd must be an absolute path, got {cwd!r}")
        if not os.path.isdir(cwd):
            raise ParaError(Code.not_a_repository, f"directory does not exist: {cwd}")
        where = self._where_cache.get(cwd)
        if where is None or not os.path.isdir(where.common_dir):
            where = await git.where(cwd)
            if len(self._where_cache) > 1000:
                self._where_cache.clear()
            self._where_cache[cwd] = where
        if where.bare:
            raise ParaError(Code.not_a_repository,
                            f"{where.common_dir} is a bare repository; para needs one with a working tree")
        if where.toplevel is None:
            raise ParaError(Code.not_a_repository, f"{cwd} is inside a .git directory, not a working tree")
        repo = self.repos.get(where.common_dir)
        if repo is None:
            async with self._opening.setdefault(where.common_dir, asyncio.Lock()):
                repo = self.repos.get(where.common_dir) or await self._open(where)
        return repo

    async def _open(self, where: git.Where) -> Repo:
        main = (await git.worktrees(where.common_dir))[0]
        if main.bare:
            raise ParaError(Code.not_a_repository, f"{where.common_dir} has no main working tree")
        root = main.path
        para_dir = Path(root, ".para")
        para_dir.mkdir(exist_ok=True)
        _ensure_excluded(where.common_dir)
        fd = os.open(para_dir / "sidecar.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise ParaError(Code.busy, f"{root} is served by another para sidecar (pid {holder or '?'}); "
                                       "stop it or use the same PARA_SOCKET") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        repo = Repo(where.common_dir, root, Store(para_dir / "para.db"), fd)
        self.repos[where.common_dir] = repo
        for s in repo.store.live():
            if s.op is not None:
                await self._repair(repo, s)
        await self._remove_scratch(repo)
        repo.poller = asyncio.create_task(self._poll_agents(repo))
        return repo

    async def _remove_scratch(self, repo: Repo) -> None:
        """Scratch worktrees exist only while an integration check runs; any found when a
        repository is opened were left by a crash."""
        scratch = os.path.join(repo.root, ".para", "scratch")
        if not os.path.isdir(scratch):
            return
        for w in await git.worktrees(repo.root):
            if w.path.startswith(scratch + os.sep):
                await git.run(repo.root, "worktree", "remove", "--force", w.path, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
        await git.prune_worktrees(repo.root)

    def close(self) -> None:
        for repo in self.repos.values():
            if repo.poller:
                repo.poller.cancel()
            repo.store.close()
            os.close(repo.lock_fd)
        self.repos.clear()

    # ---- events ------------------------------------------------------------

    def emit(self, repo: Repo, kind: str, session: str | None, **data: Any) -> None:
        event = repo.store.append_event(kind, session, data)
        event["repo"] = repo.root
        repo.tick.set()
        repo.tick = asyncio.Event()
        if kind in ("integrated", "cancelled", "conflicted") and session is not None:
            asyncio.get_running_loop().create_task(self._advance_plans(repo))
        self.notify("para/event", event)
        self.notify("para/sessionsChanged", {"repo": repo.root, "sessions": [session] if session else [],
                                             "kind": kind})

    # ---- lookups -----------------------------------------------------------

    def _find(self, repo: Repo, name: str | None, cwd: str, history: bool = False) -> Session:
        """The named session, else the one whose worktree holds `cwd` (most specific wins).
        With `history`, a name may also denote the latest integrated session of that name."""
        if name is not None:
            validate_session_name(name)
            s = repo.store.get(name)
            if s is None and history:
                s = next((x for x in reversed(repo.store.all()) if x.name == name), None)
            if s is None:
                names = [x.name for x in repo.store.live()]
                raise ParaError(Code.not_found, f"no session named {name!r}"
                                + (f" (sessions: {', '.join(names)})" if names else ""), session=name)
            return s
        s = self._session_at(repo, cwd)
        if s is None:
            raise ParaError(Code.invalid_input,
                            f"{cwd} is not inside a session worktree; name the session "
                            "(for example `--session NAME`)")
        return s

    @contextlib.asynccontextmanager
    async def _locked(self, repo: Repo, name: str | None, cwd: str) -> AsyncIterator[Session]:
        """The session, with its lock held; read again once the lock is ours, since an
        operation that held it may have changed the session meanwhile."""
        s = self._find(repo, name, cwd)
        async with repo.session_lock(s.name):
            yield self._find(repo, s.name, cwd)

    def _session_at(self, repo: Repo, cwd: str) -> Session | None:
        here = os.path.realpath(cwd)
        best = None
        for s in repo.store.live():
            if here == s.worktree or here.startswith(s.worktree + os.sep):
                if best is None or len(s.worktree) > len(best.worktree):
                    best = s
        return best

    async def _base(self, repo: Repo, requested: str | None, cfg: dict[str, Any]) -> tuple[str, str]:
        """The base branch and its commit: --base, else configured, else origin/HEAD, main, master."""
        if requested is not None:
            candidates = [validate_branch_name(requested, "base branch")]
        elif cfg["base_branch"]:
            candidates = [cfg["base_branch"]]
        else:
            candidates = []
            origin = await git.symbolic_ref(repo.root, "refs/remotes/origin/HEAD")
            if origin and "/" in origin:
                candidates.append(origin.split("/", 1)[1])
            candidates += ["main", "master"]
        for b in candidates:
            sha = await git.resolve(repo.root, f"refs/heads/{b}")
            if sha:
                return b, sha
        if await git.resolve(repo.root, "HEAD") is None:
            raise ParaError(Code.not_a_repository, f"{repo.root} has no commits yet; commit something first")
        branches = sorted(x[len("refs/heads/"):] for x in await git.refs(repo.root, "refs/heads/"))
        if requested is not None or cfg["base_branch"]:
            raise ParaError(Code.not_found, f"base branch {candidates[0]!r} does not exist"
                            f" (local branches: {', '.join(branches) or 'none'})", branch=candidates[0])
        detached = await git.symbolic_ref(repo.root, "HEAD") is None
        raise ParaError(Code.not_found,
                        "cannot tell which branch to fork from: no origin/HEAD, main or master"
                        + (" and HEAD is detached" if detached else "")
                        + f"; pass --base or run `para config set base_branch NAME`"
                        f" (local branches: {', '.join(branches) or 'none'})")

    async def _worktree_state(self, repo: Repo) -> dict[str, git.Worktree]:
        return {w.path: w for w in await git.worktrees(repo.root)}

    async def _has_worktree(self, repo: Repo, s: Session) -> bool:
        """Whether the session's worktree really exists (registered, not prunable, on disk)."""
        wt = (await self._worktree_state(repo)).get(s.worktree)
        return wt is not None and not wt.prunable and os.path.isdir(s.worktree)

    def _info(self, repo: Repo, s: Session, wts: dict[str, git.Worktree], branches: dict,
              dirty: bool = False, cwd: str | None = None) -> SessionInfo:
        wt = wts.get(s.worktree)
        wt_exists = wt is not None and not wt.prunable and os.path.isdir(s.worktree)
        branch_ref = branches.get(f"refs/heads/{s.branch}")
        state = s.status.value
        if s.op is not None:
            state = f"{s.op.kind}-pending"
        elif s.status in (Status.active, Status.conflicted) and not (wt_exists and branch_ref):
            state = "missing"
        elif s.status is Status.active and dirty:
            state = "dirty"
        current = cwd is not None and (cwd == s.worktree or cwd.startswith(s.worktree + os.sep))
        return SessionInfo(
            name=s.name, status=s.status, state=state, branch=s.branch, worktree=s.worktree,
            base_branch=s.base_branch, base_commit=s.base_commit, created_at=s.created_at,
            updated_at=s.updated_at, current=current, dirty=dirty, worktree_exists=wt_exists,
            branch_exists=branch_ref is not None, head=branch_ref[0] if branch_ref else s.head_commit,
            task=s.task, archived_branch=s.archived_branch,
            pending_op=s.op.kind if s.op else None, integration=s.integration, agent=s.agent,
            report=s.report, plan=s.plan, notes=list(s.notes))

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

    async def _dirty(self, worktrees: list[str]) -> dict[str, bool]:
        sem = asyncio.Semaphore(STATUS_CONCURRENCY)

        async def one(path: str) -> bool:
            async with sem:
                try:
                    return bool(await git.status(path))
                except ParaError:
                    return False
        flags = await asyncio.gather(*(one(p) for p in worktrees))
        return dict(zip(worktrees, flags))

    # ---- operations --------------------------------------------------------

    async def hello(self, p: HelloParams) -> dict[str, Any]:
        return {"name": "para", "version": __version__, "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                "started_at": self.started_at, "repos": sorted(r.root for r in self.repos.values()),
                "busy": self.busy}

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

    # -- finish

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

    # -- integrate / continue / abort / conflicts

    async def integrate(self, p: IntegrateParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        strategy = p.strategy or cfg["integrate.strategy"]
        message = _check_message(p.message) if p.message is not None else None
        s = self._find(repo, p.session, p.cwd)
        target = validate_branch_name(p.target, "target branch") if p.target is not None else s.base_branch
        if target == s.branch:
            raise ParaError(Code.invalid_input, "a session cannot be integrated into its own branch")
        if await git.resolve(repo.root, f"refs/heads/{target}") is None:
            raise ParaError(Code.not_found, f"target branch {target!r} does not exist", branch=target)
        if p.dry_run:
            return await self._predict(repo, s, target, strategy, message)
        async with repo.session_lock(s.name):
            s = self._find(repo, s.name, p.cwd)
            if s.status is Status.conflicted:
                raise ParaError(Code.wrong_state, f"session {s.name!r} is paused on conflicts in {s.worktree}; "
                                f"resolve them and run `para continue {s.name}`, or `para abort {s.name}`",
                                session=s.name, files=(s.integration or {}).get("files", []))
            self._require(s, (Status.active, Status.review), "integrate")
            if os.path.isdir(s.worktree) and await git.status(s.worktree):
                await git.stage_all(s.worktree)
                if await git.has_staged(s.worktree):
                    await git.commit(s.worktree, message or f"{s.name}: work in progress")
            pre = await git.resolve(repo.root, f"refs/heads/{s.branch}")
            if pre is None:
                raise ParaError(Code.not_found, f"branch {s.branch!r} of session {s.name!r} is gone", session=s.name)
            if message is None:
                message = await self._default_message(repo, s, target, pre, strategy)
            s.integration = {"target": target, "strategy": strategy, "message": message, "pre": pre,
                             "resume_status": s.status.value, "stamp": _utc_stamp()}
            return await self._land(repo, s, cfg)

    async def _default_message(self, repo: Repo, s: Session, target: str, tip: str, strategy: str) -> str:
        if strategy == "merge":
            return f"Merge session {s.name} into {target}"
        fork = await git.merge_base(repo.root, f"refs/heads/{target}", tip)
        subjects = (await git.out(repo.root, "log", "--format=%s", f"{fork}..{tip}")).splitlines() if fork else []
        return subjects[0] if len(subjects) == 1 else f"Integrate session {s.name}"

    async def _land(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> dict[str, Any]:
        """Queue on the target, compute the result, gate it, move the target, clean up."""
        rec = s.integration
        s.status = Status.integrating
        s.op = Op(kind="integrate", data={"target": rec["target"]})
        repo.store.save(s)
        self.emit(repo, "queued", s.name, target=rec["target"])
        self.busy += 1
        try:
            async with repo.target_lock(rec["target"]):
                new, old = await self._merge_and_move(repo, s, cfg)
            return await self._after_landing(repo, s, new, old, cfg)
        except Exception as e:
            if s.status is Status.integrating and not (s.op and s.op.data.get("landed")):
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

    async def _merge_and_move(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> tuple[str, str]:
        rec = s.integration
        target, strategy = rec["target"], rec["strategy"]
        ref = f"refs/heads/{target}"
        old = await git.resolve(repo.root, ref)
        tip = await git.resolve(repo.root, f"refs/heads/{s.branch}")
        if old is None or tip is None:
            raise ParaError(Code.not_found, f"branch {target if old is None else s.branch!r} disappeared")
        rec["old"] = old
        cand = await integrate.candidate(repo.root, strategy, old, tip, rec["message"])
        # A rebase, or a conflict, needs the session's own worktree; that rewrites its branch.
        rewrite = not cand.clean or (strategy == "rebase" and cand.commit is None)
        backup = None
        if rewrite:
            wt = await self._ensure_worktree(repo, s)
            if strategy == "rebase":
                backup = f"refs/para/backup/{s.name}/{rec['stamp']}-rebase"
                await git.update_ref(repo.root, backup, tip)
                stopped, kind = await integrate.rebase_onto(wt, old), "rebase"
            else:
                stopped = await integrate.merge_target_into(wt, old, f"Merge {target} into {s.branch}")
                kind = "merge"
            if stopped:
                await self._pause(repo, s, kind, stopped)
            cand = await integrate.candidate(repo.root, strategy, old, await git.out(wt, "rev-parse", "HEAD"),
                                             rec["message"])
            if not cand.clean:  # cannot happen after a completed merge of the target; be loud if it does
                raise ParaError(Code.internal, f"merge of {target} into {s.branch} did not resolve its conflicts")
        new = cand.commit
        try:
            if new != old and cfg["integrate.check"]:
                ok, rc, output = await integrate.run_check(
                    repo.root, os.path.join(repo.root, ".para", "scratch"), new, cfg["integrate.check"],
                    cfg["integrate.check_timeout"])
                rec["check"] = {"ok": ok, "exit": rc, "output": output}
                if not ok:
                    raise ParaError(Code.check_failed, f"the check `{cfg['integrate.check']}` failed "
                                    f"({'timed out' if rc is None else f'exit {rc}'}); {target} did not move",
                                    output=output, exit=rc, session=s.name)
            s.op.data.update(old=old, new=new)  # journal before the target moves
            repo.store.save(s)
            if new != old:
                await integrate.advance_target(repo.root, target, old, new, f"para: integrate {s.name}")
        except ParaError:
            if rewrite:  # the target did not move: the session goes back to how this attempt found it
                await self._restore_branch(repo, s, tip)
                if backup:
                    await git.delete_ref(repo.root, backup)
            raise
        s.op.data["landed"] = True
        return new, old

    async def _restore_branch(self, repo: Repo, s: Session, commit: str) -> None:
        if await git.status(s.worktree):
            snap = await git.snapshot(s.worktree, f"para: changes in {s.name} during a failed integration")
            await git.update_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-failed", snap)
        await integrate.abort_in(s.worktree, commit)

    async def _pause(self, repo: Repo, s: Session, kind: str, files: list[str]) -> None:
        hunks = integrate.worktree_hunks(s.worktree, files)
        s.integration.update(kind=kind, files=files, hunks=hunks)
        s.status, s.op = Status.conflicted, None
        repo.store.save(s)
        self.emit(repo, "conflicted", s.name, target=s.integration["target"], worktree=s.worktree,
                  files=files, hunks=hunks)
        raise ParaError(Code.conflict, f"session {s.name!r} conflicts with {s.integration['target']} in "
                        f"{len(files)} file(s): {', '.join(files[:10])}. Resolve them in {s.worktree}, then run "
                        f"`para continue` (or `para abort` to go back)", session=s.name, worktree=s.worktree,
                        files=files, hunks=hunks, target=s.integration["target"])

    async def _ensure_worktree(self, repo: Repo, s: Session) -> str:
        async with repo.lock:
            if not await self._has_worktree(repo, s):
                if os.path.lexists(s.worktree):
                    raise ParaError(Code.already_exists, f"{s.worktree} exists but is not this session's "
                                    "worktree; move it away first", path=s.worktree)
                await git.prune_worktrees(repo.root)
                await git.add_worktree(repo.root, s.worktree, s.branch)
        return s.worktree

    async def _after_landing(self, repo: Repo, s: Session, new: str, old: str,
                             cfg: dict[str, Any]) -> dict[str, Any]:
        """The target holds the work: save the branch tip, remove worktree and branch, record history."""
        rec = s.integration
        stamp = rec.get("stamp") or _utc_stamp()
        tip = await git.resolve(repo.root, f"refs/heads/{s.branch}")
        if tip:
            await git.update_ref(repo.root, f"refs/para/backup/{s.name}/{stamp}-integrated", tip)
        if await self._has_worktree(repo, s):
            if await git.status(s.worktree):  # written after integration started: keep it
                snap = await git.snapshot(s.worktree, f"para: changes left in {s.name} after integration")
                ref = f"refs/para/backup/{s.name}/{stamp}-leftover"
                await git.update_ref(repo.root, ref, snap)
                rec["leftover"] = ref
            async with repo.lock:
                await git.remove_worktree(repo.root, s.worktree)
        if tip and not cfg["integrate.keep_branch"]:
            async with repo.lock:
                await git.delete_branch(repo.root, s.branch)
        rec.update(commit=new, old=old, landed_at=now(), noop=new == old)
        rec.pop("files", None), rec.pop("hunks", None), rec.pop("kind", None)
        s.head_commit = tip
        s.status, s.op = Status.integrated, None
        repo.store.save(s)
        self.emit(repo, "integrated", s.name, target=rec["target"], commit=new, strategy=rec["strategy"])
        wts, branches = await asyncio.gather(self._worktree_state(repo), git.refs(repo.root, "refs/heads/"))
        return to_builtins(self._info(repo, s, wts, branches))

    async def continue_(self, p: SessionParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        async with self._locked(repo, p.session, p.cwd) as s:
            self._require(s, Status.conflicted, "continue")
            rec = s.integration
            if not os.path.isdir(s.worktree):
                raise ParaError(Code.wrong_state, f"the worktree {s.worktree} is gone; `para abort {s.name}`",
                                session=s.name)
            if await git.in_progress(s.worktree) is None and rec["kind"] in ("merge", "rebase"):
                # Resolved by hand with git commit / rebase --continue: nothing left to complete.
                stopped = []
            else:
                stopped = await integrate.continue_in(s.worktree, rec["kind"], rec["files"])
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
            rec = s.integration
            saved = None
            if os.path.isdir(s.worktree):
                if await git.status(s.worktree):
                    snap = await git.snapshot(s.worktree, f"para: conflict resolution in progress in {s.name}")
                    saved = f"refs/para/backup/{s.name}/{_utc_stamp()}-aborted"
                    await git.update_ref(repo.root, saved, snap)
                await integrate.abort_in(s.worktree, rec["pre"])
            else:
                await git.update_ref(repo.root, f"refs/heads/{s.branch}", rec["pre"])
            s.status, s.integration = Status.active, None
            repo.store.save(s)
        self.emit(repo, "aborted", s.name, restored=rec["pre"], saved=saved)
        result = await self._show(repo, s, p.cwd)
        result["restored"], result["saved"] = rec["pre"], saved
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
        uncommitted work included, before anyone integrates."""
        repo = await self.repo(p.cwd)
        target = validate_branch_name(p.target, "target branch") if p.target is not None else None
        sessions = [s for s in repo.store.live() if s.status in (Status.active, Status.review, Status.conflicted)]
        sem = asyncio.Semaphore(STATUS_CONCURRENCY)

        async def snap(s: Session) -> tuple[str | None, bool]:
            async with sem:
                commit, dirty = await self._session_commit(s)
                return commit or await git.resolve(repo.root, f"refs/heads/{s.branch}"), dirty

        snaps = dict(zip([s.name for s in sessions], await asyncio.gather(*(snap(s) for s in sessions))))
        tips: dict[str, str | None] = {}
        for s in sessions:
            t = target or s.base_branch
            if t not in tips:
                tips[t] = await git.resolve(repo.root, f"refs/heads/{t}")

        async def forecast(a: str, b: str) -> tuple[bool, list[str], dict]:
            async with sem:
                clean, tree, files = await git.merge_tree(repo.root, a, b)
                return clean, files, (await integrate.tree_hunks(repo.root, tree, files)) if files else {}

        usable = [s for s in sessions if snaps[s.name][0]]
        vs_target = await asyncio.gather(*(forecast(tips[target or s.base_branch], snaps[s.name][0])
                                           for s in usable if tips[target or s.base_branch]))
        pairs = [(a, b) for i, a in enumerate(usable) for b in usable[i + 1:]]
        vs_pairs = await asyncio.gather(*(forecast(snaps[a.name][0], snaps[b.name][0]) for a, b in pairs))
        report = []
        for s, (clean, files, hunks) in zip([s for s in usable if tips[target or s.base_branch]], vs_target):
            report.append({"session": s.name, "target": target or s.base_branch, "commit": snaps[s.name][0],
                           "includes_uncommitted": snaps[s.name][1], "clean": clean, "files": files,
                           "hunks": hunks})
        collisions = [{"a": a.name, "b": b.name, "files": files, "hunks": hunks}
                      for (a, b), (clean, files, hunks) in zip(pairs, vs_pairs) if not clean]
        return {"sessions": report, "pairs": collisions,
                "clean": all(r["clean"] for r in report) and not collisions}

    # -- agents: dispatch, status, wait, diff, plans

    async def dispatch(self, p: DispatchParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        given = [x for x in (p.prompt, p.file) if x is not None] + ([p.files] if p.files else [])
        if len(given) != 1:
            raise ParaError(Code.invalid_input, "give exactly one of: a prompt, a task file, or a list of task files")
        prof = agents.profile(p.agent or cfg["agent.default"], cfg["agents"])
        mode = self._choose_mode(p.mode or cfg["agent.mode"], p.in_tmux)
        argv = prof.argv(mode, p.skip_permissions)
        agents.require_binary(argv, prof.name)
        if p.files or (p.file is not None and os.path.isdir(os.path.join(p.cwd, p.file))):
            return await self._dispatch_plan(repo, cfg, p, prof, mode)
        if p.prompt is not None:
            task, source = p.prompt, "prompt"
            if not task.strip():
                raise ParaError(Code.invalid_input, "the prompt is empty")
        else:
            path = agents.find_task_file(repo.root, p.cwd, p.file)
            task, source = agents.read_task(path), str(path)
        name = p.name
        if name is None and p.file is not None:
            name = agents.task_name(Path(source))
            if name is not None and repo.store.get(name) is not None:
                name = None  # taken: a friendly name instead
        return await self._dispatch_one(repo, cfg, name=name, task=task, source=source, prof=prof, mode=mode,
                                        skip=p.skip_permissions, base=p.base, cwd=p.cwd, env=p.env)

    def _choose_mode(self, mode: str, in_tmux: bool) -> str:
        if mode != "auto":
            return mode
        if self.editor_available():
            return "editor"
        if in_tmux and shutil.which("tmux"):
            return "tmux"
        return "headless"

    async def _dispatch_one(self, repo: Repo, cfg: dict[str, Any], *, name: str | None, task: str, source: str,
                            prof: agents.Profile, mode: str, skip: bool, base: str | None, cwd: str,
                            env: dict[str, str], plan: int | None = None) -> dict[str, Any]:
        prompt = agents.compose_prompt(task, cfg["agent.workflow"])
        argv_t = prof.argv(mode, skip)
        agents.check_prompt_fits(argv_t, prompt, prof.name)
        info = await self.start(StartParams(cwd=cwd, env=env, name=name, base=base))
        s = repo.store.get(info["name"])
        try:
            prompt_file = os.path.join(repo.root, ".para", "prompts", f"{s.name}.md")
            os.makedirs(os.path.dirname(prompt_file), exist_ok=True)
            Path(prompt_file).write_text(prompt, encoding="utf-8")
            Path(s.worktree, agents.INSTRUCTION_FILE).write_text(
                agents.instruction_text(s.name, cfg["agent.workflow"]), encoding="utf-8")
            argv = agents.render(argv_t, {"prompt": prompt, "prompt_file": prompt_file,
                                          "worktree": s.worktree, "session": s.name})
            s.task = source if source != "prompt" else prompt.strip().splitlines()[0][:200]
            s.plan = plan
            s.agent = await self._launch(repo, s, prof.name, mode, argv, skip, cfg)
        except BaseException:
            async with repo.lock:
                await self._undo_start(repo, s)
            raise
        repo.store.save(s)
        self.emit(repo, "dispatched", s.name, profile=prof.name, mode=s.agent.mode, pid=s.agent.pid,
                  task=s.task, plan=plan)
        result = self._known(repo, s, cwd, worktree=True, ahead=0)
        result["prompt_file"] = prompt_file
        return result

    async def _launch(self, repo: Repo, s: Session, profile: str, mode: str, argv: list[str], skip: bool,
                      cfg: dict[str, Any]) -> AgentRun:
        runs = os.path.join(repo.root, ".para", "runs")
        os.makedirs(runs, exist_ok=True)
        exit_file = os.path.join(runs, f"{s.name}.{int(time.time() * 1000)}.exit")
        env = agents.agent_env(s.name, s.worktree, self.socket)
        run = AgentRun(profile=profile, mode=mode, argv=argv, exit_file=exit_file, skip_permissions=skip)
        if mode == "editor":
            answer = await self.editor_request(
                {"session": s.name, "worktree": s.worktree, "title": f"para: {s.name}",
                 "argv": agents.runner_argv(exit_file, argv), "env": {k: env[k] for k in env if k.startswith("PARA_")}
                 | {"PATH": env["PATH"]}}, cfg["agent.editor_timeout"])
            if answer and answer.get("ok"):
                run.pid = answer.get("pid")
                return run
            mode = "tmux" if shutil.which("tmux") else "headless"
            run.mode = mode
            s.notes.append(f"no editor answered; the agent runs in {mode} mode")
        if mode == "tmux":
            run.window, run.pid = await agents.launch_tmux(argv, s.worktree, env, exit_file, s.name)
            return run
        run.log = os.path.join(repo.root, ".para", "logs", f"{s.name}.log")
        proc = await agents.launch_headless(argv, s.worktree, env, run.log, exit_file)
        run.pid = proc.pid
        asyncio.create_task(self._reap(repo, s.name, proc))
        return run

    async def _reap(self, repo: Repo, name: str, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        await self._check_agents(repo, only=name)

    def agents_running(self) -> bool:
        """Whether an agent this sidecar follows is still at work (keeps an idle sidecar alive,
        so agent exits and plan steps are noticed when they happen)."""
        return any(s.agent is not None and s.agent.exit_code is None and not s.agent.lost
                   for repo in self.repos.values() for s in repo.store.live())

    def editor_available(self) -> bool:
        return False  # replaced by the transport when editors can connect

    async def editor_request(self, params: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        return None  # replaced by the transport

    async def _poll_agents(self, repo: Repo) -> None:
        """Notice agents that ended (exit file written) or vanished. No git is run here."""
        while True:
            await asyncio.sleep(AGENT_POLL_SECONDS)
            try:
                await self._check_agents(repo)
            except Exception:
                log.exception("agent poll failed")

    async def _check_agents(self, repo: Repo, only: str | None = None) -> None:
        for s in repo.store.all():  # integrated sessions too: their agent exits after landing
            run = s.agent
            if run is None or run.exit_code is not None or run.lost or (only and s.name != only):
                continue
            ended = _read_json(run.exit_file) if run.exit_file else None
            if ended is not None:
                run.exit_code, run.ended_at = ended.get("exit_code"), ended.get("ended_at")
            elif run.pid and not agents.pid_alive(run.pid) and time.time() - run.started_at > 2:
                ended = _read_json(run.exit_file) if run.exit_file else None  # written just now?
                if ended is not None:
                    run.exit_code, run.ended_at = ended.get("exit_code"), ended.get("ended_at")
                else:
                    run.lost, run.ended_at = True, now()
            else:
                continue
            repo.store.save(s)
            self.emit(repo, "agent_exited", s.name, exit_code=run.exit_code, lost=run.lost, status=s.status.value)
            await self._advance_plans(repo)

    async def report(self, p: ReportParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        s = self._find(repo, p.session, p.cwd)
        task = p.task.strip()
        if not task or len(task) > 500 or "\0" in task:
            raise ParaError(Code.invalid_input, "the status text must be 1 to 500 characters")
        done = total = None
        if p.todos is not None:
            m = re.fullmatch(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*", p.todos)
            if not m or int(m.group(1)) > int(m.group(2)):
                raise ParaError(Code.invalid_input, f"--todos must look like DONE/TOTAL with DONE <= TOTAL, "
                                f"got {p.todos!r}")
            done, total = int(m.group(1)), int(m.group(2))
        if s.status not in (Status.active, Status.conflicted, Status.integrating):
            raise ParaError(Code.wrong_state, f"session {s.name!r} is {s.status.value}; status reports are for "
                            "sessions at work", session=s.name)
        prev = s.report
        s.report = Report(task=task, tests=p.tests or (prev.tests if prev else "unknown"),
                          todos_done=done if done is not None else (prev.todos_done if prev else None),
                          todos_total=total if total is not None else (prev.todos_total if prev else None),
                          blocked=(p.blocked.strip() or None) if p.blocked is not None else None)
        repo.store.save(s)
        self.emit(repo, "status", s.name, **to_builtins(s.report))
        return {"session": s.name, "report": to_builtins(s.report)}

    async def status(self, p: StatusParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        if p.session is not None or (not p.all and self._session_at(repo, os.path.realpath(p.cwd))):
            sessions = [self._find(repo, p.session, p.cwd, history=True)]
        else:
            sessions = [s for s in repo.store.live() if s.status is not Status.cancelled]
        evidence = await asyncio.gather(*(self._evidence(repo, s, cfg) for s in sessions))
        return {"repo": repo.root, "sessions": evidence,
                "plans": [to_builtins(pl) for pl in repo.store.plans() if pl.state == "running"]}

    async def _evidence(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> dict[str, Any]:
        """What the agent says (its report) next to what the sidecar sees for itself."""
        run = s.agent
        agent = None
        activity = [s.created_at, s.updated_at]
        if run is not None:
            alive = run.exit_code is None and not run.lost and agents.pid_alive(run.pid)
            state = ("running" if alive else "lost" if run.lost else "exited" if run.exit_code == 0
                     else "failed" if run.exit_code is not None else "unknown")
            agent = {"profile": run.profile, "mode": run.mode, "pid": run.pid, "state": state,
                     "exit_code": run.exit_code, "started_at": run.started_at, "ended_at": run.ended_at,
                     "log": run.log, "window": run.window}
            activity += [run.started_at, run.ended_at or 0, _mtime(run.log)]
        if s.report:
            activity.append(s.report.updated_at)
        ahead, diffstat = None, None
        if os.path.isdir(s.worktree):
            gitdir = _worktree_gitdir(s.worktree)
            if gitdir:
                activity += [_mtime(os.path.join(gitdir, "index")), _mtime(os.path.join(gitdir, "logs", "HEAD"))]
            try:
                ahead = await git.count(s.worktree, f"{s.base_commit}..HEAD")
                diffstat = await git.out(s.worktree, "diff", "--shortstat", s.base_commit)
            except ParaError:
                pass
        last = max(a for a in activity if a)
        return {"name": s.name, "status": s.status.value, "task": s.task,
                "report": to_builtins(s.report) if s.report else None, "agent": agent, "ahead": ahead,
                "diffstat": diffstat, "last_activity": last,
                "stale": s.status is Status.active and time.time() - last > cfg["agent.stale_after"],
                "plan": s.plan, "integration": s.integration}

    async def wait(self, p: WaitParams) -> dict[str, Any]:
        """Block until one of the named sessions (all live ones if none named) changes
        status, its agent ends, or `timeout` seconds pass."""
        repo = await self.repo(p.cwd)
        timeout = max(0.0, min(float(p.timeout), 3600.0))
        for name in p.sessions:
            validate_session_name(name)

        def snapshot() -> dict[str, tuple]:
            rows = {s.name: s for s in repo.store.all()}
            names = p.sessions or [s.name for s in repo.store.live()]
            return {n: ((rows[n].status.value, rows[n].agent.exit_code if rows[n].agent else None,
                         rows[n].agent.lost if rows[n].agent else None) if n in rows else None) for n in names}

        unknown = [n for n in p.sessions if n not in {s.name for s in repo.store.all()}]
        if unknown:
            raise ParaError(Code.not_found, f"no session named {', '.join(unknown)}", sessions=unknown)
        before = snapshot()
        deadline = time.monotonic() + timeout
        changed: list[str] = []
        while not changed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            tick = repo.tick
            try:
                await asyncio.wait_for(tick.wait(), remaining)
            except asyncio.TimeoutError:
                break
            after = snapshot()
            changed = [n for n in after if after[n] != before.get(n)]
        rows = {s.name: s for s in repo.store.all()}
        return {"changed": changed, "timed_out": not changed,
                "sessions": {n: {"status": rows[n].status.value,
                                 "agent_exit_code": rows[n].agent.exit_code if rows[n].agent else None,
                                 "integration": rows[n].integration} for n in before if n in rows}}

    async def diff(self, p: DiffParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        s = self._find(repo, p.session, p.cwd, history=True)
        tip, dirty = await self._session_commit(s)
        tip = tip or await git.resolve(repo.root, f"refs/heads/{s.branch}") or s.head_commit
        if tip is None:
            raise ParaError(Code.not_found, f"session {s.name!r} has no commits to show", session=s.name)
        fork = await git.merge_base(repo.root, s.base_commit, tip) or s.base_commit
        stat = await git.out(repo.root, "diff", "--stat", fork, tip)
        result = {"session": s.name, "base": fork, "commit": tip, "includes_uncommitted": dirty, "stat": stat}
        if not p.stat_only:
            patch = (await git.run(repo.root, "diff", fork, tip)).out
            limit = max(1000, min(p.max_bytes, 5_000_000))
            result["truncated"] = len(patch) > limit
            result["patch"] = patch[:limit]
        return result

    async def plans(self, p: RepoParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        return {"plans": [to_builtins(pl) for pl in repo.store.plans()]}

    async def _dispatch_plan(self, repo: Repo, cfg: dict[str, Any], p: DispatchParams, prof: agents.Profile,
                             mode: str) -> dict[str, Any]:
        if p.name is not None:
            raise ParaError(Code.invalid_input, "a plan names its sessions after its task files; drop the name")
        if p.files:
            entries = []
            for f in p.files:
                path = agents.find_task_file(repo.root, p.cwd, f)
                m = agents.TASK_RE.fullmatch(path.name)
                if not m:
                    raise ParaError(Code.invalid_input, f"{path.name} is not named TASK_<n>_<slug>.md")
                entries.append((int(m.group(1)), m.group(2), path))
            entries.sort(key=lambda t: (t[0], t[1]))
            source = ", ".join(str(e[2]) for e in entries)
        else:
            directory = agents.find_task_file(repo.root, p.cwd, p.file)
            # Each entry is checked too: a TASK file may be a symlink pointing out of the repository.
            entries = [(n, slug, agents.find_task_file(repo.root, p.cwd, str(path)))
                       for n, slug, path in agents.plan_files(directory)]
            source = str(directory)
        names: set[str] = set()
        steps: list[PlanStep] = []
        for number, _, path in entries:
            agents.read_task(path)  # refuse empty or unreadable files before anything starts
            name = agents.task_name(path) or "task"
            base_name, n = name, 2
            while name in names or repo.store.get(name) is not None:
                name, n = f"{base_name}-{n}", n + 1
            validate_session_name(name)
            names.add(name)
            if not steps or steps[-1].number != number:
                steps.append(PlanStep(number=number, tasks=[]))
            steps[-1].tasks.append(PlanTask(file=str(path), name=name))
        plan = repo.store.save_plan(Plan(source=source, steps=steps, agent=prof.name, mode=mode,
                                         profile={"command": prof.command, "headless": prof.headless,
                                                  "skip_permissions": prof.skip_permissions},
                                         workflow=cfg["agent.workflow"],
                                         skip_permissions=p.skip_permissions, base=p.base))
        self.emit(repo, "plan_started", None, plan=plan.id, steps=[[t.name for t in st.tasks] for st in steps])
        try:
            await self._start_step(repo, plan, p.cwd, p.env)
        except ParaError as e:
            plan.state, plan.reason = "failed", e.message
            repo.store.save_plan(plan)
            self.emit(repo, "plan_failed", None, plan=plan.id, reason=e.message)
            raise
        return {"plan": to_builtins(plan)}

    async def _start_step(self, repo: Repo, plan: Plan, cwd: str, env: dict[str, str]) -> None:
        cfg = {**repo.config(env), "agent.workflow": plan.workflow}
        prof = (agents.Profile(plan.agent, **plan.profile) if plan.profile
                else agents.profile(plan.agent, cfg["agents"]))
        step = plan.steps[plan.current]
        for t in step.tasks:
            result = await self._dispatch_one(repo, cfg, name=t.name, task=agents.read_task(Path(t.file)),
                                              source=t.file, prof=prof, mode=plan.mode,
                                              skip=plan.skip_permissions, base=plan.base, cwd=cwd, env=env,
                                              plan=plan.id)
            t.session_id, t.state = repo.store.get(result["name"]).id, "running"
            repo.store.save_plan(plan)
        self.emit(repo, "plan_step", None, plan=plan.id, step=step.number, sessions=[t.name for t in step.tasks])

    async def _advance_plans(self, repo: Repo) -> None:
        """Move every running plan along: next step when the current one is integrated,
        failed when one of its sessions cannot land anymore."""
        async with repo.plan_lock:
            for plan in repo.store.plans("running"):
                step = plan.steps[plan.current]
                failed = None
                for t in step.tasks:
                    s = repo.store.by_id(t.session_id) if t.session_id else None
                    if s is None:
                        continue
                    if s.status is Status.integrated:
                        t.state = "integrated"
                    elif s.status is Status.cancelled:
                        t.state, failed = "failed", f"session {s.name} was cancelled"
                    elif s.agent and (s.agent.lost or s.agent.exit_code is not None) and \
                            s.status in (Status.active, Status.review):
                        t.state = "failed"
                        failed = (f"the agent of {s.name} exited with status {s.agent.exit_code} "
                                  "without integrating" if not s.agent.lost else f"the agent of {s.name} vanished")
                if failed:
                    plan.state, plan.reason = "failed", failed
                    repo.store.save_plan(plan)
                    self.emit(repo, "plan_failed", None, plan=plan.id, step=step.number, reason=failed)
                    continue
                if all(t.state == "integrated" for t in step.tasks):
                    plan.current += 1
                    if plan.current == len(plan.steps):
                        plan.state = "done"
                        repo.store.save_plan(plan)
                        self.emit(repo, "plan_done", None, plan=plan.id)
                        continue
                    repo.store.save_plan(plan)
                    try:
                        await self._start_step(repo, plan, repo.root, {})
                    except ParaError as e:
                        plan.state, plan.reason = "failed", e.message
                        self.emit(repo, "plan_failed", None, plan=plan.id, reason=e.message)
                repo.store.save_plan(plan)

    # -- cancel / recover / resume

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

    # -- clean

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
                repo.store.delete(by_name[a["session"]])
            elif a["kind"] == "delete_branch":
                if not a["integrated"]:  # forced: keep the commits reachable for the backup period
                    await git.update_ref(repo.root, f"refs/para/backup/clean/{stamp}/{a['branch']}", a["commit"])
                await git.delete_branch(repo.root, a["branch"])
            elif a["kind"] == "delete_backup":
                await git.delete_ref(repo.root, a["ref"])

    # -- config and events

    async def config(self, p: ConfigParams) -> dict[str, Any]:
        root = None
        if p.cwd is not None:
            try:
                root = (await self.repo(p.cwd)).root
            except ParaError:
                if p.scope == "project":
                    raise
        paths = {"user": str(config.user_config_path())}
        if root:
            paths["project"] = str(config.project_config_path(root))
        if p.action == "path":
            return {"paths": paths}
        if p.action == "set":
            if p.key is None or p.value is None:
                raise ParaError(Code.invalid_input, "config set needs a key and a value")
            if p.scope not in paths:
                raise ParaError(Code.invalid_input, "project config needs a repository (cwd)")
            stored = config.write_key(Path(paths[p.scope]), p.key, p.value)
            return {"key": p.key, "value": stored, "scope": p.scope, "path": paths[p.scope]}
        eff = config.effective(root, p.env)
        if p.action == "get":
            if p.key is None:
                raise ParaError(Code.invalid_input, "config get needs a key")
            return {"key": config.check_key(p.key), **eff[p.key]}
        return {"paths": paths, "values": eff,
                "env": {config.env_name(k): k for k in config.KEYS},
                "descriptions": {k: d for k, (_, _, d) in config.KEYS.items()}}

    async def events(self, p: EventsParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        return {"events": repo.store.events(p.after, max(1, min(p.limit, 1000)))}

    # ---- crash repair ------------------------------------------------------

    @staticmethod
    def _require(s: Session, allowed: Status | tuple[Status, ...], verb: str) -> None:
        allowed = allowed if isinstance(allowed, tuple) else (allowed,)
        if s.op is not None:
            raise ParaError(Code.wrong_state, f"session {s.name!r} has an interrupted {s.op.kind}; "
                            "it is repaired when the sidecar restarts", session=s.name)
        if s.status not in allowed:
            raise ParaError(Code.wrong_state, f"cannot {verb} session {s.name!r}: it is {s.status.value}",
                            session=s.name, status=s.status.value)

    async def _repair_integration(self, repo: Repo, s: Session) -> None:
        """The target is at the old or the new commit (it moves by compare-and-swap):
        complete the landing if it moved, else put the session back as it was."""
        rec, d = s.integration or {}, s.op.data
        target = d.get("target") or rec.get("target")
        tip = await git.resolve(repo.root, f"refs/heads/{target}")
        if d.get("new") and tip == d["new"]:
            if d["new"] != d.get("old"):
                await integrate.sync_checkout_after_crash(repo.root, target, d["old"], d["new"])
            await self._after_landing(repo, s, d["new"], d["old"], repo.config({}))
            return
        if os.path.isdir(s.worktree) and rec.get("pre") and await git.in_progress(s.worktree):
            await integrate.abort_in(s.worktree, rec["pre"])
        s.status = Status(rec.get("resume_status", "active"))
        s.op, s.integration = None, None
        s.notes.append(f"an integration into {target} was interrupted by a sidecar crash; "
                       f"{target} was left unchanged at {(tip or '?')[:10]}")
        repo.store.save(s)

    async def _repair(self, repo: Repo, s: Session) -> None:
        """Finish or undo the operation a crashed sidecar left in `s.op`."""
        kind = s.op.kind
        try:
            if kind == "start":
                wts = await self._worktree_state(repo)
                tip = await git.resolve(repo.root, f"refs/heads/{s.branch}")
                if s.worktree in wts and tip and (tip != s.base_commit or await git.status(s.worktree)):
                    s.op = None  # someone already works there: keep it
                    repo.store.save(s)
                else:
                    await self._undo_start(repo, s)
            elif kind == "finish":
                await self._do_finish(repo, s)
            elif kind == "cancel":
                await self._do_cancel(repo, s)
            elif kind == "recover":
                await self._do_recover(repo, s)
            elif kind == "resume":
                await self._do_resume(repo, s)
            elif kind == "integrate":
                await self._repair_integration(repo, s)
            else:
                log.warning("unknown pending op %s on %s", kind, s.name)
                return
            self.emit(repo, "repaired", s.name, op=kind)
        except ParaError as e:
            note = f"could not repair interrupted {kind}: {e.message}"
            log.warning("%s: %s", s.name, note)
            if note not in s.notes:
                s.notes.append(note)
                repo.store.save(s)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _mtime(path: str | None) -> float:
    try:
        return os.stat(path).st_mtime if path else 0.0
    except OSError:
        return 0.0


def _worktree_gitdir(worktree: str) -> str | None:
    """The private git dir of a linked worktree, read from its `.git` file (no git process)."""
    try:
        text = Path(worktree, ".git").read_text()
    except OSError:
        return None
    return text.split("gitdir:", 1)[1].strip() if text.startswith("gitdir:") else None


def _check_message(message: str) -> str:
    message = message.strip()
    if not message:
        raise ParaError(Code.invalid_input, "the commit message is empty")
    if "\0" in message:
        raise ParaError(Code.invalid_input, "the commit message contains a NUL byte")
    return message


def _ensure_excluded(common_dir: str) -> None:
    """Keep para's files out of every worktree's `git status` via info/exclude
    (shared by all worktrees), never by editing a tracked .gitignore."""
    path = Path(common_dir, "info", "exclude")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    missing = [line for line in EXCLUDE_LINES if line not in text.splitlines()]
    if missing:
        sep = "" if not text or text.endswith("\n") else "\n"
        tmp = path.with_name(f".exclude.{os.getpid()}.tmp")
        tmp.write_text(text + sep + "# para_rpc\n" + "\n".join(missing) + "\n")
        os.replace(tmp, path)
