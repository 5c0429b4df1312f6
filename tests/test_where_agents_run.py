"""Where each agent runs and how old the work brought home from it is, everywhere a person or
a model looks (issue 16, point 5): `para status`, `status show`, `show`, `list`, `list -v`,
`para monitor --once` and the MCP tools' text, through the real CLI, the real sidecar, a real
OpenSSH server on loopback (tests/ssh_util.py) and the scripted agent.

Every state of a run, each checked in every output:
- local: nothing about executors or harvests anywhere (a local run looks as it always did);
- on a host, never harvested: `runs on h1 (127.0.0.1)`, `never harvested` (its work is on the
  host only; the sweep is set to an hour so nothing harvests before the agent reports);
- on a host, harvested: `last harvest <age> ago (<the tip brought home>)`;
- on a host, lost (its runner killed there, no exit record): `lost`, `ran on h1 (...)`, and the
  last harvest still named, since that is what was kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from agents_util import agent_env, agent_scripts, api, dispatch, out, step_profile, wait_file  # noqa: F401
from conftest import IDENTITY, git, run_para
from mcp_util import mcp_client
from ssh_util import SshHost, ssh_host  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("sidecar")

WORDS = ("runs on", "ran on", "harvest", "@local", "@h1")


def configure(**settings: object) -> None:
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps(settings))


def human(repo: Path) -> dict[str, str]:
    """Every human view of the repository's sessions, by command."""
    views = {" ".join(args): run_para(*args, cwd=repo).stdout
             for args in (("status",), ("list",), ("list", "-v"), ("monitor", "--once"))}
    for name in ("far", "here"):
        for args in (("status", "show", name), ("show", name)):
            views[" ".join(args)] = run_para(*args, cwd=repo).stdout
    return views


def lines_of(text: str, name: str) -> str:
    """The lines of one session in a multi-session view (list -v: its block)."""
    blocks = re.split(r"\n(?=[* ] \S)", text)
    if any(b.startswith(("* ", "  ")) and b[2:].startswith(name + " ") for b in blocks):
        return "\n".join(b for b in blocks if b[2:].startswith(name + " "))
    return "\n".join(line for line in text.splitlines() if re.search(rf"(^|[\s│|]){name}\b", line))


async def mcp_texts(repo: Path) -> dict[str, list[str]]:
    """The text blocks of para_list and para_status, as a model reads them."""
    async with mcp_client(repo) as c:
        got = {}
        for tool in ("para_list", "para_status"):
            r = await c.call_tool(tool, {})
            assert not r.is_error, r.content
            got[tool] = [b.text for b in r.content if hasattr(b, "text")]
        return got


def runner_pid(host: SshHost, name: str) -> int:
    found = list((host.dir / "worker" / "run").glob(f"*/{name}/runner.pid"))
    assert len(found) == 1, found
    return int(json.loads(found[0].read_text())["pid"])


