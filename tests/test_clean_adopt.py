"""para's state lost, worktrees still there (issue 9 points 11 and 12).

With `.para/para.db` deleted, the sessions' branches are still checked out in their
worktrees. git refuses to delete a branch checked out anywhere, so `para clean` must
never plan to: a para branch checked out in a linked worktree is adopted as the
session it was (active, with that worktree); one checked out elsewhere is kept, with
the reason. `para resume NAME` adopts such a branch as active, not review.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import branches, commit_file, git, rev
from safety_util import sessions, wt

pytestmark = pytest.mark.usefixtures("sidecar")


def lose_state(para, repo: Path) -> None:
    """Stop the sidecar and delete the database (and its WAL files)."""
    para("sidecar", "stop")
    for p in (repo / ".para").glob("para.db*"):
        p.unlink()


@pytest.fixture
def lost(para, repo) -> dict[str, str]:
    """Sessions x1 (one commit) and x2 (nothing yet: its branch is at main, so it counts as
    integrated) with their worktrees, then the state lost."""
    para("start", "x1")
    tip = commit_file(wt(repo, "x1"), "x1.txt", "x1\n", "x1 work")
    para("start", "x2")
    lose_state(para, repo)
    return {"para/x1": tip, "para/x2": rev(repo, "main")}


def test_clean_dry_run_never_plans_to_delete_a_checked_out_branch(para_json, repo, lost):
    plan = para_json("clean", "--dry-run")
    assert not [a for a in plan["actions"] if a["kind"] == "delete_branch" and a["branch"] in lost], plan
    adopt = {a["branch"]: a for a in plan["actions"] if a["kind"] == "adopt_session"}
    assert set(adopt) == set(lost)
    assert {b: a["worktree"] for b, a in adopt.items()} == {"para/x1": str(wt(repo, "x1")),
                                                           "para/x2": str(wt(repo, "x2"))}
    assert sessions(repo) == {}  # a dry run changes nothing


def test_clean_adopts_the_sessions_and_completes(para, para_json, repo, lost):
    result = para_json("clean")
    assert {a["session"] for a in result["actions"] if a["kind"] == "adopt_session"} == {"x1", "x2"}
    assert {b: rev(repo, b) for b in lost} == lost
    found = sessions(repo)
    for name in ("x1", "x2"):
        s = found[name]
        assert (s["status"], s["state"], s["branch"], s["worktree"]) == \
            ("active", "active", f"para/{name}", str(wt(repo, name)))
        assert any("adopted by clean" in n for n in s["notes"])
    # They are sessions again: the usual commands work on them.
    landed = para_json("integrate", "--session", "x1")
    assert landed["status"] == "integrated" and git("show", "main:x1.txt", cwd=repo) == "x1"


def test_clean_keeps_a_para_branch_checked_out_in_the_main_checkout(para, para_json, repo):
    git("checkout", "-q", "-b", "para/mine", cwd=repo)
    result = para_json("clean")
    (kept,) = [k for k in result["kept"] if k["branch"] == "para/mine"]
    assert kept["why_kept"] == "checked out in the main checkout"
    assert "para/mine" in branches(repo) and not result["actions"]


def test_resume_adopts_a_checked_out_branch_as_active(para, para_json, repo, lost):
    s = para_json("resume", "x1")
    assert (s["status"], s["state"], s["recreated"]) == ("active", "active", False)
    assert s["worktree"] == str(wt(repo, "x1")) and s["head"] == lost["para/x1"]
