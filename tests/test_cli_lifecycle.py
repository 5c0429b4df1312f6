"""The session lifecycle through the real `para` CLI (para_rpc/cli.py and the
service behind it): start, list, show, finish, cancel, recover, resume, clean.

A session is the branch `para/<name>`, the worktree `<repo>/.para/worktrees/<name>`
and a row in `<repo>/.para/para.db`; every test checks git itself, not just
what para reports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from para_rpc.errors import Code
from para_rpc.names import validate_session_name

from conftest import branches, commit_file, git, git_state, make_repo, rev, worktree_paths

pytestmark = pytest.mark.usefixtures("sidecar")
SHARED_SIDECAR = True  # one sidecar serves every test repository of this module (see conftest)


def archive_re(name: str) -> str:
    """`para/archived/<UTC yyyymmdd-hhmmss>[-n]/<name>`"""
    return r"para/archived/\d{8}-\d{6}(-\d+)?/" + re.escape(name)


def wt_path(repo: Path, name: str) -> Path:
    return repo / ".para" / "worktrees" / name


def log_subjects(repo: Path, rng: str) -> list[str]:
    return git("log", "--format=%s", rng, cwd=repo).splitlines()


def file_at(repo: Path, revision: str, path: str) -> str | None:
    """The content of `path` at `revision`, or None if it is not there."""
    res = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=repo, capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else None


def backups(repo: Path, name: str = "") -> dict[str, str]:
    out = git("for-each-ref", "--format=%(refname) %(objectname)", f"refs/para/backup/{name}", cwd=repo)
    return dict(line.split(" ") for line in out.splitlines())


def by_name(listing: dict) -> dict[str, dict]:
    return {s["name"]: s for s in listing["sessions"]}


# ---- start -------------------------------------------------------------------------------

def test_start_with_a_name_creates_branch_worktree_and_session(para, para_json, repo):
    main_tip = rev(repo, "main")
    s = para_json("start", "login")
    path = wt_path(repo, "login")
    assert s["name"] == "login"
    assert s["status"] == "active" and s["state"] == "active"
    assert s["branch"] == "para/login"
    assert s["worktree"] == str(path)
    assert s["base_branch"] == "main" and s["base_commit"] == main_tip
    assert s["worktree_exists"] and s["branch_exists"] and s["ahead"] == 0
    # Git agrees.
    assert rev(repo, "para/login") == main_tip
    assert str(path) in worktree_paths(repo)
    assert git("symbolic-ref", "--short", "HEAD", cwd=path) == "para/login"
    assert (path / "README.md").read_text() == "# demo\n"
    assert git("status", "--porcelain", cwd=path) == ""


def test_start_prints_a_human_summary(para, repo):
    out = para("start", "human").stdout
    assert "Started session human" in out
    assert "para/human" in out and str(wt_path(repo, "human")) in out


def test_start_without_a_name_picks_a_friendly_free_name(para_json, repo):
    names = {para_json("start")["name"] for _ in range(3)}
    assert len(names) == 3
    for name in names:
        assert re.fullmatch(r"[a-z]+_[a-z]+(_\d+)?", name)
        validate_session_name(name)
        assert rev(repo, f"para/{name}") == rev(repo, "main")
        assert wt_path(repo, name).is_dir()


def test_start_with_base_forks_from_that_branch(para_json, repo):
    git("branch", "develop", cwd=repo)
    git("checkout", "-q", "develop", cwd=repo)
    develop_tip = commit_file(repo, "dev.txt", "dev\n", "develop work")
    git("checkout", "-q", "main", cwd=repo)
    s = para_json("start", "feat", "--base", "develop")
    assert s["base_branch"] == "develop" and s["base_commit"] == develop_tip
    assert rev(repo, "para/feat") == develop_tip
    assert (wt_path(repo, "feat") / "dev.txt").exists()


def test_start_forks_from_main_never_from_the_branch_checked_out_in_cwd(para, para_json, repo):
    main_tip = rev(repo, "main")
    git("checkout", "-q", "-b", "experiment", cwd=repo)
    commit_file(repo, "exp1.txt", "1\n", "experiment 1")
    experiment_tip = commit_file(repo, "exp2.txt", "2\n", "experiment 2")
    (repo / "uncommitted.txt").write_text("not for the session\n")

    s = para_json("start", "clean")
    assert s["base_branch"] == "main" and s["base_commit"] == main_tip != experiment_tip
    assert rev(repo, "para/clean") == main_tip
    path = wt_path(repo, "clean")
    assert not (path / "exp1.txt").exists() and not (path / "uncommitted.txt").exists()
    # The user's checkout is untouched.
    assert git("symbolic-ref", "--short", "HEAD", cwd=repo) == "experiment"
    assert rev(repo, "HEAD") == experiment_tip

    # Starting from inside another session's worktree (with its own commits) also forks from main.
    commit_file(path, "inside.txt", "x\n", "session work")
    (path / "sub").mkdir()
    nested = para_json("start", "second", cwd=path / "sub")
    assert nested["base_commit"] == main_tip
    assert rev(repo, "para/second") == main_tip


def test_base_branch_follows_origin_head_when_there_is_a_remote(para_json, repo, tmp_path):
    # A clone whose remote's default branch is `trunk` and has no main.
    git("branch", "-m", "main", "trunk", cwd=repo)
    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    clone = Path(os.path.realpath(clone))
    assert git("symbolic-ref", "refs/remotes/origin/HEAD", cwd=clone) == "refs/remotes/origin/trunk"
    s = para_json("start", "cloned", cwd=clone)
    assert s["base_branch"] == "trunk"
    assert s["base_commit"] == rev(clone, "trunk")


def test_a_repository_path_with_spaces_and_unicode(para, para_json, tmp_path):
    odd = make_repo(tmp_path / "my repo – ünïcode")
    s = para_json("start", "odd", cwd=odd)
    path = Path(s["worktree"])
    assert path == odd / ".para" / "worktrees" / "odd" and path.is_dir()
    (path / "file with space.txt").write_text("x\n")
    para("finish", "Odd path", cwd=path)
    assert file_at(odd, "para/odd", "file with space.txt") == "x\n"


# ---- list and show ------------------------------------------------------------------------

@pytest.fixture
def two_sessions(repo, svc) -> Path:
    """Sessions `one` and `two`; returns a directory deep inside `one`'s worktree."""
    svc("start", name="one")
    svc("start", name="two")
    deep = wt_path(repo, "one") / "src" / "deep"
    deep.mkdir(parents=True)
    return deep


