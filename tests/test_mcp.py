"""MCP through the real `para mcp` bridge: tools, resources, the prompt, a whole
orchestration with scripted agents, and several clients on one sidecar.

Every client here is the SDK's `mcp.Client` launching `para mcp` as a
subprocess (exactly what an AI client does); the bridge pumps bytes to the
sidecar's MCP socket, where the tools call the same Service the JSON-RPC
connections use.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import anyio

from para_rpc.runtime import mcp_socket_path
from para_rpc.client import Connection

from conftest import git, rev, wait_until
from mcp_util import TOOLS, call, call_error, mcp_client, task_file, wait_for_states


# ---- the surface -------------------------------------------------------------------------

async def test_tools_have_schemas_annotations_and_descriptions(sidecar, repo):
    async with mcp_client(repo) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == TOOLS
    for name, t in tools.items():
        assert t.description and len(t.description) > 60, name
        assert t.input_schema["type"] == "object"
        assert "repo" in t.input_schema["properties"], f"{name} takes no repo"
        assert t.input_schema["properties"]["repo"].get("description"), name
        assert t.output_schema is not None and t.output_schema["type"] == "object", name
        a = t.annotations
        assert a is not None and a.read_only_hint is not None and a.destructive_hint is not None \
            and a.idempotent_hint is not None, name
    for ro in ("para_list", "para_status", "para_wait", "para_conflicts", "para_diff", "para_config_show",
               "para_plans"):
        assert tools[ro].annotations.read_only_hint is True, ro
    for d in ("para_cancel", "para_integrate", "para_continue", "para_abort", "para_finish", "para_clean"):
        assert tools[d].annotations.destructive_hint is True and tools[d].annotations.read_only_hint is False, d
    assert tools["para_dispatch"].annotations.destructive_hint is False
    props = tools["para_dispatch"].input_schema["properties"]
    assert {"session", "task", "file", "files", "tasks", "agent", "skip_permissions"} <= set(props)
    assert all(props[p].get("description") for p in ("session", "task", "file", "agent", "skip_permissions"))
    assert set(tools["para_cancel"].input_schema["required"]) == {"session"}
    # the orchestration workflow is taught in our own words
    d = tools["para_dispatch"].description
    for phrase in ("TASK_<n>_<slug>.md", "same number", "WHAT", 'When done: para integrate "', "para_wait",
                   "para_continue", "parallel"):
        assert phrase in d, phrase
    assert "para_wait" in tools["para_status"].description
    assert "para_continue" in tools["para_integrate"].description
    assert {"sessions", "changed", "timed_out", "events", "last_event"} <= set(tools["para_wait"].output_schema["properties"])


async def test_resources_prompt_and_guide(sidecar, repo):
    async with mcp_client(repo) as c:
        static = {str(r.uri) for r in (await c.list_resources()).resources}
        templates = {t.uri_template for t in (await c.list_resource_templates()).resource_templates}
        assert {"para://sessions", "para://config", "para://guide"} <= static
        assert "para://session/{name}" in templates
        guide = (await c.read_resource("para://guide")).contents[0].text
        for phrase in ("TASK_<n>_<slug>.md", "para_wait", "para_continue", "WHAT"):
            assert phrase in guide
        # the guide and the tool descriptions are one text
        dispatch = next(t for t in (await c.list_tools()).tools if t.name == "para_dispatch")
        assert guide.split("## 2. Write task files\n\n")[1].split("\n\n## ")[0] in dispatch.description
        config = json.loads((await c.read_resource("para://config")).contents[0].text)
        assert config["values"]["agent.default"]["source"] == "default"
        assert json.loads((await c.read_resource("para://sessions")).contents[0].text)["sessions"] == []
        prompts = {p.name: p for p in (await c.list_prompts()).prompts}
        assert "orchestrate" in prompts
        text = (await c.get_prompt("orchestrate", {"goal": "add a login page"})).messages[0].content.text
        assert "add a login page" in text and "tasks/TASK_<n>_<slug>.md" in text and "para_dispatch" in text


async def test_mcp_socket_is_private(sidecar):
    path = mcp_socket_path(sidecar.socket)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


async def test_structured_results_and_errors_an_agent_can_act_on(sidecar, repo, tmp_path):
    async with mcp_client(repo) as c:
        s = await call(c, "para_start", {"session": "alpha"})
        assert s["name"] == "alpha" and s["branch"] == "para/alpha" and s["worktree_exists"]
        assert Path(s["worktree"]).is_dir()
        listed = await call(c, "para_list")
        assert [x["name"] for x in listed["sessions"]] == ["alpha"] and listed["repo"] == str(repo)
        err = await call_error(c, "para_start", {"session": "alpha"})
        assert "already_exists" in err and "alpha" in err
        err = await call_error(c, "para_finish", {"message": "nothing", "session": "alpha"})
        assert "nothing_to_do" in err
        # an explicit repo works from anywhere; a directory that is no repository says so
        other = await call(c, "para_list", {"repo": str(repo)})
        assert other["sessions"][0]["name"] == "alpha"
        (tmp_path / "plain").mkdir()
        err = await call_error(c, "para_list", {"repo": str(tmp_path / "plain")})
        assert "not_a_repository" in err and "repo=" in err
        Path(s["worktree"], "a.txt").write_text("a\n")
        diff = await call(c, "para_diff", {"session": "alpha"})
        assert diff["includes_uncommitted"] and "a.txt" in diff["stat"] and "+a" in diff["patch"]
        pred = await call(c, "para_integrate", {"session": "alpha", "dry_run": True})
        assert pred["clean"] is True and pred["target"] == "main"
        cfg = await call(c, "para_config_show")
        assert "integrate.strategy" in cfg["values"]
        done = await call(c, "para_integrate", {"session": "alpha", "message": "Add a"})
        assert done["status"] == "integrated"
    assert git("log", "-1", "--format=%s", "main", cwd=repo) == "Add a"
    assert git("show", "main:a.txt", cwd=repo) == "a"


async def test_lifecycle_tools(sidecar, repo):
    async with mcp_client(repo) as c:
        await call(c, "para_start", {"session": "life"})
        wt = Path((await call(c, "para_resume", {"session": "life"}))["worktree"])
        (wt / "w.txt").write_text("work\n")
        cancelled = await call(c, "para_cancel", {"session": "life"})
        assert cancelled["status"] == "cancelled" and not wt.exists()
        recovered = await call(c, "para_recover", {"session": "life"})
        assert recovered["status"] == "active" and (wt / "w.txt").read_text() == "work\n"
        finished = await call(c, "para_finish", {"session": "life", "message": "Work"})
        assert finished["status"] == "review"
        resumed = await call(c, "para_resume", {"session": "life"})
        assert resumed["recreated"] is True and wt.is_dir()
        status = await call(c, "para_status", {"session": "life"})
        assert status["sessions"][0]["name"] == "life" and status["sessions"][0]["ahead"] == 1
        forecast = await call(c, "para_conflicts")
        assert forecast["clean"] is True


# ---- a whole orchestration -------------------------------------------------------------------

TASK_ALPHA = """Add alpha.txt; touch no other file.

