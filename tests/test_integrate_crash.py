"""`kill -9` of the sidecar in the middle of an integration.

The sidecar is stopped at a precise point by real git machinery: a
`reference-transaction` hook that blocks while `refs/heads/main` is being
updated (before or after the update is committed), or an `integrate.check`
command that blocks. The sidecar is then killed with SIGKILL, the blocked git
process is let go (to commit or to abort its transaction), and the next `para`
call autostarts a new sidecar, which repairs. The target must then be exactly the
old or exactly the new commit, and the session must say which.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PARA_ARGV, Sidecar, cli_env, git, rev, sidecar_pids, wait_until

pytest.register_assert_rewrite("integrate_util")
from integrate_util import (Api, BlockingCheck, assert_checkout_clean_at, assert_landed_cleanly,  # noqa: E402
                            changed_files, cli_json, in_progress, launch, message, api, outcome, parents, porcelain,
                            start, write)



MSG = "Land the feature"

HOOK = """#!/bin/sh
# Test hook: block the first transaction that updates refs/heads/main in the armed state.
ctl='{ctl}'
[ -e "$ctl/armed" ] || exit 0
[ "$1" = "$(cat "$ctl/armed")" ] || exit 0
grep -q ' refs/heads/main$' || exit 0
rm -f "$ctl/armed"
echo "$$" > "$ctl/blocked.tmp" && mv "$ctl/blocked.tmp" "$ctl/blocked"
while [ ! -e "$ctl/release" ]; do sleep 0.02; done
touch "$ctl/released"
exit "$(cat "$ctl/release")"
"""

def waiting_script(arrived: str, until: str, then: str | None = None) -> str:
    """A Python script (its argv[1]: the control directory) that says it `arrived`, waits
    until `until` is there (120 s at most: never outlives the test by much), then says `then`."""
    return ("import pathlib, sys, time\n"
            "ctl = pathlib.Path(sys.argv[1])\n"
            f"(ctl / {arrived!r}).write_text('')\n"
            "deadline = time.monotonic() + 120\n"
            f"while not (ctl / {until!r}).exists() and time.monotonic() < deadline:\n"
            "    time.sleep(0.02)\n"
            + (f"(ctl / {then!r}).write_text('')\n" if then else ""))


CHECK = waiting_script("blocked", "release", "released")


def setup_session(api: Api) -> dict[str, str]:
    repo = api.repo
    wt = start(api, "feat", {"feature.txt": "feature\n"}, {"lib/new.py": "NEW = 1\n"})
    write(repo, {"README.md": "# main moved on\n"})
    git("commit", "-q", "-am", "main moves on", cwd=repo)
    return {"old": rev(repo, "main"), "pre": rev(wt, "HEAD"), "wt": str(wt)}


def kill_mid_integration(sidecar: Sidecar, repo: Path, ctl: Path, release: str,
                         env: dict[str, str] | None = None) -> None:
    """Start `para integrate`, wait until it blocks at the armed point, SIGKILL the sidecar,
    then release the blocked git process (or check) with `release` and wait for it to finish."""
    proc = subprocess.Popen([*PARA_ARGV, "integrate", MSG, "--session", "feat", "--json"], cwd=repo,
                            env=cli_env(env), text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (ctl / "blocked").exists() or proc.poll() is not None,
                   what="the integration to reach the blocking point")
        assert proc.poll() is None, f"integrate finished without blocking: {proc.communicate()}"
        os.kill(sidecar.pid, signal.SIGKILL)
        sidecar.proc.wait(timeout=30)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 9, (proc.returncode, out, err)  # sidecar_unavailable
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sidecar_pids(sidecar.socket.parent) == []
    (ctl / "release").write_text(release)
    wait_until(lambda: (ctl / "released").exists(), what="the blocked process to be released")
    lock = Path(git("rev-parse", "--path-format=absolute", "--git-path", "refs/heads/main.lock", cwd=repo))
    wait_until(lambda: not lock.exists(), what="git to drop the lock on main")


@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    d = tmp_path / "ctl"
    d.mkdir()
    return d


@pytest.fixture
def hooked(api: Api, ctl: Path) -> Api:
    hook = Path(git("rev-parse", "--path-format=absolute", "--git-path", "hooks", cwd=api.repo),
                "reference-transaction")
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(HOOK.format(ctl=ctl))
    hook.chmod(0o755)
    return api


def after_restart(repo: Path) -> dict:
    """The first `para` call after the crash: it autostarts a sidecar, which repairs."""
    sessions = cli_json("list", "--all", cwd=repo)["sessions"]
    assert len(sidecar_pids(os.environ["PARA_RUNTIME_DIR"])) == 1
    return {s["name"]: s for s in sessions}["feat"]


@pytest.mark.parametrize("stage,release,lands", [
    ("prepared", "1", False),   # the ref update is refused: main must stay old
    ("prepared", "0", True),    # the ref update goes through after the sidecar died
    ("committed", "0", True),   # main already moved; the checkout was not brought along yet
], ids=["update-aborted", "update-committed-late", "killed-after-update"])
def test_kill_9_while_the_target_moves(hooked: Api, sidecar: Sidecar, ctl: Path, stage: str, release: str,
                                       lands: bool) -> None:
    repo = hooked.repo
    f = setup_session(hooked)
    (ctl / "armed").write_text(stage)
    kill_mid_integration(sidecar, repo, ctl, release)

    s = after_restart(repo)
    tip = rev(repo, "main")
    if lands:
        # Exactly the new commit, and the session says so.
        assert tip != f["old"]
        assert s["status"] == "integrated" and s["pending_op"] is None
        assert s["integration"]["commit"] == tip
        assert parents(repo, tip) == [f["old"]] and message(repo, tip) == MSG
        assert changed_files(repo, tip) == ["feature.txt", "lib/new.py"]
        assert_landed_cleanly(repo, _ListApi(repo), "feat")  # type: ignore[arg-type]
        assert_checkout_clean_at(repo, "main")
        assert (repo / "feature.txt").read_text() == "feature\n"
    else:
        assert tip == f["old"]
        assert s["status"] == "active" and s["state"] == "active" and s["pending_op"] is None
        assert any("interrupted" in n for n in s["notes"]), s["notes"]
        assert rev(repo, "para/feat") == f["pre"]
        wt = Path(f["wt"])
        assert wt.is_dir() and porcelain(wt) == [] and in_progress(wt) == []
        assert_checkout_clean_at(repo, "main")
        # And it can simply be integrated again.
        out = cli_json("integrate", MSG, "--session", "feat", cwd=repo)
        assert out["status"] == "integrated" and parents(repo, "main") == [f["old"]]
        assert_checkout_clean_at(repo, "main")


def test_kill_9_while_the_check_runs(api: Api, sidecar: Sidecar, ctl: Path, tmp_path: Path) -> None:
    repo = api.repo
    f = setup_session(api)
    script = tmp_path / "blocking_check.py"
    script.write_text(CHECK)
    kill_mid_integration(sidecar, repo, ctl, "0",
                         env={"PARA_INTEGRATE_CHECK": f"{sys.executable} {script} {ctl}"})
    s = after_restart(repo)
    assert rev(repo, "main") == f["old"]
    assert s["status"] == "active" and s["pending_op"] is None
    assert any("interrupted" in n for n in s["notes"]), s["notes"]
    assert rev(repo, "para/feat") == f["pre"]
    assert_checkout_clean_at(repo, "main")
    # The check's scratch worktree does not outlive the repair.
    listed = git("worktree", "list", "--porcelain", cwd=repo)
    assert listed.count("worktree ") == 2, listed
    scratch = repo / ".para" / "scratch"
    assert not scratch.exists() or not any(scratch.iterdir()), list(scratch.iterdir())


class _ListApi:
    """What assert_landed_cleanly needs, read through the CLI (the test's own connection
    died with the killed sidecar)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def session(self, name: str) -> dict:
        return {s["name"]: s for s in cli_json("list", "--all", cwd=self.repo)["sessions"]}[name]