def test_list_names_the_session_the_cwd_is_in(para_json, repo, two_sessions):
    inside = para_json("list", cwd=two_sessions)
    assert inside["repo"] == str(repo)
    assert inside["current"] == "one"
    outside = para_json("list")
    assert outside["current"] is None
    assert not any(s["current"] for s in outside["sessions"])


def test_list_marks_the_current_session_row(para, para_json, repo, two_sessions):
    deep = two_sessions
    inside = para_json("list", cwd=deep)
    assert {n: s["current"] for n, s in by_name(inside).items()} == {"one": True, "two": False}
    table = para("list", cwd=deep).stdout.splitlines()
    marked = [line for line in table if line.lstrip().startswith("*")]
    assert len(marked) == 1 and "one" in marked[0] and "para/one" in marked[0]


def test_list_reports_dirty_and_missing_states(para, para_json, repo, svc):
    svc("start", name="dirty")
    svc("start", name="gone")
    (wt_path(repo, "dirty") / "new.txt").write_text("x\n")
    shutil.rmtree(wt_path(repo, "gone"))
    states = {n: s["state"] for n, s in by_name(para_json("list")).items()}
    assert states == {"dirty": "dirty", "gone": "missing"}
    assert by_name(para_json("list"))["dirty"]["dirty"] is True


def test_list_is_empty_in_a_fresh_repository(para, para_json, repo):
    assert para_json("list")["sessions"] == []
    assert "No sessions" in para("list").stdout


def test_show_reports_commits_and_changes(para, para_json, repo, svc):
    svc("start", name="shown")
    path = wt_path(repo, "shown")
    commit_file(path, "a.txt", "a\n", "add a")
    (path / "b.txt").write_text("b\n")

    s = para_json("show", "shown")
    assert s["name"] == "shown" and s["state"] == "dirty" and s["dirty"] is True
    assert s["ahead"] == 1
    assert [c["subject"] for c in s["commits"]] == ["add a"]
    assert "1 file changed" in s["diffstat"]

    # Without a name, the session the cwd is in.
    assert para_json("show", cwd=path)["name"] == "shown"
    human = para("show", "shown").stdout
    assert "Session shown" in human and "add a" in human


# ---- finish -------------------------------------------------------------------------------

