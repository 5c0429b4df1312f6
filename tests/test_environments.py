"""Session environments (issue 13): `session.setup`/`teardown`, `session.copy`/`link`,
`session.ports`, `session.env`, through the real CLI and the real sidecar.

Configuration is written to the user file ($PARA_CONFIG, private to each test), which needs no
approval; the project file's hooks are covered by the trust test at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import (PARA_ARGV, commit_file, git, git_state, pid_alive, rev, run_para, sidecar_pids,
                      wait_until, worktree_paths)
from para_rpc.errors import Code

pytestmark = pytest.mark.usefixtures("sidecar")


@pytest.fixture(autouse=True)
def trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own trust file, set before the sidecar starts (it inherits it)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data" / "para" / "trust.json"

PY = sys.executable
# Writes what a hook sees into a file: its argv[1] (relative paths land in the worktree).
DUMP = ("import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
        "if k.startswith('PARA_') or k == 'MY_VAR'} | {'cwd': os.getcwd()}, open(sys.argv[1], 'w'))")


def configure(**keys: Any) -> None:
    """Set `session.*` keys (given as setup=..., port_range=...) in this test's user file."""
    path = Path(os.environ["PARA_CONFIG"])
    tree = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
    tree.setdefault("session", {}).update(keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tree))


def call(*args: str, cwd: Path, env: dict[str, str | None] | None = None) -> tuple[int, Any]:
    proc = run_para(*args, "--json", cwd=cwd, check=False, env=env)
    return proc.returncode, json.loads(proc.stdout)


