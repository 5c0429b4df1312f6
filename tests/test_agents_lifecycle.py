"""Agents over their lifetime: crashes, runners that vanish, sidecar restarts while
agents run, `para status` reports and evidence, `para logs`, `para attach`,
`para monitor`, and `para demo`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from agents_util import (LineReader, agent_env, agent_scripts, api, kill_tree, out, popen_para,  # noqa: F401
                         step_profile, wait_file)
from conftest import (PARA_ARGV, git, pid_alive, proc_environ, shutdown_sidecar, start_sidecar, stop_pid,
                      wait_until)


def wt(repo: Path, name: str) -> Path:
    return repo / ".para" / "worktrees" / name


def exit_record(repo: Path, name: str) -> dict:
    files = list((repo / ".para" / "runs").glob(f"{name}.*.exit"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


# ---- agents that end badly ----------------------------------------------------------------

@pytest.mark.parametrize("how, code, sig", [("exit:3", 3, None), ("kill:9", 137, 9)], ids=["exit-3", "sigkill"])
def test_a_crashing_agent_is_recorded_as_failed_and_its_work_is_kept(how, code, sig, api, repo, para):
    prof = step_profile("write:done.txt=committed half\n", "commit:first half", "write:wip.txt=unsaved half\n",
                        "status:halfway there", how)
    api.dispatch("crash", "do the whole thing", "w", profiles={"w": prof})
    ev = api.wait_agent("crash")
    assert ev["agent"]["state"] == "failed" and ev["agent"]["exit_code"] == code
    assert ev["agent"]["ended_at"] is not None
    exited = api.wait_event("agent_exited", "crash")["data"]
    assert (exited["exit_code"], exited["lost"], exited["status"]) == (code, False, "active")
    rec = exit_record(repo, "crash")
    assert (rec["exit_code"], rec["signal"]) == (code, sig)

    # The session stays active with everything the agent did.
    assert ev["status"] == "active" and ev["ahead"] == 1 and "1 file changed" in ev["diffstat"]
    assert ev["report"]["task"] == "halfway there"
    path = wt(repo, "crash")
    assert (path / "wip.txt").read_text() == "unsaved half\n"
    assert git("log", "-1", "--format=%s", "para/crash", cwd=repo) == "first half"
    assert api.sessions()["crash"]["state"] == "dirty"
    shown = para("status", "show", "crash").stdout
    assert "failed" in shown and "halfway there" in shown

    # A human can still land it, uncommitted half included.
    para("integrate", "Rescue the crashed work", "--session", "crash")
    assert git("show", "main:done.txt", cwd=repo) == "committed half"
    assert git("show", "main:wip.txt", cwd=repo) == "unsaved half"


def test_an_agent_that_cannot_start_is_recorded_with_status_127(api, repo, tmp_path, para):
    """It is on PATH and executable, but its interpreter does not exist: exec fails."""
    broken = tmp_path / "broken-agent"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    api.dispatch("nostart", "try", "broken", profiles={"broken": {"command": [str(broken), "{prompt}"]}})
    ev = api.wait_agent("nostart")
    assert (ev["agent"]["state"], ev["agent"]["exit_code"]) == ("failed", 127)
    assert f"para: cannot start {broken}" in para("logs", "nostart").stdout


def test_an_agent_whose_runner_vanishes_is_reported_lost(api, repo, out):
    prof = step_profile(f"touch:{out}/ready", f"wait:{out}/gate")
    api.dispatch("gone", "wait", "w", profiles={"w": prof})
    wait_file(out / "ready")
    pid = api.evidence("gone")["agent"]["pid"]
    kill_tree(pid)  # the runner and its agent, without a word: no exit file
    ev = api.wait_agent("gone", timeout=30)
    assert ev["agent"]["state"] == "lost" and ev["agent"]["exit_code"] is None
    assert api.wait_event("agent_exited", "gone")["data"]["lost"] is True
    assert ev["status"] == "active" and wt(repo, "gone").is_dir()


# ---- the sidecar restarts while agents run -------------------------------------------------------

PLAN_1 = """Step one.

