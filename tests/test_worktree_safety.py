"""Nothing inside a session's worktree is destroyed with it.

`git worktree remove --force` deletes everything in the directory. Before any path
removes a worktree or commits its content (cancel, finish, integrate, their repairs),
one guard checks it:

- HEAD must be on the session branch. Detached, an orphan branch or any other branch:
  finish, cancel and integrate answer `wrong_state` naming the fix and change nothing;
  `cancel --force` saves HEAD (with uncommitted work) under `refs/para/backup/<name>/
  <stamp>-head` first and says so. `list`/`show` flag such a worktree (`off-branch`).
  A branch is adopted as a rename only when the session branch is gone.
- Repositories inside the worktree (initialised submodules, whose git directory lives
  in `.git/worktrees/<name>/modules/`, and nested `git init`/`git clone`s): cancel
  saves what they hold that no remote has (refs and a snapshot of uncommitted files,
  under `refs/para/backup/<name>/<stamp>/sub/<path>/`); finish and integrate refuse
  with `dirty` naming the path, and never land a gitlink without a `.gitmodules` entry.
- Worktree paths are compared resolved, so a symlinked `.para/worktrees` (or the
  `worktrees_dir` config key) works like any other; a directory at a session's path
  that git does not know is refused, never skipped.

Each test follows the red-team steps (issue 9 points 1, 5; issue 17; redteam-r3.md
R3-1, R3-2, R3-3, R3-17) through the real CLI and sidecar.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import branches, commit_file, git, rev, worktree_paths
from para_rpc.errors import Code
from safety_util import (FILE_PROTOCOL, add_submodule, assert_error, init_submodule, make_source, nested_repo,
                         refs, sessions, show, tree_paths, wt)

SHARED_SIDECAR = True


def unchanged(repo: Path) -> dict:
    """What a refused operation must leave alone: refs, worktrees, the session records."""
    return {"refs": git("for-each-ref", "--format=%(refname) %(objectname)", cwd=repo),
            "worktrees": git("worktree", "list", "--porcelain", cwd=repo),
            "sessions": {n: (s["status"], s["state"], s["branch"], s["pending_op"])
                         for n, s in sessions(repo).items()}}


# ---- HEAD off the session branch (issue 9.1 / R2-1, R3-17) -------------------------------------

def detach_with_commit(repo: Path, para, name: str) -> tuple[Path, str]:
    """`para start NAME`; in its worktree `git checkout --detach` and commit a file."""
    para("start", name)
    path = wt(repo, name)
    git("checkout", "-q", "--detach", cwd=path)
    return path, commit_file(path, "detached.txt", "only HEAD holds this\n", "commit on a detached HEAD")


@pytest.mark.parametrize("verb", [["cancel", "dh1"], ["integrate", "--session", "dh1"],
                                  ["finish", "m", "--session", "dh1"]], ids=["cancel", "integrate", "finish"])
def test_detached_head_with_commits_is_wrong_state_and_changes_nothing(sidecar, para, repo, verb):
    """The commit on the detached HEAD is on no branch: removing the worktree (cancel,
    finish) or integrating the branch ("already contained") would drop it."""
    path, commit = detach_with_commit(repo, para, "dh1")
    before = unchanged(repo)
    message = assert_error(para(*verb, check=False), Code.wrong_state, "detached", commit[:10],
                           "1 commit(s) there no branch holds", "git checkout para/dh1", "git branch")
    if verb[0] == "cancel":
        assert "para cancel --force dh1" in message
    assert unchanged(repo) == before
    assert rev(path, "HEAD") == commit and (path / "detached.txt").exists()


def test_list_and_show_flag_a_worktree_whose_head_left_its_branch(sidecar, para, para_json, repo):
    path, commit = detach_with_commit(repo, para, "dh1")
    para("start", "other")
    git("checkout", "-q", "-b", "elsewhere", cwd=wt(repo, "other"))
    listed = {s["name"]: s for s in para_json("list")["sessions"]}
    assert (listed["dh1"]["state"], listed["dh1"]["detached"], listed["dh1"]["head_branch"]) == \
        ("off-branch", True, None)
    assert (listed["other"]["state"], listed["other"]["detached"], listed["other"]["head_branch"]) == \
        ("off-branch", False, "elsewhere")
    # Still the session branch: HEAD merely left it (the branch still exists).
    assert listed["other"]["branch"] == "para/other" and listed["other"]["notes"] == []
    human = para("list").stdout
    assert "off-branch" in human and "(HEAD: detached)" in human and "(HEAD: elsewhere)" in human
    assert "HEAD         detached in the worktree, not para/dh1" in para("show", "dh1").stdout


def test_cancel_force_saves_a_detached_head_and_says_so(sidecar, para, para_json, repo):
    path, commit = detach_with_commit(repo, para, "dh1")
    (path / "loose.txt").write_text("uncommitted on the detached HEAD\n")
    result = para_json("cancel", "dh1", "--force")
    assert result["status"] == "cancelled"
    (head,) = [b for b in result["backups"] if b["what"] == "head"]
    assert head["ref"].startswith("refs/para/backup/dh1/") and head["ref"].endswith("-head")
    # The backup holds the detached commit and the uncommitted file on top of it.
    assert rev(repo, head["ref"]) == head["commit"] and rev(repo, head["ref"] + "^") == commit
    assert show(repo, f"{head['ref']}:detached.txt") == "only HEAD holds this\n"
    assert show(repo, f"{head['ref']}:loose.txt") == "uncommitted on the detached HEAD\n"
    assert not path.exists()
    # Nothing was committed onto the session branch: the archive is where para/dh1 was.
    assert rev(repo, result["archived_branch"]) == rev(repo, "main")


def test_cancel_force_names_the_saved_head_in_its_human_summary(sidecar, para, repo):
    path, commit = detach_with_commit(repo, para, "dh2")
    out = para("cancel", "dh2", "--force").stdout
    ref = next(r for r in refs(repo, "refs/para/backup/dh2/") if r.endswith("-head"))
    assert "saved HEAD" in out and ref in out and commit[:10] in out


def test_an_orphan_branch_in_the_worktree_is_not_adopted_while_the_session_branch_exists(sidecar, para,
                                                                                         para_json, repo):
    """R3-17: `list` used to adopt `orph1` as a rename of para/u1, cancel archived a
    parentless root commit, and recover then told the user to delete para/u1, which
    held the session's commits."""
    para("start", "u1")
    path = wt(repo, "u1")
    work = commit_file(path, "work.txt", "session work\n", "session work")
    git("checkout", "-q", "--orphan", "orph1", cwd=path)
    (path / "orphan.txt").write_text("on the orphan\n")
    git("add", "orphan.txt", cwd=path)
    s = {x["name"]: x for x in para_json("list")["sessions"]}["u1"]
    assert (s["branch"], s["state"], s["head_branch"], s["notes"]) == ("para/u1", "off-branch", "orph1", [])
    before = unchanged(repo)
    for verb in (["cancel", "u1"], ["finish", "m", "--session", "u1"], ["integrate", "--session", "u1"]):
        assert_error(para(*verb, check=False), Code.wrong_state, "orph1", "orphan branch", "git checkout para/u1")
    assert unchanged(repo) == before
    assert rev(repo, "orph1") is None  # no root commit was made on the orphan
    # The way out keeps both: para/u1's commits on the archive, the orphan's files in a backup.
    result = para_json("cancel", "u1", "--force")
    assert rev(repo, result["archived_branch"]) == work
    (head,) = [b for b in result["backups"] if b["what"] == "head"]
    assert show(repo, f"{head['ref']}:orphan.txt") == "on the orphan\n"
    assert rev(repo, head["ref"] + "^") is None  # a root commit: the orphan had none
    recovered = para_json("recover", "u1")
    assert recovered["branch"] == "para/u1" and (path / "work.txt").read_text() == "session work\n"