def make_work(path: Path) -> None:
    """Three commits, a tracked edit and an untracked file: a typical session."""
    for i in range(3):
        commit_file(path, f"step{i}.txt", f"{i}\n", f"wip {i}")
    (path / "README.md").write_text("# demo\nedited\n")
    (path / "notes" / "todo.txt").parent.mkdir(exist_ok=True)
    (path / "notes" / "todo.txt").write_text("untracked\n")


def assert_work_in(repo: Path, revision: str) -> None:
    for i in range(3):
        assert file_at(repo, revision, f"step{i}.txt") == f"{i}\n"
    assert file_at(repo, revision, "README.md") == "# demo\nedited\n"
    assert file_at(repo, revision, "notes/todo.txt") == "untracked\n"


def test_finish_from_inside_squashes_everything_into_one_commit(para, para_json, repo, svc):
    svc("start", name="feature")
    path = wt_path(repo, "feature")
    make_work(path)
    pre_head = rev(path, "HEAD")
    base = rev(repo, "main")

    s = para_json("finish", "Add the feature", cwd=path / "notes")
    assert s["status"] == "review" and s["state"] == "review"
    assert s["branch"] == "para/feature" and s["ahead"] == 1
    # One commit on top of the base, with the message, holding everything.
    assert git("rev-list", "--count", f"{base}..para/feature", cwd=repo) == "1"
    assert rev(repo, "para/feature^") == base
    assert git("log", "-1", "--format=%B", "para/feature", cwd=repo) == "Add the feature"
    assert_work_in(repo, "para/feature")
    # The worktree is gone, the branch stays for review.
    assert not path.exists()
    assert str(path) not in worktree_paths(repo)
    assert "para/feature" in branches(repo)
    # The pre-squash history stays reachable from a backup ref.
    (backup,) = backups(repo, "feature").values()
    git("merge-base", "--is-ancestor", pre_head, backup, cwd=repo)  # (fails unless it is)
    assert log_subjects(repo, f"main..{backup}")[1:] == ["wip 2", "wip 1", "wip 0"]
    assert_work_in(repo, backup)
    assert rev(repo, "main") == base


def test_finish_from_the_main_checkout_with_session(para, para_json, repo, svc):
    svc("start", name="remote")
    path = wt_path(repo, "remote")
    (path / "file.txt").write_text("content\n")
    out = para("finish", "Remote finish", "--session", "remote").stdout
    assert "ready for review" in out
    assert file_at(repo, "para/remote", "file.txt") == "content\n"
    assert git("log", "-1", "--format=%s", "para/remote", cwd=repo) == "Remote finish"
    assert by_name(para_json("list"))["remote"]["status"] == "review"
    assert not path.exists()


def test_finish_no_squash_keeps_the_commits(para, repo, svc):
    svc("start", name="keep")
    path = wt_path(repo, "keep")
    make_work(path)
    para("finish", "Final touches", "--no-squash", cwd=path)
    assert log_subjects(repo, "main..para/keep") == ["Final touches", "wip 2", "wip 1", "wip 0"]
    assert_work_in(repo, "para/keep")


def test_finish_branch_renames_the_branch(para, para_json, repo, svc):
    svc("start", name="renamed")
    path = wt_path(repo, "renamed")
    (path / "x.txt").write_text("x\n")
    s = para_json("finish", "Rename me", "--branch", "feature/login", cwd=path)
    assert s["branch"] == "feature/login"
    assert "feature/login" in branches(repo) and "para/renamed" not in branches(repo)
    assert file_at(repo, "feature/login", "x.txt") == "x\n"
    assert by_name(para_json("list"))["renamed"]["branch"] == "feature/login"


def test_finish_with_nothing_to_commit_exits_10_and_changes_nothing(para, para_json, repo, svc):
    svc("start", name="empty")
    path = wt_path(repo, "empty")
    before = (git_state(repo), para_json("list"))
    proc = para("finish", "Nothing", cwd=path, check=False)
    assert proc.returncode == Code.nothing_to_do.exit == 10
    assert "no changes to finish" in proc.stderr
    assert (git_state(repo), para_json("list")) == before
    assert path.is_dir()


def test_finish_of_a_single_commit_with_the_same_message_is_kept_as_is(para, repo, svc):
    svc("start", name="single")
    path = wt_path(repo, "single")
    sha = commit_file(path, "one.txt", "1\n", "The message")
    para("finish", "The message", cwd=path)
    assert rev(repo, "para/single") == sha


