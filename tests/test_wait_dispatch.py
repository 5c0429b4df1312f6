"""Cursor waits and batch dispatch live in the service: JSON-RPC, MCP and the CLI get the
same behaviour from the one `para/wait` and `para/dispatch`.

- `para/wait` with `after_event` (the previous wait's `last_event`) counts what happened
  between two waits, so a client that waits in a loop misses nothing; without it only what
  happens from now on counts; progress reports (`status`) are returned but are no change.
- `para/dispatch` with `tasks` starts each task on its own: a task that fails is listed with
  its code and does not stop the others; when none starts, the call fails and leaves nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Sidecar, run_para
from mcp_util import call, call_error, mcp_client
from para_rpc.errors import Code, ParaError

pytestmark = pytest.mark.anyio
NOOP = {"PARA_AGENTS": json.dumps({"noop": {"command": ["true"]}})}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_wait_cursor_over_json_rpc(sidecar: Sidecar, svc, repo: Path) -> None:
    svc("start", name="a")
    svc("start", name="b")
    first = svc("wait", timeout=0)
    assert first["timed_out"] and first["events"] == [] and first["last_event"] > 0
    cursor = first["last_event"]

    svc("cancel", session="a")  # between two waits
    assert svc("wait", sessions=["a"], timeout=0)["timed_out"], "without a cursor the past does not count"
    since = svc("wait", sessions=["a"], timeout=0, after_event=cursor)
    assert since["changed"] == ["a"] and not since["timed_out"]
    assert [e["kind"] for e in since["events"]] == ["cancelled"] and since["events"][0]["session"] == "a"
    assert since["last_event"] == since["events"][-1]["id"] > cursor

    other = svc("wait", sessions=["b"], timeout=0, after_event=cursor)
    assert other["timed_out"] and other["changed"] == [], "an event about another session is no change of b"
    assert other["last_event"] == since["last_event"], "the cursor still moves past what was seen"

    svc("report", session="b", task="halfway")
    chatter = svc("wait", sessions=["b"], timeout=0, after_event=since["last_event"])
    assert chatter["timed_out"] and [e["kind"] for e in chatter["events"]] == ["status"]
    assert chatter["last_event"] > since["last_event"]

    with pytest.raises(ParaError) as err:
        svc("wait", sessions=["nobody"], timeout=0)
    assert err.value.code is Code.not_found


def test_batch_dispatch_over_json_rpc(sidecar: Sidecar, svc, repo: Path) -> None:
    svc("start", name="taken")
    out = svc("dispatch", agent="noop", mode="headless", env=NOOP,
              tasks=[{"name": "one", "prompt": "first task"}, {"name": "taken", "prompt": "clash"},
                     {"prompt": "no name given"}, {"name": "both", "prompt": "x", "file": "y.md"}])
    assert [s["name"] for s in out["sessions"]][0] == "one" and len(out["sessions"]) == 2 and out["plans"] == []
    assert all(s["agent"]["profile"] == "noop" and s["prompt_file"] for s in out["sessions"])
    failed = {f["task"]: f["code"] for f in out["failed"]}
    assert failed == {"taken": "already_exists", "both": "invalid_input"}, out["failed"]
    live = {s["name"] for s in svc("list")["sessions"]}
    assert live == {"taken", *(s["name"] for s in out["sessions"])}

    with pytest.raises(ParaError) as err:
        svc("dispatch", agent="noop", mode="headless", env=NOOP, tasks=[{"name": "taken", "prompt": "again"},
                                                                          {"name": "bad name!", "prompt": "x"}])
    assert err.value.code is Code.already_exists and "nothing was dispatched" in err.value.message
    assert [f["task"] for f in err.value.data["failed"]] == ["taken", "bad name!"]
    assert {s["name"] for s in svc("list")["sessions"]} == live, "a batch that started nothing left nothing"

    with pytest.raises(ParaError) as err:
        svc("dispatch", agent="noop", prompt="solo", tasks=[{"prompt": "x"}], env=NOOP)
    assert err.value.code is Code.invalid_input and "tasks replaces prompt" in err.value.message


async def test_wait_cursor_and_batch_dispatch_over_mcp(sidecar: Sidecar, svc, repo: Path) -> None:
    svc("start", name="m")
    async with mcp_client(repo, NOOP) as c:
        first = await call(c, "para_wait", {"sessions": ["m"], "timeout": 0})
        svc("cancel", session="m")
        since = await call(c, "para_wait", {"sessions": ["m"], "timeout": 0, "after_event": first["last_event"]})
        assert since["changed"] == ["m"] and since["events"][0]["kind"] == "cancelled"
        out = await call(c, "para_dispatch", {"agent": "noop", "mode": "headless",
                                              "tasks": [{"session": "x1", "task": "one"},
                                                        {"session": "m", "task": "clash"},
                                                        {"session": "x2", "task": "two"}]})
        assert [s["name"] for s in out["sessions"]] == ["x1", "x2"]
        assert [f["task"] for f in out["failed"]] == ["m"] and out["failed"][0]["error"].startswith("already_exists")
        err = await call_error(c, "para_dispatch", {"agent": "noop", "tasks": [{"session": "x1", "task": "again"}]})
        assert "already_exists: nothing was dispatched" in err


def test_wait_and_batch_dispatch_from_the_cli(sidecar: Sidecar, repo: Path) -> None:
    out = json.loads(run_para("dispatch", "-p", "first", "-p", "second", "--agent", "noop", "--mode", "headless",
                              "--json", cwd=repo, env=NOOP).stdout)
    names = [s["name"] for s in out["sessions"]]
    assert len(names) == 2 and out["failed"] == []
    human = run_para("dispatch", "-p", "third", "-p", "fourth", "--agent", "noop", "--mode", "headless",
                     cwd=repo, env=NOOP).stdout
    assert human.count("Dispatched session") == 2, human
    refused = run_para("dispatch", "name", "-p", "a", "-p", "b", "--agent", "noop", cwd=repo, env=NOOP, check=False)
    assert refused.returncode == Code.invalid_input.exit and "drop NAME" in refused.stderr

    first = json.loads(run_para("wait", names[0], "--timeout", "0", "--json", cwd=repo).stdout)
    run_para("cancel", names[0], cwd=repo)
    since = json.loads(run_para("wait", names[0], "--after", str(first["last_event"]), "--timeout", "0", "--json",
                                cwd=repo).stdout)
    assert since["changed"] == [names[0]] and since["sessions"][names[0]]["status"] == "cancelled"
    text = run_para("wait", names[0], "--after", str(first["last_event"]), "--timeout", "0", cwd=repo).stdout
    assert f"{names[0]}: cancelled" in text and f"--after {since['last_event']}" in text
    quiet = run_para("wait", names[1], "--timeout", "0", cwd=repo).stdout
    assert "No change before the timeout." in quiet
