"""integrate.advance_target: the target moves by compare-and-swap, and the backups of what
lands (`keep`) move with it in one transaction, or not at all; an undo takes them back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from para_rpc import integrate
from para_rpc.errors import Code, ParaError

from conftest import git, rev

BACKUP = "refs/para/backup/s/20261206-000000-integrated"


def _landing(repo: Path, name: str = "new.txt") -> tuple[str, str]:
    """(main now, a commit on it that adds `name`), main not moved."""
    old = rev(repo, "main")
    assert old is not None
    blob = git("hash-object", "-w", "--stdin", cwd=repo, input="landed\n")
    git("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", cwd=repo)
    tree = git("write-tree", cwd=repo)
    git("read-tree", "HEAD", cwd=repo)  # (the checkout's index as it was)
    new = git("commit-tree", tree, "-p", old, "-m", "lands", cwd=repo)
    return old, new


def _advance(repo: Path, old: str, new: str, keep: dict[str, str] | None) -> integrate.Advanced:
    return asyncio.run(integrate.advance_target(str(repo), "main", old, new, "para: integrate s",
                                                common_dir=str(repo / ".git"), keep=keep))


def _undone(repo: Path) -> bool:
    """Whether main moved and was moved back (its reflog)."""
    return git("reflog", "show", "--format=%gs", "main", cwd=repo).splitlines()[:2] == \
        ["para: undo integration", "para: integrate s"]


def test_the_backups_are_made_with_the_move(repo: Path):
    old, new = _landing(repo)
    moved = _advance(repo, old, new, {BACKUP: old})
    assert rev(repo, "main") == new and rev(repo, BACKUP) == old
    assert moved.kept and moved.changes == {"new.txt": "A"}
    assert (repo / "new.txt").read_text() == "landed\n"  # (the checkout of main came along)


def test_a_backup_name_taken_meanwhile_lets_the_target_move_alone(repo: Path):
    old, new = _landing(repo)
    git("update-ref", BACKUP, old, cwd=repo)  # (taken after the caller looked: never overwritten)
    git("commit", "-q", "--allow-empty", "-m", "elsewhere", cwd=repo)
    other = rev(repo, "main")
    git("reset", "-q", "--hard", old, cwd=repo)
    moved = _advance(repo, old, new, {BACKUP: other})
    assert rev(repo, "main") == new and rev(repo, BACKUP) == old
    assert not moved.kept


def test_a_lost_compare_and_swap_makes_no_backup(repo: Path):
    old, new = _landing(repo)
    git("commit", "-q", "--allow-empty", "-m", "someone else", cwd=repo)
    with pytest.raises(ParaError) as e:
        _advance(repo, old, new, {BACKUP: old})
    assert e.value.code is Code.busy
    assert rev(repo, BACKUP) is None and rev(repo, "main") != new


def test_an_undo_takes_the_backups_back_with_the_target(repo: Path):
    old, new = _landing(repo, "debug.log")
    # An ignored file where the landing adds one: seen only once the target has moved.
    (repo / "debug.log").write_text("the user's own, ignored\n")
    with pytest.raises(ParaError) as e:
        _advance(repo, old, new, {BACKUP: old})
    assert e.value.code is Code.dirty
    assert rev(repo, "main") == old and rev(repo, BACKUP) is None and _undone(repo)
    assert _undone(repo)
    assert (repo / "debug.log").read_text() == "the user's own, ignored\n"


def test_a_backup_gone_before_the_undo_does_not_keep_the_target_moved(repo: Path, monkeypatch):
    old, new = _landing(repo)

    def in_the_way(wt: str, kinds: dict[str, str]) -> list[str]:
        git("update-ref", "-d", BACKUP, cwd=repo)  # (deleted by hand between the move and its undo)
        return ["new.txt"]
    monkeypatch.setattr(integrate, "in_the_way", in_the_way)
    with pytest.raises(ParaError) as e:
        _advance(repo, old, new, {BACKUP: old})
    assert e.value.code is Code.dirty
    assert rev(repo, "main") == old and rev(repo, BACKUP) is None and _undone(repo)
