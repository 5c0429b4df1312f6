"""Where the sidecar lives: runtime directory, socket, lock and log paths (stdlib only).

`PARA_SOCKET` names the socket directly (tests, several independent sidecars);
otherwise it is `sidecar.sock` in `PARA_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/para`,
else `/tmp/para-<uid>`. The lock and log files sit next to the socket.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from para_rpc.errors import Code, ParaError

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

# The write end of the pipe a CLI that starts a sidecar waits on until it listens.
READY_FD_ENV = "PARA_READY_FD"


def python(*args: str) -> list[str]:
    """The argv of a Python process para starts (the sidecar, agent runners, the scripted
    agent). `-P` (3.11): its cwd, often a repository or a session worktree, is not put first
    on sys.path, or a committed `para_rpc/` or `json.py` would run as the user."""
    return [sys.executable, "-P", *args]


def _path(path: str) -> Path:
    # pathlib (with urllib.parse and ipaddress) is loaded only where a Path is wanted: the CLI's
    # calls use the strings below and never load it (milliseconds in every `para` process).
    from pathlib import Path

    return Path(path)


def _runtime_dir() -> str:
    if os.environ.get("PARA_RUNTIME_DIR"):
        return os.environ["PARA_RUNTIME_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "para")
    return f"/tmp/para-{os.getuid()}"


def socket_file() -> str:
    """The sidecar's socket, as `socket_path()` names it, as a string."""
    if os.environ.get("PARA_SOCKET"):
        return os.environ["PARA_SOCKET"]
    return os.path.join(_runtime_dir(), "sidecar.sock")


def runtime_dir() -> Path:
    return _path(_runtime_dir())


def socket_path() -> Path:
    return _path(socket_file())


def mcp_socket_path(sock: Path | None = None) -> Path:
    """The sidecar's MCP socket: next to its JSON-RPC socket."""
    sock = sock or socket_path()
    return sock.with_name(sock.name + ".mcp")


def lock_path() -> Path:
    return socket_path().with_name(socket_path().name + ".lock")


def log_path() -> Path:
    return socket_path().with_name(socket_path().name + ".log")


KNOWN_REPOS_MAX = 64


def known_repos_path(sock: str | os.PathLike[str]) -> Path:
    """The repositories a sidecar served, next to its socket: the next sidecar on that socket
    reopens them at its start to repair what a crash or a stop left there."""
    return _path(f"{os.fspath(sock)}.repos")


def known_repos(sock: str | os.PathLike[str]) -> list[str]:
    import json  # (the sidecar's alone, which has it loaded: `json` costs every `para` process ~7 ms)

    try:
        data = json.loads(known_repos_path(sock).read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, str) and os.path.isabs(r)] if isinstance(data, list) else []


def _write_known(sock: str | os.PathLike[str], roots: list[str]) -> None:
    # (only the sidecar holding the socket's lock writes it: no lock of its own)
    import json

    path = known_repos_path(sock)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write_private(tmp, json.dumps(roots[-KNOWN_REPOS_MAX:]))
    os.replace(tmp, path)


def remember_repo(sock: str | os.PathLike[str], root: str) -> None:
    """Add `root` to the sidecar's known repositories (the most recent last, at most 64)."""
    roots = known_repos(sock)
    if roots and roots[-1] == root:
        return
    _write_known(sock, [r for r in roots if r != root] + [root])


def forget_repos(sock: str | os.PathLike[str], gone: list[str]) -> None:
    roots = known_repos(sock)
    _write_known(sock, [r for r in roots if r not in gone])