def test_every_view_says_where_each_agent_runs_and_how_old_its_harvest_is(
        api, repo: Path, out: Path, ssh_host: SshHost) -> None:
    configure(executors={"h1": ssh_host.entry(env_passthrough=list(IDENTITY), harvest_interval=3600)})
    dispatch(repo, "here", "-p", "stay here", "--agent", "w", profiles={"w": step_profile(f"wait:{out}/never")})
    far = step_profile(f"touch:{out}/ready", f"wait:{out}/go", "write:a.txt=one\n", "commit:first",
                       "status:halfway", f"touch:{out}/ready2", f"wait:{out}/never")
    dispatch(repo, "far", "-p", "work there", "--agent", "w", "--executor", "h1", profiles={"w": far})
    wait_file(out / "ready", timeout=60)
    api.wait_agent("here", states=("running",))

    # -- on the host, nothing harvested yet
    views = human(repo)
    for view, text in views.items():
        here = text if view.endswith(" here") else "" if view.endswith(" far") else lines_of(text, "here")
        assert here.strip() or view.endswith(" far"), (view, text)
        assert not any(w in here for w in WORDS), (view, here)  # local: nothing extra
    where = "runs on h1 (127.0.0.1)"
    assert f"[{where}, never harvested]" in lines_of(views["status"], "far"), views["status"]
    assert f"{where}, never harvested" in views["status show far"], views["status show far"]
    assert re.search(rf"\n  agent\s+{re.escape(where)}, never harvested\n", views["show far"]), views["show far"]
    assert "@h1 (never harvested)" in lines_of(views["list"], "far"), views["list"]
    assert f"{where}, never harvested" in lines_of(views["list -v"], "far"), views["list -v"]
    assert "running @h1 (never harvested)" in lines_of(views["monitor --once"], "far"), views["monitor --once"]
    status = json.loads(run_para("status", "--json", cwd=repo).stdout)
    agents = {s["name"]: s["agent"] for s in status["sessions"]}
    assert agents["far"]["executor"] == "h1" and agents["far"]["host"] == "127.0.0.1"
    assert agents["far"]["harvested_at"] is None and agents["far"]["harvested_commit"] is None
    assert agents["here"]["executor"] == "local" and "host" not in agents["here"]
    texts = asyncio.run(mcp_texts(repo))
    for tool, blocks in texts.items():
        assert len(blocks) == 2 and json.loads(blocks[0])["sessions"], (tool, blocks)
        assert blocks[1] == f"Agents on other hosts:\n  far: {where}, never harvested", (tool, blocks)

    # -- harvested: its status report brought its commit home
    (out / "go").touch()
    wait_file(out / "ready2", timeout=60)
    tip = api.wait_event("harvested", "far")["data"]["commit"]  # (the first: the sweep waits an hour)
    assert git("log", "-1", "--format=%s", tip, cwd=repo) == "first"
    views = human(repo)
    last = rf"last harvest \d+s ago \({tip[:10]}\)"
    assert re.search(rf"\[{re.escape(where)}, {last}\]", lines_of(views["status"], "far")), views["status"]
    assert re.search(rf"{re.escape(where)}, {last}", views["status show far"]), views["status show far"]
    assert re.search(rf"\n  agent\s+{re.escape(where)}, {last}\n", views["show far"]), views["show far"]
    assert re.search(r"@h1 \(harvest \d+s ago\)", lines_of(views["list"], "far")), views["list"]
    assert re.search(r"running @h1 \(harvest \d+s ago\)", lines_of(views["monitor --once"], "far"))
    for view, text in views.items():
        if not view.endswith(" far"):
            here = text if view.endswith(" here") else lines_of(text, "here")
            assert not any(w in here for w in WORDS), (view, here)
    texts = asyncio.run(mcp_texts(repo))
    for tool, blocks in texts.items():
        assert re.fullmatch(rf"Agents on other hosts:\n  far: {re.escape(where)}, {last}", blocks[1]), (tool, blocks)

    # -- lost: its runner killed on the host without an exit record
    os.killpg(runner_pid(ssh_host, "far"), signal.SIGKILL)
    api.wait_agent("far", states=("lost",), timeout=60)
    views = human(repo)
    was = "ran on h1 (127.0.0.1)"
    assert re.search(rf"agent lost\s+\[{re.escape(was)}, {last}\]", lines_of(views["status"], "far")), views["status"]
    assert re.search(rf"\n  agent\s+{re.escape(was)}, {last}\n", views["show far"]), views["show far"]
    assert re.search(r"@h1 \(lost, harvest \d+s ago\)", lines_of(views["list"], "far")), views["list"]
    assert re.search(rf"lost, {re.escape(was)}, {last}", lines_of(views["list -v"], "far")), views["list -v"]
    assert re.search(r"lost @h1 \(harvest \d+s ago\)", lines_of(views["monitor --once"], "far"))
    texts = asyncio.run(mcp_texts(repo))
    for tool, blocks in texts.items():
        assert re.fullmatch(rf"Agents on other hosts:\n  far: lost, {re.escape(was)}, {last}", blocks[1]), (tool, blocks)
    run_para("cancel", "here", "--json", cwd=repo, check=False)
    run_para("cancel", "far", "--json", cwd=repo, check=False)


def test_an_mcp_text_names_no_host_when_every_agent_is_local(api, repo: Path, out: Path) -> None:
    """Only agents on other hosts add the second text block: a local repository's model reads
    the JSON alone, as before."""
    dispatch(repo, "here", "-p", "stay here", "--agent", "w", profiles={"w": step_profile(f"wait:{out}/never")})
    api.wait_agent("here", states=("running",))
    texts = asyncio.run(mcp_texts(repo))
    for tool, blocks in texts.items():
        assert len(blocks) == 1 and json.loads(blocks[0])["sessions"][0]["name"] == "here", (tool, blocks)
    run_para("cancel", "here", "--json", cwd=repo, check=False)


def test_wording_of_results_from_an_older_sidecar() -> None:
    """A result without `host` (an older sidecar's) still says where, by the executor's name."""
    from para_rpc import display
    agent: dict[str, Any] = {"executor": "h1", "state": "running", "harvested_at": None}
    assert display.remote_where(agent) == "runs on h1, never harvested"
    assert not display.remote({"executor": "local"}) and not display.remote(None)
