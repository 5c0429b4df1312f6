"""`para integrate`: every strategy against every state of the target's checkout.

Real git, the real sidecar (the `sidecar` fixture), the real CLI for the operation
under test. The target is `main`, checked out in the main checkout, unless a test
says otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import git, rev

pytest.register_assert_rewrite("integrate_util")
from integrate_util import (Api, BASE_FILES, STRATEGIES, assert_checkout_clean_at, assert_landed_cleanly,  # noqa: E402
                            assert_same_world, changed_files, cli_json, commit_all, edit_line, error_of,
                            first_parent_chain, is_ancestor, message, api, parents, porcelain, run_cli,
                            show, start, world, write)


SHARED_SIDECAR = True  # one sidecar for the module (conftest.py), as one user's serves all repos



MSG = "Add the feature\n\nBody line one.\nBody line two."
APP_EDITED = edit_line(BASE_FILES["app.py"], 5, "line 5, changed by the session")


def prepare(api: Api, strategy: str, name: str = "feat", target: str = "main") -> dict[str, str]:
    """A session with two commits (app.py line 5 + feature.txt, then lib/new.py). Unless the
    strategy is ff, the target then moves on by a commit to another file (lib/util.py)."""
    repo = api.repo
    old_target = rev(repo, target)
    wt = start(api, name, {"app.py": APP_EDITED, "feature.txt": "feature\n"},
               {"lib/new.py": "NEW = True\n"}, base=None if target == "main" else target)
    facts = {"fork": old_target, "tip": rev(wt, "HEAD"), "wt": str(wt)}
    if strategy != "ff":
        facts["target_change"] = advance(repo, target, {"lib/util.py": "def util():\n    return 2\n"},
                                         "main moves on")
    facts["old"] = rev(repo, target)
    return facts


def advance(repo: Path, branch: str, files: dict[str, str], msg: str) -> str:
    """Commit on `branch`: in the main checkout if it has it checked out, else in a
    temporary worktree removed afterwards (so nothing else has it checked out)."""
    if git("symbolic-ref", "-q", "HEAD", cwd=repo, check=False) == f"refs/heads/{branch}":
        write(repo, files)
        return commit_all(repo, msg)
    tmp = repo.parent / f"tmp-{branch}"
    git("worktree", "add", "-q", str(tmp), branch, cwd=repo)
    write(tmp, files)
    sha = commit_all(tmp, msg)
    git("worktree", "remove", str(tmp), cwd=repo)
    return sha


def check_shape(repo: Path, strategy: str, f: dict[str, str], new: str, msg: str) -> None:
    """The target's new history has the shape the strategy promises, with the session's
    changes and the target's own changes both present."""
    old, tip = f["old"], f["tip"]
    if strategy == "squash":
        assert parents(repo, new) == [old]
        assert changed_files(repo, new) == ["app.py", "feature.txt", "lib/new.py"]
        assert message(repo, new) == msg
    elif strategy == "merge":
        assert parents(repo, new) == [old, tip]
        assert message(repo, new) == msg
    elif strategy == "rebase":
        chain = first_parent_chain(repo, new, old)
        assert len(chain) == 2
        assert [message(repo, c) for c in chain] == ["feat: change 2", "feat: change 1"]
        assert all(len(parents(repo, c)) == 1 for c in chain)
        assert parents(repo, chain[-1]) == [old]
        assert changed_files(repo, chain[-1]) == ["app.py", "feature.txt"]
    else:
        assert new == tip
    assert show(repo, f"{new}:app.py") + "\n" == APP_EDITED
    assert show(repo, f"{new}:lib/new.py") == "NEW = True"
    if "target_change" in f:
        assert show(repo, f"{new}:lib/util.py") == "def util():\n    return 2"


def integrate(repo: Path, strategy: str, *extra: str, expect: int = 0, cwd: Path | None = None) -> dict:
    return cli_json("integrate", MSG, "--session", "feat", "--strategy", strategy, *extra,
                    cwd=cwd or repo, expect=expect)