# ---- cancel and recover -----------------------------------------------------------------

def test_cancel_commits_uncommitted_work_to_the_archived_branch(para, para_json, repo, svc):
    svc("start", name="doomed")
    path = wt_path(repo, "doomed")
    commit_file(path, "committed.txt", "c\n", "committed work")
    (path / "README.md").write_text("tracked edit\n")
    (path / "deep" / "dir").mkdir(parents=True)
    (path / "deep" / "dir" / "new.txt").write_text("untracked\n")

    s = para_json("cancel", "doomed")
    archive = s["archived_branch"]
    assert re.fullmatch(archive_re("doomed"), archive)
    assert s["status"] == "cancelled"
    assert s["saved"]["branch"] == archive and s["saved"]["commit"] == rev(repo, archive)
    assert file_at(repo, archive, "README.md") == "tracked edit\n"
    assert file_at(repo, archive, "deep/dir/new.txt") == "untracked\n"
    assert file_at(repo, archive, "committed.txt") == "c\n"
    assert log_subjects(repo, f"main..{archive}")[1:] == ["committed work"]
    # The branch moved to the archive; the worktree is gone.
    assert "para/doomed" not in branches(repo)
    assert not path.exists() and str(path) not in worktree_paths(repo)
    # Cancelled sessions are hidden from `list` but shown by `list --all`.
    assert "doomed" not in by_name(para_json("list"))
    assert by_name(para_json("list", "--all"))["doomed"]["status"] == "cancelled"


def test_cancel_discard_keeps_a_backup_ref(para, para_json, repo, svc):
    svc("start", name="throwaway")
    path = wt_path(repo, "throwaway")
    head = rev(path, "HEAD")
    (path / "README.md").write_text("edit\n")
    (path / "scratch.txt").write_text("scratch\n")

    s = para_json("cancel", "throwaway", "--discard")
    archive = s["archived_branch"]
    # Nothing was committed onto the session's branch...
    assert rev(repo, archive) == head
    # ...but the work is kept under refs/para/backup/.
    ref = s["saved"]["ref"]
    assert ref.startswith("refs/para/backup/throwaway/")
    assert backups(repo, "throwaway") == {ref: s["saved"]["commit"]}
    assert file_at(repo, ref, "README.md") == "edit\n"
    assert file_at(repo, ref, "scratch.txt") == "scratch\n"
    assert not path.exists()


def test_cancel_of_a_review_session_archives_its_branch(para, para_json, repo, svc):
    svc("start", name="reviewed")
    (wt_path(repo, "reviewed") / "r.txt").write_text("r\n")
    svc("finish", message="Reviewed work", session="reviewed")
    head = rev(repo, "para/reviewed")
    s = para_json("cancel", "reviewed")
    assert s["status"] == "cancelled" and rev(repo, s["archived_branch"]) == head


def test_recover_restores_the_branch_and_worktree_with_the_saved_work(para, para_json, repo, svc):
    svc("start", name="phoenix")
    path = wt_path(repo, "phoenix")
    commit_file(path, "kept.txt", "kept\n", "kept work")
    (path / "README.md").write_text("tracked edit\n")
    (path / "untracked.txt").write_text("untracked\n")
    archive = para_json("cancel", "phoenix")["archived_branch"]
    archived_tip = rev(repo, archive)

    s = para_json("recover", "phoenix")
    assert s["status"] == "active" and s["state"] == "active"
    assert s["branch"] == "para/phoenix" and s["worktree"] == str(path)
    assert s["archived_branch"] is None
    assert rev(repo, "para/phoenix") == archived_tip
    assert archive not in branches(repo)
    assert str(path) in worktree_paths(repo)
    assert git("symbolic-ref", "--short", "HEAD", cwd=path) == "para/phoenix"
    assert (path / "kept.txt").read_text() == "kept\n"
    assert (path / "README.md").read_text() == "tracked edit\n"
    assert (path / "untracked.txt").read_text() == "untracked\n"
    assert by_name(para_json("list"))["phoenix"]["status"] == "active"