def test_the_repair_after_a_kill_9_overwrites_no_ignored_file_of_the_user(hooked: Api, sidecar: Sidecar,
                                                                          ctl: Path) -> None:
    """Issue 15 red team: killed once main moved, before its checkout was brought along; the
    user has an ignored file (`*.log`) where the landing adds one (force-added). The repair
    completes the landing but leaves the checkout untouched and says why, naming the file;
    before, its read-tree overwrote the user's file without a word."""
    repo = hooked.repo
    write(repo, {"debug.log": "the user's log\n"})
    wt = start(hooked, "feat", {"feature.txt": "feature\n"})
    write(wt, {"debug.log": "the session's log\n"})
    git("add", "-f", "debug.log", cwd=wt)
    git("commit", "-q", "-m", "add debug.log", cwd=wt)
    old = rev(repo, "main")
    (ctl / "armed").write_text("committed")
    kill_mid_integration(sidecar, repo, ctl, "0")
    s = after_restart(repo)
    assert rev(repo, "main") != old and s["status"] == "integrated"
    assert (repo / "debug.log").read_text() == "the user's log\n"
    assert any("debug.log" in n and "could not be brought along" in n for n in s["notes"]), s["notes"]


@pytest.mark.parametrize("stage,release,lands", [
    ("prepared", "1", False),   # the group's move of main is refused: main stays where it was
    ("prepared", "0", True),    # the group's move of main goes through after the sidecar died
    ("committed", "0", True),   # main moved for all of them; killed before the checkout came along
], ids=["update-aborted", "update-committed-late", "killed-after-update"])
def test_kill_9_while_integrations_landing_together_move_the_target(hooked: Api, sidecar: Sidecar, ctl: Path,
                                                                     tmp_path: Path, stage: str, release: str,
                                                                     lands: bool) -> None:
    """Integrations that waited in one queue land together, with one move of main: killed
    there, the repair finds main at the first one's old commit or at the last one's new one,
    and completes or undoes every one of them accordingly (none is left half-landed)."""
    repo = hooked.repo
    names = ["g1", "g2", "g3"]
    start(hooked, "gate", {"gate.txt": "gate\n"})
    for n in names:
        start(hooked, n, {f"{n}.txt": f"{n}\n"})
    old = rev(repo, "main")
    pre = {n: rev(repo, f"para/{n}") for n in names}
    check = BlockingCheck(tmp_path)
    gate = launch("integrate", "gate lands", "--session", "gate", cwd=repo, env=check.env())
    check.wait_blocked(gate)
    procs = [launch("integrate", f"{n} lands", "--session", n, cwd=repo) for n in names]
    wait_until(lambda: all(s["status"] == "integrating" for s in cli_json("list", cwd=repo)["sessions"]),
               what="all of them to wait in main's queue")
    (ctl / "armed").write_text(stage)
    check.release(1)  # the gate's check fails: main is left to the three, who go together
    wait_until(lambda: (ctl / "blocked").exists(), what="the group's move of main to block")
    os.kill(sidecar.pid, signal.SIGKILL)
    sidecar.proc.wait(timeout=30)
    for p in [gate, *procs]:
        p.communicate(timeout=60)
    (ctl / "release").write_text(release)
    wait_until(lambda: (ctl / "released").exists(), what="the blocked update to be released")

    sessions = {s["name"]: s for s in cli_json("list", "--all", cwd=repo)["sessions"]}
    assert sessions["gate"]["status"] == "active"
    if lands:
        chain = git("rev-list", "--reverse", f"{old}..main", cwd=repo).splitlines()
        order = [message(repo, c).split()[0] for c in chain]  # (in the order they came to the queue)
        assert sorted(order) == names and len(set(parents(repo, c)[0] for c in chain)) == 3
        for n, c in zip(order, chain):
            assert sessions[n]["status"] == "integrated" and sessions[n]["pending_op"] is None
            assert sessions[n]["integration"]["commit"] == c and changed_files(repo, c) == [f"{n}.txt"]
            assert_landed_cleanly(repo, _ListApi(repo), n)  # type: ignore[arg-type]
        assert_checkout_clean_at(repo, "main")
        assert all((repo / f"{n}.txt").exists() for n in names)
    else:
        assert rev(repo, "main") == old
        for n in names:
            assert sessions[n]["status"] == "active" and sessions[n]["pending_op"] is None
            assert rev(repo, f"para/{n}") == pre[n]
        assert_checkout_clean_at(repo, "main")
        out = cli_json("integrate", "g2 again", "--session", "g2", cwd=repo)
        assert out["status"] == "integrated" and parents(repo, "main") == [old]


