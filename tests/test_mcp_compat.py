"""Today's MCP clients and Para's names, through the real `mcp` client library and `para mcp`:
Para's argument names as aliases, unknown arguments refused, every error with structured
content, resource subscriptions at every protocol version the SDK speaks (stdio and HTTP),
the new tools (config set, clean, plans) and the hints with real names filled in."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp import types as mt
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from conftest import git, shutdown_sidecar, start_sidecar, wait_until
from mcp_util import bridge_params, call, mcp_client, task_file, wait_for_states

TASKS = Path(__file__).resolve().parent.parent / "tasks"

SPEC_TASK = """Write the API spec.

```file:api.md
GET /items
```

When done: para integrate "Add the API spec"
"""


async def call_failed(c: Any, tool: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A tool call that must fail: (text, structured content), the latter {code, name, message, data}."""
    r = await c.call_tool(tool, args)
    text = "\n".join(x.text for x in r.content if hasattr(x, "text"))
    assert r.is_error, f"{tool}({args}) should have failed: {text}"
    sc = r.structured_content
    assert sc is not None and set(sc) == {"code", "name", "message", "data"}, (tool, args, sc)
    assert text.startswith(f"{sc['name']}: ") and sc["message"] in text
    return text, sc


# ---- Para's names ------------------------------------------------------------------------------

async def test_paras_argument_names_work_as_written(sidecar, repo):
    task_file(repo, "api-spec.md", SPEC_TASK)
    # the scripted agent, with a flag python takes as its "skip permissions" flag (-B: no bytecode)
    profiles = {"scripted-skip": {"command": [sys.executable, "-m", "para_rpc.scripted_agent", "{prompt_file}"],
                                  "skip_permissions": ["-B"]}}
    async with mcp_client(repo, env={"PARA_AGENTS": json.dumps(profiles)}) as c:
        s = await call(c, "para_start", {"session_name": "compat1"})
        assert s["name"] == "compat1" and s["branch"] == "para/compat1"
        # Para's para_dispatch(session_name, file): the name given, not one made from the file's
        r = await call(c, "para_dispatch", {"session_name": "api-spec", "file": "tasks/api-spec.md",
                                            "agent": "scripted-skip", "dangerously_skip_permissions": True})
        assert [x["name"] for x in r["sessions"]] == ["api-spec"]
        assert r["sessions"][0]["agent"]["skip_permissions"] is True
        assert r["sessions"][0]["agent"]["argv"][:2] == [sys.executable, "-B"]
        r = await call(c, "para_dispatch", {"session_name": "inline-one", "agent": "scripted",
                                            "task_description": "```file:one.txt\none\n```\n"
                                                                'When done: para integrate "One"\n'})
        assert [x["name"] for x in r["sessions"]] == ["inline-one"]
        assert r["sessions"][0]["agent"]["skip_permissions"] is False
        await wait_for_states(c, {"api-spec": "integrated", "inline-one": "integrated"})
        # finish's commit_message; the same value under both names is one value
        Path(s["worktree"], "c.txt").write_text("c\n")
        done = await call(c, "para_finish", {"session_name": "compat1", "session": "compat1",
                                             "commit_message": "Compat one"})
        assert done["status"] == "review"
        listed = {x["name"]: x["status"] for x in (await call(c, "para_list", {"all": True}))["sessions"]}
        assert listed == {"compat1": "review", "api-spec": "integrated", "inline-one": "integrated"}
        # an alias and our name with different values: refused, nothing happens
        _, sc = await call_failed(c, "para_start", {"session_name": "a1", "session": "b1"})
        assert sc["name"] == "invalid_input" and sc["data"]["alias"] == "session_name"
        _, sc = await call_failed(c, "para_finish", {"session": "compat1", "message": "x", "commit_message": "y"})
        assert sc["name"] == "invalid_input" and sc["data"]["argument"] == "message"
        assert {x["name"] for x in (await call(c, "para_list", {"all": True}))["sessions"]} == set(listed)
    assert git("log", "-1", "--format=%s", "para/compat1", cwd=repo) == "Compat one"
    assert git("show", "main:api.md", cwd=repo) == "GET /items"


