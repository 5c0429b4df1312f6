"""`list` answers from what it already knows, and is never wrong about it.

The sidecar remembers each worktree's `git status` answer and asks git again only when
something it depends on may have changed (para_rpc/watch.py: inotify on the worktree's files
and its private git directory; the worktree's HEAD; the repository's and user's config and
excludes). These tests change a session's worktree behind para's back in every way we know
and check the very next `para list` against git itself; and count git processes to show that
a list with nothing changed asks git nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from para_rpc.watch import MAX_DIRS, Watcher

from conftest import counting_git, git, run_para, shutdown_sidecar, start_sidecar


def truth(wt: Path) -> bool:
    """What git itself says: any change, untracked files included. (Without optional locks:
    a status that refreshed the index would itself tell the sidecar that something changed.)"""
    return bool(git("status", "--porcelain", "--untracked-files=all", cwd=wt, env={"GIT_OPTIONAL_LOCKS": "0"}).strip())


def listed(repo: Path) -> dict[str, bool]:
    out = json.loads(run_para("list", "--json", cwd=repo).stdout)
    return {s["name"]: s["dirty"] for s in out["sessions"]}


def _edit(wt: Path, repo: Path) -> None:
    (wt / "README.md").write_text("edited by hand\n")


def _revert(wt: Path, repo: Path) -> None:
    git("checkout", "--", "README.md", cwd=wt)


def _new_file_in_new_dirs(wt: Path, repo: Path) -> None:
    (wt / "deep" / "er").mkdir(parents=True)
    (wt / "deep" / "er" / "new.txt").write_text("new\n")


def _remove_untracked(wt: Path, repo: Path) -> None:
    shutil.rmtree(wt / "deep")


def _commit_outside_para(wt: Path, repo: Path) -> None:
    git("add", "-A", cwd=wt)
    git("commit", "-q", "-m", "by hand", cwd=wt)


def _stage_only(wt: Path, repo: Path) -> None:
    (wt / "staged.txt").write_text("s\n")
    git("add", "staged.txt", cwd=wt)


def _move_branch_outside_para(wt: Path, repo: Path) -> None:
    # The session branch moved from the main checkout: the worktree's HEAD is that branch,
    # so its files now differ from HEAD although not one of them changed.
    git("update-ref", "refs/heads/para/s", "main~1", cwd=repo)


def _exclude_untracked(wt: Path, repo: Path) -> None:
    with open(repo / ".git" / "info" / "exclude", "a") as f:
        f.write("/loose.txt\n")


def _loose_file(wt: Path, repo: Path) -> None:
    (wt / "loose.txt").write_text("l\n")


def _rename_dir_then_write_below(wt: Path, repo: Path) -> None:
    (wt / "d1" / "d2").mkdir(parents=True)
    (wt / "d1" / "d2" / "keep.txt").write_text("k\n")
    git("add", "-A", cwd=wt)
    git("commit", "-q", "-m", "dirs", cwd=wt)


def _write_in_renamed_dir(wt: Path, repo: Path) -> None:
    os.rename(wt / "d1", wt / "moved")
    git("add", "-A", cwd=wt)
    git("commit", "-q", "-m", "moved", cwd=wt)


def _new_subdir_in_renamed_dir(wt: Path, repo: Path) -> None:
    (wt / "moved" / "d2" / "d3").mkdir()
    (wt / "moved" / "d2" / "d3" / "x.txt").write_text("x\n")


def _assume_unchanged(wt: Path, repo: Path) -> None:
    # Only the index changes (not one file): status goes clean.
    git("update-index", "--assume-unchanged", "README.md", cwd=wt)


def _chmod(wt: Path, repo: Path) -> None:
    p = wt / "README.md"
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


Step = Callable[[Path, Path], None]
# Each case: steps applied one after another, a `para list` checked against git after each.
CASES: dict[str, list[Step]] = {
    "edit, then revert": [_edit, _revert],
    "new file in new directories, then removed": [_new_file_in_new_dirs, _remove_untracked],
    "commit made in the worktree outside para": [_edit, _commit_outside_para],
    "only staged": [_stage_only],
    "branch moved outside para": [_move_branch_outside_para],
    "untracked file, then excluded in info/exclude": [_loose_file, _exclude_untracked],
    "directory renamed, then a new directory written below it": [
        _rename_dir_then_write_below, _write_in_renamed_dir, _new_subdir_in_renamed_dir],
    "executable bit set": [_chmod],
    "only the index changed": [_edit, _assume_unchanged],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=list(CASES))
def test_the_next_list_sees_every_change_made_behind_paras_back(
        sidecar: Any, repo: Path, steps: list[Step]) -> None:
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    assert listed(repo) == {"s": False}
    assert listed(repo) == {"s": False}  # (answered from memory now)
    for step in steps:
        step(wt, repo)
        assert listed(repo) == {"s": truth(wt)}, f"after {step.__name__}"
        assert listed(repo) == {"s": truth(wt)}, f"after {step.__name__}, asked again"


def test_a_worktree_where_git_status_fails_is_never_listed_clean(sidecar: Any, repo: Path) -> None:
    """Unknown is not clean: a clean answer kept from before, then an index git cannot read
    (a `git status` that fails), shows the session dirty with git's reason in its notes, until
    git answers again."""
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    assert listed(repo) == {"s": False}
    index = Path(git("rev-parse", "--path-format=absolute", "--git-path", "index", cwd=wt))
    good = index.read_bytes()
    index.write_bytes(b"not an index")
    assert git_fails("status", "--porcelain", cwd=wt)
    out = json.loads(run_para("list", "--json", cwd=repo).stdout)
    (s,) = out["sessions"]
    assert s["dirty"] is True and s["state"] == "dirty", s
    assert any("`git status` fails" in n for n in s["notes"]), s["notes"]
    index.write_bytes(good)
    out = json.loads(run_para("list", "--json", cwd=repo).stdout)
    assert out["sessions"][0]["dirty"] is False and not any("git status" in n for n in out["sessions"][0]["notes"])


def git_fails(*args: str, cwd: Path) -> bool:
    import subprocess
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True).returncode != 0


def test_a_list_with_nothing_changed_asks_git_nothing(
        runtime_dir: Path, repo: Path, tmp_path: Path) -> None:
    """The point of the cache: 5 dirty sessions, listed twice, one `git status` each, once;
    then a hand edit in one worktree costs exactly one more."""
    env, calls = counting_git(tmp_path)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        for i in range(5):
            run_para("start", f"s{i}", cwd=repo)
            (repo / ".para" / "worktrees" / f"s{i}" / "work.txt").write_text(f"{i}\n")

        def statuses() -> int:
            return sum(1 for line in calls.read_text().splitlines() if " status " in f" {line} ")
        assert set(listed(repo).values()) == {True}
        before, spawned = statuses(), len(calls.read_text().splitlines())
        assert set(listed(repo).values()) == {True}
        assert set(listed(repo).values()) == {True}
        assert statuses() == before, "a list with nothing changed ran git status"
        assert calls.read_text().splitlines()[spawned:] == [], "a list with nothing changed ran git"
        git("checkout", "--", ".", cwd=repo / ".para" / "worktrees" / "s3")  # (tracked files only)
        (repo / ".para" / "worktrees" / "s3" / "work.txt").unlink()
        assert listed(repo) == {"s0": True, "s1": True, "s2": True, "s3": False, "s4": True}
        assert statuses() == before + 1
    finally:
        shutdown_sidecar(sc)


def test_a_session_resumed_at_the_same_path_is_not_answered_from_the_old_worktree(
        sidecar: Any, repo: Path) -> None:
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    (wt / "work.txt").write_text("w\n")
    assert listed(repo) == {"s": True}
    run_para("finish", "done", "-s", "s", cwd=repo)
    run_para("resume", "s", cwd=repo)
    assert listed(repo) == {"s": truth(wt)} == {"s": False}
    (wt / "again.txt").write_text("a\n")
    assert listed(repo) == {"s": True}


# ---- the watcher itself ------------------------------------------------------------

def test_every_kind_of_change_moves_the_token(tmp_path: Path) -> None:
    w = Watcher()
    assert w.available
    root = tmp_path / "wt"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    assert w.watch(str(root))
    changes: list[Callable[[], object]] = [
        lambda: (root / "a" / "b" / "f").write_text("y"),
        lambda: (root / "a" / "b" / "f").chmod(0o600),
        lambda: (root / "a" / "new").mkdir(),
        lambda: (root / "a" / "new" / "g").write_text("in a directory made after the watch"),
        lambda: (root / "a" / "b" / "f").rename(root / "a" / "f2"),
        lambda: (root / "a" / "f2").unlink(),
    ]
    for change in changes:
        before = w.token(str(root))
        assert before is not None
        change()
        assert w.token(str(root)) != before
    before = w.token(str(root))
    assert w.token(str(root)) == before  # (and nothing changed: the same token)


@pytest.mark.parametrize("gone", ["removed", "moved away", "replaced"])
def test_an_extra_directory_that_goes_ends_its_root(tmp_path: Path, gone: str) -> None:
    """A worktree's private git dir is its root's extra (its index and HEAD change there).
    Removed, moved or replaced by a new directory (which nothing watches), the root is
    forgotten: asked of git until it is watched again."""
    w = Watcher()
    root, extra = tmp_path / "wt", tmp_path / "gitdir"
    root.mkdir()
    extra.mkdir()
    assert w.watch(str(root), (str(extra),))
    before = w.token(str(root))
    (extra / "index").write_text("staged\n")
    assert w.token(str(root)) not in (None, before)
    shutil.rmtree(extra) if gone == "removed" else extra.rename(tmp_path / "elsewhere")
    if gone == "replaced":
        extra.mkdir()
    assert w.token(str(root)) is None
    assert w.watch(str(root), (str(extra),)) and w.token(str(root)) is not None


def test_a_renamed_directory_is_walked_again_and_a_removed_root_forgotten(tmp_path: Path) -> None:
    w = Watcher()
    root = tmp_path / "wt"
    (root / "a").mkdir(parents=True)
    assert w.watch(str(root))
    (root / "a").rename(root / "b")
    assert w.token(str(root)) is None and not w.watching(str(root))  # (git answers meanwhile)
    assert w.watch(str(root))
    first = w.token(str(root))
    (root / "b" / "c").mkdir()
    (root / "b" / "c" / "f").write_text("under the new name")
    assert w.token(str(root)) != first
    shutil.rmtree(root)
    assert w.token(str(root)) is None and not w.watching(str(root))
    root.mkdir()
    assert w.watch(str(root))
    assert w.token(str(root)) != first  # a new watch never repeats an old token


def test_a_tree_over_the_watch_budget_is_left_to_git(tmp_path: Path) -> None:
    root = tmp_path / "big"
    for i in range(MAX_DIRS + 1):
        (root / f"d{i}").mkdir(parents=True)
    w = Watcher()
    assert not w.watch(str(root))
    assert w.token(str(root)) is None
    (root / "d0" / "f").write_text("x")
    assert w.token(str(root)) is None


def test_git_itself_still_answers_where_inotify_is_missing(
        runtime_dir: Path, repo: Path, tmp_path: Path) -> None:
    """No watches left for the user (fs.inotify.max_user_instances exhausted is the same):
    every list asks git, and is right."""
    # A sidecar whose inotify_init1 fails (invalid flags: EINVAL), set up by a
    # sitecustomize before the service makes its watcher.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import para_rpc.watch as w\nw.IN_CLOEXEC = -1\n")
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        run_para("start", "s", cwd=repo)
        wt = repo / ".para" / "worktrees" / "s"
        assert listed(repo) == {"s": False}
        (wt / "x.txt").write_text("x\n")
        assert listed(repo) == {"s": True}
        (wt / "x.txt").unlink()
        assert listed(repo) == {"s": False}
    finally:
        shutdown_sidecar(sc)
    log = sc.log_path.read_text()
    assert "Traceback" not in log


# ---- the worktrees and branches `list` shows ------------------------------------------

def facts(repo: Path) -> dict[str, Any]:
    s = json.loads(run_para("list", "--json", cwd=repo).stdout)["sessions"][0]
    return {k: s[k] for k in ("state", "head", "head_branch", "detached", "branch_exists", "worktree_exists")}


def git_facts(repo: Path, wt: Path, was: dict[str, Any]) -> dict[str, Any]:
    """The same facts from git itself (state only where git alone decides it)."""
    tip = git("rev-parse", "-q", "--verify", "refs/heads/para/s", cwd=repo, check=False) or None
    on = git("symbolic-ref", "-q", "--short", "HEAD", cwd=wt, check=False) or None if wt.is_dir() else None
    return {"state": was["state"], "head": tip or was["head"], "head_branch": on, "detached": on is None,
            "branch_exists": tip is not None, "worktree_exists": wt.is_dir()}


REF_STEPS: dict[str, list[tuple[Callable[[Path, Path], object], str]]] = {
    # step, then the state `list` must show
    "HEAD detached in the worktree, then back": [
        (lambda wt, repo: git("checkout", "-q", "--detach", cwd=wt), "off-branch"),
        (lambda wt, repo: git("checkout", "-q", "para/s", cwd=wt), "active")],
    "branch moved, refs packed, moved again": [
        (lambda wt, repo: git("commit", "-q", "--allow-empty", "-m", "one", cwd=wt), "active"),
        (lambda wt, repo: git("pack-refs", "--all", cwd=repo), "active"),
        (lambda wt, repo: git("commit", "-q", "--allow-empty", "-m", "two", cwd=wt), "active")],
    "branch deleted behind para's back": [
        (lambda wt, repo: git("update-ref", "-d", "refs/heads/para/s", cwd=repo), "missing")],
    "worktree directory removed by hand": [
        (lambda wt, repo: shutil.rmtree(wt), "missing")],
}


@pytest.mark.parametrize("steps", REF_STEPS.values(), ids=list(REF_STEPS))
def test_the_next_list_sees_branches_and_worktrees_moved_behind_paras_back(
        sidecar: Any, repo: Path, steps: list[tuple[Callable[[Path, Path], object], str]]) -> None:
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    facts(repo)
    facts(repo)  # (answered from memory now)
    for step, state in steps:
        step(wt, repo)
        got = facts(repo)
        want = git_facts(repo, wt, got)
        if not want["worktree_exists"]:
            want.update(head_branch=got["head_branch"], detached=got["detached"])  # (no worktree: moot)
        assert (got["state"], got) == (state, want)


def test_after_lost_events_every_root_is_walked_again(tmp_path: Path) -> None:
    """More events than the kernel queues (an `npm install` between two lists): the directory
    created meanwhile may be unknown, so every root is forgotten and walked afresh when next
    asked, and a change inside that directory is seen (red team RB2)."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    w = Watcher()
    root, other = tmp_path / "wt", tmp_path / "other"
    (root / "d").mkdir(parents=True)
    other.mkdir()
    assert w.watch(str(root)) and w.watch(str(other))
    for i in range(limit // 2 + 10):  # (a create and a delete each: over the limit)
        (root / "d" / f"f{i}").touch()
        (root / "d" / f"f{i}").unlink()
    (root / "d" / "newdir").mkdir()
    assert w.token(str(root)) is None and w.token(str(other)) is None  # forgotten, both
    assert w.watch(str(root))
    before = w.token(str(root))
    (root / "d" / "newdir" / "tracked").write_text("edited after the overflow\n")
    assert w.token(str(root)) != before


def test_without_any_worktree_a_list_asks_git_nothing_and_still_sees_one_added_by_hand(
        runtime_dir: Path, repo: Path, tmp_path: Path) -> None:
    """A repository with no `.git/worktrees` (no session yet, or the last worktree pruned):
    what `list` read from git is kept too (the watch of the git directory sees `worktrees/`
    appear), and a worktree git adds behind para's back is seen on the next list."""
    env, calls = counting_git(tmp_path)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        run_para("start", "s", cwd=repo)
        wt = repo / ".para" / "worktrees" / "s"
        shutil.rmtree(wt)
        git("worktree", "prune", cwd=repo)
        assert not (repo / ".git" / "worktrees").exists()
        assert facts(repo)["state"] == "missing"
        spawned = len(calls.read_text().splitlines())
        assert facts(repo)["state"] == "missing"
        assert calls.read_text().splitlines()[spawned:] == [], "a list with nothing changed ran git"
        git("worktree", "add", "-q", str(wt), "para/s", cwd=repo)
        got = facts(repo)
        assert (got["state"], got["worktree_exists"], got["head_branch"]) == ("active", True, "para/s")
    finally:
        shutdown_sidecar(sc)


def test_a_git_file_rewritten_by_hand_is_noted_on_the_next_list_and_put_back_no_longer(
        sidecar: Any, repo: Path) -> None:
    """Each worktree's `.git` is read once per change of its directory, not once per list: a
    rewrite still shows on the very next list, and so does putting it back."""
    run_para("start", "s", cwd=repo)
    dotgit = repo / ".para" / "worktrees" / "s" / ".git"
    made = dotgit.read_text()

    def notes() -> list[str]:
        return [n for n in json.loads(run_para("list", "--json", cwd=repo).stdout)["sessions"][0]["notes"]
                if "no longer names the git directory" in n]
    assert notes() == [] and notes() == []
    dotgit.write_text(f"gitdir: {tmp_git_dir(repo)}\n")
    assert len(notes()) == 1
    dotgit.write_text(made)
    assert notes() == []


def test_a_fifo_for_a_git_file_is_listed_and_cancelled_without_the_sidecar_waiting_on_it(
        sidecar: Any, repo: Path) -> None:
    """An agent (sandboxed too: its worktree is its own) makes its `.git` a FIFO: the sidecar
    read it in its event loop and waited for a writer forever, every client with it. Now
    the list says the file no longer names the git dir, and cancel puts it back, saves the work,
    and removes the worktree."""
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    (wt / ".git").unlink()
    os.mkfifo(wt / ".git")
    (wt / "work.txt").write_text("work\n")
    assert any("no longer names the git directory" in n for n in _session(repo, "s")["notes"])
    assert json.loads(run_para("status", "show", "s", "--json", cwd=repo).stdout)["sessions"][0]["name"] == "s"
    out = json.loads(run_para("cancel", "s", "--json", cwd=repo).stdout)
    assert git("show", f"{out['archived_branch']}:work.txt", cwd=repo) == "work"
    assert not wt.exists()


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_git_dir_file_that_is_no_file_is_put_back_without_waiting_on_it_or_writing_through_it(
        sidecar: Any, repo: Path, tmp_path: Path, kind: str) -> None:
    """Before git runs in a worktree, its git dir's `commondir` and `gitdir` are put back to
    what git wrote when they name anything else. An (unsandboxed) agent that made one a FIFO
    left that read waiting forever; one that made it a symlink had para write `../..` into the
    file the link named. Now either is replaced by the file git wrote."""
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    commondir = repo / ".git" / "worktrees" / "s" / "commondir"
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    commondir.unlink()
    if kind == "fifo":
        os.mkfifo(commondir)
    else:
        commondir.symlink_to(victim)
    (wt / "work.txt").write_text("work\n")
    out = json.loads(run_para("cancel", "s", "--json", cwd=repo).stdout)
    assert git("show", f"{out['archived_branch']}:work.txt", cwd=repo) == "work"
    assert victim.read_text() == "mine\n"


def tmp_git_dir(repo: Path) -> Path:
    other = repo.parent / "elsewhere.git"
    other.mkdir(exist_ok=True)
    return other


def _session(repo: Path, name: str) -> dict[str, Any]:
    out = json.loads(run_para("list", "--json", cwd=repo).stdout)
    return next(s for s in out["sessions"] if s["name"] == name)


def test_a_dotgit_symlink_whose_target_is_rewritten_is_noted_on_the_next_list(
        sidecar: Any, repo: Path, tmp_path: Path) -> None:
    """The worktree's `.git` is a symlink to a file outside the worktree: rewriting that file
    makes no event in the worktree's directory, yet the next list must see it."""
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    target = tmp_path / "dotgit"
    made = (wt / ".git").read_text()
    target.write_text(made)
    (wt / ".git").unlink()
    (wt / ".git").symlink_to(target)

    def noted() -> bool:
        return any("no longer names the git directory" in n for n in _session(repo, "s")["notes"])
    assert not noted() and not noted()
    other = repo.parent / "elsewhere.git"
    other.mkdir()
    target.write_text(f"gitdir: {other}\n")
    assert noted()


def test_head_detached_without_a_reflog_shows_on_the_next_list(sidecar: Any, repo: Path) -> None:
    """A worktree's private git dir is in two roots: the repository's `worktrees/` (whose token
    keeps `git worktree list`, each worktree's HEAD) and the worktree's own (its extra, for the
    index). inotify has one watch descriptor per directory, so its events count for both roots;
    HEAD rewritten there moves both tokens (red team rt1 F3: it used to move only the later
    root's). (The reflog write in `logs/`, which only `worktrees/` watches, would hide it:
    reflogs are off.)"""
    git("config", "core.logAllRefUpdates", "false", cwd=repo)
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    assert not (repo / ".git" / "worktrees" / "s" / "logs").exists()
    assert _session(repo, "s")["head_branch"] == "para/s"
    assert _session(repo, "s")["head_branch"] == "para/s"  # (kept now)
    git("checkout", "-q", "--detach", cwd=wt)
    got = _session(repo, "s")
    assert (got["head_branch"], got["detached"], got["state"]) == (None, True, "off-branch")


def test_a_private_git_dir_whose_parent_was_moved_away_and_copied_back_is_listed_as_git_says(
        sidecar: Any, repo: Path) -> None:
    """`.git/worktrees` moved aside (a backup) and copied back: the watch on the private git
    dir follows the moved inode, so the copy's index is compared by its stat (red team rt2)."""
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    assert listed(repo) == {"s": False}
    assert listed(repo) == {"s": False}
    wts = repo / ".git" / "worktrees"
    wts.rename(repo / ".git" / "worktrees.bak")
    shutil.copytree(repo / ".git" / "worktrees.bak", wts, symlinks=True)
    assert listed(repo) == {"s": truth(wt)} == {"s": False}
    git("rm", "-q", "--cached", "README.md", cwd=wt)  # (the index only: not one file in the worktree)
    assert truth(wt)
    assert listed(repo) == {"s": True}


def test_the_whole_git_dir_moved_aside_and_copied_back(sidecar: Any, repo: Path) -> None:
    """The same with the whole `.git` (red team rt2)."""
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    assert listed(repo) == {"s": False}
    (repo / ".git").rename(repo / ".git.bak")
    shutil.copytree(repo / ".git.bak", repo / ".git", symlinks=True)
    assert listed(repo) == {"s": False}
    git("rm", "-q", "--cached", "README.md", cwd=wt)
    assert truth(wt)
    assert listed(repo) == {"s": True}


# ---- the whole answer, kept while nothing it was made from moved (sessions.py `_list_key`)

def _rows(repo: Path, cwd: Path | None = None) -> tuple[str | None, dict[str, tuple[str, bool, bool]]]:
    out = json.loads(run_para("list", "--json", cwd=cwd or repo).stdout)
    return out["current"], {s["name"]: (s["state"], s["worktree_exists"], s["current"]) for s in out["sessions"]}


def test_the_generation_moves_whenever_any_token_does(tmp_path: Path) -> None:
    """`list` keeps its whole answer under one value rather than a token per worktree: that
    value moves with every root's events, with a root added, and with one dropped."""
    w = Watcher()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (b / "sub").mkdir(parents=True)
    assert w.watch(str(a))
    steps: list[Callable[[], object]] = [
        lambda: w.watch(str(b)),
        lambda: (b / "sub" / "f").write_text("x"),
        lambda: (a / "f").write_text("x"),
        lambda: (b / "sub").rename(b / "sub2"),  # (b is dropped: walked again when next watched)
        lambda: shutil.rmtree(a),
    ]
    for step in steps:
        before = w.generation()
        assert before is not None and w.generation() == before
        step()
        assert w.generation() != before, step


def test_the_worktrees_directory_moved_aside_shows_on_the_next_list(sidecar: Any, repo: Path) -> None:
    """A worktree's watch follows its directory, not its path: `.para/worktrees` renamed makes
    no event in any worktree, yet the next list sees every worktree gone, and back again."""
    for name in ("a", "b"):
        run_para("start", name, cwd=repo)
    (repo / ".para" / "worktrees" / "a" / "w.txt").write_text("w\n")
    first = _rows(repo)
    assert first == _rows(repo)  # (kept now)
    assert first[1] == {"a": ("dirty", True, False), "b": ("active", True, False)}
    (repo / ".para" / "worktrees").rename(repo / ".para" / "aside")
    assert _rows(repo)[1] == {"a": ("missing", False, False), "b": ("missing", False, False)}
    (repo / ".para" / "aside").rename(repo / ".para" / "worktrees")
    assert _rows(repo) == first


def test_a_session_changed_in_the_database_by_another_process_shows_on_the_next_list(
        sidecar: Any, repo: Path) -> None:
    import sqlite3
    run_para("start", "s", cwd=repo)
    assert _session(repo, "s")["notes"] == _session(repo, "s")["notes"] == []
    with sqlite3.connect(repo / ".para" / "para.db") as db:
        (doc,) = db.execute("SELECT doc FROM sessions WHERE name = 's'").fetchone()
        s = json.loads(doc)
        s["notes"] = ["written by another process"]
        db.execute("UPDATE sessions SET doc = ? WHERE name = 's'", (json.dumps(s),))
    assert _session(repo, "s")["notes"] == ["written by another process"]


def test_each_caller_is_told_its_own_current_session(sidecar: Any, repo: Path) -> None:
    for name in ("a", "b"):
        run_para("start", name, cwd=repo)
    wts = repo / ".para" / "worktrees"
    (wts / "a" / "sub").mkdir()
    for _ in range(2):  # (the second round from what each place was last told)
        for where, current in ((repo, None), (wts / "a", "a"), (wts / "b", "b"), (wts / "a" / "sub", "a")):
            got, rows = _rows(repo, where)
            assert got == current and [n for n, r in rows.items() if r[2]] == ([current] if current else []), where


def test_a_conflicted_sessions_git_file_rewritten_is_noted_on_the_next_list(sidecar: Any, repo: Path) -> None:
    """A session that is not active keeps its worktree (a paused integration): what the list
    says of it follows its worktree too."""
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    (wt / "README.md").write_text("the session's\n")
    git("commit", "-q", "-am", "session", cwd=wt)
    (repo / "README.md").write_text("main's\n")
    git("commit", "-q", "-am", "main", cwd=repo)
    assert run_para("integrate", "land", "-s", "s", cwd=repo, check=False).returncode != 0
    assert _session(repo, "s")["state"] == "conflicted"
    assert _session(repo, "s")["notes"] == _session(repo, "s")["notes"] == []
    other = repo.parent / "elsewhere.git"
    other.mkdir()
    (wt / ".git").write_text(f"gitdir: {other}\n")
    assert any("no longer names the git directory" in n for n in _session(repo, "s")["notes"])


def test_an_index_only_change_behind_a_symlinked_private_git_dir_shows_on_the_next_list(
        sidecar: Any, repo: Path, tmp_path: Path) -> None:
    """The worktree's private git dir is a symlink under `.git/worktrees/` (moved elsewhere):
    no watch sees its index, so only the index's own stat can tell `git rm --cached` happened
    (`_dirty` keys on it; a kept list must too). Red team rtl."""
    run_para("start", "s", cwd=repo)
    wt, private = repo / ".para" / "worktrees" / "s", repo / ".git" / "worktrees" / "s"
    moved = tmp_path / "private"
    shutil.move(str(private), moved)
    (moved / "commondir").write_text(str(repo / ".git") + "\n")
    private.symlink_to(moved)
    assert listed(repo) == listed(repo) == {"s": False} and not truth(wt)
    git("rm", "-q", "--cached", "README.md", cwd=wt)
    assert truth(wt)
    assert listed(repo) == {"s": True}


def test_a_worktree_gone_carries_no_note_of_a_git_status_that_failed_in_it(sidecar: Any, repo: Path) -> None:
    """Red team rtl: the note of a failed `git status` outlived the worktree it was about
    (removed by hand, then pruned): a session's notes speak of what is there."""
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    (wt / "w.txt").write_text("w\n")
    assert listed(repo) == {"s": True}
    shutil.rmtree(wt)
    for _ in range(2):
        got = _session(repo, "s")
        assert got["state"] == "missing" and not any("git status" in n for n in got["notes"]), got
        git("worktree", "prune", cwd=repo)
