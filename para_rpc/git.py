"""The one place that builds git command lines, and the async runner that executes them.

Every git process runs with an argv list (never a shell), stdin closed, no
editor, no credential prompt and a stable C locale, so git can never block
waiting for a human and its messages can be matched. Callers get parsed
results; a failing command raises ParaError(git_failed) carrying git's stderr.
GitPython is used only for short object reads in a worker thread (`commit_log`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from para_rpc import git_index
from para_rpc.errors import Code, ParaError

log = logging.getLogger("para.git")

_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX",
         "GIT_OBJECT_DIRECTORY", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES",
         "PARA_AGENT_RUN")  # (agents.RUN_ENV: marks an agent's processes, never para's own)
BASE_ENV = {k: v for k, v in os.environ.items() if k not in _DROP}
BASE_ENV.update(GIT_EDITOR="true", GIT_SEQUENCE_EDITOR="true", GIT_MERGE_AUTOEDIT="no",
                GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true",
                LC_ALL="C", LANGUAGE="C", GIT_PAGER="cat", PAGER="cat")

_FALLBACK_IDENTITY = ("-c", "user.name=para", "-c", "user.email=para@localhost")

# Configuration that would change what para parses is pinned for every git call: a
# user's `color.ui=always` or `log.showSignature=true` must not leak escapes or
# signature reports into commit lists, messages or diffstats, `diff.noprefix` into
# patches, and names are never octal-quoted (`-z` output is never quoted anyway).
BASE_ARGS = ("-c", "color.ui=never", "-c", "color.diff=never", "-c", "color.status=never",
             "-c", "log.showSignature=false", "-c", "log.decorate=false", "-c", "diff.noprefix=false",
             "-c", "diff.mnemonicPrefix=false", "-c", "core.quotePath=false",
             # A command named by the config git finds through a worktree's `.git` (which its
             # agent can rewrite) must not run from para's reads (red team RA1).
             "-c", "core.fsmonitor=false")

# Session worktrees whose git dirs para made: {resolved worktree: (git dir, common dir)}. Git
# run in one of them is told both (GIT_DIR, GIT_COMMON_DIR, GIT_WORK_TREE) instead of
# discovering them through the worktree's `.git` file and the git dir's `commondir`, which a
# sandboxed agent can write: a fake git dir there, with a `core.fsmonitor`, filter, hook or
# `diff.external` in its config, would otherwise run commands as the user (red team RA1).
# A directory inside the worktree is pinned too (`para list` run from `<wt>/src` would
# otherwise discover the agent's fake git dir), unless a repository nested in the worktree
# holds it: that one is its own.
_PINNED: dict[str, tuple[str, str]] = {}


def pin(worktree: str, git_dir: str, common_dir: str) -> None:
    _PINNED[os.path.realpath(worktree)] = (os.path.realpath(git_dir), os.path.realpath(common_dir))


def unpin(worktree: str) -> None:
    _PINNED.pop(os.path.realpath(worktree), None)


def pinned(worktree: str | Path) -> tuple[str, str] | None:
    """(git dir, common dir) para uses for the worktree at `worktree`, if it made one there."""
    return _PINNED.get(os.path.realpath(worktree)) if _PINNED else None


def _restore_links(worktree: str, git_dir: str, common_dir: str) -> None:
    """Git's ref store takes the common dir from the git dir's `commondir` file even when
    GIT_COMMON_DIR is set (git 2.39: files-backend reads it without the environment), and
    `git worktree` finds the worktree through `gitdir`: both are restored to what git wrote
    when they name anything else. (They are read-only in a sandbox; this is for everything
    else that could have written them.)"""
    for name, want, text in (("commondir", common_dir, "../..\n"),
                             ("gitdir", os.path.join(worktree, ".git"), f"{os.path.join(worktree, '.git')}\n")):
        path = os.path.join(git_dir, name)
        try:
            named = read_regular(path).strip()
        except FileNotFoundError:
            named = ""
        except OSError:  # (a link, a FIFO: put back as a file, below)
            named = "?"
        if named and os.path.realpath(os.path.join(git_dir, named)) == os.path.realpath(want):
            continue
        log.warning("%s named %r, not %s: restored", path, named[:200], want)
        try:
            if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)  # (a link is not written through, nor a FIFO waited on)
            with open(path, "w") as f:  # (in place: a read-only bind of it in a sandbox shows the new text)
                f.write(text)
        except OSError as e:
            raise ParaError(Code.git_failed, f"{path} names {named[:200]!r} instead of {want}, and para "
                            f"cannot restore it: {e.strerror}", path=path) from None


def _pinned_around(cwd: str | Path, pins: dict[str, tuple[str, str]] | None = None) -> tuple[str, str, str] | None:
    """(worktree, git dir, common dir) of the pinned worktree `cwd` is in, if any
    (`pins`: `_PINNED` as it was when the git run was asked for)."""
    pins = _PINNED if pins is None else pins
    if not pins:
        return None
    path = os.path.realpath(cwd)
    below: list[str] = []
    while True:
        found = pins.get(path)
        if found is not None:
            if any(os.path.lexists(os.path.join(d, ".git")) for d in below):
                return None  # a repository nested in the worktree
            return path, found[0], found[1]
        parent = os.path.dirname(path)
        if parent == path:
            return None
        below.append(path)
        path = parent


def _nested_around(cwd: str | Path, pins: dict[str, tuple[str, str]] | None = None) -> str | None:
    """The top of the repository nested in a pinned worktree that `cwd` is in, if any."""
    pins = _PINNED if pins is None else pins
    if not pins:
        return None
    path = os.path.realpath(cwd)
    nested = None
    while True:
        if path in pins:
            return nested
        if nested is None and os.path.lexists(os.path.join(path, ".git")):
            nested = path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


# A repository nested in a session worktree was made by its agent, config and all: para's git
# there reads its objects, refs, HEAD and index but none of its configuration (a clean filter,
# a hook, `url.*.insteadOf`, `core.sshCommand` would run as the user at cancel: red team rt13
# N1). It runs with the nested git dir as GIT_DIR and, as GIT_COMMON_DIR, a directory of para's
# whose config is para's own and whose objects and refs are links to the nested repository's.
_SHADOWS: dict[str, str] = {}
_SHADOWS_LOCK = threading.Lock()


def read_regular(path: str, limit: int = 1 << 16) -> str:
    """A regular file's text (its first `limit` bytes), never blocking on a FIFO nor following
    a link: for files an agent can write."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return f.read(limit).decode("utf-8", "replace")


def _nested_git_dirs(top: str) -> tuple[str, str]:
    """(git dir, common dir) of the repository at `top`, read without git."""
    dot_git = os.path.join(top, ".git")
    git_dir = dot_git
    if not os.path.isdir(dot_git):
        text = read_regular(dot_git).strip()
        if not text.startswith("gitdir:"):
            raise OSError(f"{dot_git} names no git directory")
        git_dir = os.path.join(top, text[len("gitdir:"):].strip())
    common = git_dir
    if os.path.lexists(os.path.join(git_dir, "commondir")):
        common = os.path.join(git_dir, read_regular(os.path.join(git_dir, "commondir")).strip())
    git_dir, common = os.path.realpath(git_dir), os.path.realpath(common)
    if not os.path.isfile(os.path.join(git_dir, "HEAD")) or not os.path.isdir(os.path.join(common, "objects")):
        raise OSError(f"{git_dir} is not a git directory")
    return git_dir, common


def _nested_env(top: str) -> dict[str, str]:
    try:
        git_dir, common = _nested_git_dirs(top)
        fmt = "sha1"
        for line in read_regular(os.path.join(common, "config")).splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip().lower() == "objectformat" and value.strip().lower() == "sha256":
                fmt = "sha256"
    except OSError as e:
        raise ParaError(Code.git_failed, f"{top} has a .git that para cannot read as a repository: {e}",
                        path=top) from None
    with _SHADOWS_LOCK:  # (git runs are prepared in several threads: `_spawn`)
        shadow = _SHADOWS.get(common)
        if shadow is None or not os.path.isdir(shadow):
            shadow = _SHADOWS[common] = tempfile.mkdtemp(prefix="para-nested-")
            os.mkdir(os.path.join(shadow, "info"))
            for name in ("objects", "refs", "packed-refs"):
                os.symlink(os.path.join(common, name), os.path.join(shadow, name))
    # Submodules of the nested repository would be run in with their own configs: not looked into.
    write_new(os.path.join(shadow, "config"),
              f"[core]\n\trepositoryformatversion = 1\n\tbare = false\n[extensions]\n\tobjectformat = {fmt}\n"
              "[diff]\n\tignoreSubmodules = all\n[submodule]\n\trecurse = false\n")
    return {"GIT_DIR": git_dir, "GIT_COMMON_DIR": shadow, "GIT_WORK_TREE": top}


def _env(cwd: str | Path, env: dict[str, str] | None,
         known: tuple[dict[str, tuple[str, str]], frozenset[str]] | None = None) -> dict[str, str]:
    """The environment of a git para runs in `cwd`. `known`: the pinned worktrees and the
    common dirs with session objects as they were when the run was asked for (`run` makes
    this in another thread: what changes meanwhile must not change which git dir it uses)."""
    pins, commons = known if known is not None else (None, None)
    found = _pinned_around(cwd, pins)
    nested = _nested_around(cwd, pins) if found is None else None
    if nested is not None:
        return {**BASE_ENV, **_nested_env(nested), **(env or {})}
    if found is None:
        full = BASE_ENV if env is None else {**BASE_ENV, **env}
        common = _common_around(cwd, commons)
        if common is not None:
            _unlink_reflogs(os.path.join(common, "logs", "refs", "heads", "para"))
            _unlink_fifos(os.path.join(common, "refs", "heads", "para"))
    else:
        worktree, git_dir, common = found
        if os.path.isdir(git_dir):
            _restore_links(worktree, git_dir, common)
            _unlink_reflogs(os.path.join(git_dir, "logs"))
            with contextlib.suppress(OSError), os.scandir(git_dir) as it:  # (HEAD, index, ...: the agent's to write)
                _refuse_fifos(e.path for e in it if not (e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False)))
        _unlink_reflogs(os.path.join(common, "logs", "refs", "heads", "para"))
        _unlink_fifos(os.path.join(common, "refs", "heads", "para"))
        pin_env = {"GIT_DIR": git_dir, "GIT_COMMON_DIR": common, "GIT_WORK_TREE": worktree}
        full = {**BASE_ENV, **pin_env, **(env or {})}
    if common is None or (env is not None and "GIT_ALTERNATE_OBJECT_DIRECTORIES" in env):
        return full
    dirs = _session_dirs(common)
    return {**full, **session_objects_env(dirs)} if dirs else full


