"""The example plan in the repository's own `tasks/` (documented in tasks/README.md) runs as
documented: `para dispatch -f tasks/ --agent scripted` makes one sequential step, then two
parallel tasks that see what the first step landed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents_util import agent_env, agent_scripts, api, dispatch  # noqa: F401  (fixtures)
from conftest import git

pytestmark = pytest.mark.usefixtures("sidecar")

TASKS = Path(__file__).resolve().parent.parent / "tasks"


def test_the_example_plan_in_tasks_runs(api, repo):  # noqa: F811
    shutil.copytree(TASKS, repo / "tasks")
    r, _ = dispatch(repo, "-f", "tasks/", "--agent", "scripted", "--mode", "headless")
    plan = r["plan"]
    assert [[t["name"] for t in st["tasks"]] for st in plan["steps"]] == [["greeting"], ["count", "shout"]]
    done = api.wait_plan("done", timeout=120)
    assert [t["state"] for st in done["steps"] for t in st["tasks"]] == ["integrated"] * 3
    for path, text in (("examples/greeting.txt", "hello from para"), ("examples/shout.txt", "hello from para"),
                       ("examples/count-input.txt", "hello from para"), ("examples/count.txt", "words: 3")):
        assert git("show", f"main:{path}", cwd=repo) == text, path
    rows = api.sessions()
    for n in ("shout", "count"):  # forked after step 1 landed
        assert git("show", f"{rows[n]['base_commit']}:examples/greeting.txt", cwd=repo) == "hello from para"
