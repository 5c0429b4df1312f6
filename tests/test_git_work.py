"""The git processes one operation runs (issue 15): none repeats work another one of the same
operation already did. Counted with a `git` wrapper first on the sidecar's PATH."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from para_rpc import git as gitmod
from para_rpc.errors import ParaError

from conftest import PARA_ARGV, cli_env, counting_git, git, rev, run_para, shutdown_sidecar, start_sidecar


def _subcommand(line: str) -> str:
    """A call without the `-c` options para puts before every subcommand (git.py)."""
    words = line.split()
    while words and words[0] == "-c":
        words = words[2:]
    return " ".join(words)


def test_start_and_cancel_run_no_git_command_twice(repo: Path, runtime_dir: Path, tmp_path: Path):
    env, calls = counting_git(tmp_path)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        run_para("list", "--json", cwd=repo)  # (the repository is opened: not part of either count)

        def ran(*argv: str, name: str = "w") -> list[str]:
            calls.write_text("")
            proc = run_para(*argv, "--json", cwd=repo)
            assert json.loads(proc.stdout)["name"] == name, proc.stdout
            return [_subcommand(line) for line in calls.read_text().splitlines()]

        started = ran("start", "w")
        assert [c for c in started if c.startswith("worktree add")], started
        assert [c for c, n in Counter(started).items() if n > 1] == [], started
        # The new worktree's git dirs are read from the files git just wrote, not by a git process.
        assert not [c for c in started if c.startswith("rev-parse --path-format")], started
        # Which branch to fork from: HEAD and origin/HEAD read from their files, init.defaultBranch
        # not asked while the main checkout is on main, the candidates one listing.
        assert not [c for c in started if c.startswith(("symbolic-ref", "config", "rev-parse"))], started
        # The base (main's loose ref) and whether the new branch exists (its loose ref, packed-refs)
        # are read from git's files: the one git process is the worktree's.
        assert len(started) == 1, started
        (repo / ".para" / "worktrees" / "w" / "work.txt").write_text("work\n")
        cancelled = ran("cancel", "w")
        assert [c for c in cancelled if c.startswith("worktree remove")], cancelled
        # The worktree's state (status, index, nested repositories) is read once, not again
        # after a teardown that did not run; the archive name and the refs in its way are one listing.
        assert [c for c, n in Counter(cancelled).items() if n > 1] == [], cancelled
        assert not [c for c in cancelled if c.startswith("show-ref")], cancelled
        # The worktree is as para made it: its git files and its branch's ref file say what a
        # `git worktree list` would.
        assert not [c for c in cancelled if c.startswith("worktree list")], cancelled
        # Its gitlinks come from its index file, the free archive name and the branch's tip from
        # the ref files: three git processes, its status, the removal and the rename.
        assert not [c for c in cancelled if c.startswith(("ls-files", "for-each-ref")) or "refs/heads/para/w" in c], cancelled
        run_para("start", "clean", cwd=repo)
        assert [c.split()[0] for c in ran("cancel", "clean", name="clean")] == ["status", "worktree", "branch"]

        run_para("start", "i", cwd=repo)
        (repo / ".para" / "worktrees" / "i" / "work.txt").write_text("work\n")
        integrated = ran("integrate", "done", "--session", "i", name="i")
        # (The target moves with the backup of what landed: one transaction, on git's stdin.)
        assert [c for c in integrated if c == "update-ref -m para: integrate i --stdin -z"], integrated
        # The worktree's state is read before the work is committed and again before the worktree
        # goes (not a third time after a teardown that did not run); the fork point once.
        counts = Counter(integrated)
        # (The status names the ignored directories too, where a clone may hide: no listing of them.)
        status = "status --porcelain=v1 -z --untracked-files=all --ignored=matching"
        assert counts[status] == 2, integrated
        assert not [c for c in integrated if c.startswith("ls-files")], integrated  # (gitlinks: its index file)
        assert not [c for c in integrated if c.startswith("ls-files") and "--ignored" in c], integrated
        # The fork point and the gitlinks since it are one diff-tree; whether the session's work is
        # already in the target is what the merge tells (no ancestry question); target and session
        # branch are one listing while the queue is held, beside the worktree listing (for the
        # target's checkout: before the work is committed and before the worktree goes, its git
        # files, as para made them, and its branch's ref file say what a listing would).
        assert not [c for c in integrated if c.startswith("merge-base")], integrated
        assert counts["worktree list --porcelain -z"] == 1, integrated
        assert len([c for c in integrated if c.startswith("for-each-ref")]) == 1, integrated
        assert len([c for c in integrated if c.startswith("config ")]) == 1, integrated
        # The work in progress is committed once (its commit is the integration's starting point);
        # the answer needs no listing of what was just removed; the target is found by its ref
        # file (a branch every integration moves is a loose ref).
        assert len([c for c in integrated if c.startswith("rev-parse")]) == 1, integrated
        assert not [c for c in integrated if "refs/heads/main^{commit}" in c], integrated
        assert len(integrated) <= 27, integrated

        # Work its agent committed: its tip is what the worktree listing showed (no rev-parse of
        # the session branch before the queue).
        run_para("start", "c", cwd=repo)
        wt = repo / ".para" / "worktrees" / "c"
        (wt / "done.txt").write_text("done\n")
        git("add", "done.txt", cwd=wt)
        git("commit", "-q", "-m", "c: done", cwd=wt)
        tip = rev(repo, "para/c")
        committed = ran("integrate", "done", "--session", "c", name="c")
        assert not [c for c in committed if c.startswith("rev-parse") and "para/c" in c], committed
        # After landing, no git process says whether the project file changed (the diff-tree
        # read while the target moved does) nor what the branch's tip is (its ref file names the
        # commit that landed). The tip is kept under -integrated by the move itself: one
        # update-ref transaction, nothing after.
        assert not [c for c in committed if c.startswith(("diff --quiet", "cat-file"))], committed
        moves = [c for c in committed if c.startswith("update-ref")]
        assert moves == ["update-ref -m para: integrate c --stdin -z"], committed
        kept = git("for-each-ref", "--format=%(refname) %(objectname)", "refs/para/backup/c/", cwd=repo).split()
        assert len(kept) == 2 and kept[0].endswith("-integrated") and kept[1] == tip, kept
        # In the queue, the main checkout's status (it has main checked out) is read with the
        # listings, ahead of the merge, not after it: one step less while others wait.
        main_status = "status --porcelain=v1 -z --untracked-files=all --no-renames"
        assert committed.count(main_status) == 1, committed
        assert committed.index(main_status) < next(i for i, c in enumerate(committed) if c.startswith("merge-tree"))
        # While the target moves, a diff-tree says which files the landing modifies, so one the
        # user deleted from the main checkout since its status was read is not written back.
        assert len([c for c in committed if c.startswith("diff-tree -r -z --name-status")]) == 1, committed
        # Clean, with a message given and no gitlink in its index: no diff since the fork point
        # (no gitlink can land; the default message is not made).
        assert not [c for c in committed if c.startswith("diff-tree -r -z --no-renames --merge-base")], committed
        assert len(committed) <= 15, committed
    finally:
        shutdown_sidecar(sc)


def test_where_the_files_cannot_say_git_is_asked(repo: Path, runtime_dir: Path, tmp_path: Path):
    """The shortcuts above read git's own files (a loose ref, a worktree's HEAD and gitdir);
    where they cannot answer, a `git worktree list` does, and the operation is the same: a
    packed session branch, a target only in packed-refs, HEAD moved off the branch by hand."""
    env, calls = counting_git(tmp_path)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        run_para("list", "--json", cwd=repo)
        for name in ("packed", "moved"):
            run_para("start", name, cwd=repo)
            (repo / ".para" / "worktrees" / name / f"{name}.txt").write_text("work\n")
        git("pack-refs", "--all", cwd=repo)  # (every branch, main and both sessions', packed)
        assert not (repo / ".git" / "refs" / "heads" / "main").exists()

        calls.write_text("")
        landed = json.loads(run_para("integrate", "packed lands", "--session", "packed", "--json", cwd=repo).stdout)
        ran = [_subcommand(line) for line in calls.read_text().splitlines()]
        assert landed["status"] == "integrated" and git("show", "main:packed.txt", cwd=repo) == "work"
        assert [c for c in ran if c.startswith("rev-parse") and "refs/heads/main^{commit}" in c], ran
        assert Counter(ran)["worktree list --porcelain -z"] == 2, ran  # (before the commit, and in the queue)

        wt = repo / ".para" / "worktrees" / "moved"
        git("checkout", "-q", "-b", "by-hand", cwd=wt)
        calls.write_text("")
        out = run_para("cancel", "moved", "--json", cwd=repo, check=False)
        ran = [_subcommand(line) for line in calls.read_text().splitlines()]
        assert out.returncode == 4 and "by-hand" in json.loads(out.stdout)["error"]["message"], out.stdout
        assert "worktree list --porcelain -z" in ran, ran
    finally:
        shutdown_sidecar(sc)


def test_start_finds_packed_branches_too(repo: Path, runtime_dir: Path, tmp_path: Path):
    """`start` reads its base and whether its branch exists from git's files (a loose ref,
    packed-refs): a branch only in packed-refs still exists, and with main packed the base
    is still main's commit (then git is asked)."""
    env, calls = counting_git(tmp_path)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        git("branch", "para/taken", cwd=repo)
        git("pack-refs", "--all", cwd=repo)
        assert not (repo / ".git" / "refs" / "heads" / "para" / "taken").exists()
        out = run_para("start", "taken", "--json", cwd=repo, check=False)
        assert out.returncode != 0 and json.loads(out.stdout)["error"]["code"] == "already_exists", out.stdout
        calls.write_text("")
        started = json.loads(run_para("start", "fresh", "--json", cwd=repo).stdout)
        assert started["base_commit"] == rev(repo, "main") and started["base_branch"] == "main"
        assert any(_subcommand(c).startswith("for-each-ref") for c in calls.read_text().splitlines())
    finally:
        shutdown_sidecar(sc)


