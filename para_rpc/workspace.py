"""A session worktree's environment, executed: files copied from the main checkout, paths
linked to it, their lines in git's exclude file, ports probed, the setup/teardown hooks run.

The service decides what (service/environment.py); this module only does it, and never
through a path a repository could have planted to lead elsewhere: every file it writes is
checked to stay inside the worktree, and the hook log is opened without following symlinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import filecmp
import json
import os
import re
import shutil
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from para_rpc.errors import Code, ParaError

FICLONE = 0x40049409  # linux/fs.h: share the source's blocks (btrfs, xfs): a copy that costs nothing
EXCLUDE_MARK = "# para session.copy/session.link"


def _inside(path: str, root: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top + os.sep)


def _parent_ready(dest: str, worktree: str) -> bool:
    """Make `dest`'s directory inside the worktree; False when a (committed) symlink on the
    way would put it elsewhere."""
    parent = os.path.dirname(dest)
    if not _inside(parent, worktree) and os.path.lexists(parent):
        return False
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError:
        return False  # a file where a directory would go
    return _inside(parent, worktree)


def _clone_or_copy(src: str, dest: str) -> None:
    """Copy one regular file, never through a symlink at `dest`, reflinked where it can be."""
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = stat.S_IMODE(os.fstat(sfd).st_mode)
        dfd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            try:
                fcntl.ioctl(dfd, FICLONE, sfd)
            except OSError:
                with os.fdopen(os.dup(sfd), "rb") as fin, os.fdopen(os.dup(dfd), "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` as a regular expression over paths relative to the top: `*`, `?` and `[...]`
    within one component, a `**` component for any number of directories."""
    out = ""
    parts = pattern.strip("/").split("/")
    for i, part in enumerate(parts):
        if part == "**":
            out += "(?:[^/]+/)*" if i < len(parts) - 1 else ".*"
            continue
        j = 0
        while j < len(part):
            c = part[j]
            end = part.find("]", j + 2) if c == "[" else -1
            if c == "*":
                out += "[^/]*"
            elif c == "?":
                out += "[^/]"
            elif end != -1:
                body = part[j + 1:end]
                out += "[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]"
                j = end
            else:
                out += re.escape(c)
            j += 1
        if i < len(parts) - 1:
            out += "/"
    return re.compile(out + r"\Z", re.DOTALL)


def _matches(main: str, pattern: str) -> list[str]:
    """The paths under `main` matching `pattern`, sorted, never following a symlink (two links
    to `.` made glob's `**` walk forever) and never inside .git or .para."""
    parts = pattern.strip("/").split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    deep = "**" in parts
    depth = len(parts) - len(fixed)
    regex = _glob_regex(pattern)
    start = os.path.join(main, *fixed)
    found = []
    for top, dirs, files in os.walk(start):  # (os.walk follows no symlink by default)
        rel_top = os.path.relpath(top, main)
        level = 0 if rel_top == "." else rel_top.count(os.sep) + 1
        if rel_top == ".":
            dirs[:] = [d for d in dirs if d not in (".git", ".para")]
        if not deep and level - len(fixed) >= depth - 1:
            dirs[:] = []
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            rel = name if rel_top == "." else os.path.join(rel_top, name)
            if regex.match(rel):
                found.append(rel)
    return sorted(found)