def test_a_branch_renamed_by_hand_is_still_adopted(sidecar, para, para_json, repo):
    """The rename adoption stays for a real rename: the session branch is gone."""
    para("start", "r1")
    git("branch", "-m", "feature/r1", cwd=wt(repo, "r1"))
    s = {x["name"]: x for x in para_json("list")["sessions"]}["r1"]
    assert s["branch"] == "feature/r1" and s["state"] == "active"
    assert s["notes"] == ["branch renamed outside para: para/r1 -> feature/r1 (adopted)"]


def test_recover_never_suggests_deleting_a_branch_with_commits_the_archive_lacks(sidecar, para, para_json, repo):
    para("start", "u2")
    commit_file(wt(repo, "u2"), "a.txt", "a\n", "archived work")
    archive = para_json("cancel", "u2")["archived_branch"]
    git("branch", "para/u2", archive, cwd=repo)
    git("checkout", "-q", "para/u2", cwd=repo)
    commit_file(repo, "mine.txt", "mine\n", "work the archive lacks")
    git("checkout", "-q", "main", cwd=repo)
    message = assert_error(para("recover", "u2", check=False), Code.already_exists,
                           "1 commit(s)", "do not delete it", "git branch -m para/u2")
    assert "branch -D" not in message
    # A branch the archive fully holds may be deleted.
    git("branch", "-f", "para/u2", archive, cwd=repo)
    assert_error(para("recover", "u2", check=False), Code.already_exists, "git branch -D para/u2")


