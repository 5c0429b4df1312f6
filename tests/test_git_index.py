"""git_index: the gitlinks of an index file, read without a git process, are the ones
`git ls-files --stage` lists, or the reader defers to git (LookupError). Every index git can
write is made here by git itself and both answers compared."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import git, make_repo
from para_rpc import git_index

LONG = "d/" * 2100 + "long"  # (past the 12 bits an entry's flags hold a name's length in)

# case -> git commands run in a fresh repository (a list of argv; "@blob" is a blob's id,
# "@commit" a commit's), and whether the reader answers itself (else it defers to git).
INDEXES: dict[str, tuple[list[list[str]], bool]] = {
    "no gitlink": ([], True),
    "gitlinks": ([["update-index", "--add", "--cacheinfo", "160000,@commit,vendor/lib"],
                  ["update-index", "--add", "--cacheinfo", "160000,@commit,zz"]], True),
    "version 3: intent-to-add and skip-worktree": (
        [["update-index", "--add", "--cacheinfo", "160000,@commit,sub"],
         ["add", "-N", "new.txt"], ["update-index", "--skip-worktree", "README.md"]], True),
    "version 4: names compressed": (
        [["update-index", "--add", "--cacheinfo", "160000,@commit,lib/aa/one"],
         ["update-index", "--add", "--cacheinfo", "100644,@blob,lib/aa/two"],
         ["update-index", "--add", "--cacheinfo", "160000,@commit,lib/ab"],
         ["update-index", "--index-version", "4"]], True),
    "version 4, no gitlink": ([["update-index", "--index-version", "4"]], True),
    "a name past 4095 bytes": ([["update-index", "--add", "--cacheinfo", f"160000,@commit,{LONG}"],
                                ["update-index", "--add", "--cacheinfo", "160000,@commit,later"]], True),
    "a name past 4095 bytes, version 4": (
        [["update-index", "--add", "--cacheinfo", f"160000,@commit,{LONG}"],
         ["update-index", "--add", "--cacheinfo", "160000,@commit,later"],
         ["update-index", "--index-version", "4"]], True),
    "non-UTF-8 name": ([["update-index", "--add", "--cacheinfo", "160000,@commit,caf\udce9"]], True),
    "a conflict's stages": ([["update-index", "--index-info"]], True),
    "extensions (cache tree, untracked cache)": (
        [["update-index", "--add", "--cacheinfo", "160000,@commit,sub"], ["write-tree"],
         ["-c", "core.untrackedCache=true", "update-index", "--untracked-cache"], ["status"]], True),
    "split index": ([["update-index", "--add", "--cacheinfo", "160000,@commit,sub"],
                     ["update-index", "--split-index"]], False),
    "sparse index": ([["update-index", "--add", "--cacheinfo", "100644,@blob,in/x"],
                      ["commit", "-qm", "in"], ["sparse-checkout", "set", "--cone", "--sparse-index", "other"]], False),
}


def _run(repo: Path, argv: list[str], blob: str, commit: str) -> None:
    argv = [a.replace("@blob", blob).replace("@commit", commit) for a in argv]
    stdin = None
    if argv == ["update-index", "--index-info"]:  # three stages of one path: a conflict
        stdin = "".join(f"100644 {blob} {n}\tconflicted.txt\n" for n in (1, 2, 3))
    subprocess.run(["git", *[os.fsencode(a) for a in argv]], cwd=repo, check=True, capture_output=True,
                   input=stdin.encode() if stdin else None)


@pytest.mark.parametrize("case", list(INDEXES))
def test_the_gitlinks_read_are_the_ones_git_lists_or_git_is_asked(case: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    blob = git("hash-object", "-w", "--stdin", cwd=repo, input="x\n")
    commit = git("rev-parse", "HEAD", cwd=repo)
    (repo / "new.txt").write_text("new\n")
    commands, answers = INDEXES[case]
    for argv in commands:
        _run(repo, argv, blob, commit)
    listed = subprocess.run(["git", "ls-files", "--stage", "-z"], cwd=repo, capture_output=True, check=True).stdout
    says = {e.split(b"\t", 1)[1].decode("utf-8", "replace") for e in listed.split(b"\0") if e.startswith(b"160000 ")}
    data = git_index.read(str(repo / ".git" / "index"))
    if answers:
        assert git_index.gitlinks(data) == says
    else:
        with pytest.raises(LookupError):
            git_index.gitlinks(data)


def test_a_sha256_repository_is_left_to_git(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    git("init", "-q", "--object-format=sha256", str(repo), cwd=tmp_path)
    (repo / "a.txt").write_text("a\n")
    git("add", "a.txt", cwd=repo)
    with pytest.raises(LookupError):
        git_index.gitlinks(git_index.read(str(repo / ".git" / "index")))


@pytest.mark.parametrize("cut", [0, 11, 40, 100, -21, -1])
def test_a_damaged_index_is_left_to_git(cut: int, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    git("update-index", "--add", "--cacheinfo", f"160000,{git('rev-parse', 'HEAD', cwd=repo)},sub", cwd=repo)
    data = (repo / ".git" / "index").read_bytes()
    with pytest.raises(LookupError):
        git_index.gitlinks(data[:cut])
    flipped = bytearray(data)
    flipped[30] ^= 0xFF  # (a changed byte: the checksum no longer matches)
    with pytest.raises(LookupError):
        git_index.gitlinks(bytes(flipped))
    # index.skipHash (git 2.40 and up; feature.manyFiles) writes zeros: nothing to check, and
    # nothing tells a SHA-1 index from a SHA-256 one.
    with pytest.raises(LookupError):
        git_index.gitlinks(data[:-20] + bytes(20))


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory", "missing"])
def test_an_index_that_is_not_a_plain_file_is_left_to_git_without_blocking(kind: str, tmp_path: Path) -> None:
    """A sandboxed agent can write its git dir: a FIFO there must not block the sidecar."""
    path = tmp_path / "index"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        (tmp_path / "real").write_bytes(b"DIRC")
        path.symlink_to(tmp_path / "real")
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(LookupError):
        git_index.read(str(path))