def copy_files(main: str, worktree: str, globs: list[str]) -> tuple[list[str], list[str]]:
    """Copy the regular files of the main checkout matching `globs` into the worktree, where
    the worktree has nothing at that path yet (a tracked file is never overwritten). Returns
    the copied paths (relative) and a warning for each match left alone."""
    copied: list[str] = []
    seen: set[str] = set()  # (a set: a glob may match tens of thousands of files)
    warnings: list[str] = []
    for pattern in globs:
        for rel in _matches(main, pattern):
            src, dest = os.path.join(main, rel), os.path.join(worktree, rel)
            if rel.split(os.sep, 1)[0] in (".git", ".para"):
                continue  # git's own files, and para's (other sessions' worktrees among them)
            if rel in seen or not os.path.isfile(src) or os.path.islink(src):
                continue  # directories, links and special files: only regular files are copied
            if any(ord(c) < 32 or c == "\x7f" for c in rel):
                # An exclude line cannot name it, so git would see it and a save would commit it.
                warnings.append(f"session.copy: {rel!r} has a control character in its name; not copied")
            elif not _inside(src, main):
                warnings.append(f"session.copy: {rel} leads out of {main}; not copied")
            elif os.path.lexists(dest):
                continue  # tracked, or already there
            elif not _parent_ready(dest, worktree):
                warnings.append(f"session.copy: {rel} would be written outside the worktree; not copied")
            else:
                try:
                    _clone_or_copy(src, dest)
                except OSError as e:
                    warnings.append(f"session.copy: {rel} could not be copied: {e.strerror}")
                    continue
                copied.append(rel)
                seen.add(rel)
    return copied, warnings


def link_paths(main: str, worktree: str, paths: list[str]) -> tuple[list[str], list[str]]:
    """Symlink each path of the worktree to the main checkout's (which must exist). Returns the
    linked paths and a warning for each left alone."""
    linked: list[str] = []
    warnings: list[str] = []
    for rel in paths:
        src, dest = os.path.join(main, rel), os.path.join(worktree, rel)
        if not os.path.lexists(src):
            warnings.append(f"session.link: {rel} does not exist in {main}; not linked")
        elif os.path.lexists(dest):
            warnings.append(f"session.link: {rel} already exists in the worktree (tracked?); not linked")
        elif not _parent_ready(dest, worktree):
            warnings.append(f"session.link: {rel} would be made outside the worktree; not linked")
        else:
            os.symlink(src, dest)
            linked.append(rel)
    return linked, warnings


def _ignore_line(rel: str) -> str:
    """An exclude pattern matching exactly `rel` from the top of the worktree."""
    escaped = "".join("\\" + c if c in "\\*?[]!# " else c for c in rel)
    return "/" + escaped


def _owners_file(exclude_file: str) -> str:
    return exclude_file + ".para.json"


def _read_owners(exclude_file: str) -> dict[str, list[str]]:
    """{path: [owners]} of the lines para added to the exclude file (a line that was there
    before para wanted it is the user's, never in here, never removed)."""
    try:
        data = json.loads(Path(_owners_file(exclude_file)).read_text())
    except (OSError, ValueError):
        return {}
    paths = data.get("paths") if isinstance(data, dict) else None
    return {k: [str(o) for o in v] for k, v in paths.items() if isinstance(v, list)} if isinstance(paths, dict) else {}