def free_range(n: int) -> tuple[int, int]:
    """A range of n ports nothing listens on now (the kernel's pick, then its neighbours)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n > 65535 or first < 1024:
            continue
        socks = []
        try:
            for p in range(first, first + n):
                x = socket.socket()
                socks.append(x)
                x.bind(("0.0.0.0", p))
            return first, first + n - 1
        except OSError:
            continue
        finally:
            for x in socks:
                x.close()
    raise AssertionError("no free port range found")


def sessions(repo: Path) -> dict[str, dict]:
    return {s["name"]: s for s in call("list", "--all", cwd=repo)[1]["sessions"]}


# ---- setup ---------------------------------------------------------------------------------

def test_setup_runs_in_the_new_worktree_with_the_session_environment(repo: Path, svc: Any):
    """The setup hook creates a file in the worktree and reads PARA_PORT and the others; its
    output goes to .para/logs/<name>.setup.log; the ports show in list/show (JSON and human)."""
    first, last = free_range(4)
    configure(setup=[PY, "-c", DUMP + "; print('setting up', os.environ['PARA_PORT'])", "seen.json"],
              ports=2, port_range=f"{first}-{last}", env={"MY_VAR": "hello"})
    rc, r = call("start", "s1", cwd=repo)
    assert rc == 0, r
    wt = Path(r["worktree"])
    seen = json.loads((wt / "seen.json").read_text())
    assert r["ports"] == [first, first + 1]
    assert seen["PARA_PORT"] == str(first) and seen["PARA_PORTS"] == f"{first} {first + 1}"
    assert seen["PARA_SESSION"] == "s1" and seen["PARA_WORKTREE"] == str(wt)
    assert seen["PARA_REPO"] == str(repo.resolve()) and seen["PARA_BASE"] == "main"
    assert seen["MY_VAR"] == "hello" and os.path.realpath(seen["cwd"]) == os.path.realpath(wt)
    log = repo / ".para" / "logs" / "s1.setup.log"
    assert f"setting up {first}" in log.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert call("show", "s1", cwd=repo)[1]["ports"] == [first, first + 1]
    assert sessions(repo)["s1"]["ports"] == [first, first + 1]
    human = run_para("list", cwd=repo).stdout
    assert f"{first} {first + 1}" in human
    assert f"{first} {first + 1}" in run_para("show", "s1", cwd=repo).stdout
    kinds = [e["kind"] for e in svc("events")["events"] if e["session"] == "s1"]
    assert kinds.index("setup_started") < kinds.index("setup_output") < kinds.index("setup_finished") \
        < kinds.index("started")


def test_a_failing_setup_rolls_the_start_back_and_keeps_its_log(repo: Path):
    configure(setup=[PY, "-c", "import sys; open('half.txt', 'w'); print('boom'); sys.exit(3)"])
    before = git_state(repo)
    rc, r = call("start", "s1", cwd=repo)
    assert rc == Code.setup_failed.exit == 15, r
    err = r["error"]
    assert err["code"] == "setup_failed" and err["data"]["exit_code"] == 3
    log = Path(err["data"]["log"])
    assert log == repo / ".para" / "logs" / "s1.setup.log" and str(log) in err["message"]
    assert "boom" in log.read_text()
    assert git_state(repo) == before
    assert not (repo / ".para" / "worktrees" / "s1").exists()
    assert sessions(repo) == {}
    # The same name is free again, and --keep-on-failure keeps the session instead.
    rc, r = call("start", "s1", "--keep-on-failure", cwd=repo)
    assert rc == 0, r
    assert any("session.setup" in w and "exited with status 3" in w for w in r["warnings"]), r
    assert (Path(r["worktree"]) / "half.txt").exists()
    assert sessions(repo)["s1"]["status"] == "active" and sessions(repo)["s1"]["pending_op"] is None


def test_a_setup_that_times_out_is_killed_and_rolled_back(repo: Path, tmp_path: Path):
    pidfile = tmp_path / "setup.pid"
    configure(setup=[PY, "-c", (f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
                     "time.sleep(600)")], setup_timeout=1)
    before = git_state(repo)
    rc, r = call("start", "slow", cwd=repo)
    assert rc == 15 and r["error"]["data"]["timed_out"] is True, r
    assert "session.setup_timeout" in r["error"]["message"]
    assert not pid_alive(int(pidfile.read_text()))
    assert git_state(repo) == before


def test_a_setup_that_leaves_a_server_running_and_prints_endless_progress_succeeds(repo: Path, svc: Any,
                                                                                   tmp_path: Path):
    """Found by our red team: a setup starting a dev server in the background (which keeps the
    output open) was taken for a timeout and rolled back, and a progress bar (`\\r`, no newline,
    over 64 KiB) either crashed the start with a traceback or hung it for good. Output now goes
    straight into the log; the start waits for the hook's exit, not for its output to end."""
    pidfile = tmp_path / "server.pid"
    script = ("import os, subprocess, sys\n"
              "for i in range(30000): sys.stdout.write(f'progress {i}\\r')\n"
              "sys.stdout.write('x' * 100000 + '\\n'); sys.stdout.flush()\n"
              f"p = subprocess.Popen(['sleep', '300'])\nopen({str(pidfile)!r}, 'w').write(str(p.pid))\n"
              "print('server started')\n")
    configure(setup=[PY, "-c", script], setup_timeout=60)
    rc, r = call("start", "srv", cwd=repo)
    assert rc == 0, r
    server = int(pidfile.read_text())
    try:
        assert pid_alive(server)  # the setup's server lives on
        log = (repo / ".para" / "logs" / "srv.setup.log").read_text()
        assert "server started" in log and "para: exit status 0" in log
        events = svc("events", limit=1000)["events"]
        lines = [e["data"]["line"] for e in events if e["kind"] == "setup_output"]
        assert lines[:2] == ["progress 0", "progress 1"] and len(lines) == 200  # (the log has them all)
    finally:
        os.kill(server, signal.SIGKILL)


def test_dispatch_fails_cleanly_on_a_failing_setup_and_the_agent_never_starts(repo: Path, tmp_path: Path):
    marker = tmp_path / "agent-ran"
    configure(setup=[PY, "-c", "raise SystemExit(1)"])
    before = git_state(repo)
    proc = run_para("dispatch", "d1", "-p", f"```agent\nrun touch {marker}\n```\n", "--agent", "scripted",
                    "--mode", "headless", "--json", cwd=repo, check=False)
    assert proc.returncode == 15, proc.stdout
    assert json.loads(proc.stdout)["error"]["code"] == "setup_failed"
    assert git_state(repo) == before and not marker.exists() and sessions(repo) == {}


# ---- teardown ----------------------------------------------------------------------------

