"""Agents dispatched to an SSH executor (issue 16, point 2), through the real CLI and sidecar,
a real OpenSSH server on loopback (tests/ssh_util.py: the "host" is this machine, as this user,
with the same python and para) and the scripted agent.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
import time
from pathlib import Path

import pytest

from agents_util import PROBE, agent_env, agent_scripts, api, dispatch, out, step_profile, wait_file  # noqa: F401
from conftest import (IDENTITY, commit_file, full_state, git, proc_environ, rev, run_para, shutdown_sidecar, start_sidecar,
                      wait_until)
from test_agents_dispatch import tricky_prompt
from para_rpc.errors import Code
from para_rpc.executors.ssh import repo_id
from ssh_util import SshHost, ssh_host  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("sidecar")


def configure(**settings: object) -> None:
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps(settings))


def para_json(repo: Path, *args: str) -> tuple[int, dict]:
    proc = run_para(*args, "--json", cwd=repo, check=False)
    return proc.returncode, json.loads(proc.stdout)


UNREACHABLE = {"kind": "ssh", "host": "127.0.0.1", "port": 9, "known_hosts": "/nonexistent/known_hosts"}


# ---- choosing the executor: bad choices change nothing ---------------------------------------

def test_an_unknown_executor_is_refused_and_nothing_is_made(repo: Path) -> None:
    configure(executors={"h1": UNREACHABLE})
    before = full_state(repo)
    rc, out = para_json(repo, "dispatch", "--agent", "scripted", "--executor", "nope", "-p", "do it")
    assert rc == Code.not_found.exit and "nope" in out["error"]["message"] and "h1" in out["error"]["message"], out
    assert full_state(repo) == before
    # The default comes from agent.executor, checked the same way.
    configure(executors={"h1": UNREACHABLE}, **{"agent.executor": "gone"})
    rc, out = para_json(repo, "dispatch", "--agent", "scripted", "-p", "do it")
    assert rc == Code.not_found.exit and "gone" in out["error"]["message"], out
    assert full_state(repo) == before


def test_remote_agents_run_headless_and_unsandboxed_or_nothing_is_made(repo: Path) -> None:
    configure(executors={"h1": UNREACHABLE})
    before = full_state(repo)
    rc, out = para_json(repo, "dispatch", "--agent", "scripted", "--executor", "h1", "--mode", "tmux", "-p", "x")
    assert rc == Code.invalid_input.exit and "headless" in out["error"]["message"], out
    rc, out = para_json(repo, "dispatch", "--agent", "scripted", "--executor", "h1", "--sandbox", "-p", "x")
    assert rc in (Code.invalid_input.exit, Code.config_error.exit), out  # (no bwrap here: config_error first)
    assert full_state(repo) == before


def test_an_executor_from_an_untrusted_project_file_is_refused(repo: Path) -> None:
    Path(os.environ["PARA_CONFIG"]).unlink(missing_ok=True)
    commit_file(repo, ".para/config.json", json.dumps({"executors": {"h1": UNREACHABLE},
                                                       "agent.executor": "h1"}), "project executors")
    before = full_state(repo)
    for args in (["--executor", "h1"], []):
        rc, out = para_json(repo, "dispatch", "--agent", "scripted", *args, "-p", "do it")
        assert rc == Code.untrusted.exit, out
        assert full_state(repo) == before


# ---- an agent on the host, through the queue ----------------------------------------------

def worker_paths(host: SshHost) -> tuple[Path, Path]:
    """(worktrees, run dirs) under the executor's root on the host."""
    root = host.dir / "worker"
    return root / "wt", root / "run"


def sessions_on(host: SshHost) -> list[Path]:
    wts, _ = worker_paths(host)
    return sorted(p for p in wts.glob("*/*")) if wts.is_dir() else []


