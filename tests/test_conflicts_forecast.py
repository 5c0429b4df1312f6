"""`para conflicts` is linear where sessions touch different files, and as right as raw git.

The forecast merges only the pairs of sessions whose changed paths meet and keeps every
answer by commit ids (service/integration.py `conflicts`). The specification it must keep:
the pairs it reports are exactly those raw `git merge-tree` says conflict, uncommitted work
included, whatever changed behind para's back since the last call.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from conftest import commit_file, counting_git, git, run_para, shutdown_sidecar, start_sidecar


def forecast(repo: Path) -> dict[str, Any]:
    return json.loads(run_para("conflicts", "--json", cwd=repo, check=False).stdout)


def reported_pairs(repo: Path) -> set[frozenset[str]]:
    return {frozenset((p["a"], p["b"])) for p in forecast(repo)["pairs"]}


def wt(repo: Path, name: str) -> Path:
    return repo / ".para" / "worktrees" / name


def work_commit(repo: Path, name: str) -> str:
    """The session's work as raw git sees it: HEAD, or a commit of the worktree's content."""
    w = wt(repo, name)
    if not git("status", "--porcelain", "--untracked-files=all", cwd=w, env={"GIT_OPTIONAL_LOCKS": "0"}):
        return git("rev-parse", "HEAD", cwd=w)
    index = Path(git("rev-parse", "--path-format=absolute", "--git-path", "index", cwd=w))
    tmp = w.parent.parent / f"tmp-index-{name}"
    shutil.copyfile(index, tmp)
    env = {"GIT_INDEX_FILE": str(tmp)}
    git("add", "-A", cwd=w, env=env)
    tree = git("write-tree", cwd=w, env=env)
    tmp.unlink()
    return git("commit-tree", tree, "-p", "HEAD", "-m", "truth", cwd=w)


def raw_pairs(repo: Path, names: list[str]) -> set[frozenset[str]]:
    """Every pair raw `git merge-tree` says conflicts."""
    commits = {n: work_commit(repo, n) for n in names}
    out = set()
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            res = subprocess.run(["git", "merge-tree", "--write-tree", commits[a], commits[b]], cwd=repo,
                                 capture_output=True, text=True)
            assert res.returncode in (0, 1), res.stderr
            if res.returncode == 1:
                out.add(frozenset((a, b)))
    return out


def test_the_pairs_reported_are_exactly_the_pairs_raw_git_says_conflict(sidecar: Any, repo: Path) -> None:
    names = ["a", "b", "c", "d", "e", "late"]
    for n in names[:-1]:
        run_para("start", n, cwd=repo)
    # a and b change one line differently: a collision. c changes it exactly as a did: none.
    for n, text in (("a", "from a\n"), ("b", "from b\n"), ("c", "from a\n")):
        commit_file(wt(repo, n), "README.md", text, f"{n} edits README")
    # d touches its own file only, uncommitted; e nothing at all.
    (wt(repo, "d") / "d-only.txt").write_text("d\n")
    # The target moves on (shared.txt), then `late` forks from there and changes shared.txt
    # again: a and `late` did not both change a path since their fork, b and late neither.
    commit_file(repo, "shared.txt", "target\n", "target adds shared.txt")
    run_para("start", "late", cwd=repo)
    commit_file(wt(repo, "late"), "shared.txt", "late\n", "late edits shared.txt")
    # ... but an uncommitted edit of d collides with late.
    (wt(repo, "d") / "shared.txt").write_text("d's own shared.txt\n")
    assert reported_pairs(repo) == raw_pairs(repo, names) == {frozenset("ab"), frozenset("bc"),
                                                              frozenset(("d", "late"))}
    assert reported_pairs(repo) == raw_pairs(repo, names)  # (asked again: from memory)


def test_changes_behind_paras_back_change_the_next_forecast(sidecar: Any, repo: Path) -> None:
    names = ["a", "b", "c"]
    for n in names:
        run_para("start", n, cwd=repo)
        (wt(repo, n) / f"{n}.txt").write_text(f"{n}\n")
    assert reported_pairs(repo) == set() == raw_pairs(repo, names)
    # a hand edit (uncommitted) makes a and b collide
    (wt(repo, "a") / "README.md").write_text("a's readme\n")
    (wt(repo, "b") / "README.md").write_text("b's readme\n")
    assert reported_pairs(repo) == {frozenset("ab")} == raw_pairs(repo, names)
    # b commits its edit outside para: still a collision, now with the committed side
    git("add", "-A", cwd=wt(repo, "b"))
    git("commit", "-q", "-m", "b by hand", cwd=wt(repo, "b"))
    assert reported_pairs(repo) == {frozenset("ab")} == raw_pairs(repo, names)
    # a gives its edit up: nothing collides
    git("checkout", "--", "README.md", cwd=wt(repo, "a"))
    assert reported_pairs(repo) == set() == raw_pairs(repo, names)
    # a edits again; c's branch is moved outside para onto b's commit (and its worktree
    # follows): c now carries b's edit, so a collides with both.
    (wt(repo, "a") / "README.md").write_text("a's second readme\n")
    git("update-ref", "refs/heads/para/c", git("rev-parse", "para/b", cwd=repo), cwd=repo)
    git("reset", "-q", "--hard", cwd=wt(repo, "c"))
    assert reported_pairs(repo) == {frozenset("ab"), frozenset("ac")} == raw_pairs(repo, names)


def test_disjoint_sessions_are_never_merged_pairwise(runtime_dir: Path, repo: Path, tmp_path: Path) -> None:
    """The linear cost: sessions touching different files cost one forecast each against
    their target, no pairwise merge; asked again with nothing changed, no merge at all."""
    env, calls = counting_git(tmp_path)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        n = 8
        for i in range(n):
            run_para("start", f"s{i}", cwd=repo)
            if i % 2:
                commit_file(wt(repo, f"s{i}"), f"f{i}.txt", f"{i}\n", f"s{i} adds its file")
            else:
                (wt(repo, f"s{i}") / f"f{i}.txt").write_text(f"{i}\n")

        def merges() -> int:
            return sum(1 for line in calls.read_text().splitlines() if " merge-tree " in f" {line} ")
        before = merges()
        assert forecast(repo)["pairs"] == []
        first = merges() - before
        assert first == n, f"{first} merges for {n} disjoint sessions (expected one each against main)"
        assert forecast(repo)["pairs"] == []
        assert merges() - before == first, "asked again with nothing changed, it merged again"
    finally:
        shutdown_sidecar(sc)


def test_a_worktree_grown_past_the_watch_budget_is_forecast_from_its_files(sidecar: Any, repo: Path) -> None:
    """A worktree that outgrows the watch budget (a big ignored node_modules) is asked of git
    every time from then on, and nothing remembered from before is used again (red team RB3)."""
    from para_rpc.watch import MAX_DIRS
    names = ["a", "b"]
    for n in names:
        run_para("start", n, cwd=repo)
        (wt(repo, n) / "README.md").write_text(f"{n}'s readme\n")
    assert reported_pairs(repo) == {frozenset("ab")} == raw_pairs(repo, names)
    with open(repo / ".git" / "info" / "exclude", "a") as f:
        f.write("/node_modules/\n")
    for i in range(MAX_DIRS + 10):
        (wt(repo, "a") / "node_modules" / f"p{i}").mkdir(parents=True)
    assert reported_pairs(repo) == {frozenset("ab")} == raw_pairs(repo, names)
    (wt(repo, "a") / "README.md").write_text("b's readme\n")  # the same edit as b: no conflict, still dirty
    assert reported_pairs(repo) == set() == raw_pairs(repo, names)


def test_file_directory_and_directory_rename_conflicts_are_forecast(sidecar: Any, repo: Path) -> None:
    """Conflicts between sessions that never touch one same path (red team RB4): a file where
    the other makes a directory, and a directory one side renamed while the other adds to it."""
    (repo / "d").mkdir()
    commit_file(repo, "d/x.txt", "x\n", "d/x.txt")
    names = ["file", "dir", "mover", "adder"]
    for n in names:
        run_para("start", n, cwd=repo)
    commit_file(wt(repo, "file"), "f", "a file named f\n", "adds the file f")
    (wt(repo, "dir") / "f").mkdir()
    commit_file(wt(repo, "dir"), "f/inside.txt", "under a directory named f\n", "adds f/inside.txt")
    git("mv", "d", "e", cwd=wt(repo, "mover"))
    git("commit", "-q", "-m", "renames d to e", cwd=wt(repo, "mover"))
    (wt(repo, "adder") / "d" / "new.txt").write_text("added to d\n")  # (uncommitted)
    assert reported_pairs(repo) == raw_pairs(repo, names) == {frozenset(("file", "dir")),
                                                              frozenset(("mover", "adder"))}


def test_a_merge_attribute_added_later_changes_the_forecast(sidecar: Any, repo: Path) -> None:
    """Kept forecasts hold only while the merge settings do: `merge=union` in info/attributes
    makes the collision merge cleanly, as raw git says (red team RB8)."""
    names = ["a", "b"]
    for n in names:
        run_para("start", n, cwd=repo)
        commit_file(wt(repo, n), "notes.txt", f"{n}'s line\n", f"{n} adds notes")
    assert reported_pairs(repo) == {frozenset("ab")} == raw_pairs(repo, names)
    (repo / ".git" / "info" / "attributes").write_text("notes.txt merge=union\n")
    assert reported_pairs(repo) == set() == raw_pairs(repo, names)