async def test_unknown_arguments_are_refused_with_the_accepted_names(sidecar, repo):
    async with mcp_client(repo) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        text, sc = await call_failed(c, "para_start", {"session": "typo", "bsae": "main"})
        assert sc["name"] == "invalid_input" and sc["code"] == -32001
        assert sc["data"]["unknown"] == ["bsae"]
        assert sc["data"]["accepted"] == ["session", "base", "keep_on_failure", "repo"]
        assert sc["data"]["accepted"] == list(tools["para_start"].input_schema["properties"])
        assert "'bsae'" in text and "session, base, keep_on_failure, repo" in text and "session_name" in text
        # Para's flags that mean nothing here say what to use instead
        text, sc = await call_failed(c, "para_list", {"verbose": True, "archived": True})
        assert sc["data"]["unknown"] == ["verbose", "archived"] and "all=true" in text
        text, _ = await call_failed(c, "para_start", {"session_name": "x2", "dangerously_skip_permissions": True})
        assert "para_dispatch" in text and "skip_permissions" in text
        # the schemas stay honest: aliases are in the descriptions, not the properties
        assert "session_name" not in tools["para_dispatch"].input_schema["properties"]
        for alias in ("session_name (= session)", "task_description (= task)",
                      "dangerously_skip_permissions (= skip_permissions)"):
            assert alias in tools["para_dispatch"].description
        assert "commit_message (= message)" in tools["para_finish"].description
        assert (await call(c, "para_list", {"all": True}))["sessions"] == []
    assert git("for-each-ref", "refs/heads/para/", cwd=repo) == ""


async def test_every_error_carries_code_name_message_and_data(sidecar, repo):
    async with mcp_client(repo) as c:
        _, sc = await call_failed(c, "para_cancel", {"session": "nope"})  # the service's error
        assert sc["name"] == "not_found" and sc["code"] == -32003 and sc["data"]["session"] == "nope"
        text, sc = await call_failed(c, "para_list", {"all": "maybe"})  # the SDK's schema validation
        assert sc["name"] == "invalid_input" and "all" in sc["message"] and "validation error" in text
        assert "Error executing tool" not in text
        _, sc = await call_failed(c, "para_dispatch", {"task": "a", "file": "b"})  # the tool's own check
        assert sc["name"] == "invalid_input" and "exactly one" in sc["message"]
        _, sc = await call_failed(c, "no_such_tool", {})
        assert sc["name"] == "invalid_input" and sc["data"]["tool"] == "no_such_tool"
        _, sc = await call_failed(c, "para_list", {"repo": "/nonexistent/dir"})
        assert sc["name"] == "not_a_repository"


# ---- hints with the real names --------------------------------------------------------------

async def test_hints_name_the_real_session_and_the_missing_agent_program(sidecar, repo):
    async with mcp_client(repo, env={"PARA_AGENTS": json.dumps(
            {"ghost": {"command": ["para-no-such-agent-xyz", "{prompt}"]}})}) as c:
        text, sc = await call_failed(c, "para_dispatch", {"session": "g1", "task": "t", "agent": "ghost"})
        assert sc["name"] == "not_found" and sc["data"]["binary"] == "para-no-such-agent-xyz"
        assert "'para-no-such-agent-xyz'" in text and "agent.default" in text and "--agent" in text
        assert "para config get agents" in text and "para_list" not in text
        for name, line in (("m1", "one"), ("m2", "two")):
            wt = Path((await call(c, "para_start", {"session": name}))["worktree"])
            (wt / "same.txt").write_text(line + "\n")
        await call(c, "para_integrate", {"session": "m1", "message": "M1"})
        await call_failed(c, "para_integrate", {"session": "m2", "message": "M2"})
        # continue with the markers still there: the hint names m2 and its worktree
        text, sc = await call_failed(c, "para_continue", {"session": "m2"})
        assert sc["name"] == "conflict" and sc["data"]["session"] == "m2"
        assert "<session>" not in text and "para_continue(session='m2')" in text
        assert f"its worktree ({sc['data']['worktree']})" in text