def _unlink_reflogs(top: str) -> None:
    """Reflogs a sandboxed agent can write (its worktree's, its branch's: `refs/heads/para/`'s)
    that are symbolic links, or not files at all, go before para's git appends to them: git
    would write its line into whatever file a link names, or refuse ("reflog is a symlink")
    and keep the session from ever ending (red team rt13 L1). The file a link named is left
    as it was; git starts the reflog anew."""
    for e in _non_dirs_under(top):
        with contextlib.suppress(OSError):
            if e.is_symlink() or not e.is_file(follow_symlinks=False):
                target = os.readlink(e.path) if e.is_symlink() else "not a file"
                os.unlink(e.path)
                log.warning("reflog %s (%s) removed before para's git wrote to it", e.path, target[:200])


def _unlink_fifos(top: str) -> None:
    """FIFOs, sockets and devices (or symlinks to one) where a sandboxed agent can write refs
    (`refs/heads/para/`) go before para's git lists refs: git opens every loose ref file it
    lists and would wait on one forever, with the repository's lock held (red team rt2). They
    hold no ref; a file, directory or other link is left alone."""
    for e in _non_dirs_under(top):
        with contextlib.suppress(OSError):
            if not e.is_file(follow_symlinks=False) and _not_a_file(e.path):
                os.unlink(e.path)
                log.warning("%s (not a file: a FIFO or a device) removed before para's git read refs", e.path)


def _non_dirs_under(top: str) -> Iterator[os.DirEntry[str]]:
    """Every entry below `top` but its directories (not followed through links). Before every
    git para runs: the kinds come from the directory listing itself, d_type, not from a stat
    of each entry; a directory that cannot be read is skipped, as os.walk does."""
    dirs = [top]
    while dirs:
        try:
            with os.scandir(dirs.pop()) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                dirs.append(e.path)
            else:
                yield e