def test_recover_after_the_worktree_was_deleted_by_hand(para, para_json, repo, svc):
    svc("start", name="wiped")
    path = wt_path(repo, "wiped")
    sha = commit_file(path, "work.txt", "work\n", "committed work")
    shutil.rmtree(path)
    para("cancel", "wiped")
    s = para_json("recover", "wiped")
    assert s["state"] == "active", f"recovered session is {s['state']}"
    assert path.is_dir() and rev(path, "HEAD") == sha
    assert git("symbolic-ref", "--short", "HEAD", cwd=path) == "para/wiped"
    assert "prunable" not in git("worktree", "list", "--porcelain", cwd=repo)


def test_recover_without_a_name_takes_the_only_cancelled_session(para, para_json, repo, svc):
    svc("start", name="lonely")
    svc("cancel", session="lonely")
    assert para_json("recover")["name"] == "lonely"


def test_a_recovered_session_can_be_cancelled_and_recovered_again(para, para_json, repo, svc):
    svc("start", name="again")
    for i in range(2):
        (wt_path(repo, "again") / f"f{i}.txt").write_text(f"{i}\n")
        svc("cancel", session="again")
        svc("recover", session="again")
    path = wt_path(repo, "again")
    assert (path / "f0.txt").exists() and (path / "f1.txt").exists()
    assert [b for b in branches(repo) if b.startswith("para/")] == ["para/again"]


# ---- resume -------------------------------------------------------------------------------

def test_resume_recreates_a_worktree_removed_by_hand(para, para_json, repo, svc):
    svc("start", name="lost")
    path = wt_path(repo, "lost")
    sha = commit_file(path, "work.txt", "work\n", "committed work")
    shutil.rmtree(path)
    assert by_name(para_json("list"))["lost"]["state"] == "missing"

    proc = para("resume", "lost")
    assert proc.stdout == f"{path}\n"  # the path alone, for `cd "$(para resume NAME)"`
    assert "worktree recreated" in proc.stderr
    assert path.is_dir(), "resume reported the worktree recreated, but it does not exist"
    assert rev(path, "HEAD") == sha and (path / "work.txt").read_text() == "work\n"
    assert by_name(para_json("list"))["lost"]["state"] == "active"


def test_resume_recreates_a_worktree_git_removed(para, para_json, repo, svc):
    svc("start", name="removed")
    path = wt_path(repo, "removed")
    sha = commit_file(path, "work.txt", "work\n", "committed work")
    git("worktree", "remove", "--force", str(path), cwd=repo)
    s = para_json("resume", "removed")
    assert s["recreated"] is True and s["state"] == "active"
    assert rev(path, "HEAD") == sha and (path / "work.txt").read_text() == "work\n"


def test_resume_of_an_intact_session_only_prints_its_path(para, para_json, repo, svc):
    svc("start", name="intact")
    before = git_state(repo)
    s = para_json("resume", "intact")
    assert s["recreated"] is False and s["worktree"] == str(wt_path(repo, "intact"))
    assert git_state(repo) == before


def test_resume_reactivates_a_review_session(para, para_json, repo, svc):
    svc("start", name="reopen")
    path = wt_path(repo, "reopen")
    (path / "w.txt").write_text("w\n")
    svc("finish", message="Reviewed", cwd=path)
    finished = rev(repo, "para/reopen")

    s = para_json("resume", "reopen")
    assert s["recreated"] is True
    assert s["status"] == "active" and s["state"] == "active"
    assert rev(path, "HEAD") == finished and (path / "w.txt").read_text() == "w\n"
    assert git("symbolic-ref", "--short", "HEAD", cwd=path) == "para/reopen"


# ---- clean --------------------------------------------------------------------------------

@pytest.fixture
def archives(para, para_json, repo, svc) -> dict[str, str]:
    """Two cancelled sessions: `kept` holds an unintegrated commit, `empty` holds nothing new."""
    svc("start", name="kept")
    commit_file(wt_path(repo, "kept"), "precious.txt", "precious\n", "unintegrated work")
    svc("start", name="empty")
    return {"kept": svc("cancel", session="kept")["archived_branch"],
            "empty": svc("cancel", session="empty")["archived_branch"]}


# Archived branches count as old at once, so `clean` considers both.
AGE_0 = {"PARA_CLEAN_ARCHIVE_DAYS": "0"}


def test_clean_dry_run_changes_nothing(para, para_json, repo, archives):
    before = git_state(repo), para_json("list", "--all")
    plan = para_json("clean", "--dry-run", env=AGE_0)
    assert plan["dry_run"] is True
    assert {a["branch"] for a in plan["actions"] if a["kind"] == "delete_branch"} == {archives["empty"]}
    assert [k["branch"] for k in plan["kept"]] == [archives["kept"]]
    assert (git_state(repo), para_json("list", "--all")) == before
    assert "would delete branch" in para("clean", "--dry-run", env=AGE_0).stdout