# ---- resource subscriptions at every protocol version ------------------------------------------

@contextlib.asynccontextmanager
async def session_at(version: str, streams: Any, seen: list[str]) -> AsyncIterator[ClientSession]:
    """A ClientSession that asks for exactly `version` in the initialize handshake."""
    async def on_message(msg: Any) -> None:
        if getattr(msg, "method", None) == "notifications/resources/updated":
            seen.append(str(msg.params.uri))

    read, write = streams
    async with ClientSession(read, write, message_handler=on_message) as s:
        res = await s.send_request(mt.InitializeRequest(params=mt.InitializeRequestParams(
            protocol_version=version, capabilities=mt.ClientCapabilities(),
            client_info=mt.Implementation(name="para-test", version="1"))), mt.InitializeResult)
        assert res.protocol_version == version  # the server speaks what was asked
        assert res.capabilities.resources is not None and res.capabilities.resources.subscribe is True
        s.adopt(res)
        await s.send_notification(mt.InitializedNotification())
        yield s


async def _until(seen: list[str], uri: str) -> list[str]:
    with anyio.fail_after(60):
        while uri not in seen:
            await anyio.sleep(0.05)
    return list(seen)


async def _subscriptions_work(s: ClientSession, seen: list[str], trigger: Any, tag: str, repo: str = "") -> None:
    """Subscribe, see updates, unsubscribe, read: with `repo`, through the `?repo=` URIs (as a
    connection without a default repository must), spelled another way each time."""
    q = (lambda how: f"?repo={how(repo)}") if repo else (lambda how: "")
    sessions, plans = "para://sessions" + q(urllib.parse.quote), "para://plans" + q(str)
    one = f"para://session/{tag}" + q(lambda p: urllib.parse.quote(p, safe=""))
    for uri in (sessions, one, plans):
        await s.subscribe_resource(uri)
    await trigger("para_start", {"session": tag})
    got = await _until(seen, one)
    assert sessions in got and plans in got
    await s.unsubscribe_resource(sessions)
    await s.unsubscribe_resource(plans)
    seen.clear()
    await trigger("para_cancel", {"session": tag})
    # the updates of one event go out in order: sessions and plans first, had they been wanted
    assert await _until(seen, one) == [one]
    with pytest.raises(MCPError):  # not a para resource
        await s.subscribe_resource("file:///etc/passwd")
    with pytest.raises(MCPError):  # a repository must be an absolute path
        await s.subscribe_resource("para://sessions?repo=relative/dir")
    # the resource the update names is readable at this version too
    r = await s.read_resource(one)
    assert json.loads(r.contents[0].text)["status"] == "cancelled"
    listed = json.loads((await s.read_resource(sessions)).contents[0].text)
    assert listed["repo"] == (os.path.realpath(repo) if repo else listed["repo"])


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
async def test_resource_subscriptions_over_stdio_at_each_handshake_version(sidecar, repo, version):
    tag = "sub-" + version.replace("-", "")
    seen: list[str] = []
    async with mcp_client(repo) as other, stdio_client(bridge_params(repo)) as streams, \
            session_at(version, streams, seen) as s:
        async def trigger(tool: str, args: dict[str, Any]) -> None:
            await call(other, tool, args)  # another client's change is pushed to this one
        await _subscriptions_work(s, seen, trigger, tag)


@pytest.mark.parametrize("version", MODERN_PROTOCOL_VERSIONS)
async def test_resource_updates_at_each_modern_version_via_listen(sidecar, repo, version):
    from mcp import Client
    async with Client(bridge_params(repo), mode=version) as c, mcp_client(repo) as other:
        assert c.protocol_version == version
        with anyio.fail_after(60):
            async with c.listen(resource_subscriptions=["para://session/modern", "para://plans"]) as sub:
                await call(other, "para_start", {"session": "modern"})
                got = set()
                async for event in sub:
                    got.add(event.uri)
                    if got == {"para://session/modern", "para://plans"}:
                        break


