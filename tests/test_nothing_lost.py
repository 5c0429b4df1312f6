"""Nothing is lost (S2 red team, round 4): repositories inside repositories inside a
session's worktree, backups never overwritten, and backups expired by when they were made.

Each test re-creates an attack through the real CLI and the real sidecar, on real git
repositories; each failed on the code before its fix.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import commit_file, git, rev
from para_rpc.errors import Code
from safety_util import FILE_PROTOCOL, add_submodule, assert_error, make_source, nested_repo, refs, sessions, show, wt

SHARED_SIDECAR = True


# ---- repositories inside repositories (item 1) ----------------------------------------------

def test_cancel_saves_a_repository_nested_inside_a_nested_repository(sidecar, para, para_json, repo):
    """`git init inner` in the session, and inside it `git init deeper` (an agent vendoring a
    library that vendors another): cancel used to save `inner` only, its snapshot recording
    `deeper` as a bare gitlink, so deeper's commit and files went with the worktree."""
    para("start", "nn")
    path = wt(repo, "nn")
    inner = nested_repo(path, "inner")
    deeper = nested_repo(inner, "deeper")
    deeper_head = rev(deeper, "HEAD")
    (deeper / "draft.txt").write_text("uncommitted in the deepest repository\n")
    (inner / "u.txt").write_text("uncommitted in inner\n")
    result = para_json("cancel", "nn")
    (saved,) = [b for b in result["backups"] if b["what"] == "nested"]
    assert saved["path"] == "inner"
    by_name = {r.split("/sub/", 1)[1]: r for r in saved["refs"]}
    assert rev(repo, by_name["inner/sub/deeper/HEAD"]) == deeper_head
    assert show(repo, f"{by_name['inner/sub/deeper/wip']}:draft.txt") == "uncommitted in the deepest repository\n"
    assert show(repo, f"{by_name['inner/sub/deeper/wip']}:p.txt") == "p\n"
    # inner's own snapshot has its file and no gitlink for deeper (saved on its own).
    assert show(repo, f"{by_name['inner/wip']}:u.txt") == "uncommitted in inner\n"
    assert "deeper" not in git("ls-tree", "--name-only", by_name["inner/wip"], cwd=repo).split()
    assert refs(repo, "refs/para/backup/nn/") == saved["refs"]


@pytest.fixture
def two_level_submodule(tmp_path: Path, repo: Path) -> None:
    """`sm` is a submodule whose source has a submodule `leaf` of its own."""
    leaf = make_source(tmp_path, "leaf")
    mid_bare = tmp_path / "mid.git"
    git("init", "-q", "--bare", "-b", "main", str(mid_bare), cwd=tmp_path)
    mid = tmp_path / "mid-src"
    git("init", "-q", "-b", "main", str(mid), cwd=tmp_path)
    commit_file(mid, "m.txt", "mid\n", "mid: initial")
    git(*FILE_PROTOCOL, "submodule", "add", "-q", str(leaf), "leaf", cwd=mid)
    git("commit", "-q", "-m", "mid: add leaf", cwd=mid)
    git("push", "-q", str(mid_bare), "main", cwd=mid)
    add_submodule(repo, mid_bare)


def _leaf_commit(repo: Path, para, name: str) -> tuple[Path, str]:
    para("start", name)
    path = wt(repo, name)
    git(*FILE_PROTOCOL, "submodule", "update", "--init", "--recursive", "-q", cwd=path)
    return path, commit_file(path / "sm" / "leaf", "deep.txt", "deep\n", "a commit only the leaf has")


def test_cancel_saves_a_commit_in_a_submodule_of_a_submodule(sidecar, para, para_json, repo, two_level_submodule):
    """The leaf's git directory lives in .git/worktrees/<name>/modules/sm/modules/leaf and
    went with the worktree; only sm was looked at."""
    path, leaf_commit = _leaf_commit(repo, para, "ss")
    result = para_json("cancel", "ss")
    (saved,) = [b for b in result["backups"] if b["what"] == "submodule"]
    (leaf_head,) = [r for r in saved["refs"] if r.endswith("/sub/sm/sub/leaf/HEAD")]
    assert rev(repo, leaf_head) == leaf_commit
    assert show(repo, f"{leaf_head}:deep.txt") == "deep\n"


