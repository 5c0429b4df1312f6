"""Plans never hang after a crash (issue 9 point 7).

The sidecar is killed while a plan step is starting: a `post-checkout` hook stops inside
`git worktree add` of the step's second task. The next sidecar undoes that half-made session
(crash repair of `start`), so the task has no session. When a repository is opened, para
repairs its running plans: it starts what is missing (event `plan_repaired`), or, when it
cannot, fails the plan with the reason (event `plan_failed`). Either way
`para monitor --until-done` returns.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents_crash_util import crash_during
from agents_util import Api, agent_env, agent_scripts, api, out  # noqa: F401
from conftest import branches, git, run_para
from test_crash import Hook

pytestmark = pytest.mark.usefixtures("sidecar")


def task(name: str, out: Path, *, gate: bool = False) -> str:
    # The gate comes first: this agent must not call `para` while the sidecar is being killed.
    wait = f"```agent\nwait-for {out}/gate\n```\n\n" if gate else ""
    return f"Task {name}.\n\n{wait}```file:{name}.txt\n{name}\n```\n\nWhen done: para integrate \"Add {name}\"\n"


def crash_while_starting_two(repo: Path, out: Path, tmp: Path, sidecar) -> None:
    """`para dispatch -f tasks` of a plan [one, two], [three]; killed in `git worktree add` of two."""
    tasks = repo / "tasks"
    tasks.mkdir()
    (tasks / "TASK_1_one.md").write_text(task("one", out, gate=True))
    (tasks / "TASK_1_two.md").write_text(task("two", out))
    (tasks / "TASK_2_three.md").write_text(task("three", out))
    git("add", "tasks", cwd=repo)
    git("commit", "-q", "-m", "add tasks", cwd=repo)
    hook = Hook(repo, tmp, "post-checkout", 'case "$PWD" in */worktrees/two) ;; *) exit 0 ;; esac')
    crash_during(hook, sidecar, repo, "dispatch", "-f", "tasks", "--agent", "scripted", "--mode", "headless")


def monitor_until_done(repo: Path) -> str:
    """`para monitor --until-done`; hanging here is the bug (the CLI timeout fails the test)."""
    return run_para("monitor", "--until-done", cwd=repo, timeout=120).stdout


def test_a_step_interrupted_by_a_crash_is_started_again_and_the_plan_completes(api, repo, out, sidecar, tmp_path):
    crash_while_starting_two(repo, out, tmp_path, sidecar)
    (out / "gate").touch()
    monitor_until_done(repo)

    (plan,) = api.plans()
    assert plan["state"] == "done", plan
    assert [[t["state"] for t in st["tasks"]] for st in plan["steps"]] == [["integrated", "integrated"],
                                                                          ["integrated"]]
    events = api.events()
    kinds = [(e["kind"], e["session"]) for e in events]
    assert ("repaired", "two") in kinds  # the half-made session was undone...
    repaired = [e["data"] for e in events if e["kind"] == "plan_repaired"]
    assert repaired == [{"plan": plan["id"], "step": 1, "sessions": ["two"]}]  # ...and started again
    assert kinds.index(("repaired", "two")) < kinds.index(("started", "two"))
    for name in ("one", "two", "three"):
        assert git("show", f"main:{name}.txt", cwd=repo) == name
    assert not [b for b in branches(repo) if b.startswith("para/")]


def test_a_step_that_cannot_be_started_again_fails_the_plan_with_the_reason(api, repo, out, sidecar, tmp_path):
    crash_while_starting_two(repo, out, tmp_path, sidecar)
    # (while no sidecar runs) Deleting the task file would not stop it (the plan holds the text),
    # a hook that refuses its worktree does.
    (repo / "tasks" / "TASK_1_two.md").unlink()
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text('#!/bin/sh\ncase "$PWD" in */worktrees/two) echo "two is blocked by policy" >&2; exit 1;; '
                    'esac\nexit 0\n')
    hook.chmod(0o755)
    (out / "gate").touch()
    monitor_until_done(repo)

    (plan,) = api.plans()
    assert plan["state"] == "failed"
    assert "could not start two after a crash" in plan["reason"] and "two is blocked by policy" in plan["reason"], \
        plan["reason"]
    failed = [e["data"] for e in api.events() if e["kind"] == "plan_failed"]
    assert failed == [{"plan": plan["id"], "step": 1, "reason": plan["reason"]}]
    assert [t["state"] for t in plan["steps"][0]["tasks"]] in (["running", "failed"], ["integrated", "failed"])
    sessions = api.sessions()
    assert "two" not in sessions and "three" not in sessions and "para/three" not in branches(repo)
