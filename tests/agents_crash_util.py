"""Killing the sidecar at a precise point (test_crash.py's technique) while agents run below it.

test_crash.crash_at waits for every process below the killed sidecar (git and its hooks) to
finish; a headless agent is below it too and keeps running for good, so here the agents'
runners (and everything under them) are left out of that wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from conftest import PARA_ARGV, Sidecar, cli_env, pid_alive, wait_until
from para_rpc.errors import Code
from test_crash import Hook, descendants


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def crash_during(hook: Hook, sidecar: Sidecar, repo: Path, *para_args: str) -> None:
    """Run `para <args>`, SIGKILL the sidecar when the hook is reached, let git finish; the
    agents keep running. The interrupted command reports the lost sidecar."""
    cli = subprocess.Popen([*PARA_ARGV, *para_args], cwd=repo, env=cli_env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: hook.marker.exists() or cli.poll() is not None, what=f"the {hook.path.name} hook")
        assert hook.marker.exists(), f"`para {' '.join(para_args)}` ended before the hook: {cli.communicate()}"
        below = descendants(sidecar.pid)
        agents = {p for p in below if b"para_rpc.agent_runner" in _cmdline(p)}
        orphans = below - agents - set().union(*(descendants(p) for p in agents))
        os.kill(sidecar.pid, signal.SIGKILL)
        sidecar.proc.wait(timeout=30)
        hook.path.unlink()
        hook.release.touch()
        wait_until(lambda: not any(pid_alive(p) for p in orphans), what="git to finish without the sidecar")
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == Code.sidecar_unavailable.exit, err
