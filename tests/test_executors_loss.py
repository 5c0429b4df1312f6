"""Worker loss never loses commits (issue 16, point 3; executors.md §2.7, §3 T3): through the real
CLI and sidecar, a real OpenSSH server on loopback (tests/ssh_util.py), a second one in a network
namespace that a test can cut off (tests/netns_util.py), one that a test kills by its pid, and
the step agent.

- A host that stops answering makes its run `lost` only after the executor's `lost_after`
  seconds; the session stays active with both commits on its branch and the uncommitted file
  in a backup ref (and its local worktree), an `agent_lost` event says what may be missing, and
  `para resume NAME --executor OTHER` finishes the task, which lands everything.
- A host that answers again within the grace changes nothing.
- A sidecar killed while the host is cut off starts again at once and loses the run after the
  grace; bad resumes change nothing; an executor's `max_running` queues.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sshd
from agents_util import (agent_env, agent_scripts, agents_env, api, dispatch, out, step_profile,  # noqa: F401
                         wait_file)
from conftest import IDENTITY, full_state, git, rev, run_para, start_sidecar, shutdown_sidecar, wait_until
from netns_util import NetnsHost, netns_host  # noqa: F401  (fixture)
from para_rpc.errors import Code
from ssh_util import SshHost, ssh_host  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("sidecar")

GRACE = 10  # lost_after of the hosts that get cut off (seconds)


def configure(**executors: dict[str, object]) -> None:
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"executors": executors}))


def para_json(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    proc = run_para(*args, "--json", cwd=repo, check=False, env=env)
    return proc.returncode, json.loads(proc.stdout)


def worker_pids(root: Path) -> list[int]:
    """The step agents running in worktrees under `root` (their cwd), on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = Path(os.readlink(entry / "cwd"))
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cwd.is_relative_to(root) and b"step_agent" in cmd:
                found.append(int(entry.name))
    return found


# Two commits and a dirty file, reported (the report harvests), then it works on for ever.
WORK = ("write:a.txt=one\n", "commit:first", "write:b.txt=two\n", "commit:second", "write:dirty.txt=wip\n",
        "status:two commits and a dirty file")


def work_then_hang(out: Path) -> dict:
    return step_profile(f"env:{out}/env.json", *WORK, f"touch:{out}/ready", f"wait:{out}/never")


def harvested_all(api, repo: Path, name: str, remote_wt: Path) -> str:
    """Wait until both commits and the dirty file are home; the checkpoint's backup ref."""
    head = git("rev-parse", "HEAD", cwd=remote_wt)
    wait_until(lambda: rev(repo, f"para/{name}") == head, 60, "both commits to come home")
    event = api.wait_event("harvested", name, commit=head)
    assert event["data"]["checkpoint"], event
    backups = git("for-each-ref", "--format=%(refname)", f"refs/para/backup/{name}/", cwd=repo).split()
    kept = [r for r in backups if "-checkpoint" in r]
    assert kept and rev(repo, kept[-1]) == event["data"]["checkpoint"], backups
    return kept[-1]


def assert_nothing_lost(repo: Path, name: str, backup: str) -> None:
    assert git("log", "--format=%s", "-2", f"para/{name}", cwd=repo).splitlines() == ["second", "first"]
    assert git("show", f"{backup}:dirty.txt", cwd=repo) == "wip"
    assert git("rev-parse", f"{backup}^", cwd=repo) == rev(repo, f"para/{name}")
    # The local worktree mirrors it: the file is there, uncommitted.
    local_wt = repo / ".para" / "worktrees" / name
    assert (local_wt / "dirty.txt").read_text() == "wip\n"
    assert "?? dirty.txt" in git("status", "--porcelain", cwd=local_wt).splitlines()