def test_teardown_runs_before_cancel_removes_the_worktree_and_its_failure_does_not_block(repo: Path,
                                                                                       tmp_path: Path):
    seen = tmp_path / "teardown.json"
    configure(teardown=[PY, "-c", DUMP + "; import pathlib; assert pathlib.Path('mine.txt').exists()", str(seen)])
    wt = Path(call("start", "t1", cwd=repo)[1]["worktree"])
    (wt / "mine.txt").write_text("work\n")
    rc, r = call("cancel", "t1", cwd=repo)
    assert rc == 0, r
    assert json.loads(seen.read_text())["PARA_SESSION"] == "t1"  # ran in the worktree, while it existed
    assert not wt.exists() and not any(w for w in r["warnings"] if "teardown" in w)
    assert git("show", f"{r['archived_branch']}:mine.txt", cwd=repo) == "work"

    configure(teardown=[PY, "-c", "print('cannot stop the db'); raise SystemExit(4)"])
    wt = Path(call("start", "t2", cwd=repo)[1]["worktree"])
    (wt / "kept.txt").write_text("kept\n")
    rc, r = call("cancel", "t2", cwd=repo)
    assert rc == 0, r
    assert any("session.teardown" in w and "status 4" in w for w in r["warnings"]), r
    assert not wt.exists()
    assert git("show", f"{r['archived_branch']}:kept.txt", cwd=repo) == "kept"
    assert "cannot stop the db" in (repo / ".para" / "logs" / "t2.teardown.log").read_text()


def test_teardown_runs_on_finish_and_integrate(repo: Path, tmp_path: Path):
    configure(teardown=[PY, "-c", ("import os, pathlib; pathlib.Path(os.environ['OUT'], "
                                  "os.environ['PARA_SESSION']).write_text('x')")], env={"OUT": str(tmp_path)})
    for name, verb in (("f1", ["finish", "done", "--session", "f1"]), ("i1", ["integrate", "done", "--session", "i1"])):
        wt = Path(call("start", name, cwd=repo)[1]["worktree"])
        (wt / f"{name}.txt").write_text("x\n")
        rc, r = call(*verb, cwd=repo)
        assert rc == 0, r
        assert (tmp_path / name).exists() and not wt.exists()


def test_the_teardown_a_request_names_is_the_one_that_runs(repo: Path, tmp_path: Path):
    """A configuration given with the request (`PARA_SESSION_TEARDOWN` in the CLI's
    environment, as `config show` lists it) decides the teardown of that cancel and finish,
    like every other key (red team RA5)."""
    argv = json.dumps([PY, "-c", ("import os, pathlib; pathlib.Path(os.environ['OUT'], "
                                  "os.environ['PARA_SESSION']).write_text('x')")])
    for name, verb in (("e1", ["cancel", "e1"]), ("e2", ["finish", "done", "--session", "e2"])):
        wt = Path(call("start", name, cwd=repo)[1]["worktree"])
        (wt / f"{name}.txt").write_text("work\n")
        rc, r = call(*verb, cwd=repo, env={"PARA_SESSION_TEARDOWN": argv,
                                           "PARA_SESSION_ENV": json.dumps({"OUT": str(tmp_path)})})
        assert rc == 0, r
        assert (tmp_path / name).exists(), f"{verb[0]} did not run the teardown its request named"


# ---- copy and link ---------------------------------------------------------------------------

def test_copied_env_files_are_in_the_worktree_but_never_in_git_status(repo: Path):
    (repo / ".env").write_text("SECRET=1\n")
    (repo / ".env.local").write_text("LOCAL=1\n")
    (repo / "config").mkdir()
    (repo / "config" / "app.local.json").write_text("{}\n")
    configure(copy=[".env*", "config/*.local.*"])
    rc, r = call("start", "c1", cwd=repo)
    assert rc == 0, r
    wt = Path(r["worktree"])
    assert (wt / ".env").read_text() == "SECRET=1\n" and not (wt / ".env").is_symlink()
    assert (wt / "config" / "app.local.json").read_text() == "{}\n"
    assert git("status", "--porcelain", "--untracked-files=all", cwd=wt) == ""
    (wt / "work.txt").write_text("w\n")
    rc, r = call("finish", "work", "--session", "c1", cwd=repo)
    assert rc == 0, r
    tree = git("ls-tree", "-r", "--name-only", "para/c1", cwd=repo).splitlines()
    assert "work.txt" in tree and not any(p.startswith((".env", "config/")) for p in tree)