# ---- submodules (R3-1) ---------------------------------------------------------------------

@pytest.fixture
def sub_session(sidecar, para, repo, tmp_path) -> tuple[Path, str]:
    """R3-1 steps: a submodule `sm` from a local bare repository; `para start s1`; in W/s1
    `submodule update --init`, a commit inside sm (not pushed), `git add sm; git commit`."""
    add_submodule(repo, make_source(tmp_path))
    para("start", "s1")
    path = wt(repo, "s1")
    sm = init_submodule(path)
    sub_commit = commit_file(sm, "local.txt", "x\n", "sub commit")
    git("add", "sm", cwd=path)
    git("commit", "-q", "-m", "bump sm", cwd=path)
    return path, sub_commit


@pytest.mark.parametrize("verb", [["integrate", "--session", "s1"], ["finish", "m", "--session", "s1"]],
                         ids=["integrate", "finish"])
def test_finish_and_integrate_refuse_a_submodule_commit_no_remote_has(para, repo, sub_session, verb):
    """Landing it would make main point at a submodule commit that exists nowhere
    (`git submodule update`: "not our ref"); removing the worktree would delete it."""
    path, sub_commit = sub_session
    before = unchanged(repo)
    assert_error(para(*verb, check=False), Code.dirty, "submodule", str(path / "sm"), "1 commit(s) no remote has",
                 f"git -C {path / 'sm'} push")
    assert unchanged(repo) == before
    assert rev(path / "sm", "HEAD") == sub_commit
    # Pushed, the same integration lands, and main records a commit its remote has.
    git("push", "-q", "origin", "HEAD:main", cwd=path / "sm")
    if verb[0] == "integrate":
        para(*verb)
        assert tree_paths(repo, "main")["sm"] == "160000"
        assert git("rev-parse", "main:sm", cwd=repo) == sub_commit


def test_cancel_saves_a_submodule_commit_and_recover_keeps_it_reachable(para, para_json, repo, sub_session):
    path, sub_commit = sub_session
    result = para_json("cancel", "s1")
    (saved,) = [b for b in result["backups"] if b["what"] == "submodule"]
    assert saved["path"] == "sm" and saved["unpushed"] == 1
    prefix = saved["refs"] and os.path.commonpath(list(saved["refs"]))
    assert prefix.startswith("refs/para/backup/s1/") and prefix.endswith("/sub/sm")
    assert refs(repo, prefix + "/") == saved["refs"]
    assert rev(repo, f"{prefix}/HEAD") == sub_commit
    assert show(repo, f"{prefix}/HEAD:local.txt") == "x\n"
    # The archive still records the bump to that commit, whose objects the repository now has.
    assert git("rev-parse", f"{result['archived_branch']}:sm", cwd=repo) == sub_commit
    git("cat-file", "-e", sub_commit, cwd=repo)
    para("recover", "s1")
    assert rev(repo, f"{prefix}/HEAD") == sub_commit


