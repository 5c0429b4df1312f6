"""What para writes is private to the user; what it did not create, it does not change.

Prompts (`.para/prompts/*`), agent logs (`.para/logs/*`, the agent's whole output) and the
database (`.para/para.db` and its `-wal`/`-shm` files) hold task text and output: they are
0600 and `.para/` is 0700, under a normal umask (022), and ones an older para left open are
tightened when the repository is opened. The sidecar's own directory: one para creates is
0700; an existing one (`PARA_SOCKET=$HOME/para.sock`) is never chmod'ed behind the user's
back. If it is ours and private it is used; if others can read or write it (or it is not
ours) para refuses with a message naming the variable and the fix.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents_util import agent_env, agent_scripts  # noqa: F401  (leftover agents are killed)
from conftest import shutdown_sidecar, start_sidecar, wait_until


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask022() -> Iterator[None]:
    """A normal umask for this process and everything it starts (CLI, sidecar, agents)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_para_files_are_private_under_a_normal_umask(umask022, runtime_dir, para, para_json, repo):
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")  # started under umask 022
    try:
        para("dispatch", "h1", "-p", "```file:h.txt\nsecret task\n```\n", "--agent", "scripted",
             "--mode", "headless")
        wait_until(lambda: para_json("status", "show", "h1")["sessions"][0]["agent"]["state"] != "running",
                   what="the agent to end")
    finally:
        shutdown_sidecar(sc)
    dot = repo / ".para"
    assert mode(dot) == 0o700
    for d in ("prompts", "logs"):
        assert mode(dot / d) == 0o700, d
    files = [dot / "prompts" / "h1.md", dot / "logs" / "h1.log", dot / "para.db", dot / "sidecar.lock"]
    files += [p for p in (dot / "para.db-wal", dot / "para.db-shm") if p.exists()]
    assert (dot / "prompts" / "h1.md").read_text().startswith("```file:h.txt")
    for f in files:
        assert mode(f) == 0o600, f"{f} is {mode(f):o}"
    assert mode(runtime_dir / "sidecar.sock.log") == 0o600


def test_files_an_older_para_left_open_are_tightened_when_the_repository_opens(umask022, sidecar, para, repo):
    dot = repo / ".para"
    dot.mkdir(mode=0o755)
    os.chmod(dot, 0o755)
    (dot / "prompts").mkdir()
    para("list")  # creates the database
    shutdown_sidecar(sidecar)
    for f in (dot / "para.db", dot / "para.db-wal", dot / "para.db-shm"):
        if f.exists():
            os.chmod(f, 0o644)
    os.chmod(dot, 0o755)
    para("list")  # a new sidecar opens the repository again
    assert mode(dot) == 0o700
    assert mode(dot / "para.db") == 0o600
    for f in (dot / "para.db-wal", dot / "para.db-shm"):
        assert not f.exists() or mode(f) == 0o600, f


def test_a_prompt_written_again_for_a_reused_name_stays_private(umask022, sidecar, para, repo):
    prompts = repo / ".para" / "prompts"
    prompts.mkdir(parents=True)
    old = prompts / "again.md"
    old.write_text("an old prompt\n")
    os.chmod(old, 0o644)
    para("dispatch", "again", "-p", "```file:a.txt\na\n```\n", "--agent", "scripted", "--mode", "headless")
    assert mode(old) == 0o600
    assert old.read_text().startswith("```file:a.txt")


# ---- the sidecar's directory ---------------------------------------------------------------

@pytest.mark.parametrize("var,dir_mode", [
    ("PARA_SOCKET", 0o755), ("PARA_SOCKET", 0o750), ("PARA_SOCKET", 0o777), ("PARA_SOCKET", 0o703),
    ("PARA_RUNTIME_DIR", 0o755),
], ids=["socket-755", "socket-750", "socket-777", "socket-703", "runtime-dir-755"])
def test_an_existing_shared_directory_is_refused_and_left_as_it_was(umask022, runtime_dir, para, repo, tmp_path,
                                                                     var, dir_mode):
    """Like $HOME: para used to chmod it to 0700 silently."""
    shared = tmp_path / "home"
    shared.mkdir()
    os.chmod(shared, dir_mode)
    (shared / "notes.txt").write_text("mine\n")
    value = str(shared / "para.sock") if var == "PARA_SOCKET" else str(shared)
    res = para("list", check=False, env={var: value})
    assert res.returncode == 9, res.stderr
    assert str(shared) in res.stderr and var in res.stderr and "chmod 700" in res.stderr, res.stderr
    assert f"{dir_mode:o}" in res.stderr
    assert mode(shared) == dir_mode, "the directory was changed"
    assert sorted(p.name for p in shared.iterdir()) == ["notes.txt"], "para put files there"
    side = para("sidecar", "start", check=False, env={var: value})
    assert side.returncode == 9 and var in side.stderr
    assert mode(shared) == dir_mode


def test_an_existing_directory_of_someone_else_is_refused(umask022, runtime_dir, para, repo, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)  # (the tests run as root, as CI does)
    res = para("list", check=False, env={"PARA_SOCKET": str(theirs / "para.sock")})
    assert res.returncode == 9 and "not a directory owned by you" in res.stderr and "PARA_SOCKET" in res.stderr
    assert os.stat(theirs).st_uid == 65534 and mode(theirs) == 0o700


def test_an_existing_private_directory_is_used_as_it_is(umask022, runtime_dir, para, para_json, repo, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / "other.txt").write_text("kept\n")
    env = {"PARA_SOCKET": str(mine / "para.sock")}
    para("start", "p1", env=env)
    status = para_json("sidecar", "status", env=env)
    assert status["running"] and status["socket"] == str(mine / "para.sock")
    assert mode(mine) == 0o700 and (mine / "other.txt").read_text() == "kept\n"
    assert mode(mine / "para.sock") == 0o600 and mode(mine / "para.sock.log") == 0o600
    para("sidecar", "stop", env=env)


def test_a_directory_para_creates_is_private(umask022, runtime_dir, para, repo, tmp_path):
    new = tmp_path / "made" / "by" / "para"
    env = {"PARA_SOCKET": str(new / "para.sock")}
    para("list", env=env)
    assert mode(new) == 0o700
    assert mode(new / "para.sock") == 0o600
    para("sidecar", "stop", env=env)
