"""A database para cannot use is a clear `config_error`, never `internal`, and never a lock
the sidecar keeps against itself.

Junk in `.para/para.db` (`head -c 8192 /dev/urandom > .para/para.db`) used to make the first
call `internal` and every later one, even after the file was deleted, `busy: … served by
another para sidecar (pid N)` with the sidecar's own pid: opening failed after the
repository's flock was taken and never gave it back. Now every failure while opening a
repository releases the lock; the error names the file and what to do; moving the file away
is enough, without restarting the sidecar.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import commit_file, git, rev, shutdown_sidecar, start_sidecar


def junk(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(8192))


def newer_schema(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()


def lock_is_free(repo: Path) -> bool:
    """Whether another process could take the repository's sidecar lock right now."""
    fd = os.open(repo / ".para" / "sidecar.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.mark.parametrize("spoil,says", [
    (junk, "is not a usable para database"),
    (newer_schema, "was written by a newer para (database schema 99"),
], ids=["random-bytes", "newer-schema"])
def test_an_unusable_database_is_a_config_error_that_names_the_file_and_the_fix(
        sidecar, para, para_json, repo, spoil, says):
    db = repo / ".para" / "para.db"
    spoil(db)
    for attempt in range(2):  # the second call is the same clear error, not `busy` against ourselves
        err = para_json("list", check=False)["error"]
        assert err["code"] == "config_error", err
        assert says in err["message"] and str(db) in err["message"], err
        assert err["data"]["path"] == str(db)
        assert lock_is_free(repo), "the failed open kept the repository's lock"
    human = para("list", check=False)
    assert human.returncode == 6
    assert str(db) in human.stderr and "move" in human.stderr.lower()
    assert para_json("sidecar", "status")["pid"] == sidecar.pid
    assert para_json("sidecar", "status")["repos"] == []


def test_moving_a_corrupt_database_away_is_enough_without_a_sidecar_restart(sidecar, para, para_json, repo):
    db = repo / ".para" / "para.db"
    junk(db)
    err = para_json("start", "c1", check=False)["error"]
    assert err["code"] == "config_error" and f"mv {db} {db}.broken" in err["message"], err
    assert "para resume NAME" in err["message"]
    assert rev(repo, "para/c1") is None, "nothing was created"
    os.rename(db, f"{db}.broken")
    assert para_json("start", "c1")["status"] == "active"
    assert [s["name"] for s in para_json("list")["sessions"]] == ["c1"]
    assert para_json("sidecar", "status")["pid"] == sidecar.pid
    assert not lock_is_free(repo), "the repository is served (and locked) again"
    assert Path(f"{db}.broken").read_bytes() != db.read_bytes()


def test_sessions_of_a_lost_database_are_taken_up_again_with_resume(runtime_dir, para, para_json, repo):
    """What the error message promises: the work of sessions is in git, not in the database."""
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
    para("start", "kept")
    wt = repo / ".para" / "worktrees" / "kept"
    tip = commit_file(wt, "work.txt", "work\n", "work in kept")
    shutdown_sidecar(sc)
    db = repo / ".para" / "para.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    junk(db)
    start_sidecar(runtime_dir, "--idle-timeout", "0")
    assert para_json("resume", "kept", check=False)["error"]["code"] == "config_error"
    os.rename(db, f"{db}.broken")
    out = para_json("resume", "kept")
    assert out["name"] == "kept" and out["worktree"] == str(wt)
    assert rev(repo, out["branch"]) == tip
    assert git("status", "--porcelain", cwd=wt) == ""