```file:first.txt
first
```

```agent
run touch {out}/first.ready
wait-for {out}/gate
```

When done: para integrate "First step"
"""
PLAN_2 = """Step two.

```file:second.txt
second
```

When done: para integrate "Second step"
"""


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_agents_survive_a_sidecar_restart_and_are_readopted(how, sidecar, api, repo, out, runtime_dir):
    """Agents keep running while the sidecar is stopped (or killed); the next sidecar
    learns the exit of one that ended meanwhile from its exit file, sees the others
    running, their integrations land through it, and a plan moves on."""
    profiles = {
        "land": step_profile("status:started", f"touch:{out}/{{session}}.ready", f"wait:{out}/gate",
                             "write:{session}.txt={session}\n", "integrate:Land {session}"),
        "quit": step_profile("status:started", f"touch:{out}/{{session}}.ready", f"wait:{out}/down",
                             "write:partial.txt=partial\n", "exit:5"),
    }
    for name, prof in (("a", "land"), ("b", "land"), ("c", "quit")):
        api.dispatch(name, f"task {name}", prof, profiles=profiles)
    (repo / "tasks").mkdir()
    (repo / "tasks" / "TASK_1_first.md").write_text(PLAN_1.format(out=out))
    (repo / "tasks" / "TASK_2_second.md").write_text(PLAN_2)
    api.call("para/dispatch", file="tasks", agent="scripted", mode="headless")
    for marker in ("a.ready", "b.ready", "c.ready", "first.ready"):
        wait_file(out / marker)
    pids = {n: api.evidence(n)["agent"]["pid"] for n in ("a", "b", "c", "first")}

    os.kill(sidecar.pid, how)
    sidecar.proc.wait(timeout=30)
    assert all(pid_alive(p) for p in pids.values()), "an agent died with the sidecar"
    (out / "down").touch()  # c ends while no sidecar runs
    wait_until(lambda: list((repo / ".para" / "runs").glob("c.*.exit")), 30, "c's exit file")

    new = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        c = api.wait_agent("c", timeout=30)
        assert c["agent"]["state"] == "failed" and c["agent"]["exit_code"] == 5
        assert (wt(repo, "c") / "partial.txt").read_text() == "partial\n"
        for n in ("a", "b", "first"):
            agent = api.evidence(n)["agent"]
            assert agent["state"] == "running" and agent["pid"] == pids[n], n
        assert api.plans()[0]["state"] == "running"

        (out / "gate").touch()
        for n in ("a", "b", "first", "second"):
            api.wait_event("integrated", n)
        assert api.wait_plan("done")["steps"][1]["tasks"][0]["state"] == "integrated"
        for n in ("a", "b", "first"):
            assert api.wait_event("agent_exited", n)["data"]["exit_code"] == 0, n
        tree = git("ls-tree", "--name-only", "main", cwd=repo).split()
        assert {"a.txt", "b.txt", "first.txt", "second.txt"} <= set(tree)
        assert "partial.txt" not in tree
    finally:
        shutdown_sidecar(new, wait=False)


# ---- status reports ---------------------------------------------------------------------------------

def test_status_reports_are_validated_and_shown_with_evidence(api, repo, out, para, para_json):
    prof = step_profile("status:warming up", f"touch:{out}/ready", f"wait:{out}/gate")
    api.dispatch("rep", "report often", "w", profiles={"w": prof})
    wait_file(out / "ready")
    path = wt(repo, "rep")
    para("status", "writing tests", "--tests", "passed", "--todos", "2/5", "--blocked", "need an API key", cwd=path)

    shown = para_json("status", "show", "rep")["sessions"]
    assert [s["name"] for s in shown] == ["rep"]
    s = shown[0]
    report = {k: v for k, v in s["report"].items() if k != "updated_at"}
    assert report == {"task": "writing tests", "tests": "passed", "todos_done": 2, "todos_total": 5,
                      "blocked": "need an API key"}
    agent = s["agent"]
    assert (agent["profile"], agent["mode"], agent["state"], agent["exit_code"]) == ("w", "headless", "running", None)
    assert agent["log"] == str(repo / ".para" / "logs" / "rep.log")
    assert (s["status"], s["task"], s["ahead"], s["diffstat"], s["stale"]) == ("active", "report often", 0, "", False)
    assert s["last_activity"] >= s["report"]["updated_at"]
    # Inside the worktree, `show` without a name is this session; from the root, every session.
    assert [x["name"] for x in para_json("status", "show", cwd=path)["sessions"]] == ["rep"]
    human = para("status", "show").stdout
    for words in ("rep", "running", "tests passed", "todos 2/5", "BLOCKED: need an API key"):
        assert words in human

    refused = [(["x", "--todos", "4/3"], "DONE <= TOTAL"), (["x", "--todos", "three"], "--todos"),
               (["x", "--tests", "maybe"], "tests"), (["   "], "is empty"), (["y" * 501], "at most 500"),
               (["ok\x1b]0;pwned\x07"], "control characters"), (["x", "--blocked", "a\rb"], "control characters")]
    for args, words in refused:
        res = para("status", *args, "--json", cwd=path, check=False)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert words in json.loads(res.stdout)["error"]["message"], args
    outside = para("status", "from the root", cwd=repo, check=False)
    assert outside.returncode == 2 and "not inside a session worktree" in outside.stderr
    assert api.evidence("rep")["report"] == s["report"]

    # From outside with --session; tests and todos carry over, blocked is cleared.
    para("status", "unblocked now", "--session", "rep")
    report = api.evidence("rep")["report"]
    assert (report["task"], report["tests"], report["todos_done"], report["todos_total"], report["blocked"]) == \
        ("unblocked now", "passed", 2, 5, None)

    (out / "gate").touch()
    ev = api.wait_agent("rep")
    assert (ev["agent"]["state"], ev["agent"]["exit_code"], ev["status"]) == ("exited", 0, "active")


# ---- logs and attach --------------------------------------------------------------------------------

def test_logs_print_and_follow_the_headless_output(api, repo, out, para):
    prof = step_profile("print:first line", "eprint:an error line", f"wait:{out}/gate", "print:second line")
    api.dispatch("lg", "talk", "w", profiles={"w": prof})
    follow = popen_para("logs", "lg", "-f", cwd=repo)
    try:
        reader = LineReader(follow.stdout)
        reader.wait_for("first line\nan error line\n")
        (out / "gate").touch()
        reader.wait_for("second line\n")
        assert follow.poll() is None  # -f keeps following
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    api.wait_agent("lg")
    expected = "first line\nan error line\nsecond line\n"
    assert para("logs", "lg").stdout == expected
    assert para("logs", cwd=wt(repo, "lg")).stdout == expected
    assert para("logs", "nosuch", check=False).returncode == 3
    attach = para("attach", "lg", check=False)
    assert attach.returncode == 3 and "does not run in tmux" in attach.stderr


def test_logs_remain_readable_after_the_agent_integrated(api, repo, para):
    prof = step_profile("print:landing now", "write:x.txt=x\n", "integrate:Land x")
    api.dispatch("li", "land", "w", profiles={"w": prof})
    api.wait_event("integrated", "li")
    api.wait_event("agent_exited", "li")
    assert (repo / ".para" / "logs" / "li.log").read_text().startswith("landing now\n")
    res = para("logs", "li", check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("landing now\n")


# ---- git in agents' worktrees ------------------------------------------------------------------------

def test_polling_para_list_never_breaks_an_agents_own_git(api, repo):
    """`para list` (and the monitor's conflict forecast) look at every active worktree
    while agents work there; that must never make the agent's own `git add` or
    `git commit` fail (index.lock)."""
    prof = step_profile("commits:150", "integrate:Churn")
    api.dispatch("churn", "commit a lot", "w", profiles={"w": prof})
    polls = 0

    def ended() -> bool:
        nonlocal polls
        api.call("para/list", all=True)
        polls += 1
        return any(e["kind"] == "agent_exited" and e["session"] == "churn" for e in api.events())
    wait_until(ended, 90, "the churning agent to end", interval=0)
    log = (repo / ".para" / "logs" / "churn.log").read_text()
    exited = api.wait_event("agent_exited", "churn")["data"]
    assert exited["exit_code"] == 0, f"the agent's git failed while para/list polled ({polls} polls):\n{log}"
    assert exited["status"] == "integrated"


# ---- monitor -------------------------------------------------------------------------------------------

def test_monitor_once_renders_sessions_agents_and_reports(api, repo, out, para):
    profiles = {"crash": step_profile("status:halfway", "exit:3"),
                "busy": step_profile("status:busy bee", f"touch:{out}/ready", f"wait:{out}/gate")}
    api.dispatch("crashy", "fail", "crash", profiles=profiles)
    api.dispatch("busy", "work", "busy", profiles=profiles)
    api.wait_agent("crashy")
    wait_file(out / "ready")
    wait_until(lambda: (api.evidence("busy")["report"] or {}).get("task") == "busy bee", 30, "busy's report")
    text = para("monitor", "--once").stdout
    assert f"para · {repo}" in text
    for words in ("crashy", "failed (3)", "halfway", "busy", "running", "busy bee", "1/2"):
        assert words in text, words
    (out / "gate").touch()


def test_monitor_until_done_exits_when_the_agents_are_done(api, repo, out):
    prof = step_profile(f"touch:{out}/ready", f"wait:{out}/gate", "write:m.txt=m\n", "integrate:Monitored")
    api.dispatch("mon", "be watched", "w", profiles={"w": prof})
    wait_file(out / "ready")
    proc = popen_para("monitor", "--until-done", cwd=repo)
    try:
        reader = LineReader(proc.stdout)
        reader.wait_for("running")
        assert proc.poll() is None, "the monitor stopped while an agent was running"
        (out / "gate").touch()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert api.wait_event("integrated", "mon")


# ---- the demo -------------------------------------------------------------------------------------------

def demo_sidecars(tmp: Path) -> list[int]:
    """Live sidecars whose runtime directory lies under `tmp` (the demo's)."""
    return [pid for pid in (int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit())
            if pid_alive(pid) and "para_rpc.server.sidecar" in _cmdline(pid)
            and proc_environ(pid).get("PARA_RUNTIME_DIR", "").startswith(str(tmp))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def printed_after(stdout: str, command: str) -> list[str]:
    """The lines the demo printed after `$ command`, up to its next `$ ` or `== ` line."""
    lines = stdout.splitlines()
    start = lines.index(f"$ {command}") + 1
    out = []
    for line in lines[start:]:
        if line.startswith(("$ ", "== ")):
            break
        out.append(line)
    return out


def test_demo_runs_to_the_end():
    """`para demo` runs its plan to the end: main's history, as git prints it, is one commit per
    task in plan order (step 1, the two step-2 tasks, step 3) on the initial commit, the demo
    repository's checkout is clean, and the sidecar the demo started has stopped (a sidecar
    left running fails the test; it is stopped only afterwards, for the tests that follow)."""
    tmp = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))  # short: the demo's socket lives under it
    try:
        proc = subprocess.run([*PARA_ARGV, "demo"], env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=150)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "plan_done" in proc.stdout and "Traceback" not in proc.stderr
        history = printed_after(proc.stdout, "git log --graph --oneline main")
        subjects = [line.split(" ", 2)[2] for line in history]
        assert all(line.startswith("* ") for line in history), history  # linear: no merge commits
        assert subjects[0] == "Document usage" and sorted(subjects[1:3]) == ["Add multiplication", "Add subtraction"]
        assert subjects[3:] == ["Document the calc API", "A tiny calculator and its plan"], history
        assert printed_after(proc.stdout, "git status --short --branch") == ["## main"]
        # The demo stops its sidecar; one still exiting gets the time to finish, one left running fails.
        wait_until(lambda: not demo_sidecars(tmp), timeout=30, what="the demo's sidecar to exit (never left running)")
    finally:
        for pid in demo_sidecars(tmp):
            stop_pid(pid)
        shutil.rmtree(tmp, ignore_errors=True)