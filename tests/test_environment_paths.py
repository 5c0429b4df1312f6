"""Session environments on every path (issue 13, red team F4/F10/F15/F17/F19/F20/F23): ports
released by every ending and never shared, setups that break the session, capped and fresh
hook logs, `para` kept on PATH, through the real CLI and the real sidecar.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import git, run_para, worktree_paths
from para_rpc.errors import Code
from para_rpc.workspace import LOG_MAX
from test_environments import PY, call, configure, free_range, sessions, trust_store  # noqa: F401

pytestmark = pytest.mark.usefixtures("sidecar")


# ---- F19: ports --------------------------------------------------------------------------------

def stored_ports(repo: Path, name: str) -> list[list[int]]:
    """The ports of every record of `name` as the store holds them (what a recover would see)."""
    with sqlite3.connect(f"file:{repo / '.para' / 'para.db'}?mode=ro", uri=True) as db:
        return [json.loads(doc).get("ports", []) for (doc,) in db.execute("SELECT doc FROM sessions WHERE name = ?",
                                                                            (name,))]


def test_a_cancel_of_a_session_whose_worktree_is_gone_releases_its_ports(repo: Path):
    """The red team's F19 sequence: a's worktree deleted by hand, `para cancel a` kept a's port
    in its record, c was then given the same port, and `para recover a` revived it: two live
    sessions on one port."""
    first, last = free_range(3)
    configure(ports=1, port_range=f"{first}-{last}")
    assert call("start", "a", cwd=repo)[1]["ports"] == [first]
    assert call("start", "b", cwd=repo)[1]["ports"] == [first + 1]
    shutil.rmtree(repo / ".para" / "worktrees" / "a")
    rc, r = call("cancel", "a", cwd=repo)
    assert rc == 0, r
    assert stored_ports(repo, "a") == [[]]  # released in the record too, not only hidden
    rc, r = call("start", "c", cwd=repo)
    assert rc == 0 and r["ports"] == [first], r
    rc, r = call("recover", "a", cwd=repo)
    assert rc == 0, r
    live = {n: s["ports"] for n, s in sessions(repo).items() if s["status"] == "active"}
    assert live == {"a": [last], "b": [first + 1], "c": [first]}, live
    # With every port of the range held, a recover is refused and changes nothing.
    assert call("cancel", "a", cwd=repo)[0] == 0
    assert call("start", "d", cwd=repo)[1]["ports"] == [last]
    rc, r = call("recover", "a", cwd=repo)
    assert rc == Code.config_error.exit and "session.port_range" in r["error"]["message"], r
    assert sessions(repo)["a"]["status"] == "cancelled"


def test_an_integration_of_a_session_whose_worktree_is_gone_releases_its_ports(repo: Path):
    first, last = free_range(2)
    configure(ports=1, port_range=f"{first}-{last}")
    wt = Path(call("start", "i", cwd=repo)[1]["worktree"])
    (wt / "i.txt").write_text("i\n")
    git("add", "i.txt", cwd=wt)
    git("commit", "-qm", "i", cwd=wt)
    shutil.rmtree(wt)
    rc, r = call("integrate", "--session", "i", cwd=repo)
    assert rc == 0, r
    assert stored_ports(repo, "i") == [[]]
    assert call("start", "x", cwd=repo)[1]["ports"] == [first]


# ---- F10: a setup that breaks the session ----------------------------------------------------------

@pytest.mark.parametrize("what,script,said", [
    ("moves HEAD", "import subprocess; subprocess.run(['git', 'checkout', '-q', '-b', 'other'], check=True)",
     "moved HEAD off the session branch para/s1 (to branch other)"),
    ("detaches HEAD", "import subprocess; subprocess.run(['git', 'checkout', '-q', '--detach'], check=True)",
     "moved HEAD off the session branch para/s1 (to a detached HEAD"),
    ("removes the worktree", "import os, shutil; shutil.rmtree(os.environ['PARA_WORKTREE'])",
     "removed the worktree"),
])
def test_a_setup_that_breaks_the_session_fails_the_start(repo: Path, what: str, script: str, said: str):
    configure(setup=[PY, "-c", script])
    rc, r = call("start", "s1", cwd=repo)
    assert rc == Code.setup_failed.exit, (what, r)
    assert r["error"]["code"] == "setup_failed" and said in r["error"]["message"], r
    assert "rolled back" in r["error"]["message"]
    assert sessions(repo) == {}
    assert "para/s1" not in git("branch", "--list", "para/s1", cwd=repo)
    assert not (repo / ".para" / "worktrees" / "s1").exists()
    assert str(repo / ".para" / "worktrees" / "s1") not in worktree_paths(repo)
    configure(setup=[])
    rc, r = call("start", "s1", cwd=repo)  # the name is free again
    assert rc == 0, r


# ---- F17: the hook log -----------------------------------------------------------------------------

def test_the_setup_log_is_capped_and_a_new_start_of_the_name_starts_a_fresh_one(repo: Path):
    """Found by our red team: 200 MB of setup output made a 200 MB log (appended to across
    starts of the same name) and kept the sidecar busy for 40 s."""
    size = LOG_MAX * 3
    configure(setup=[PY, "-c", ("import sys; out = sys.stdout.buffer; chunk = b'para-output-line ' * 4095 + b'\\n'\n"
                                f"for _ in range({size} // len(chunk)): out.write(chunk)\n"
                                "out.flush(); print('LAST LINE OF THE FIRST RUN'); sys.exit(2)")])
    rc, r = call("start", "big", cwd=repo)
    assert rc == Code.setup_failed.exit, r
    log = repo / ".para" / "logs" / "big.setup.log"
    text = log.read_bytes()
    assert len(text) <= LOG_MAX + 4096, len(text)
    assert b"cut here" in text and b"para: exit status 2" in text
    assert text.count(b"LAST LINE OF THE FIRST RUN") == 1  # (in the "$ argv" line only)
    configure(setup=[PY, "-c", "print('second run')"])
    rc, r = call("start", "big", cwd=repo)
    assert rc == 0, r
    second = log.read_text()
    assert "second run" in second and "para-output-line" not in second
    assert (repo / ".para" / "logs" / "big.setup.log.1").read_bytes() == text


# ---- F20: para stays on PATH ------------------------------------------------------------------------

def test_session_env_path_does_not_take_para_off_path(repo: Path):
    configure(env={"PATH": "/usr/bin:/bin"},
              setup=["sh", "-c", 'command -v para > where.txt || echo NO-PARA > where.txt; echo "$PATH" >> where.txt'])
    rc, r = call("start", "p1", cwd=repo)
    assert rc == 0, r
    where, path = (Path(r["worktree"]) / "where.txt").read_text().splitlines()
    assert where != "NO-PARA" and os.path.basename(where) == "para", where
    assert path.endswith(os.pathsep + "/usr/bin:/bin") and path.split(os.pathsep)[0] == os.path.dirname(where)


# ---- F4: resume and recover prepare the worktree they recreate --------------------------------------

# The setup records each run outside the worktree (a file in it would be committed by finish).
SETUP_MARK = ("import os; open(os.environ['OUT'], 'a').write(' '.join(os.environ[k] for k in "
              "('PARA_SESSION', 'PARA_PORT', 'MY_VAR')) + '\\n')")


def _prepared(wt: Path, repo: Path, runs: Path, port: int) -> None:
    assert (wt / ".env").read_text() == "SECRET=1\n" and not (wt / ".env").is_symlink()
    assert (wt / "node_modules").is_symlink()
    assert os.path.realpath(wt / "node_modules") == str((repo / "node_modules").resolve())
    assert runs.read_text().splitlines()[-1] == f"a {port} mine"
    assert git("status", "--porcelain", "--untracked-files=all", cwd=wt) == ""


@pytest.mark.parametrize("end,reopen", [("finish", "resume"), ("cancel", "recover")])
def test_resume_and_recover_prepare_the_worktree_like_start(repo: Path, tmp_path: Path, end: str, reopen: str):
    """Found by our red team (F4 addendum): a worktree recreated by resume or recover had no
    copied .env, no linked node_modules, no setup run and no ports."""
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "node_modules").mkdir()
    first, last = free_range(2)
    runs = tmp_path / "setup-runs.txt"
    configure(copy=[".env"], link=["node_modules"], setup=[PY, "-c", SETUP_MARK], env={"MY_VAR": "mine", "OUT": str(runs)},
              ports=1, port_range=f"{first}-{last}")
    rc, r = call("start", "a", cwd=repo)
    assert rc == 0, r
    wt = Path(r["worktree"])
    _prepared(wt, repo, runs, first)
    (wt / "work.txt").write_text("w\n")
    rc, r = call(*(["finish", "work", "--session", "a"] if end == "finish" else ["cancel", "a"]), cwd=repo)
    assert rc == 0 and not wt.exists(), r
    assert call("start", "b", cwd=repo)[1]["ports"] == [first]  # a's port is b's now
    rc, r = call(reopen, "a", cwd=repo)
    assert rc == 0, r
    assert r["ports"] == [last], r
    _prepared(Path(r["worktree"]), repo, runs, last)


def test_a_failing_setup_rolls_a_resume_back_and_keep_on_failure_keeps_it(repo: Path):
    assert call("start", "a", cwd=repo)[0] == 0
    wt = repo / ".para" / "worktrees" / "a"
    (wt / "work.txt").write_text("w\n")
    assert call("finish", "work", "--session", "a", cwd=repo)[0] == 0
    tip = git("rev-parse", "para/a", cwd=repo)
    configure(setup=[PY, "-c", "open('half.txt', 'w'); print('resume setup broke'); raise SystemExit(5)"])
    rc, r = call("resume", "a", cwd=repo)
    assert rc == Code.setup_failed.exit and r["error"]["code"] == "setup_failed", r
    assert "review as before" in r["error"]["message"]
    assert "resume setup broke" in (repo / ".para" / "logs" / "a.setup.log").read_text()
    s = sessions(repo)["a"]
    assert s["status"] == "review" and s["pending_op"] is None, s
    assert not wt.exists() and str(wt) not in worktree_paths(repo)
    assert git("rev-parse", "para/a", cwd=repo) == tip
    # What the setup left in the worktree was saved, not just deleted.
    saved = git("for-each-ref", "--format=%(refname)", "refs/para/backup/a/", cwd=repo).splitlines()
    assert any(ref.endswith("-setup-failed") for ref in saved), saved
    rc, r = call("resume", "a", "--keep-on-failure", cwd=repo)
    assert rc == 0 and any("exited with status 5" in w for w in r["warnings"]), r
    assert (wt / "half.txt").exists() and sessions(repo)["a"]["status"] == "active"
    human = run_para("resume", "a", cwd=repo)
    assert human.stdout.strip() == str(wt)


def test_a_failing_setup_rolls_a_recover_back_to_cancelled(repo: Path):
    assert call("start", "c", cwd=repo)[0] == 0
    (repo / ".para" / "worktrees" / "c" / "work.txt").write_text("w\n")
    rc, r = call("cancel", "c", cwd=repo)
    assert rc == 0, r
    archive = r["archived_branch"]
    tip = git("rev-parse", archive, cwd=repo)
    configure(setup=[PY, "-c", "raise SystemExit(6)"])
    rc, r = call("recover", "c", cwd=repo)
    assert rc == Code.setup_failed.exit and f"archived again as {archive}" in r["error"]["message"], r
    s = sessions(repo)["c"]
    assert s["status"] == "cancelled" and s["pending_op"] is None and s["archived_branch"] == archive, s
    assert git("rev-parse", archive, cwd=repo) == tip
    assert git("branch", "--list", "para/c", cwd=repo) == ""
    assert not (repo / ".para" / "worktrees" / "c").exists()
    configure(setup=[])
    rc, r = call("recover", "c", cwd=repo)
    assert rc == 0 and r["status"] == "active", r
    assert (Path(r["worktree"]) / "work.txt").read_text() == "w\n"


def test_an_adopted_para_session_with_a_worktree_gets_ports_and_one_given_a_worktree_is_prepared(
        repo: Path, tmp_path: Path):
    """F4: sessions taken over from Para's state files had no ports; one in review that
    `para resume` gives a worktree is prepared like any other."""
    from test_para_adoption import para_state
    first, last = free_range(2)
    runs = tmp_path / "setup-runs.txt"
    configure(ports=1, port_range=f"{first}-{last}", setup=[PY, "-c", SETUP_MARK], env={"MY_VAR": "m", "OUT": str(runs)})
    git("worktree", "add", "-q", "-b", "para/live", str(repo / ".para" / "worktrees" / "live"), cwd=repo)
    git("branch", "para/a", cwd=repo)
    para_state(repo, "live", "Active")
    para_state(repo, "a", "Finished")
    listed = sessions(repo)
    assert listed["live"]["status"] == "active" and listed["live"]["ports"] == [first], listed["live"]
    assert listed["a"]["status"] == "review"
    rc, r = call("resume", "a", cwd=repo)
    assert rc == 0 and r["ports"] == [last], r
    assert runs.read_text().splitlines() == [f"a {last} m"]


# ---- F23: the teardown can talk to the agent's servers ---------------------------------------------

SERVER_UP = ("import os, socket, sys, time\n"
             "for _ in range(600):\n"
             "    try: socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close(); sys.exit(0)\n"
             "    except OSError: time.sleep(0.1)\n"
             "sys.exit(1)")


@pytest.mark.parametrize("verb", ["cancel", "finish", "integrate"])
def test_the_teardown_reaches_the_server_the_agent_started(repo: Path, verb: str):
    """Found by our red team (F23): the teardown ran while the agent's processes were frozen,
    so a dev server the agent started could not answer it (nor be stopped cleanly) until
    teardown_timeout. They run again while the teardown runs."""
    first, last = free_range(1)
    teardown = [PY, "-c", ("import os, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/' "
                           "% os.environ['PARA_PORT'], timeout=20); print('server answered', r.status)")]
    configure(ports=1, port_range=f"{first}-{last}", teardown=teardown, teardown_timeout=60)
    server = {"srv": {"command": ["sh", "-c", f"echo x > agent.txt; {PY} -m http.server --bind 127.0.0.1 "
                                  "$PARA_PORT & sleep 600"]}}
    proc = run_para("dispatch", "s", "-p", "serve", "--agent", "srv", "--mode", "headless", "--json", cwd=repo,
                    env={"PARA_AGENTS": json.dumps(server)})
    assert json.loads(proc.stdout)["ports"] == [first]
    assert subprocess.run([PY, "-c", SERVER_UP, str(first)], timeout=120).returncode == 0
    args = {"cancel": ["cancel", "s"], "finish": ["finish", "work", "--session", "s"],
            "integrate": ["integrate", "work", "--session", "s"]}[verb]
    rc, r = call(*args, cwd=repo)
    assert rc == 0, r
    assert not [w for w in r["warnings"] if "teardown" in w], r["warnings"]
    assert "server answered 200" in (repo / ".para" / "logs" / "s.teardown.log").read_text()


# ---- F15: exclude lines are per session ------------------------------------------------------------

def test_exclude_lines_live_as_long_as_a_session_needs_them_and_files_hidden_by_them_are_saved(repo: Path):
    """Found by our red team (F15): the exclude file is shared by the main checkout and every
    worktree, and para's lines stayed for good, so a later session's own file at such a path
    was neither committed nor saved when its worktree went."""
    exclude = repo / ".git" / "info" / "exclude"
    (repo / "a.local").write_text("main's\n")

    def main_sees_it() -> bool:
        return "?? a.local" in git("status", "--porcelain", cwd=repo).splitlines()

    assert main_sees_it()
    configure(copy=["*.local"])
    assert call("start", "s1", cwd=repo)[0] == 0
    assert "/a.local" in exclude.read_text().splitlines() and not main_sees_it()
    configure(copy=[])
    wt = Path(call("start", "s2", cwd=repo)[1]["worktree"])
    (wt / "a.local").write_text("agent work\n")
    (wt / "b.txt").write_text("b\n")
    rc, r = call("finish", "work", "--session", "s2", cwd=repo)
    assert rc == 0, r
    tree = git("ls-tree", "-r", "--name-only", "para/s2", cwd=repo).splitlines()
    assert "b.txt" in tree and "a.local" not in tree  # (ignored: the exclude line is shared)
    said = [w for w in r["warnings"] if "a.local" in w]
    assert said and "saved under refs/para/backup/s2/" in said[0], r["warnings"]
    ref = said[0].rsplit("saved under ", 1)[1]
    assert git("show", f"{ref}:a.local", cwd=repo) == "agent work"
    # s1's own copy is its own: no warning when it ends, and then the line goes.
    rc, r = call("cancel", "s1", cwd=repo)
    assert rc == 0 and not [w for w in r["warnings"] if "a.local" in w], r
    assert "/a.local" not in exclude.read_text().splitlines() and main_sees_it()

    # Two sessions needing one line: it stays until the last one ends.
    configure(copy=["*.local"])
    assert call("start", "s3", cwd=repo)[0] == 0
    assert call("start", "s4", cwd=repo)[0] == 0
    assert exclude.read_text().splitlines().count("/a.local") == 1
    assert call("cancel", "s3", cwd=repo)[0] == 0
    assert "/a.local" in exclude.read_text().splitlines() and not main_sees_it()
    assert call("cancel", "s4", cwd=repo)[0] == 0
    assert "/a.local" not in exclude.read_text().splitlines()

    # A line the user had before is theirs: never removed.
    exclude.write_text(exclude.read_text() + "/a.local\n")
    assert call("start", "s5", cwd=repo)[0] == 0
    assert call("cancel", "s5", cwd=repo)[0] == 0
    assert "/a.local" in exclude.read_text().splitlines()


# ---- item 9: the setup's output reaches the client as progress --------------------------------------

SETUP_SAYS = "import sys\nfor i in range(3): print(f'installing dependency {i}', flush=True)\nprint('x' * 10, file=sys.stderr)"


def test_the_cli_shows_the_setup_output_as_it_runs(repo: Path):
    configure(setup=[PY, "-c", SETUP_SAYS])
    proc = run_para("start", "h1", cwd=repo)
    shown = [line for line in proc.stderr.splitlines() if line.startswith("  | ")]
    assert "  | installing dependency 0" in shown and "  | installing dependency 2" in shown, proc.stderr
    assert shown[0].startswith("  | session.setup of h1: ") and shown[-1].startswith("  | session.setup of h1: done")
    assert "Started session h1" in proc.stdout
    # --json output stays one JSON document, with nothing on stderr from the setup.
    proc = run_para("start", "h2", "--json", cwd=repo)
    assert json.loads(proc.stdout)["name"] == "h2" and "installing" not in proc.stderr


async def test_mcp_start_and_dispatch_send_the_setup_output_as_progress(repo: Path):
    from mcp_util import call as mcp_call
    from mcp_util import mcp_client
    configure(setup=[PY, "-c", SETUP_SAYS + "\nfor i in range(500): print('line', i)"])
    for tool, args in (("para_start", {"session": "m1"}),
                       ("para_dispatch", {"session": "m2", "task": "nothing to do", "agent": "scripted",
                                          "mode": "headless"})):
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append((p, total, message))

        async with mcp_client(repo) as c:
            r = await mcp_call(c, tool, args, progress_callback=on_progress)
        assert r, tool
        messages = [m for _, _, m in progress]
        name = args["session"]
        assert messages[0].startswith(f"session.setup of {name}: "), messages[:3]
        assert messages[1:4] == [f"installing dependency {i}" for i in range(3)], messages[:5]
        assert messages[-1].startswith(f"session.setup of {name}: done")
        assert any(m.startswith("(more output in ") for m in messages)
        assert len(messages) <= 200 + 3, len(messages)  # bounded: the log has the rest
        assert [p for p, _, _ in progress] == sorted(p for p, _, _ in progress)
    # Its agent is stopped with its session: left running past the test, its next `para` call
    # would start a sidecar of its own (autostart) that outlives the test by its idle timeout.
    # An agent quick enough to have integrated already is done: nothing is left to stop.
    proc = run_para("cancel", "--discard", "m2", "--json", cwd=repo, check=False)
    assert proc.returncode == 0 or json.loads(proc.stdout)["error"]["data"]["status"] == "integrated", proc
