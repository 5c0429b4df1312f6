"""Agent control (issue 13): `para stop`, `para restart`, `para send` / `para messages`,
`agent.max_running` and its queue, `para open`.

Everything goes through the real `para` CLI, the real sidecar and the built-in `scripted`
agent (a real program that follows its task file: ```file blocks, `wait-for`, `wait-message`).
Agents wait on gate files under the test's `out` directory, so each test decides when an agent
ends; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from agents_util import Api, agent_env, agent_scripts, api, dispatch, out, wait_file  # noqa: F401
from conftest import git, run_para, shutdown_sidecar, start_sidecar, wait_until
from para_rpc.client import Connection
from para_rpc.errors import ParaError

NONE = {"PARA_AGENT_WORKFLOW": "none"}  # the agents leave their work in place and exit


def gated(out: Path, name: str, extra: str = "") -> str:
    """A task: write <name>.txt, then wait for out/<name>.gate."""
    return (f"Work on {name}.\n\n```file:{name}.txt\n{name} was here\n```\n\n"
            f"```agent\nwait-for {out}/{name}.gate\n{extra}```\n")


def start(repo: Path, name: str, task: str) -> dict[str, Any]:
    data, _ = dispatch(repo, name, "-p", task, "--agent", "scripted", "--mode", "headless", env=NONE)
    return data


def cli_json(repo: Path, *args: str, check: bool = True, env: dict[str, str | None] | None = None) -> Any:
    proc = run_para(*args, "--json", cwd=repo, check=check, env=env)
    return json.loads(proc.stdout)


def show(repo: Path, name: str) -> dict[str, Any]:
    return cli_json(repo, "show", name)


def worktree(repo: Path, name: str) -> Path:
    return Path(show(repo, name)["worktree"])


# ---- stop -----------------------------------------------------------------------------------

def test_stop_keeps_the_session_and_its_work_and_is_idempotent(api: Api, repo: Path, out: Path):
    start(repo, "st", gated(out, "st"))
    wt = worktree(repo, "st")
    wait_file(wt / "st.txt")
    runner = show(repo, "st")["agent"]["pid"]

    r = cli_json(repo, "stop", "st")
    assert r["stopped"] is True and r["signals"][0] == "SIGTERM" and runner in r["pids"]
    assert r["left_running"] == []
    s = show(repo, "st")
    assert s["status"] == "active" and s["worktree_exists"] and s["agent"]["stopped_at"]
    assert (wt / "st.txt").read_text() == "st was here\n"
    assert api.evidence("st")["agent"]["state"] == "stopped"
    assert api.wait_event("agent_stopped", "st")["data"]["reason"] == "stopped by the user (`para stop`)"
    api.wait_event("agent_exited", "st")

    again = run_para("stop", "st", cwd=repo)  # nothing runs: said, exit 0, nothing changes
    assert "is not running (it was stopped)" in again.stdout
    assert [e["kind"] for e in api.events()].count("agent_stopped") == 1


def test_stop_without_an_agent_says_so(api: Api, repo: Path):
    run_para("start", "plain", cwd=repo)
    r = cli_json(repo, "stop", "plain")
    assert r["stopped"] is False and "has no agent" in r["message"]


# ---- restart --------------------------------------------------------------------------------

def test_restart_refuses_while_running_then_relaunches_with_the_follow_up(api: Api, repo: Path, out: Path):
    start(repo, "rs", gated(out, "rs"))
    wt = worktree(repo, "rs")
    wait_file(wt / "rs.txt")

    refused = run_para("restart", "rs", "-p", "more", cwd=repo, check=False)
    assert refused.returncode == 4 and "still running" in refused.stderr

    first_runner = show(repo, "rs")["agent"]["pid"]
    (out / "rs.gate").touch()  # the restarted agent runs the original task again: let it pass
    follow = "Also add a follow-up file.\n\n```file:follow.txt\nfollowed up\n```\n"
    r = cli_json(repo, "restart", "rs", "--stop", "-p", follow)
    assert r["agent"]["pid"] != first_runner
    prompt = Path(r["prompt_file"]).read_text()
    assert "Work on rs." in prompt and "## Follow-up from the user" in prompt and "followed up" in prompt
    assert (wait_file(wt / "follow.txt")).read_text() == "followed up\n"
    assert api.wait_agent("rs")["agent"]["state"] == "exited"
    assert show(repo, "rs")["status"] == "active"
    assert api.wait_event("restarted", "rs")["data"]["follow_up"] is True


# ---- send -----------------------------------------------------------------------------------

def test_send_reaches_a_running_agent_and_restart_gives_the_unread_ones(api: Api, repo: Path):
    start(repo, "msg", "Listen.\n\n```agent\nwait-message got.txt\n```\n")
    wt = worktree(repo, "msg")
    api.wait_event("dispatched", "msg")

    sent = cli_json(repo, "send", "msg", "first: use tabs")
    assert (sent["id"], sent["delivery"]) == (1, "running")
    assert wait_file(wt / "got.txt").read_text() == "first: use tabs\n"
    api.wait_agent("msg")

    kept = cli_json(repo, "send", "msg", "second: keep it short")
    assert kept["delivery"] == "kept" and kept["unread"] == 1
    r = cli_json(repo, "restart", "msg")
    assert "second: keep it short" in Path(r["prompt_file"]).read_text()
    msgs = {m["id"]: m for m in cli_json(repo, "messages", "msg", "--all")["messages"]}
    assert (msgs[1]["read_by"], msgs[2]["read_by"]) == ("messages", "restart")

    cli_json(repo, "send", "msg", "third")  # the relaunched agent waits for one again
    wait_until(lambda: (wt / "got.txt").read_text().endswith("third\n"), 60, "the third message")
    api.wait_agent("msg")


def test_the_status_answer_carries_unread_messages(api: Api, repo: Path):
    run_para("start", "st2", cwd=repo)
    wt = worktree(repo, "st2")
    cli_json(repo, "send", "st2", "please also update the README")
    out_ = run_para("status", "writing code", cwd=wt).stdout
    assert "Message 1 from the user:" in out_ and "please also update the README" in out_
    assert "Message" not in run_para("status", "still writing", cwd=wt).stdout  # read once


@pytest.mark.parametrize("bad", ["", "   ", "\x1b[31mred", "bell\x07", "x" * 20_001])
def test_hostile_messages_are_refused_and_change_nothing(api: Api, repo: Path, bad: str):
    run_para("start", "h", cwd=repo)
    with pytest.raises(ParaError) as e:
        api.call("para/send", session="h", message=bad)
    assert e.value.code.name == "invalid_input"
    assert cli_json(repo, "messages", "h", "--all")["messages"] == []
    assert not [e for e in api.events() if e["kind"] == "message"]


def test_hostile_names_are_refused(api: Api, repo: Path):
    for verb, args in (("send", ["../x", "hi"]), ("stop", ["-"]), ("restart", ["a/../../b"]),
                       ("open", ["..", "--editor", "code"])):
        proc = run_para(verb, *args, "--json", cwd=repo, check=False)
        assert proc.returncode in (2, 3), (verb, proc.stdout, proc.stderr)
        assert json.loads(proc.stdout)["error"]["code"] in ("invalid_input", "not_found")
    nul = pytest.raises(ParaError)
    with nul as e:
        api.call("para/send", session="h\0x", message="hi")
    assert e.value.code.name == "invalid_input"


# ---- the cap --------------------------------------------------------------------------------

def test_the_third_of_three_is_queued_and_starts_when_a_slot_frees(api: Api, repo: Path, out: Path):
    run_para("config", "set", "agent.max_running", "2", cwd=repo)
    for n in ("q1", "q2"):
        assert start(repo, n, gated(out, n))["agent"] is not None
    third = start(repo, "q3", gated(out, "q3"))
    assert third["agent"] is None and third["state"] == "queued" and third["queue_position"] == 1
    listed = {s["name"]: s for s in cli_json(repo, "list")["sessions"]}
    assert listed["q3"]["state"] == "queued" and listed["q3"]["queue_position"] == 1
    assert api.evidence("q3")["queue_position"] == 1
    assert api.wait_event("agent_queued", "q3")["data"]["position"] == 1

    (out / "q1.gate").touch()
    api.wait_agent("q1")
    started = api.wait_event("dispatched", "q3", from_queue=True)
    assert started["data"]["pid"]
    wait_file(worktree(repo, "q3") / "q3.txt")
    assert show(repo, "q3")["queue_position"] is None
    for n in ("q2", "q3"):
        (out / f"{n}.gate").touch()


def test_cancelling_a_queued_session_frees_nothing_it_did_not_take(api: Api, repo: Path, out: Path):
    run_para("config", "set", "agent.max_running", "1", cwd=repo)
    start(repo, "c1", gated(out, "c1"))
    start(repo, "c2", gated(out, "c2"))
    start(repo, "c3", gated(out, "c3"))
    assert show(repo, "c3")["queue_position"] == 2
    run_para("cancel", "c2", cwd=repo)
    assert show(repo, "c3")["queue_position"] == 1
    # c1 still holds the only slot: c3 must not start
    assert api.evidence("c1")["agent"]["state"] == "running" and show(repo, "c3")["agent"] is None
    run_para("recover", "c2", cwd=repo)  # back, but its agent is not started (nor queued) unasked
    c2 = show(repo, "c2")
    assert c2["status"] == "active" and c2["queued"] is None and c2["agent"] is None
    r = cli_json(repo, "stop", "c3")  # a queued agent: out of the queue
    assert r["dequeued"] is True and show(repo, "c3")["state"] != "queued"
    (out / "c1.gate").touch()


def test_the_queue_survives_kill_9_of_the_sidecar(api: Api, repo: Path, out: Path, sidecar: Any,
                                                  runtime_dir: Path):
    run_para("config", "set", "agent.max_running", "1", cwd=repo)
    start(repo, "k1", gated(out, "k1"))
    start(repo, "k2", gated(out, "k2"))
    assert show(repo, "k2")["queue_position"] == 1
    sidecar.proc.send_signal(signal.SIGKILL)
    sidecar.proc.wait(timeout=30)
    again = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        assert show(repo, "k2")["state"] == "queued"  # persisted; k1's agent outlived the sidecar
        (out / "k1.gate").touch()
        api.wait_event("dispatched", "k2", from_queue=True)
        wait_file(worktree(repo, "k2") / "k2.txt")
        (out / "k2.gate").touch()
        api.wait_agent("k2")
    finally:
        shutdown_sidecar(again)


# ---- open -----------------------------------------------------------------------------------

def fake_editor(tmp: Path, name: str) -> Path:
    """A stand-in for an editor binary: records its argv, one per line, in <tmp>/<name>.argv."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    exe.write_text(f"#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {tmp}/{name}.argv\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bindir


