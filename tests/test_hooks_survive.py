"""Hooks and frozen agents survive crashes, stops and cancels (issue 13, red team F8, F12, F13,
F14, F16, F21, F22, F2b), through the real CLI and the real sidecar; the crashes are SIGKILLs
of the sidecar at the point each one names.

- An agent frozen (SIGSTOP) by finish/cancel never stays frozen because the sidecar died or
  stopped: the freeze is journaled, a graceful stop releases it, and the next sidecar reopens
  the repositories its predecessor served at its start (not when someone runs para there).
- A hook's process group is journaled with its start time: after a crash it is stopped
  wherever its members went, and a teardown is never run twice at once.
- A start that does not complete (crash, cancel, sidecar stop, client gone) keeps what its
  worktree held under refs/para/backup/ before it is undone.
- `para cancel` of a start still running its setup, a start whose client went away, and
  `para sidecar stop` during a setup stop the setup at once and roll the start back.
- A hook calling `para start`/`dispatch`, or `cancel` of its own session, is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from para_rpc.errors import Code

from agents_util import Api, agent_env, agent_scripts, api, dispatch, out  # noqa: F401
from conftest import (
    PARA_ARGV,
    cli_env,
    git,
    pid_alive,
    run_para,
    sidecar_pids,
    wait_until,
)

PY = sys.executable


@pytest.fixture(autouse=True)
def trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data" / "para" / "trust.json"


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a failing test must not leave running (or paused)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass


def configure(**keys: Any) -> None:
    """Keys of this test's user file: `session={...}`, `agent={...}`."""
    path = Path(os.environ["PARA_CONFIG"])
    tree = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
    for section, values in keys.items():
        tree.setdefault(section, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tree))