def test_clean_never_deletes_an_archive_with_unintegrated_commits_without_force(para_json, repo, archives):
    kept_tip = rev(repo, archives["kept"])
    result = para_json("clean", env=AGE_0)
    assert result["dry_run"] is False
    assert archives["empty"] not in branches(repo)
    assert archives["kept"] in branches(repo)
    assert "--force" in result["kept"][0]["why_kept"]

    forced = para_json("clean", "--force", env=AGE_0)
    assert [a["branch"] for a in forced["actions"] if a["kind"] == "delete_branch"] == [archives["kept"]]
    assert archives["kept"] not in branches(repo)
    # Even forced, the commits stay reachable from a backup ref.
    assert kept_tip in backups(repo, "clean").values()


def test_clean_keeps_recent_archives(para_json, repo, archives):
    before = git_state(repo)
    result = para_json("clean")  # default: archives younger than 30 days are kept
    assert [a for a in result["actions"] if a["kind"] == "delete_branch"] == []
    assert git_state(repo) == before


def test_recover_after_clean_force_deleted_the_archive(para, para_json, repo, archives):
    """`clean --force` keeps the deleted archive's commits under refs/para/backup/clean/
    (docs/protocol.md, para/clean); `recover` brings the session back from that backup,
    with its work, and the archive branch is not left behind again."""
    kept_tip = rev(repo, archives["kept"])
    para_json("clean", "--force", env=AGE_0)
    assert archives["kept"] not in branches(repo)
    para("recover", "kept")
    s = {x["name"]: x for x in para_json("list", "--all")["sessions"]}["kept"]
    assert s["state"] == "active" and s["pending_op"] is None and s["archived_branch"] is None, s
    assert rev(repo, "para/kept") == kept_tip
    assert (wt_path(repo, "kept") / "precious.txt").read_text() == "precious\n"
    assert archives["kept"] not in branches(repo)
    assert kept_tip in backups(repo, "clean").values()  # the backup itself is kept until it expires


def test_clean_prunes_missing_worktrees_and_forgets_orphan_sessions(para, para_json, repo, svc):
    svc("start", name="orphan")
    path = wt_path(repo, "orphan")
    shutil.rmtree(path)
    git("update-ref", "-d", "refs/heads/para/orphan", cwd=repo)
    result = para_json("clean")
    kinds = {a["kind"] for a in result["actions"]}
    assert kinds == {"prune_worktrees", "forget_session"}
    assert str(path) not in worktree_paths(repo)
    assert "orphan" not in by_name(para_json("list", "--all"))
    assert para_json("clean")["actions"] == []


def test_clean_leaves_branches_of_live_sessions_and_other_branches_alone(para, para_json, repo, svc):
    svc("start", name="live")
    git("branch", "topic", cwd=repo)
    before = git_state(repo)
    assert para_json("clean", "--force", env=AGE_0)["actions"] == []
    assert git_state(repo) == before


# ---- para's own files stay out of git -----------------------------------------------------

def test_para_files_never_appear_in_git_status_of_the_main_checkout(para, repo, svc):
    gitignore = (repo / ".gitignore").read_bytes()
    assert git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""
    svc("start", name="s1")
    svc("start", name="s2")
    (wt_path(repo, "s1") / "work.txt").write_text("w\n")
    para("finish", "Work", "--session", "s1")
    para("cancel", "s2")

    assert (repo / ".para" / "para.db").exists()
    assert git("status", "--porcelain", "--untracked-files=all", "--ignored=no", cwd=repo) == ""
    assert (repo / ".gitignore").read_bytes() == gitignore
    exclude = (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert "/.para/*" in exclude
    # A new session's worktree is clean too.
    para("start", "s3")
    assert git("status", "--porcelain", "--untracked-files=all", cwd=wt_path(repo, "s3")) == ""


def test_exclude_lines_are_added_once(para, repo, svc):
    svc("start", name="a")
    first = (repo / ".git" / "info" / "exclude").read_text()
    para("sidecar", "restart")
    para("start", "b")
    assert (repo / ".git" / "info" / "exclude").read_text() == first
    assert first.count("/.para/*") == 1
