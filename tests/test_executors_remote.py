"""Agents dispatched to an SSH executor (issue 16, point 2), through the real CLI and sidecar,
a real OpenSSH server on loopback (tests/ssh_util.py: the "host" is this machine, as this user,
with the same python and para) and the scripted agent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import commit_file, full_state, run_para
from para_rpc.errors import Code
from ssh_util import SshHost, ssh_host  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("sidecar")


def configure(**settings: object) -> None:
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps(settings))


def para_json(repo: Path, *args: str) -> tuple[int, dict]:
    proc = run_para(*args, "--json", cwd=repo, check=False)
    return proc.returncode, json.loads(proc.stdout)


UNREACHABLE = {"kind": "ssh", "host": "127.0.0.1", "port": 9, "known_hosts": "/nonexistent/known_hosts"}


# ---- choosing the executor: bad choices change nothing ---------------------------------------

def test_an_unknown_executor_is_refused_and_nothing_is_made(repo: Path) -> None:
    configure(executors={"h1": UNREACHABLE})
    before = full_state(repo)
    rc, out = para_json(repo, "dispatch", "--agent", "scripted", "--executor", "nope", "-p", "do it")
    assert rc == Code.not_found.exit and "nope" in out["error"]["message"] and "h1" in out["error"]["message"], out
    assert full_state(repo) == before
    # The default comes from agent.executor, checked the same way.
    configure(executors={"h1": UNREACHABLE}, **{"agent.executor": "gone"})
    rc, out = para_json(repo, "dispatch", "--agent", "scripted", "-p", "do it")
    assert rc == Code.not_found.exit and "gone" in out["error"]["message"], out
    assert full_state(repo) == before


def test_remote_agents_run_headless_and_unsandboxed_or_nothing_is_made(repo: Path) -> None:
    configure(executors={"h1": UNREACHABLE})
    before = full_state(repo)
    rc, out = para_json(repo, "dispatch", "--agent", "scripted", "--executor", "h1", "--mode", "tmux", "-p", "x")
    assert rc == Code.invalid_input.exit and "headless" in out["error"]["message"], out
    rc, out = para_json(repo, "dispatch", "--agent", "scripted", "--executor", "h1", "--sandbox", "-p", "x")
    assert rc in (Code.invalid_input.exit, Code.config_error.exit), out  # (no bwrap here: config_error first)
    assert full_state(repo) == before


def test_an_executor_from_an_untrusted_project_file_is_refused(repo: Path) -> None:
    Path(os.environ["PARA_CONFIG"]).unlink(missing_ok=True)
    commit_file(repo, ".para/config.json", json.dumps({"executors": {"h1": UNREACHABLE},
                                                       "agent.executor": "h1"}), "project executors")
    before = full_state(repo)
    for args in (["--executor", "h1"], []):
        rc, out = para_json(repo, "dispatch", "--agent", "scripted", *args, "-p", "do it")
        assert rc == Code.untrusted.exit, out
        assert full_state(repo) == before
