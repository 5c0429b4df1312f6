"""Crash repair of the operations test_crash.py does not reach: `recover`, `resume`, an
integration killed while it materialized its conflict, and a repair that cannot succeed.

As in test_crash.py, a real git hook stops git at a precise point, the sidecar is killed
with SIGKILL there, git (orphaned) finishes its command, and the next `para` call
autostarts a sidecar that repairs. A repair that fails must say so on the session (a
note) and keep the operation pending, never pretend it completed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import Sidecar, branches, commit_file, git, rev, sidecar_pids, wait_until, worktree_paths
from test_crash import ZERO, crash_at, post_checkout, ref_update

pytest.register_assert_rewrite("integrate_util")
from integrate_util import BASE_FILES, add_project_files, edit_line, in_progress, porcelain, write  # noqa: E402


def repaired_ops(svc) -> list[str]:
    return [e["data"]["op"] for e in svc("events")["events"] if e["kind"] == "repaired"]


def sessions(para_json) -> dict[str, dict]:
    """The first call after the crash: it autostarts a sidecar, which repairs."""
    return {s["name"]: s for s in para_json("list", "--all")["sessions"]}


def test_an_interrupted_recover_is_completed_on_restart(sidecar: Sidecar, svc, para_json, repo: Path,
                                                       tmp_path: Path) -> None:
    """Killed while `recover` renames the archive back to para/x: the restarted sidecar
    finishes the recover (the branch back, a worktree on it with the work) and says so."""
    path = Path(svc("start", name="x")["worktree"])
    tip = commit_file(path, "work.txt", "work\n", "the work")
    archive = svc("cancel", session="x")["archived_branch"]
    hook = ref_update(repo, tmp_path, f"^{tip} {ZERO} refs/heads/{archive}$")
    crash_at(hook, sidecar, repo, "recover", "x")

    s = sessions(para_json)["x"]
    assert s["status"] == "active" and s["state"] == "active" and s["pending_op"] is None, s
    assert rev(repo, "para/x") == tip and archive not in branches(repo)
    assert s["worktree"] == str(path) and str(path) in worktree_paths(repo)
    assert git("symbolic-ref", "HEAD", cwd=path) == "refs/heads/para/x"
    assert (path / "work.txt").read_text() == "work\n" and porcelain(path) == []
    assert repaired_ops(_svc_after(repo)) == ["recover"]


def test_an_interrupted_resume_is_completed_on_restart(sidecar: Sidecar, svc, para_json, repo: Path,
                                                      tmp_path: Path) -> None:
    """Killed inside the `git worktree add` of `resume` (a session in review): the restarted
    sidecar keeps the worktree git made and makes the session active again."""
    path = Path(svc("start", name="x")["worktree"])
    tip = commit_file(path, "work.txt", "work\n", "the work")
    svc("finish", session="x", message="the work")
    assert not path.exists()
    crash_at(post_checkout(repo, tmp_path), sidecar, repo, "resume", "x")

    s = sessions(para_json)["x"]
    assert s["status"] == "active" and s["state"] == "active" and s["pending_op"] is None, s
    assert rev(repo, "para/x") == tip and git("symbolic-ref", "HEAD", cwd=path) == "refs/heads/para/x"
    assert (path / "work.txt").read_text() == "work\n" and porcelain(path) == []
    assert repaired_ops(_svc_after(repo)) == ["resume"]


def test_a_repair_that_cannot_succeed_leaves_a_note_and_the_operation_pending(
        sidecar: Sidecar, svc, para, para_json, repo: Path, tmp_path: Path) -> None:
    """An interrupted resume whose branch is gone by the time the sidecar restarts: the repair
    fails, the session says so in a note (once, however often the sidecar restarts), keeps its
    pending op, and operations on it are refused naming the interruption; the sidecar serves
    everything else."""
    path = Path(svc("start", name="x")["worktree"])
    commit_file(path, "work.txt", "work\n", "the work")
    svc("finish", session="x", message="the work")
    crash_at(post_checkout(repo, tmp_path), sidecar, repo, "resume", "x")
    # Before any sidecar runs again, the worktree and the branch disappear.
    shutil.rmtree(path)
    git("worktree", "prune", cwd=repo)
    git("branch", "-D", "para/x", cwd=repo)

    s = sessions(para_json)["x"]
    notes = [n for n in s["notes"] if n.startswith("could not repair interrupted resume: ")]
    assert len(notes) == 1, s["notes"]
    assert s["pending_op"] == "resume" and s["state"] == "resume-pending"
    assert repaired_ops(_svc_after(repo)) == []
    refused = para("cancel", "x", "--json", check=False)
    assert refused.returncode == 4 and "interrupted resume" in refused.stdout, refused.stdout
    assert para_json("start", "y")["state"] == "active"  # everything else works

    # A second restart tries again and fails again, without repeating the note.
    para("sidecar", "stop")
    wait_until(lambda: sidecar_pids(os.environ["PARA_RUNTIME_DIR"]) == [], what="the sidecar to exit")
    s = sessions(para_json)["x"]
    assert [n for n in s["notes"] if n.startswith("could not repair")] == notes
    assert s["pending_op"] == "resume"


def test_an_integration_killed_while_materializing_its_conflict_is_undone(
        sidecar: Sidecar, svc, para_json, repo: Path, tmp_path: Path) -> None:
    """Killed while a rebase integration replays the session onto main and stops on the
    conflict: the restarted sidecar aborts the half-made rebase, puts the session back to
    active at its pre-integration commit with a clean worktree, and notes the interruption;
    main never moved."""
    add_project_files(repo)
    path = Path(svc("start", name="x")["worktree"])
    write(path, {"app.py": edit_line(BASE_FILES["app.py"], 3, "the session's line 3")})
    git("commit", "-q", "-am", "session edits line 3", cwd=path)
    pre = rev(path, "HEAD")
    write(repo, {"app.py": edit_line(BASE_FILES["app.py"], 3, "main's line 3")})
    git("commit", "-q", "-am", "main edits line 3", cwd=repo)
    old = rev(repo, "main")
    hook = ref_update(repo, tmp_path, " ORIG_HEAD$")  # the rebase records ORIG_HEAD, then replays
    crash_at(hook, sidecar, repo, "integrate", "--session", "x", "--strategy", "rebase")
    assert in_progress(path) == ["rebase-merge"]  # what the crash left behind

    s = sessions(para_json)["x"]
    assert s["status"] == "active" and s["pending_op"] is None and s["integration"] is None, s
    assert any("interrupted by a sidecar crash" in n for n in s["notes"]), s["notes"]
    assert rev(repo, "main") == old and rev(repo, "para/x") == pre
    assert in_progress(path) == [] and porcelain(path) == [] and rev(path, "HEAD") == pre
    assert git("symbolic-ref", "HEAD", cwd=path) == "refs/heads/para/x"
    assert repaired_ops(_svc_after(repo)) == ["integrate"]


def _svc_after(repo: Path):
    """para/<verb> calls on the sidecar that now runs (the test's own connection died with
    the killed one)."""
    from para_rpc.client import Connection

    def call(verb: str, **params):
        sock = Path(os.environ["PARA_RUNTIME_DIR"]) / "sidecar.sock"
        with Connection.open(sock, timeout=30) as conn:
            return conn.request(f"para/{verb}", {"cwd": str(repo), **params})
    return call


def crash_all_at(hook, sidecar: Sidecar, repo: Path, *para_args: str) -> None:
    """Run `para <args>`, and when the hook is reached SIGKILL the sidecar *and* git with it
    (a power loss or an OOM kill of the whole group): git never gets to finish."""
    import signal
    import subprocess

    from conftest import PARA_ARGV, cli_env, pid_alive
    from test_crash import descendants
    cli = subprocess.Popen([*PARA_ARGV, *para_args], cwd=repo, env=cli_env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: hook.marker.exists() or cli.poll() is not None, what=f"the {hook.path.name} hook")
        assert hook.marker.exists(), f"`para {' '.join(para_args)}` ended before the hook: {cli.communicate()}"
        doomed = descendants(sidecar.pid)
        # Frozen first, all of them, then killed: killed one by one, a hook that died before
        # its git let that git run on past the crash point (seen under load).
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in doomed:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGSTOP:
                os.kill(sidecar.pid, signal.SIGKILL)
        sidecar.proc.wait(timeout=30)
        wait_until(lambda: not any(pid_alive(p) for p in doomed), what="git to die with the sidecar")
        hook.path.unlink()
        cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


@pytest.mark.parametrize("strategy", [None, "merge"])
def test_an_integration_killed_after_its_merge_wrote_markers_but_not_merge_head_is_undone(
        sidecar: Sidecar, svc, para_json, repo: Path, tmp_path: Path, strategy: str | None) -> None:
    """S2 item 7. Killed (sidecar and git together) inside the `git merge` a squash or merge
    integration runs in the session to stop on its conflict, after the index with the
    unmerged entries and the files with markers were written but before MERGE_HEAD: the
    repair finds no merge in progress, and must still put the session back at its
    pre-integration commit (markers gone, no unmerged entries), keeping what the worktree
    held under a backup ref; main never moved."""
    from test_crash import Hook
    add_project_files(repo)
    path = Path(svc("start", name="x")["worktree"])
    write(path, {"app.py": edit_line(BASE_FILES["app.py"], 3, "the session's line 3")})
    git("commit", "-q", "-am", "session edits line 3", cwd=path)
    pre = rev(path, "HEAD")
    write(repo, {"app.py": edit_line(BASE_FILES["app.py"], 3, "main's line 3")})
    git("commit", "-q", "-am", "main edits line 3", cwd=repo)
    old = rev(repo, "main")
    # post-index-change runs once the merged index (with its unmerged entries) is written,
    # before `git merge` writes MERGE_HEAD.
    hook = Hook(repo, tmp_path, "post-index-change", "git ls-files -u | grep -q . || exit 0")
    args = ["integrate", "--session", "x"] + (["--strategy", strategy] if strategy else [])
    crash_all_at(hook, sidecar, repo, *args)
    assert in_progress(path) == [], "the crash was meant to come before MERGE_HEAD"
    assert git("ls-files", "-u", cwd=path) != "" and "<<<<<<<" in (path / "app.py").read_text()

    s = sessions(para_json)["x"]
    assert s["status"] == "active" and s["pending_op"] is None and s["integration"] is None, s
    assert any("interrupted by a sidecar crash" in n for n in s["notes"]), s["notes"]
    assert rev(repo, "main") == old and rev(repo, "para/x") == pre
    assert git("ls-files", "-u", cwd=path) == "" and porcelain(path) == [] and rev(path, "HEAD") == pre
    assert "<<<<<<<" not in (path / "app.py").read_text()
    assert git("symbolic-ref", "HEAD", cwd=path) == "refs/heads/para/x"
    # What the worktree held at the crash is kept, on top of the pre-integration commit.
    saved = [n.rsplit(" ", 1)[1] for n in s["notes"] if "interrupted integration left" in n]
    assert len(saved) == 1 and saved[0].startswith("refs/para/backup/x/"), s["notes"]
    assert rev(repo, f"{saved[0]}^") == pre and "<<<<<<<" in git("show", f"{saved[0]}:app.py", cwd=repo)
    assert repaired_ops(_svc_after(repo)) == ["integrate"]