async def test_resource_subscriptions_over_http_at_each_handshake_version(runtime_dir, repo):
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", "--mcp-http", "127.0.0.1:0")
    try:
        sock = runtime_dir / "sidecar.sock"
        url_file, token_file = Path(f"{sock}.mcp-url"), Path(f"{sock}.mcp-token")
        wait_until(url_file.exists, what="the MCP HTTP endpoint")
        url, token = url_file.read_text().strip(), token_file.read_text().strip()
        for version in HANDSHAKE_PROTOCOL_VERSIONS:
            tag = "web-" + version.replace("-", "")
            seen: list[str] = []
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http, \
                    streamable_http_client(url, http_client=http) as streams, \
                    session_at(version, streams, seen) as s:
                async def trigger(tool: str, args: dict[str, Any]) -> None:
                    r = await s.call_tool(tool, {**args, "repo": str(repo)})
                    assert not r.is_error, r.content
                await _subscriptions_work(s, seen, trigger, tag, repo=str(repo))
    finally:
        shutdown_sidecar(sc)


# ---- the new tools -----------------------------------------------------------------------------

async def test_config_set_keeps_the_trust_gate(sidecar, repo):
    async with mcp_client(repo) as c:
        r = await call(c, "para_config_set", {"key": "agent.max_running", "value": "3"})
        user_file = Path(r["path"])
        assert r == {"key": "agent.max_running", "value": 3, "scope": "user", "path": r["path"]}
        assert repo not in user_file.parents
        r = await call(c, "para_config_set", {"key": "agent.workflow", "value": "finish", "scope": "project"})
        assert r["value"] == "finish" and r["path"] == str(repo / ".para" / "config.json")
        shown = await call(c, "para_config_show")
        assert shown["values"]["agent.max_running"]["value"] == 3
        wf = shown["values"]["agent.workflow"]
        assert wf["value"] == "finish" and "project" in wf["source"], wf
        # a key that decides what para runs: never into the user's own (trusted) file
        before = user_file.read_text()
        text, sc = await call_failed(c, "para_config_set", {"key": "integrate.check", "value": '["touch", "x"]'})
        assert sc["name"] == "forbidden" and "para trust" in text and user_file.read_text() == before
        # into the project file it goes, and stays unapproved until the user runs `para trust`
        await call(c, "para_config_set", {"key": "integrate.check", "value": '["touch", "x"]', "scope": "project"})
        shown = await call(c, "para_config_show")
        assert "project" in shown["values"]["integrate.check"]["source"]
        assert shown["values"]["integrate.check"]["trusted"] is False
        _, sc = await call_failed(c, "para_config_set", {"key": "no.such.key", "value": "1"})
        assert sc["name"] == "invalid_input"
        _, sc = await call_failed(c, "para_config_set", {"key": "agent.max_running", "value": "-4"})
        assert sc["name"] == "config_error"
    assert json.loads(user_file.read_text()) == {"agent": {"max_running": 3}}


async def test_clean_is_a_dry_run_until_confirmed(sidecar, repo):
    git("branch", "para/leftover", cwd=repo)  # a para branch no session owns, fully merged
    async with mcp_client(repo) as c:
        dry = await call(c, "para_clean")
        assert dry["dry_run"] is True
        assert [(a["kind"], a["branch"]) for a in dry["actions"]] == [("delete_branch", "para/leftover")]
        assert git("rev-parse", "--verify", "-q", "refs/heads/para/leftover", cwd=repo)
        done = await call(c, "para_clean", {"confirm": True})
        assert done["dry_run"] is False and done["actions"] == dry["actions"]
    assert git("for-each-ref", "refs/heads/para/", cwd=repo) == ""