def test_copy_globs_skip_git_para_and_names_git_cannot_exclude(repo: Path):
    """Found by our red team: `**/.env` copied other sessions' files out of .para/worktrees
    into every new session and walked symlinked directories for ever, `**` crashed the start
    on .git, and a copied file whose name held a newline could not be excluded, so cancel
    committed it."""
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "cfg.local\n*").write_text("odd\n")
    for link in ("a", "b"):  # two links to `.`: glob's `**` followed them for ever (whole sidecar hung)
        (repo / link).symlink_to(".")
    configure(copy=["**/.env", "*.local*"])
    rc, r = call("start", "g1", cwd=repo)
    assert rc == 0, r
    (Path(r["worktree"]) / "sub").mkdir()
    (Path(r["worktree"]) / "sub" / ".env").write_text("g1's own\n")
    rc, r = call("start", "g2", cwd=repo)
    assert rc == 0, r
    wt = Path(r["worktree"])
    assert (wt / ".env").read_text() == "SECRET=1\n" and not (wt / ".para").exists()
    assert not (wt / "cfg.local\n*").exists()
    assert any("control character" in w for w in r.get("warnings") or []), r
    configure(copy=["**"])
    rc, r = call("start", "g3", cwd=repo)
    assert rc == 0, r
    assert git("status", "--porcelain", cwd=Path(r["worktree"])) == ""


def test_a_linked_node_modules_is_never_committed_and_integrate_refuses_a_branch_tracking_it(repo: Path):
    (repo / "node_modules" / "pkg").mkdir(parents=True)
    (repo / "node_modules" / "pkg" / "index.js").write_text("x\n")
    configure(link=["node_modules"])
    wt = Path(call("start", "l1", cwd=repo)[1]["worktree"])
    assert (wt / "node_modules").is_symlink()
    assert os.path.realpath(wt / "node_modules") == str((repo / "node_modules").resolve())
    assert (wt / "node_modules" / "pkg" / "index.js").read_text() == "x\n"
    assert git("status", "--porcelain", "--untracked-files=all", cwd=wt) == ""
    (wt / "app.js").write_text("app\n")
    git("add", "-A", cwd=wt)
    git("commit", "-qm", "app", cwd=wt)
    assert git("ls-tree", "-r", "--name-only", "HEAD", cwd=wt).splitlines().count("node_modules") == 0

    git("add", "-f", "node_modules", cwd=wt)  # an agent forces it in
    git("commit", "-qm", "vendor", cwd=wt)
    main_before, branch_before = rev(repo, "main"), rev(repo, "para/l1")
    rc, r = call("integrate", "--session", "l1", cwd=repo)
    assert rc == Code.wrong_state.exit, r
    assert r["error"]["code"] == "wrong_state" and "node_modules" in r["error"]["message"]
    assert rev(repo, "main") == main_before and rev(repo, "para/l1") == branch_before
    assert sessions(repo)["l1"]["status"] == "active"
    # Its dry run says the same, and cancel (which removes the worktree) leaves main's directory be.
    assert call("integrate", "--session", "l1", "--dry-run", cwd=repo)[0] == Code.wrong_state.exit
    assert call("cancel", "l1", cwd=repo)[0] == 0
    assert (repo / "node_modules" / "pkg" / "index.js").read_text() == "x\n"


# ---- ports -----------------------------------------------------------------------------------

def test_live_sessions_never_share_a_port_and_ports_come_back(repo: Path, runtime_dir: Path):
    """Unique among live sessions, persisted (a sidecar killed with SIGKILL does not forget
    them), released when the session ends; a port something listens on is skipped."""
    first, last = free_range(4)
    configure(ports=1, port_range=f"{first}-{last}")
    busy = socket.socket()
    busy.bind(("127.0.0.1", first + 2))
    busy.listen()
    try:
        got = {n: call("start", n, cwd=repo)[1]["ports"] for n in ("a", "b", "c")}
        assert got == {"a": [first], "b": [first + 1], "c": [last]}
        rc, r = call("start", "d", cwd=repo)
        assert rc == Code.config_error.exit and "session.port_range" in r["error"]["message"], r

        for pid in sidecar_pids(runtime_dir):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(p) for p in sidecar_pids(runtime_dir)), 30, "the sidecar to die")
        rc, r = call("start", "d", cwd=repo)  # a new sidecar still knows a, b and c hold theirs
        assert rc == Code.config_error.exit, r
        assert sessions(repo)["b"]["ports"] == [first + 1]

        assert call("cancel", "b", cwd=repo)[0] == 0
        assert sessions(repo)["b"]["ports"] == []
        rc, r = call("start", "d", cwd=repo)
        assert rc == 0 and r["ports"] == [first + 1], r
    finally:
        busy.close()