def test_git_processes_start_off_the_event_loop(repo: Path, monkeypatch):
    """Starting a process blocks its caller until the child has exec'd (~5 ms per git process on
    a loaded machine): git.run starts git from its own threads, so the sidecar's event loop (and
    every request it serves meanwhile) never waits for that. The real git runs; only who started
    it is noted."""
    import asyncio
    import subprocess
    import threading

    from para_rpc import git

    starters: list[threading.Thread] = []
    real = subprocess.Popen

    class Noting(real):  # type: ignore[misc,valid-type]
        def __init__(self, *args, **kwargs):
            starters.append(threading.current_thread())
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(subprocess, "Popen", Noting)

    async def main() -> tuple[threading.Thread, list[str]]:
        heads = await asyncio.gather(*(git.out(repo, "rev-parse", "HEAD") for _ in range(4)))
        return threading.current_thread(), heads
    loop_thread, heads = asyncio.run(main())
    assert len(set(heads)) == 1 and len(heads[0]) == 40, heads
    assert len(starters) == 4 and loop_thread not in starters, starters


def test_reflogs_that_are_links_or_not_files_go_before_git_writes(tmp_path: Path):
    """(git._unlink_reflogs, run before every git para runs: read from the directory listing,
    not a stat per reflog.) Links (to files, to directories) and FIFOs go, at any depth; the
    reflogs, their directories and whatever a link named stay."""
    import os

    from para_rpc import git

    top = tmp_path / "logs" / "refs" / "heads" / "para"
    (top / "deep" / "er").mkdir(parents=True)
    victim, victim_dir = tmp_path / "victim", tmp_path / "victim-dir"
    victim.write_text("host file\n")
    victim_dir.mkdir()
    for log in (top / "a", top / "deep" / "b", top / "deep" / "er" / "c"):
        log.write_text("0 1 x\n")
    (top / "linked").symlink_to(victim)
    (top / "deep" / "linked-dir").symlink_to(victim_dir)
    (top / "deep" / "er" / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(top / "deep" / "er" / "fifo")
    git._unlink_reflogs(str(top))
    left = sorted(str(p.relative_to(top)) for p in top.rglob("*"))
    assert left == ["a", "deep", "deep/b", "deep/er", "deep/er/c"], left
    assert victim.read_text() == "host file\n" and victim_dir.is_dir()


def test_a_repository_is_found_with_one_git_process(repo: Path, runtime_dir: Path, tmp_path: Path):
    """The first call from a directory asks git once where the repository is (an agent's first
    `para` call comes from its new worktree); a bare repository still gets its clear refusal."""
    env, calls = counting_git(tmp_path)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        (repo / "src").mkdir()
        calls.write_text("")
        run_para("list", "--json", cwd=repo / "src")
        asked = [c for c in map(_subcommand, calls.read_text().splitlines()) if c.startswith("rev-parse")]
        assert len(asked) == 1 and "--show-toplevel" in asked[0], asked
        bare = tmp_path / "bare.git"
        git("init", "-q", "--bare", str(bare), cwd=tmp_path)
        proc = run_para("list", "--json", cwd=bare, check=False)
        assert proc.returncode != 0 and "bare repository" in json.loads(proc.stdout)["error"]["message"], proc.stdout
    finally:
        shutdown_sidecar(sc)


def test_a_worktree_listing_resolves_paths_as_realpath_does(tmp_path: Path):
    """(git.worktrees resolves each listed path with its directory resolved once per listing.)"""
    import os

    from para_rpc import git

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "blink").symlink_to(tmp_path / "a" / "b")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a" / "loop")
    names = ["link/b", "a/blink", "link/missing", "a/../a/b", "a//b", "link/blink", "a/b/", "a/loop", "link/blink/.."]
    resolved: dict[str, str] = {}
    for name in [*names, *names]:  # (the second time from what the first filled in)
        path = f"{tmp_path}/{name}"
        assert git.realpath_in(path, resolved) == os.path.realpath(path), name