def test_cancel_saves_uncommitted_edits_inside_a_submodule(sidecar, para, para_json, repo, tmp_path):
    """R3-1 variant and R3-5 (b): edits only inside sm/ (plus one in the superproject).
    Cancel used to claim "saved work" for a WIP commit without them, or get stuck in
    cancel-pending; now they are in a snapshot of the submodule's own."""
    add_submodule(repo, make_source(tmp_path))
    para("start", "c2")
    path = wt(repo, "c2")
    sm = init_submodule(path)
    (sm / "s.txt").write_text("edited inside the submodule\n")
    (sm / "new-in-sub.txt").write_text("untracked inside the submodule\n")
    (path / "README.md").write_text("superproject edit\n")
    before_sub = rev(sm, "HEAD")
    out = para("cancel", "c2").stdout
    s = sessions(repo)["c2"]
    assert s["status"] == "cancelled" and s["pending_op"] is None
    (wip,) = [r for r in refs(repo, "refs/para/backup/c2/") if r.endswith("/sub/sm/wip")]
    assert show(repo, f"{wip}:s.txt") == "edited inside the submodule\n"
    assert show(repo, f"{wip}:new-in-sub.txt") == "untracked inside the submodule\n"
    assert rev(repo, wip + "^") == before_sub
    assert show(repo, f"{s['archived_branch']}:README.md") == "superproject edit\n"
    assert "saved submodule" in out and "sm under refs/para/backup/c2/" in out


def test_finish_refuses_uncommitted_edits_inside_a_submodule_and_is_not_stuck(sidecar, para, repo, tmp_path):
    """R3-5 (b) for finish: a refusal, with the session as it was (no finish-pending)."""
    add_submodule(repo, make_source(tmp_path))
    para("start", "f1")
    path = wt(repo, "f1")
    (init_submodule(path) / "s.txt").write_text("edited inside the submodule\n")
    (path / "top.txt").write_text("top\n")
    assert_error(para("finish", "m", "--session", "f1", check=False), Code.dirty, "uncommitted changes", "sm")
    s = sessions(repo)["f1"]
    assert (s["status"], s["pending_op"]) == ("active", None)
    assert (path / "top.txt").exists() and (path / "sm" / "s.txt").read_text() == "edited inside the submodule\n"


def test_an_initialised_submodule_with_nothing_unpushed_does_not_block(sidecar, para, para_json, repo, tmp_path):
    add_submodule(repo, make_source(tmp_path))
    para("start", "ok1")
    path = wt(repo, "ok1")
    init_submodule(path)
    commit_file(path, "feature.txt", "f\n", "feature")
    result = para_json("integrate", "--session", "ok1")
    assert result["status"] == "integrated" and "backups" not in result["integration"]


# ---- nested repositories (R3-2) ------------------------------------------------------------

def test_cancel_saves_a_nested_repository_and_leaves_it_out_of_the_wip_commit(sidecar, para, para_json, repo):
    """R3-2: `git add -A` recorded `inner` as a bare gitlink; after recover `inner/` was an
    empty directory, its commit and files gone, though cancel said "saved work"."""
    para("start", "n1")
    path = wt(repo, "n1")
    inner = nested_repo(path, "inner")
    inner_head = rev(inner, "HEAD")
    (inner / "u.txt").write_text("u\n")
    (path / "top.txt").write_text("top\n")
    result = para_json("cancel", "n1")
    (saved,) = [b for b in result["backups"] if b["what"] == "nested"]
    assert saved["path"] == "inner" and saved["dirty"] == 1
    by_kind = {r.rsplit("/sub/inner/", 1)[1]: r for r in saved["refs"]}
    assert set(by_kind) == {"HEAD", "heads/master", "wip"}
    assert refs(repo, "refs/para/backup/n1/") == saved["refs"]
    assert rev(repo, by_kind["HEAD"]) == inner_head == rev(repo, by_kind["heads/master"])
    assert show(repo, f"{by_kind['wip']}:u.txt") == "u\n" and show(repo, f"{by_kind['wip']}:p.txt") == "p\n"
    # The superproject's work-in-progress commit has top.txt and no gitlink.
    archive = result["archived_branch"]
    assert result["saved"] == {"branch": archive, "commit": rev(repo, archive)}
    assert show(repo, f"{archive}:top.txt") == "top\n" and "inner" not in tree_paths(repo, archive)
    para("recover", "n1")
    assert (path / "top.txt").read_text() == "top\n"