def test_recover_and_resume_give_the_worktree_ports_again(repo: Path):
    """Found by our red team: a session recovered after a cancel, or resumed after a finish,
    got its worktree back without ports (PARA_PORT empty for its agent)."""
    first, last = free_range(3)
    configure(ports=1, port_range=f"{first}-{last}")
    for n in ("a", "b"):
        assert call("start", n, cwd=repo)[0] == 0
    (repo / ".para" / "worktrees" / "a" / "a.txt").write_text("a\n")
    assert call("finish", "a work", "--session", "a", cwd=repo)[0] == 0
    assert call("cancel", "b", cwd=repo)[0] == 0
    assert call("start", "c", cwd=repo)[1]["ports"] == [first]
    rc, r = call("resume", "a", cwd=repo)
    assert rc == 0 and r["ports"] == [first + 1], r
    rc, r = call("recover", "b", cwd=repo)
    assert rc == 0 and r["ports"] == [last], r
    rc, r = call("cancel", "c", cwd=repo)
    rc, r = call("start", "d", cwd=repo)
    assert r["ports"] == [first], r


def test_two_repositories_of_one_sidecar_never_share_a_port(repo: Path, tmp_path: Path):
    """Found by our red team: ports were unique per repository, so two projects' dev servers
    were handed the same port."""
    from conftest import make_repo
    first, last = free_range(3)
    configure(ports=1, port_range=f"{first}-{last}")
    other = make_repo(tmp_path / "other")
    assert call("start", "x", cwd=repo)[1]["ports"] == [first]
    assert call("start", "y", cwd=other)[1]["ports"] == [first + 1]


@pytest.mark.parametrize("spelled", ["./deps", "deps/", "./deps/"])
def test_a_linked_path_however_spelled_is_excluded_and_guarded(repo: Path, spelled: str):
    """Found by our red team: `./deps` was linked but its exclude line did not match, so the
    symlink showed in `git status` and integrate's guard (comparing "./deps" with "deps")
    let it land."""
    (repo / "deps").mkdir()
    (repo / "deps" / "lib.js").write_text("x\n")
    configure(link=[spelled])
    rc, r = call("start", "l1", cwd=repo)
    assert rc == 0, r
    assert git("status", "--porcelain", "--untracked-files=all", cwd=Path(r["worktree"])) == ""


# ---- crash during setup ------------------------------------------------------------------------

def test_a_sidecar_killed_during_setup_is_repaired_at_the_next_start(repo: Path, tmp_path: Path,
                                                                     runtime_dir: Path):
    pidfile = tmp_path / "setup.pid"
    configure(setup=[PY, "-c", (f"import os, time, pathlib; open('partial.txt', 'w'); "
                     f"pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid())); time.sleep(600)")])
    before = git_state(repo)
    proc = subprocess.Popen([*PARA_ARGV, "start", "k1", "--json"], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 60, "the setup to write its pid")
        setup_pid = int(pidfile.read_text())
        for pid in sidecar_pids(runtime_dir):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode != 0
        assert pid_alive(setup_pid)  # orphaned with the sidecar gone, as after a real crash
        listed = sessions(repo)  # autostarts a sidecar, which repairs the journaled start
        assert listed == {}
        wait_until(lambda: not pid_alive(setup_pid), 30, "the repair to stop the setup")
        # What the worktree held (here the setup's file) is kept, not deleted: nothing else changed.
        after = git_state(repo)
        saved = [line for line in after["refs"].splitlines() if line.startswith("refs/para/backup/k1/")]
        assert len(saved) == 1 and saved[0].split()[0].endswith("-start"), after["refs"]
        assert "partial.txt" in git("show", "--name-only", "--format=", saved[0].split()[1], cwd=repo)
        assert {**after, "refs": "\n".join(x for x in after["refs"].splitlines() if x not in saved)} == before
        assert saved[0].split()[0] in (repo / ".para" / "logs" / "k1.setup.log").read_text()
        assert str(repo / ".para" / "worktrees" / "k1") not in worktree_paths(repo)
        assert not (repo / ".para" / "worktrees" / "k1").exists()
        assert (repo / ".para" / "logs" / "k1.setup.log").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        if pidfile.exists() and pid_alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


