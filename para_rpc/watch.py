"""Change tracking for worktrees, so a question git already answered is not asked again.

`list` at a hundred sessions used to run one `git status` per session on every call. A
`Watcher` keeps inotify watches on each worktree's directories (and on its private git
directory, where the index and HEAD live) and counts events per worktree: a cached answer
stays valid while that count and the git facts it was computed from are unchanged. Any
event at all (a file edited, created, moved, deleted, its mode changed; the index or HEAD
rewritten; a queue overflow) invalidates, so the cache can be stale only for as long as the
kernel takes to queue an event.

Where inotify is missing (not Linux, no watches left) or a worktree has more directories
than a watch budget allows, `token()` answers None and callers ask git every time: slower,
never wrong. Linux inotify through ctypes keeps this free of dependencies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from collections.abc import Iterable

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000

MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)

# Directories watched per worktree at most: a worktree with a vendored tree bigger than this
# is answered by git every time rather than spending the user's watch budget on it.
MAX_DIRS = 4000


class _Root:
    __slots__ = ("epoch", "extras", "gen", "ok", "path", "wds")

    def __init__(self, path: str, epoch: int) -> None:
        self.path = path
        self.epoch = epoch  # a new watch of the same path never repeats an old token
        self.gen = 0
        self.wds: set[int] = set()
        self.extras: dict[int, str] = {}  # the `extra` directories watched, by descriptor
        self.ok = True


_GONE, _FAILED = -1, -2  # (what `_add` answers besides a watch descriptor)


class Watcher:
    """Event counts per watched worktree. Thread-safe: watches may be added from a worker
    thread (walking a big tree must not block the event loop) while the loop reads tokens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roots: dict[str, _Root] = {}
        # watch descriptor -> the roots it counts for: inotify has one descriptor per directory,
        # and a directory may be in two roots (a worktree's private git dir: in the repository's
        # `worktrees/` root and the worktree's own, as its extra)
        self._owner: dict[int, set[str]] = {}
        self._paths: dict[int, str] = {}  # watch descriptor -> the directory it watches
        self._epochs = 0
        self._changes = 0  # every event counted, every root dropped: `generation`
        self._fd = -1
        self._libc: ctypes.CDLL | None = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd >= 0:
            self._fd, self._libc = fd, libc

    @property
    def available(self) -> bool:
        return self._fd >= 0

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1
            self._roots.clear()
            self._owner.clear()
            self._paths.clear()

    def watching(self, root: str) -> bool:
        """Whether `root` was given to `watch` (successfully or not) and is still tracked."""
        return root in self._roots  # (one dict lookup: atomic, no lock needed)

    def watch(self, root: str, extra: tuple[str, ...] = ()) -> bool:
        """Start counting events under `root` (every directory but `.git`, symlinks not
        followed) and in the `extra` directories (not recursively). False when that is not
        possible; the root then stays unwatched for good (asked of git every time)."""
        with self._lock:
            known = self._roots.get(root)
            if known is not None:
                return known.ok
            if not os.path.isdir(root):
                return False  # (not recorded: asked again once it exists)
            self._epochs += 1
            r = self._roots[root] = _Root(root, self._epochs)
            if self._fd < 0:
                r.ok = False
                return False
            ok = True
            for d in extra:
                wd = self._add(r, root, d)
                ok = ok and wd != _FAILED
                if wd >= 0:
                    r.extras[wd] = d
            ok = ok and self._add_tree(r, root, root)
            if not ok:
                self._drop(r)
            return ok

    def token(self, root: str) -> tuple[int, int] | None:
        """Which watch of `root` and how many events it has seen, or None when `root` is not
        watched. Take it before asking git; the answer stays valid while the token does."""
        return self.tokens((root,))[0]

    def generation(self) -> tuple[int, int] | None:
        """A value that moves whenever any root's token does (an event counted, a root
        watched, dropped or forgotten): while it holds, every token does, without a look at
        each root. None when nothing can be watched, or a walk holds the lock (as `tokens`)."""
        if self._fd < 0 or not self._lock.acquire(blocking=False):
            return None
        try:
            self._drain()
            return (self._epochs, self._changes) if self._fd >= 0 else None
        finally:
            self._lock.release()

    def tokens(self, roots: Iterable[str]) -> list[tuple[int, int] | None]:
        """`token` of each root, all after one look at the kernel's queue (a hundred worktrees
        in one `list`: one read, not a hundred)."""
        # Never wait for a walk in progress (a worker thread holds the lock): the event loop
        # calls this, and git can answer meanwhile.
        if not self._lock.acquire(blocking=False):
            return [None for _ in roots]
        try:
            self._drain()
            found = [self._roots.get(root) for root in roots]
            return [(r.epoch, r.gen) if r is not None and r.ok else None for r in found]
        finally:
            self._lock.release()

    # -- internals (called with the lock held)

    def _add(self, r: _Root, root: str, path: str) -> int:
        """The watch descriptor of `path`, now counting for `root`; _GONE when the directory
        went away meanwhile (fine: its parent saw the deletion), _FAILED for anything else (no
        watches left, no permission: changes cannot be seen)."""
        assert self._libc is not None
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), MASK)
        if wd < 0:
            return _GONE if ctypes.get_errno() in (errno.ENOENT, errno.ENOTDIR) else _FAILED
        r.wds.add(wd)
        self._owner.setdefault(wd, set()).add(root)
        self._paths[wd] = path
        return int(wd)

    def _add_tree(self, r: _Root, root: str, top: str) -> bool:
        # Watch before listing: a directory created after its parent's watch shows up as an
        # event (and is watched then); one created before is in the listing.
        stack = [top]
        while stack:
            d = stack.pop()
            if self._add(r, root, d) == _FAILED:
                return False
            if len(r.wds) > MAX_DIRS:
                return False
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.name != ".git" and e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
            except OSError:
                continue
        return True

    def _drop(self, r: _Root) -> None:
        self._changes += 1
        r.ok = False
        for wd in r.wds:
            self._forget(wd, r.path, remove=True)
        r.wds.clear()
        r.extras.clear()

    def _forget(self, wd: int, root: str, remove: bool) -> None:
        """`root` no longer counts `wd`'s events; the last root that did lets go of it (and,
        with `remove`, the kernel's watch: not when the kernel already removed it)."""
        owners = self._owner.get(wd)
        if owners is not None:
            owners.discard(root)
            if owners:
                return
        self._owner.pop(wd, None)
        self._paths.pop(wd, None)
        if remove and self._libc is not None and self._fd >= 0:
            self._libc.inotify_rm_watch(self._fd, wd)

    def _drain(self) -> None:
        if self._fd < 0:
            return
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                name = data[pos + _EVENT.size:pos + _EVENT.size + length].rstrip(b"\0")
                pos += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    # Events were lost, among them perhaps a directory's creation (it would never
                    # be watched): forget every root, so each is walked again when next asked.
                    for r in self._roots.values():
                        self._drop(r)
                    self._roots.clear()
                    continue
                for root in sorted(self._owner.get(wd, ())):
                    counted = self._roots.get(root)
                    if counted is not None:
                        self._count(wd, mask, name, counted)

    def _count(self, wd: int, mask: int, name: bytes, r: _Root) -> None:
        """One event of `wd` for the root `r` it counts for."""
        r.gen += 1
        self._changes += 1
        root = r.path
        if (self._paths.get(wd) == root or wd in r.extras) and mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
            # The worktree itself went (removed, moved), or an extra directory did (a private
            # git dir removed, replaced: one made again would not be watched): a later watch of
            # this path is a new root, walked afresh.
            self._drop(r)
            del self._roots[root]
        elif mask & IN_IGNORED:
            r.wds.discard(wd)
            self._forget(wd, root, remove=False)
        elif mask & IN_MOVE_SELF or (mask & IN_ISDIR and mask & IN_MOVED_FROM):
            # A directory moved: the paths recorded under it are stale, so new
            # directories below it could no longer be found. Start over: the root is
            # forgotten (answered by git) until the next `watch` walks it again.
            self._drop(r)
            del self._roots[root]
        elif mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO) and r.ok and name != b".git":
            parent = self._paths.get(wd)
            if parent is not None and not self._add_tree(r, root, os.path.join(parent, os.fsdecode(name))):
                self._drop(r)


def gitdir_of(worktree: str, data: bytes) -> str | None:
    """A linked worktree's private git directory (where its index and HEAD live), from the
    `gitdir:` line of its `.git` file (`data`: its start, as `git.dotgit` reads it); None for
    anything else."""
    line = data.split(b"\n", 1)[0][:4096].decode("utf-8", "replace").strip()
    if not line.startswith("gitdir: "):
        return None
    path = line[len("gitdir: "):]
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(worktree, path))