def test_start_on_a_main_whose_loose_ref_names_a_tag_object_never_records_a_tag_as_base_commit(
        sidecar: Any, repo: Path) -> None:
    """The base is read from its loose ref, which may name a tag object (written there by hand):
    the session's base_commit is the commit git made its branch at (red team rt2)."""
    git("tag", "-a", "v1", "-m", "v1", cwd=repo)
    (repo / ".git" / "refs" / "heads" / "main").write_text(git("rev-parse", "v1", cwd=repo) + "\n")
    proc = run_para("start", "s", cwd=repo, check=False)
    if proc.returncode == 0:
        s = json.loads(run_para("show", "s", "--json", cwd=repo).stdout)
        assert git("cat-file", "-t", s["base_commit"], cwd=repo) == "commit", s["base_commit"]
    else:
        assert "internal" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_start_over_a_broken_loose_branch_gives_advice_that_works(sidecar: Any, repo: Path) -> None:
    """A loose `refs/heads/para/g` of 40 non-hex characters is not a branch para could advise
    renaming (`git branch -m` refuses it): git decides what it is (red team rt2)."""
    (repo / ".git" / "refs" / "heads" / "para").mkdir(parents=True, exist_ok=True)
    (repo / ".git" / "refs" / "heads" / "para" / "g").write_text("z" * 40 + "\n")
    proc = run_para("start", "g", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "git branch -m para/g" not in proc.stderr, proc.stderr


def _slipping_git(tmp_path: Path, branch: str, symref: bool = False) -> dict[str, str]:
    """An environment whose `git`, asked to delete `branch`, first commits on it (as a writer
    outside para can, between para's last look at the branch and the delete), or with
    `symref` makes it a symbolic ref to main."""
    bindir = tmp_path / f"slip-bin-{branch.replace('/', '-')}"
    bindir.mkdir()
    real = shutil.which("git")
    slip = (f'{real} symbolic-ref refs/heads/{branch} refs/heads/main' if symref else
            f'c=$({real} -c user.name=t -c user.email=t@t commit-tree "$({real} rev-parse {branch}^{{tree}})" '
            f'-p {branch} -m slipped) && {real} update-ref refs/heads/{branch} "$c"')
    (bindir / "git").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *"branch -D --end-of-options {branch}")\n  {slip} ;;\nesac\n'
        f'exec {real} "$@"\n')
    (bindir / "git").chmod(0o755)
    return dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")


