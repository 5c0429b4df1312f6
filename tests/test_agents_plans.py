"""Plans: numbered task files (`para dispatch -f tasks/`, or several -f). Tasks that
share a number run in parallel; step n starts only when every lower-numbered task
is integrated, forked from the base after they landed; a failing step (an agent
that exits without integrating, or a cancelled session) fails the plan and later
steps never start.

The agents are the built-in `scripted` profile (para_rpc/scripted_agent.py): it
writes the files its task file describes, waits for marker files, and finishes
with the real `para integrate`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents_util import STEP, agent_env, agent_scripts, api, dispatch, out, wait_file  # noqa: F401
from conftest import branches, git, wait_until, worktree_paths

pytestmark = pytest.mark.usefixtures("sidecar")


def task(files: dict[str, str], *, agent: str = "", finish: str | None = None) -> str:
    text = "A task.\n\n"
    for path, content in files.items():
        text += f"```file:{path}\n{content}```\n\n"
    if agent:
        text += f"```agent\n{agent}```\n\n"
    if finish:
        text += f'When done: para integrate "{finish}"\n'
    return text


def write_tasks(repo: Path, tasks: dict[str, str], directory: str = "tasks") -> Path:
    d = repo / directory
    d.mkdir(exist_ok=True)
    for name, text in tasks.items():
        (d / name).write_text(text)
    return d


def event_index(events: list[dict], kind: str, session: str | None = None, **data) -> int:
    for i, e in enumerate(events):
        if e["kind"] == kind and (session is None or e["session"] == session) and \
                all(e["data"].get(k) == v for k, v in data.items()):
            return i
    raise AssertionError(f"no {kind} event for {session}: {[(e['kind'], e['session']) for e in events]}")


def test_plan_steps_start_in_order_each_forked_after_the_previous_landed(api, repo, out):
    write_tasks(repo, {
        "TASK_1_schema.md": task({"schema.txt": "v1\n"}, agent=f"status designing\nwait-for {out}/gate\n",
                                 finish="Add the schema"),
        "TASK_2_api.md": task({"api.txt": "api\n"}, agent="run cp schema.txt api-saw-schema.txt\n",
                              finish="Add the API"),
        "TASK_2_cli.md": task({"cli.txt": "cli\n"}, agent="run cp schema.txt cli-saw-schema.txt\n",
                              finish="Add the CLI"),
        "TASK_3_docs.md": task({"docs.txt": "docs\n"}, agent="run cp api.txt docs-saw-api.txt\n",
                               finish="Add the docs"),
    })
    r, _ = dispatch(repo, "-f", "tasks/", "--agent", "scripted", "--mode", "headless")
    plan = r["plan"]
    assert [[t["name"] for t in st["tasks"]] for st in plan["steps"]] == [["schema"], ["api", "cli"], ["docs"]]
    assert [st["number"] for st in plan["steps"]] == [1, 2, 3]
    assert (plan["state"], plan["current"], plan["agent"], plan["mode"]) == ("running", 0, "scripted", "headless")

    # Step 1 runs and cannot land before the gate opens: nothing of step 2 or 3 exists yet.
    api.wait_event("status", "schema", task="designing")
    assert set(api.sessions()) == {"schema"}
    assert branches(repo) == ["main", "para/schema"]
    assert api.plans()[0]["steps"][1]["tasks"][0]["state"] == "waiting"

    (out / "gate").touch()
    done = api.wait_plan("done")
    assert [t["state"] for st in done["steps"] for t in st["tasks"]] == ["integrated"] * 4

    events = api.events()
    assert event_index(events, "integrated", "schema") < event_index(events, "started", "api")
    assert event_index(events, "integrated", "schema") < event_index(events, "started", "cli")
    assert event_index(events, "integrated", "api") < event_index(events, "started", "docs")
    assert event_index(events, "integrated", "cli") < event_index(events, "started", "docs")
    steps = [e["data"] for e in events if e["kind"] == "plan_step"]
    assert [(s["step"], sorted(s["sessions"])) for s in steps] == [(1, ["schema"]), (2, ["api", "cli"]),
                                                                   (3, ["docs"])]
    assert event_index(events, "plan_done") > event_index(events, "integrated", "docs")

    # Each later step forked from a base that already held the earlier steps' work.
    rows = api.sessions()
    landed = {n: rows[n]["integration"]["commit"] for n in rows}
    for n in ("api", "cli"):
        assert rows[n]["base_commit"] == landed["schema"] or git(
            "merge-base", "--is-ancestor", landed["schema"], rows[n]["base_commit"], cwd=repo) == ""
        assert git("show", f"{rows[n]['base_commit']}:schema.txt", cwd=repo) == "v1"
    for f in ("schema.txt", "api.txt", "cli.txt"):
        assert git("show", f"{rows['docs']['base_commit']}:{f}", cwd=repo)
    # ... and the agents saw it in their worktrees.
    tree = git("ls-tree", "--name-only", "main", cwd=repo).split()
    assert {"api-saw-schema.txt", "cli-saw-schema.txt", "docs-saw-api.txt"} <= set(tree)
    subjects = git("log", "--format=%s", "-4", "main", cwd=repo).splitlines()
    assert subjects[0] == "Add the docs" and subjects[3] == "Add the schema"
    assert sorted(subjects[1:3]) == ["Add the API", "Add the CLI"]


def test_a_failing_step_fails_the_plan_and_later_steps_never_start(api, repo, out):
    """Several -f make a plan too. In step 2 one agent lands and the other exits 3
    without integrating: the plan fails, step 3 never starts, the failed work stays."""
    write_tasks(repo, {
        "TASK_1_ok.md": task({"ok.txt": "ok\n"}, finish="Ok"),
        "TASK_2_bad.md": task({"bad.txt": "half done\n"}, agent="exit 3\n", finish="Never"),
        "TASK_2_good.md": task({"good.txt": "good\n"}, agent=f"wait-for {out}/gate\n", finish="Good"),
        "TASK_3_never.md": task({"never.txt": "never\n"}, finish="Never"),
    })
    r, _ = dispatch(repo, "-f", "tasks/TASK_1_ok.md", "-f", "TASK_2_bad.md", "-f", "TASK_2_good.md",
                    "-f", "TASK_3_never.md", "--agent", "scripted", "--mode", "headless")
    assert [[t["name"] for t in st["tasks"]] for st in r["plan"]["steps"]] == [["ok"], ["bad", "good"], ["never"]]

    failed = api.wait_plan("failed")
    assert "bad" in failed["reason"] and "status 3" in failed["reason"]
    ev = api.wait_event("plan_failed")
    assert ev["data"]["plan"] == failed["id"] and ev["data"]["reason"] == failed["reason"]
    (out / "gate").touch()  # the sibling still lands; that must not start step 3
    api.wait_event("integrated", "good")
    api.wait_event("agent_exited", "good")

    plan = api.plans()[0]
    assert plan["state"] == "failed"
    assert plan["steps"][2]["tasks"][0] == {**plan["steps"][2]["tasks"][0], "state": "waiting", "session_id": None}
    rows = api.sessions()
    assert "never" not in rows and "para/never" not in branches(repo)
    assert not (repo / ".para" / "worktrees" / "never").exists()
    assert not any(e["session"] == "never" for e in api.events())
    assert [e["kind"] for e in api.events()].count("plan_done") == 0
    assert rows["bad"]["status"] == "active"
    assert (repo / ".para" / "worktrees" / "bad" / "bad.txt").read_text() == "half done\n"
    bad = api.evidence("bad")["agent"]
    assert (bad["state"], bad["exit_code"]) == ("failed", 3)


def test_cancelling_a_session_of_the_running_step_fails_the_plan(api, repo, out, para):
    write_tasks(repo, {
        "TASK_1_slow.md": task({"slow.txt": "slow\n"}, agent=f"run touch {out}/ready\nwait-for {out}/gate\n",
                               finish="Slow"),
        "TASK_2_next.md": task({"next.txt": "next\n"}, finish="Next"),
    })
    dispatch(repo, "-f", "tasks", "--agent", "scripted", "--mode", "headless")
    wait_file(out / "ready")
    para("cancel", "slow")
    failed = api.wait_plan("failed")
    assert failed["reason"] == "session slow was cancelled"
    assert api.wait_event("plan_failed")["data"]["reason"] == failed["reason"]
    assert failed["steps"][0]["tasks"][0]["state"] == "failed"
    assert "next" not in api.sessions() and "para/next" not in branches(repo)


def test_later_steps_use_the_profile_and_settings_the_plan_was_dispatched_with(api, repo, out):
    """A custom profile from PARA_AGENTS (the dispatching shell's environment) runs
    every step of the plan, not only the first; so does the workflow setting."""
    prof = {"command": [STEP, f"touch:{out}/{{session}}.ran", "write:{session}.txt={session}\n",
                        "integrate:Step {session}"]}
    write_tasks(repo, {"TASK_1_one.md": "First.\n", "TASK_2_two.md": "Second.\n"})
    dispatch(repo, "-f", "tasks", "--agent", "mine", "--mode", "headless", profiles={"mine": prof},
             env={"PARA_AGENT_WORKFLOW": "finish"})
    api.wait_event("integrated", "one")
    plan = wait_until(lambda: next((p for p in api.plans() if p["state"] != "running"), None), 60,
                      "the plan to end")
    assert plan["state"] == "done", f"the plan {plan['state']}: {plan['reason']}"
    assert (out / "two.ran").exists()
    for name in ("one", "two"):
        prompt = (repo / ".para" / "prompts" / f"{name}.md").read_text()
        assert 'para finish "<one-line summary of your change>"' in prompt, (name, prompt)
    assert git("show", "main:two.txt", cwd=repo) == "two"


def test_a_plan_with_an_unknown_task_or_an_outside_file_starts_nothing(api, repo, out):
    write_tasks(repo, {"TASK_1_a.md": "a\n", "TASK_2_b.md": "b\n"})
    for args, code in ((["-f", "TASK_1_a.md", "-f", "TASK_9_missing.md"], 3),
                       (["-f", "TASK_1_a.md", "-f", "../elsewhere/TASK_2_x.md"], 3),
                       (["-f", "TASK_1_a.md", "-f", "README.md"], 2)):
        err, proc = dispatch(repo, *args, "--agent", "scripted", check=False)
        assert proc.returncode == code, (args, proc.stdout)
        assert api.plans() == [] and api.sessions() == {}
    assert branches(repo) == ["main"] and worktree_paths(repo) == [str(repo)]