def assert_lost_event(api, name: str, executor: str, tip: str, backup: str, started: float) -> dict:
    lost = api.wait_event("agent_lost", name, timeout=90)
    took = time.monotonic() - started
    assert GRACE <= took < GRACE + 45, took  # not before the grace; not long after it
    msg = lost["data"]["message"]
    assert f"Changes after " in msg and f" on {executor} may be missing" in msg, msg
    assert tip[:10] in msg and backup in msg and f"para resume {name} --executor" in msg, msg
    assert lost["data"]["backup"] == backup and lost["data"]["harvested_commit"] == tip
    exited = api.wait_event("agent_exited", name)
    assert exited["data"]["lost"] is True and exited["data"]["exit_code"] is None
    assert api.evidence(name)["agent"]["state"] == "lost"
    assert api.call("para/show", session=name)["status"] == "active"
    return lost


def finish_profile(out: Path, tag: str, wait: bool = False) -> dict:
    hold = [f"touch:{out}/{tag}-ready", f"wait:{out}/{tag}-go"] if wait else []
    return step_profile(f"env:{out}/{tag}.json", *hold, f"write:{tag}.txt=done\n", f"integrate:Finish after {tag}")


def assert_landed_everything(repo: Path, tag: str) -> None:
    for path, text in (("a.txt", "one"), ("b.txt", "two"), ("dirty.txt", "wip"), (f"{tag}.txt", "done")):
        assert git("show", f"main:{path}", cwd=repo) == text, path


# ---- T3: a partition after two commits and a dirty file ------------------------------------

def test_a_partitioned_host_loses_nothing_and_the_session_resumes_on_another_host(
        api, repo: Path, out: Path, netns_host: NetnsHost, ssh_host: SshHost) -> None:
    configure(far=netns_host.entry(env_passthrough=list(IDENTITY), lost_after=GRACE),
              near=ssh_host.entry(env_passthrough=list(IDENTITY)))
    dispatch(repo, "t3", "-p", "work", "--agent", "w", "--executor", "far", profiles={"w": work_then_hang(out)})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    assert remote_wt.is_relative_to(netns_host.dir / "worker")
    backup = harvested_all(api, repo, "t3", remote_wt)
    tip = rev(repo, "para/t3")
    # Bad resumes while it runs (it is still alive on its host): refused, nothing changes.
    before, working = full_state(repo), worker_pids(netns_host.dir / "worker")
    assert working
    rc, err = para_json(repo, "resume", "t3", "--executor", "near")
    assert rc == Code.wrong_state.exit and "still running" in err["error"]["message"], err
    assert full_state(repo) == before and worker_pids(netns_host.dir / "worker") == working  # (not stopped)
    netns_host.partition()
    started = time.monotonic()
    api.wait_event("agent_unreachable", "t3", timeout=60)
    assert_lost_event(api, "t3", "far", tip, backup, started)
    assert_nothing_lost(repo, "t3", backup)
    # Human output says so.
    assert "lost" in run_para("status", "show", "t3", cwd=repo).stdout
    listed = run_para("list", cwd=repo).stdout
    assert "@far (lost, harvest" in listed, listed
    # On the other host: a worktree made anew there, with the dirty file back as uncommitted.
    rc, resumed = para_json(repo, "resume", "t3", "--executor", "near",
                            env=agents_env(w=finish_profile(out, "h2", wait=True)))
    assert rc == 0, resumed
    wait_file(out / "h2-ready", timeout=60)
    new_wt = Path(json.loads((out / "h2.json").read_text())["cwd"])
    assert new_wt.is_relative_to(ssh_host.dir / "worker")
    # (there before the agent did anything: put back by the worker, uncommitted, on the harvested tip)
    assert (new_wt / "dirty.txt").read_text() == "wip\n"
    assert git("status", "--porcelain", cwd=new_wt).splitlines() == ["?? dirty.txt"]
    assert git("rev-parse", "HEAD", cwd=new_wt) == tip
    (out / "h2-go").touch()
    api.wait_event("integrated", "t3", timeout=120)
    assert_landed_everything(repo, "h2")
    event = api.wait_event("resumed", "t3", executor="near")
    assert event["data"]["previous_executor"] == "far" and event["data"]["lost"] is True


