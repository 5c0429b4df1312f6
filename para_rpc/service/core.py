"""The service's core: repositories, events, lookups shared by every operation.

Each repository gets a `Repo` with its store, a lock for structural git operations
(worktree add/remove, branch create/rename/delete: concurrent `git worktree add` on one
repository is racy), one lock per session and one integration queue per target.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from para_rpc import PROTOCOL_VERSION, __version__, config, git
from para_rpc.errors import Code, ParaError
from para_rpc.model import Session, SessionInfo, Status, now
from para_rpc.names import validate_branch_name, validate_session_name
from para_rpc.params import ConfigParams, EventsParams, HelloParams
from para_rpc.store import Store

log = logging.getLogger("para.service")

EXCLUDE_LINES = ("/.para/*", "!/.para/config.json", "/.para-agent.md")
WIP_MESSAGE = "para: work in progress saved by `para cancel`"
STATUS_CONCURRENCY = 8
AGENT_POLL_SECONDS = 1.0


def _utc_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


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


class ServiceCore:
    """State and helpers every operation uses."""

    def __init__(self, notify: Callable[[str, dict[str, Any]], None] | None = None,
                 socket: str = "") -> None:
        self.socket = socket  # given to agents so their `para` reaches this sidecar
        self.repos: dict[str, Repo] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._where_cache: dict[str, git.Where] = {}  # cwd -> repository facts (2 git calls saved)
        self.notify = notify or (lambda method, payload: None)
        self.started_at = now()
        self.busy = 0  # operations in flight (the sidecar waits for them before exiting)

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
            report=s.report, plan=s.plan, notes=list(s.notes),
            outside_changes=list(s.outside_changes))

    @staticmethod
    def _require(s: Session, allowed: Status | tuple[Status, ...], verb: str) -> None:
        allowed = allowed if isinstance(allowed, tuple) else (allowed,)
        if s.op is not None:
            raise ParaError(Code.wrong_state, f"session {s.name!r} has an interrupted {s.op.kind}; "
                            "it is repaired when the sidecar restarts", session=s.name)
        if s.status not in allowed:
            raise ParaError(Code.wrong_state, f"cannot {verb} session {s.name!r}: it is {s.status.value}",
                            session=s.name, status=s.status.value)

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

    async def hello(self, p: HelloParams) -> dict[str, Any]:
        return {"name": "para", "version": __version__, "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                "started_at": self.started_at, "repos": sorted(r.root for r in self.repos.values()),
                "busy": self.busy}

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