def _holding(repo: Path, prefix: str, subject: str) -> list[str]:
    out = git("for-each-ref", "--format=%(refname) %(subject)", prefix, cwd=repo)
    return [line.split()[0] for line in out.splitlines() if line.split(" ", 1)[1] == subject]


def test_a_commit_made_on_a_branch_as_it_is_deleted_is_kept(repo: Path, runtime_dir: Path, tmp_path: Path):
    """Deleting a branch (`git branch -D`) is no compare-and-swap: a commit made on it after
    para last looked would go with it. What git says it deleted is checked against what para
    kept, and a commit that slipped in is kept too: after an integration (under -late, said),
    and by `clean` (next to its backup)."""
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=_slipping_git(tmp_path, "para/slip"))
    try:
        run_para("start", "slip", cwd=repo)
        (repo / ".para" / "worktrees" / "slip" / "work.txt").write_text("work\n")
        r = json.loads(run_para("integrate", "done", "--session", "slip", "--json", cwd=repo).stdout)
        (late,) = _holding(repo, "refs/para/backup/slip/", "slipped")
        assert late.endswith("-late") and r["integration"]["late"] == late, r
        assert any(late in w and "did not land" in w for w in r["warnings"]), r["warnings"]
    finally:
        shutdown_sidecar(sc)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=_slipping_git(tmp_path, "para/orphan"))
    try:
        git("branch", "para/orphan", "main", cwd=repo)  # (no session owns it, nothing unintegrated)
        run_para("clean", "--json", cwd=repo)
        assert not git("branch", "--list", "para/orphan", cwd=repo)
        (kept,) = _holding(repo, "refs/para/backup/clean/", "slipped")
        assert kept.endswith("/para/orphan-late"), kept
    finally:
        shutdown_sidecar(sc)