# ---- the target checked out in the main checkout --------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_clean_checkout_of_the_target_is_brought_along(api: Api, strategy: str) -> None:
    repo = api.repo
    f = prepare(api, strategy)
    out = integrate(repo, strategy)
    new = rev(repo, "main")
    assert out["status"] == "integrated" and out["integration"]["commit"] == new
    assert out["integration"]["strategy"] == strategy and out["integration"]["old"] == f["old"]
    check_shape(repo, strategy, f, new, MSG)
    assert_checkout_clean_at(repo, "main")
    assert (repo / "app.py").read_text() == APP_EDITED
    assert (repo / "feature.txt").read_text() == "feature\n"
    assert_landed_cleanly(repo, api, "feat")
    assert git("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_uncommitted_changes_elsewhere_in_the_checkout_survive(api: Api, strategy: str) -> None:
    repo = api.repo
    f = prepare(api, strategy)
    write(repo, {"README.md": "# demo, edited but not committed\n", "staged.txt": "staged\n",
                 "notes.txt": "untracked\n"})
    git("add", "staged.txt", cwd=repo)
    status_before = porcelain(repo)
    assert status_before == [" M README.md", "A  staged.txt", "?? notes.txt"]
    integrate(repo, strategy)
    new = rev(repo, "main")
    check_shape(repo, strategy, f, new, MSG)
    assert git("symbolic-ref", "HEAD", cwd=repo) == "refs/heads/main"
    assert porcelain(repo) == status_before
    assert (repo / "README.md").read_text() == "# demo, edited but not committed\n"
    assert (repo / "staged.txt").read_text() == "staged\n"
    assert (repo / "notes.txt").read_text() == "untracked\n"
    assert git("diff", "--cached", "--name-only", cwd=repo) == "staged.txt"
    assert (repo / "app.py").read_text() == APP_EDITED
    # Everything but the user's three changes matches the new tip exactly.
    assert git("diff", "--name-only", "main", cwd=repo).splitlines() == ["README.md", "staged.txt"]
    assert_landed_cleanly(repo, api, "feat")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_uncommitted_changes_to_files_it_changes_refuse_and_change_nothing(api: Api, strategy: str) -> None:
    repo = api.repo
    f = prepare(api, strategy)
    write(repo, {"app.py": BASE_FILES["app.py"] + "the user's own unfinished line\n",
                 "feature.txt": "the user's untracked file of the same name\n",
                 "README.md": "# unrelated edit\n"})
    before = world(repo, api)
    out = integrate(repo, strategy, expect=11)
    err = error_of(out, "dirty")
    assert err["data"]["files"] == ["app.py", "feature.txt"]
    assert "app.py" in err["message"] and "feature.txt" in err["message"]
    assert err["data"]["worktree"] == str(repo)
    assert_same_world(before, world(repo, api))
    assert rev(repo, "main") == f["old"] and rev(repo, "para/feat") == f["tip"]
    assert api.session("feat")["status"] == "active"
    if strategy == "squash":  # the human-readable form names the files too
        proc = run_cli("integrate", MSG, "--session", "feat", cwd=repo)
        assert proc.returncode == 11 and proc.stdout == ""
        assert "app.py" in proc.stderr and "feature.txt" in proc.stderr and "Traceback" not in proc.stderr
        assert_same_world(before, world(repo, api))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_target_checked_out_nowhere(api: Api, strategy: str) -> None:
    repo = api.repo
    git("branch", "release", "main", cwd=repo)
    f = prepare(api, strategy, target="release")
    main_before = rev(repo, "main")
    checkout_before = world(repo)[f"wt:{repo}"]
    out = integrate(repo, strategy, "--target", "release")
    new = rev(repo, "release")
    assert out["integration"]["target"] == "release" and out["integration"]["commit"] == new
    check_shape(repo, strategy, f, new, MSG)
    assert rev(repo, "main") == main_before
    assert world(repo)[f"wt:{repo}"] == checkout_before
    assert_landed_cleanly(repo, api, "feat", target="release")
    assert git("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 1


def test_the_backup_keeps_the_original_commits_of_a_rebase(api: Api) -> None:
    """After any integration the session's pre-integration commits stay reachable from a
    refs/para/backup/<name>/ ref (the branch itself is deleted)."""
    repo = api.repo
    f = prepare(api, "rebase")
    integrate(repo, "rebase")
    backups = git("for-each-ref", "--format=%(objectname)", "refs/para/backup/feat/", cwd=repo).split()
    assert any(is_ancestor(repo, f["tip"], b) for b in backups), (
        f"the session's original tip {f['tip'][:10]} is reachable from no backup ref: {backups}")


def test_explicit_target_other_than_the_base(api: Api) -> None:
    """--target overrides the base branch: a session forked from main lands on release."""
    repo = api.repo
    git("branch", "release", "main", cwd=repo)
    advance(repo, "release", {"RELEASE": "1.0\n"}, "release notes")
    start(api, "feat", {"feature.txt": "feature\n"})
    main_before = rev(repo, "main")
    release_before = rev(repo, "release")
    integrate(repo, "squash", "--target", "release")
    assert rev(repo, "main") == main_before
    assert parents(repo, rev(repo, "release")) == [release_before]
    assert changed_files(repo, rev(repo, "release")) == ["feature.txt"]


# ---- regressions of Para's integrate defects (para_spec.md §5.4-5.5, §11.1-11.2) -------

def test_squash_keeps_commits_that_landed_after_the_fork(api: Api) -> None:
    """Para reset --soft to the old merge base and folded other agents' commits into its squash."""
    repo = api.repo
    fork = rev(repo, "main")
    start(api, "first", {"first.txt": "1\n"}, {"first.txt": "1\n2\n"})
    start(api, "feat", {"feature.txt": "feature\n"}, {"lib/new.py": "NEW = True\n"})
    cli_json("integrate", "first lands", "--session", "first", cwd=repo)
    first_commit = rev(repo, "main")
    assert parents(repo, first_commit) == [fork]
    cli_json("integrate", MSG, "--session", "feat", "--strategy", "squash", cwd=repo)
    new = rev(repo, "main")
    assert parents(repo, new) == [first_commit]
    assert first_parent_chain(repo, new, fork) == [new, first_commit]
    assert changed_files(repo, new) == ["feature.txt", "lib/new.py"]
    assert changed_files(repo, first_commit) == ["first.txt"]
    assert message(repo, new) == MSG and message(repo, first_commit) == "first lands"
    assert (repo / "first.txt").read_text() == "1\n2\n"
    assert_checkout_clean_at(repo, "main")


def test_the_users_checked_out_branch_is_never_switched(api: Api) -> None:
    """Para checked the target out in the main checkout; here the user stays on their branch."""
    repo = api.repo
    git("switch", "-q", "-c", "my-work", cwd=repo)
    write(repo, {"mine.txt": "my committed work\n"})
    mine = commit_all(repo, "my work")
    write(repo, {"scratch.txt": "my uncommitted work\n"})
    start(api, "feat", {"feature.txt": "feature\n"}, base="main")
    main_before = rev(repo, "main")
    before = world(repo)[f"wt:{repo}"]
    cli_json("integrate", MSG, "--session", "feat", cwd=repo)
    assert git("symbolic-ref", "HEAD", cwd=repo) == "refs/heads/my-work"
    assert rev(repo, "my-work") == mine
    assert world(repo)[f"wt:{repo}"] == before
    assert parents(repo, rev(repo, "main")) == [main_before]
    assert changed_files(repo, rev(repo, "main")) == ["feature.txt"]


@pytest.mark.parametrize("strategy", ["squash", "merge"])
def test_the_message_is_used(api: Api, strategy: str) -> None:
    """Para ignored MESSAGE for merge and squash."""
    repo = api.repo
    start(api, "feat", {"feature.txt": "feature\n"}, {"lib/new.py": "NEW = True\n"})
    advance(repo, "main", {"other.txt": "other\n"}, "main moves on")
    cli_json("integrate", MSG, "--session", "feat", "--strategy", strategy, cwd=repo)
    assert message(repo, "main") == MSG


def test_the_default_message_of_a_single_commit_squash_is_its_subject(api: Api) -> None:
    repo = api.repo
    start(api, "feat", {"feature.txt": "feature\n"})
    cli_json("integrate", "--session", "feat", cwd=repo)
    assert message(repo, "main") == "feat: change 1"


@pytest.mark.parametrize("strategy", ["merge", "rebase"])
def test_strategy_is_honoured_from_inside_the_worktree(api: Api, strategy: str) -> None:
    """Para ignored --strategy when run from the worktree, and its rebase could never run
    while the worktree existed. Here both run from inside it (a subdirectory, even)."""
    repo = api.repo
    f = prepare(api, strategy)
    out = integrate(repo, strategy, cwd=Path(f["wt"]) / "lib")
    assert out["name"] == "feat" and out["integration"]["strategy"] == strategy
    check_shape(repo, strategy, f, rev(repo, "main"), MSG)
    assert_checkout_clean_at(repo, "main")
    assert_landed_cleanly(repo, api, "feat")


def test_configured_default_strategy_is_honoured_from_inside_the_worktree(api: Api) -> None:
    repo = api.repo
    f = prepare(api, "merge")
    out = cli_json("integrate", MSG, cwd=Path(f["wt"]), env={"PARA_INTEGRATE_STRATEGY": "merge"})
    assert out["integration"]["strategy"] == "merge"
    check_shape(repo, "merge", f, rev(repo, "main"), MSG)


def test_uncommitted_work_in_the_session_is_committed_and_lands(api: Api) -> None:
    repo = api.repo
    wt = start(api, "feat", {"feature.txt": "feature\n"}, uncommitted={"wip.txt": "not committed yet\n",
                                                                      "app.py": APP_EDITED})
    cli_json("integrate", MSG, cwd=wt)
    assert changed_files(repo, "main") == ["app.py", "feature.txt", "wip.txt"]
    assert (repo / "wip.txt").read_text() == "not committed yet\n"
    assert_checkout_clean_at(repo, "main")


def test_a_session_already_contained_in_the_target_lands_as_a_noop(api: Api) -> None:
    repo = api.repo
    start(api, "feat", {"feature.txt": "feature\n"})
    git("merge", "-q", "--ff-only", "para/feat", cwd=repo)
    tip = rev(repo, "main")
    out = cli_json("integrate", "--session", "feat", cwd=repo)
    assert out["status"] == "integrated" and out["integration"]["noop"] is True
    assert rev(repo, "main") == tip


def test_ff_refuses_when_the_target_has_moved(api: Api) -> None:
    repo = api.repo
    f = prepare(api, "squash")  # main has moved on
    before = world(repo, api)
    out = integrate(repo, "ff", expect=4)
    assert "fast-forward" in error_of(out, "wrong_state")["message"]
    assert_same_world(before, world(repo, api))
    assert rev(repo, "main") == f["old"]


def test_finish_with_integrate(api: Api) -> None:
    repo = api.repo
    wt = start(api, "feat", {"feature.txt": "feature\n"}, uncommitted={"wip.txt": "wip\n"})
    main_before = rev(repo, "main")
    out = cli_json("finish", "Finish and land", "--integrate", cwd=wt)
    assert out["status"] == "integrated"
    new = rev(repo, "main")
    assert parents(repo, new) == [main_before]
    assert message(repo, new) == "Finish and land"
    assert changed_files(repo, new) == ["feature.txt", "wip.txt"]
    assert_checkout_clean_at(repo, "main")
    assert_landed_cleanly(repo, api, "feat")


# ---- dry run -------------------------------------------------------------------------

def test_dry_run_predicts_a_clean_integration_and_writes_nothing(api: Api) -> None:
    repo = api.repo
    f = prepare(api, "squash")
    write(Path(f["wt"]), {"wip.txt": "uncommitted\n"})
    before = world(repo, api)
    out = cli_json("integrate", MSG, "--session", "feat", "--dry-run", cwd=repo)
    assert out["dry_run"] is True and out["clean"] is True and out["conflicts"] == []
    assert out["target"] == "main" and out["target_commit"] == f["old"]
    assert out["includes_uncommitted"] is True
    assert [c["subject"] for c in out["commits"]][-2:] == ["feat: change 2", "feat: change 1"]
    assert "wip.txt" in out["diffstat"] and "feature.txt" in out["diffstat"]
    assert_same_world(before, world(repo, api))


def test_dry_run_predicts_conflicts_with_files_and_writes_nothing(api: Api) -> None:
    repo = api.repo
    wt = start(api, "feat", {"app.py": edit_line(BASE_FILES["app.py"], 3, "session's line 3"),
                             "feature.txt": "feature\n"})
    advance(repo, "main", {"app.py": edit_line(BASE_FILES["app.py"], 3, "main's line 3")}, "main edits line 3")
    before = world(repo, api)
    for cwd in (repo, wt):
        out = cli_json("integrate", "--session", "feat", "--dry-run", cwd=cwd)
        assert out["clean"] is False
        assert out["conflicts"] == ["app.py"]
        assert out["hunks"]["app.py"] and all(a <= 3 <= b for a, b in out["hunks"]["app.py"])
    assert_same_world(before, world(repo, api))
    assert api.session("feat")["status"] == "active"


# ---- the check gate ------------------------------------------------------------------

CHECK_SCRIPT = """\
import pathlib, sys
here = pathlib.Path.cwd()
print("checking in", here.name)
print("CHECK-OUTPUT-MARKER")
ok = (here / "feature.txt").exists() and "return 2" in (here / "lib" / "util.py").read_text()
sys.exit(0 if ok and {fail} == 0 else 3)
"""


def check_command(tmp: Path, fail: bool) -> str:
    script = tmp / ("failing_check.py" if fail else "passing_check.py")
    script.write_text(CHECK_SCRIPT.format(fail=int(fail)))
    return f"{sys.executable} {script}"


@pytest.mark.parametrize("strategy", ["squash", "rebase"])
def test_a_failing_check_leaves_everything_unchanged(api: Api, strategy: str, tmp_path: Path) -> None:
    repo = api.repo
    f = prepare(api, strategy)
    before = world(repo, api)
    out = cli_json("integrate", MSG, "--session", "feat", "--strategy", strategy, cwd=repo, expect=12,
                   env={"PARA_INTEGRATE_CHECK": check_command(tmp_path, fail=True)})
    err = error_of(out, "check_failed")
    assert "CHECK-OUTPUT-MARKER" in err["data"]["output"] and err["data"]["exit"] == 3
    assert rev(repo, "main") == f["old"]
    assert_same_world(before, world(repo, api))  # scratch worktree gone, session branch untouched
    assert api.session("feat")["status"] == "active"


def test_a_passing_check_runs_on_the_candidate_and_lands(api: Api, tmp_path: Path) -> None:
    repo = api.repo
    f = prepare(api, "squash")
    out = cli_json("integrate", MSG, "--session", "feat", cwd=repo,
                   env={"PARA_INTEGRATE_CHECK": check_command(tmp_path, fail=False)})
    assert out["status"] == "integrated"
    assert out["integration"]["check"]["ok"] is True
    assert "CHECK-OUTPUT-MARKER" in out["integration"]["check"]["output"]
    check_shape(repo, "squash", f, rev(repo, "main"), MSG)
    assert git("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 1
    assert_checkout_clean_at(repo, "main")