def test_remote_dispatch_lands_on_local_main_through_the_queue(api, repo: Path, out: Path,
                                                                ssh_host: SshHost) -> None:
    """T1: the agent runs in a worktree on the host (not the session's local one), its `para
    status` and `para integrate` reach this sidecar through the forwarded socket, its commit
    comes home and lands on local main through the queue, and the host's worktree goes."""
    configure(executors={"h1": ssh_host.entry()})
    prof = step_profile(f"env:{out}/env.json", "status:writing hello", f"touch:{out}/ready", f"wait:{out}/go",
                        "write:hello.txt=hello\n", "print:agent says hi", "integrate:Add hello")
    base = rev(repo, "main")
    r, _ = dispatch(repo, "hello", "-p", "Add a hello file", "--agent", "w", "--executor", "h1",
                    profiles={"w": prof})
    assert r["name"] == "hello" and r["status"] == "active"
    wait_file(out / "ready")
    api.wait_event("harvested", "hello")  # (its status report's: the file is written after it)
    (out / "go").touch()
    api.wait_event("integrated", "hello", timeout=90)
    seen = json.loads((out / "env.json").read_text())
    local_wt = repo / ".para" / "worktrees" / "hello"
    remote_wt = Path(seen["cwd"])
    assert remote_wt != local_wt and remote_wt.is_relative_to(ssh_host.dir / "worker" / "wt"), seen["cwd"]
    assert seen["env"]["PARA_WORKTREE"] == str(remote_wt) and seen["env"]["PARA_SESSION"] == "hello"
    assert Path(seen["env"]["PARA_SOCKET"]).is_relative_to(ssh_host.dir / "worker" / "sock")
    assert seen["env"]["HOME"] == pwd.getpwuid(os.getuid()).pw_dir  # (the host login's, as its worker says)
    assert "para status" in seen["instruction_file"]  # (para's instructions, there too; never committed)
    status = api.wait_event("status", "hello")
    assert status["data"]["task"] == "writing hello"
    assert git("show", "main:hello.txt", cwd=repo) == "hello"
    assert git("log", "-1", "--format=%s", "main", cwd=repo) == "Add hello"
    assert git("rev-parse", "main~1", cwd=repo) == base
    assert ".para-agent.md" not in git("ls-tree", "--name-only", "main", cwd=repo).split()
    show = api.call("para/show", session="hello")
    assert show["status"] == "integrated" and show["agent"]["executor"] == "h1"
    # The host's worktree, branch and run dir go once the agent has exited.
    _, runs = worker_paths(ssh_host)
    wait_until(lambda: not sessions_on(ssh_host) and not list(runs.glob("*/hello")), 60,
               "the host's worktree and run dir to be removed")
    log = (repo / ".para" / "logs" / "hello.log").read_text()
    assert "agent says hi" in log


def test_a_hostile_prompt_and_argv_arrive_byte_identical_on_the_host_with_no_shell(
        api, repo: Path, out: Path, tmp_path: Path, ssh_host: SshHost) -> None:
    """T4: SSH runs a command line through the remote shell; para's is constant and everything
    else goes as JSON on its stdin, so quotes, `$(...)`, `;`, newlines and unicode in the
    prompt and in the profile's arguments reach the agent unchanged and nothing runs."""
    configure(executors={"h1": ssh_host.entry()})
    canary = tmp_path / "pwned"
    prompt = tricky_prompt(canary, 8 * 1024).rstrip("\n")
    extra = [f"a b; touch {canary}3", f"$(touch {canary}4)", f"'\"`touch {canary}5`\n\t é ✓", "-x --y"]
    prof = {"command": [PROBE, str(out), "{prompt_file}", "{prompt}", *extra]}
    dispatch(repo, "tricky", "-p", prompt, "--agent", "probe", "--executor", "h1", profiles={"probe": prof},
             env={"PARA_AGENT_WORKFLOW": "none"})
    d = wait_file(out / "tricky" / "done", timeout=60).parent
    info = json.loads((d / "info.json").read_text())
    assert Path(info["cwd"]).is_relative_to(ssh_host.dir / "worker" / "wt")  # (it ran on the host)
    expected = (prompt + "\n").encode()
    assert (d / "prompt_file.bin").read_bytes() == expected
    assert (d / "arg0.bin").read_bytes() == expected
    assert [(d / f"arg{i}.bin").read_bytes() for i in range(1, 1 + len(extra))] == [os.fsencode(a) for a in extra]
    assert info["argc"] == 3 + len(extra)
    assert api.wait_agent("tricky")["agent"]["exit_code"] == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("pwned")]
    assert not list(Path.home().glob("pwned*"))


