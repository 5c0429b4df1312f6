"""What an integration checks before and while it moves the target, and what a crash leaves.

- `para conflicts --target` of a branch that does not exist is `not_found`.
- `para integrate --dry-run` refuses exactly what the real integration refuses.
- The target moves by compare-and-swap: if someone commits to it meanwhile, the
  integration is `busy` and nothing lands; if git refuses the update for another reason
  (a hook protecting the branch), that is `git_failed` with git's message, not `busy`.
- A sidecar killed right after the target moved: the repair brings the user's checkout
  along with the same two-way `read-tree` as the normal path, keeping the user's staged
  work; where git refuses, the checkout is left untouched and the session and the event
  log say loudly that it is behind. Never a staged revert of the landed work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PARA_ARGV, Sidecar, cli_env, git, rev, wait_until
from para_rpc.client import Connection

pytest.register_assert_rewrite("integrate_util")
from integrate_util import (Api, api, cli_json, error_of, in_progress, porcelain, start, write)  # noqa: E402,F401
from test_integrate_crash import CHECK, HOOK, kill_mid_integration  # noqa: E402

MSG = "Land the feature"


def test_conflicts_against_a_missing_target_is_not_found(api: Api) -> None:
    """Issue 9.9: before, exit 0 and "no conflicts"."""
    start(api, "feat", {"f.txt": "f\n"})
    err = error_of(cli_json("conflicts", "--target", "no-such-branch", cwd=api.repo, expect=3), "not_found")
    assert "no-such-branch" in err["message"] and err["data"]["branch"] == "no-such-branch"


def cancelled(api: Api) -> None:
    start(api, "feat", {"f.txt": "f\n"})
    api.call("para/cancel", session="feat")


def conflicted(api: Api) -> None:
    start(api, "feat", {"app.py": "session\n"})
    write(api.repo, {"app.py": "main\n"})
    git("commit", "-q", "-am", "main edits app.py", cwd=api.repo)
    error_of(cli_json("integrate", "--session", "feat", cwd=api.repo, expect=7), "conflict")


@pytest.mark.parametrize("setup", [cancelled, conflicted], ids=["cancelled", "conflicted"])
def test_a_dry_run_refuses_what_the_real_integration_refuses(api: Api, setup) -> None:
    """Issue 9.10: the dry run applies the same state checks (before, a cancelled session was
    predicted to land cleanly)."""
    setup(api)
    before = git("for-each-ref", cwd=api.repo), api.session("feat")["status"]
    real = cli_json("integrate", "--session", "feat", cwd=api.repo, expect=4)
    dry = cli_json("integrate", "--dry-run", "--session", "feat", cwd=api.repo, expect=4)
    assert error_of(dry, "wrong_state") == error_of(real, "wrong_state")
    assert (git("for-each-ref", cwd=api.repo), api.session("feat")["status"]) == before


def test_target_moved_during_integration_gets_busy_and_lands_nothing(api: Api, tmp_path: Path) -> None:
    """The compare-and-swap: the user commits to main while the integration's check runs
    (so after the result was computed on the old main). The target update must fail:
    `busy`, main stays at the user's commit, the session returns to active with its branch
    as it was, and nothing of it lands."""
    repo, ctl = api.repo, tmp_path / "ctl"
    ctl.mkdir()
    script = tmp_path / "blocking_check.py"
    script.write_text(CHECK)
    wt = start(api, "feat", {"feature.txt": "feature\n"})
    pre = rev(wt, "HEAD")
    proc = subprocess.Popen([*PARA_ARGV, "integrate", MSG, "--session", "feat", "--json"], cwd=repo,
                            env=cli_env({"PARA_INTEGRATE_CHECK": f"{sys.executable} {script} {ctl}"}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (ctl / "blocked").exists() or proc.poll() is not None, what="the check to block")
        assert proc.poll() is None, proc.communicate()
        write(repo, {"user.txt": "the user's own commit\n"})
        git("add", "user.txt", cwd=repo)
        git("commit", "-q", "-m", "the user commits to main", cwd=repo)
        users = rev(repo, "main")
        (ctl / "release").write_text("go")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 8, (out, err)
    assert "moved while integrating" in out
    assert rev(repo, "main") == users
    assert not (repo / "feature.txt").exists() and porcelain(repo) == []
    s = api.session("feat")
    assert s["status"] == "active" and s["pending_op"] is None
    assert rev(repo, "para/feat") == pre and porcelain(wt) == []
    # Not stranded: integrating again lands it on the user's commit.
    assert cli_json("integrate", MSG, "--session", "feat", cwd=repo)["status"] == "integrated"
    assert git("rev-parse", "main~1", cwd=repo) == users and (repo / "feature.txt").exists()


PROTECT = """#!/bin/sh
# A protected-branch policy: no ref transaction may move refs/heads/main.
[ "$1" = prepared ] || exit 0
if grep -q ' refs/heads/main$'; then echo "main is protected by policy" >&2; exit 1; fi
exit 0
"""


def test_a_hook_that_refuses_the_target_update_is_git_failed_not_busy(api: Api, tmp_path: Path) -> None:
    """R3-18: git's refusal (a reference-transaction hook) is reported as `git_failed` with
    git's message; before, it was `busy` ("someone committed to it; integrate again"), which
    no retry ever fixes. Nothing moves and the session is active again."""
    repo = api.repo
    start(api, "h2", {"h2.txt": "h2\n"})
    old = rev(repo, "main")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "reference-transaction").write_text(PROTECT)
    (hooks / "reference-transaction").chmod(0o755)
    git("config", "core.hooksPath", str(hooks), cwd=repo)
    err = error_of(cli_json("integrate", "--session", "h2", cwd=repo, expect=5), "git_failed")
    assert "main is protected by policy" in err["message"] and "did not move" in err["message"]
    assert rev(repo, "main") == old and porcelain(repo) == []
    assert api.session("h2")["status"] == "active"


# ---- issue 9.2: a crash after the target moved ------------------------------------------------

@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    d = tmp_path / "ctl"
    d.mkdir()
    return d


def crash_after_main_moved(api: Api, sidecar: Sidecar, ctl: Path) -> dict[str, str]:
    """Session `feat` adds feat.txt; the user has staged an unrelated new file in the main
    checkout; the sidecar is killed right after refs/heads/main was updated (before the
    checkout was brought along)."""
    repo = api.repo
    hook = Path(git("rev-parse", "--path-format=absolute", "--git-path", "hooks", cwd=repo), "reference-transaction")
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(HOOK.format(ctl=ctl))
    hook.chmod(0o755)
    start(api, "feat", {"feat.txt": "landed work\n"})
    write(repo, {"user.txt": "the user's staged file\n"})
    git("add", "user.txt", cwd=repo)
    old = rev(repo, "main")
    (ctl / "armed").write_text("committed")
    kill_mid_integration(sidecar, repo, ctl, "0")
    new = rev(repo, "main")
    assert new != old and git("show", f"{new}:feat.txt", cwd=repo) == "landed work"
    return {"old": old, "new": new}


def after_restart(repo: Path) -> dict:
    """The next command autostarts a sidecar, which repairs."""
    sessions = cli_json("list", "--all", cwd=repo)["sessions"]
    return {s["name"]: s for s in sessions}["feat"]


def test_crash_after_the_target_moved_brings_the_checkout_along_keeping_staged_work(
        api: Api, sidecar: Sidecar, ctl: Path) -> None:
    """Issue 9.2: before, the repair marked the session integrated but left the checkout with
    the user's file and `D feat.txt` staged: the user's next commit would revert the landing."""
    repo = api.repo
    f = crash_after_main_moved(api, sidecar, ctl)
    s = after_restart(repo)
    assert s["status"] == "integrated" and s["integration"]["commit"] == f["new"]
    assert rev(repo, "HEAD") == f["new"]
    assert porcelain(repo) == ["A  user.txt"]
    assert git("diff", "--cached", "--name-status", cwd=repo) == "A\tuser.txt"
    assert (repo / "feat.txt").read_text() == "landed work\n"
    assert (repo / "user.txt").read_text() == "the user's staged file\n"
    assert not any("behind" in n for n in s["notes"]), s["notes"]


def test_crash_after_the_target_moved_with_the_users_file_in_the_way_reports_it(
        api: Api, sidecar: Sidecar, ctl: Path, runtime_dir: Path) -> None:
    """Where the two-way read-tree is impossible (after the crash the user created their own
    untracked feat.txt), the checkout is left exactly as it is and the session carries a
    note, and the event log an event, saying it is behind and how to bring it along."""
    repo = api.repo
    f = crash_after_main_moved(api, sidecar, ctl)
    write(repo, {"feat.txt": "the user's own feat.txt\n"})
    before = porcelain(repo), git("diff", "--cached", "--name-status", cwd=repo)
    s = after_restart(repo)
    assert s["status"] == "integrated" and s["integration"]["commit"] == f["new"]
    assert (porcelain(repo), git("diff", "--cached", "--name-status", cwd=repo)) == before
    assert (repo / "feat.txt").read_text() == "the user's own feat.txt\n"
    note = next(n for n in s["notes"] if "could not be brought along" in n)
    assert str(repo) in note and f"git read-tree -m -u {f['old']} {f['new']}" in note
    with Connection.open(runtime_dir / "sidecar.sock", timeout=30) as conn:
        events = conn.request("para/events", {"cwd": str(repo)})["events"]
    behind = [e for e in events if e["kind"] == "checkout_behind"]
    assert len(behind) == 1 and behind[0]["session"] == "feat", events
    assert behind[0]["data"]["worktree"] == str(repo) and behind[0]["data"]["new"] == f["new"]
    assert "feat.txt" in behind[0]["data"]["reason"]
    assert in_progress(repo) == []
