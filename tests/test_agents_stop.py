"""Agents stop when their session ends (issue 9 point 15, red team R3-12).

The rule: once a session has ended and its work was saved (cancelled, integrated, finished,
forgotten by clean), para stops its agent's whole process group: SIGTERM, then SIGKILL after
`agent.stop_grace` seconds, recorded as an `agent_stopped` event and in the run's `stops`.
When an agent's runner exits, whatever it left running in its group (a daemon it forked) is
stopped too. An agent that ended its own session (`para integrate` from inside it) gets its
answer first: it is left `agent.stop_grace` seconds to exit by itself. Only processes that are
provably the agent's are signalled: the runner's group while the runner (checked by its command
line) leads it, else processes of that group or session carrying the run's PARA_AGENT_RUN; an
editor that runs the agent in its own process group is never signalled.

The agents are real programs: the built-in `scripted` agent (its ```agent blocks run commands)
and tests/agents/step_agent.py. Each leaves the pid of its daemon in a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents_util import (Api, agent_env, agent_scripts, api, dispatch, editor, out, own_sidecar,  # noqa: F401
                         step_profile, tmux, tmux_bin, wait_file)
from agents_crash_util import crash_during
from conftest import git, pid_alive, run_para, wait_until
from test_crash import ref_update


@pytest.fixture
def daemons(out: Path) -> Iterator[Path]:
    """Where agents write the pid of the daemon they fork; any daemon still alive at teardown
    is killed (by that pid), so a failing test leaves nothing behind."""
    yield out
    for f in out.glob("*.pid"):
        pid = int(f.read_text().strip() or 0)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def daemon_task(out: Path, name: str, *, wait: bool, finish: bool) -> str:
    """A scripted agent's task: write a file, fork `sleep 307 &` (its pid to out/<name>.pid),
    optionally wait for out/gate (never opened), optionally integrate."""
    text = (f"Leave a daemon behind.\n\n```file:{name}.txt\n{name}\n```\n\n```agent\n"
            f'run sh -c "sleep 307 & echo $! > {out}/{name}.pid"\n'
            f"run touch {out}/{name}.ready\n")
    if wait:
        text += f"wait-for {out}/gate\n"
    text += "```\n\n"
    if finish:
        text += f'When done: para integrate "Add {name}"\n'
    return text


def daemon_pid(out: Path, name: str) -> int:
    return int(wait_file(out / f"{name}.pid").read_text().strip())


def gone(*pids: int) -> None:
    wait_until(lambda: not any(pid_alive(p) for p in pids), 30, f"processes {pids} to end")


def event_ids(api: Api, kind: str, session: str) -> list[int]:
    return [e["id"] for e in api.events() if e["kind"] == kind and e["session"] == session]


def set_grace(seconds: int, repo: Path) -> None:
    run_para("config", "set", "agent.stop_grace", str(seconds), cwd=repo)


# ---- the agent ends by itself ----------------------------------------------------------------------

def test_an_agent_that_integrates_itself_gets_its_answer_and_its_daemon_is_stopped(api, repo, daemons):
    """R3-12: the agent forks `sleep 307 &`, integrates and exits 0; the daemon goes with it."""
    dispatch(repo, "dmn", "-p", daemon_task(daemons, "dmn", wait=False, finish=True),
             "--agent", "scripted", "--mode", "headless")
    daemon = daemon_pid(daemons, "dmn")
    exited = api.wait_event("agent_exited", "dmn")["data"]
    assert (exited["exit_code"], exited["status"]) == (0, "integrated")
    assert git("show", "main:dmn.txt", cwd=repo) == "dmn"

    stopped = api.wait_event("agent_stopped", "dmn")["data"]
    assert daemon in stopped["pids"] and stopped["signals"][0] == "SIGTERM" and stopped["left_running"] == []
    assert stopped["group"] is False  # the runner was gone: only marked members of its group
    assert "exited" in stopped["reason"]
    gone(daemon)
    stops = json.loads(run_para("show", "dmn", "--json", cwd=repo).stdout)["agent"]["stops"]
    assert [daemon in s["pids"] for s in stops] == [True]


def test_an_agent_that_exits_without_integrating_leaves_no_daemon_and_cancel_keeps_its_work(api, repo, daemons, para):
    """R3-12, second variant: PARA_AGENT_WORKFLOW=none, the agent exits 0 with its work in
    place; its daemon is stopped when it exits; `para cancel` then saves the work."""
    dispatch(repo, "dmn", "-p", daemon_task(daemons, "dmn", wait=False, finish=False),
             "--agent", "scripted", "--mode", "headless", env={"PARA_AGENT_WORKFLOW": "none"})
    daemon = daemon_pid(daemons, "dmn")
    exited = api.wait_event("agent_exited", "dmn")["data"]
    assert (exited["exit_code"], exited["status"]) == (0, "active")
    assert daemon in api.wait_event("agent_stopped", "dmn")["data"]["pids"]
    gone(daemon)

    out = para("cancel", "dmn").stdout
    assert "Cancelled session dmn" in out
    archived = api.sessions()["dmn"]["archived_branch"]
    assert git("show", f"{archived}:dmn.txt", cwd=repo) == "dmn"


# ---- the session ends while the agent runs ----------------------------------------------------------

def assert_stopped_after_saving(api: Api, repo: Path, name: str, runner: int, daemon: int, *, group: bool,
                                saved_by: str = "cancelled") -> dict:
    """The cancel (event `saved_by`) saved the work first, then the agent's processes were stopped."""
    stopped = api.wait_event("agent_stopped", name)
    data = stopped["data"]
    assert data["reason"] == "its session was cancelled"
    assert data["signals"][0] == "SIGTERM" and data["left_running"] == []
    assert {runner, daemon} <= set(data["pids"]) and data["group"] is group and data["pgid"] == runner
    assert event_ids(api, saved_by, name)[0] < stopped["id"]
    gone(runner, daemon)
    archived = api.sessions()[name]["archived_branch"]
    assert git("show", f"{archived}:{name}.txt", cwd=repo) == name  # the uncommitted file was saved
    assert not (repo / ".para" / "worktrees" / name).exists()
    return data