def test_open_asks_a_connected_editor_first(api: Api, repo: Path, sidecar: Any):
    run_para("start", "op", cwd=repo)
    conn = Connection.open(sidecar.socket, timeout=30)
    try:
        assert conn.request("para/subscribe", {"editor": True})["editor"] is True
        proc = run_para("open", "op", cwd=repo)
        assert "Asked 1 connected editor" in proc.stdout
        while True:
            msg = conn.read()
            if msg.get("method") == "para/openWorktree":
                break
        assert msg["params"] == {"session": "op", "worktree": worktree(repo, "op").as_posix(),
                                 "repo": str(repo.resolve())}
    finally:
        conn.close()


def test_open_without_an_editor_runs_the_editor_argv(api: Api, repo: Path, tmp_path: Path):
    run_para("start", "op2", cwd=repo)
    bindir = fake_editor(tmp_path, "code")
    path = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    run_para("open", "op2", "--editor", "code", cwd=repo, env={"PATH": path})
    argv = wait_file(tmp_path / "code.argv").read_text().splitlines()
    assert argv == [worktree(repo, "op2").as_posix()]

    missing = run_para("open", "op2", "--editor", "cursor", cwd=repo, check=False,
                       env={"PATH": str(bindir) + os.pathsep + "/usr/bin:/bin"})
    assert missing.returncode == 3 and "'cursor' is not installed" in missing.stderr
    bad = run_para("open", "op2", "--editor", "emacs;rm", cwd=repo, check=False)
    assert bad.returncode == 2