# ---- hostile configuration -----------------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("session.setup", "sh -c 'touch /tmp/pwned'"),
    ("session.teardown", "rm -rf ~"),
    ("session.copy", '["../outside/.env"]'),
    ("session.copy", '["/etc/passwd"]'),
    ("session.copy", '[".git/config"]'),
    ("session.link", '["node_modules/*"]'),
    ("session.link", '["~/.ssh"]'),
    ("session.link", '["a/.git/x"]'),      # (.git or .para anywhere in the path, and control
    ("session.link", '["x/.para/y"]'),     # characters: found by our red team)
    ("session.copy", '["a\\nb"]'),
    ("session.port_range", "9000-8000"),
    ("session.port_range", "80-90"),
    ("session.port_range", "1-2-3"),
    ("session.ports", "65"),
    ("session.env", '{"PARA_SOCKET": "/tmp/x"}'),
    ("session.env", '{"A B": "x"}'),
])
def test_hostile_values_are_config_errors_and_change_nothing(repo: Path, key: str, value: str):
    cfg = Path(os.environ["PARA_CONFIG"])
    text = cfg.read_text() if cfg.exists() else None
    rc, r = call("config", "set", key, value, cwd=repo)
    assert rc == Code.config_error.exit and r["error"]["code"] == "config_error", (key, value, r)
    assert (cfg.read_text() if cfg.exists() else None) == text


def test_a_hostile_value_in_the_file_fails_start_before_anything_is_made(repo: Path):
    configure(copy=["../../etc/*"])
    before = git_state(repo)
    rc, r = call("start", "h1", cwd=repo)
    assert rc == Code.config_error.exit and "session.copy" in r["error"]["message"], r
    assert git_state(repo) == before


def test_config_show_lists_the_session_keys_with_defaults_and_docs(repo: Path):
    shown = call("config", "show", cwd=repo)[1]
    for key, default in (("session.setup", []), ("session.setup_timeout", 600), ("session.teardown", []),
                         ("session.teardown_timeout", 60), ("session.copy", []), ("session.link", []),
                         ("session.ports", 0), ("session.port_range", "20000-29999"), ("session.env", {})):
        assert shown["values"][key] == {"value": default, "source": "default"}, key
        assert shown["descriptions"][key]


# ---- the trust gate ----------------------------------------------------------------------------

def test_an_unapproved_project_setup_does_not_run(repo: Path, tmp_path: Path):
    marker = tmp_path / "ran"
    commit_file(repo, ".para/config.json", json.dumps({"session": {
        "setup": [PY, "-c", f"open({str(marker)!r}, 'w')"], "link": ["node_modules"]}}), "project setup")
    before = git_state(repo)
    rc, r = call("start", "p1", cwd=repo)
    assert rc == Code.untrusted.exit and r["error"]["code"] == "untrusted", r
    assert "session.setup" in r["error"]["message"]
    assert not marker.exists() and git_state(repo) == before and sessions(repo) == {}
    shown = call("trust", cwd=repo)[1]
    rc, r = call("trust", "--approve", shown["sha256"], cwd=repo)
    assert rc == 0, r
    rc, r = call("start", "p1", cwd=repo)
    assert rc == 0 and marker.exists(), r


# ---- agents get the session environment -----------------------------------------------------------

def test_a_dispatched_agent_gets_its_port_and_the_session_environment(repo: Path):
    first, last = free_range(3)
    configure(ports=1, port_range=f"{first}-{last}", env={"MY_VAR": "for agents"})
    task = (f"```agent\nrun {PY} -c \"{DUMP}\" agent-env.json\n```\n\n"
            'When done: para integrate "record the environment"\n')
    proc = run_para("dispatch", "ag", "-p", task, "--agent", "scripted", "--mode", "headless", "--json", cwd=repo)
    port = json.loads(proc.stdout)["ports"]
    assert port == [first]
    wait_until(lambda: sessions(repo)["ag"]["status"] == "integrated", 90, "the agent to integrate")
    seen = json.loads(git("show", "main:agent-env.json", cwd=repo))
    assert seen["PARA_PORT"] == str(first) and seen["PARA_PORTS"] == str(first)
    assert seen["PARA_SESSION"] == "ag" and seen["PARA_REPO"] == str(repo.resolve()) and seen["PARA_BASE"] == "main"
    assert seen["MY_VAR"] == "for agents"
    assert sessions(repo)["ag"]["ports"] == []  # released once it landed