def test_one_git_deleting_several_branches_answers_for_each(repo: Path, tmp_path: Path):
    """`git.delete_branches` (integrations landed together, issue 15 row 7): one `git branch -D`
    for all, and each branch its own answer: deleted as kept (None), deleted at a commit made
    after the one kept (that commit, for the caller to keep), already gone (deleted by hand
    meanwhile: None, not an error that would say it is kept), or git's refusal (its own error,
    while the others still go)."""
    kept = rev(repo, "main")
    for b in ("para/a", "para/held", "para/moved"):
        git("branch", b, kept, cwd=repo)
    git("worktree", "add", "-q", str(tmp_path / "holder"), "para/held", cwd=repo)
    (tmp_path / "holder" / "late.txt").write_text("late\n")
    git("add", "-A", cwd=tmp_path / "holder")
    git("commit", "-q", "-m", "late", cwd=tmp_path / "holder")
    slipped = git("commit-tree", f"{kept}^{{tree}}", "-p", kept, "-m", "slipped", cwd=repo).strip()
    git("update-ref", "refs/heads/para/moved", slipped, cwd=repo)
    got = asyncio.run(gitmod.delete_branches(repo, {"para/a": kept, "para/held": kept, "para/gone": kept,
                                                    "para/moved": kept}))
    assert got["para/a"] is None and got["para/gone"] is None and got["para/moved"] == slipped, got
    refused = got["para/held"]
    assert isinstance(refused, ParaError) and "checked out" in refused.data["stderr"], refused
    assert git("branch", "--list", "para/*", cwd=repo).split() == ["+", "para/held"]


