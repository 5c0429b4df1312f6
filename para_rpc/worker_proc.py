"""The worker's view of a session's processes (worker.py): is its runner alive, and stopping
every process of the run. Stdlib only, Linux /proc.

A runner is named by its pid and its start time (pids are reused). The processes of a run are
the runner's process group while the runner leads it, and any process of this user whose
environment carries PARA_AGENT_RUN=<the run's exit file> (agent_runner gives it to the agent,
every child inherits it): so an agent child that called setsid, or a daemon that double-forked
out of the group, is still found; and one that also dropped the variable is found by working in
the session's worktree, started since the runner (a shell the user left there before is not).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time

RUN_ENV = "PARA_AGENT_RUN"


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot); None if it is gone or a zombie."""
    fields = _stat(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int, start: int | None) -> bool:
    now = start_ticks(pid)
    return now is not None and (start is None or now == start)


def is_runner(pid: int, start: int | None, exit_file: str) -> bool:
    """`pid` is alive and is the agent_runner of this run. runner.pid sits where the agent can
    write, so a pid there is no proof: one naming the user's shell must not get its group killed."""
    if not alive(pid, start):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return argv[1:5] == [b"-m", b"para_rpc.agent_runner", b"--exit-file", os.fsencode(exit_file)]


def _run_env(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:  # another user's process, or gone
        return None
    prefix = RUN_ENV.encode() + b"="
    return next((item[len(prefix):] for item in raw.split(b"\0") if item.startswith(prefix)), None)


def _cwd_under(pid: int, top: str) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
    except OSError:
        return False
    return cwd == top or cwd.startswith(top + "/")


def run_processes(runner: int | None, runner_start: int | None, exit_file: str,
                  worktree: str | None = None) -> set[int]:
    """The live processes of the run (never this worker itself); with `worktree`, also those
    started since the runner that work in it (an agent child that dropped PARA_AGENT_RUN)."""
    leads = runner is not None and is_runner(runner, runner_start, exit_file)
    mine, found = os.getpid(), set()
    want = os.fsencode(exit_file)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == mine:
            continue
        pid = int(name)
        fields = _stat(pid)
        if not fields or fields[0] in ("Z", "X"):
            continue
        in_group = leads and fields[2] == str(runner)
        since = worktree is not None and runner_start is not None and int(fields[19]) >= runner_start
        if in_group or _run_env(pid) == want or (since and _cwd_under(pid, str(worktree))):
            found.add(pid)
    return found


def _wait(pids: set[int], timeout: float) -> None:
    """Wait until one of `pids` exits or `timeout` passes: on pidfds, an exit wakes it."""
    fds = []
    try:
        poller = select.poll()
        for pid in pids:
            with contextlib.suppress(OSError):
                fds.append(os.pidfd_open(pid))
                poller.register(fds[-1], select.POLLIN)
        poller.poll(max(timeout, 0.0) * 1000)
    finally:
        for fd in fds:
            os.close(fd)


def stop(runner: int | None, runner_start: int | None, exit_file: str, grace: float,
         worktree: str | None = None) -> tuple[list[int], list[int]]:
    """TERM every process of the run, KILL what is left after `grace` seconds. The set is looked
    up again after every exit (and every 0.2 s), so a process forked meanwhile is signalled too.
    Returns (every pid signalled, the pids still running at the end)."""
    seen: set[int] = set()
    procs: set[int] = set()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + wait
        signalled: set[int] = set()
        while True:
            procs = run_processes(runner, runner_start, exit_file, worktree)
            for pid in procs - signalled:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            signalled |= procs
            seen |= procs
            now = time.monotonic()
            if not procs or now >= deadline:
                break
            _wait(procs, min(deadline - now, 0.2))
        if not procs:
            break
    return sorted(seen), sorted(procs)
