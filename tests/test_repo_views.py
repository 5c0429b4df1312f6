"""One repository seen at two paths is one repository (R3-19).

`mount --bind <repo> <other path>`, then `cd <other path>; para list` used to exit 8, "served
by another para sidecar (pid N)" with N the sidecar itself: the second path missed the
sidecar's table of open repositories, and its second `flock` on `.para/sidecar.lock`
conflicted with its own first one. Repositories are now also known by the identity
(`st_dev`, `st_ino`) of their common git directory, and a directory under the second view
is understood as the same place under the first (a bind mount has no symlink to resolve).

The test mounts for real (CI runs as root); it fails, rather than skips, where `mount` is
not allowed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import commit_file, git, rev, run_para

SHARED_SIDECAR = True


@pytest.fixture
def view(repo: Path, tmp_path: Path) -> Iterator[Path]:
    """The repository's main worktree bind-mounted at a second path."""
    other = tmp_path / "view"
    other.mkdir()
    res = subprocess.run(["mount", "--bind", str(repo), str(other)], capture_output=True, text=True)
    assert res.returncode == 0, f"mount --bind is needed for this test (run as root): {res.stderr}"
    try:
        yield other
    finally:
        # (lazily: the sidecar keeps the repository's database open through whichever path
        # opened it first)
        subprocess.run(["umount", "--lazy", str(other)], check=True)


def test_a_bind_mounted_view_of_a_served_repository_is_the_same_repository(sidecar, para, para_json, repo, view):
    para("start", "v1")
    listed = para("list", cwd=view)  # exit 8 ("served by another para sidecar") before
    assert "v1" in listed.stdout
    out = para_json("list", cwd=view)
    assert out["repo"] == str(repo)
    assert [s["name"] for s in out["sessions"]] == ["v1"]
    served = para_json("sidecar", "status")["repos"]
    assert served.count(str(repo)) == 1 and str(view) not in served


def test_a_repository_first_opened_through_the_view_is_the_same_at_its_own_path(sidecar, para, para_json, repo,
                                                                                 view):
    para("list", cwd=view)  # opened through the view first: para knows it by that path
    started = para_json("start", "v2", cwd=view)
    assert [s["name"] for s in para_json("list")["sessions"]] == ["v2"]  # and from the other path
    wt = Path(started["worktree"])
    assert wt.samefile(repo / ".para" / "worktrees" / "v2")
    tip = commit_file(repo / ".para" / "worktrees" / "v2", "v2.txt", "from the view\n", "v2 work")
    assert rev(repo, "para/v2") == tip
    assert para_json("show", cwd=repo / ".para" / "worktrees" / "v2")["name"] == "v2"
    assert len([r for r in para_json("sidecar", "status")["repos"] if Path(r).samefile(repo)]) == 1


def test_inside_a_session_worktree_seen_through_the_view_the_session_is_found(sidecar, para, para_json, repo, view):
    para("start", "v3")
    inside = view / ".para" / "worktrees" / "v3"
    shown = para_json("show", cwd=inside)
    assert shown["name"] == "v3"
    assert para("show", cwd=inside).stdout.startswith("Session v3")


def test_a_symlinked_path_is_the_same_repository_too(sidecar, para_json, repo, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(repo)
    para_json("start", "v4")
    assert [s["name"] for s in para_json("list", cwd=link)["sessions"]] == ["v4"]
    assert para_json("show", cwd=link / ".para" / "worktrees" / "v4")["name"] == "v4"


def test_a_repository_deleted_and_made_again_at_its_path_starts_empty(repo: Path, sidecar: object) -> None:
    """RA6: the sidecar kept the old repository's sessions in memory, so a brand-new repository
    at the same path answered "session 'fz' already exists (cancelled)"."""
    import json
    import shutil

    from conftest import make_repo, run_para
    run_para("start", "fz", cwd=repo)
    run_para("cancel", "fz", "--discard", cwd=repo)
    run_para("start", "alive", cwd=repo)
    shutil.rmtree(repo)
    again = make_repo(repo)
    run_para("start", "fz", cwd=again)
    listed = json.loads(run_para("list", "--all", "--json", cwd=again).stdout)
    assert [s["name"] for s in listed["sessions"]] == ["fz"], listed
    # Its .para/ alone removed: the same.
    shutil.rmtree(again / ".para")
    assert json.loads(run_para("list", "--all", "--json", cwd=again).stdout)["sessions"] == []


def test_realpath_in_says_what_realpath_says_whatever_the_paths_and_their_order(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: `git.realpath_in` (one memo per request: the directories of the paths, and the
    paths themselves) gives `os.path.realpath` for every path of a tree of symlinks: links to
    directories and to other worktrees, `..` after a link, a link loop, a dangling link,
    relative links, trailing slashes and `.`, missing components; asked in many orders with
    one shared memo, as `list` asks (each session's worktree more than once)."""
    import itertools
    import os
    import random

    from para_rpc import git

    root = tmp_path / "t"
    for d in ("repo/.para/worktrees/a/sub", "repo/.para/worktrees/b", "elsewhere/x/y", "other/wt"):
        (root / d).mkdir(parents=True)
    links = {"repo/wts": ".para/worktrees", "repo/.para/worktrees/c": "a", "repo/.para/worktrees/d": "../../../other/wt",
             "repo/.para/worktrees/e": str(root / "elsewhere/x/y"), "repo/up": "../elsewhere/x",
             "repo/.para/worktrees/loop": "loop2", "repo/.para/worktrees/loop2": "loop",
             "repo/.para/worktrees/dangling": "nowhere/at/all", "repo/view": "."}
    for at, to in links.items():
        os.symlink(to, root / at)
    names = ["a", "b", "c", "d", "e", "loop", "dangling", "missing", "a/sub", "c/sub", "c/..", "e/..", ".",
             "a/", "c/./sub", "d/../wt", "..", "c/../b"]
    bases = [f"{root}/repo/.para/worktrees", f"{root}/repo/wts", f"{root}/repo/view/wts", f"{root}/repo/up/y/..",
             f"{root}/repo/up/../x/y", f"{root}//repo/./wts", "repo/wts"]
    paths = [f"{b}/{n}" for b, n in itertools.product(bases, names)] + [f"{root}/repo/wts", f"{root}/repo/up"]
    monkeypatch.chdir(root)  # (the relative ones: from here, as os.path.realpath takes them)
    rng = random.Random(15)
    for _ in range(30):
        order = paths * 2
        rng.shuffle(order)
        memo: dict[str, str] = {}
        for p in order:
            assert git.realpath_in(p, memo) == os.path.realpath(p), p


def test_a_directory_that_becomes_a_repository_of_its_own_is_served_as_one(sidecar: Any, repo: Path) -> None:
    """Red team rtl: which repository a directory belongs to was kept from its first request;
    after `git init` there, a `start` from it made its session in the outer repository."""
    sub = repo / "sub"
    sub.mkdir()
    assert json.loads(run_para("list", "--json", cwd=sub).stdout)["repo"] == str(repo)
    git("init", "-q", "-b", "main", cwd=sub)
    (sub / "f.txt").write_text("f\n")
    git("add", "-A", cwd=sub)
    git("commit", "-q", "-m", "inner", cwd=sub)
    assert json.loads(run_para("list", "--json", cwd=sub).stdout)["repo"] == str(sub)
    run_para("start", "w2", cwd=sub)
    assert (sub / ".para" / "worktrees" / "w2").is_dir() and not (repo / ".para" / "worktrees" / "w2").exists()
    assert git("branch", "--list", "para/w2", cwd=repo).strip() == ""
