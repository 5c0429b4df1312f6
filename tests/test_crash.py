"""Crash repair (para_rpc.service `_repair`): the sidecar is killed with SIGKILL in
the middle of an operation, at a precise point chosen with a real git hook; the
next client call autostarts a new sidecar, which must leave state and git in
agreement again, with no work lost.

The hook announces itself in a marker file, then waits to be released. The test
waits for the marker, kills the sidecar, removes the hook and releases it; git,
orphaned but alive, finishes its command as it would after a real crash of the
sidecar alone. Only then does the next `para` call run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from para_rpc.client import Connection
from para_rpc.errors import Code

from conftest import (PARA_ARGV, branches, cli_env, commit_file, git, pid_alive, rev, sidecar_pids,
                      wait_until, worktree_paths)

pytestmark = pytest.mark.usefixtures("sidecar")

ZERO = "0" * 40


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (git and its hooks, below the sidecar)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Hook:
    """A git hook in the test repository that stops at a chosen point until released."""

    def __init__(self, repo: Path, tmp: Path, name: str, condition: str) -> None:
        self.path = repo / ".git" / "hooks" / name
        self.marker = tmp / f"{name}.reached"
        self.release = tmp / f"{name}.release"
        self.path.write_text(f"""#!/bin/sh
input=$(cat 2>/dev/null)
[ -e '{self.marker}' ] && exit 0
{condition}
echo "$$" > '{self.marker}.tmp' && mv '{self.marker}.tmp' '{self.marker}'
i=0
while [ ! -e '{self.release}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
exit 0
""")
        self.path.chmod(0o755)


def post_checkout(repo: Path, tmp: Path) -> Hook:
    """Stops inside `git worktree add`, once the worktree is checked out."""
    return Hook(repo, tmp, "post-checkout", "")


def ref_update(repo: Path, tmp: Path, pattern: str) -> Hook:
    """Stops right after a ref update matching `pattern` (`<old> <new> <ref>`) is committed."""
    return Hook(repo, tmp, "reference-transaction",
                f'[ "$1" = committed ] || exit 0\n'
                f"printf '%s\\n' \"$input\" | grep -Eq '{pattern}' || exit 0")


def crash_at(hook: Hook, sidecar, repo: Path, *para_args: str) -> subprocess.CompletedProcess:
    """Run `para <args>`, SIGKILL the sidecar when the hook is reached, let git finish."""
    cli = subprocess.Popen([*PARA_ARGV, *para_args], cwd=repo, env=cli_env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: hook.marker.exists() or cli.poll() is not None, what=f"the {hook.path.name} hook")
        assert hook.marker.exists(), f"`para {' '.join(para_args)}` ended before the hook: {cli.communicate()}"
        orphans = descendants(sidecar.pid)
        os.kill(sidecar.pid, signal.SIGKILL)
        sidecar.proc.wait(timeout=30)
        hook.path.unlink()
        hook.release.touch()
        wait_until(lambda: not any(pid_alive(p) for p in orphans), what="git to finish without the sidecar")
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    # The interrupted client reports the lost sidecar clearly.
    assert cli.returncode == Code.sidecar_unavailable.exit, err
    assert err.startswith("para: ") and "Traceback" not in err
    return subprocess.CompletedProcess(cli.args, cli.returncode, out, err)


def after_crash(para_json, repo: Path, killed: int) -> dict[str, dict[str, Any]]:
    """The next call: a new sidecar starts and repairs. Returns the sessions by name."""
    listing = para_json("list", "--all")
    assert sidecar_pids(os.environ["PARA_RUNTIME_DIR"]) not in ([], [killed])
    return {s["name"]: s for s in listing["sessions"]}


def events(kind: str | None = None) -> list[dict]:
    sock = Path(os.environ["PARA_RUNTIME_DIR"]) / "sidecar.sock"
    with Connection.open(sock, timeout=30) as conn:
        found = conn.request("para/events", {"cwd": os.environ["CRASH_REPO"]})["events"]
    return [e for e in found if kind is None or e["kind"] == kind]


@pytest.fixture(autouse=True)
def _crash_repo(repo, monkeypatch):
    monkeypatch.setenv("CRASH_REPO", str(repo))


def assert_consistent(repo: Path, sessions: dict[str, dict]) -> None:
    """What para reports is what git has: no pending operation, no half-made session."""
    registered = worktree_paths(repo)
    porcelain = git("worktree", "list", "--porcelain", cwd=repo)
    assert "prunable" not in porcelain
    heads = set(branches(repo))
    active_paths = set()
    for name, s in sessions.items():
        assert s["pending_op"] is None, s
        if s["status"] == "active":
            assert s["state"] in ("active", "dirty")
            assert s["worktree"] in registered and Path(s["worktree"]).is_dir()
            assert s["branch"] in heads
            assert git("symbolic-ref", "--short", "HEAD", cwd=s["worktree"]) == s["branch"]
            active_paths.add(s["worktree"])
        elif s["status"] == "cancelled":
            assert s["worktree"] not in registered and not Path(s["worktree"]).exists()
            assert s["archived_branch"] in heads and s["branch"] not in heads
        elif s["status"] == "review":
            assert s["worktree"] not in registered and not Path(s["worktree"]).exists()
            assert s["branch"] in heads
    assert set(registered[1:]) == active_paths
    wt_dir = repo / ".para" / "worktrees"
    on_disk = {str(p) for p in wt_dir.iterdir()} if wt_dir.exists() else set()
    assert on_disk == active_paths


# ---- start ---------------------------------------------------------------------------------

def assert_start_repaired(repo: Path, sessions: dict, name: str) -> None:
    """Either no trace of the session at all, or a complete active one."""
    assert_consistent(repo, sessions)
    if name in sessions:
        assert sessions[name]["status"] == "active"
    else:
        assert f"para/{name}" not in branches(repo)
        assert not (repo / ".para" / "worktrees" / name).exists()


def test_kill_during_worktree_add_of_start(sidecar, para_json, repo, tmp_path):
    crash_at(post_checkout(repo, tmp_path), sidecar, repo, "start", "x")
    sessions = after_crash(para_json, repo, sidecar.pid)
    assert_start_repaired(repo, sessions, "x")
    # Nothing had been written there yet: the half-made session is undone...
    assert sessions == {}
    assert [e["data"]["op"] for e in events("repaired")] == ["start"]
    # ...and the name can be used again.
    assert para_json("start", "x")["state"] == "active"


def test_kill_right_after_the_branch_of_start_is_created(sidecar, para_json, repo, tmp_path):
    hook = ref_update(repo, tmp_path, f"^{ZERO} [0-9a-f]{{40}} refs/heads/para/x$")
    crash_at(hook, sidecar, repo, "start", "x")
    sessions = after_crash(para_json, repo, sidecar.pid)
    assert_start_repaired(repo, sessions, "x")
    assert sessions == {}
    assert [e["data"]["op"] for e in events("repaired")] == ["start"]


def test_work_written_into_a_half_started_session_is_kept(sidecar, para, para_json, repo, tmp_path):
    crash_at(post_checkout(repo, tmp_path), sidecar, repo, "start", "x")
    path = repo / ".para" / "worktrees" / "x"
    (path / "agent-output.txt").write_text("an agent was quick\n")
    sessions = after_crash(para_json, repo, sidecar.pid)
    assert_start_repaired(repo, sessions, "x")
    assert sessions["x"]["status"] == "active" and sessions["x"]["state"] == "dirty"
    assert (path / "agent-output.txt").read_text() == "an agent was quick\n"
    assert [e["data"]["op"] for e in events("repaired")] == ["start"]
    para("finish", "Quick work", cwd=path)
    assert git("show", "para/x:agent-output.txt", cwd=repo) == "an agent was quick"


# ---- cancel --------------------------------------------------------------------------------

@pytest.fixture
def busy_session(svc, repo) -> Path:
    """Session x with a commit, a tracked edit and an untracked file."""
    path = Path(svc("start", name="x")["worktree"])
    commit_file(path, "committed.txt", "committed\n", "committed work")
    (path / "README.md").write_text("tracked edit\n")
    (path / "new" / "untracked.txt").parent.mkdir()
    (path / "new" / "untracked.txt").write_text("untracked\n")
    return path


def assert_work_kept(repo: Path, sessions: dict, path: Path) -> None:
    """The session is cancelled with its work on the archive, or active with the work in place."""
    s = sessions["x"]
    if s["status"] == "cancelled":
        where = s["archived_branch"]
        for f, content in (("committed.txt", "committed"), ("README.md", "tracked edit"),
                           ("new/untracked.txt", "untracked")):
            assert git("show", f"{where}:{f}", cwd=repo) == content
    else:
        assert s["status"] == "active"
        assert (path / "committed.txt").read_text() == "committed\n"
        assert (path / "README.md").read_text() == "tracked edit\n"
        assert (path / "new" / "untracked.txt").read_text() == "untracked\n"


def test_kill_after_cancel_committed_the_work(sidecar, para_json, repo, tmp_path, busy_session):
    head = rev(repo, "para/x")
    hook = ref_update(repo, tmp_path, f"^{head} [0-9a-f]{{40}} refs/heads/para/x$")
    crash_at(hook, sidecar, repo, "cancel", "x")
    sessions = after_crash(para_json, repo, sidecar.pid)
    assert_consistent(repo, sessions)
    assert_work_kept(repo, sessions, busy_session)
    assert sessions["x"]["status"] == "cancelled"
    assert [e["data"]["op"] for e in events("repaired")] == ["cancel"]


def test_kill_while_cancel_renames_the_branch(sidecar, para_json, repo, tmp_path, busy_session):
    hook = ref_update(repo, tmp_path, f"^[0-9a-f]{{40}} {ZERO} refs/heads/para/x$")
    crash_at(hook, sidecar, repo, "cancel", "x")
    sessions = after_crash(para_json, repo, sidecar.pid)
    assert_consistent(repo, sessions)
    assert_work_kept(repo, sessions, busy_session)
    assert sessions["x"]["status"] == "cancelled"
    assert [e["data"]["op"] for e in events("repaired")] == ["cancel"]


def test_kill_after_cancel_discard_saved_its_backup(sidecar, para_json, repo, tmp_path, busy_session):
    hook = ref_update(repo, tmp_path, f"^{ZERO} [0-9a-f]{{40}} refs/para/backup/x/")
    crash_at(hook, sidecar, repo, "cancel", "x", "--discard")
    sessions = after_crash(para_json, repo, sidecar.pid)
    assert_consistent(repo, sessions)
    assert sessions["x"]["status"] == "cancelled"
    (backup,) = git("for-each-ref", "--format=%(refname)", "refs/para/backup/x/", cwd=repo).splitlines()
    assert git("show", f"{backup}:README.md", cwd=repo) == "tracked edit"
    assert git("show", f"{backup}:new/untracked.txt", cwd=repo) == "untracked"
    assert [e["data"]["op"] for e in events("repaired")] == ["cancel"]


def test_a_recovered_session_after_a_cancel_crash_has_everything(sidecar, para, para_json, repo, tmp_path,
                                                                 busy_session):
    head = rev(repo, "para/x")
    crash_at(ref_update(repo, tmp_path, f"^{head} [0-9a-f]{{40}} refs/heads/para/x$"),
             sidecar, repo, "cancel", "x")
    after_crash(para_json, repo, sidecar.pid)
    para("recover", "x")
    assert (busy_session / "README.md").read_text() == "tracked edit\n"
    assert (busy_session / "new" / "untracked.txt").read_text() == "untracked\n"
    assert (busy_session / "committed.txt").read_text() == "committed\n"


# ---- finish --------------------------------------------------------------------------------

def test_kill_while_finish_squashes(sidecar, para_json, repo, tmp_path, busy_session):
    commit_file(busy_session, "more.txt", "more\n", "more work")
    base = rev(repo, "main")
    # The squash moves the branch back to its fork point, with all the work only in the index.
    hook = ref_update(repo, tmp_path, f"^[0-9a-f]{{40}} {base} refs/heads/para/x$")
    crash_at(hook, sidecar, repo, "finish", "All the work", "--session", "x")
    sessions = after_crash(para_json, repo, sidecar.pid)
    assert_consistent(repo, sessions)
    assert sessions["x"]["status"] == "review"
    assert [e["data"]["op"] for e in events("repaired")] == ["finish"]
    assert rev(repo, "para/x^") == base
    assert git("log", "-1", "--format=%s", "para/x", cwd=repo) == "All the work"
    for f, content in (("committed.txt", "committed"), ("more.txt", "more"), ("README.md", "tracked edit"),
                       ("new/untracked.txt", "untracked")):
        assert git("show", f"para/x:{f}", cwd=repo) == content