def test_cancel_says_what_it_saved_of_a_nested_repository_and_what_it_did_not(sidecar, para, repo, tmp_path):
    """Never "saved" for content not saved: an empty `git init` (R3-5 d: cancel used to stick
    in cancel-pending on it) and a pristine clone are named as not saved, with why."""
    source = make_source(tmp_path, "lib")
    para("start", "n2")
    path = wt(repo, "n2")
    nested_repo(path, "vendor", commit=False)
    git("clone", "-q", str(source), "pristine", cwd=path)
    inner_head = rev(nested_repo(path, "inner"), "HEAD")
    (path / "top.txt").write_text("top\n")
    out = para("cancel", "n2").stdout
    s = sessions(repo)["n2"]
    assert (s["status"], s["pending_op"]) == ("cancelled", None)
    archived = tree_paths(repo, s["archived_branch"])
    assert archived["top.txt"] == "100644" and not {"vendor", "pristine", "inner"} & set(archived)
    lines = out.splitlines()
    assert any("not saved" in x and "vendor" in x and "no commits and no files" in x for x in lines), out
    assert any("not saved" in x and "pristine" in x and str(source) in x for x in lines), out
    assert any("saved nested" in x and "inner under refs/para/backup/n2/" in x for x in lines), out
    saved = refs(repo, "refs/para/backup/n2/")
    assert not [r for r in saved if "/sub/vendor/" in r or "/sub/pristine/" in r]
    (inner_ref,) = [r for r in saved if r.endswith("/sub/inner/HEAD")]
    assert saved[inner_ref] == inner_head


def test_integrate_refuses_a_cloned_repository_inside_the_session(sidecar, para, repo, tmp_path):
    """R3-2 variant: it used to land a gitlink `vendored` with no .gitmodules entry, and the
    vendored code and its local patch were deleted with the worktree."""
    source = make_source(tmp_path, "lib")
    para("start", "n3")
    path = wt(repo, "n3")
    git("clone", "-q", str(source), "vendored", cwd=path)
    (path / "vendored" / "s.txt").write_text("local patch\n")
    (path / "n3.txt").write_text("n3\n")
    before = unchanged(repo)
    assert_error(para("integrate", "--session", "n3", check=False), Code.dirty, f"vendored in {path}",
                 "no .gitmodules entry", "git submodule add URL vendored")
    assert unchanged(repo) == before
    assert (path / "vendored" / "s.txt").read_text() == "local patch\n" and (path / "n3.txt").exists()
    assert sessions(repo)["n3"]["pending_op"] is None


@pytest.mark.parametrize("message", [[], ["vendor it"]], ids=["default-message", "message-given"])
def test_integrate_refuses_a_committed_gitlink_without_gitmodules_entry(sidecar, para, repo, message):
    """A nested repository the agent committed itself (`git add -A` records a bare gitlink)
    lands as an empty directory no clone can fill: refused, with the path and the fix. (With
    a message given and nothing uncommitted, the worktree's index says whether to look.)"""
    para("start", "n4")
    path = wt(repo, "n4")
    inner = nested_repo(path, "inner")
    git("update-index", "--add", "--cacheinfo", f"160000,{rev(inner, 'HEAD')},inner", cwd=path)
    git("commit", "-q", "-m", "vendor inner", cwd=path)
    shutil.rmtree(inner)
    inner.mkdir()  # as a fresh clone would have it: an empty directory, only the commit records it
    main = rev(repo, "main")
    assert_error(para("integrate", *message, "--session", "n4", check=False), Code.wrong_state, "inner",
                 "no .gitmodules entry", "git rm --cached -- inner")
    assert rev(repo, "main") == main and sessions(repo)["n4"]["pending_op"] is None