async def test_plans_as_a_tool_and_a_resource(sidecar, repo):
    task_file(repo, "TASK_1_first.md", "```file:first.txt\nfirst\n```\n\nWhen done: para integrate \"First\"\n")
    task_file(repo, "TASK_2_second.md", "```file:second.txt\nsecond\n```\n\nWhen done: para integrate \"Second\"\n")
    async with mcp_client(repo) as c:
        assert (await call(c, "para_plans"))["plans"] == []
        r = await call(c, "para_dispatch", {"file": "tasks", "agent": "scripted"})
        plan_id = r["plan"]["id"]
        cursor = None
        with anyio.fail_after(120):
            while (plans := (await call(c, "para_plans"))["plans"])[0]["state"] != "done":
                assert plans[0]["state"] == "running", plans
                w = await call(c, "para_wait", {"timeout": 20, **({"after_event": cursor} if cursor else {})})
                cursor = w["last_event"]
        assert [p["id"] for p in plans] == [plan_id]
        assert [[t["name"] for t in st["tasks"]] for st in plans[0]["steps"]] == [["first"], ["second"]]
        res = json.loads((await c.read_resource("para://plans")).contents[0].text)
        assert res["plans"][0]["id"] == plan_id


# ---- the guide: the team's workflow and one complete task file -------------------------------

async def test_guide_maps_team_preferences_and_ships_the_example_task(sidecar, repo):
    from para_rpc.server.mcp.guide import EXAMPLE_TASK, GUIDE
    assert EXAMPLE_TASK == (TASKS / "TASK_1_greeting.md").read_text()
    async with mcp_client(repo) as c:
        guide = (await c.read_resource("para://guide")).contents[0].text
        prompt = (await c.get_prompt("orchestrate", {"goal": "g"})).messages[0].content.text
        dispatch = next(t for t in (await c.list_tools()).tools if t.name == "para_dispatch")
    assert guide == GUIDE
    for text in (guide, prompt):
        for phrase in ("CLAUDE.md", "AGENTS.md", "agent.workflow", "skip_permissions", "para finish"):
            assert phrase in text, phrase
    # the example task, indented as a block, line for line
    assert "\n".join("    " + x if x else x for x in EXAMPLE_TASK.splitlines()) in guide
    assert "agent.workflow" in dispatch.description and "CLAUDE.md" in dispatch.description
    assert "AGENTS.md" in dispatch.input_schema["properties"]["skip_permissions"]["description"]
    # the workflow the guide prescribes is what para does: agent.workflow=finish keeps the branch
    async with mcp_client(repo) as c:
        await call(c, "para_config_set", {"key": "agent.workflow", "value": "finish", "scope": "project"})
        r = await call(c, "para_dispatch", {"session": "review-me", "agent": "scripted",
                                            "task": "```file:r.txt\nr\n```\n"})
        assert "para finish" in Path(r["sessions"][0]["prompt_file"]).read_text()
        await wait_for_states(c, {"review-me": "review"})


# ---- the documented tools are the served tools ------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _block(path: Path) -> str:
    text = path.read_text()
    return text.split("<!-- mcp tools -->\n", 1)[1].split("<!-- end of mcp tools -->", 1)[0]


async def test_readme_and_protocol_list_exactly_the_served_tools(sidecar, repo):
    from para_rpc.server.mcp.tools import TOOLS
    async with mcp_client(repo) as c:
        served = {t.name: t for t in (await c.list_tools()).tools}
    assert [t.name for t in TOOLS] == list(served)
    # README: one line per tool, generated from the table (regenerate it from this if it changes)
    readme = "".join(f"- `{t.name}`" + (f" ({', '.join(t.arguments()[:-1])})" if t.arguments()[:-1] else "")
                     + f": {t.title.lower()}\n" for t in TOOLS)
    assert _block(ROOT / "README.md") == readme
    # protocol.md: the table's tools, arguments and hints
    rows = [[cell.strip() for cell in r.strip("|").split("|")]
            for r in _block(ROOT / "docs" / "protocol.md").splitlines()[2:]]
    assert [r[0].strip("`") for r in rows] == list(served)
    for row in rows:
        t = served[row[0].strip("`")]
        args = [a.strip("` ") for a in row[1].split(",") if a.strip()]
        assert args == [a for a in t.input_schema["properties"] if a != "repo"], t.name
        hints = row[3]
        assert ("read-only" in hints) == bool(t.annotations.read_only_hint), t.name
        assert ("destructive" in hints) == bool(t.annotations.destructive_hint), t.name
        assert ("open world" in hints) == bool(t.annotations.open_world_hint), t.name