```file:alpha.txt
alpha
```

When done: para integrate "Add alpha"
"""
TASK_BETA = """Add shared.txt with the beta line; touch no other file.

```file:shared.txt
beta
```

When done: para integrate "Add beta"
"""
TASK_GAMMA = """Add shared.txt with the gamma line (it collides with beta, on purpose).

```file:shared.txt
gamma
```

```agent
wait-for {landed}
on-conflict stop
```

When done: para integrate "Add gamma"
"""


async def test_orchestration_two_land_one_conflicts_then_continue(sidecar, repo):
    task_file(repo, "TASK_1_alpha.md", TASK_ALPHA)
    task_file(repo, "TASK_1_beta.md", TASK_BETA)
    # gamma lands only after beta is on main (shared.txt appears in the main checkout),
    # so it is gamma that conflicts, and it leaves the conflict for the orchestrator
    task_file(repo, "TASK_1_gamma.md", TASK_GAMMA.format(landed=repo / "shared.txt"))
    start = rev(repo, "main")
    async with mcp_client(repo) as c:
        r = await call(c, "para_dispatch", {"file": "tasks", "agent": "scripted"})
        assert r["plan"] is not None and r["failed"] == []
        assert [t["name"] for t in r["plan"]["steps"][0]["tasks"]] == ["alpha", "beta", "gamma"]
        assert "para_wait" in r["next"]

        sessions, cursor = await wait_for_states(c, {
            "alpha": "integrated", "beta": "integrated",
            "gamma": lambda s: bool(s) and s["status"] == "conflicted" and s["agent_exit_code"] is not None})
        assert sessions["gamma"]["agent_exit_code"] == 7  # `on-conflict stop`

        # the conflict, as the orchestrator reads it
        info = json.loads((await c.read_resource("para://session/gamma")).contents[0].text)
        assert info["status"] == "conflicted" and info["state"] == "conflicted"
        assert info["conflicts"]["files"] == ["shared.txt"] and info["conflicts"]["target"] == "main"
        assert info["agent"]["state"] == "failed" and info["agent"]["exit_code"] == 7
        assert info["report"]["tests"] == "passed"
        assert "para_continue" in info["conflicts"]["next"]
        wt = Path(info["worktree"])
        assert "<<<<<<<" in (wt / "shared.txt").read_text()
        # integrating again names the files and says what to do
        err = await call_error(c, "para_integrate", {"session": "gamma"})
        assert "wrong_state" in err and "shared.txt" in err
        # resolve it in the session's worktree, then continue
        (wt / "shared.txt").write_text("beta\ngamma\n")
        done = await call(c, "para_continue", {"session": "gamma"})
        assert done["status"] == "integrated"
        status = await call(c, "para_status")
        assert status["plans"] == []  # the plan is done
        listed = await call(c, "para_list", {"all": True})
        assert {s["name"]: s["status"] for s in listed["sessions"]} == {
            "alpha": "integrated", "beta": "integrated", "gamma": "integrated"}
    subjects = git("log", "--format=%s", f"{start}..main", cwd=repo).splitlines()
    assert subjects[0] == "Add gamma" and sorted(subjects[1:]) == ["Add alpha", "Add beta"]
    assert git("show", "main:shared.txt", cwd=repo) == "beta\ngamma"
    assert git("show", "main:alpha.txt", cwd=repo) == "alpha"
    assert git("status", "--porcelain", cwd=repo) == ""
    assert (repo / "shared.txt").read_text() == "beta\ngamma\n"  # the main checkout came along


async def test_conflict_from_para_integrate_names_files_and_next_step(sidecar, repo):
    async with mcp_client(repo) as c:
        for name, line in (("one", "one"), ("two", "two")):
            wt = Path((await call(c, "para_start", {"session": name}))["worktree"])
            (wt / "same.txt").write_text(line + "\n")
        forecast = await call(c, "para_conflicts")
        assert forecast["clean"] is False and forecast["pairs"][0]["files"] == ["same.txt"]
        await call(c, "para_integrate", {"session": "one", "message": "One"})
        err = await call_error(c, "para_integrate", {"session": "two", "message": "Two"})
        assert err.splitlines()[0].startswith("conflict:")
        assert "same.txt" in err and "para_continue(session='two')" in err and "agent" in err
        data = json.loads(err.splitlines()[-1])
        assert data["files"] == ["same.txt"] and data["session"] == "two" and data["target"] == "main"
        aborted = await call(c, "para_abort", {"session": "two"})
        assert aborted["status"] == "active" and aborted["restored"]


# ---- several clients, one sidecar -----------------------------------------------------------

def _read_events(conn: Connection, want: set[tuple[str, str]], deadline: float) -> list[dict]:
    """para/event notifications until every (kind, session) in `want` was seen."""
    seen: list[dict] = []
    while not want <= {(e["kind"], e["session"]) for e in seen}:
        assert time.monotonic() < deadline, f"editor saw only {[(e['kind'], e['session']) for e in seen]}"
        for msg in conn.notifications():
            if msg["method"] == "para/event":
                seen.append(msg["params"])
            break
    return seen


async def test_two_mcp_clients_and_an_editor_share_state_and_events(sidecar, repo):
    editor = Connection.open(sidecar.socket, timeout=60)
    editor.request("para/subscribe", {"events": True})
    try:
        async with mcp_client(repo) as a, mcp_client(repo) as b:
            started = await call(a, "para_start", {"session": "shared"})
            seen_by_b = {s["name"]: s for s in (await call(b, "para_list"))["sessions"]}
            assert seen_by_b["shared"]["worktree"] == started["worktree"]
            assert seen_by_b["shared"]["branch"] == started["branch"]
            editor_list = editor.request("para/list", {"cwd": str(repo)})
            assert [s["name"] for s in editor_list["sessions"]] == ["shared"]

            cursor = (await call(b, "para_wait", {"sessions": ["shared"], "timeout": 0}))["last_event"]
            progress: list[tuple] = []

            async def progress_cb(p, total, message):
                progress.append((p, total, message))

            result: dict = {}

            async def b_waits():
                result.update(await call(b, "para_wait", {"sessions": ["shared"], "timeout": 60,
                                                          "after_event": cursor},
                                         progress_callback=progress_cb))

            async with anyio.create_task_group() as tg:
                tg.start_soon(b_waits)
                await call(a, "para_cancel", {"session": "shared"})
            assert result["changed"] == ["shared"] and not result["timed_out"]
            assert result["sessions"]["shared"]["status"] == "cancelled"
            b_cancel = [e for e in result["events"] if e["kind"] == "cancelled"]
            assert len(b_cancel) == 1 and b_cancel[0]["session"] == "shared"
            assert progress and progress[0][0] == 0  # progress reported while waiting

            # a resource subscription sees the next change (2026 `subscriptions/listen`)
            with anyio.fail_after(60):
                async with b.listen(resource_subscriptions=["para://sessions"]) as sub:
                    await call(a, "para_recover", {"session": "shared"})
                    async for event in sub:
                        assert event.uri == "para://sessions"
                        break
            assert (await call(b, "para_list"))["sessions"][0]["status"] == "active"

        events = _read_events(editor, {("started", "shared"), ("cancelled", "shared"), ("recovered", "shared")},
                              time.monotonic() + 60)
        ids = {(e["kind"], e["session"]): e["id"] for e in events}
        assert ids[("cancelled", "shared")] == b_cancel[0]["id"]  # the same event, to every front end
        assert editor.request("para/list", {"cwd": str(repo)})["sessions"][0]["status"] == "active"
    finally:
        editor.close()


async def test_dispatch_several_inline_tasks_in_one_call(sidecar, repo):
    tasks = [{"session": f"inline-{i}", "task": f"```file:f{i}.txt\n{i}\n```\n\nWhen done: para integrate \"F{i}\"\n"}
             for i in range(2)]
    tasks.append({"session": "bad name!", "task": "x"})
    async with mcp_client(repo) as c:
        r = await call(c, "para_dispatch", {"tasks": tasks, "agent": "scripted"})
        assert sorted(s["name"] for s in r["sessions"]) == ["inline-0", "inline-1"]
        assert len(r["failed"]) == 1 and "invalid_input" in r["failed"][0]["error"]
        await wait_for_states(c, {"inline-0": "integrated", "inline-1": "integrated"})
    assert sorted(git("log", "--format=%s", "-2", "main", cwd=repo).splitlines()) == ["F0", "F1"]


async def test_para_mcp_starts_the_sidecar_when_none_runs(runtime_dir, repo):
    async with mcp_client(repo) as c:
        assert (await call(c, "para_list"))["sessions"] == []
    assert (runtime_dir / "sidecar.sock").exists()
    wait_until(lambda: mcp_socket_path(runtime_dir / "sidecar.sock").exists(), what="the MCP socket")


def test_a_tools_text_is_the_json_dumps_of_its_result():
    """The text copy of a result (built with msgspec for speed) reads as `json.dumps(indent=2)`
    wrote it: same layout, non-ASCII and control characters escaped the same way."""
    from para_rpc.server.mcp.tools import json_text
    session = {"name": "s1", "state": "dirty", "created_at": 1796325326.683, "ahead": 3, "agent": None,
               "ports": [], "extra": {}, "notes": ["naïve ☃ 😀 \u202e \x1b[31m \x00 \"q\" \\ /"], "dirty": True}
    for obj in ({"repo": "/r", "current": None, "sessions": [session] * 3}, {}, [], {"a": [[], {}]}):
        assert json_text(obj) == json.dumps(obj, indent=2, default=str)
