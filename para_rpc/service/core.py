"""The service's core: repositories, events, lookups shared by every operation.

Each repository gets a `Repo` with its store, a lock for structural git operations
(worktree add/remove, branch create/rename/delete: concurrent `git worktree add` on one
repository is racy), one lock per session and one integration queue per target.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from para_rpc import (
    PROTOCOL_VERSION,
    __version__,
    agents,
    config,
    executors,
    git,
    trust,
    watch,
)
from para_rpc.errors import Code, ParaError
from para_rpc.model import (
    DomainEvent,
    Session,
    Status,
    integration_record,
    now,
    queue_position,
)
from para_rpc.names import validate_branch_name, validate_session_name
from para_rpc.params import ConfigParams, EventsParams, HelloParams
from para_rpc.results import ListResult, SessionDetail
from para_rpc.service.ports import Ports
from para_rpc.store import Store

if TYPE_CHECKING:
    from para_rpc.service.hooking import RunningHook

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


# Control characters other than newline and tab would reach terminals (the agent's, `para list`'s,
# the editors') as such: refused in every free text para keeps and shows.
_CONTROL = {chr(c) for c in range(32) if chr(c) not in "\n\t"} | {"\x7f"}


def check_text(text: str, what: str, limit: int) -> str:
    """Free text a person or agent sends (follow-ups, status reports): stripped, 1..limit
    characters, no control characters."""
    text = text.strip()
    if not text:
        raise ParaError(Code.invalid_input, f"{what} is empty")
    if len(text) > limit:
        raise ParaError(Code.invalid_input, f"{what} is {len(text)} characters; at most {limit}")
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in _CONTROL})
    if bad:
        raise ParaError(Code.invalid_input, f"{what} contains control characters ({', '.join(bad[:5])}); "
                        "send plain text")
    return text


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


def _stat_key(paths: list[str]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What a file's content may have changed from: inode (git replaces files by renaming
    a new one over them), size, and modification and change times."""
    out: list[tuple[int, int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def _still_within(cwd: str, where: git.Where) -> bool:
    """Whether `cwd` still belongs to the working tree git once named for it: no `.git` came
    to be in it or on the way up to that tree's top (`git init` there, a clone moved in, red
    team rtl: requests from it went to the outer repository, `start` made its sessions there),
    and that top still has its own. An lstat or so per directory between the two."""
    if where.toplevel is None:
        return True  # (a bare repository or a .git directory: refused either way)
    top, here = os.path.realpath(where.toplevel), os.path.realpath(cwd)
    while here != top:
        if os.path.lexists(os.path.join(here, ".git")):
            return False
        up = os.path.dirname(here)
        if up == here:
            return False  # (not below its top at all now: asked of git again)
        here = up
    return os.path.lexists(os.path.join(top, ".git"))


def _repo_files_key(repo: Repo, also: str) -> tuple[tuple[int, int, int, int] | None, ...]:
    """`_stat_key` of the configuration a git answer depends on: the repository's config, the
    user's git files and `also` (a path under the common directory)."""
    return _stat_key([os.path.join(repo.common_dir, "config"), os.path.join(repo.common_dir, also),
                      *_user_git_files()])


def _user_git_files() -> list[str]:
    """The user's git configuration and global excludes (their default places; a moved
    core.excludesFile is not followed, it is rarely edited while sessions run)."""
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return [os.path.join(home, ".gitconfig"), os.path.join(xdg, "git", "config"), os.path.join(xdg, "git", "ignore")]


def _identity(path: str) -> tuple[int, int]:
    """What makes two paths the same directory (a bind mount shows one directory at two paths)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _holds(repo: Repo) -> bool:
    """Whether the lock file this sidecar holds for `repo` is still the one at its path: a
    repository deleted and made again, or its `.para/` removed, has another one or none."""
    try:
        held, there = os.fstat(repo.lock_fd), os.stat(repo.lock_path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return _identity(str(a)) == _identity(str(b))
    except OSError:
        return False


def _through_link(best: Session, other: Session) -> bool:
    """Two sessions' worktrees resolve to one directory (one's was replaced by a symlink to
    the other's): it is the session whose path is the directory itself, never the one whose
    path only leads there (then `para cancel` inside it would cancel the wrong one)."""
    return os.path.islink(best.worktree) and not os.path.islink(other.worktree)


def _canonical_cwd(repo: Repo, cwd: str) -> str:
    """`cwd` resolved, and seen through the path para knows the repository by when it is
    under another view of the main worktree (a bind mount: no symlink to resolve)."""
    here = os.path.realpath(cwd)
    if here == repo.root or here.startswith(repo.root + os.sep):
        return here
    try:
        root = _identity(repo.root)
        head = here
        tail: list[str] = []
        while _identity(head) != root:
            parent, name = os.path.split(head)
            if parent == head:
                return here
            head, tail = parent, [name, *tail]
    except OSError:
        return here
    return os.path.join(repo.root, *tail)


def _as_made(s: Session, tip: str) -> git.Worktree | None:
    """The session's worktree as `git worktree list` would list it, read from the files git
    lists it from, when they are as para made them: its `.git` names the git directory para
    made, whose `gitdir` names this worktree back and whose HEAD is on the session branch,
    at `tip`. None when anything differs (git is asked then). No git process."""
    if not s.git_dir or not git.names_git_dir(s.worktree, s.git_dir):
        return None
    path = os.path.realpath(s.worktree)
    try:
        named = git.read_regular(os.path.join(s.git_dir, "gitdir"), 8192).strip()
        if os.path.realpath(named) != os.path.join(path, ".git") \
                or git.symbolic_ref_file(s.git_dir, "HEAD") != s.branch:
            return None
    except (OSError, UnicodeDecodeError, LookupError):
        return None
    return git.Worktree(path, tip, s.branch)


def _mounts_under(path: str) -> list[str]:
    """Mount points inside `path` (from /proc/self/mountinfo). `git worktree remove --force`
    descends into a mount as into any directory, deletes the files of the filesystem mounted
    there (a bind mount of a directory outside the repository included), then fails on the
    busy mount point and leaves the worktree half removed."""
    top = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            points = [line.split()[4] for line in f if len(line.split()) > 4]
    except OSError:
        return []
    # mountinfo escapes blanks, tabs, newlines and backslashes as octal
    decoded = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p) for p in points]
    return sorted({p for p in decoded if p.startswith(top + os.sep)})


def _private_dir(path: Path) -> None:
    """`.para/` holds agents' full output and prompts: 0700, also when it already existed."""
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as e:  # not ours: leave it, the files inside are still 0600
            log.warning("cannot make %s private: %s", path, e)


@dataclass
class WorktreeFacts:
    """What a session's worktree holds besides its branch, read before it is committed or removed."""

    branch: str | None             # what HEAD is on (None: detached)
    head: str | None               # HEAD's commit (None: an unborn branch)
    unkept: int                    # commits at HEAD no branch holds (counted when HEAD is off the session branch)
    status: list[str]              # `git.status` of the worktree
    embedded: list[git.Embedded]   # submodules and nested repositories with their own git directory
    gitlinks: set[str]             # the gitlinks in its index (submodules, initialised or not)

    def nested(self) -> list[str]:
        """Nested repositories: kept out of the session's commits (saved on their own)."""
        return [e.path for e in self.embedded if not e.submodule]


def _unused(objects: str, live: Callable[[], set[str]]) -> bool:
    return objects not in live()


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
    # The integrations waiting in each target's queue, in the order they came (Integration
    # lands those it can together: `_land_together`).
    landings: dict[str, list[Any]] = field(default_factory=dict)
    # Session branches waiting for `lock` to be deleted ({branch: (the tip kept, its answer)}):
    # Integration deletes them together (`_delete_branch`).
    deleting: dict[str, tuple[str | None, asyncio.Future[str | None]]] = field(default_factory=dict)
    plan_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tick: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) on every event
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set once its crash repairs are done
    poller: asyncio.Task[None] | None = None

    @property
    def lock_path(self) -> str:
        return os.path.join(self.root, ".para", "sidecar.lock")

    def worktrees_dir(self, cfg: dict[str, Any]) -> str:
        """Where session worktrees go (config `worktrees_dir`, else `.para/worktrees`), with
        symlinks resolved: git reports worktree paths resolved, and para compares with those."""
        chosen = config.usable(cfg.get("worktrees_dir"))  # a project file's: only once approved (trust.py)
        d = os.path.join(self.root, os.path.expanduser(chosen or os.path.join(".para", "worktrees")))
        d = os.path.realpath(d)
        para_dir = os.path.realpath(os.path.join(self.root, ".para"))
        if (d + os.sep).startswith(self.root + os.sep) and not d.startswith(para_dir + os.sep):
            # Worktrees inside the main checkout would show up in its `git status`.
            raise ParaError(Code.config_error, f"worktrees_dir {d} is inside the main checkout {self.root}; "
                            "put it outside the repository or under .para/")
        return d

    def worktree_path(self, cfg: dict[str, Any], name: str) -> str:
        return os.path.join(self.worktrees_dir(cfg), name)

    def session_lock(self, name: str) -> asyncio.Lock:
        return self.session_locks.setdefault(name, asyncio.Lock())

    def target_lock(self, branch: str) -> asyncio.Lock:
        """The integration queue of one target branch (asyncio.Lock wakes waiters FIFO)."""
        return self.target_locks.setdefault(branch, asyncio.Lock())

    def config(self, env: dict[str, str]) -> dict[str, Any]:
        trust.forbid_agent_env(env)  # an agent's own PARA_AGENTS, PARA_INTEGRATE_CHECK, ...: refused
        # Commands from the project file that the user has not approved stand there as errors.
        return trust.settle(self.common_dir, config.effective(self.root, env))


class ServiceCore:
    """State and helpers every operation uses."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Dispatching, Repair, Hooks)
        async def _release_frozen(self, repo: Repo, final: bool = False) -> list[str]: ...
        def _remember_repo(self, repo: Repo) -> None: ...
        @staticmethod
        def _journal_frozen(repo: Repo, s: Session, stopped: dict[int, int]) -> None: ...
        async def _advance_plans(self, repo: Repo) -> None: ...
        async def _poll_agents(self, repo: Repo) -> None: ...
        async def _repair(self, repo: Repo, s: Session) -> None: ...
        async def _adopt_para_on_open(self, repo: Repo) -> None: ...

    def __init__(self, ports: Ports | None = None, socket: str = "") -> None:
        self.socket = socket  # given to agents so their `para` reaches this sidecar
        self.repos: dict[str, Repo] = {}
        self._by_identity: dict[tuple[int, int], Repo] = {}  # (st_dev, st_ino) of the common dir
        self._opening: dict[tuple[int, int], asyncio.Lock] = {}
        self._where_cache: dict[str, git.Where] = {}  # cwd -> repository facts (2 git calls saved)
        self.ports = ports or Ports()
        self.started_at = now()
        self.busy = 0  # operations in flight (the sidecar waits for them before exiting)
        # session name -> warnings of the teardown an operation ran, until its result takes them
        self._pending_teardown: dict[str, list[str]] = {}
        # session name -> (pid -> start time of the agent processes `_agent_frozen` holds, pids spared)
        self._frozen_now: dict[str, tuple[dict[int, int], set[int]]] = {}
        self.hooks: dict[int, RunningHook] = {}  # setup/teardown hooks in flight, by pid (hooking.py)
        # `git status` answers by worktree, valid while nothing they depend on changed (_dirty)
        self.watcher = watch.Watcher()
        self._dirty_cache: dict[str, tuple[object, bool]] = {}
        # The start of each worktree's `.git` file, by resolved path, with the watcher's token
        # it was read under (_dotgit)
        self._dotgits: dict[str, tuple[object, tuple[bytes, str | None]]] = {}
        # Worktrees whose last `git status` failed (by resolved path): git's reason, said in the
        # session's notes while it lasts (such a worktree counts as dirty, never as clean).
        self._status_failed: dict[str, str] = {}
        self._status_changes = 0  # (moves with `_status_failed`: `list` keeps its answer while it holds)
        # `list`'s last answer by repository, with what it was made from (sessions.py `_list_key`)
        self._lists: dict[tuple[str, bool, str], tuple[object, tuple[str, ...], object, ListResult]] = {}
        # Conflict forecasts: pure functions of commit ids, kept; a dirty worktree's snapshot
        # commit, kept while its `_dirty_cache` key holds (service/integration.py `conflicts`).
        self._snapshots: dict[str, tuple[object, str]] = {}
        # `git worktree list` and the branches by repository, for `list` (_listed_refs)
        self._listed: dict[str, tuple[object, dict[str, git.Worktree], dict[str, tuple[str, int]]]] = {}
        self._forecasts: dict[tuple[object, str, str], tuple[bool, list[str], dict[str, list[list[int]]]] | None] = {}
        self._bases: dict[tuple[str, ...], str] = {}
        self._changed_paths: dict[tuple[str, str], dict[str, str]] = {}

    async def repo(self, cwd: object) -> Repo:
        if not isinstance(cwd, str) or not cwd or not os.path.isabs(cwd):
            raise ParaError(Code.invalid_input, f"cwd must be an absolute path, got {cwd!r}")
        if not os.path.isdir(cwd):
            raise ParaError(Code.not_a_repository, f"directory does not exist: {cwd}")
        where = self._where_cache.get(cwd)
        if where is None or not os.path.isdir(where.common_dir) or not _still_within(cwd, where):
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
        if repo is not None and repo.ready.is_set() and not _holds(repo):
            self._drop_stale(repo)
            repo = None
        if repo is None:
            # Another view of a repository already open (a bind mount: another path, the
            # same directory) is the same repository, not a second one to lock.
            ident = _identity(where.common_dir)
            repo = self._by_identity.get(ident)
            if repo is None:
                async with self._opening.setdefault(ident, asyncio.Lock()):
                    repo = self._by_identity.get(ident) or await self._open(where)
        if not repo.ready.is_set():
            # Being opened by another request (or by the start's reopening of known repositories):
            # nothing acts on it before what a crash left there is repaired.
            await repo.ready.wait()
            if repo.root not in (r.root for r in self.repos.values()):
                return await self.repo(cwd)  # its opening failed: try again, and say why
        return repo

    async def _open(self, where: git.Where) -> Repo:
        main = (await git.worktrees(where.common_dir))[0]
        if main.bare:
            raise ParaError(Code.not_a_repository, f"{where.common_dir} has no main working tree")
        root = main.path
        para_dir = Path(root, ".para")
        _private_dir(para_dir)
        _ensure_excluded(where.common_dir)
        fd = os.open(para_dir / "sidecar.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if holder == str(os.getpid()):  # a view of an open repository we could not recognise
                served = next((r.root for r in self.repos.values() if _same_file(r.lock_path, para_dir / "sidecar.lock")),
                              None)
                raise ParaError(Code.busy, f"{root} is a second path of a repository this sidecar already serves"
                                           + (f" as {served}" if served else "") + "; use that path") from None
            raise ParaError(Code.busy, f"{root} is served by another para sidecar (pid {holder or '?'}); "
                                       "stop it or use the same PARA_SOCKET") from None
        # From here on a failure must give the lock back: otherwise every later call is
        # `busy` against this very sidecar, even once the cause is gone.
        repo = None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            repo = Repo(where.common_dir, root, Store(para_dir / "para.db"), fd)
            self.repos[where.common_dir] = repo
            self._by_identity[_identity(where.common_dir)] = repo
            for s in repo.store.live():
                if s.git_dir and os.path.isdir(s.git_dir):
                    git.pin(s.worktree, s.git_dir, where.common_dir)  # (before anything runs git there)
            for s in repo.store.live():
                if s.op is not None:
                    await self._repair(repo, s)
            await self._release_frozen(repo)  # (after the repairs: they redo removals with it paused)
            await self._sweep_object_dirs(repo)  # (after the repairs: they end sessions)
            await self._remove_scratch(repo)
            await self._adopt_para_on_open(repo)
        except BaseException:
            self._forget(repo)
            if repo is not None:
                repo.store.close()
                repo.ready.set()
            os.close(fd)
            raise
        repo.ready.set()
        repo.poller = asyncio.create_task(self._poll_agents(repo))
        self._remember_repo(repo)
        return repo

    def session_name_at(self, cwd: str) -> str | None:
        """The live session whose worktree holds `cwd`, if its repository is open (no git)."""
        where = self._where_cache.get(cwd)
        repo = self.repos.get(where.common_dir) if where is not None else None
        s = self._session_at(repo, cwd) if repo is not None else None
        return s.name if s is not None else None

    def _drop_stale(self, repo: Repo) -> None:
        """`repo` was deleted (or its `.para/`) and perhaps made again at the same path (red
        team RA6): what is in memory describes a repository that is gone. Its store and lock
        are let go; the next request opens what is there now."""
        log.warning("%s is no longer the repository this sidecar opened (its .para/sidecar.lock was "
                    "removed or replaced): forgetting its sessions in memory and opening it again", repo.root)
        if repo.poller:
            repo.poller.cancel()
        self._forget(repo)
        repo.store.close()
        with contextlib.suppress(OSError):
            os.close(repo.lock_fd)

    def _forget(self, repo: Repo | None) -> None:
        for path in [k for k, r in self.repos.items() if r is repo]:
            del self.repos[path]
        for ident in [k for k, r in self._by_identity.items() if r is repo]:
            del self._by_identity[ident]

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
        self._by_identity.clear()

    def _executor(self, repo: Repo, name: str) -> executors.Executor:
        """The executor `name` as this repository's configuration defines it now."""
        if name == "local":
            return executors.get("local")
        try:
            table = config.usable(repo.config({})["executors"])
        except ParaError as e:
            log.warning("executors of %s unusable: %s", repo.root, e.message)
            table = {}
        return executors.get(name, table)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task held until it ends: the event loop keeps only a weak reference to a
        task, and one waiting on a future nothing else holds can be collected mid-flight."""
        held: set[asyncio.Task[Any]] = self.__dict__.setdefault("_spawned", set())
        task = asyncio.get_running_loop().create_task(coro)
        held.add(task)
        task.add_done_callback(held.discard)
        return task

    def emit(self, repo: Repo, kind: str, session: str | None, **data: Any) -> None:
        event = DomainEvent(repo=repo.root, **repo.store.append_event(kind, session, data))
        repo.tick.set()
        repo.tick = asyncio.Event()
        if kind in ("integrated", "cancelled", "conflicted") and session is not None:
            self._spawn(self._advance_plans(repo))
        self.ports.publish(event)

    def _find(self, repo: Repo, name: str | None, cwd: str, history: bool = False) -> Session:
        """The named session, else the one whose worktree holds `cwd` (most specific wins).
        With `history`, a name may also denote the latest integrated session of that name."""
        if name is not None:
            validate_session_name(name)
            s = repo.store.get(name)
            if s is None:
                latest = next((x for x in reversed(repo.store.all()) if x.name == name), None)
                if history:
                    s = latest
                elif latest is not None:  # "no session named" would be a lie: say what became of it
                    self._refuse_integrated(latest, "earlier")
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
            yield self._refind(repo, s, cwd)

    def _refind(self, repo: Repo, s: Session, cwd: str) -> Session:
        """`s` read again after waiting for its lock. A session that reached its end meanwhile
        (an integration that held the lock) is named as such, not as unknown."""
        now_ = repo.store.get(s.name)
        if now_ is None or now_.id != s.id:
            was = repo.store.by_id(s.id) if s.id is not None else None
            if was is not None:
                self._refuse_integrated(was, "while this command waited for it")
        return self._find(repo, s.name, cwd)

    @staticmethod
    def _refuse_integrated(s: Session, when: str) -> None:
        if s.status is Status.integrated:
            rec = s.integration or {}
            raise ParaError(Code.wrong_state, f"session {s.name!r} was integrated into {rec.get('target')} at "
                            f"{str(rec.get('commit'))[:10]} {when}; nothing is left to act on "
                            f"(`para show {s.name}` shows the landing)", session=s.name, status=s.status.value)

    def _session_at(self, repo: Repo, cwd: str, resolved: dict[str, str] | None = None,
                    live: list[Session] | None = None) -> Session | None:
        """(`resolved`: a dict of `git.realpath_in` the caller shares, if it resolves worktrees too;
        `live`: the store's live sessions, if the caller just read them.)"""
        here = _canonical_cwd(repo, cwd)
        best, best_path = None, ""
        resolved = {} if resolved is None else resolved
        for s in repo.store.live() if live is None else live:
            path = git.realpath_in(s.worktree, resolved)
            if (here == path or here.startswith(path + os.sep)) and (best is None or len(path) > len(best_path)
                                                                     or path == best_path and _through_link(best, s)):
                best, best_path = s, path
        return best

    async def _base(self, repo: Repo, requested: str | None, cfg: dict[str, Any]) -> tuple[str, str]:
        """The base branch and its commit: --base, else configured, else origin/HEAD, else the
        trunk: the branch the main checkout is on if it is named like one (init.defaultBranch,
        main, master: on `master` with a stale `main`, master), else init.defaultBranch, main,
        master, else whatever branch the main checkout is on. A feature branch the user
        happens to have checked out is not the trunk while a trunk-named branch exists."""
        if requested is not None:
            candidates = [validate_branch_name(requested, "base branch")]
        elif cfg["base_branch"]:
            candidates = [cfg["base_branch"]]
        else:
            candidates = await self._base_candidates(repo, default=False)

        async def first_with_a_commit(branches: list[str]) -> tuple[str, str] | None:
            with contextlib.suppress(LookupError):  # (the first as its loose ref says, mostly main)
                return (branches[0], git.branch_file(repo.common_dir, branches[0])) if branches else None
            # One listing for all of them (commits_of keeps exact names only).
            found = await git.commits_of(repo.root, [f"refs/heads/{b}" for b in dict.fromkeys(branches)])
            return next(((b, found[f"refs/heads/{b}"][0]) for b in branches if f"refs/heads/{b}" in found), None)
        base = await first_with_a_commit(candidates)
        if base is None and requested is None and not cfg["base_branch"]:
            # (the main or master checked out has no commit yet: the whole order, init.defaultBranch too)
            candidates = await self._base_candidates(repo, default=True)
            base = await first_with_a_commit(candidates)
        if base is not None:
            return base
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

    async def _base_candidates(self, repo: Repo, default: bool) -> list[str]:
        """The branches `_base` tries, in order. HEAD and origin/HEAD are read from their files
        where those can answer (else from git). Without `default`, init.defaultBranch is not
        read when it cannot matter: with no origin/HEAD and the main checkout on main or master,
        that branch is tried first whatever the default is (two git processes fewer on every
        `para start`; `_base` asks again with `default` when it has no commit)."""
        async def symref(ref: str) -> str | None:
            try:
                return git.symbolic_ref_file(repo.common_dir, ref)
            except LookupError:
                return await git.symbolic_ref(repo.root, ref)
        origin, current = await symref("refs/remotes/origin/HEAD"), await symref("HEAD")
        candidates = [origin.split("/", 1)[1]] if origin and "/" in origin else []
        if not default and not candidates and current in ("main", "master"):
            return [current]
        trunks = [b for b in (await git.config_value(repo.root, "init.defaultBranch"), "main", "master") if b]
        return candidates + ([current] if current in trunks else []) + trunks + ([current] if current else [])

    async def _branch_exists(self, repo: Repo, branch: str) -> bool:
        """Whether `branch` exists: from git's files where they can say (`git.ref_in_files`)."""
        try:
            return git.ref_in_files(repo.common_dir, f"refs/heads/{branch}")
        except LookupError:
            return await git.branch_exists(repo.root, branch)

    async def _worktree_state(self, repo: Repo) -> dict[str, git.Worktree]:
        """Registered worktrees by resolved path: look a session's up with `os.path.realpath`
        (its stored path may go through a symlink, such as a symlinked .para/worktrees)."""
        return {w.path: w for w in await git.worktrees(repo.root)}

    async def _listed_key(self, repo: Repo) -> object:
        """What `_listed_refs` keeps its answer under: the watcher's tokens of the common
        directory's `refs/` and `worktrees/` (watched here first), None while they cannot be."""
        refs, wts_dir = os.path.join(repo.common_dir, "refs"), os.path.join(repo.common_dir, "worktrees")
        roots: list[tuple[str, tuple[str, ...]]] = [(refs, (repo.common_dir,)), (wts_dir, ())]
        unwatched = [(root, extra) for root, extra in roots if not self.watcher.watching(root) and os.path.isdir(root)]
        if self.watcher.available and unwatched:
            await asyncio.to_thread(self._watch_all_of, unwatched)
        a, b = self.watcher.tokens((refs, wts_dir))
        # No worktree added yet (or the last one went): the watch of the common directory
        # itself (`refs`' extra) sees `worktrees/` appear.
        return None if a is None else (a, b) if b is not None else (a, "none") if not os.path.isdir(wts_dir) else None

    async def _listed_refs(self, repo: Repo) -> tuple[dict[str, git.Worktree], dict[str, tuple[str, int]]]:
        """The worktrees and branches, as `list` shows them: kept while nothing moved under the
        common directory's `refs/` and `worktrees/` (branches, each worktree's HEAD, gitdir and
        lock), nor its packed-refs or HEAD (watch.py). Never for a decision: operations read git."""
        key = await self._listed_key(repo)
        hit = self._listed.get(repo.common_dir)
        if key is not None and hit is not None and hit[0] == key:
            return hit[1], hit[2]
        wts, branches = await asyncio.gather(self._worktree_state(repo), git.refs(repo.root, "refs/heads/"))
        if key is not None:
            self._listed[repo.common_dir] = (key, wts, branches)
        return wts, branches

    def _watch_all_of(self, roots: list[tuple[str, tuple[str, ...]]]) -> None:
        for root, extra in roots:
            self.watcher.watch(root, extra)

    async def _has_worktree(self, repo: Repo, s: Session) -> bool:
        """Whether the session's worktree really exists (registered, not prunable, on disk)."""
        wt = (await self._worktree_state(repo)).get(os.path.realpath(s.worktree))
        return wt is not None and not wt.prunable and os.path.isdir(s.worktree)

    def _info(self, repo: Repo, s: Session, wts: dict[str, git.Worktree], branches: dict[str, tuple[str, int]],
              dirty: bool = False, cwd: str | None = None, path: str | None = None,
              live: list[Session] | None = None, token: object = False) -> SessionDetail:
        """The session as every method that returns one sends it (list, show, start, ...);
        `path`: its worktree resolved, `live`: the store's live sessions, and `token`: the
        watcher's token of `path` (`_dotgit`), when the caller has them."""
        path = os.path.realpath(s.worktree) if path is None else path
        wt = wts.get(path)
        wt_exists = wt is not None and not wt.prunable and os.path.isdir(s.worktree)
        branch_ref = branches.get(f"refs/heads/{s.branch}")
        # What HEAD is on in the worktree: anything but the session branch (detached, an
        # orphan, another branch) holds work that finish, cancel and integrate would not see.
        head_branch = wt.branch if wt is not None and wt_exists else None
        off_branch = wt_exists and s.status is Status.active and head_branch != s.branch
        state = s.status.value
        if s.op is not None:
            state = f"{s.op.kind}-pending"
        elif s.status in (Status.active, Status.conflicted) and not (wt_exists and branch_ref):
            state = "missing"
        elif off_branch:
            state = "off-branch"
        elif s.status is Status.active and s.queued is not None:
            state = "queued"  # (over dirty: `dirty` still says so)
        elif s.status is Status.active and dirty:
            state = "dirty"
        current = cwd is not None and (cwd == path or cwd.startswith(path + os.sep))
        return SessionDetail(
            name=s.name, status=s.status, state=state, branch=s.branch, worktree=s.worktree,
            base_branch=s.base_branch, base_commit=s.base_commit, created_at=s.created_at,
            updated_at=s.updated_at, current=current, dirty=dirty, worktree_exists=wt_exists,
            branch_exists=branch_ref is not None, head=branch_ref[0] if branch_ref else s.head_commit, ahead=None,
            task=s.task, archived_branch=s.archived_branch,
            pending_op=s.op.kind if s.op else None, integration=integration_record(s.integration), agent=s.agent,
            report=s.report, plan=s.plan, notes=list(s.notes) + self._link_note(s, wt_exists, path, token)
                + (self._status_note(path) if wt_exists else []),
            head_branch=head_branch,
            detached=wt_exists and head_branch is None, outside_changes=list(s.outside_changes),
            queued=s.queued, queue_position=queue_position(repo.store.live() if live is None else live, s) if s.queued else None,
            messages=list(s.messages),
            ports=list(s.ports) if s.status in (Status.active, Status.conflicted, Status.integrating) else [])

    async def _sweep_object_dirs(self, repo: Repo) -> None:
        """The object directories of sandboxed sessions that have ended (or whose end a crash
        interrupted): their objects go into the common store, then their alternate line,
        then the directory (git.close_object_dir). A failure keeps all three: nothing lost."""
        def live() -> set[str]:  # (a cancelled session keeps its name, not its worktree or agent)
            return {git.session_object_dir(repo.common_dir, s.name) for s in repo.store.live()
                    if s.status is not Status.cancelled}
        for objects in sorted(git.object_dirs(repo.common_dir) - live()):
            try:
                await git.close_object_dir(repo.common_dir, objects, functools.partial(_unused, objects, live))
            except (ParaError, OSError) as e:
                log.warning("session objects %s kept: %s", objects, getattr(e, "message", e))

    async def _absorb_objects(self, repo: Repo, s: Session) -> None:
        """Before a ref outside the session names its commits (an integration's target):
        the objects its sandboxed agent wrote go into the common store, out of its reach."""
        objects = git.session_object_dir(repo.common_dir, s.name)
        if os.path.isdir(objects):
            await git.absorb_objects(repo.common_dir, objects)

    def _status_note(self, path: str) -> list[str]:
        failed = self._status_failed.get(path)
        return [f"`git status` fails in {path} ({failed[:300]}): shown as dirty, as what it holds is unknown"] \
            if failed else []

    def _dotgit(self, path: str, token: object = False) -> tuple[bytes, str | None]:
        """`git.dotgit` of the worktree at resolved `path`, and the git directory it names
        (`watch.gitdir_of`), read again only once something changed in the worktree's top
        directory, where the file is (the watcher's token, taken here unless the caller just
        took it): `list` reads it for every session twice (_dirty, _link_note)."""
        if token is False:
            token = self.watcher.token(path)
        hit = self._dotgits.get(path)
        if token is not None and hit is not None and hit[0] == token:
            return hit[1]
        data = git.dotgit(path)
        found = (data, watch.gitdir_of(path, data))
        # (A `.git` that is a symlink: what it names may change with no event in the worktree.
        # Replacing a file by a link is an event there, so this is asked again then.)
        if token is None or os.path.islink(os.path.join(path, ".git")):
            self._dotgits.pop(path, None)
        else:
            self._dotgits[path] = (token, found)
        return found

    def _link_note(self, s: Session, wt_exists: bool, path: str, token: object = False) -> list[str]:
        """Said while the worktree's `.git` names another git dir than the one para made (its
        agent rewrote it): para's git ignores it, the user should know."""
        if not (wt_exists and s.git_dir) or git.names_git_dir(s.worktree, s.git_dir, self._dotgit(path, token)[0]):
            return []
        return [(f"{s.worktree}/.git no longer names the git directory para made for it ({s.git_dir}); "
                 "para's own git keeps using that one, and cancel or integrate restores the file")]

    @staticmethod
    def _require(s: Session, allowed: Status | tuple[Status, ...], verb: str) -> None:
        allowed = allowed if isinstance(allowed, tuple) else (allowed,)
        if s.op is not None:
            # Operations hold the session's lock, so an op seen here was left by a crash and
            # its repair (run when the sidecar opened the repository) did not complete.
            failed = next((n for n in reversed(s.notes) if n.startswith("could not repair")), None)
            raise ParaError(Code.wrong_state, f"session {s.name!r} has an unfinished {s.op.kind}"
                            + (f" ({failed})" if failed else "")
                            + f"; `para sidecar restart` retries it once the cause is fixed, or "
                            f"`para cancel --force {s.name}` saves its work under refs/para/backup/ and cancels it",
                            session=s.name, pending_op=s.op.kind)
        if s.status not in allowed:
            raise ParaError(Code.wrong_state, f"cannot {verb} session {s.name!r}: it is {s.status.value}",
                            session=s.name, status=s.status.value)

    # ---- the one guard before a session's worktree is committed or removed ----------------

    @contextlib.asynccontextmanager
    async def _agent_frozen(self, repo: Repo, s: Session) -> AsyncIterator[list[int]]:
        """While a session's worktree is saved and removed, its agent (if one still runs, or
        left processes behind) is frozen with SIGSTOP, so nothing it writes falls between the
        save and the removal; the caller of the operation and its ancestors are spared.
        Yields the frozen pids.

        After, if the operation failed or the worktree is still there, they continue.
        If it is gone, they stay paused until the agent's run is stopped (at once after a
        cancel, after agent.stop_grace after an integration): a process paused between open()
        and write() would otherwise finish that write into a file the removal unlinked, and
        what it wrote would be lost without a trace. (stop_run continues them after SIGTERM.)"""
        run = s.agent
        if run is None or run.settled or not run.pid or not run.exit_file or run.executor != "local":
            yield []  # (an agent on another host is stopped there, before its work is harvested)
            return
        spare = agents.ancestors(trust.PEER_PID.get()) | {os.getpid()}
        stopped = await asyncio.to_thread(agents.freeze_run, run.pid, run.exit_file, run.started_at, spare)
        if stopped:
            log.info("%s: froze %d agent process(es) while its worktree is saved", s.name, len(stopped))
            # Journaled: a sidecar that dies or stops before they run again or are stopped
            # leaves them to the next one (hooking.py), not paused for good.
            self._journal_frozen(repo, s, stopped)
        self._frozen_now[s.name] = (stopped, spare)  # session.teardown thaws them while it runs
        try:
            yield sorted(stopped)
        except BaseException:
            # The operation failed: no stop follows, so they must run again, whatever it removed.
            if stopped:
                await asyncio.to_thread(agents.thaw_run, stopped)
                self._journal_frozen(repo, s, {})
            raise
        finally:
            self._frozen_now.pop(s.name, None)
        if stopped and os.path.isdir(s.worktree):
            await asyncio.to_thread(agents.thaw_run, stopped)
            self._journal_frozen(repo, s, {})

    async def _worktree_facts(self, repo: Repo, s: Session, tip: str | None = None) -> WorktreeFacts | None:
        """What the session's worktree holds besides its branch; None when it has none.
        A directory at its path that git does not know as its worktree is refused: para
        would otherwise skip saving it, or run git there on whatever repository holds it.
        `tip`: the session branch's commit as the caller just read it (else read from its
        loose ref file, when it is one); with it, a worktree whose git files are as para made
        them needs no worktree listing (`_as_made`)."""
        if tip is None:
            try:
                tip = git.branch_file(repo.common_dir, s.branch)
            except LookupError:
                tip = None
        wt = _as_made(s, tip) if tip else None
        if wt is None:
            wt = (await self._worktree_state(repo)).get(os.path.realpath(s.worktree))
        if wt is None or wt.prunable or not os.path.isdir(s.worktree):
            if os.path.lexists(s.worktree):
                raise ParaError(Code.wrong_state, f"{s.worktree} exists but git does not list it as the worktree "
                                f"of {s.name!r}; if the worktree was moved there, `git worktree repair {s.worktree}`, "
                                "otherwise move the directory away", session=s.name, path=s.worktree)
            return None
        mounts = _mounts_under(s.worktree)
        if mounts:
            raise ParaError(Code.wrong_state, f"{', '.join(mounts[:5])} inside the worktree of {s.name!r} "
                            f"{'is a mount point' if len(mounts) == 1 else 'are mount points'}: removing the worktree "
                            "would delete the files of what is mounted there; unmount it first (`umount "
                            f"{mounts[0]}`), then try again", session=s.name, mounts=mounts)
        head = None if not wt.head or wt.head.strip("0") == "" else wt.head  # unborn: all zeros
        if (wt.branch and wt.branch != s.branch and head is not None and s.status is Status.active
                and not await git.branch_exists(repo.root, s.branch)):
            self._adopt_rename(repo, s, wt.branch)  # renamed by hand: the session follows it
        unkept = await git.unkept_commits(repo.root, head) if head and wt.branch != s.branch else 0
        lines, embedded, gitlinks = await git.status_and_embedded(s.worktree)
        return WorktreeFacts(wt.branch, head, unkept, lines, embedded, gitlinks)

    def _adopt_rename(self, repo: Repo, s: Session, branch: str) -> None:
        note = f"branch renamed outside para: {s.branch} -> {branch} (adopted)"
        s.notes.append(note)
        s.branch = branch
        repo.store.save(s)
        self.emit(repo, "adopted", s.name, note=note)

    @staticmethod
    def _head_problem(s: Session, f: WorktreeFacts) -> str | None:
        """Why HEAD is not where finish, cancel and integrate look for the work, or None."""
        if f.branch == s.branch:
            return None
        if f.branch is None:
            held = f"{f.unkept} commit(s) there no branch holds" if f.unkept else "every commit there is on a branch"
            return (f"HEAD in {s.worktree} is detached at {(f.head or '')[:10]} ({held}); `git checkout {s.branch}` "
                    "there" + (" (first `git branch NAME` to keep those commits)" if f.unkept else ""))
        if f.head is None:
            return (f"HEAD in {s.worktree} is on {f.branch}, an orphan branch with no commit yet, not {s.branch}; "
                    f"`git checkout {s.branch}` there")
        return (f"HEAD in {s.worktree} is on branch {f.branch}, not {s.branch}; `git checkout {s.branch}` there "
                f"({f.branch} keeps its commits)")

    async def _save_or_refuse(self, repo: Repo, s: Session, verb: str, *, force: bool = False
                              ) -> WorktreeFacts | None:
        """The check every path runs before it commits or removes a session's worktree.

        HEAD must be on the session branch (finish, cancel and integrate would otherwise
        commit onto, or drop, whatever HEAD holds): `wrong_state` naming the fix, unless
        `force` (cancel --force saves HEAD instead). finish and integrate also refuse
        (`dirty`) repositories inside the worktree that would be lost or land as a bare
        gitlink: a nested repository (not in .gitmodules), or a submodule holding commits
        no remote has or uncommitted changes; cancel saves those (`_save_worktree`).
        Returns the facts for `_save_worktree` (None: no worktree)."""
        f = await self._worktree_facts(repo, s)
        if f is None:
            return None
        problem = self._head_problem(s, f)
        if problem and not force:
            hint = (f"; or `para cancel --force {s.name}` keeps HEAD and uncommitted work under refs/para/backup/ "
                    "and cancels") if verb == "cancel" else ""
            raise ParaError(Code.wrong_state, f"cannot {verb} {s.name!r}: {problem}{hint}", session=s.name,
                            head_branch=f.branch, head=f.head, unkept=f.unkept)
        if verb in ("finish", "integrate"):
            paths, messages = f.nested(), []
            if paths:
                one = len(paths) == 1
                messages.append(
                    f"{', '.join(paths)} in {s.worktree} {'is a git repository' if one else 'are git repositories'} "
                    f"with no .gitmodules entry, which {verb} would record as {'a bare gitlink' if one else 'bare gitlinks'}"
                    f" and delete with the worktree: move {'it' if one else 'them'} out, make "
                    f"{'it a submodule' if one else 'them submodules'} (`git submodule add URL {paths[0]}`), or delete "
                    f"{'its' if one else 'their'} .git to keep the files as plain files")
            for top in f.embedded:
                if not top.submodule:
                    continue  # refused above as a whole
                for rel, e in top.risks():
                    where = os.path.join(s.worktree, rel)
                    what = " and ".join(x for x in (f"{e.unpushed} commit(s) no remote has" if e.unpushed else "",
                                                    "uncommitted changes" if e.dirty else "") if x)
                    kind = "submodule" if e.submodule else "repository"
                    paths.append(rel)
                    messages.append(f"{kind} {where} has {what}, which {verb} would delete with the worktree: "
                                    + (f"push them (`git -C {where} push`) or discard them" if e.remote or e.submodule
                                       else "move it out of the worktree or discard it"))
            if messages:
                more = f"; and {len(messages) - 3} more" if len(messages) > 3 else ""
                raise ParaError(Code.dirty, f"cannot {verb} {s.name!r}: " + "; ".join(messages[:3])
                                + f"{more}; then {verb} again", session=s.name, paths=paths)
        return f

    async def _save_worktree(self, repo: Repo, s: Session, f: WorktreeFacts, stamp: str) -> list[dict[str, Any]]:
        """Before the worktree goes, save what no ref keeps: HEAD when it is off the session
        branch (with its uncommitted work, as a snapshot) under `<stamp>-head`, and each
        submodule or nested repository holding commits no remote has or uncommitted files
        under `<stamp>/sub/<path>/` (those inside them under `.../sub/<path>/sub/<inner>/`).
        Existing backups are never overwritten (a name taken gets a `-2`). Returns what went
        where; an entry without refs is a repository that had nothing to save."""
        backups: list[dict[str, Any]] = []
        if f.branch != s.branch:
            commit = f.head
            if f.status:
                commit = await git.snapshot(s.worktree, f"para: HEAD and uncommitted work of {s.name} "
                                            f"({f.branch or 'detached'})", exclude=f.nested())
            if commit:
                ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{stamp}-head", commit)
                backups.append({"what": "head", "ref": ref, "commit": commit, "head_branch": f.branch})
        for e in f.embedded:
            kind = "submodule" if e.submodule else "nested"
            refs: dict[str, str] = {}
            prefix = ""
            if e.at_risk:
                prefix = f"refs/para/backup/{s.name}/{stamp}/sub/{git.ref_safe(e.path)}"
                refs = await git.save_embedded(s.worktree, e, repo.common_dir, prefix,
                                               f"para: uncommitted work in {e.path} of session {s.name}")
            elif e.submodule:
                continue  # everything it holds is on its remote, and the superproject records where
            backups.append({"what": kind, "path": e.path, "refs": refs, "remote": e.remote,
                            "unpushed": e.unpushed, "dirty": len(e.dirty)})
            note = f"{kind} repository {e.path} was saved under {prefix}/ when the worktree was removed"
            if refs and note not in s.notes:  # (a repair runs this again); kept for after a recover
                s.notes.append(note)
        return backups

    async def _busy_warnings(self, s: Session) -> list[str]:
        """Processes other than the session's agent with their current directory in its
        worktree, which is about to be removed: they are left in a deleted directory."""
        # Who is there is looked at first: mostly no one, and then whose they are (the agent's
        # processes, the caller's chain of parents: more reads of /proc) need not be asked.
        held = await asyncio.to_thread(agents.cwd_holders, s.worktree, {os.getpid()})
        if not held:
            return []
        exclude = agents.ancestors(trust.PEER_PID.get())
        run = s.agent
        if run is not None and run.pid and run.exit_file and run.executor == "local":
            exclude |= set((await asyncio.to_thread(agents.run_processes, run.pid, run.exit_file,
                                                    run.started_at))[1])
        held = {pid: name for pid, name in held.items() if pid not in exclude}
        return [f"process {pid} ({name}) has its current directory in {s.worktree}, which was removed: it is now in "
                "a deleted directory (`cd` out of it; files it writes there are lost)" for pid, name in sorted(held.items())]

    @staticmethod
    def _frozen_warnings(frozen: list[int], s: Session) -> list[str]:
        """What `_agent_frozen` did, for a result's `warnings`."""
        if not frozen:
            return []
        return [f"the session's agent still ran: its {len(frozen)} process(es) (pid {', '.join(map(str, frozen))}) "
                "were paused while the worktree was saved and removed, "
                + ("then resumed" if os.path.isdir(s.worktree) else "and stay paused until the agent is stopped")]

    @staticmethod
    def _backup_warnings(backups: list[dict[str, Any]]) -> list[str]:
        """What `_save_worktree` saved, or left unsaved, as lines for a result's `warnings`."""
        lines = []
        for b in backups:
            if b["what"] == "head":
                lines.append(f"HEAD of the worktree ({b.get('head_branch') or 'detached'}, with its uncommitted "
                             f"work) was not on the session branch; it was saved as {b['ref']}")
            elif b.get("refs"):
                prefix = os.path.commonpath(list(b["refs"])) if len(b["refs"]) > 1 else next(iter(b["refs"]))
                lines.append(f"{b['what']} repository {b['path']} went with the worktree; what it held that no "
                             f"remote has was saved under {prefix}")
            else:
                lines.append(f"{b['what']} repository {b['path']} went with the worktree and was not saved: "
                             + (f"it held nothing its remote {b['remote']} lacks" if b.get("remote")
                                else "it had no commits and no files"))
        return lines

    async def _refuse_bare_gitlinks(self, repo: Repo, s: Session, target: str, tip: str) -> bool:
        """A repository committed inside the session without a .gitmodules entry would land on
        `target` as an empty gitlink no clone can fill: refused, naming the path and the fix.
        Returns whether `tip` and `target` share history (it looks from their fork point)."""
        links = await git.unmapped_gitlinks_since_fork(repo.root, f"refs/heads/{target}", tip)
        if links:
            where = s.worktree if os.path.isdir(s.worktree) else f"the worktree (`para resume {s.name}`)"
            shown = ", ".join(links[:5]) + (f" and {len(links) - 5} more" if len(links) > 5 else "")
            raise ParaError(Code.wrong_state, f"cannot integrate {s.name!r}: its commits record {shown} as a "
                            "gitlink with no .gitmodules entry (a repository committed inside the session), which "
                            f"would land as an empty directory; in {where} run `git rm --cached -- {links[0]}` and "
                            f"commit (or make it a submodule with `git submodule add URL {links[0]}`), then "
                            "integrate again", session=s.name, paths=links)
        return links is not None

    async def _dirty(self, repo: Repo, worktrees: list[tuple[str, git.Worktree]]) -> dict[str, bool]:
        """Whether each worktree has uncommitted changes, by its session's path. Git is asked
        only where something may have changed since it last answered: the worktree's files and
        index (watched, watch.py), its HEAD (from `git worktree list`), and what decides what
        is ignored or how files compare (the repository's and the user's config and excludes).
        Where nothing can be watched, git is asked every time."""
        shared = _repo_files_key(repo, "info/exclude")
        sem = asyncio.Semaphore(STATUS_CONCURRENCY)
        new = [wt.path for _, wt in worktrees if not self.watcher.watching(wt.path)]
        if new and self.watcher.available:
            await asyncio.to_thread(self._watch_all, new)

        def key_of(wt: git.Worktree, token: tuple[int, int] | None) -> object:
            if token is None:  # (not watched, or no longer: nothing kept may be trusted again)
                self._dirty_cache.pop(wt.path, None)
                self._snapshots.pop(wt.path, None)
                return None
            gitdir = self._dotgit(wt.path, token)[1]
            # (Its index by its stat too: the private git dir is watched, but a watch follows the
            # directory, not its path: `.git/worktrees` moved aside and copied back, red team rt2.)
            return (token, wt.head, wt.branch, shared,
                    _stat_key([os.path.join(gitdir, "index")] if gitdir else []))

        async def ask(path: str, wt: git.Worktree, key: object) -> bool:
            async with sem:
                try:
                    dirty = bool(await git.status(path))
                except ParaError as e:
                    # Unknown is not clean: work may be there that git cannot show now (a corrupt
                    # index, a broken .git). Not kept: asked again next time.
                    self._status_failed[wt.path] = e.data.get("stderr") or e.message
                    self._status_changes += 1
                    log.warning("git status failed in %s: %s", path, self._status_failed[wt.path])
                    return True
            if self._status_failed.pop(wt.path, None) is not None:
                self._status_changes += 1
            if key is not None:
                self._dirty_cache[wt.path] = (key, dirty)
            return dirty

        flags: dict[str, bool] = {}
        asked: list[tuple[str, Coroutine[Any, Any, bool]]] = []
        tokens = self.watcher.tokens([wt.path for _, wt in worktrees])
        for (path, wt), token in zip(worktrees, tokens):  # (what is known: no task per session)
            key = key_of(wt, token)
            hit = self._dirty_cache.get(wt.path)
            if key is not None and hit is not None and hit[0] == key:
                flags[path] = hit[1]
            else:
                asked.append((path, ask(path, wt, key)))
        for (path, _), flag in zip(asked, await asyncio.gather(*(c for _, c in asked))):
            flags[path] = flag
        if len(self._dirty_cache) > 10_000:  # (ended sessions' answers: start over now and then)
            self._dirty_cache.clear()
            self._dotgits.clear()
        return flags

    def _merge_settings(self, repo: Repo) -> object:
        """What a merge of two given commits depends on besides them: the repository's and the
        user's config (merge drivers, conflict style) and info/attributes."""
        return _repo_files_key(repo, "info/attributes")

    def _watch_all(self, paths: list[str]) -> None:
        for path in paths:
            gitdir = watch.gitdir_of(path, git.dotgit(path))
            self.watcher.watch(path, (gitdir,) if gitdir else ())

    async def hello(self, p: HelloParams) -> dict[str, Any]:
        return {"name": "para", "version": __version__, "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                "started_at": self.started_at, "repos": sorted(r.root for r in self.repos.values()),
                "busy": self.busy}

    async def config(self, p: ConfigParams) -> dict[str, Any]:
        root = common_dir = None
        if p.cwd is not None:
            try:
                repo = await self.repo(p.cwd)
                root, common_dir = repo.root, repo.common_dir
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
            if config.check_key(p.key) in config.GATED_KEYS:
                trust.forbid_agent(f"changing {p.key} (it decides what para runs)")
            stored = config.write_key(Path(paths[p.scope]), p.key, p.value, root if p.scope == "project" else None)
            return {"key": p.key, "value": stored, "scope": p.scope, "path": paths[p.scope]}
        if p.action == "reset":
            if p.key is None:
                raise ParaError(Code.invalid_input, "config reset needs a key")
            if p.scope not in paths:
                raise ParaError(Code.invalid_input, "project config needs a repository (cwd)")
            if config.check_key(p.key) in config.GATED_KEYS:
                trust.forbid_agent(f"changing {p.key} (it decides what para runs)")
            removed = config.remove_key(Path(paths[p.scope]), p.key, root if p.scope == "project" else None)
            now_ = config.effective(root, p.env)[p.key]
            return {"key": p.key, "removed": removed, "scope": p.scope, "path": paths[p.scope],
                    "value": now_["value"], "source": now_["source"]}
        eff = config.effective(root, p.env)
        if common_dir:
            trust.annotate(common_dir, eff)  # project-file commands: approved or not
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