@pytest.mark.parametrize("verb", ["finish", "integrate"])
def test_finish_and_integrate_refuse_a_submodule_of_a_submodule_holding_work(sidecar, para, repo,
                                                                            two_level_submodule, verb):
    path, leaf_commit = _leaf_commit(repo, para, "sf")
    before = git("for-each-ref", cwd=repo)
    args = ["finish", "m", "--session", "sf"] if verb == "finish" else ["integrate", "--session", "sf"]
    assert_error(para(*args, check=False), Code.dirty, f"submodule {path / 'sm' / 'leaf'} has 1 commit(s) no remote has")
    assert git("for-each-ref", cwd=repo) == before and rev(path / "sm" / "leaf", "HEAD") == leaf_commit
    assert sessions(repo)["sf"]["state"] in ("active", "dirty")


# ---- backups are created, never overwritten (item 2) ------------------------------------------

def _stamps(around: float, before: int = 2, after: int = 20) -> list[str]:
    return [time.strftime("%Y%m%d-%H%M%S", time.gmtime(around + d)) for d in range(-before, after)]


def test_a_backup_never_overwrites_an_earlier_backup_of_the_same_name(sidecar, para, para_json, repo):
    """Backup refs are named `<name>/<UTC second>-<what>`: two cancels of one name within a
    second (a cancel/recover/cancel cycle, a repair running a step again) used to overwrite
    the first backup. Earlier backups are seeded under every name the next ones could take,
    and the cycle runs twice: every seed survives, and each cancel kept its own snapshot."""
    para("start", "bk")
    path = wt(repo, "bk")
    seed = rev(repo, "main")
    seeded = {f"refs/para/backup/bk/{st}-discarded" for st in _stamps(time.time())}
    for ref in seeded:
        git("update-ref", ref, seed, cwd=repo)
    kept = []
    for n in (1, 2):
        (path / "draft.txt").write_text(f"draft {n}\n")
        saved = para_json("cancel", "bk", "--discard")["saved"]
        assert saved["ref"] not in seeded and show(repo, f"{saved['ref']}:draft.txt") == f"draft {n}\n"
        kept.append(saved["ref"])
        para("recover", "bk")
    now = refs(repo, "refs/para/backup/bk/")
    assert all(now[r] == seed for r in seeded), "an earlier backup was overwritten"
    assert len(set(kept)) == 2 and all(show(repo, f"{r}:draft.txt") == f"draft {n}\n" for n, r in enumerate(kept, 1))


def test_a_saved_nested_repository_never_overwrites_an_earlier_one(sidecar, para, para_json, repo):
    """The same for the refs a nested repository is saved under (they used to be pushed with
    `+`, replacing whatever an earlier cancel of the same name in the same second saved)."""
    seed = rev(repo, "main")
    seeded = {f"refs/para/backup/bn/{st}/sub/inner/{leaf}" for st in _stamps(time.time())
              for leaf in ("HEAD", "heads/master")}
    for ref in seeded:
        git("update-ref", ref, seed, cwd=repo)
    para("start", "bn")
    inner_head = rev(nested_repo(wt(repo, "bn"), "inner"), "HEAD")
    (saved,) = [b for b in para_json("cancel", "bn")["backups"] if b["what"] == "nested"]
    now = refs(repo, "refs/para/backup/bn/")
    assert all(now[r] == seed for r in seeded), "an earlier backup was overwritten"
    assert saved["refs"] and set(saved["refs"]).isdisjoint(seeded)
    assert all(now[r] == inner_head for r in saved["refs"]) and len(saved["refs"]) == 2