# ---- sshd killed by its pid; resumed on the same host, then locally --------------------------

@pytest.fixture
def killable_host() -> Iterator[tuple[SshHost, list[subprocess.Popen]]]:
    """An sshd of this test's own, so the test can kill it (and its connections) by pid and
    start it again with the same keys and port."""
    d = Path(tempfile.mkdtemp(prefix="para-ksd-"))
    try:
        host, proc = sshd.start(d)
    except sshd.SshdError as e:
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail(str(e), pytrace=False)
    procs = [proc]
    try:
        yield host, procs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(d, ignore_errors=True)


def _sshd_tree(pid: int) -> list[int]:
    """`pid` and the sshd processes below it (each connection's: sshd gives every connection a
    session of its own, so its process group is not enough)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("sshd"):
                parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def kill_sshd(proc: subprocess.Popen) -> None:
    """The listener and every connection it serves, by pid (the agents started there are not
    sshd's: they live on, as on a host whose sshd died)."""
    for pid in _sshd_tree(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def restart_sshd(host: SshHost) -> subprocess.Popen:
    proc = subprocess.Popen([sshd.SSHD, "-D", "-f", str(host.dir / "sshd_config"), "-E", str(host.log)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_until(lambda: sshd.accepts(host.host, host.port), 30, "sshd to listen again")
    return proc


def test_a_killed_sshd_loses_the_run_and_it_resumes_on_the_same_host(
        api, repo: Path, out: Path, killable_host: tuple[SshHost, list[subprocess.Popen]]) -> None:
    host, procs = killable_host
    configure(k1=host.entry(env_passthrough=list(IDENTITY), lost_after=GRACE))
    dispatch(repo, "ks", "-p", "work", "--agent", "w", "--executor", "k1", profiles={"w": work_then_hang(out)})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    backup = harvested_all(api, repo, "ks", remote_wt)
    tip = rev(repo, "para/ks")
    old_agents = worker_pids(host.dir / "worker")
    assert old_agents
    kill_sshd(procs[0])
    started = time.monotonic()
    assert_lost_event(api, "ks", "k1", tip, backup, started)
    assert_nothing_lost(repo, "ks", backup)
    assert worker_pids(host.dir / "worker") == old_agents  # (the host's agent lives on: only sshd died)
    # The host comes back: a resume there stops the old agent first, then works in its worktree.
    procs.append(restart_sshd(host))
    rc, resumed = para_json(repo, "resume", "ks", "--executor", "k1", env=agents_env(w=finish_profile(out, "same")))
    assert rc == 0, resumed
    api.wait_event("integrated", "ks", timeout=120)
    assert not any(p in worker_pids(host.dir / "worker") for p in old_agents)
    assert Path(json.loads((out / "same.json").read_text())["cwd"]) == remote_wt
    assert_landed_everything(repo, "same")


def test_a_lost_run_resumes_locally_from_the_mirrored_checkpoint(
        api, repo: Path, out: Path, killable_host: tuple[SshHost, list[subprocess.Popen]]) -> None:
    host, procs = killable_host
    configure(k1=host.entry(env_passthrough=list(IDENTITY), lost_after=GRACE))
    dispatch(repo, "kl", "-p", "work", "--agent", "w", "--executor", "k1", profiles={"w": work_then_hang(out)})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    backup = harvested_all(api, repo, "kl", remote_wt)
    kill_sshd(procs[0])
    started = time.monotonic()
    assert_lost_event(api, "kl", "k1", rev(repo, "para/kl"), backup, started)
    rc, resumed = para_json(repo, "resume", "kl", "--executor", "local", env=agents_env(w=finish_profile(out, "loc")))
    assert rc == 0, resumed
    api.wait_event("integrated", "kl", timeout=120)
    assert Path(json.loads((out / "loc.json").read_text())["cwd"]) == repo / ".para" / "worktrees" / "kl"
    assert_landed_everything(repo, "loc")


def test_work_left_on_a_lost_host_is_saved_when_it_answers_again_and_the_host_freed(
        api, repo: Path, out: Path, killable_host: tuple[SshHost, list[subprocess.Popen]]) -> None:
    """The honest bound of a loss is the work after the last harvest; a host that comes back
    still holds it. After a resume elsewhere, the old placement is remembered: once its host
    answers, its agent is stopped, what it holds (a commit and a file made while it was cut
    off) is saved in backup refs, never onto the session's branch (which went on elsewhere),
    and the host's worktree is freed."""
    host, procs = killable_host
    configure(k1=host.entry(env_passthrough=list(IDENTITY), lost_after=GRACE))
    prof = step_profile(f"env:{out}/env.json", *WORK, f"touch:{out}/ready", f"wait:{out}/more",
                        "write:late.txt=late\n", "commit:late", "write:later.txt=later\n", f"touch:{out}/more-done",
                        f"wait:{out}/never")
    dispatch(repo, "lw", "-p", "work", "--agent", "w", "--executor", "k1", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    backup = harvested_all(api, repo, "lw", remote_wt)
    kill_sshd(procs[0])
    started = time.monotonic()
    (out / "more").touch()  # (it works on, cut off: nothing of this comes home now)
    wait_file(out / "more-done", timeout=30)
    assert_lost_event(api, "lw", "k1", rev(repo, "para/lw"), backup, started)
    rc, resumed = para_json(repo, "resume", "lw", "--executor", "local",
                            env=agents_env(w=step_profile(f"touch:{out}/loc-ready", f"wait:{out}/loc-go")))
    assert rc == 0, resumed
    wait_file(out / "loc-ready", timeout=60)
    branch = rev(repo, "para/lw")
    assert worker_pids(host.dir / "worker")  # (the old agent still runs there)
    procs.append(restart_sshd(host))
    saved = api.wait_event("left_work_saved", "lw", timeout=90)
    refs = saved["data"]["refs"]
    tip = next(r for r in refs if r.endswith("-tip"))
    checkpoint = next(r for r in refs if r.endswith("-checkpoint"))
    assert tip.startswith("refs/para/backup/lw/") and "-left-on-k1-" in tip, refs
    assert git("log", "-1", "--format=%s", tip, cwd=repo) == "late"
    assert git("show", f"{checkpoint}:later.txt", cwd=repo) == "later"
    assert rev(repo, "para/lw") == branch  # (never moved: the session went on locally)
    assert any(tip in n for n in api.call("para/show", session="lw")["notes"])
    wait_until(lambda: not remote_wt.exists() and not worker_pids(host.dir / "worker"), 30,
               "the old agent stopped and its worktree freed on the host")
    (out / "loc-go").touch()
    api.wait_agent("lw", timeout=60)


def test_the_agent_of_a_lost_run_whose_session_ended_is_stopped_when_its_host_is_back(
        api, repo: Path, out: Path, killable_host: tuple[SshHost, list[subprocess.Popen]]) -> None:
    """RT16-4: a lost run's host was only silent (here its sshd died; the agent lives on). Its
    session cancelled, nothing ever stopped that agent: with its host back it kept working where
    no harvest looks. Now it is stopped once the host answers again (the stop is recorded)."""
    host, procs = killable_host
    configure(k1=host.entry(env_passthrough=list(IDENTITY), lost_after=GRACE))
    dispatch(repo, "kc", "-p", "work", "--agent", "w", "--executor", "k1", profiles={"w": work_then_hang(out)})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    backup = harvested_all(api, repo, "kc", remote_wt)
    assert worker_pids(host.dir / "worker")
    kill_sshd(procs[0])
    assert_lost_event(api, "kc", "k1", rev(repo, "para/kc"), backup, time.monotonic())
    rc, cancelled = para_json(repo, "cancel", "kc")
    assert rc == 0, cancelled
    assert worker_pids(host.dir / "worker")  # (still at work on the silent host)
    procs.append(restart_sshd(host))
    wait_until(lambda: not worker_pids(host.dir / "worker"), 70, "the lost agent to be stopped on its host")
    stopped = api.wait_event("agent_stopped", "kc", timeout=30)
    assert stopped["data"]["reason"] == "its session ended while its host was lost" and stopped["data"]["pids"]
    # What its worktree held is saved (here: the checkpoint of its dirty file), then the host freed.
    saved = api.wait_event("left_work_saved", "kc", timeout=60)
    checkpoint = next(r for r in saved["data"]["refs"] if r.endswith("-checkpoint"))
    assert git("show", f"{checkpoint}:dirty.txt", cwd=repo) == "wip"
    wait_until(lambda: not remote_wt.exists(), 30, "the host's worktree to be freed")


# ---- a host back within the grace: nothing changes ----------------------------------------

def test_a_host_that_answers_again_within_the_grace_changes_nothing(
        api, repo: Path, out: Path, netns_host: NetnsHost) -> None:
    configure(far=netns_host.entry(lost_after=40))
    prof = step_profile(f"touch:{out}/ready", f"wait:{out}/go", "status:after the cut", "exit:0")
    dispatch(repo, "heal", "-p", "work", "--agent", "w", "--executor", "far", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    netns_host.partition()
    unreachable = api.wait_event("agent_unreachable", "heal", timeout=60)
    assert unreachable["data"]["lost_after"] == 40
    netns_host.heal()
    api.wait_event("agent_reachable", "heal", timeout=60)
    (out / "go").touch()
    assert api.wait_event("status", "heal", timeout=60)["data"]["task"] == "after the cut"  # its socket works
    assert api.wait_agent("heal", timeout=60)["agent"]["exit_code"] == 0
    assert not [e for e in api.events() if e["kind"] == "agent_lost"]


# ---- a sidecar killed while the host is cut off --------------------------------------------

def test_a_sidecar_restarted_while_the_host_is_cut_off_starts_at_once_and_loses_the_run_after_the_grace(
        api, repo: Path, out: Path, netns_host: NetnsHost, sidecar, runtime_dir: Path) -> None:
    configure(far=netns_host.entry(env_passthrough=list(IDENTITY), lost_after=GRACE))
    dispatch(repo, "k9", "-p", "work", "--agent", "w", "--executor", "far", profiles={"w": work_then_hang(out)})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    backup = harvested_all(api, repo, "k9", remote_wt)
    tip = rev(repo, "para/k9")
    netns_host.partition()
    sidecar.proc.kill()
    sidecar.proc.wait(timeout=15)
    started = time.monotonic()
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        assert api.call("para/show", session="k9")["status"] == "active"
        assert time.monotonic() - started < 10  # its start did not wait for the host
        assert_lost_event(api, "k9", "far", tip, backup, started)
        assert_nothing_lost(repo, "k9", backup)
        # A lost session cancels at once (nothing waits for its host) and archives everything;
        # the checkpoint's backup ref outlives the cancel.
        t = time.monotonic()
        rc, cancelled = para_json(repo, "cancel", "k9")
        assert rc == 0 and time.monotonic() - t < 20, cancelled
        archive = cancelled["archived_branch"]
        assert git("show", f"{archive}:dirty.txt", cwd=repo) == "wip"
        assert git("show", f"{archive}:b.txt", cwd=repo) == "two"
        assert rev(repo, backup) is not None
    finally:
        shutdown_sidecar(sc)


# ---- bad resumes ----------------------------------------------------------------------------

def test_bad_resumes_are_refused_and_change_nothing(api, repo: Path, out: Path, ssh_host: SshHost) -> None:
    configure(h1=ssh_host.entry())
    dispatch(repo, "busy", "-p", "hang", "--agent", "w", profiles={"w": step_profile(f"touch:{out}/ready",
                                                                                     f"wait:{out}/never")})
    wait_file(out / "ready", timeout=60)
    run_para("start", "plain", cwd=repo)
    before = full_state(repo)
    for args, code, words in (
            (["busy", "--executor", "nope"], Code.not_found, "no executor named 'nope'"),
            (["busy", "--executor", "h1"], Code.wrong_state, "still running"),
            (["busy", "--executor", "local"], Code.wrong_state, "still running"),
            (["plain", "--executor", "h1"], Code.wrong_state, "no agent"),
            (["ghost", "--executor", "h1"], Code.not_found, "ghost")):
        rc, err = para_json(repo, "resume", *args)
        assert rc == code.exit and words in err["error"]["message"], (args, err)
        assert full_state(repo) == before, args
    run_para("cancel", "plain", cwd=repo)
    rc, err = para_json(repo, "resume", "plain", "--executor", "h1")
    assert rc == Code.wrong_state.exit and "cancelled" in err["error"]["message"], err


# ---- an executor's max_running ------------------------------------------------------------

def test_an_executors_max_running_queues_the_launches_beyond_it(api, repo: Path, out: Path,
                                                                ssh_host: SshHost) -> None:
    configure(h1=ssh_host.entry(max_running=1))
    first = step_profile(f"touch:{out}/one", f"wait:{out}/go", "exit:0")
    dispatch(repo, "one", "-p", "first", "--agent", "w", "--executor", "h1", profiles={"w": first})
    wait_file(out / "one", timeout=60)
    second = step_profile(f"touch:{out}/two", "exit:0")
    r, _ = dispatch(repo, "two", "-p", "second", "--agent", "w", "--executor", "h1", profiles={"w": second})
    assert r["queued"] is not None, r
    queued = api.wait_event("agent_queued", "two")
    assert queued["data"]["executor"] == "h1" and queued["data"]["executor_max_running"] == 1
    # Not the other executors': a local agent starts at once.
    r, _ = dispatch(repo, "here", "-p", "local", "--agent", "w", profiles={"w": step_profile(f"touch:{out}/here")})
    wait_file(out / "here", timeout=60)
    time.sleep(3)  # (polls come and go: the second stays queued while the first runs)
    assert not (out / "two").exists()
    (out / "go").touch()
    wait_file(out / "two", timeout=60)
    assert api.wait_event("dispatched", "two", from_queue=True)


def test_a_lost_session_integrates_what_it_holds_without_waiting_for_its_host(
        api, repo: Path, out: Path, killable_host: tuple[SshHost, list[subprocess.Popen]]) -> None:
    """No resume needed to land a lost session's work: it is all here (both commits on its branch,
    the dirty file in its local worktree), so integrate uses that and never asks the host."""
    host, procs = killable_host
    configure(k1=host.entry(env_passthrough=list(IDENTITY), lost_after=GRACE))
    dispatch(repo, "li", "-p", "work", "--agent", "w", "--executor", "k1", profiles={"w": work_then_hang(out)})
    wait_file(out / "ready", timeout=60)
    remote_wt = Path(json.loads((out / "env.json").read_text())["cwd"])
    backup = harvested_all(api, repo, "li", remote_wt)
    kill_sshd(procs[0])
    started = time.monotonic()
    assert_lost_event(api, "li", "k1", rev(repo, "para/li"), backup, started)
    t = time.monotonic()
    rc, done = para_json(repo, "integrate", "Land what came home", "--session", "li")
    assert rc == 0 and done["status"] == "integrated", done
    assert time.monotonic() - t < 20
    for path, text in (("a.txt", "one"), ("b.txt", "two"), ("dirty.txt", "wip")):
        assert git("show", f"main:{path}", cwd=repo) == text, path
