"""The trust boundary: nothing in a repository runs as the user unless the user asked for it.

Red-team findings of the previous session (their scripts were lost), re-created here as
attacks through the real CLI and the real sidecar; each test names its finding:

1. Python processes para starts with a repository or worktree as cwd (the sidecar the CLI
   autostarts, the agent runner, the scripted agent) never import from that directory:
   a committed `para_rpc/` or a stdlib-shadowing `json.py` must not run (`python -P`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agents_util import Api, agent_env, agent_scripts, dispatch  # noqa: F401  (autouse: agents cleaned up)
from conftest import commit_file, git, run_para, sidecar_pids, wait_until


# ---- 1. python -P: a repository's files never shadow para's modules or the stdlib -----------

SHADOW = """\
import os, pathlib, sys
pathlib.Path({marker!r}).mkdir(exist_ok=True)
pathlib.Path({marker!r}, "{name}-" + str(os.getpid())).write_text(" ".join(sys.argv))
"""


def plant_shadows(repo: Path, marker: Path) -> None:
    """Commit modules that would run if a para process imported from the repository:
    para's own package and stdlib modules every para process imports."""
    for name in ("para_rpc/__init__.py", "para_rpc/agent_runner.py", "para_rpc/scripted_agent.py",
                 "para_rpc/server/__init__.py", "para_rpc/server/sidecar.py",
                 "json.py", "argparse.py", "subprocess.py", "signal.py", "shutil.py", "re.py"):
        stem = name.replace("/", ".").removesuffix(".py")
        commit_file(repo, name, SHADOW.format(marker=str(marker), name=stem), f"plant {name}")


def test_autostarted_sidecar_does_not_import_from_the_repository(repo: Path, tmp_path: Path, runtime_dir: Path):
    """Finding 1: `para` autostarts the sidecar from the caller's directory; with `python -m`
    that directory came first on sys.path, so a cloned repository's `para_rpc/` ran as the
    sidecar (as the user, for every repository it serves)."""
    marker = tmp_path / "ran"
    plant_shadows(repo, marker)
    assert not sidecar_pids(runtime_dir)
    run_para("list", cwd=repo)  # no sidecar yet: the CLI starts one, cwd = the repository
    assert sidecar_pids(runtime_dir)
    assert not marker.exists(), sorted(p.name for p in marker.iterdir())


@pytest.mark.usefixtures("sidecar")
def test_agent_runner_and_scripted_agent_do_not_import_from_the_worktree(repo: Path, tmp_path: Path,
                                                                         sidecar, runtime_dir: Path):
    """Finding 1: the agent runner and the scripted agent run with the session's worktree as
    cwd (`python -m para_rpc.agent_runner`, `python -m para_rpc.scripted_agent`): the
    worktree's `para_rpc/` or `json.py` (anything the task's author committed) ran instead."""
    marker = tmp_path / "ran"
    plant_shadows(repo, marker)
    task = "Add a file.\n\n```file:added.txt\nadded\n```\n\nDo not run any para commands.\n"
    r, _ = dispatch(repo, "shadow", "-p", task, "--agent", "scripted", "--mode", "headless")
    api = Api(sidecar.socket, repo)
    exited = api.wait_event("agent_exited", "shadow")
    assert exited["data"]["exit_code"] == 0, (repo / ".para" / "logs" / "shadow.log").read_text()
    assert (Path(r["worktree"]) / "added.txt").read_text() == "added\n"  # the real scripted agent ran
    assert not marker.exists(), sorted(p.name for p in marker.iterdir())