def state(pid: int) -> str | None:
    """The process's state letter (T: stopped), None once it is gone (a zombie is gone)."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if s == "Z" else s


def pid_in(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip(), 60, f"{path.name} to be written")
    return int(path.read_text().strip())


def kill_sidecars(runtime_dir: Path) -> None:
    for pid in sidecar_pids(runtime_dir):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not sidecar_pids(runtime_dir), 30, "the sidecar to die")


def _interruptible() -> None:
    # As from a terminal: a suite started in the background of a shell (`.ci/run &`) has
    # SIGINT ignored, and a Python started with it ignored never sees a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def background(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*PARA_ARGV, *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, preexec_fn=_interruptible)


def listed(repo: Path) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in json.loads(run_para("list", "--all", "--json", cwd=repo).stdout)["sessions"]}


def sleeper(out: Path) -> dict[str, Any]:
    """An agent whose shell and background child write their pids, then sleep."""
    script = f"echo $$ > {out}/sh.pid; sleep 611 & echo $! > {out}/bg.pid; sleep 612"
    return {"sleeper": {"command": ["sh", "-c", script]}}


def agent_pids(out: Path) -> list[int]:
    return [pid_in(out / "sh.pid"), pid_in(out / "bg.pid")]


# ---- frozen agents -----------------------------------------------------------------------------

def test_a_sidecar_stop_releases_an_agent_left_paused_after_finish(api: Api, repo: Path, out: Path,
                                                                  leftovers: list[int]) -> None:
    """F14: after `finish` the agent's processes stay paused until it is stopped (agent.stop_grace
    later); a graceful `sidecar stop` in between left them paused for good."""
    configure(agent={"stop_grace": 600})
    dispatch(repo, "fz", "-p", "sleep", "--agent", "sleeper", "--mode", "headless", profiles=sleeper(out))
    pids = agent_pids(out)
    leftovers.extend(pids)
    (repo / ".para" / "worktrees" / "fz" / "work.txt").write_text("work\n")
    r = json.loads(run_para("finish", "done", "-s", "fz", "--json", cwd=repo).stdout)
    assert any("stay paused" in w for w in r["warnings"]), r["warnings"]
    assert all(state(p) == "T" for p in pids)
    run_para("sidecar", "stop", cwd=repo)
    wait_until(lambda: all(state(p) != "T" for p in pids), 30, "the paused agent to be released")
    wait_until(lambda: all(state(p) is None for p in pids), 30, "the agent of the finished session to end")


def test_a_sidecar_killed_during_a_teardown_is_repaired_by_the_next_sidecar_at_once(
        api: Api, repo: Path, out: Path, tmp_path: Path, runtime_dir: Path, leftovers: list[int]) -> None:
    """F8: kill -9 during a cancel's teardown, the agent frozen. The next sidecar, started from
    outside that repository, repairs it at its start: the old teardown group is stopped first
    (it left the worktree: found by pgid and start time), the teardown runs once more after it,
    the cancel completes, and the agent is stopped, not left paused."""
    runs = tmp_path / "teardown.runs"
    script = ("import os, sys, time\n"
              f"runs = {str(runs)!r}\n"
              "prev = open(runs).read().split() if os.path.exists(runs) else []\n"
              "def live(pid):\n"
              "    try:\n"
              "        return open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z'\n"
              "    except OSError:\n"
              "        return False\n"
              "alive = bool(prev) and live(prev[-2])\n"
              "open(runs, 'a').write(f'{os.getpid()} {int(alive)}\\n')\n"
              "os.chdir('/')\n"
              "time.sleep(0 if prev else 300)\n")
    configure(session={"teardown": [PY, "-c", script], "teardown_timeout": 600})
    dispatch(repo, "td", "-p", "sleep", "--agent", "sleeper", "--mode", "headless", profiles=sleeper(out))
    pids = agent_pids(out)
    leftovers.extend(pids)
    cancel = background("cancel", "td", "--json", cwd=repo)
    try:
        wait_until(lambda: runs.exists() and runs.read_text().strip(), 60, "the teardown to run")
        first = int(runs.read_text().split()[0])
        leftovers.append(first)
        # Running while the teardown runs (F23: it may need to talk to the agent's servers);
        # frozen for the save and removal only after it.
        assert all(state(p) not in ("T", None) for p in pids)
        kill_sidecars(runtime_dir)
        cancel.wait(60)
        assert pid_alive(first)
        run_para("sidecar", "start", cwd=tmp_path)  # not in the repository
        wait_until(lambda: len(runs.read_text().split()) == 4, 60, "the repair to run the teardown again")
        assert runs.read_text().split()[3] == "0", "the teardown ran again while the first still ran"
        assert not pid_alive(first)
        wait_until(lambda: all(state(p) is None for p in pids), 60, "the agent of the cancelled session to end")
        assert listed(repo)["td"]["status"] == "cancelled"
        assert len(runs.read_text().split()) == 4  # twice in all: not a third time
    finally:
        if cancel.poll() is None:
            cancel.kill()


# ---- hooks after a crash ------------------------------------------------------------------------

def test_a_crash_during_setup_stops_the_setup_wherever_it_went_and_keeps_edits(
        repo: Path, tmp_path: Path, runtime_dir: Path, leftovers: list[int]) -> None:
    """F16: a setup that left its worktree (`cd /`) outlived the repair (it looked for the group
    by cwd). F21: what someone wrote in the worktree while the setup ran was deleted with it."""
    pidfile = tmp_path / "setup.pid"
    configure(session={"setup": ["sh", "-c", f"cd /; echo $$ > {pidfile}; exec sleep 331"], "setup_timeout": 600})
    start = background("start", "ed", "--json", cwd=repo)
    try:
        setup = pid_in(pidfile)
        leftovers.append(setup)
        wt = repo / ".para" / "worktrees" / "ed"
        (wt / "NOTES.md").write_text("my notes\n")
        (wt / "a.txt").write_text("edited\n")
        kill_sidecars(runtime_dir)
        start.wait(60)
        assert pid_alive(setup)
        assert listed(repo) == {}  # the start is undone
        wait_until(lambda: not pid_alive(setup), 30, "the repair to stop the setup")
        refs = git("for-each-ref", "--format=%(refname)", "refs/para/backup/ed/", cwd=repo).split()
        assert len(refs) == 1 and refs[0].endswith("-start"), refs
        assert git("show", f"{refs[0]}:NOTES.md", cwd=repo) == "my notes"
        assert git("show", f"{refs[0]}:a.txt", cwd=repo) == "edited"
        assert not wt.exists()
    finally:
        if start.poll() is None:
            start.kill()


def test_a_teardown_that_never_exits_is_bounded_on_cancel_and_on_the_repair(
        repo: Path, tmp_path: Path, runtime_dir: Path, leftovers: list[int]) -> None:
    """F2b: an endless teardown (a progress bar, `\\r` and no newline) wedged cancel, and after a
    crash the repair ran it again at every command in that repository."""
    pids = tmp_path / "teardown.pids"
    script = (f"import os, sys\nopen({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
              "i = 0\nwhile True:\n    i += 1\n    sys.stdout.write(f'stopping {i % 100}%\\r')\n")
    configure(session={"teardown": [PY, "-c", script], "teardown_timeout": 3})
    run_para("start", "t1", cwd=repo)
    run_para("start", "t2", cwd=repo)
    r = json.loads(run_para("cancel", "t1", "--json", cwd=repo).stdout)
    assert any("timed out after 3 seconds" in w for w in r["warnings"]), r["warnings"]
    first = int(pids.read_text().split()[0])
    assert not pid_alive(first)
    configure(session={"teardown_timeout": 600})
    cancel = background("cancel", "t2", "--json", cwd=repo)
    try:
        wait_until(lambda: len(pids.read_text().split()) == 2, 60, "the second teardown to run")
        second = int(pids.read_text().split()[1])
        leftovers.append(second)
        kill_sidecars(runtime_dir)
        cancel.wait(60)
        assert pid_alive(second)
        configure(session={"teardown_timeout": 3})
        assert listed(repo)["t2"]["status"] == "cancelled"  # repaired, the teardown bounded
        assert not pid_alive(second)
        third = [int(x) for x in pids.read_text().split()][2:]
        assert len(third) == 1 and not pid_alive(third[0])
        assert listed(repo)["t2"]["status"] == "cancelled"  # and not run again
        assert len(pids.read_text().split()) == 3
    finally:
        if cancel.poll() is None:
            cancel.kill()


# ---- stopping a setup ---------------------------------------------------------------------------

def test_cancel_of_a_starting_session_stops_its_setup_and_rolls_the_start_back(
        repo: Path, tmp_path: Path, leftovers: list[int]) -> None:
    """F12: `para cancel` of a session still in its setup waited silently for the whole
    setup_timeout (the start holds the session lock), then said 'no session named'."""
    pidfile = tmp_path / "setup.pid"
    configure(session={"setup": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"], "setup_timeout": 600})
    before = git("for-each-ref", cwd=repo)
    start = background("start", "forever", "--json", cwd=repo)
    try:
        setup = pid_in(pidfile)
        leftovers.append(setup)
        (repo / ".para" / "worktrees" / "forever" / "draft.txt").write_text("draft\n")
        proc = run_para("cancel", "forever", cwd=repo)
        assert f"stopping session.setup (pid {setup})" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert "rolled back" in proc.stdout + proc.stderr
        assert not pid_alive(setup)
        out, _ = start.communicate(timeout=60)
        err = json.loads(out)["error"]
        assert err["code"] == "setup_failed" and "stopped by `para cancel`" in err["message"], err
        assert listed(repo) == {}
        refs = git("for-each-ref", "--format=%(refname)", "refs/para/backup/forever/", cwd=repo).split()
        assert len(refs) == 1 and git("show", f"{refs[0]}:draft.txt", cwd=repo) == "draft"
        after = git("for-each-ref", cwd=repo)
        assert [x for x in after.splitlines() if "refs/para/backup/" not in x] == before.splitlines()
    finally:
        if start.poll() is None:
            start.kill()


def test_a_start_whose_client_goes_away_stops_its_setup(repo: Path, tmp_path: Path,
                                                        leftovers: list[int]) -> None:
    """F12: Ctrl-C of `para start` left the setup running (the start is shielded from its client)."""
    pidfile = tmp_path / "setup.pid"
    configure(session={"setup": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"], "setup_timeout": 600})
    start = background("start", "gone", cwd=repo)
    setup = pid_in(pidfile)
    leftovers.append(setup)
    start.send_signal(signal.SIGINT)
    start.wait(60)
    wait_until(lambda: not pid_alive(setup), 60, "the abandoned start's setup to be stopped")
    wait_until(lambda: listed(repo) == {}, 60, "the abandoned start to roll back")
    assert not (repo / ".para" / "worktrees" / "gone").exists()


def test_sidecar_stop_during_a_setup_stops_it_and_exits_at_once(repo: Path, tmp_path: Path,
                                                               leftovers: list[int]) -> None:
    """F22: the stopping sidecar waited for the setup (up to setup_timeout), holding its lock:
    every para command failed meanwhile, and the start's client was told nothing useful."""
    pidfile = tmp_path / "setup.pid"
    configure(session={"setup": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"], "setup_timeout": 600})
    start = background("start", "st", "--json", cwd=repo)
    try:
        setup = pid_in(pidfile)
        leftovers.append(setup)
        (repo / ".para" / "worktrees" / "st" / "wip.txt").write_text("wip\n")
        proc = run_para("sidecar", "stop", cwd=repo)
        assert f"stopped session.setup of st (pid {setup})" in proc.stdout, proc.stdout
        assert not pid_alive(setup)
        out, _ = start.communicate(timeout=60)
        err = json.loads(out)["error"]  # the start's client is told what happened
        assert err["code"] == "setup_failed" and "the sidecar is stopping" in err["message"], err
        assert listed(repo) == {}  # a new sidecar answers at once; the start was rolled back
        refs = git("for-each-ref", "--format=%(refname)", "refs/para/backup/st/", cwd=repo).split()
        assert len(refs) == 1 and git("show", f"{refs[0]}:wip.txt", cwd=repo) == "wip"
    finally:
        if start.poll() is None:
            start.kill()


# ---- hooks calling para -----------------------------------------------------------------------

def test_a_hook_may_not_start_sessions_or_cancel_its_own(repo: Path, tmp_path: Path) -> None:
    """F13: a setup running `para start` recursed without bound (51 sessions in 40 s); one
    running `para cancel` of its own session waited for itself until setup_timeout."""
    seen = tmp_path / "seen"
    para = PARA_ARGV[0]
    script = (f"{para} start nested > {seen}.start 2>&1; echo $? >> {seen}; "
              f"{para} dispatch -p x --agent noop --mode headless > {seen}.dispatch 2>&1; echo $? >> {seen}; "
              f"{para} cancel \"$PARA_SESSION\" > {seen}.cancel 2>&1; echo $? >> {seen}; "
              f"{para} finish done > {seen}.finish 2>&1; echo $? >> {seen}; "
              f"{para} list --json > {seen}.list; echo $? >> {seen}")
    configure(session={"setup": ["sh", "-c", script], "setup_timeout": 60})
    run_para("start", "outer", cwd=repo, env={"PARA_AGENTS": json.dumps({"noop": {"command": ["true"]}})})
    codes = [int(x) for x in seen.read_text().split()]
    forbidden = Code.forbidden.exit
    assert codes == [forbidden, forbidden, forbidden, forbidden, 0], (codes, Path(f"{seen}.start").read_text())
    assert "a hook may not start sessions" in Path(f"{seen}.start").read_text()
    assert "may not cancel its own session" in Path(f"{seen}.cancel").read_text()
    assert "may not finish its own session" in Path(f"{seen}.finish").read_text()  # (named by its cwd)
    assert set(listed(repo)) == {"outer"}


def _mcp_start(repo: Path, name: str) -> subprocess.Popen[str]:
    """`para mcp` as an MCP client runs it, asked (raw lines) to para_start `name`."""
    proc = subprocess.Popen([*PARA_ARGV, "mcp"], cwd=repo, env=cli_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    for msg in ({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                 "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                            "clientInfo": {"name": "test", "version": "1"}}},
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                 "params": {"name": "para_start", "arguments": {"session": name}}}):
        proc.stdin.write(json.dumps(msg) + "\n")
    proc.stdin.flush()
    return proc


def test_a_start_whose_mcp_client_goes_away_stops_its_setup(repo: Path, tmp_path: Path,
                                                            leftovers: list[int]) -> None:
    """As on a JSON-RPC connection: the MCP client (here the `para mcp` it ran) is gone while
    para_start runs its setup: the setup is stopped and the start rolls back."""
    pidfile = tmp_path / "setup.pid"
    configure(session={"setup": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"], "setup_timeout": 600})
    client = _mcp_start(repo, "mcpgone")
    try:
        setup = pid_in(pidfile)
        leftovers.append(setup)
        client.kill()
        client.wait(60)
        wait_until(lambda: not pid_alive(setup), 60, "the abandoned start's setup to be stopped")
        wait_until(lambda: listed(repo) == {}, 60, "the abandoned start to roll back")
        assert not (repo / ".para" / "worktrees" / "mcpgone").exists()
    finally:
        if client.poll() is None:
            client.kill()


def test_an_mcp_client_that_closed_its_input_is_told_and_its_start_rolls_back(repo: Path, tmp_path: Path,
                                                                              leftovers: list[int]) -> None:
    """A client that ends its input (a pipe) while para_start runs its setup is answered
    "Connection closed" by the SDK: a start going on alone would be one it was told had failed,
    so it stops and rolls back, like a JSON-RPC client's."""
    pidfile = tmp_path / "setup.pid"
    configure(session={"setup": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000"], "setup_timeout": 600})
    client = _mcp_start(repo, "piped")
    try:
        setup = pid_in(pidfile)
        leftovers.append(setup)
        assert client.stdin is not None
        client.stdin.close()
        client.stdin = None  # (closed: communicate must not flush it)
        out, err = client.communicate(timeout=120)
        answers = {m.get("id"): m for m in map(json.loads, out.splitlines())}
        assert "error" in answers[2] or answers[2]["result"].get("isError"), (answers, err)
        wait_until(lambda: not pid_alive(setup), 60, "the abandoned start's setup to be stopped")
        wait_until(lambda: listed(repo) == {}, 60, "the abandoned start to roll back")
    finally:
        if client.poll() is None:
            client.kill()