def test_what_the_teardown_writes_in_the_worktree_is_saved_by_cancel(repo: Path):
    """The teardown runs before the save (with the agent thawed): a file it writes in the
    worktree is committed with the rest of the work on the archive branch (the worktree's
    state is read again after it; without a teardown, once)."""
    configure(teardown=[PY, "-c", "import pathlib; pathlib.Path('late.txt').write_text('from the teardown\\n')"])
    wt = Path(call("start", "t3", cwd=repo)[1]["worktree"])  # (clean until the teardown writes)
    rc, r = call("cancel", "t3", cwd=repo)
    assert rc == 0, r
    assert not wt.exists()
    assert git("show", f"{r['archived_branch']}:late.txt", cwd=repo) == "from the teardown"


def test_what_the_teardown_writes_after_an_integration_is_saved_as_leftover(repo: Path):
    """The integration landed; the teardown then writes in the (clean) worktree before it goes:
    that file is kept under a `-leftover` backup ref, with a warning, not deleted with it."""
    configure(teardown=[PY, "-c", "import pathlib; pathlib.Path('late.txt').write_text('from the teardown\\n')"])
    wt = Path(call("start", "i3", cwd=repo)[1]["worktree"])
    (wt / "work.txt").write_text("work\n")
    rc, r = call("integrate", "done", "--session", "i3", cwd=repo)
    assert rc == 0, r
    assert not wt.exists() and git("show", "main:work.txt", cwd=repo) == "work"
    ref = next(w for w in r["warnings"] if "-leftover" in w).split("saved as ")[1].rstrip(".")
    assert git("show", f"{ref}:late.txt", cwd=repo) == "from the teardown"


def test_a_commit_the_teardown_makes_after_an_integration_is_kept_not_deleted_with_the_branch(repo: Path):
    """The integration landed; the teardown (the agent thawed to stop its servers) then commits
    on the session branch before the worktree and the branch go: that commit did not land, and
    it is kept under a backup ref, with a warning, not deleted with the branch."""
    configure(teardown=["sh", "-c", "echo late > late.txt && git add late.txt && "
                                    "git -c user.name=t -c user.email=t@t commit -qm 'late commit'"])
    wt = Path(call("start", "i4", cwd=repo)[1]["worktree"])
    (wt / "work.txt").write_text("work\n")
    rc, r = call("integrate", "done", "--session", "i4", cwd=repo)
    assert rc == 0, r
    assert not wt.exists() and git("show", "main:work.txt", cwd=repo) == "work"
    assert git("branch", "--list", "para/i4", cwd=repo) == ""
    kept = [ref for ref in git("for-each-ref", "--format=%(refname)", "refs/para/backup/i4/", cwd=repo).split()
            if git("log", "-1", "--format=%s", ref, cwd=repo) == "late commit"]
    assert len(kept) == 1, git("for-each-ref", "refs/para/backup/", cwd=repo)
    assert git("show", f"{kept[0]}:late.txt", cwd=repo) == "late"
    assert any(kept[0] in w for w in r["warnings"]) and r["integration"]["late"] == kept[0], r


# ---- commits made on the branch after what landed: kept under -late (red team rt1) --------

GIT_ID = "git -c user.name=t -c user.email=t@t "


def _configure(**keys: Any) -> None:
    """Set `<section>__<key>=value` keys in this test's user file."""
    path = Path(os.environ["PARA_CONFIG"])
    tree = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
    for k, v in keys.items():
        section, _, key = k.partition("__")
        tree.setdefault(section, {})[key] = v
    path.write_text(json.dumps(tree))


def _backups(repo: Path, name: str) -> dict[str, str]:
    out = git("for-each-ref", "--format=%(refname) %(objectname)", f"refs/para/backup/{name}/", cwd=repo)
    return dict(line.split() for line in out.splitlines())


def _is_ancestor(repo: Path, a: str, b: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=repo).returncode == 0


def test_a_teardown_that_moves_the_branch_back_loses_nothing_and_warns_of_nothing(repo: Path) -> None:
    """The teardown resets the session branch to an ancestor of what landed: no commit is
    lost, so there is nothing `-late` to keep and no warning that commits did not land."""
    _configure(session__teardown=["sh", "-c", GIT_ID + "commit -q --allow-empty -m two && git reset -q --hard HEAD~2"])
    wt = Path(call("start", "b1", cwd=repo)[1]["worktree"])
    (wt / "work.txt").write_text("work\n")
    rc, r = call("integrate", "done", "--session", "b1", cwd=repo)
    assert rc == 0, r
    assert git("show", "main:work.txt", cwd=repo) == "work"
    landed = git("rev-parse", "main", cwd=repo)
    late = {ref: sha for ref, sha in _backups(repo, "b1").items() if ref.endswith("-late")}
    # Whatever -late holds must not already be on main (else it is no late commit at all).
    assert not any(_is_ancestor(repo, sha, landed) for sha in late.values()), (late, r["warnings"])
    assert not any("did not land" in w for w in r["warnings"]), r["warnings"]


