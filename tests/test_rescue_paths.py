"""The rescue and refusal paths of the session lifecycle and of integration, each run for real.

These are the paths that keep work from being lost when something unusual happens: edits
made while an integration is in flight, a failed attempt, a session in review that
conflicts, a merge completed by hand, a worktree deleted under a paused integration, backup
expiry, archive names taken, a branch renamed behind para's back, an archive without a
session record, a failing `git worktree add`, a check that hangs or does not exist, a target
checkout that cannot follow, and one with a merge in progress. Each test asserts what is in
git afterwards (refs, files, worktrees), the session's state and the events, not only the
exit status.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import branches, commit_file, git, rev, worktree_paths

pytest.register_assert_rewrite("integrate_util")
from integrate_util import (Api, BASE_FILES, BlockingCheck, api, assert_checkout_clean_at,  # noqa: E402,F401
                            assert_landed_cleanly, changed_files, commit_all, cli_json, edit_line, error_of, events,
                            in_progress, last_event, launch, outcome, parents, porcelain, run_cli, start, world,
                            write)

SHARED_SIDECAR = True  # one sidecar for the module (conftest.py), as one user's serves all repos

SESSION_LINE = edit_line(BASE_FILES["app.py"], 3, "line 3, as the session wants it")
MAIN_LINE = edit_line(BASE_FILES["app.py"], 3, "line 3, as main has it now")
RESOLVED = edit_line(BASE_FILES["app.py"], 3, "line 3, resolved")


def backups(repo: Path, name: str) -> dict[str, str]:
    """refs/para/backup/<name>/* -> commit."""
    out = git("for-each-ref", "--format=%(refname) %(objectname)", f"refs/para/backup/{name}/", cwd=repo)
    return dict(line.split() for line in out.splitlines())


def show(repo: Path, spec: str) -> str:
    return git("show", spec, cwd=repo)


def main_edits_line_3(repo: Path) -> str:
    write(repo, {"app.py": MAIN_LINE})
    git("commit", "-q", "-am", "main edits line 3", cwd=repo)
    return rev(repo, "main")


# ---- work written while an integration is in flight, or during a failed attempt ---------------

def test_edits_made_while_the_integration_was_in_flight_are_kept(api: Api, tmp_path: Path) -> None:
    """An agent that keeps writing after `integrate` started: what it wrote after the result
    was computed does not land, but is saved under `<stamp>-leftover` (on top of the landed
    tip) and named in the integration record, before the worktree is removed."""
    repo = api.repo
    wt = start(api, "late", {"feature.txt": "feature\n"})
    tip = rev(wt, "HEAD")
    check = BlockingCheck(tmp_path)
    proc = launch("integrate", "Land the feature", "--session", "late", cwd=repo, env=check.env())
    try:
        check.wait_blocked(proc)
        write(wt, {"feature.txt": "feature, improved after integrate started\n", "notes/late.txt": "late\n"})
    finally:
        check.release(0)
    rc, out = outcome(proc)
    assert rc == 0, out

    s = assert_landed_cleanly(repo, api, "late")
    ref = s["integration"]["leftover"]
    assert out["integration"]["leftover"] == ref and ref in backups(repo, "late")
    assert ref.startswith("refs/para/backup/late/") and ref.endswith("-leftover")
    # The leftover snapshot holds the late edits, on top of the tip that landed.
    assert show(repo, f"{ref}:feature.txt") == "feature, improved after integrate started"
    assert show(repo, f"{ref}:notes/late.txt") == "late"
    assert parents(repo, ref) == [tip]
    # What landed is what was checked: the tip as it was, not the late edits.
    assert show(repo, "main:feature.txt") == "feature"
    assert git("ls-tree", "-r", "--name-only", "main", "notes", cwd=repo) == ""
    assert_checkout_clean_at(repo, "main")


@pytest.mark.parametrize("how", ["detached", "another branch"])
def test_head_moved_while_the_integration_was_in_flight_is_kept(api: Api, tmp_path: Path, how: str) -> None:
    """An agent that moves HEAD while its integration waits (detaches it and commits there, or
    switches to a branch of its own): before the worktree goes, what HEAD holds then is saved
    under `<stamp>-head` (the worktree is looked at again, not taken as it was when the
    integration started)."""
    repo = api.repo
    wt = start(api, "moved", {"feature.txt": "feature\n"})
    check = BlockingCheck(tmp_path)
    proc = launch("integrate", "Land the feature", "--session", "moved", cwd=repo, env=check.env())
    try:
        check.wait_blocked(proc)
        git("checkout", "-q", *(["--detach"] if how == "detached" else ["-b", "mine"]), cwd=wt)
        write(wt, {"after.txt": "written on the moved HEAD\n"})
        commit_all(wt, "after the integration started")
        moved_to = rev(wt, "HEAD")
    finally:
        check.release(0)
    rc, out = outcome(proc)
    assert rc == 0, out
    assert show(repo, "main:feature.txt") == "feature" and "after.txt" not in git("ls-tree", "--name-only", "main", cwd=repo)
    heads = [b for b in out["integration"].get("backups", []) if b["what"] == "head"]
    assert len(heads) == 1 and heads[0]["commit"] == moved_to, out["integration"]
    assert show(repo, f"{heads[0]['ref']}:after.txt") == "written on the moved HEAD"
    assert not wt.exists()


def test_edits_made_during_a_failed_attempt_are_kept(api: Api, tmp_path: Path) -> None:
    """A rebase integration rewrites the session's branch in its worktree; when the check then
    fails, the branch goes back to its tip from before the attempt, and what was edited in the
    worktree meanwhile is saved first under `<stamp>-failed`; main does not move."""
    repo = api.repo
    wt = start(api, "reb", {"feature.txt": "feature\n"})
    pre = rev(wt, "HEAD")
    write(repo, {"README.md": "# main moved on\n"})
    git("commit", "-q", "-am", "main moves on", cwd=repo)
    old = rev(repo, "main")
    check = BlockingCheck(tmp_path)
    seen = last_event(api)
    proc = launch("integrate", "--session", "reb", "--strategy", "rebase", cwd=repo, env=check.env())
    try:
        check.wait_blocked(proc)
        rebased = rev(wt, "HEAD")
        assert rebased != pre and parents(repo, rebased) == [old]  # the attempt rewrote the branch
        write(wt, {"feature.txt": "edited while the check ran\n", "scratch.txt": "scratch\n"})
    finally:
        check.release(1)
    rc, out = outcome(proc)
    assert rc == 12, out
    err = error_of(out, "check_failed")
    assert err["data"]["exit"] == 1 and err["data"]["session"] == "reb"

    assert rev(repo, "main") == old
    assert rev(repo, "para/reb") == pre and rev(wt, "HEAD") == pre
    saved = {r: c for r, c in backups(repo, "reb").items() if r.endswith("-failed")}
    assert len(saved) == 1, backups(repo, "reb")
    (ref, snap), = saved.items()
    assert show(repo, f"{ref}:feature.txt") == "edited while the check ran"
    assert show(repo, f"{ref}:scratch.txt") == "scratch"
    assert parents(repo, snap) == [rebased]
    assert not [r for r in backups(repo, "reb") if r.endswith("-rebase")]  # the attempt's own backup goes
    assert (wt / "feature.txt").read_text() == "feature\n" and in_progress(wt) == []
    s = api.session("reb")
    assert s["status"] == "active" and s["integration"] is None
    (failed,) = events(api, seen, "integration_failed")
    assert failed["session"] == "reb" and failed["data"]["code"] == "check_failed"
    assert failed["data"]["check"]["exit"] == 1
    assert_checkout_clean_at(repo, "main")


# ---- conflicts: a session in review, a merge completed by hand, a worktree that is gone --------

def test_a_conflicting_session_in_review_gets_its_worktree_back_to_resolve_in(api: Api) -> None:
    """A finished session (review: no worktree) that conflicts with its target: the worktree
    is re-created from its branch and the conflict materialized there; resolving it and
    `para continue` land it."""
    repo = api.repo
    wt = start(api, "rev", {"app.py": SESSION_LINE})
    api.call("para/finish", session="rev", message="Line 3 for review")
    assert api.session("rev")["status"] == "review" and not wt.exists()
    old = main_edits_line_3(repo)

    out = cli_json("integrate", "--session", "rev", cwd=repo, expect=7)
    err = error_of(out, "conflict")
    assert err["data"]["files"] == ["app.py"] and err["data"]["worktree"] == str(wt)
    assert wt.is_dir() and str(wt) in worktree_paths(repo)
    assert git("symbolic-ref", "HEAD", cwd=wt) == "refs/heads/para/rev"
    assert in_progress(wt) == ["MERGE_HEAD"] and "<<<<<<<" in (wt / "app.py").read_text()
    assert api.session("rev")["status"] == "conflicted" and rev(repo, "main") == old

    write(wt, {"app.py": RESOLVED})
    landed = cli_json("continue", "rev", cwd=repo)
    assert landed["status"] == "integrated"
    assert show(repo, "main:app.py") + "\n" == RESOLVED and parents(repo, "main") == [old]
    assert_landed_cleanly(repo, api, "rev")
    assert_checkout_clean_at(repo, "main")


@pytest.mark.parametrize("strategy,finish_by_hand", [
    ("squash", [["commit", "--no-edit", "-q"]]),
    ("rebase", [["-c", "core.editor=true", "rebase", "--continue"]]),
], ids=["merge-committed-by-hand", "rebase-continued-by-hand"])
def test_continue_after_the_user_completed_the_merge_by_hand(api: Api, strategy: str,
                                                             finish_by_hand: list[list[str]]) -> None:
    """docs/protocol.md: resolving by hand with `git commit` / `git rebase --continue` before
    `para continue` is fine: continue finds nothing left to complete and lands the result."""
    repo = api.repo
    wt = start(api, "hand", {"app.py": SESSION_LINE, "feature.txt": "feature\n"})
    old = main_edits_line_3(repo)
    cli_json("integrate", "Hand made", "--session", "hand", "--strategy", strategy, cwd=repo, expect=7)
    write(wt, {"app.py": RESOLVED})
    git("add", "app.py", cwd=wt)
    for args in finish_by_hand:
        git(*args, cwd=wt)
    assert in_progress(wt) == [] and porcelain(wt) == []
    resolved_tip = rev(wt, "HEAD")

    landed = cli_json("continue", "hand", cwd=repo)
    assert landed["status"] == "integrated"
    assert show(repo, "main:app.py") + "\n" == RESOLVED and show(repo, "main:feature.txt") == "feature"
    if strategy == "rebase":
        assert rev(repo, "main") == resolved_tip and parents(repo, resolved_tip) == [old]
    else:
        assert parents(repo, "main") == [old] and changed_files(repo, "main") == ["app.py", "feature.txt"]
    assert_landed_cleanly(repo, api, "hand")
    assert_checkout_clean_at(repo, "main")


def test_continue_and_abort_when_the_worktree_of_a_paused_integration_is_gone(api: Api) -> None:
    """The worktree of a conflicted session was deleted: `continue` refuses (naming abort),
    `abort` puts the branch back at its pre-integration commit without a worktree, and
    `resume` then gives the session a worktree again."""
    repo = api.repo
    wt = start(api, "gone", {"app.py": SESSION_LINE, "feature.txt": "feature\n"})
    pre = rev(wt, "HEAD")
    old = main_edits_line_3(repo)
    cli_json("integrate", "--session", "gone", cwd=repo, expect=7)
    shutil.rmtree(wt)

    err = error_of(cli_json("continue", "gone", cwd=repo, expect=4), "wrong_state")
    assert "is gone" in err["message"] and "para abort gone" in err["message"]
    assert api.session("gone")["status"] == "conflicted" and rev(repo, "main") == old

    seen = last_event(api)
    out = cli_json("abort", "gone", cwd=repo)
    assert out["status"] == "active" and out["restored"] == pre and out["saved"] is None
    assert rev(repo, "para/gone") == pre and rev(repo, "main") == old
    assert backups(repo, "gone") == {}
    assert [e["data"] for e in events(api, seen, "aborted")] == [{"restored": pre, "saved": None}]
    assert api.session("gone")["state"] == "missing"  # active, but its worktree is gone

    back = cli_json("resume", "gone", cwd=repo)
    assert back["recreated"] is True and back["state"] == "active"
    assert (wt / "feature.txt").read_text() == "feature\n" and in_progress(wt) == [] and porcelain(wt) == []
    assert_checkout_clean_at(repo, "main")


# ---- clean: expired backups -------------------------------------------------------------------

DAY = 86400


def _stamp(seconds_ago: int) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() - seconds_ago))


def test_clean_deletes_only_backups_older_than_backup_days(api: Api) -> None:
    """`clean.backup_days` (default 30): `para clean` deletes refs/para/backup/* made longer ago
    than that, keeps younger ones, and `--dry-run` only lists them. A backup's age is when para
    made it (the UTC stamp in its name), never its commit's date: work committed 40 days ago and
    saved today is kept (S2 item 3: it used to be deleted the day it was saved). A ref without a
    stamp is kept and listed with the reason."""
    repo = api.repo
    wt = start(api, "old", uncommitted={"old.txt": "old\n"})
    forty_days_ago = f"@{int(time.time()) - 40 * DAY} +0000"
    git("add", "-A", cwd=wt)
    git("commit", "-q", "-m", "old work", cwd=wt, env={"GIT_COMMITTER_DATE": forty_days_ago})
    start(api, "new", {"new.txt": "new\n"})
    for name in ("old", "new"):
        cli_json("integrate", f"{name} lands", "--session", name, cwd=repo)
    (old_ref, old_sha), = backups(repo, "old").items()
    (new_ref, new_sha), = backups(repo, "new").items()
    # A backup made 40 days ago (of a commit made today), and one whose name has no stamp.
    expired_ref = f"refs/para/backup/gone/{_stamp(40 * DAY)}-discarded"
    git("update-ref", expired_ref, new_sha, cwd=repo)
    git("update-ref", "refs/para/backup/by-hand", new_sha, cwd=repo)
    before = world(repo)

    dry = cli_json("clean", "--dry-run", cwd=repo)
    expired = [a for a in dry["actions"] if a["kind"] == "delete_backup"]
    assert expired == [{"kind": "delete_backup", "ref": expired_ref, "commit": new_sha,
                        "reason": "backup older than 30 days"}]
    assert [k["ref"] for k in dry["kept"] if k["kind"] == "delete_backup"] == ["refs/para/backup/by-hand"]
    human = run_cli("clean", "--dry-run", cwd=repo)
    assert human.returncode == 0 and "Traceback" not in human.stderr, human.stderr
    assert f"would delete backup: {expired_ref}" in human.stdout
    assert "kept refs/para/backup/by-hand: its age is unknown" in human.stdout, human.stdout
    assert world(repo) == before

    seen = last_event(api)
    done = cli_json("clean", cwd=repo)
    assert [a for a in done["actions"] if a["kind"] == "delete_backup"] == expired
    assert rev(repo, expired_ref) is None
    assert backups(repo, "old") == {old_ref: old_sha} and backups(repo, "new") == {new_ref: new_sha}
    assert rev(repo, "refs/para/backup/by-hand") == new_sha
    assert [e["data"] for e in events(api, seen, "cleaned")] == [{"actions": len(done["actions"])}]

    # clean.backup_days is at least 1: a backup made today never goes in the next clean, not
    # even when asked (red team RB1: a config change then two cleans deleted unmerged work).
    cli_json("clean", cwd=repo, env={"PARA_CLEAN_BACKUP_DAYS": "0"}, expect=6)
    cli_json("clean", cwd=repo, env={"PARA_CLEAN_BACKUP_DAYS": "1"})
    assert backups(repo, "old") == {old_ref: old_sha} and backups(repo, "new") == {new_ref: new_sha}
    assert rev(repo, "refs/para/backup/by-hand") == new_sha
    assert_checkout_clean_at(repo, "main")


def test_clean_ages_an_archive_by_when_it_was_cancelled(api: Api) -> None:
    """An integrated session's work cancelled today lives on as an archive for
    `clean.archive_days`, however old its commits; an archive named 40 days ago goes."""
    repo = api.repo
    wt = start(api, "arc", uncommitted={"arc.txt": "arc\n"})
    git("add", "-A", cwd=wt)
    git("commit", "-q", "-m", "old work", cwd=wt, env={"GIT_COMMITTER_DATE": f"@{int(time.time()) - 40 * DAY} +0000"})
    tip = rev(wt, "HEAD")
    commit_file(repo, "arc.txt", "arc\n", "the same work on main")  # integrated by content
    archive = cli_json("cancel", "arc", cwd=repo)["archived_branch"]
    old_archive = f"para/archived/{_stamp(40 * DAY)}/arc"
    git("branch", old_archive, tip, cwd=repo)
    deleted = [a["branch"] for a in cli_json("clean", cwd=repo)["actions"] if a["kind"] == "delete_branch"]
    assert deleted == [old_archive]
    assert archive in branches(repo) and old_archive not in branches(repo)


# ---- names already taken, branches moved behind para's back ----------------------------------

def test_an_archive_name_already_taken_in_the_same_second_is_never_overwritten(api: Api) -> None:
    """Cancel archives to para/archived/<stamp>/<name> (stamp: UTC, to the second). If that name
    is taken, `-2`, `-3`, ... are tried; an existing archive is never moved. (The names for the
    next two minutes are taken beforehand, so the collision does not depend on timing.)"""
    repo = api.repo
    wt = start(api, "twin", {"twin.txt": "twin\n"})
    tip = rev(wt, "HEAD")
    decoy = rev(repo, "main")
    now = int(time.time())
    stamps = [time.strftime("%Y%m%d-%H%M%S", time.gmtime(t)) for t in range(now - 2, now + 120)]
    taken = [f"refs/heads/para/archived/{s}{suffix}/twin" for s in stamps for suffix in ("", "-2")]
    git("update-ref", "--stdin", cwd=repo, input="".join(f"create {r} {decoy}\n" for r in taken))

    out = cli_json("cancel", "twin", cwd=repo)
    archive = out["archived_branch"]
    stamp = archive.split("/")[2]
    assert archive == f"para/archived/{stamp}/twin" and stamp.endswith("-3") and stamp[:-2] in stamps
    assert rev(repo, archive) == tip
    for r in taken:
        assert rev(repo, r) == decoy, r  # every archive that was there is untouched
    assert api.session("twin")["status"] == "cancelled" and not wt.exists()


def test_a_branch_renamed_outside_para_is_adopted(api: Api) -> None:
    """`git branch -m` of a session's branch inside its worktree: para records the new name
    (with a note and an `adopted` event) instead of fighting it, and integrates that branch."""
    repo = api.repo
    wt = start(api, "ren", {"ren.txt": "renamed work\n"})
    git("branch", "-m", "para/ren", "feature/ren", cwd=wt)
    seen = last_event(api)

    s = {x["name"]: x for x in cli_json("list", "--all", cwd=repo)["sessions"]}["ren"]
    note = "branch renamed outside para: para/ren -> feature/ren (adopted)"
    assert s["branch"] == "feature/ren" and s["state"] == "active" and note in s["notes"]
    assert [e["data"] for e in events(api, seen, "adopted")] == [{"note": note}]
    cli_json("list", cwd=repo)
    assert len(events(api, seen, "adopted")) == 1  # adopted once, not on every list

    cli_json("integrate", "Renamed work", "--session", "ren", cwd=repo)
    assert show(repo, "main:ren.txt") == "renamed work"
    assert "feature/ren" not in branches(repo)
    assert_landed_cleanly(repo, api, "ren")


def test_recover_adopts_the_newest_archive_of_a_name_without_a_session_record(api: Api) -> None:
    """An archived branch para knows nothing about (made by Para, or a lost store): `para
    recover NAME` adopts the newest archive of that name as a session, with a note."""
    repo = api.repo
    fork = rev(repo, "main")
    archives = {}
    for stamp, text in (("20240101-000000", "older\n"), ("20240102-000000", "newest\n")):
        git("checkout", "-q", "-b", "tmp", fork, cwd=repo)
        write(repo, {"ghost.txt": text})
        git("add", "ghost.txt", cwd=repo)
        git("commit", "-q", "-m", f"ghost work {stamp}", cwd=repo)
        git("checkout", "-q", "main", cwd=repo)
        archives[stamp] = f"para/archived/{stamp}/ghost"
        git("branch", "-m", "tmp", archives[stamp], cwd=repo)
    newest_tip = rev(repo, archives["20240102-000000"])
    older_tip = rev(repo, archives["20240101-000000"])
    seen = last_event(api)

    s = cli_json("recover", "ghost", cwd=repo)
    assert s["status"] == "active" and s["branch"] == "para/ghost" and s["base_commit"] == fork
    assert f"adopted from archived branch {archives['20240102-000000']}" in s["notes"]
    assert rev(repo, "para/ghost") == newest_tip
    assert (Path(s["worktree"]) / "ghost.txt").read_text() == "newest\n"
    assert archives["20240102-000000"] not in branches(repo)
    assert rev(repo, archives["20240101-000000"]) == older_tip  # the older archive stays
    assert [e["session"] for e in events(api, seen, "recovered")] == ["ghost"]


def test_a_start_whose_worktree_add_fails_leaves_nothing_behind(api: Api) -> None:
    """`git worktree add` fails (here: a post-checkout hook refuses): start reports git_failed
    and undoes everything it did (branch, worktree, record); the name stays free."""
    repo = api.repo
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\necho 'post-checkout refuses' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = world(repo)
    err = error_of(cli_json("start", "bad", cwd=repo, expect=5), "git_failed")
    assert "post-checkout refuses" in err["message"], err
    assert world(repo) == before
    assert "para/bad" not in branches(repo) and not (repo / ".para" / "worktrees" / "bad").exists()
    assert "bad" not in api.sessions()

    hook.unlink()
    assert cli_json("start", "bad", cwd=repo)["state"] == "active"


# ---- the check, and the target's checkout ----------------------------------------------------

@pytest.mark.parametrize("case,exit_,says", [
    ("timeout", None, "(timed out)"),
    ("not-found", 127, "(exit 127)"),
])
def test_a_check_that_hangs_or_does_not_exist_moves_nothing(api: Api, tmp_path: Path, case: str,
                                                            exit_: int | None, says: str) -> None:
    """integrate.check_timeout ends a check that runs too long (`exit` null); a check command
    that does not exist fails too (`exit` 127, as a shell says "not found", and the output names
    it). Either way: check_failed, main unchanged, the session active with its branch as it
    was, the scratch worktree removed."""
    repo = api.repo
    wt = start(api, "chk", {"feature.txt": "feature\n"})
    pre, old = rev(wt, "HEAD"), rev(repo, "main")
    if case == "timeout":
        check = BlockingCheck(tmp_path)  # never released
        env = check.env(PARA_INTEGRATE_CHECK_TIMEOUT="1")
    else:
        env = {"PARA_INTEGRATE_CHECK": "no-such-check-command --flag"}
    seen = last_event(api)
    err = error_of(cli_json("integrate", "--session", "chk", cwd=repo, env=env, expect=12), "check_failed")
    assert err["data"]["exit"] == exit_ and says in err["message"], err
    if case == "not-found":
        assert err["data"]["output"] == "check command not found: no-such-check-command"
    assert rev(repo, "main") == old and rev(repo, "para/chk") == pre
    s = api.session("chk")
    assert s["status"] == "active" and s["integration"] is None
    assert worktree_paths(repo) == [str(repo), str(wt)]  # the scratch worktree is gone
    scratch = repo / ".para" / "scratch"
    assert not scratch.exists() or list(scratch.iterdir()) == []
    (failed,) = events(api, seen, "integration_failed")
    assert failed["data"]["code"] == "check_failed" and failed["data"]["check"]["exit"] == exit_
    assert_checkout_clean_at(repo, "main")


def test_a_checkout_that_cannot_follow_undoes_the_target_move(api: Api) -> None:
    """The target moved, but the worktree that has it checked out cannot be brought along
    (here its index is locked by another git process): the move is undone, the error says
    nothing changed, and once the lock is gone the same integration lands."""
    repo = api.repo
    wt = start(api, "follow", {"feature.txt": "feature\n"})
    pre, old = rev(wt, "HEAD"), rev(repo, "main")
    lock = Path(git("rev-parse", "--path-format=absolute", "--git-path", "index.lock", cwd=repo))
    lock.write_text("")
    try:
        before = world(repo)
        err = error_of(cli_json("integrate", "--session", "follow", cwd=repo, expect=11), "dirty")
        assert "nothing was changed" in err["message"] and err["data"]["worktree"] == str(repo)
        assert rev(repo, "main") == old and rev(repo, "para/follow") == pre
        assert world(repo) == before
        assert git("reflog", "-1", "--format=%gs", "refs/heads/main", cwd=repo) == "para: undo integration"
        assert api.session("follow")["status"] == "active"
    finally:
        lock.unlink()
    cli_json("integrate", "--session", "follow", cwd=repo)
    assert (repo / "feature.txt").read_text() == "feature\n"
    assert_checkout_clean_at(repo, "main")


def test_a_target_checkout_with_a_merge_in_progress_is_left_alone(api: Api) -> None:
    """The main checkout is in the middle of a conflicted `git merge`: integrating into main
    is refused with `dirty`, naming the merge, and nothing moves or changes there."""
    repo = api.repo
    start(api, "wait", {"feature.txt": "feature\n"})
    git("checkout", "-q", "-b", "other", cwd=repo)
    write(repo, {"README.md": "# other\n"})
    git("commit", "-q", "-am", "other edits README", cwd=repo)
    git("checkout", "-q", "main", cwd=repo)
    write(repo, {"README.md": "# main\n"})
    git("commit", "-q", "-am", "main edits README", cwd=repo)
    git("merge", "-q", "other", cwd=repo, check=False)  # stops on the README conflict
    assert in_progress(repo) == ["MERGE_HEAD"]
    before = world(repo, api)

    err = error_of(cli_json("integrate", "--session", "wait", cwd=repo, expect=11), "dirty")
    assert "merge in progress" in err["message"] and err["data"]["worktree"] == str(repo)
    assert world(repo, api) == before
    assert in_progress(repo) == ["MERGE_HEAD"] and "<<<<<<<" in (repo / "README.md").read_text()