def _setting() -> str:
    """The environment variable that chose the socket's directory (for messages)."""
    for name in ("PARA_SOCKET", "PARA_RUNTIME_DIR", "XDG_RUNTIME_DIR"):
        if os.environ.get(name):
            return name
    return "PARA_RUNTIME_DIR"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` as a 0700 directory, or accept an existing one that is ours and private.

    An existing directory is never changed: `PARA_SOCKET` or `PARA_RUNTIME_DIR` may name one
    that is not para's (`$HOME`, a project folder), and tightening it behind the user's back
    would break whatever else lives there. One that other users can read or write is refused."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o700)  # ours: the umask may have taken more than group and others
        return path
    st = path.lstat()
    var = _setting()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ParaError(Code.sidecar_unavailable,
                        f"{path} is not a directory owned by you; refusing to put the para socket there. "
                        f"Point {var} at a private directory of yours (para creates it if it does not exist)")
    if st.st_mode & 0o077:
        raise ParaError(Code.sidecar_unavailable,
                        f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); para keeps its socket, "
                        f"lock and log there only in a private directory. Run `chmod 700 {path}` if that directory "
                        f"is only for para, or point {var} at a private directory (para creates it if it does not "
                        "exist)")
    return path


def _open_own(path: str | os.PathLike[str], flags: int) -> int:
    """Open a file para writes inside a repository (prompts, logs, the agent's instruction
    file), never through a symlink: a repository can commit `.para/prompts/<name>.md` or
    `.para-agent.md` as a link to the user's ~/.bashrc, and the text written is the task."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ParaError(Code.invalid_input, f"{os.fspath(path)} is a symlink (a repository may have planted it "
                            f"to make para write into {os.path.realpath(path)}); para does not write through it. "
                            "Remove it and try again", path=os.fspath(path)) from None
        raise


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Write a file only the user can read (prompts, logs, tokens), whatever the umask;
    one that already exists is tightened too; never through a symlink."""
    fd = _open_own(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)
        f.write(text)


def create_private(path: str | os.PathLike[str]) -> None:
    """Make sure `path` exists and only the user can read it (a log others append to);
    never through a symlink."""
    fd = _open_own(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_regular(path: str | os.PathLike[str], *, what: str, code: Code, limit: int,
                 within: str | os.PathLike[str] | None = None) -> bytes | None:
    """The bytes of a file para reads from a repository (config, task files), or None when it
    does not exist. Whoever writes the repository chooses what is there: a symlink out of
    `within` (to /dev/zero, to another user's secrets), a FIFO (opening or reading it would
    block the sidecar for every client), a device, or gigabytes. Each is refused with `code`,
    before anything is read past `limit` bytes; a FIFO is never waited on (O_NONBLOCK)."""
    shown = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if within is not None:
        real, root = os.path.realpath(path), os.path.realpath(within)
        if real != root and not real.startswith(root + os.sep):
            raise ParaError(code, f"{what} {shown} leads out of {within} (a symlink to {real}); "
                            "refusing to read it", path=shown)
        path, flags = real, flags | os.O_NOFOLLOW  # (a symlink put there since is refused: ELOOP)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ParaError(code, f"cannot read {what} {shown}: {e.strerror}", path=shown) from None
    try:
        st = os.fstat(fd)
        kind = next((name for test, name in _KINDS if test(st.st_mode)), None)
        if kind is not None or not stat.S_ISREG(st.st_mode):
            raise ParaError(code, f"{what} {shown} is {kind or 'not a regular file'}; refusing to read it "
                            "(it must be a regular file)", path=shown)
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ParaError(code, f"{what} {shown} is larger than {limit} bytes; refusing to read it", path=shown,
                            limit=limit)
        return b"".join(chunks)
    except OSError as e:
        raise ParaError(code, f"cannot read {what} {shown}: {e.strerror}", path=shown) from None
    finally:
        os.close(fd)


async def bind_private_unix(path: Path, on_connect: Any, **kw: Any) -> tuple[Any, int]:
    """Listen on a unix socket only the user can connect to (the sidecar's JSON-RPC and MCP
    sockets): a socket left at `path` is stale (the caller holds the single-instance lock)
    and goes; the new one is 0600 from its creation on (umask), not after a window. Returns
    the asyncio server and the socket's inode, for `unbind_private_unix`."""
    import asyncio  # the server side only: the CLI's fast path never binds

    if path.exists() or path.is_symlink():
        path.unlink()
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_connect, path=str(path), **kw)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server, path.stat().st_ino


def unbind_private_unix(path: Path, ino: int | None) -> None:
    """Remove the socket `bind_private_unix` made, unless another process has bound a new
    one at the same path since (a newer sidecar's socket is not ours to remove)."""
    try:
        if ino is not None and path.stat().st_ino == ino:
            path.unlink()
    except FileNotFoundError:
        pass