@pytest.mark.parametrize("how", ["headless", "editor", "editor-without-own-group"])
def test_cancelling_a_running_agent_stops_its_whole_group_after_saving_its_work(how, api, repo, daemons, para,
                                                                               editor):
    """Headless agents and editor terminals lead their own process group: the group is
    signalled. An editor that runs the agent in its own group (here: this test process) is
    never signalled; the runner and the agent's marked processes are, one by one."""
    bystander = None
    if how.startswith("editor"):
        ed = editor("run" if how == "editor" else "run-in-group")
        if how == "editor-without-own-group":
            bystander = subprocess.Popen(["sleep", "300"])  # shares the editor's (this test's) group
    try:
        dispatch(repo, "cx", "-p", daemon_task(daemons, "cx", wait=True, finish=True), "--agent", "scripted",
                 *(["--mode", "headless"] if how == "headless" else []))
        wait_file(daemons / "cx.ready")
        daemon = daemon_pid(daemons, "cx")
        runner = api.evidence("cx")["agent"]["pid"]
        assert api.evidence("cx")["agent"]["mode"] == ("headless" if how == "headless" else "editor")

        para("cancel", "cx")
        assert_stopped_after_saving(api, repo, "cx", runner, daemon, group=how != "editor-without-own-group")
        exited = api.wait_event("agent_exited", "cx")["data"]
        assert exited["exit_code"] == 128 + signal.SIGTERM  # the runner forwarded SIGTERM and recorded it
        if bystander is not None:
            assert bystander.poll() is None and pid_alive(os.getpid())
            assert ed.thread.is_alive()  # the editor (this process) still reads its connection
    finally:
        if bystander is not None:
            bystander.kill()
            bystander.wait()


def test_cancelling_a_tmux_agent_stops_it_and_its_window_closes(repo, daemons, para, own_sidecar, tmux_bin):
    """tmux runs the runner as its pane's process (a group leader); once it is stopped
    the window closes with it (tmux's default: no remain-on-exit)."""
    api = Api(own_sidecar.socket, repo)
    dispatch(repo, "tx", "-p", daemon_task(daemons, "tx", wait=True, finish=True), "--agent", "scripted",
             "--mode", "tmux")
    wait_file(daemons / "tx.ready")
    daemon = daemon_pid(daemons, "tx")
    agent = api.evidence("tx")["agent"]
    assert agent["mode"] == "tmux"
    para("cancel", "tx")
    assert_stopped_after_saving(api, repo, "tx", agent["pid"], daemon, group=True)
    wait_until(lambda: agent["window"] not in tmux("list-windows", "-a", "-F", "#{window_id}").stdout.split(),
               30, "the agent's tmux window to close")