def test_kill_9_while_a_member_of_a_failed_group_lands_alone(hooked: Api, sidecar: Sidecar, ctl: Path,
                                                            tmp_path: Path) -> None:
    """Issue 15 red team (row 7): the group could not land (the user edits a file one member
    changes), so each goes alone; killed once main moved for the first of them, before its
    checkout came along. Its journal still named the failed group's move: the repair took main
    for unmoved, put the landed session back to active and left main's checkout showing the
    landed work as a staged revert."""
    repo = hooked.repo
    start(hooked, "gate", {"gate.txt": "gate\n"})
    start(hooked, "w1", {"w1.txt": "w1\n"})
    start(hooked, "mine", {"lib/util.py": "def util():\n    return 'theirs'\n"})
    start(hooked, "w2", {"w2.txt": "w2\n"})
    old = rev(repo, "main")
    pre = {n: rev(repo, f"para/{n}") for n in ("mine", "w2")}
    check = BlockingCheck(tmp_path)
    gate = launch("integrate", "gate lands", "--session", "gate", cwd=repo, env=check.env())
    check.wait_blocked(gate)
    procs = []
    for n in ("w1", "mine", "w2"):
        procs.append(launch("integrate", f"{n} lands", "--session", n, cwd=repo))
        wait_until(lambda: hooked.session(n)["status"] == "integrating", what=f"{n} to wait in main's queue")
    (repo / "lib/util.py").write_text("def util():\n    return 'the user is editing this'\n")
    (ctl / "armed").write_text("committed")
    check.release(1)  # the gate's check fails; the three cannot go together; w1 goes first, alone
    wait_until(lambda: (ctl / "blocked").exists(), what="w1's move of main to block")
    os.kill(sidecar.pid, signal.SIGKILL)
    sidecar.proc.wait(timeout=30)
    for p in [gate, *procs]:
        p.communicate(timeout=60)
    (ctl / "release").write_text("0")
    wait_until(lambda: (ctl / "released").exists(), what="the blocked update to be released")

    sessions = {s["name"]: s for s in cli_json("list", "--all", cwd=repo)["sessions"]}
    tip = rev(repo, "main")
    assert parents(repo, tip) == [old] and changed_files(repo, tip) == ["w1.txt"]
    assert sessions["w1"]["status"] == "integrated" and sessions["w1"]["integration"]["commit"] == tip
    assert_landed_cleanly(repo, _ListApi(repo), "w1")  # type: ignore[arg-type]
    for n in ("gate", "mine", "w2"):
        assert sessions[n]["status"] == "active" and sessions[n]["pending_op"] is None, sessions[n]
    assert all(rev(repo, f"para/{n}") == pre[n] for n in pre)
    # main's checkout came along (no staged revert of w1.txt), the user's edit untouched.
    assert porcelain(repo) == [" M lib/util.py"] and (repo / "w1.txt").read_text() == "w1\n"
    assert (repo / "lib/util.py").read_text() == "def util():\n    return 'the user is editing this'\n"