def test_integrations_landed_together_delete_their_branches_in_one_git_process(repo: Path, runtime_dir: Path,
                                                                              tmp_path: Path):
    """Issue 15 (row 7): the branches of integrations landing at once are deleted by whoever
    gets the repository's lock first, those waiting for it in the same `git branch -D`: before,
    one process each, one after the other under the lock, and every answer waited behind them.
    Here the first delete waits until every session's worktree is gone (the step before it),
    so the other four sessions all wait for it."""
    env, calls = counting_git(tmp_path)
    wrapper = Path(env["PATH"].split(os.pathsep)[0]) / "git"
    stalled, wts = tmp_path / "stalled", repo / ".para" / "worktrees"
    wait = f'n=0; while [ -n "$(ls {wts})" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done; sleep 0.2'
    wrapper.write_text(wrapper.read_text().replace(
        "exec ", f'case "$*" in *"branch -D "*) [ -e {stalled} ] || {{ touch {stalled}; {wait}; }} ;; esac\nexec ', 1))
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=env)
    try:
        names = [f"t{i}" for i in range(5)]
        for n in names:
            run_para("start", n, cwd=repo)
            (repo / ".para" / "worktrees" / n / f"{n}.txt").write_text(f"{n}\n")
        procs = [subprocess.Popen([*PARA_ARGV, "integrate", f"{n} lands", "--session", n, "--json"], cwd=repo,
                                  env=cli_env(), text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for n in names]
        answers = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
        assert [a["status"] for a in answers] == ["integrated"] * 5, answers
        assert not [w for a in answers for w in a["warnings"] if w.startswith("branch ")], answers
        deletes = [_subcommand(line).split()[3:] for line in calls.read_text().splitlines()
                   if _subcommand(line).startswith("branch -D")]
        assert sorted(len(d) for d in deletes) == [1, 4], deletes
        assert sorted(b for d in deletes for b in d) == [f"para/{n}" for n in names]
        assert not git("branch", "--list", "para/*", cwd=repo).strip()
    finally:
        shutdown_sidecar(sc)


def test_a_branch_made_a_symbolic_ref_as_it_is_deleted_keeps_nothing_and_says_nothing(
        repo: Path, runtime_dir: Path, tmp_path: Path):
    """git says `(was refs/heads/main)` for a symbolic ref it deleted: no commit of its own,
    so no -late backup of main's tip and no warning that work did not land (red team rt2 F6)."""
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=_slipping_git(tmp_path, "para/sym", symref=True))
    try:
        run_para("start", "sym", cwd=repo)
        (repo / ".para" / "worktrees" / "sym" / "work.txt").write_text("work\n")
        r = json.loads(run_para("integrate", "done", "--session", "sym", "--json", cwd=repo).stdout)
        assert not [ref for ref in git("for-each-ref", "--format=%(refname)", "refs/para/backup/sym/",
                                       cwd=repo).split() if ref.endswith("-late")]
        assert not any("did not land" in w for w in r["warnings"]), r["warnings"]
    finally:
        shutdown_sidecar(sc)


def test_an_archive_name_blocked_while_the_worktree_goes_is_replaced_by_the_next_free_one(
        repo: Path, runtime_dir: Path, tmp_path: Path):
    """The archive name is checked before the worktree is removed; another session's agent
    (which can write logs/refs/heads/para/) may put a file where its reflog goes meanwhile:
    `branch -m` failed then, after the worktree went, and every retry failed alike (red team
    rt2 F5). The cancel takes the next free name, and says so."""
    bindir = tmp_path / "plant-bin"
    bindir.mkdir()
    real = shutil.which("git")
    logs = repo / ".git" / "logs" / "refs" / "heads" / "para"
    (bindir / "git").write_text('#!/bin/sh\ncase "$*" in *"worktree remove"*)\n'
                                f'  mkdir -p {logs} && echo planted > {logs}/archived ;;\nesac\nexec {real} "$@"\n')
    (bindir / "git").chmod(0o755)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}"))
    try:
        run_para("start", "s", cwd=repo)
        (repo / ".para" / "worktrees" / "s" / "work.txt").write_text("work\n")
        out = json.loads(run_para("cancel", "s", "--json", cwd=repo).stdout)
        assert out["status"] == "cancelled" and out["archived_branch"].startswith("para/archived-"), out
        assert any("could no longer be made" in n for n in out["notes"]), out["notes"]
        assert git("show", f"{out['archived_branch']}:work.txt", cwd=repo) == "work"
    finally:
        shutdown_sidecar(sc)