def dotgit(worktree: str) -> bytes:
    """The start of the worktree's `.git` file, as `names_git_dir` and `watch.gitdir_of` read
    it; empty when it cannot be read (missing, a directory)."""
    try:  # (an agent can make its `.git` a FIFO: this runs in the event loop, and must not wait)
        fd = os.open(os.path.join(worktree, ".git"), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        return os.read(fd, 8192) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return b""
    finally:
        os.close(fd)


def names_git_dir(worktree: str, git_dir: str, data: bytes | None = None) -> bool:
    """Whether the worktree's `.git` file still names `git_dir` (a relative one is from the
    worktree). `data`: the file's start as `dotgit` read it, when the caller has it."""
    try:
        text = (dotgit(worktree) if data is None else data).decode()
    except UnicodeDecodeError:
        return False
    if not text.startswith("gitdir:"):
        return False
    named = os.path.join(worktree, text.split("gitdir:", 1)[1].strip())
    # (The same string is the same directory: what git wrote, read on every `list` of every
    # session, is settled without resolving both paths.)
    return named == git_dir or os.path.realpath(named) == os.path.realpath(git_dir)


def relink(worktree: str, git_dir: str) -> bool:
    """Make the worktree's `.git` name `git_dir` again (something in the worktree replaced it),
    so git's own worktree commands (remove, prune) recognise the worktree. Returns whether
    it had to. A directory standing there is moved aside, not deleted: it is only renamed
    into the worktree's own name space, and goes with the worktree."""
    if names_git_dir(worktree, git_dir):
        return False
    dot_git = os.path.join(worktree, ".git")
    if os.path.isdir(dot_git) and not os.path.islink(dot_git):
        os.replace(dot_git, tempfile.mkdtemp(prefix=".git-replaced-", dir=worktree) + "/git")
    elif os.path.lexists(dot_git):
        os.unlink(dot_git)
    with open(dot_git, "w") as f:
        f.write(f"gitdir: {git_dir}\n")
    return True


# Files para writes into a worktree for the agent. info/exclude hides them, but a
# repository's own .gitignore can re-include them (`!*.md`), so they are also
# kept out of the index and out of status explicitly.
OWN_FILES = (".para-agent.md",)


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


# Git processes are started (and waited for) by these threads, not by the event loop: starting
# a process blocks its caller until the child has exec'd (vfork), which on a loaded machine took
# ~5 ms per git process, and with twenty integrations at once that was most of the loop's time
# (every other request, and the integration holding its target's queue, waited behind it).
# The threads hold no lock while the child starts. Bounded, generously: the callers bound how
# many git processes run at once (STATUS_CONCURRENCY), and git never waits for the network
# here (para never fetches), so a thread is never held for long.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="para-git")


# A git process that runs this long is stopped, with an error that says why it may have hung
# (git opens the files it reads without O_NONBLOCK: a FIFO an agent left where git reads,
# a `.gitignore` in its worktree say, would otherwise hold the repository's lock forever). A
# backstop, far above any git para runs on a large repository; PARA_GIT_TIMEOUT changes it.
GIT_TIMEOUT = float(os.environ.get("PARA_GIT_TIMEOUT") or 900)


def _spawn(argv: list[str], cwd: str, env: dict[str, str] | None, stdin: bytes | None,
           known: tuple[dict[str, tuple[str, str]], frozenset[str]]) -> tuple[int, bytes, bytes]:
    """(In a `_SPAWNER` thread.) The environment is made here too: it walks reflogs and
    resolves paths (`_env`), file system work the event loop need not wait for."""
    full_env = _env(cwd, env, known)
    sub = argv[len(BASE_ARGS) + 1]
    if sub in ("worktree", "branch", "for-each-ref", "show-ref"):  # (they read refs/heads/para/)
        dot_git = os.path.join(cwd, ".git")
        common = full_env.get("GIT_COMMON_DIR") or (dot_git if os.path.isdir(dot_git) else cwd)  # (run at the top)
        if "GIT_COMMON_DIR" not in full_env:  # (else `_env` swept them already, as for any git in a worktree)
            _unlink_fifos(os.path.join(common, "refs", "heads", "para"))
        if sub in ("worktree", "branch"):  # (and every worktree's HEAD)
            _refuse_fifos_of_worktrees(common)
    with subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
            raise ParaError(Code.git_failed, f"git {sub} in {cwd} did not finish in "
                            f"{GIT_TIMEOUT:.0f} s and was stopped: something it reads may never end (a FIFO "
                            "where a file should be, in the worktree or its git directory?); nothing else was "
                            "changed by it", argv=argv[len(BASE_ARGS):], cwd=cwd) from None
    return proc.returncode, out, err


def _not_a_file(path: str) -> bool:
    """Whether `path` is there as something a reader can wait on forever: a FIFO, a socket, a
    device, or a symlink to one."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _refuse_fifos(paths: Iterable[str]) -> None:
    odd = [p for p in paths if _not_a_file(p)]
    if odd:
        raise ParaError(Code.wrong_state, f"{odd[0]} is not a file (a FIFO or a device): git would wait on it "
                        f"forever; remove it (`rm {odd[0]}`), then try again", path=odd[0])


def _refuse_fifos_of_worktrees(common: str) -> None:
    """The files `git worktree` and `git branch` read of every worktree (HEAD, gitdir,
    commondir), checked first: an agent's own git dir is writable to it."""
    try:
        with os.scandir(os.path.join(common, "worktrees")) as it:
            ids = [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    _refuse_fifos(os.path.join(d, name) for d in ids for name in ("HEAD", "gitdir", "commondir"))


async def run(cwd: str | Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
              stdin: bytes | None = None) -> Result:
    """Run `git <args>` in `cwd`. With check, a non-zero exit raises git_failed.
    (A caller cancelled meanwhile leaves the git process to finish: git's own steps are atomic.)"""
    try:
        rc, out, err = await asyncio.get_running_loop().run_in_executor(
            _SPAWNER, _spawn, ["git", *BASE_ARGS, *args], str(cwd), env, stdin, (dict(_PINNED), frozenset(_COMMONS)))
    except FileNotFoundError:
        if not Path(cwd).is_dir():
            raise ParaError(Code.not_found, f"directory does not exist: {cwd}") from None
        raise ParaError(Code.git_failed, "git is not installed or not on PATH") from None
    except NotADirectoryError:
        raise ParaError(Code.not_found, f"not a directory: {cwd}") from None
    res = Result(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    if check and res.rc != 0:
        raise ParaError(Code.git_failed, f"git {args[0]} failed: {res.err.strip() or res.out.strip()}",
                        argv=["git", *args], stderr=res.err.strip())
    return res


async def out(cwd: str | Path, *args: str) -> str:
    return (await run(cwd, *args)).out.strip()


# ---- repository discovery -------------------------------------------------

@dataclass(frozen=True)
class Where:
    common_dir: str        # absolute path of the shared .git directory
    git_dir: str           # this worktree's git dir
    toplevel: str | None   # this worktree's root (None in a bare repository or inside .git)
    bare: bool


async def where(cwd: str | Path) -> Where:
    # In a working tree (the usual case) one process answers all; `--show-toplevel` fails the
    # whole command in a bare repository or inside a .git directory: then two.
    res = await run(cwd, "rev-parse", "--is-bare-repository", "--path-format=absolute",
                    "--git-common-dir", "--git-dir", "--show-toplevel", check=False)
    lines = res.out.splitlines()
    if res.rc == 0 and len(lines) == 4 and lines[3]:
        return Where(os.path.realpath(lines[1]), os.path.realpath(lines[2]), os.path.realpath(lines[3]),
                     lines[0] == "true")
    res = await run(cwd, "rev-parse", "--is-bare-repository", "--path-format=absolute",
                    "--git-common-dir", "--git-dir", check=False)
    if res.rc != 0:
        raise ParaError(Code.not_a_repository, f"not a git repository: {cwd}")
    bare, common, gdir = res.out.splitlines()[:3]
    top = await run(cwd, "rev-parse", "--show-toplevel", check=False)
    toplevel = top.out.strip() if top.rc == 0 and top.out.strip() else None
    return Where(os.path.realpath(common), os.path.realpath(gdir),
                 os.path.realpath(toplevel) if toplevel else None, bare == "true")


@dataclass(frozen=True)
class Worktree:
    path: str
    head: str | None
    branch: str | None      # short name, None when detached
    bare: bool = False
    prunable: bool = False


async def worktrees(cwd: str | Path) -> list[Worktree]:
    """`git worktree list --porcelain -z`, main worktree first."""
    res = await run(cwd, "worktree", "list", "--porcelain", "-z", check=False)
    for _ in range(10):
        # (A worktree being added meanwhile, by para or by hand, has its directory under
        # .git/worktrees/ before its files: git's listing then fails on it. Asked again.)
        if res.rc == 0 or "/worktrees/" not in res.err:
            break
        await asyncio.sleep(0.02)
        res = await run(cwd, "worktree", "list", "--porcelain", "-z", check=False)
    if res.rc != 0:
        raise ParaError(Code.git_failed, f"git worktree failed: {res.err.strip() or res.out.strip()}",
                        argv=["git", "worktree", "list", "--porcelain", "-z"], stderr=res.err.strip())
    text = res.out
    result: list[Worktree] = []
    resolved: dict[str, str] = {}
    for block in text.split("\0\0"):
        fields: dict[str, str] = {}
        for line in block.split("\0"):
            if line:
                key, _, value = line.partition(" ")
                fields[key] = value
        if "worktree" not in fields:
            continue
        branch = fields.get("branch")
        if branch and branch.startswith("refs/heads/"):
            branch = branch[len("refs/heads/"):]
        result.append(Worktree(realpath_in(fields["worktree"], resolved), fields.get("HEAD"),
                               branch, "bare" in fields, "prunable" in fields))
    return result


def realpath_in(path: str, resolved: dict[str, str]) -> str:
    """os.path.realpath(path), remembered in `resolved` (one dict for one request), with its
    directory's taken from there too: a listing names dozens of worktrees in one directory,
    and resolving each from the root was an lstat per component of each, a fifth of the
    sidecar's time in an integration and half of `list`'s at a hundred sessions."""
    found = resolved.get(path)
    if found is not None:
        return found
    head, tail = os.path.split(path)
    if not os.path.isabs(path) or tail in ("", ".", "..") or _is_link_in(head, tail, resolved):
        found = os.path.realpath(path)
    else:
        if head not in resolved:
            resolved[head] = os.path.realpath(head)
        found = os.path.join(resolved[head], tail)
    resolved[path] = found
    return found


def _is_link_in(head: str, tail: str, resolved: dict[str, str]) -> bool:
    """Whether `head/tail` is a symlink, from one listing of `head` per request (kept in
    `resolved` under "\0" + head, NUL-separated: no path holds a NUL) rather than an lstat
    of each of its hundred worktrees."""
    links = resolved.get("\0" + head)
    if links is None:
        try:
            with os.scandir(head) as it:  # (the kind from the listing itself, d_type)
                links = "\0".join(e.name for e in it if e.is_symlink())
        except OSError:
            links = "\0"  # (cannot be listed: each is asked)
        resolved["\0" + head] = links
    return os.path.islink(os.path.join(head, tail)) if links == "\0" else tail in links.split("\0")


# ---- refs ----------------------------------------------------------------

async def resolve(cwd: str | Path, rev: str) -> str | None:
    """The commit `rev` names, or None. `rev` is validated by the caller; `--end-of-options` guards it."""
    res = await run(cwd, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
                    check=False)
    return res.out.strip() if res.rc == 0 else None


async def commits_of(cwd: str | Path, refs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{ref: (commit, its tree)} for those of `refs` (full names) that name a commit: one git
    process for all of them (an operation reads its target and session branch together).
    A ref that is missing, or names no commit, is left out."""
    res = await run(cwd, "for-each-ref", "--format=%(refname)%00%(objectname)%00%(tree)", *refs, check=False)
    if res.rc != 0:  # (a ref naming a missing object fails the listing: read them one by one)
        found = {}
        for ref in refs:
            sha = await resolve(cwd, ref)
            if sha is not None:
                found[ref] = (sha, await tree_of(cwd, sha))
        return found
    wanted, result = set(refs), {}
    for line in res.out.splitlines():
        name, sha, tree = line.split("\0")
        if name in wanted and tree:  # (for-each-ref also lists refs below a name: exact names only)
            result[name] = (sha, tree)
    return result


async def tracked_in(cwd: str | Path, rev: str, paths: list[str]) -> list[str]:
    """Which of `paths` (files or directories) the tree of `rev` holds anything at."""
    if not paths:
        return []
    res = await run(cwd, "ls-tree", "--name-only", "--end-of-options", rev, "--", *paths)
    return [line for line in res.out.splitlines() if line]


async def indexed(wt: str | Path, paths: list[str]) -> list[str]:
    """Which files at or under `paths` the index of the worktree at `wt` holds."""
    if not paths:
        return []
    res = await run(wt, "ls-files", "--cached", "-z", "--", *paths, env={"GIT_OPTIONAL_LOCKS": "0"})
    return [p for p in res.out.split("\0") if p]


async def branch_exists(cwd: str | Path, branch: str) -> bool:
    res = await run(cwd, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    return res.rc == 0


async def symbolic_ref(cwd: str | Path, ref: str) -> str | None:
    res = await run(cwd, "symbolic-ref", "--quiet", "--short", ref, check=False)
    return res.out.strip() if res.rc == 0 else None


def _ref_file(git_dir: str, ref: str) -> str | None:
    """The text of the file git keeps `ref` in under `git_dir`, or None when there is no such
    file. LookupError when the file cannot answer like git would: then ask git."""
    if os.path.isdir(os.path.join(git_dir, "reftable")):
        raise LookupError("reftable")
    try:
        # Not through a symlink (ELOOP: git's to read): with core.preferSymlinkRefs, git's old
        # style, the link's text is the ref's name, which does not resolve as a path from
        # refs/remotes/origin/. Without waiting for a writer, and only a regular file: a FIFO
        # there blocks its reader, and this runs in the sidecar's event loop (git blocks on it
        # in its own process).
        fd = os.open(os.path.join(git_dir, ref), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LookupError("not a regular file")
            data = os.read(fd, 4097)
        finally:
            os.close(fd)
        return data.decode() if len(data) <= 4096 else ""  # (no ref file is that long: git decides)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise LookupError(str(e)) from None


def branch_file(common_dir: str, branch: str) -> str:
    """The object id in the loose ref file of `branch` (`refs/heads/<branch>`), without a git
    process: a branch that moves often (the target of every integration) is a loose file.
    LookupError when the file cannot say (none: the ref may be packed; anything but one object
    id and a newline; the reftable backend): then ask git."""
    text = _ref_file(common_dir, f"refs/heads/{branch}")
    if not text or not text.endswith("\n") or len(text) not in (41, 65) \
            or any(c not in "0123456789abcdef" for c in text[:-1]):
        raise LookupError("no loose ref of one object id")
    return text[:-1]


def ref_in_files(common_dir: str, ref: str) -> bool:
    """Whether `ref` (a full name) exists, from its loose file and `packed-refs`, without a git
    process (`para start` asks it of its new branch). LookupError when the files cannot say
    like git would (reftable; a directory or an odd file there; packed-refs unreadable)."""
    text = _ref_file(common_dir, ref)
    if text is not None:
        if len(text) not in (41, 65) or not text.endswith("\n") or any(c not in "0123456789abcdef" for c in text[:-1]):
            raise LookupError("not one object id")  # (git decides what a broken ref is)
        return True
    return ref in packed_names(common_dir)


def packed_names(common_dir: str) -> list[str]:
    """The names in `packed-refs` (none without the file). LookupError when it cannot be
    read, or the repository keeps its refs in a reftable: then ask git."""
    if os.path.isdir(os.path.join(common_dir, "reftable")):
        raise LookupError("reftable")
    try:
        packed = git_index.plain_file(os.path.join(common_dir, "packed-refs"))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise LookupError(str(e)) from None
    # (`<id> <name>` lines; `#` starts the header, `^` a peeled tag's line)
    return [line.split(b" ", 1)[1].decode("utf-8", "replace") for line in packed.splitlines()
            if line[:1] not in (b"#", b"^") and b" " in line]


def in_the_way_in_files(common_dir: str, ref: str, packed: list[str]) -> str | None:
    """What keeps `ref` (a full name) from being created, from the loose ref files and the
    names of `packed_names`, without a git process: `ref` itself when it exists, else a ref
    above or below it (`blocking_ref`); None when it can be made. Any file where a ref's file
    would be counts, broken or not: a name taken by mistake only makes the caller choose the
    next one. LookupError when a path cannot be read: then ask git."""
    return _file_in_the_way(common_dir, ref) or next(
        (name for name in packed if name == ref or blocking_ref(ref, (name,))), None)


def writing_in_the_way(common_dir: str, ref: str) -> str | None:
    """What else keeps git from making `ref` that no listing of refs shows (the path under
    `common_dir`, or None): its lock file (`<ref>.lock`: another writer, or one that died),
    and its reflog's place (`logs/<ref>`, which `git branch -m` moves along with the ref): a
    file where one of its directories goes, or a directory holding one where it goes. A
    sandboxed agent can write there (`logs/refs/heads/para/`). LookupError when a path cannot
    be read."""
    if os.path.lexists(os.path.join(common_dir, ref + ".lock")):
        return ref + ".lock"
    found = _file_in_the_way(os.path.join(common_dir, "logs"), ref)
    return f"logs/{found}" if found else None


def _file_in_the_way(top: str, ref: str) -> str | None:
    """The file under `top` (its path from there) where a directory of `ref`'s file goes, or
    at `ref` itself, or below it (git removes an empty directory in the way)."""
    parts = ref.split("/")
    for i in range(3, len(parts) + 1):  # (from the family of `ref_family` down to `ref`)
        path = os.path.join(top, *parts[:i])
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            break
        except OSError as e:
            raise LookupError(str(e)) from None
        if not stat.S_ISDIR(mode):
            return "/".join(parts[:i])
        if i == len(parts):
            for at, dirs, files in os.walk(path, onerror=_raise_lookup):
                found = files + [d for d in dirs if os.path.islink(os.path.join(at, d))]
                if found:
                    return os.path.relpath(os.path.join(at, found[0]), top).replace(os.sep, "/")
    return None


def _raise_lookup(e: OSError) -> None:
    raise LookupError(str(e))


def commit_in_files(common_dir: str, branch: str, known: Iterable[str | None] = ()) -> str:
    """`resolve` of `refs/heads/<branch>` without a git process, when its loose ref names a
    commit: one of `known` (commits the caller made or had git check), or a loose object
    that is a commit, its id checked. LookupError otherwise (packed, a tag, another object
    store, a damaged object): then ask git."""
    sha = branch_file(common_dir, branch)
    if sha in known:
        return sha
    if len(sha) != 40:
        raise LookupError("not a SHA-1 repository")
    try:
        inflate = zlib.decompressobj()
        # (Capped: a small object can inflate to gigabytes, and this runs in the event loop.)
        data = inflate.decompress(git_index.plain_file(os.path.join(common_dir, "objects", sha[:2], sha[2:]),
                                                       1 << 20), 1 << 20)
    except (OSError, zlib.error) as e:
        raise LookupError(str(e)) from None
    if inflate.unconsumed_tail or not inflate.eof:
        raise LookupError("a commit object larger than para reads itself")
    # (The whole object, its id checked: git refuses a damaged one, and so must this.)
    if not data.startswith(b"commit ") or hashlib.sha1(data).hexdigest() != sha:
        raise LookupError("not a commit's loose object")
    return sha


def symbolic_ref_file(common_dir: str, ref: str) -> str | None:
    """`symbolic_ref` of HEAD or `refs/remotes/<remote>/HEAD` in the main worktree, read from
    the file git keeps it in, without a git process (`para start` reads both). Symbolic refs
    are never packed, so no file means no such symbolic ref. Raises LookupError when the file
    cannot answer like git would (the reftable backend keeps a placeholder HEAD; a HEAD that
    is not a branch; an unreadable file): then ask `symbolic_ref`."""
    text = _ref_file(common_dir, ref)
    if text is None:
        if ref == "HEAD":
            raise LookupError("no HEAD file")
        return None
    if not text.startswith("ref: ") or not text.endswith("\n") or text.count("\n") != 1:
        if ref == "HEAD" or not text.startswith("ref: "):
            raise LookupError("not a symbolic ref")  # (detached: git's own answer decides)
        raise LookupError("unexpected file")
    target = text[len("ref: "):-1]
    if any(c <= " " or c == "\x7f" for c in target):
        # (git trims the file's trailing whitespace, a CRLF's \r too, and no ref name holds
        # a space or a control character: what it makes of such a file is its to say)
        raise LookupError("whitespace")
    for prefix in ("refs/heads/", "refs/remotes/"):
        if target.startswith(prefix) and len(target) > len(prefix):
            return target[len(prefix):]
    raise LookupError("points outside branches")


async def refs(cwd: str | Path, *patterns: str) -> dict[str, tuple[str, int]]:
    """{refname: (sha, committer unix time)} for refs matching the patterns. A ref naming an
    object that is not there (a sandboxed agent can write one under refs/heads/para/) is left
    out and logged: it must not make every listing of the repository fail (red team rt13 B1)."""
    fmt = "--format=%(refname)%00%(objectname)%00%(committerdate:unix)"
    res = await run(cwd, "for-each-ref", fmt, *patterns, check=False)
    if res.rc != 0:
        names = await out(cwd, "for-each-ref", "--format=%(refname)%00%(objectname)", *patterns)
        listed = [line.split("\0") for line in names.splitlines() if "\0" in line]
        check = await run(cwd, "cat-file", "--batch-check=%(objectname)", check=False,
                          stdin="".join(f"{sha}\n" for _, sha in listed).encode())
        missing = {line.split()[0] for line in check.out.splitlines() if line.endswith(" missing")}
        skipped = [name for name, sha in listed if sha in missing]
        log.warning("refs naming missing objects left out: %s", ", ".join(skipped)[:2000])
        kept = [name for name, sha in listed if sha not in missing]
        res = await run(cwd, "for-each-ref", fmt, *kept) if kept else Result(0, "", "")
    result = {}
    for line in res.out.strip().splitlines():
        name, sha, ts = line.split("\0")
        result[name] = (sha, int(ts or 0))
    return result


async def ref_in_the_way(cwd: str | Path, ref: str) -> str | None:
    """An existing ref that keeps `ref` from being created: git stores refs as paths, so
    refs/heads/a blocks refs/heads/a/b and refs/heads/a/b blocks refs/heads/a."""
    family = ref_family(ref)
    return blocking_ref(ref, await refs(cwd, family)) if family else None


def ref_family(ref: str) -> str | None:
    """The refs to list (a for-each-ref pattern) to tell whether `ref` exists or what keeps it
    from being created (`blocking_ref`); None for a ref outside any such family."""
    parts = ref.split("/")
    return "/".join(parts[:3]) if len(parts) >= 3 else None


def blocking_ref(ref: str, family: Iterable[str]) -> str | None:
    """The ref of `family` (listed by `ref_family(ref)`) that keeps `ref` from being created."""
    for other in family:
        if ref.startswith(other + "/") or other.startswith(ref + "/"):
            return other
    return None


async def create_branch(cwd: str | Path, branch: str, commit: str) -> None:
    await run(cwd, "branch", "--no-track", "--end-of-options", branch, commit)


async def rename_branch(cwd: str | Path, old: str, new: str) -> None:
    await run(cwd, "branch", "-m", "--end-of-options", old, new)


async def delete_branch(cwd: str | Path, branch: str, kept: str | None = None) -> str | None:
    """`git branch -D`, which is no compare-and-swap. With `kept` (the tip the caller read and
    kept), the commit git says it deleted (`Deleted branch x (was <abbrev>).`) is compared
    with it: a commit made on the branch in between is returned, for the caller to keep (its
    object is still there; only the ref went). None when git deleted `kept`, or found no such
    branch (deleted by hand meanwhile: it is not kept, so it is not said to be)."""
    try:
        res = await run(cwd, "branch", "-D", "--end-of-options", branch)
    except ParaError as e:
        if f"branch '{branch}' not found" in e.data.get("stderr", ""):
            return None
        raise
    was = _deleted(res.out).get(branch)
    return None if kept is None or was is None else await _slipped(cwd, branch, was, kept)


async def delete_branches(cwd: str | Path, kept: Mapping[str, str | None]) -> dict[str, str | None | ParaError]:
    """delete_branch of several branches ({branch: the tip kept, or None}) in one `git branch -D`:
    per branch, what delete_branch returns, or the error it raises. One git did not delete is
    tried again alone, for an error of its own (git goes on past one it refuses)."""
    if not kept:
        return {}
    res = await run(cwd, "branch", "-D", "--end-of-options", *kept, check=False)
    gone = _deleted(res.out)
    out: dict[str, str | None | ParaError] = {}
    for branch, tip in kept.items():
        try:
            if branch not in gone:
                out[branch] = await delete_branch(cwd, branch, tip)
            else:
                out[branch] = None if tip is None else await _slipped(cwd, branch, gone[branch], tip)
        except ParaError as e:
            out[branch] = e
    return out


def _deleted(text: str) -> dict[str, str]:
    """{branch: what it was} of `git branch -D`'s output: `Deleted branch x (was <abbrev>).` (a
    ref name holds no space)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("Deleted branch ") and " (was " in line:
            name, was = line[len("Deleted branch "):].split(" (was ", 1)
            found[name] = was.split(")", 1)[0].strip()
    return found


async def _slipped(cwd: str | Path, branch: str, was: str, kept: str) -> str | None:
    """The commit `branch` was deleted at (`was`, as git abbreviates it), when not `kept`."""
    # (Only an abbreviated id says what was deleted: a symbolic ref says `was refs/heads/x`,
    # a broken one `was broken`, and neither held a commit of its own.)
    if kept.startswith(was) or len(was) < 4 or any(c not in "0123456789abcdef" for c in was):
        return None
    found = await resolve(cwd, was)
    if found is None:
        log.warning("branch %s was deleted at %s, not at %s as read, and that commit cannot be found", branch, was, kept)
    return found


async def update_ref(cwd: str | Path, ref: str, new: str, old: str | None = None,
                     message: str = "para", create: Mapping[str, str] | None = None,
                     delete: Mapping[str, str] | None = None) -> None:
    """Move `ref` to `new`; with `old`, only if it still points there (compare-and-swap).
    A failure says whether the swap lost a race (`data.moved`: the ref no longer points at
    `old`) or git refused for another reason (a hook, a lock, a broken ref, one of `create`
    that exists). `create` ({ref: commit}, none of them there yet) and `delete` ({ref: the
    commit it must still name}) go in the same transaction: all of it happens, or none."""
    args = ["update-ref", "-m", message, ref, new] + ([old] if old is not None else [])
    stdin = None
    if create or delete:
        args = ["update-ref", "-m", message, "--stdin", "-z"]
        stdin = "".join([f"update {ref}\0{new}\0{old or ''}\0",
                         *(f"create {r}\0{sha}\0" for r, sha in (create or {}).items()),
                         *(f"delete {r}\0{sha}\0" for r, sha in (delete or {}).items())]).encode()
    res = await run(cwd, *args, check=False, stdin=stdin)
    if res.rc != 0:
        current = None
        if old is not None:
            current = (await run(cwd, "rev-parse", "--verify", "--quiet", ref, check=False)).out.strip()
        raise ParaError(Code.git_failed, f"git update-ref failed: {res.err.strip() or res.out.strip()}",
                        argv=["git", *args], stderr=res.err.strip(),
                        moved=current is not None and current != old, current=current)


async def create_ref(cwd: str | Path, ref: str, new: str, message: str = "para") -> str:
    """Create `ref` at `new` without ever moving an existing ref (`update-ref <ref> <new> ""`):
    a name an earlier backup already holds gets `-2`, `-3`, ... appended. A commit with the
    same tree and parents already under that name counts as written (a repair that makes
    the same snapshot again saves nothing twice). A name git cannot take passes to the next
    one too: its lock file, a broken ref file, a FIFO, link or directory where its file goes
    (when `cwd` is the top of a repository, its files are looked at first: git would wait on
    a FIFO forever, and a link would name another ref's commit). Returns the ref that holds it."""
    dot_git = os.path.join(cwd, ".git")
    common = dot_git if os.path.isdir(dot_git) else None
    name, n = ref, 2
    while True:
        if common is None or not _unusable_name(common, name):
            res = await run(cwd, "update-ref", "-m", message, name, new, "", check=False)
            if res.rc == 0:
                return name
            current = (await run(cwd, "rev-parse", "--verify", "--quiet", name, check=False)).out.strip()
            if current == new or (current and await _same_content(cwd, current, new)):
                return name
            if not current and (common is None or not _unusable_name(common, name, broken=True)):
                # refused for a reason no other name escapes (a hook, a file where a directory
                # above it goes)
                raise ParaError(Code.git_failed, f"git update-ref failed: {res.err.strip() or res.out.strip()}",
                                argv=["git", "update-ref", name, new, ""], stderr=res.err.strip())
        if n > 100:
            raise ParaError(Code.git_failed, f"no name from {ref} to {name} could be created", ref=ref)
        name, n = f"{ref}-{n}", n + 1


def _unusable_name(common_dir: str, ref: str, broken: bool = False) -> bool:
    """Whether `ref`'s file under `common_dir` is something git cannot or must not be asked
    about (anything but a regular file; its lock), or, with `broken`, is there at all (git
    just failed to read it as a ref)."""
    path = os.path.join(common_dir, ref)
    if os.path.lexists(path + ".lock"):
        return True
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # (none there; ENOTDIR: a file above it, git's to say)
        return False
    return broken or not stat.S_ISREG(mode)


async def _same_content(cwd: str | Path, a: str, b: str) -> bool:
    """Whether two commits have the same tree and the same parents (a snapshot made again)."""
    res = await run(cwd, "show", "-s", "--format=%T %P", a, b, check=False)
    lines = res.out.splitlines()
    return res.rc == 0 and len(lines) == 2 and lines[0] == lines[1]


async def delete_ref(cwd: str | Path, ref: str) -> None:
    await run(cwd, "update-ref", "-d", ref)


async def has_commit(cwd: str | Path, sha: str) -> bool:
    return (await run(cwd, "cat-file", "-e", f"{sha}^{{commit}}", check=False)).rc == 0


async def objects(cwd: str | Path, names: Sequence[str]) -> list[tuple[str, str] | None]:
    """(object id, type) of each of `names` (any revision syntax: `<commit>:<path>`,
    `refs/heads/x^{commit}`), None where it names nothing: one git process for all of them.
    Names come from para (validated refs, commits it read, its own paths), one per line."""
    if any("\n" in name for name in names):
        raise ValueError("a name with a newline")
    res = await run(cwd, "cat-file", "--batch-check=%(objectname) %(objecttype)",
                    stdin="".join(f"{name}\n" for name in names).encode())
    found: list[tuple[str, str] | None] = []
    for name, line in zip(names, res.out.split("\n"), strict=False):
        sha, _, kind = line.partition(" ")
        # (what names nothing is answered `<name> missing` or `<name> ambiguous`)
        found.append((sha, kind) if line != f"{name} missing" and line != f"{name} ambiguous" and kind else None)
    return found + [None] * (len(names) - len(found))


async def commits_present(cwd: str | Path, shas: Sequence[str]) -> list[str]:
    """Those of `shas` (full commit ids) that are commits here, in one git process."""
    wanted = [sha for sha in dict.fromkeys(shas) if len(sha) in (40, 64) and not sha.strip("0123456789abcdef")]
    if not wanted:
        return []
    res = await run(cwd, "cat-file", "--batch-check=%(objectname) %(objecttype)", check=False,
                    stdin="".join(f"{sha}\n" for sha in wanted).encode())
    found = {line.split()[0] for line in res.out.splitlines() if line.endswith(" commit")}
    return [sha for sha in wanted if sha in found]


async def bundle(cwd: str | Path, ref: str, exclude: Sequence[str] = ()) -> bytes:
    """A bundle of `ref` without what the `exclude` commits reach (the other side has them):
    its bytes, empty when there is nothing to send."""
    fd, path = tempfile.mkstemp(prefix="para-bundle-")  # (0600)
    os.close(fd)
    try:
        res = await run(cwd, "bundle", "create", "-q", path, ref, *(f"^{sha}" for sha in exclude), check=False)
        if res.rc != 0:
            if "empty bundle" in res.err:
                return b""
            raise ParaError(Code.git_failed, f"git bundle failed: {res.err.strip()}", stderr=res.err.strip())
        return await asyncio.to_thread(Path(path).read_bytes)
    finally:
        os.unlink(path)


async def unbundle(cwd: str | Path, data: bytes) -> None:
    """The objects of a bundle (from a worker) into this repository, verified first; no ref moves."""
    fd, path = tempfile.mkstemp(prefix="para-bundle-")  # (0600)
    try:
        os.close(fd)
        await asyncio.to_thread(Path(path).write_bytes, data)
        await run(cwd, "bundle", "verify", "-q", path)
        await run(cwd, "bundle", "unbundle", path)
    finally:
        os.unlink(path)


async def is_ancestor(cwd: str | Path, a: str, b: str) -> bool:
    return (await run(cwd, "merge-base", "--is-ancestor", a, b, check=False)).rc == 0


async def merge_base(cwd: str | Path, a: str, b: str) -> str | None:
    res = await run(cwd, "merge-base", a, b, check=False)
    return res.out.strip() if res.rc == 0 else None


async def merge_base_all(cwd: str | Path, commits: Sequence[str]) -> str | None:
    """A common ancestor of all `commits` (None when some share no history)."""
    if len(commits) == 1:
        return commits[0]
    res = await run(cwd, "merge-base", "--octopus", *commits, check=False)
    return res.out.split()[0] if res.rc == 0 and res.out.strip() else None


async def count(cwd: str | Path, rng: str) -> int:
    return int(await out(cwd, "rev-list", "--count", rng))


# ---- worktrees -----------------------------------------------------------

async def add_worktree(root: str | Path, path: str, branch: str, new_at: str | None = None) -> str:
    """Check `branch` out at `path`; with `new_at`, create the branch there first. Returns the
    worktree's private git dir (`<common>/worktrees/<id>`), read now, before any agent could
    rewrite the worktree's `.git` file."""
    unpin(path)  # (a worktree that was at this path before)
    if new_at is not None:
        await run(root, "worktree", "add", "--quiet", "-b", branch, path, new_at)
    else:
        await run(root, "worktree", "add", "--quiet", path, branch)
    try:  # (what git itself reads to find them: the `.git` file it just wrote and `commondir`)
        git_dir, common = _nested_git_dirs(path)
    except OSError:
        git_dir, common = (await out(path, "rev-parse", "--path-format=absolute", "--git-dir",
                                     "--git-common-dir")).splitlines()[:2]
        git_dir = os.path.realpath(git_dir)
    pin(path, git_dir, common)
    return git_dir


async def remove_worktree(root: str | Path, path: str) -> str | None:
    """`git worktree remove --force`; what it could not delete of the worktree's git dir once
    git no longer knows the worktree (a note, or None)."""
    found = pinned(path)
    if found is not None and os.path.isdir(found[0]) and os.path.isdir(path):
        relink(path, found[0])  # else git refuses: the worktree's `.git` "does not point back"
    res = await run(root, "worktree", "remove", "--force", path, check=False)
    if res.rc != 0 and not os.path.lexists(path):
        # git deletes the working tree, then its git dir; a git process reading the worktree at
        # that moment can leave a file in the git dir ("Directory not empty", seen with 20
        # integrations at once). The worktree is gone all the same: prune takes the git dir.
        for delay in (0.05, 0.2, 0.5):
            await asyncio.sleep(delay)
            await run(root, "worktree", "prune", check=False)
            if os.path.realpath(path) not in {os.path.realpath(w.path) for w in await worktrees(root)}:
                res = Result(0, "", "")
                break
    left = ""
    if found is not None and os.path.isdir(found[0]):
        left = f"{found[0]} still holds {', '.join(sorted(os.listdir(found[0]))[:8]) or 'nothing'}"
    if res.rc != 0:
        raise ParaError(Code.git_failed, f"git worktree failed: {res.err.strip() or res.out.strip()}"
                        + (f" ({left})" if left else ""),
                        argv=["git", "worktree", "remove", "--force", path], stderr=res.err.strip())
    unpin(path)
    return f"git no longer uses the worktree's git dir, but {left}: delete it by hand" if left else None


async def prune_worktrees(root: str | Path) -> None:
    await run(root, "worktree", "prune")


# ---- working tree --------------------------------------------------------

async def status(wt: str | Path) -> list[str]:
    """Porcelain status lines (tracked changes and untracked files, not ignored ones)."""
    # No optional locks: a read must never take index.lock from under an agent's commit.
    text = (await run(wt, "status", "--porcelain=v1", "-z", "--untracked-files=all",
                      env={"GIT_OPTIONAL_LOCKS": "0"})).out
    return [e for e in text.split("\0") if e and e[3:] not in OWN_FILES]


async def stage_all(wt: str | Path, env: dict[str, str] | None = None, exclude: Sequence[str] = ()) -> None:
    """Stage everything but ignored files, para's own files and the `exclude` paths
    (relative to the worktree's top; nested repositories saved separately). `--sparse`: in a
    sparse checkout, paths outside the cone (a new file there, a resolved conflict) are staged
    too instead of failing or being skipped."""
    if exclude:
        # An exclude pathspec naming a path an ignore pattern matches fails `git add` ("paths
        # are ignored"), though `add -A` would never add it: only the others are excluded.
        res = await run(wt, "check-ignore", "-z", "--stdin", stdin="\0".join(exclude).encode(), env=env, check=False)
        ignored = set(res.out.split("\0")) if res.rc == 0 else set()
        exclude = [p for p in exclude if p not in ignored]
    await run(wt, "add", "-A", "--sparse", "--", *_excluding(exclude), env=env)
    own = [f for f in OWN_FILES if os.path.lexists(os.path.join(wt, f))]
    if own:
        await run(wt, "reset", "--quiet", "--", *own, env=env, check=False)


async def has_staged(wt: str | Path) -> bool:
    return (await run(wt, "diff", "--cached", "--quiet", check=False)).rc == 1


async def commit(wt: str | Path, message: str, *, verify: bool = True) -> str:
    """Commit the index with `message` (via stdin, any content); returns the new HEAD."""
    # (The hooks that run are the repository's own, from its common dir: in a session
    # worktree git is never told another git dir, see `pin`.)
    args = ["commit", "--quiet", "--file=-"] + ([] if verify else ["--no-verify"])
    res = await run(wt, *args, check=False, stdin=message.encode())
    if res.rc != 0 and ("tell me who you are" in res.err or "empty ident" in res.err):
        res = await run(wt, *_FALLBACK_IDENTITY, *args, check=False, stdin=message.encode())
    if res.rc != 0:
        raise ParaError(Code.git_failed, f"git commit failed: {res.err.strip() or res.out.strip()}",
                        stderr=res.err.strip())
    return await out(wt, "rev-parse", "HEAD")


async def reset_soft(wt: str | Path, commit_: str) -> None:
    await run(wt, "reset", "--soft", commit_)


async def snapshot(wt: str | Path, message: str = "para snapshot", exclude: Sequence[str] = ()) -> str:
    """A commit of the whole working tree (untracked files included) on top of HEAD
    (a root commit on an unborn branch), made with a private index so the worktree,
    its index and its refs stay untouched. `exclude` as for stage_all."""
    index = await out(wt, "rev-parse", "--path-format=absolute", "--git-path", "index")
    with tempfile.TemporaryDirectory(prefix="para-snap-") as tmp:
        tmp_index = os.path.join(tmp, "index")
        if os.path.exists(index):
            shutil.copyfile(index, tmp_index)  # reuse git's stat cache
        env = {"GIT_INDEX_FILE": tmp_index}
        await stage_all(wt, env, exclude)
        tree = (await run(wt, "write-tree", env=env)).out.strip()
    head = await resolve(wt, "HEAD")
    parents = ["-p", head] if head else []
    res = await run(wt, "commit-tree", tree, *parents, check=False, stdin=message.encode())
    if res.rc != 0:
        res = await run(wt, *_FALLBACK_IDENTITY, "commit-tree", tree, *parents, stdin=message.encode())
    return res.out.strip()


async def snapshot_paths(wt: str | Path, paths: Sequence[str], message: str) -> str:
    """A commit of HEAD plus the files at `paths` as they are now, ignored ones included
    (`add --force`), made with a private index like `snapshot`."""
    head = await resolve(wt, "HEAD")
    with tempfile.TemporaryDirectory(prefix="para-snap-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index"), "GIT_LITERAL_PATHSPECS": "1"}
        if head:
            await run(wt, "read-tree", head, env=env)
        await run(wt, "add", "--force", "--", *paths, env=env)
        tree = (await run(wt, "write-tree", env=env)).out.strip()
    parents = ["-p", head] if head else []
    res = await run(wt, "commit-tree", tree, *parents, check=False, stdin=message.encode())
    if res.rc != 0:
        res = await run(wt, *_FALLBACK_IDENTITY, "commit-tree", tree, *parents, stdin=message.encode())
    return res.out.strip()


async def config_bool(cwd: str | Path, key: str) -> bool:
    res = await run(cwd, "config", "--type=bool", "--get", key, check=False)
    return res.rc == 0 and res.out.strip() == "true"


async def config_value(cwd: str | Path, key: str) -> str | None:
    res = await run(cwd, "config", "--get", key, check=False)
    return (res.out.strip() or None) if res.rc == 0 else None


async def signs_commits(cwd: str | Path) -> bool:
    """Whether the repository asks for signed commits (`commit.gpgSign`), which `git commit`
    honours and `git commit-tree` does not: para asks, then passes `-S` (commit_tree)."""
    return await config_bool(cwd, "commit.gpgSign")


async def commit_tree(cwd: str | Path, tree: str, parents: list[str], message: str, sign: bool = False) -> str:
    """A commit of `tree`, signed with `sign` (`-S` follows `user.signingKey` and `gpg.format`):
    pass `signs_commits()` to sign as `git commit` would."""
    args = ["commit-tree", tree]
    if sign:
        args.append("-S")
    for parent in parents:
        args += ["-p", parent]
    res = await run(cwd, *args, check=False, stdin=message.encode())
    if res.rc != 0:
        res = await run(cwd, *_FALLBACK_IDENTITY, *args, stdin=message.encode())
    return res.out.strip()


async def changed_paths(cwd: str | Path, a: str, b: str) -> set[str]:
    """Paths that differ between two commits or trees."""
    text = (await run(cwd, "diff", "--name-only", "--no-renames", "-z", a, b)).out
    return {p for p in text.split("\0") if p}


async def changed_path_kinds(cwd: str | Path, a: str, b: str) -> dict[str, str]:
    """{path: A, D, M or T} for every path that differs between two commits (no renames: a
    rename is its old path deleted and its new one added)."""
    fields = (await run(cwd, "diff-tree", "-r", "-z", "--name-status", "--no-renames", a, b)).out.split("\0")
    return {path: kind[:1] for kind, path in zip(fields[::2], fields[1::2]) if path}


async def dirty_paths(wt: str | Path) -> set[str]:
    """Paths with uncommitted changes, staged or not, untracked included."""
    text = (await run(wt, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
                      env={"GIT_OPTIONAL_LOCKS": "0"})).out
    return {e[3:] for e in text.split("\0") if len(e) > 3 and e[3:] not in OWN_FILES}


async def status_entries(wt: str | Path) -> dict[str, str]:
    """{path: porcelain XY} for every uncommitted change, untracked files included
    (no renames, so each entry is one path)."""
    text = (await run(wt, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
                      env={"GIT_OPTIONAL_LOCKS": "0"})).out
    return {e[3:]: e[:2] for e in text.split("\0") if len(e) > 3 and e[3:] not in OWN_FILES}


async def changed_gitlinks(cwd: str | Path, a: str, b: str) -> dict[str, tuple[str | None, str | None]]:
    """Submodule pointers (gitlinks) that differ between two commits: {path: (in a, in b)},
    None where the path is not a gitlink on that side."""
    text = (await run(cwd, "diff-tree", "-r", "-z", "--no-renames", a, b)).out
    fields, result = text.split("\0"), {}
    for meta, path in zip(fields[0::2], fields[1::2]):
        parts = meta.lstrip(":").split()
        if len(parts) < 4 or "160000" not in parts[:2]:
            continue
        result[path] = (parts[2] if parts[0] == "160000" else None, parts[3] if parts[1] == "160000" else None)
    return result


async def index_entries(wt: str | Path, paths: list[str]) -> dict[str, str]:
    """{path: object} of the merged (stage 0) index entries of these paths in a worktree."""
    text = (await run(wt, "ls-files", "--stage", "-z", "--", *paths, env={"GIT_LITERAL_PATHSPECS": "1"})).out
    result = {}
    for entry in text.split("\0"):
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if path and len(parts) == 3 and parts[2] == "0":
            result[path] = parts[1]
    return result


async def index_differs(wt: str | Path, commit: str) -> set[str]:
    """Paths where a worktree's index differs from `commit` (the worktree files are not looked at)."""
    text = (await run(wt, "diff-index", "--cached", "--name-only", "--no-renames", "-z", commit)).out
    return {p for p in text.split("\0") if p}


async def submodule_update(wt: str | Path, paths: list[str]) -> Result:
    """Check out the recorded commit in these initialised submodules, with what is already
    fetched (para never fetches), not recursively."""
    return await run(wt, "submodule", "--quiet", "update", "--no-fetch", "--", *paths, check=False,
                     env={"GIT_LITERAL_PATHSPECS": "1"})


async def unmerged_paths(wt: str | Path) -> list[str]:
    text = (await run(wt, "diff", "--name-only", "--diff-filter=U", "-z")).out
    return sorted({p for p in text.split("\0") if p})


async def git_path(wt: str | Path, name: str) -> str:
    return await out(wt, "rev-parse", "--path-format=absolute", "--git-path", name)


async def in_progress(wt: str | Path, git_dir: str | None = None) -> str | None:
    """'merge' or 'rebase' when one is stopped in this worktree, else None (one git process;
    none when the caller knows the worktree's git dir: the main worktree's is the common dir)."""
    if git_dir is not None:
        merge_head, *rebase_dirs = (os.path.join(git_dir, n) for n in ("MERGE_HEAD", "rebase-merge", "rebase-apply"))
    else:
        merge_head, *rebase_dirs = (await out(wt, "rev-parse", "--path-format=absolute", "--git-path", "MERGE_HEAD",
                                              "--git-path", "rebase-merge", "--git-path", "rebase-apply")).splitlines()
    if os.path.exists(merge_head):
        return "merge"
    if any(os.path.isdir(d) for d in rebase_dirs):
        return "rebase"
    return None


async def show_blob(cwd: str | Path, spec: str) -> bytes:
    proc = await asyncio.create_subprocess_exec("git", *BASE_ARGS, "cat-file", "blob", spec, cwd=str(cwd),
                                                env=_env(cwd, None), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    data, _ = await proc.communicate()
    return data if proc.returncode == 0 else b""


async def tree_of(cwd: str | Path, rev: str) -> str:
    return await out(cwd, "rev-parse", f"{rev}^{{tree}}")


async def merge_tree(cwd: str | Path, ours: str, theirs: str) -> tuple[bool, str, list[str]]:
    """Merge two commits without a worktree: (clean, result tree, conflicted paths).
    Names are read NUL-separated, verbatim (never C-quoted). Commits with no common
    history raise git_failed with `data.unrelated`."""
    res = await run(cwd, "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs,
                    check=False)
    if res.rc not in (0, 1):
        raise ParaError(Code.git_failed, f"git merge-tree failed: {res.err.strip()}",
                        unrelated="unrelated histories" in res.err)
    tree, *names = res.out.split("\0")
    return res.rc == 0, tree.strip(), list(dict.fromkeys(p for p in names if p))


async def is_integrated(cwd: str | Path, branch: str, target: str) -> bool:
    """Whether everything `branch` changed is already in `target`, by ancestry or by content
    (a squash or rebase of the branch onto `target` counts)."""
    if await is_ancestor(cwd, branch, target):
        return True
    clean, tree, _ = await merge_tree(cwd, target, branch)
    return clean and tree == await tree_of(cwd, target)


# ---- what a worktree holds besides its branch ------------------------------------
# `worktree remove --force` deletes everything in the directory: the git directories of
# initialised submodules (they live under .git/worktrees/<name>/modules/) and of
# repositories created or cloned inside it go too. These read what would be lost, and
# save it into the common repository first.

def _excluding(paths: Sequence[str]) -> list[str]:
    return [f":(top,exclude,literal){p}" for p in paths]


async def unkept_commits(cwd: str | Path, commit: str) -> int:
    """How many commits reachable from `commit` no branch holds."""
    return int(await out(cwd, "rev-list", "--count", commit, "--not", "--branches"))


def ref_safe(path: str) -> str:
    """A relative file path as refname components (what git forbids is percent-encoded)."""
    def enc(part: str) -> str:
        return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else
                       "".join(f"%{b:02X}" for b in c.encode()) for c in part)
    return "/".join(enc(part) for part in path.split("/") if part)


@dataclass(frozen=True)
class Embedded:
    """A repository with its own git directory inside a worktree."""

    path: str                   # relative to the worktree's top
    submodule: bool             # listed in the worktree's .gitmodules (else a nested repository)
    head: str | None            # its HEAD commit; None before its first commit
    refs: dict[str, str] = field(default_factory=dict)  # its branches and stash: refname -> commit
    unpushed: int = 0           # commits on HEAD and refs that none of its remote-tracking refs holds
    dirty: list[str] = field(default_factory=list)      # its uncommitted paths (status lines)
    remote: str | None = None   # remote.origin.url, to clone it again
    inner: list[Embedded] = field(default_factory=list)  # its own submodules and nested repositories

    @property
    def at_risk(self) -> bool:
        """Deleting its directory would lose something no remote has (here or deeper down)."""
        return bool(self.unpushed or self.dirty or any(e.at_risk for e in self.inner))

    def risks(self, top: str = "") -> list[tuple[str, Embedded]]:
        """(path from the outermost worktree, repository) of this one and every repository
        inside it that itself holds something no remote has."""
        here = os.path.join(top, self.path) if top else self.path
        mine = [(here, self)] if self.unpushed or self.dirty else []
        return mine + [r for e in self.inner for r in e.risks(here)]


EMBED_DEPTH = 8  # repositories inside repositories inside ... a worktree: searched this deep


async def status_and_embedded(wt: str | Path, depth: int = 0) -> tuple[list[str], list[Embedded], set[str]]:
    """`status()` of worktree `wt`, and its initialised submodules and nested repositories
    (a `git init` or `git clone` inside the worktree, tracked as a gitlink or not), each with
    those inside it (submodules of submodules, a clone inside a nested repository: their git
    directories go with the worktree too). Ignored directories are searched too: a clone in
    `vendor/` or `build/` goes with the worktree just the same, though git's status never
    shows it. The three reads run at once (each cancel and integration makes them before the
    worktree goes). Also the gitlinks its index holds (initialised or not)."""
    (lines, ignored), staged = await asyncio.gather(_status_and_ignored(wt), _gitlinks(wt))
    return lines, await _embedded_in(wt, lines, staged, ignored, depth), staged


async def _status_and_ignored(wt: str | Path) -> tuple[list[str], list[str]]:
    """`status()` and, from the same process, the ignored directories (`--ignored=matching`
    names a directory an ignore pattern matches, without looking inside; an ignored file is
    named by itself, and a repository in a directory that only holds ignored files is an
    untracked `?? dir/` all the same)."""
    text = (await run(wt, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching",
                      env={"GIT_OPTIONAL_LOCKS": "0"})).out
    lines, ignored = [], []
    entries = iter(text.split("\0"))
    for e in entries:
        if e.startswith("!! "):
            if e.endswith("/"):
                ignored.append(e[3:].rstrip("/"))
            continue
        found = [e, next(entries, "")] if "R" in e[:2] or "C" in e[:2] else [e]  # (a rename's old path follows)
        lines += [x for x in found if x and x[3:] not in OWN_FILES]
    return lines, ignored


async def _gitlinks(wt: str | Path) -> set[str]:
    # A session worktree's index is read where git would read it (its pinned git dir, not
    # where its `.git` file points): one file read instead of a git process on every cancel.
    found = pinned(str(wt))
    if found is not None:
        try:
            return await asyncio.to_thread(lambda: git_index.gitlinks(git_index.read(os.path.join(found[0], "index"))))
        except LookupError:
            pass
    staged = (await run(wt, "ls-files", "--stage", "-z")).out
    return {e.split("\t", 1)[1] for e in staged.split("\0") if e.startswith("160000 ") and "\t" in e}


async def _embedded_in(wt: str | Path, status_lines: list[str], gitlinks: set[str], ignored_dirs: list[str],
                       depth: int) -> list[Embedded]:
    # With --untracked-files=all, git shows a directory (trailing slash) only for a repository.
    candidates = gitlinks | {e[3:].rstrip("/") for e in status_lines if e.startswith("?? ") and e.endswith("/")}
    candidates |= await asyncio.to_thread(_repos_under, wt, ignored_dirs)
    # Git's names are read as UTF-8, U+FFFD for what is not: such a name finds nothing on disk,
    # and a repository there would go unsaved with the worktree. Refused, before anything goes.
    odd = sorted(p for p in candidates if _not_utf8_repo(wt, p))
    if odd:
        raise ParaError(Code.wrong_state, f"{', '.join(odd[:5])} in {wt} {'is a repository' if len(odd) == 1 else 'are repositories'}"
                        " at a path that is not UTF-8, which para cannot save before the worktree goes; rename it "
                        "(`mv`, or `git mv` for a submodule), then try again", paths=odd[:20])
    found = sorted(p for p in candidates if os.path.lexists(os.path.join(wt, p, ".git")))
    if not found:
        return []
    mapped: set[str] = set()
    if os.path.isfile(os.path.join(wt, ".gitmodules")):
        res = await run(wt, "config", "--file", os.path.join(wt, ".gitmodules"), "-z", "--get-regexp",
                        r"^submodule\..*\.path$", check=False)
        mapped = {item.split("\n", 1)[1] for item in res.out.split("\0") if "\n" in item}
    return [await _embedded(wt, p, p in mapped, depth) for p in found]


def _not_utf8_repo(wt: str | Path, rel: str) -> bool:
    """Whether `rel` names a repository under `wt` at a path that is not UTF-8: as git output
    reads it (U+FFFD), or as a directory walk does (surrogate escapes)."""
    if "\ufffd" in rel and not os.path.lexists(os.path.join(wt, rel)):
        return any(os.path.lexists(os.path.join(b, b".git")) for b in _named_so(wt, rel))
    try:
        rel.encode()
    except UnicodeEncodeError:
        return os.path.lexists(os.path.join(wt, rel, ".git"))
    return False


def _named_so(wt: str | Path, rel: str) -> list[bytes]:
    """The paths under `wt` (as bytes) whose name, decoded as git output is (U+FFFD for what is
    not UTF-8), reads `rel`."""
    paths = [os.fsencode(wt)]
    for part in rel.split("/"):
        below = []
        for base in paths:
            try:
                below += [os.path.join(base, n) for n in os.listdir(base) if n.decode("utf-8", "replace") == part]
            except OSError:
                continue
        paths = below
    return paths


def _repos_under(wt: str | Path, dirs: list[str]) -> set[str]:
    """The repositories (a `.git` directory or file) in the directories `dirs` of `wt`, and
    below them, not looking inside one found. Symlinks are not followed: a linked
    `node_modules` belongs to the main checkout. Blocking: call it from a worker thread."""
    found = set()
    for d in dirs:
        start = os.path.join(wt, d)
        if os.path.islink(start):
            continue
        for top, subdirs, files in os.walk(start):
            if ".git" in subdirs or ".git" in files:
                found.add(os.path.relpath(top, wt))
                subdirs.clear()
    return found


async def _embedded(wt: str | Path, rel: str, submodule: bool, depth: int = 0) -> Embedded:
    path = os.path.join(wt, rel)
    top = await run(path, "rev-parse", "--show-toplevel", check=False)
    if top.rc != 0 or os.path.realpath(top.out.strip()) != os.path.realpath(path):
        # (a broken .git would make git fall back to the enclosing worktree)
        raise ParaError(Code.git_failed, f"{path} has a .git that git cannot read as a repository", path=rel)
    head = await resolve(path, "HEAD")
    own = {name: sha for name, (sha, _) in (await refs(path, "refs/heads/", "refs/stash")).items()}
    revs = ([head] if head else []) + sorted(set(own.values()))
    unpushed = int(await out(path, "rev-list", "--count", *revs, "--not", "--remotes")) if revs else 0
    remote = await nested_config_value(path, "remote.origin.url")
    if depth < EMBED_DEPTH:
        lines, inner, _ = await status_and_embedded(path, depth + 1)
    else:
        lines, inner = await status(path), []
    nested = {e.path for e in inner if not e.submodule}  # saved on their own, not as its dirt
    dirty = [e for e in lines if e[3:].rstrip("/") not in nested]
    return Embedded(rel, submodule, head, own, unpushed, dirty, remote, inner)


async def nested_config_value(top: str, key: str) -> str | None:
    """A value of the own configuration of the repository at `top` (which para's git there
    does not read: `_nested_env`), read as data."""
    try:
        config_file = os.path.join(_nested_git_dirs(top)[1], "config")
    except OSError:
        return None
    res = await run("/", "config", "--file", config_file, "--get", key, check=False)
    return res.out.strip() or None


async def save_embedded(wt: str | Path, e: Embedded, into: str, prefix: str, message: str) -> dict[str, str]:
    """Copy `e`'s HEAD, branches and stash, and a snapshot of its uncommitted files, into the
    repository `into` as refs under `prefix` (created, never overwritten: see create_ref),
    and likewise each repository inside it that holds something, under
    `<prefix>/sub/<its path>`. Returns {ref: commit}."""
    path = os.path.join(wt, e.path)
    wanted = {f"{prefix}/{name[len('refs/'):]}": sha for name, sha in e.refs.items()}
    if e.head:
        wanted[f"{prefix}/HEAD"] = e.head
    if e.dirty:
        wanted[f"{prefix}/wip"] = await snapshot(path, message, exclude=[i.path for i in e.inner if not i.submodule])
    saved: dict[str, str] = {}
    if wanted:
        # The objects travel under scratch refs; the backup refs are then created in `into`.
        scratch = f"refs/para/incoming/{os.getpid()}-{id(e)}"
        shas = sorted(set(wanted.values()))
        await run(path, "-c", "protocol.file.allow=always", "push", "--quiet", "--no-verify", into,
                  *(f"+{sha}:{scratch}/{n}" for n, sha in enumerate(shas)))
        try:
            for ref, sha in wanted.items():
                saved[await create_ref(into, ref, sha)] = sha
        finally:
            for n in range(len(shas)):
                await run(into, "update-ref", "-d", f"{scratch}/{n}", check=False)
    for i in e.inner:
        if i.at_risk:
            saved.update(await save_embedded(path, i, into, f"{prefix}/sub/{ref_safe(i.path)}", message))
    return saved


async def unmapped_gitlinks(cwd: str | Path, old: str, new: str) -> list[str]:
    """Gitlinks that commit `new` adds or moves relative to `old` and that have no entry in
    `new`'s .gitmodules: what `git add` of a nested repository records. They land as an
    empty directory that no clone can fill."""
    return await _unmapped(cwd, (await run(cwd, "diff-tree", "-r", "-z", "--no-renames", old, new)).out, new)


async def unmapped_gitlinks_since_fork(cwd: str | Path, target: str, new: str) -> list[str] | None:
    """`unmapped_gitlinks` from the merge base of `target` and `new` to `new`, in one git
    process where there is one merge base; None when they share no history."""
    res = await run(cwd, "diff-tree", "-r", "-z", "--no-renames", "--merge-base", target, new, check=False)
    if res.rc == 0:
        return await _unmapped(cwd, res.out, new)
    fork = await merge_base(cwd, target, new)  # (none, or several: git picks one, as before)
    return None if fork is None else await unmapped_gitlinks(cwd, fork, new)


async def _unmapped(cwd: str | Path, diff_tree: str, new: str) -> list[str]:
    items = diff_tree.split("\0")
    links = [items[i + 1] for i in range(len(items) - 1)
             if items[i].startswith(":") and items[i].split(" ")[1:2] == ["160000"]]
    if not links:
        return []
    res = await run(cwd, "config", "--blob", f"{new}:.gitmodules", "-z", "--get-regexp",
                    r"^submodule\..*\.path$", check=False)
    mapped = {item.split("\n", 1)[1] for item in res.out.split("\0") if "\n" in item}
    return [p for p in links if p not in mapped]


def commit_log(path: str, rev_range: str, limit: int = 20) -> list[dict[str, Any]]:
    """Commit summaries for `rev_range` (blocking; call from a worker thread)."""
    import git as gitpython  # GitPython, imported lazily: only the sidecar needs it

    with gitpython.Repo(path) as repo:
        repo.git.update_environment(**_env(path, None))  # (the objects of sandboxed sessions too)
        return [{"sha": c.hexsha, "subject": c.summary, "author": c.author.name,
                 "time": c.committed_date} for c in repo.iter_commits(rev_range, max_count=limit)]


# ---- per-session object stores (sandboxed agents) ---------------------------------
# A sandboxed agent must not be able to delete the repository's history, so the common
# object store is read-only in its sandbox and the objects its git writes go to a directory
# of the session's own (mounted in the common store's place, see sandbox.argv). The common
# store never names that directory in its `objects/info/alternates`: a user's own git would
# then take objects from it (a `git commit` finds the blob there and does not write it, `git
# gc` drops its copy) that the agent can delete, and read a commit-graph the agent forged
# (red team rt13 O1, G1). Para's own git sees the live session directories through the
# environment instead (`_env`), with nothing but their objects trusted (UNTRUSTED_STORE_ARGS).
# Their objects are copied into the common store (through index-pack, which checks every
# object it is given) before anything outside the session (an integration's target) points at
# them (`absorb_reachable`: every object the new target needs, so a missing one fails it),
# and again when the session has ended, before the directory goes: a crash between two of
# these steps leaves a directory that `sweep_object_dirs` finishes at the next start.

SESSION_OBJECTS = "para-objects"  # <common>/para-objects/<session name>

# A session directory is the agent's to write: only its objects are read from it, never a
# commit-graph, multi-pack-index or bitmap that would make git answer from data the agent
# chose. (Given as environment, so GitPython's git gets it too.)
UNTRUSTED_STORE_CONFIG = (("core.commitGraph", "false"), ("core.multiPackIndex", "false"),
                          ("pack.useBitmaps", "false"))


def session_objects_env(dirs: Sequence[str]) -> dict[str, str]:
    """What makes git read the objects of the session directories `dirs` (and nothing else of theirs)."""
    env = {"GIT_ALTERNATE_OBJECT_DIRECTORIES": os.pathsep.join(dirs),
           "GIT_CONFIG_COUNT": str(len(UNTRUSTED_STORE_CONFIG))}
    for i, (key, value) in enumerate(UNTRUSTED_STORE_CONFIG):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env

# Common dirs that have (or had, in this process) session object directories.
_COMMONS: set[str] = set()


def _session_dirs(common_dir: str) -> list[str]:
    root = os.path.join(common_dir, SESSION_OBJECTS)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [os.path.join(root, n) for n in names if not n.startswith(".") and os.path.isdir(os.path.join(root, n))]


def _common_around(cwd: str | Path, commons: set[str] | frozenset[str] | None = None) -> str | None:
    """The common dir with session object directories that `cwd` is in (its main checkout or the
    common dir itself), if any. Only a repository para opened an object directory in counts."""
    commons = _COMMONS if commons is None else commons
    if not commons:
        return None
    path = os.path.realpath(cwd)
    while True:
        if path in commons:
            return path
        dot_git = os.path.join(path, ".git")
        if os.path.isdir(dot_git):
            found = os.path.realpath(dot_git)
            return found if found in commons else None
        if os.path.lexists(dot_git):
            return None  # another worktree: not one para made (those are pinned)
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def session_object_dir(common_dir: str, name: str) -> str:
    return os.path.join(common_dir, SESSION_OBJECTS, name)


def _alternates_file(common_dir: str) -> str:
    return os.path.join(common_dir, "objects", "info", "alternates")


def _alternates(common_dir: str) -> list[str]:
    try:
        with open(_alternates_file(common_dir)) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _write_alternates(common_dir: str, lines: list[str]) -> None:
    path = _alternates_file(common_dir)
    if not lines:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    write_new(path, "".join(f"{line}\n" for line in lines))


def write_new(path: str, text: str) -> None:
    """Write `path` as a new file renamed into place: never through a symlink (or a FIFO) that
    something else put there, and never into a directory reached through one."""
    parent = os.path.dirname(path)
    real = os.path.realpath(parent)
    if real != os.path.abspath(parent):
        raise ParaError(Code.git_failed, f"{parent} is (or is under) a symbolic link: para does not write "
                        f"{os.path.basename(path)} there", path=path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.para-", dir=parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _own_dir(path: str) -> None:
    """`path` a real directory: made if missing, anything else standing there (a symlink, a
    file) moved out of the way first."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
    os.makedirs(path, exist_ok=True)


def _forget_session_alternates(common_dir: str) -> None:
    """Lines an older para wrote for session directories go from the common store's alternates."""
    root = os.path.join(common_dir, SESSION_OBJECTS)
    lines = _alternates(common_dir)
    kept = [line for line in lines if os.path.dirname(line) != root]
    if kept != lines:
        _write_alternates(common_dir, kept)


def open_object_dir(common_dir: str, name: str) -> str:
    """The session's object directory, made. In the sandbox it is mounted as the common store,
    and the common store read-only at its `shared/`, which its own alternates name (relative:
    here, `shared/` is an empty directory). The agent wrote the directory: nothing para writes
    there follows a link it left (red team rt13 A1)."""
    objects = session_object_dir(common_dir, name)
    _own_dir(os.path.join(common_dir, SESSION_OBJECTS))
    _own_dir(objects)
    for sub in ("pack", "info", "shared"):
        _own_dir(os.path.join(objects, sub))
    write_new(os.path.join(objects, "info", "alternates"), "shared\n")
    _COMMONS.add(os.path.realpath(common_dir))
    _forget_session_alternates(common_dir)
    return objects


def _object_names(objects: str) -> list[str]:
    """The ids of the loose objects of an object directory (its packs are listed by show-index).
    Anything there that is not a regular file (a FIFO would block git reading it) is removed
    first: it cannot be an object. Blocking: call it from a worker thread."""
    for d in [os.path.join(objects, "pack"), *(os.path.join(objects, n) for n in os.listdir(objects) if len(n) == 2)]:
        with contextlib.suppress(OSError):
            for entry in os.scandir(d):
                if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
    names = []
    for sub in os.listdir(objects):
        if len(sub) == 2 and all(c in "0123456789abcdef" for c in sub) and os.path.isdir(os.path.join(objects, sub)):
            names += [sub + n for n in os.listdir(os.path.join(objects, sub))
                      if len(n) in (38, 62) and all(c in "0123456789abcdef" for c in n)]
    return names


async def absorb_objects(common_dir: str, objects: str) -> int:
    """Copy every object of the directory `objects` into the common store (those it has
    already included: a copy is harmless). Returns how many were given."""
    if not os.path.isdir(objects):
        return 0
    names = set(await asyncio.to_thread(_object_names, objects))
    for idx in [p for p in Path(objects, "pack").glob("*.idx") if p.is_file()]:
        res = await run(common_dir, "show-index", stdin=await asyncio.to_thread(idx.read_bytes), check=False)
        names |= {line.split()[1] for line in res.out.splitlines() if len(line.split()) >= 2}
    if not names:
        return 0
    env = {**BASE_ENV, **session_objects_env([os.path.join(common_dir, "objects")]), "GIT_DIR": common_dir,
           "GIT_OBJECT_DIRECTORY": objects}
    await _pack_into(common_dir, env, [], "".join(f"{n}\n" for n in sorted(names)), objects)
    return len(names)


async def absorb_reachable(common_dir: str, tip: str, known: Sequence[str]) -> None:
    """Copy every object `tip` needs that `known` (commits whose objects the common store has)
    do not into the common store, reading them from wherever para's git sees them (the live
    session directories): before a ref outside a session names `tip`. An object missing
    anywhere fails it, and the ref is not moved."""
    env = {**_env(common_dir, None), "GIT_DIR": common_dir}
    if "GIT_ALTERNATE_OBJECT_DIRECTORIES" not in env:
        # No live session directory: para's git sees the common store alone, where everything
        # `tip` needs already is (git wrote it there): nothing to copy, no pack to add.
        return
    await _pack_into(common_dir, env, ["--revs"], "".join(f"{r}\n" for r in [tip, "--not", *known]), tip)


async def _pack_into(common_dir: str, env: dict[str, str], how: list[str], stdin: str, what: str) -> None:
    """`git pack-objects` run with `env` (which says where it reads) into index-pack in the
    common store, which recomputes every object's id from its content: nothing reaches the
    common store under a name that is not its own, and no file of the agent's is copied."""
    with tempfile.TemporaryFile() as pack:
        proc = await asyncio.create_subprocess_exec(
            "git", *BASE_ARGS, "pack-objects", *how, "--stdout", "--quiet", cwd=common_dir, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=pack, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate(stdin.encode())
        if proc.returncode != 0:
            raise ParaError(Code.git_failed, f"git pack-objects failed on {what}: {err.decode(errors='replace')}",
                            objects=what)
        pack.seek(0)
        proc = await asyncio.create_subprocess_exec(
            "git", *BASE_ARGS, "index-pack", "--stdin", cwd=common_dir, env={**BASE_ENV, "GIT_DIR": common_dir},
            stdin=pack, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise ParaError(Code.git_failed, f"git index-pack failed for {what}: {err.decode(errors='replace')}",
                            objects=what)


async def close_object_dir(common_dir: str, objects: str, unused: Callable[[], bool] = lambda: True) -> bool:
    """The session has ended: its objects into the common store, then its alternate line
    out, then the directory (in that order: each step is safe to repeat after a crash).
    `unused` is asked again once the objects are in: a session of the same name that
    started meanwhile keeps the directory. Returns whether it went."""
    await absorb_objects(common_dir, objects)
    if not unused():
        return False
    lines = _alternates(common_dir)
    if objects in lines:
        _write_alternates(common_dir, [line for line in lines if line != objects])
    if os.path.isdir(objects) and not os.path.islink(objects):  # (renamed first: a session starting now makes a fresh one)
        trash = tempfile.mkdtemp(prefix=".gone-", dir=os.path.dirname(objects))
        os.replace(objects, os.path.join(trash, "objects"))
        await asyncio.to_thread(shutil.rmtree, trash, True)
    return True


def object_dirs(common_dir: str) -> set[str]:
    """Every session object directory there is, or that the alternates still name."""
    root = os.path.join(common_dir, SESSION_OBJECTS)
    if os.path.isdir(root):
        _COMMONS.add(os.path.realpath(common_dir))
    found = {os.path.join(root, n) for n in os.listdir(root)} if os.path.isdir(root) else set()
    return found | {line for line in _alternates(common_dir) if os.path.dirname(line) == root}