TEARDOWN = waiting_script("tearing-down", "let-go")


def test_kill_9_after_a_group_landed_and_main_moved_on_completes_every_member(api: Api, sidecar: Sidecar,
                                                                             ctl: Path, tmp_path: Path) -> None:
    """Issue 15 red team (row 7): g1 and g2 landed together; g2's owner is still cleaning up
    (its teardown runs) when g3 lands after them, then the sidecar is killed. main is past
    g2's commit, not at it: the repair took that for "main did not move" and put g2 back to
    active, its work already in main (the session half-landed)."""
    repo = api.repo
    for n in ("gate", "g1", "g2", "g3"):
        start(api, n, {f"{n}.txt": f"{n}\n"})
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN)
    check = BlockingCheck(tmp_path)
    gate = launch("integrate", "gate lands", "--session", "gate", cwd=repo, env=check.env())
    check.wait_blocked(gate)
    g1 = launch("integrate", "g1 lands", "--session", "g1", cwd=repo)
    wait_until(lambda: api.session("g1")["status"] == "integrating", what="g1 to wait in main's queue")
    g2 = launch("integrate", "g2 lands", "--session", "g2", cwd=repo,
                env={"PARA_SESSION_TEARDOWN": json.dumps([sys.executable, str(script), str(ctl)])})
    wait_until(lambda: api.session("g2")["status"] == "integrating", what="g2 to wait in main's queue")
    try:
        check.release(0)
        assert outcome(gate)[0] == 0 and outcome(g1)[0] == 0
        wait_until(lambda: (ctl / "tearing-down").exists(), what="g2's teardown to run")
        assert git("reflog", "show", "--format=%gs", "-1", "main", cwd=repo) == "para: integrate g1, g2"
        landed = rev(repo, "main")
        assert cli_json("integrate", "g3 lands", "--session", "g3", cwd=repo)["status"] == "integrated"
        os.kill(sidecar.pid, signal.SIGKILL)
        sidecar.proc.wait(timeout=30)
        g2.communicate(timeout=60)
        sessions = {s["name"]: s for s in cli_json("list", "--all", cwd=repo)["sessions"]}
    finally:
        (ctl / "let-go").write_text("")
    assert sessions["g2"]["status"] == "integrated" and sessions["g2"]["pending_op"] is None, sessions["g2"]
    assert sessions["g2"]["integration"]["commit"] == landed
    assert_landed_cleanly(repo, _ListApi(repo), "g2")  # type: ignore[arg-type]
    assert_checkout_clean_at(repo, "main")
    assert [message(repo, c) for c in git("rev-list", "-4", "main", cwd=repo).splitlines()] == \
        ["g3 lands", "g2 lands", "g1 lands", "gate lands"]