def test_a_teardown_that_deletes_the_branch_detaches_and_commits_keeps_that_commit(repo: Path) -> None:
    """No branch left to compare: the detached HEAD's commit is saved with the worktree."""
    _configure(session__teardown=["sh", "-c", "git checkout -q --detach && git update-ref -d refs/heads/para/b2 && "
                                  "echo late > late.txt && git add late.txt && " + GIT_ID + "commit -qm late"])
    wt = Path(call("start", "b2", cwd=repo)[1]["worktree"])
    (wt / "work.txt").write_text("work\n")
    rc, r = call("integrate", "done", "--session", "b2", cwd=repo)
    assert rc == 0, r
    kept = [ref for ref in _backups(repo, "b2") if git("log", "-1", "--format=%s", ref, cwd=repo) == "late"]
    assert kept, (_backups(repo, "b2"), r["warnings"])
    assert any(k in w for k in kept for w in r["warnings"]), r["warnings"]


def test_a_teardown_commit_with_keep_branch_is_said(repo: Path) -> None:
    """integrate.keep_branch: the branch stays, with the teardown's commit on it, which did
    not land: said, as without keep_branch."""
    _configure(session__teardown=["sh", "-c", "echo late > late.txt && git add late.txt && " + GIT_ID + "commit -qm late"],
               integrate__keep_branch=True)
    wt = Path(call("start", "b3", cwd=repo)[1]["worktree"])
    (wt / "work.txt").write_text("work\n")
    rc, r = call("integrate", "done", "--session", "b3", cwd=repo)
    assert rc == 0, r
    assert git("log", "-1", "--format=%s", "para/b3", cwd=repo) == "late"
    assert any("did not land" in w for w in r["warnings"]), r["warnings"]


def test_a_sidecar_killed_during_a_teardown_that_committed_keeps_the_late_commit_and_says_so(
        repo: Path, tmp_path: Path, runtime_dir: Path) -> None:
    """kill -9 while the teardown (after its commit) still runs; the next sidecar repairs the
    landing: the late commit is kept under -late, as without the crash (not as the tip that
    landed: the journal says which tip landed)."""
    marker = tmp_path / "teardown.pid"
    _configure(session__teardown=["sh", "-c", "echo late > late.txt && git add late.txt && " + GIT_ID
                                  + f"commit -qm late && echo $$ > {marker} && sleep 600"])
    wt = Path(call("start", "k9", cwd=repo)[1]["worktree"])
    (wt / "work.txt").write_text("work\n")
    proc = subprocess.Popen([*PARA_ARGV, "integrate", "done", "--session", "k9", "--json"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: marker.exists() and marker.read_text().strip(), 60, "the teardown to commit")
        late = git("rev-parse", "para/k9", cwd=repo)
        for pid in sidecar_pids(runtime_dir):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=60)
        out = json.loads(run_para("list", "--all", "--json", cwd=repo).stdout)  # a new sidecar repairs
        wait_until(lambda: not pid_alive(int(marker.read_text())), 30, "the repair to stop the teardown")

        def repaired() -> dict[str, Any] | None:
            s = next(x for x in json.loads(run_para("list", "--all", "--json", cwd=repo).stdout)["sessions"]
                     if x["name"] == "k9")
            return s if s["status"] == "integrated" else None
        s = wait_until(repaired, 30, "the repair to finish the integration")
        refs = _backups(repo, "k9")
        assert s["status"] == "integrated", (s, out)
        assert late in refs.values(), refs
        assert git("show", "main:work.txt", cwd=repo) == "work"
        assert s["integration"].get("late") and refs[s["integration"]["late"]] == late, (s["integration"], refs)
    finally:
        if proc.poll() is None:
            proc.kill()
        if marker.exists() and marker.read_text().strip() and pid_alive(int(marker.read_text())):
            os.kill(int(marker.read_text()), signal.SIGKILL)