# ---- worktrees on another filesystem (R3-3) --------------------------------------------------

@pytest.fixture
def elsewhere() -> Path:
    """A directory on another filesystem when there is one (tmpfs), else another temp dir."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="para-wt-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_symlinked_worktrees_folder_works_like_any_other(sidecar, para, para_json, repo, elsewhere):
    """R3-3: every session showed `missing`, integrate landed and then exited 5 in
    integrate-pending, and cancel skipped the save and printed success."""
    (repo / ".para").mkdir(exist_ok=True)
    (repo / ".para" / "worktrees").symlink_to(elsewhere)
    k1 = para_json("start", "k1")
    assert k1["worktree"] == str(elsewhere.resolve() / "k1")
    commit_file(wt(repo, "k1"), "k1.txt", "k1\n", "k1 work")
    listed = {s["name"]: s for s in para_json("list")["sessions"]}
    assert listed["k1"]["state"] == "active" and listed["k1"]["worktree_exists"]
    assert para_json("list", cwd=wt(repo, "k1"))["current"] == "k1"
    landed = para_json("integrate", "--session", "k1")
    assert landed["status"] == "integrated" and show(repo, "main:k1.txt") == "k1\n"
    assert "para/k1" not in branches(repo) and not (elsewhere / "k1").exists()

    para("start", "k2")
    (wt(repo, "k2") / "p.txt").write_text("precious\n")
    cancelled = para_json("cancel", "k2")
    assert show(repo, f"{cancelled['archived_branch']}:p.txt") == "precious\n"
    assert not (elsewhere / "k2").exists() and str(elsewhere / "k2") not in worktree_paths(repo)
    para("recover", "k2")
    assert (wt(repo, "k2") / "p.txt").read_text() == "precious\n"


def test_worktrees_moved_to_another_disk_after_they_were_made(para, para_json, repo, elsewhere):
    """Sessions recorded with `.para/worktrees/NAME` keep working once that folder is moved
    elsewhere and replaced by a symlink: git reports the resolved path, para compares
    resolved paths."""
    para("start", "m1")
    commit_file(wt(repo, "m1"), "m1.txt", "m1\n", "m1 work")
    para("start", "m2")
    (wt(repo, "m2") / "p.txt").write_text("precious\n")
    para("sidecar", "stop")
    shutil.move(str(repo / ".para" / "worktrees"), str(elsewhere / "worktrees"))
    (repo / ".para" / "worktrees").symlink_to(elsewhere / "worktrees")
    listed = {s["name"]: s for s in para_json("list")["sessions"]}
    assert (listed["m1"]["state"], listed["m2"]["state"]) == ("active", "dirty")
    assert para_json("list", cwd=wt(repo, "m1"))["current"] == "m1"
    assert para_json("resume", "m1")["recreated"] is False
    assert show(repo, para_json("cancel", "m2")["archived_branch"] + ":p.txt") == "precious\n"
    assert not (elsewhere / "worktrees" / "m2").exists()
    assert para_json("integrate", "--session", "m1")["status"] == "integrated"
    assert show(repo, "main:m1.txt") == "m1\n" and not (elsewhere / "worktrees" / "m1").exists()


def test_worktrees_dir_config_key_puts_worktrees_elsewhere(sidecar, para, para_json, repo, elsewhere):
    env = {"PARA_WORKTREES_DIR": str(elsewhere)}
    assert para_json("config", "show", env=env)["values"]["worktrees_dir"]["value"] == str(elsewhere)
    s = para_json("start", "c1", env=env)
    path = elsewhere.resolve() / "c1"
    assert s["worktree"] == str(path) and path.is_dir()
    (path / "w.txt").write_text("w\n")
    assert {x["name"]: x for x in para_json("list", env=env)["sessions"]}["c1"]["state"] == "dirty"
    para("cancel", "c1", env=env)
    assert not path.exists()
    para("recover", "c1", env=env)
    assert (path / "w.txt").read_text() == "w\n"
    # Inside the main checkout (but not under .para/) it would show in the user's git status.
    assert_error(para("start", "c2", env={"PARA_WORKTREES_DIR": "trees"}, check=False), Code.config_error,
                 "worktrees_dir", "outside the repository")


def test_cancel_refuses_a_directory_git_does_not_know_as_the_worktree(sidecar, para, repo):
    """R3-3: cancel believed there was no worktree, skipped the save, renamed the branch
    and printed success; recover then asked to move the only copy of the work away."""
    para("start", "k3")
    path = wt(repo, "k3")
    git("worktree", "remove", "--force", str(path), cwd=repo)
    path.mkdir()
    (path / "p.txt").write_text("precious\n")
    before = unchanged(repo)
    for verb in (["cancel", "k3"], ["integrate", "--session", "k3"]):
        assert_error(para(*verb, check=False), Code.wrong_state, str(path),
                     "git does not list it as the worktree", "git worktree repair")
    assert unchanged(repo) == before and (path / "p.txt").read_text() == "precious\n"


# ---- a worktree deleted by hand (issue 9.5) ------------------------------------------------

def test_integrate_after_the_worktree_was_deleted_by_hand(sidecar, para, para_json, repo):
    """The work landed but the command exited 5 (`Cannot delete branch … checked out`)
    and the session stuck in integrate-pending: git still listed the deleted worktree."""
    para("start", "w3")
    commit_file(wt(repo, "w3"), "w3.txt", "w3\n", "w3 work")
    shutil.rmtree(wt(repo, "w3"))
    result = para_json("integrate", "--session", "w3")
    assert result["status"] == "integrated" and result["pending_op"] is None
    assert show(repo, "main:w3.txt") == "w3\n"
    assert "para/w3" not in branches(repo)
    assert "prunable" not in git("worktree", "list", "--porcelain", cwd=repo)
    assert sessions(repo)["w3"]["state"] == "integrated"


def test_cancel_of_a_session_paused_in_a_rebase_saves_the_rebase_and_archives_the_branch(sidecar, para, para_json,
                                                                                        repo):
    """A paused rebase detaches HEAD by design: cancel saves it (and the resolution in
    progress) under -head instead of refusing, and archives the untouched session branch."""
    para("start", "rb")
    path = wt(repo, "rb")
    mine = commit_file(path, "README.md", "# session\n", "session edit")
    commit_file(repo, "README.md", "# main\n", "main edit")
    assert_error(para("integrate", "--session", "rb", "--strategy", "rebase", check=False), Code.conflict)
    (path / "README.md").write_text("# half resolved\n")
    result = para_json("cancel", "rb")
    assert result["status"] == "cancelled" and rev(repo, result["archived_branch"]) == mine
    (head,) = [b for b in result["backups"] if b["what"] == "head"]
    assert show(repo, f"{head['ref']}:README.md") == "# half resolved\n"
    assert not path.exists()


def test_a_worktree_replaced_by_a_symlink_to_another_sessions_is_not_that_session(sidecar, para, para_json, repo,
                                                                                  elsewhere):
    """Issue 15 (`list` resolves each worktree once, through a memo): session ra's worktree
    moved away by hand and a symlink to session rb's left in its place. Seen from inside
    rb's worktree (a subdirectory of it), the current session is rb, whose worktree it
    really is, not ra, whose path only leads there (before: ra, the first of the two, so a
    verb without a session name run there acted on ra); ra is not `active` (git's worktree
    at that path is rb's, on rb's branch)."""
    para("start", "ra")
    para("start", "rb")
    (wt(repo, "rb") / "sub").mkdir()
    shutil.move(str(wt(repo, "ra")), str(elsewhere / "ra"))
    wt(repo, "ra").symlink_to(wt(repo, "rb"))
    listed = para_json("list", cwd=wt(repo, "rb") / "sub")
    states = {s["name"]: s["state"] for s in listed["sessions"]}
    assert listed["current"] == "rb", listed
    assert states["rb"] == "active" and states["ra"] != "active", states
    assert para_json("list", cwd=wt(repo, "ra") / "sub")["current"] == "rb"
    assert para_json("show", cwd=wt(repo, "rb") / "sub")["name"] == "rb"  # what a verb without a name acts on