@pytest.mark.parametrize("who", ["the agent itself", "a human"])
def test_an_agent_still_running_after_its_session_landed_is_stopped_after_the_grace(who, api, repo, out, para):
    """The agent that integrated gets its answer (exit 0 from `para integrate`) and the landing
    is recorded; it is stopped only when it keeps running `agent.stop_grace` seconds later."""
    set_grace(1, repo)
    steps = ["write:g.txt=grace\n"]
    steps += ["integrate:Land g", f"touch:{out}/integrated", f"wait:{out}/gate"] if who == "the agent itself" \
        else [f"touch:{out}/ready", f"wait:{out}/gate"]
    api.dispatch("g", "land then linger", "w", profiles={"w": step_profile(*steps)})
    if who == "a human":
        wait_file(out / "ready")
        para("integrate", "Land g", "--session", "g")
    else:
        wait_file(out / "integrated")  # `para integrate` answered 0 inside the agent
    runner = api.evidence("g")["agent"]["pid"]
    stopped = api.wait_event("agent_stopped", "g")
    assert stopped["data"]["reason"] == "its session was integrated" and runner in stopped["data"]["pids"]
    assert event_ids(api, "integrated", "g")[0] < stopped["id"]
    gone(runner)
    assert git("show", "main:g.txt", cwd=repo) == "grace"
    assert api.sessions()["g"]["status"] == "integrated"
    assert api.wait_event("agent_exited", "g")["data"]["exit_code"] == 128 + signal.SIGTERM


def test_an_agent_whose_session_was_cancelled_by_a_crashed_sidecar_is_stopped_by_the_next(api, repo, daemons,
                                                                                          sidecar, tmp_path):
    """The sidecar is killed in the middle of `para cancel` (after the work was committed, as
    the branch is archived); the next sidecar completes the cancel, then stops the agent."""
    dispatch(repo, "cr", "-p", daemon_task(daemons, "cr", wait=True, finish=True), "--agent", "scripted",
             "--mode", "headless")
    wait_file(daemons / "cr.ready")
    daemon = daemon_pid(daemons, "cr")
    runner = api.evidence("cr")["agent"]["pid"]
    crash_during(ref_update(repo, tmp_path, "^[0-9a-f]{40} 0{40} refs/heads/para/cr$"), sidecar, repo,
                 "cancel", "cr")
    assert pid_alive(runner) and pid_alive(daemon)  # nobody stopped it before the work was saved
    run_para("list", "--all", "--json", cwd=repo)  # a new sidecar repairs the cancel
    assert_stopped_after_saving(api, repo, "cr", runner, daemon, group=True, saved_by="repaired")


# ---- a daemon that hid its mark (red team RA4) ----------------------------------------------------

DETACHING = str(Path(__file__).resolve().parent / "agents" / "detaching_agent.py")


def sleepers(tag: str) -> list[int]:
    """The host's processes running `sleep TAG`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.isdigit() and argv[:2] == [b"sleep", tag.encode()] or argv[1:2] == [tag.encode()] and \
                argv[0].endswith(b"/sleep"):
            if pid_alive(int(entry)):
                found.append(int(entry))
    return found


def started_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])


def uptime_ticks() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK")


def test_stop_ends_a_daemon_that_scrubbed_its_environment_but_never_the_users_shell(api, repo, out, tmp_path):
    """An `env -i setsid` daemon ignoring SIGTERM, left in the worktree by the agent, is stopped
    with it; processes of the user in the same worktree (looking just like the daemon: no
    terminal, no environment, a session of their own), started before that run or while it
    runs, are not."""
    tag = f"777.{os.getpid()}"
    gate = tmp_path / "gate"
    env = {"PARA_AGENTS": json.dumps({"detach": {"command": [sys.executable, DETACHING, tag, str(gate)]}})}
    detail = json.loads(run_para("dispatch", "fk", "-p", "x", "--agent", "detach", "--mode", "headless", "--json",
                                 cwd=repo, env=env).stdout)
    run_para("stop", "fk", cwd=repo)
    users = subprocess.Popen(["sleep", "601"], cwd=detail["worktree"], env={"PATH": os.environ["PATH"]},
                             start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        # (what "before" means: a tick count the kernel has passed, not a guess at how long a restart takes)
        wait_until(lambda: uptime_ticks() > started_ticks(users.pid) + 50, 30, "the user's process to be older")
        gate.write_text("")
        run_para("restart", "fk", cwd=repo, env=env)
        daemon = wait_until(lambda: sleepers(tag), 30, "the agent's daemon")
        # One the user starts there while the agent runs (a command run by an editor): not the agent's.
        late = subprocess.Popen(["sleep", "602"], cwd=detail["worktree"], env={"PATH": os.environ["PATH"]},
                                start_new_session=True, stdin=subprocess.DEVNULL)
        run_para("stop", "fk", cwd=repo)
        gone(*daemon)
        assert users.poll() is None, "para stop killed the user's own process in the worktree"
        assert late.poll() is None, "para stop killed a process the user started in the worktree"
        # `para cancel` after it: the user's processes still run (cancel names them, as before).
        run_para("cancel", "fk", cwd=repo)
        assert users.poll() is None and late.poll() is None
    finally:
        for proc in (users, *([late] if "late" in locals() else [])):
            proc.kill()
            proc.wait()
        for pid in sleepers(tag):
            os.kill(pid, signal.SIGKILL)