def _write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _exclude_lock(exclude_file: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(exclude_file), exist_ok=True)
    with open(exclude_file + ".para-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def exclude(exclude_file: str, paths: list[str], owner: str) -> None:
    """Add `paths` to git's exclude file (shared by every worktree: git reads no exclude
    file of a linked worktree's own), once each, under an flock so concurrent starts keep
    each other's lines, and record `owner` (a session) as needing each line para added.
    Never a tracked .gitignore: nothing here is ever committed."""
    if not paths:
        return
    with _exclude_lock(exclude_file):
        text = Path(exclude_file).read_text() if os.path.exists(exclude_file) else ""
        have = set(text.splitlines())
        owners = _read_owners(exclude_file)
        missing: dict[str, str] = {}
        for p in paths:
            line = _ignore_line(p)
            if line not in have:
                missing.setdefault(line, p)
            if (line not in have or p in owners) and owner not in owners.setdefault(p, []):
                owners[p].append(owner)  # (a line the user had before is theirs: no owner, never removed)
        _write(_owners_file(exclude_file), json.dumps({"paths": owners}))
        if not missing:
            return
        sep = "" if not text or text.endswith("\n") else "\n"
        mark = "" if EXCLUDE_MARK in have else EXCLUDE_MARK + "\n"
        _write(exclude_file, text + sep + mark + "\n".join(missing) + "\n")


def unexclude(exclude_file: str, live: set[str]) -> list[str]:
    """Forget every owner not in `live` (sessions that still have a worktree) and remove the
    lines para added that no owner needs any more: an excluded path would otherwise hide a
    later session's new file at it from every save. Returns the paths no longer excluded."""
    if not os.path.exists(_owners_file(exclude_file)):
        return []
    with _exclude_lock(exclude_file):
        owners = _read_owners(exclude_file)
        gone = [p for p, who in owners.items() if not set(who) & live]
        kept = {p: [o for o in who if o in live] for p, who in owners.items() if p not in gone}
        if gone and os.path.exists(exclude_file):
            drop = {_ignore_line(p) for p in gone}
            text = Path(exclude_file).read_text()
            lines = [line for line in text.splitlines() if line not in drop]
            if lines == [EXCLUDE_MARK]:
                lines = []
            _write(exclude_file, "".join(line + "\n" for line in lines))
        _write(_owners_file(exclude_file), json.dumps({"paths": kept}))
        return gone


def excluded_by_para(exclude_file: str) -> list[str]:
    """The paths para's lines in the exclude file hide now."""
    return sorted(_read_owners(exclude_file))


def not_own(main: str, worktree: str, paths: list[str], copied: list[str], linked: list[str]) -> list[str]:
    """Which of `paths` (excluded by para) exist in the worktree as something other than
    this session's own copy (same content as the main checkout's file) or link (to the main
    checkout's path): files an agent wrote there, which no save would see."""
    found = []
    for rel in paths:
        p, src = os.path.join(worktree, rel), os.path.join(main, rel)
        if not os.path.lexists(p) or not _inside(os.path.dirname(p), worktree):
            continue
        if rel in linked and os.path.islink(p) and os.readlink(p) == src:
            continue
        if (rel in copied and os.path.isfile(p) and not os.path.islink(p) and os.path.isfile(src)
                and filecmp.cmp(p, src, shallow=False)):
            continue
        found.append(rel)
    return found


def port_free(port: int) -> bool:
    """Whether nothing listens on (or holds) `port`: bound and released at once, on every
    address family this machine has."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here
        with sock:
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((addr, port))
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    continue
                return False
    return True


def proc_start(pid: int, live: bool = False) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22): with
    the pid, what names one process for good (a pid is recycled, a pid and its start are not).
    With `live`, None for a zombie (it has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return None if live and fields[0] == b"Z" else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _group_members(pgid: int) -> list[int]:
    found: list[int] = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != b"Z":
                found.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    return found


def lineage(pid: int) -> set[int]:
    """`pid`, its ancestors, and the process groups and sessions of each: the ids a process
    that some hook started (even one that left the hook's group with setsid) is found under."""
    found: set[int] = set()
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            ppid, pgid, sid = int(fields[1]), int(fields[2]), int(fields[3])
        except (OSError, ValueError, IndexError):
            break
        found |= {pid, pgid, sid}
        pid = ppid
    return found


def hook_group_alive(pgid: int, start: int | None) -> bool:
    """Whether the process group of a hook that started as (`pgid`, `start`) still has members.
    Its leader alive with another start time is a recycled pid: not the hook's. With the leader
    gone, the group can still only be the hook's: Linux hands out no pid that is in use as a
    process group id, so no new group can take that id while one member of the old lives."""
    leader = proc_start(pgid)
    if leader is not None and start is not None and leader != start:
        return False
    return bool(_group_members(pgid))


def stop_leftover(pgid: int, start: int | None) -> bool:
    """Kill the process group a hook (or a crashed sidecar's hook) left running, if it still is
    that hook's (`hook_group_alive`): wherever its members went, a `cd /` included. Returns
    whether there was one to kill. Without a journaled start time (a journal older than it)
    a leader alive under that pid is taken as the hook. Blocking: call it from a worker thread."""
    if not hook_group_alive(pgid, start):
        return False
    kill_group(pgid)
    # Gone before anything runs again (a teardown redone by the repair must not overlap it).
    deadline = time.monotonic() + 10
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


@dataclass
class HookRun:
    exit_code: int | None      # None: it did not finish in time (killed) or could not start
    timed_out: bool = False
    error: str | None = None   # why it could not start


def open_log(path: str) -> int:
    """The hook's log, appended to, 0600, never through a symlink a repository planted."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ParaError(Code.invalid_input, f"{path} is a symlink; para does not write through it. "
                            "Remove it and try again", path=path) from None
        raise
    os.fchmod(fd, 0o600)
    return fd


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run_hook(argv: list[str], cwd: str, env: dict[str, str], log: str, timeout: float,
                   on_start: Callable[[int], None] = lambda pid: None,
                   on_line: Callable[[str], None] = lambda line: None) -> HookRun:
    """Run `argv` (no shell) in its own process group, its output going straight into `log`
    (handed line by line to `on_line` as it arrives); past `timeout` seconds the whole group
    is killed. No pipe: a server the hook leaves running in the background keeps writing to
    the log, and neither it nor an endless line without a newline can keep this waiting."""
    fd = open_log(log)
    try:
        os.write(fd, f"$ {' '.join(argv)}\n".encode())
        offset = os.lseek(fd, 0, os.SEEK_END)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd,
                start_new_session=True)
        except OSError as e:
            msg = f"cannot run {argv[0]!r}: {e.strerror}"
            os.write(fd, (msg + "\n").encode())
            return HookRun(None, error=msg)
        on_start(proc.pid)
        lines = _LogLines(log, offset, on_line, fd)
        follower = asyncio.ensure_future(lines.follow())
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.CancelledError:
            kill_group(proc.pid)  # the operation that ran it is gone: nothing it started stays
            raise
        except TimeoutError:
            kill_group(proc.pid)
            await proc.wait()
            os.write(fd, f"para: killed after {timeout:g} seconds\n".encode())
            return HookRun(None, timed_out=True)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            lines.read()  # what came after the last look
        os.write(fd, f"para: exit status {proc.returncode}\n".encode())
        return HookRun(proc.returncode)
    finally:
        os.close(fd)


LOG_MAX = 10 << 20  # bytes of one hook run's output kept in its log (documented in the README)


class _LogLines:
    """Lines appended to a hook's log since `offset`, handed to `on_line` (a `\\r` ends a line
    too: progress bars; a line is cut at LINE_MAX bytes). Past LOG_MAX bytes of this run the
    log is cut back to LOG_MAX plus a marker line at every look: 200 MB of output must not
    fill the disk or keep the sidecar decoding it."""

    LINE_MAX = 4096

    def __init__(self, path: str, offset: int, on_line: Callable[[str], None], fd: int) -> None:
        self.path, self.offset, self.on_line, self.partial = path, offset, on_line, b""
        self.fd, self.limit, self.capped, self.end = fd, offset + LOG_MAX, False, 0

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.read()

    def _cap(self) -> None:
        with contextlib.suppress(OSError):
            size = os.fstat(self.fd).st_size
            if not self.capped and size > self.limit:
                os.ftruncate(self.fd, self.limit)
                mark = f"\npara: output past {LOG_MAX >> 20} MiB cut here; the rest of this run is not kept\n".encode()
                os.write(self.fd, mark)  # (O_APPEND: at the new end)
                self.capped, self.end = True, self.limit + len(mark)
            elif self.capped and size > self.end:
                os.ftruncate(self.fd, self.end)

    def read(self) -> None:
        self._cap()
        if self.offset >= self.limit:
            return  # past the cap: nothing more is kept, so nothing more is sent
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(min(1 << 20, self.limit - self.offset))
        except OSError:
            return
        self.offset += len(data)
        data = self.partial + data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *done, self.partial = data.split(b"\n")
        if len(self.partial) > self.LINE_MAX:
            done.append(self.partial)
            self.partial = b""
        for line in done:
            if line:
                self.on_line(line[:self.LINE_MAX].decode(errors="replace"))
