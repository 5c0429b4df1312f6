"""The ref readers of git.py that answer from git's files instead of a git process (every
cancel asks them): they say what git would, or defer to git (LookupError)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tracemalloc
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from para_rpc import git as para_git
from para_rpc.service import sessions

from conftest import git, make_repo

NEW = "refs/heads/para/archived/20261205-120000/w"

# case -> how the refs around NEW are left (ref names made at HEAD, "pack" packs every ref,
# "dir:X" an empty directory where ref X's file would be), and what is in NEW's way.
AROUND: dict[str, tuple[list[str], str | None]] = {
    "nothing": ([], None),
    "other sessions and archives": (["refs/heads/para/a", "refs/heads/para/archived/20261205-115959/w",
                                     "refs/heads/para/archived/20261205-120000/x"], None),
    "the name taken": ([NEW], NEW),
    "the name taken, packed": ([NEW, "pack"], NEW),
    "a branch named para/archived": (["refs/heads/para/archived"], "refs/heads/para/archived"),
    "a branch named para/archived, packed": (["refs/heads/para/archived", "pack"], "refs/heads/para/archived"),
    "a branch named para": (["refs/heads/para"], "refs/heads/para"),
    "a ref below the name": ([NEW + "/x/y"], NEW + "/x/y"),
    "a ref below the name, packed": ([NEW + "/x/y", "pack"], NEW + "/x/y"),
    "an empty directory at the name": (["dir:" + NEW + "/x"], None),
    # What no listing of refs shows, and git still cannot write past (red team rt1 F2):
    "a file where the reflog's directory goes": (["file:logs/refs/heads/para/archived"],
                                                 "logs/refs/heads/para/archived"),
    "a reflog below the name": (["file:logs/" + NEW + "/x"], "logs/" + NEW + "/x"),
    "a lock file at the name": (["file:" + NEW + ".lock"], NEW + ".lock"),
}


@pytest.mark.parametrize("case", list(AROUND))
def test_what_is_in_a_new_refs_way_is_what_keeps_git_from_making_it(case: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r")
    made, expected = AROUND[case]
    for step in made:
        if step == "pack":
            git("pack-refs", "--all", cwd=repo)
        elif step.startswith("dir:"):
            (repo / ".git" / step[4:]).mkdir(parents=True)
        elif step.startswith("file:"):
            (repo / ".git" / step[5:]).parent.mkdir(parents=True, exist_ok=True)
            (repo / ".git" / step[5:]).write_text("x\n")
        else:
            git("update-ref", step, "HEAD", cwd=repo)
    common = str(repo / ".git")
    found = para_git.in_the_way_in_files(common, NEW, para_git.packed_names(common)) \
        or para_git.writing_in_the_way(common, NEW)
    assert found == expected
    # The cancel's choice of name is the same from the files as from git's listing (where the
    # files cannot say: a reftable).
    names = [NEW.removeprefix("refs/heads/"), NEW.removeprefix("refs/heads/").replace("120000", "120000-2")]
    where = SimpleNamespace(root=str(repo), common_dir=common)
    from_files = asyncio.run(sessions._first_free(where, names))  # type: ignore[arg-type]

    def no_files(_: str) -> list[str]:
        raise LookupError("reftable")

    monkeypatch.setattr(para_git, "packed_names", no_files)
    assert asyncio.run(sessions._first_free(where, names)) == from_files  # type: ignore[arg-type]
    assert from_files[1] == expected and (from_files[0] == names[0]) == (expected is None)
    made_it = subprocess.run(["git", "branch", NEW.removeprefix("refs/heads/"), "HEAD"], cwd=repo,
                             capture_output=True).returncode == 0
    assert made_it == (expected is None)


def test_a_reftable_repository_is_left_to_git(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    (repo / ".git" / "reftable").mkdir()  # (git 2.45 and up write one: the files say nothing then)
    with pytest.raises(LookupError):
        para_git.packed_names(str(repo / ".git"))


# case -> what refs/heads/b is made to name, and whether its file answers (else git is asked).
TIPS: dict[str, tuple[str, bool]] = {
    "a commit, loose": ("commit", True),
    "a commit, packed": ("packed", False),
    "a commit, packed, known to the caller": ("packed known", True),
    "an annotated tag": ("tag", False),
    "a blob": ("blob", False),
    # (red team rt1 F4) A header that says commit over content that is not the object's id:
    "a damaged commit object": ("damaged", False),
    # (red team rt2 F4) Small on disk, past a megabyte inflated: not inflated in the event loop.
    "a commit larger than para reads": ("huge", False),
}


@pytest.mark.parametrize("case", list(TIPS))
def test_a_branch_tip_read_from_files_is_the_commit_git_resolves(case: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    kind, answers = TIPS[case]
    head = git("rev-parse", "HEAD", cwd=repo)
    target = {"tag": lambda: (git("tag", "-a", "-m", "t", "t1", cwd=repo), git("rev-parse", "t1", cwd=repo))[1],
              "blob": lambda: git("hash-object", "-w", "--stdin", cwd=repo, input="x\n")}.get(kind, lambda: head)()
    known: tuple[str, ...] = ()
    if kind.startswith("packed"):
        git("gc", "-q", cwd=repo)
        assert not (repo / ".git" / "objects" / head[:2] / head[2:]).exists()
        known = (head,) if kind.endswith("known") else ()
    if kind == "damaged":
        target = "1" * 40
        (repo / ".git" / "objects" / "11").mkdir(exist_ok=True)  # (one of the repository's may start so)
        (repo / ".git" / "objects" / "11" / ("1" * 38)).write_bytes(zlib.compress(b"commit 5\0hello"))
    if kind == "huge":
        body = f"tree {git('rev-parse', 'HEAD^{tree}', cwd=repo)}\nauthor a <a@a> 0 +0000\ncommitter a <a@a> 0 +0000\n\n"
        target = git("hash-object", "-t", "commit", "-w", "--stdin", cwd=repo, input=body + "x" * (64 << 20))
    # (Written as a sandboxed agent can, past git's refusal of a branch at a non-commit.)
    (repo / ".git" / "refs" / "heads" / "b").write_text(target + "\n")
    common = str(repo / ".git")
    if answers:
        assert para_git.commit_in_files(common, "b", known) == head
    else:
        tracemalloc.start()
        with pytest.raises(LookupError):
            para_git.commit_in_files(common, "b", known)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20  # (the 64 MB commit was not inflated)
        tracemalloc.stop()
    # What git resolves the branch to (`rev-parse b^{commit}`): the same commit, or none.
    peeled = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "b^{commit}"], cwd=repo,
                            capture_output=True, text=True).stdout.strip()
    assert peeled == {"blob": "", "damaged": "", "huge": target}.get(kind, head)


@pytest.mark.parametrize("path", ["packed-refs", "objects/@"])
def test_a_fifo_where_git_keeps_a_file_is_left_to_git_without_blocking(path: str, tmp_path: Path) -> None:
    """(Red team rt1 F1.) These run in the sidecar's event loop: a FIFO an agent left at the
    branch tip's object path, or at packed-refs, froze every client. (Git reads packs first:
    with the object packed, git itself never opened it.)"""
    repo = make_repo(tmp_path / "r")
    head = git("rev-parse", "HEAD", cwd=repo)
    git("update-ref", "refs/heads/b", head, cwd=repo)
    git("repack", "-adq", cwd=repo)
    git("prune-packed", cwd=repo)
    fifo = repo / ".git" / path.replace("@", f"{head[:2]}/{head[2:]}")
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    def blocked(*_: object) -> None:
        raise TimeoutError("the read blocked")

    signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)  # (a read that blocks fails the test instead of hanging it)
    try:
        with pytest.raises(LookupError):
            para_git.packed_names(str(repo / ".git")) if path == "packed-refs" \
                else para_git.commit_in_files(str(repo / ".git"), "b")
    finally:
        signal.alarm(0)


# ---- create_ref: a backup is never left unsaved for its name -------------------------------

BACKUP = "refs/para/backup/s/20261206-120000-integrated"


def _fifo(path: Path) -> None:
    os.mkfifo(path)


# obstacle at BACKUP's file -> made how
OBSTACLES = {
    "its lock file (a writer that died)": lambda p: p.with_name(p.name + ".lock").write_text(""),
    "a broken ref file": lambda p: p.write_text("garbage\n"),
    "a FIFO (git would wait on it forever)": _fifo,
    # (`twin`: the same tree and parents as what is saved, which would pass for it)
    "a link to another ref (its commit is not what is saved)": lambda p: p.symlink_to("../../../heads/twin"),
    "a ref below it": lambda p: (p.mkdir(), (p / "x").write_text((p.parents[3] / "heads" / "main").read_text())),
}


@pytest.mark.parametrize("case", OBSTACLES)
def test_a_backup_name_git_cannot_take_passes_to_the_next(tmp_path: Path, case: str, monkeypatch):
    monkeypatch.setattr(para_git, "GIT_TIMEOUT", 10.0)  # (a git that waits on the FIFO fails, not hangs)
    repo = make_repo(tmp_path / "repo")
    git("commit", "-q", "--allow-empty", "-m", "to keep", cwd=repo)
    keep = git("rev-parse", "HEAD", cwd=repo)
    git("reset", "-q", "--hard", "HEAD~", cwd=repo)
    twin = git("commit-tree", f"{keep}^{{tree}}", "-p", f"{keep}^", "-m", "twin", cwd=repo)
    git("update-ref", "refs/heads/twin", twin, cwd=repo)
    at = repo / ".git" / BACKUP
    at.parent.mkdir(parents=True)
    OBSTACLES[case](at)
    made = asyncio.run(asyncio.wait_for(para_git.create_ref(str(repo), BACKUP, keep), 30))
    assert made == f"{BACKUP}-2"
    assert git("rev-parse", made, cwd=repo) == keep
    assert os.path.lexists(at) or os.path.lexists(str(at) + ".lock")  # (left as it was)


def test_a_file_where_the_backups_directory_goes_is_an_error_not_a_loop(tmp_path: Path):
    repo = make_repo(tmp_path / "repo")
    (repo / ".git" / "refs" / "para" / "backup").mkdir(parents=True)
    (repo / ".git" / "refs" / "para" / "backup" / "s").write_text("not a directory\n")
    with pytest.raises(para_git.ParaError) as e:
        asyncio.run(asyncio.wait_for(para_git.create_ref(str(repo), BACKUP, git("rev-parse", "HEAD", cwd=repo)), 30))
    assert "update-ref" in e.value.message