def agent_processes(worktree: Path) -> list[int]:
    """Processes of this user working for the session on the host (their PARA_WORKTREE)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if proc_environ(int(entry.name)).get("PARA_WORKTREE") == str(worktree):
                    found.append(int(entry.name))
            except (OSError, AssertionError):
                continue
    return found


def test_cancel_stops_the_agent_on_the_host_and_archives_its_harvested_work(
        api, repo: Path, out: Path, ssh_host: SshHost) -> None:
    """T6: the host's agent is stopped explicitly (a dropped connection would not), its two
    commits and its uncommitted file come home, and the cancel archives them all; nothing
    of the session runs or stays on the host."""
    # (its git identity travels like any variable: by name, from the sidecar's environment)
    configure(executors={"h1": ssh_host.entry(env_passthrough=list(IDENTITY))})
    prof = step_profile(f"env:{out}/env.json", "write:a.txt=one\n", "commit:first", "write:b.txt=two\n",
                        "commit:second", "write:dirty.txt=wip\n", f"touch:{out}/ready", f"wait:{out}/never")
    dispatch(repo, "work", "-p", "work then hang", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    assert agent_processes(remote_wt)
    r = json.loads(run_para("cancel", "work", "--json", cwd=repo).stdout)
    archive = r["archived_branch"]
    assert archive
    assert not agent_processes(remote_wt)  # stopped before the cancel answered
    assert git("log", "--format=%s", f"{archive}~1", "-2", cwd=repo).splitlines() == ["second", "first"]
    assert git("show", f"{archive}:dirty.txt", cwd=repo) == "wip"
    assert git("show", f"{archive}:a.txt", cwd=repo) == "one" and git("show", f"{archive}:b.txt", cwd=repo) == "two"
    _, runs = worker_paths(ssh_host)
    wait_until(lambda: not remote_wt.exists() and not list(runs.glob("*/work")), 60,
               "the host's worktree and run dir to be removed")


def test_a_passed_through_secret_reaches_the_agent_and_no_argv_or_file(
        api, repo: Path, out: Path, ssh_host: SshHost, sidecar, runtime_dir: Path) -> None:
    """T8: of the sidecar's environment only the `env_passthrough` names travel, on the
    worker's stdin: the secret is in the agent's environment on the host, in no process's
    argv there and in no file under the executor's root (nor under the repository's .para)."""
    secret = "s3cr3t-" + os.urandom(12).hex()
    shutdown_sidecar(sidecar)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0",
                       env={**os.environ, "PARA_TEST_SECRET": secret, "PARA_TEST_OTHER": "not-allowed"})
    try:
        configure(executors={"h1": ssh_host.entry(env_passthrough=["PARA_TEST_SECRET", "PARA_TEST_ABSENT"])})
        prof = step_profile(f"env:{out}/env.json", f"touch:{out}/ready", f"wait:{out}/go")
        dispatch(repo, "sec", "-p", "hold a secret", "--agent", "w", "--executor", "h1", profiles={"w": prof})
        wait_file(out / "ready", timeout=60)
        seen = json.loads((out / "env.json").read_text())
        assert seen["env"]["PARA_TEST_SECRET"] == secret
        assert "PARA_TEST_OTHER" not in seen["env"] and "PARA_TEST_ABSENT" not in seen["env"]
        # Nothing else of this machine's environment either: para's variables, PATH, HOME.
        assert set(seen["env"]) - {"PARA_TEST_SECRET"} <= {
            "PARA_SESSION", "PARA_WORKTREE", "PARA_SOCKET", "PARA_TOKEN", "PATH", "HOME", "PARA_AGENT_RUN", "PWD",
            "LC_CTYPE", "SHLVL", "_"}, sorted(seen["env"])
        pids = agent_processes(Path(seen["cwd"]))
        assert pids
        for pid in pids:
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        for top in (ssh_host.dir / "worker", repo / ".para"):
            for f in top.rglob("*"):
                if f.is_file() and not f.is_symlink():
                    assert secret.encode() not in f.read_bytes(), f
        (out / "go").touch()
        api.wait_agent("sec", timeout=60)
    finally:
        shutdown_sidecar(sc)


def test_a_conflict_goes_to_the_hosts_worktree_and_continue_lands_it(api, repo: Path, out: Path,
                                                                       ssh_host: SshHost) -> None:
    """T2: the target moved under the session; integrating it merges the target into the
    worktree on the host, where its agent is, and pauses there; `para continue` refuses while
    markers remain, then, resolved there, commits the merge on the host, brings it home and lands."""
    configure(executors={"h1": ssh_host.entry(env_passthrough=list(IDENTITY))})
    prof = step_profile(f"env:{out}/env.json", "write:f.txt=agent\n", f"touch:{out}/ready", f"wait:{out}/go",
                        "integrate:Agent change")
    dispatch(repo, "c1", "-p", "change f", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    commit_file(repo, "f.txt", "main\n", "main change")
    target = rev(repo, "main")
    (out / "go").touch()
    conflicted = api.wait_event("conflicted", "c1", timeout=90)
    assert conflicted["data"]["files"] == ["f.txt"]
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    text = (remote_wt / "f.txt").read_text()
    assert "<<<<<<<" in text and "agent" in text and "main" in text, text
    api.wait_agent("c1", timeout=60)  # (its integrate failed: it exited)
    rc, refused = para_json(repo, "continue", "c1")
    assert rc == Code.conflict.exit and "markers" in refused["error"]["message"], refused
    assert rev(repo, "main") == target
    (remote_wt / "f.txt").write_text("agent\nmain\n")  # resolved where the agent is
    rc, done = para_json(repo, "continue", "c1")
    assert rc == 0, done
    assert done["status"] == "integrated"
    assert git("show", "main:f.txt", cwd=repo) == "agent\nmain"
    assert git("merge-base", "--is-ancestor", target, "main", cwd=repo) == ""
    _, runs = worker_paths(ssh_host)
    wait_until(lambda: not remote_wt.exists() and not list(runs.glob("*/c1")), 60,
               "the host's worktree and run dir to be removed")


def test_harvest_brings_commits_and_uncommitted_work_home_and_never_rewinds(api, repo: Path, out: Path,
                                                                            ssh_host: SshHost) -> None:
    """A status report harvests: the host's commit moves the local branch (fast-forward), its
    uncommitted file shows as uncommitted in the local worktree (a mirror), and `para status`
    says where the agent runs and when it was harvested. A local branch that is not an ancestor
    of the host's tip is never moved back: the harvest leaves it and says so."""
    configure(executors={"h1": ssh_host.entry(env_passthrough=list(IDENTITY))})
    prof = step_profile(f"env:{out}/env.json", "write:a.txt=one\n", "commit:first", "write:d.txt=wip\n",
                        "status:halfway", f"touch:{out}/ready", f"wait:{out}/go", "write:e.txt=x\n", "commit:second",
                        "status:more", f"touch:{out}/ready2", f"wait:{out}/never")
    dispatch(repo, "h2", "-p", "work", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    head = git("rev-parse", "HEAD", cwd=remote_wt)
    wait_until(lambda: rev(repo, "para/h2") == head, 60, "the host's commit to come home")
    harvested = api.wait_event("harvested", "h2", commit=head)
    assert harvested["data"]["checkpoint"] and rev(repo, "refs/para/checkpoint/h2") == harvested["data"]["checkpoint"]
    assert rev(repo, "refs/para/remote/h2") == head
    # (the agent's `git add -A` left para's instructions out, as in a local worktree)
    assert ".para-agent.md" not in git("ls-tree", "-r", "--name-only", "para/h2", cwd=repo).split()
    local_wt = repo / ".para" / "worktrees" / "h2"
    wait_until(lambda: (local_wt / "d.txt").exists(), 30, "the local worktree to mirror the host's")
    assert (local_wt / "a.txt").read_text() == "one\n" and (local_wt / "d.txt").read_text() == "wip\n"
    assert git("status", "--porcelain", cwd=local_wt) == "?? d.txt"
    human = run_para("status", "show", "h2", cwd=repo).stdout
    assert "runs on h1 (127.0.0.1), last harvest" in human, human
    listed = run_para("list", cwd=repo).stdout
    assert "@h1 (harvest" in listed, listed
    # The local branch moved elsewhere (not behind the host's tip): never rewound.
    tree = git("rev-parse", "main^{tree}", cwd=repo)
    mine = git("commit-tree", tree, "-p", rev(repo, "main"), "-m", "made here", cwd=repo)
    git("update-ref", "refs/heads/para/h2", mine, cwd=repo)
    (out / "go").touch()
    wait_file(out / "ready2", timeout=60)
    api.wait_event("harvest_diverged", "h2", local=mine)
    assert rev(repo, "para/h2") == mine
    assert rev(repo, "refs/para/remote/h2") == git("rev-parse", "HEAD", cwd=remote_wt)
    run_para("cancel", "h2", "--json", cwd=repo, check=False)


def test_a_sidecar_killed_mid_run_is_repaired_by_the_next(api, repo: Path, out: Path, ssh_host: SshHost,
                                                          sidecar, runtime_dir: Path) -> None:
    """T7: kill -9 of the sidecar while a remote agent works: the agent keeps running on its
    host; the next sidecar dials the host again, serves the agent's socket there again (its
    next `para status` arrives) and records its exit."""
    configure(executors={"h1": ssh_host.entry()})
    prof = step_profile(f"touch:{out}/ready", f"wait:{out}/go", "status:after the restart", "exit:3")
    dispatch(repo, "k9", "-p", "outlive the sidecar", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    sidecar.proc.kill()
    sidecar.proc.wait(timeout=15)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        # (in the background of its start: the agent's `para` fails until then, saying so)
        wait_until(lambda: "k9: its socket is served on executor h1 again" in sc.log_tail(200), 60,
                   "the new sidecar to serve the agent's socket on its host")
        (out / "go").touch()
        status = api.wait_event("status", "k9", timeout=60)
        assert status["data"]["task"] == "after the restart"
        assert api.wait_agent("k9", timeout=60)["agent"]["exit_code"] == 3
        assert api.wait_event("agent_exited", "k9")["data"]["exit_code"] == 3
    finally:
        shutdown_sidecar(sc)


def test_the_rebase_strategy_is_refused_for_a_remote_session_and_nothing_changes(
        api, repo: Path, out: Path, ssh_host: SshHost) -> None:
    """A rebase rewrites the session's branch, which its agent holds on the host: refused
    before anything moves (here or there), with the strategies that work."""
    configure(executors={"h1": ssh_host.entry(env_passthrough=list(IDENTITY))})
    prof = step_profile("write:a.txt=one\n", "commit:first", f"touch:{out}/ready", f"wait:{out}/never")
    dispatch(repo, "rb", "-p", "work", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    main = rev(repo, "main")
    rc, out_ = para_json(repo, "integrate", "--session", "rb", "--strategy", "rebase")
    assert rc == Code.invalid_input.exit and "squash or merge" in out_["error"]["message"], out_
    assert rev(repo, "main") == main and api.call("para/show", session="rb")["status"] == "active"
    run_para("cancel", "rb", "--json", cwd=repo, check=False)


def test_remote_agents_integrating_at_once_all_stay_integrated(api, repo: Path, out: Path,
                                                                 ssh_host: SshHost) -> None:
    """Seen with 20 agents on one host (bench_remote): the agent poll read the sessions, asked
    the host (seconds, with 20 runs), then harvested and saved the copies it had read, which
    put sessions integrated meanwhile back to `active` (and their deleted branches back).
    Six agents land at once here: every session stays integrated, every branch goes."""
    configure(executors={"h1": ssh_host.entry(env_passthrough=list(IDENTITY))})
    n = 6
    for i in range(n):
        prof = step_profile(f"write:r{i}.txt=remote {i}\n", f"touch:{out}/ready{i}", f"wait:{out}/go",
                            f"integrate:Remote {i}")
        dispatch(repo, f"r{i}", "-p", f"write r{i}", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    for i in range(n):
        wait_file(out / f"ready{i}", timeout=90)
    (out / "go").touch()
    wait_until(lambda: sum(e["kind"] == "integrated" for e in api.events()) >= n, 120, "every integration")
    # The agents exit after their integrate answered: their exits are polled (and would be saved) after.
    for i in range(n):
        api.wait_agent(f"r{i}", timeout=60)
    time.sleep(3)  # (one more poll of the host: REMOTE_POLL_SECONDS)
    listed = {s["name"]: s["status"] for s in api.call("para/list", all=True)["sessions"]}
    assert listed == {f"r{i}": "integrated" for i in range(n)}, listed
    assert git("branch", "--list", "para/*", cwd=repo) == ""
    landed = set(git("ls-tree", "--name-only", "main", cwd=repo).split())
    assert {f"r{i}.txt" for i in range(n)} <= landed, landed


def test_the_runs_on_one_host_are_polled_with_one_request_per_round(api, repo: Path, out: Path, tmp_path: Path,
                                                                    ssh_host: SshHost) -> None:
    """Every poll of a remote run is a process on its host (the worker): with one per run
    every 2 s, 20 agents cost the host 10 Python starts a second doing nothing. The sidecar asks
    for all the runs on a host at once. Counted here by a `python` that logs each start."""
    log = tmp_path / "worker-starts.log"
    wrapper = tmp_path / "python-counting"
    wrapper.write_text(f'#!/bin/sh\necho x >> {log}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    configure(executors={"h1": ssh_host.entry(python=str(wrapper), harvest_interval=86400)})
    n = 4
    for i in range(n):
        prof = step_profile(f"touch:{out}/ready{i}", f"wait:{out}/end")
        dispatch(repo, f"p{i}", "-p", "wait", "--agent", "w", "--executor", "h1", profiles={"w": prof})
        wait_file(out / f"ready{i}", timeout=90)
        time.sleep(1.0)  # (runs started at different times are polled in the same rounds all the same)
    time.sleep(2.5)  # (the starts' own requests are done; only polls remain)
    before = len(log.read_text().splitlines())
    time.sleep(8.2)
    starts = len(log.read_text().splitlines()) - before
    # Four or five rounds of one request each (REMOTE_POLL_SECONDS = 2); one per run would be 16-20.
    assert 3 <= starts <= 6, starts
    (out / "end").touch()
    for i in range(n):
        api.wait_agent(f"p{i}", timeout=60)


OP_LOGGER = """#!{python}
# A `python` for the host that logs each worker request's op, then runs the real worker with it.
import json, subprocess, sys
data = sys.stdin.buffer.read()
with open({log!r}, "a") as f:
    f.write(json.loads(data.partition(b"\\n")[0]).get("op", "?") + "\\n")
done = subprocess.run([{python!r}, *sys.argv[1:]], input=data, capture_output=True)
sys.stdout.buffer.write(done.stdout)
sys.stderr.buffer.write(done.stderr)
sys.exit(done.returncode)
"""


def test_a_second_dispatch_to_a_host_asks_for_no_refs_and_a_wiped_cache_is_refilled(
        api, repo: Path, out: Path, tmp_path: Path, ssh_host: SshHost) -> None:
    """What the host's cache holds is remembered from its last answer, so a dispatch there is
    one request fewer (receive, prepare, start); a host whose cache was wiped meanwhile refuses
    the bundle the remembered refs made, and the dispatch asks for its refs and sends it all."""
    log = tmp_path / "ops.log"
    wrapper = tmp_path / "python-ops"
    wrapper.write_text(OP_LOGGER.format(python=sys.executable, log=str(log)))
    wrapper.chmod(0o755)
    configure(executors={"h1": ssh_host.entry(python=str(wrapper), harvest_interval=86400)})

    def ops_during(action) -> list[str]:
        before = len(log.read_text().splitlines()) if log.exists() else 0
        action()
        return [op for op in log.read_text().splitlines()[before:] if op not in ("poll_many", "logs", "snapshot")]

    def run(name: str) -> None:
        dispatch(repo, name, "-p", "wait", "--agent", "w", "--executor", "h1",
                 profiles={"w": step_profile(f"touch:{out}/{name}", f"wait:{out}/end-{name}")})
        wait_file(out / name, timeout=90)

    first = ops_during(lambda: run("s1"))
    assert first == ["refs", "receive", "prepare", "start"], first
    assert ops_during(lambda: run("s2")) == ["receive", "prepare", "start"]
    for name in ("s1", "s2"):
        run_para("cancel", name, "--discard", "--json", cwd=repo)
    _, runs = worker_paths(ssh_host)
    wait_until(lambda: not list(runs.glob("*/s1")) and not list(runs.glob("*/s2")), 60, "the placements released")
    shutil.rmtree(ssh_host.dir / "worker" / "repos" / f"{repo_id(str(repo))}.git")  # (wiped: remembered refs stale)
    commit_file(repo, "more.txt", "more\n", "more on main")  # (the tip is new to the host too)
    # (A `stop` of the cancels above may reach the host's log late, inside s3's window: it is theirs.)
    assert [op for op in ops_during(lambda: run("s3")) if op != "stop"] == ["receive", "refs", "receive", "prepare",
                                                                            "start"]
    (out / "end-s3").touch()
    api.wait_agent("s3", timeout=60)