def test_open_refuses_a_session_without_a_worktree(api: Api, repo: Path):
    run_para("start", "gone", cwd=repo)
    run_para("cancel", "gone", cwd=repo)
    proc = run_para("open", "gone", "--editor", "code", cwd=repo, check=False)
    assert proc.returncode in (3, 4)
    assert git("status", "--porcelain", cwd=repo) == ""


# ---- MCP ------------------------------------------------------------------------------------

async def test_mcp_tools_steer_an_agent(api: Api, repo: Path, out: Path):
    from mcp_util import call, call_error, mcp_client
    run_para("config", "set", "agent.max_running", "1", cwd=repo)
    start(repo, "m1", gated(out, "m1"))
    start(repo, "m2", gated(out, "m2"))
    async with mcp_client(repo) as c:
        listed = {s["name"]: s for s in (await call(c, "para_list"))["sessions"]}
        assert listed["m2"]["queue_position"] == 1
        sent = await call(c, "para_send", {"session": "m1", "message": "hurry up"})
        assert sent["delivery"] == "running"
        assert "invalid_input" in await call_error(c, "para_send", {"session": "m1", "message": "\x1b]0;x"})
        assert "wrong_state" in await call_error(c, "para_restart", {"session": "m1"})
        stopped = await call(c, "para_stop", {"session": "m1"})
        assert stopped["stopped"] is True
        # the slot m1 held goes to m2
        api.wait_event("dispatched", "m2", from_queue=True)
        (out / "m1.gate").touch()
        restarted = await call(c, "para_restart", {"session": "m1", "follow_up": "then stop"})
        assert restarted["state"] == "queued" and restarted["queue_position"] == 1, json.dumps(restarted)[-1500:]
        prompt = Path(restarted["prompt_file"]).read_text()
        assert "then stop" in prompt and "hurry up" in prompt  # m1 never read it: the restart gives it
    (out / "m2.gate").touch()
    api.wait_event("dispatched", "m1", from_queue=True)
    api.wait_agent("m1")
