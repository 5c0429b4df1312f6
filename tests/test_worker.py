"""The worker protocol (issue 16 point 2), worker side: the real `python -m para_rpc.worker` as a
subprocess, one JSON line (plus payload bytes) in and out, against real git repositories. No SSH
is needed: what SSH adds is the transport, and the sidecar side is tested in test_executors_ssh.

Guarantees: code goes in by bundles (full, then incremental) and a worktree is made at the commit,
idempotently; an agent gets its argv byte-identical with no shell, the prompt on stdin and exactly
the environment sent, and no secret of it lands in a file or a command line; poll tells alive,
exited (with its code) and lost; stop leaves no process of the run, wherever it went; snapshot
brings HEAD, the branch and a checkpoint of uncommitted work without touching the agent's index,
HEAD or files; commit and merge (conflicts stay where the agent is); release refuses a running
agent and is idempotent; bad input changes nothing and gets a clear error, never a traceback.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PYTHON, commit_file, git, make_repo, pid_alive, rev, wait_until

SESSION = "s1"
BRANCH = "para/s1"


def call(request: dict[str, Any] | None = None, payload: bytes = b"", raw: bytes | None = None,
         code: str | None = None) -> tuple[dict[str, Any], bytes]:
    """One worker request; the answer and its payload. Checks the framing every time: one JSON
    line, exactly the announced payload after it, exit status 2 with an error, 0 without."""
    if raw is None:
        raw = json.dumps({**(request or {}), **({"payload": len(payload)} if payload else {})}).encode()
    data = raw + b"\n" + payload if request is not None else raw
    out = subprocess.run([PYTHON, "-m", "para_rpc.worker"], input=data, capture_output=True, timeout=120)
    line, _, rest = out.stdout.partition(b"\n")
    answer = json.loads(line)
    assert isinstance(answer, dict), out.stdout
    assert len(rest) == answer.get("payload", 0), (answer, len(rest))
    assert b"Traceback" not in out.stdout
    if code is None:
        assert "error" not in answer and out.returncode == 0, (answer, out.stderr.decode())
    else:
        assert answer.get("code") == code and out.returncode == 2, (answer, out.stderr.decode())
        assert isinstance(answer["error"], str) and answer["error"]
    return answer, rest


@pytest.fixture
def root() -> Iterator[Path]:
    """A short root under /tmp (the session socket path must stay under 100 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "src")


def base(root: Path, **kw: Any) -> dict[str, Any]:
    return {"root": str(root), "repo": "demo", **kw}


def sess(root: Path, **kw: Any) -> dict[str, Any]:
    return base(root, session=SESSION, **kw)


def bundle(repo: Path, *args: str) -> bytes:
    path = repo.parent / f"b-{os.urandom(4).hex()}.bundle"
    git("bundle", "create", "-q", str(path), *args, cwd=repo)
    return path.read_bytes()


def receive(root: Path, src: Path, *exclude: str) -> dict[str, str]:
    tip = rev(src, "main")
    assert tip
    answer, _ = call({"op": "receive", **base(root), "refs": {"refs/heads/main": tip}},
                     bundle(src, "main", *(f"^{e}" for e in exclude)))
    return dict(answer["refs"])


def prepared(root: Path, src: Path, files: dict[str, str] | None = None) -> Path:
    receive(root, src)
    answer, _ = call({"op": "prepare", **sess(root), "branch": BRANCH, "commit": rev(src, "main"),
                      "files": files or {}})
    return Path(answer["worktree"])


def state(root: Path) -> dict[str, str]:
    """Everything under root: each path with its kind and content hash, and the cache's refs (what
    'nothing changed' compares; git may leave an empty packed-refs after deleting a ref)."""
    cache = root / "repos/demo.git"
    found = {"refs": git("--git-dir", str(cache), "for-each-ref", cwd=root) if cache.is_dir() else ""}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name == "packed-refs":
                continue
            p = Path(dirpath, name)
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            found[str(p.relative_to(root))] = kind + (hashlib.sha256(p.read_bytes()).hexdigest()
                                                      if kind == "file" else "")
    return found


# ---- code in: receive, prepare --------------------------------------------------------------

def test_receive_full_then_incremental_bundles_and_refs(root: Path, src: Path) -> None:
    assert call({"op": "refs", **base(root)})[0] == {"refs": {}}
    first = rev(src, "main")
    assert receive(root, src) == {"refs/heads/main": first}
    new = commit_file(src, "a.txt", "a\n", "more")
    refs = receive(root, src, str(first))          # a bundle that needs what the cache has
    assert refs == {"refs/heads/main": new}
    assert call({"op": "refs", **base(root)})[0]["refs"] == refs
    assert git("--git-dir", str(root / "repos/demo.git"), "show", f"{new}:a.txt", cwd=root) == "a"
    assert (root.stat().st_mode & 0o777, (root / "repos").stat().st_mode & 0o777) == (0o700, 0o700)
    # refs only (payload 0) to a commit the cache has; to one it lacks: not_found, nothing moves
    call({"op": "receive", **base(root), "refs": {"refs/heads/old": first}})
    before = state(root)
    call({"op": "receive", **base(root), "refs": {"refs/heads/x": "1" * 40}}, code="not_found")
    assert state(root) == before


def test_prepare_makes_the_worktree_at_the_commit_and_is_idempotent(root: Path, src: Path) -> None:
    wt = prepared(root, src, {".para-agent.md": "be kind ✓\n", "sub/dir/notes.txt": "n\n"})
    assert wt == root / "wt/demo" / SESSION
    assert git("rev-parse", "HEAD", cwd=wt) == rev(src, "main")
    assert git("symbolic-ref", "--short", "HEAD", cwd=wt) == BRANCH
    assert (wt / ".para-agent.md").read_text() == "be kind ✓\n" and (wt / "sub/dir/notes.txt").exists()
    (wt / "agent-work.txt").write_text("mine\n")
    again, _ = call({"op": "prepare", **sess(root), "branch": BRANCH, "commit": rev(src, "main"), "files": {}})
    assert Path(again["worktree"]) == wt and (wt / "agent-work.txt").read_text() == "mine\n"
    assert again["home"] == os.path.expanduser("~")
    assert len(os.fsencode(again["socket"])) <= 100 and Path(again["socket"]).parent.is_dir()
    assert (Path(again["run_dir"]).stat().st_mode & 0o777) == 0o700
    # the branch under the agent never moves by a receive
    before = state(root)
    call({"op": "receive", **base(root), "refs": {f"refs/heads/{BRANCH}": rev(src, "main~1")}}, code="wrong_state")
    assert state(root) == before and git("rev-parse", "HEAD", cwd=wt) == rev(src, "main")


def test_a_worktree_left_by_an_earlier_session_of_the_name_is_not_taken_as_its_own(root: Path, src: Path) -> None:
    """RT16-3: a session's worktree left on a host (its session ended elsewhere after `para resume
    --executor`, or its release failed while the host was away) was reused by a later prepare of
    the same name whatever it held: the new session's agent worked on the old session's files and
    commits, at a commit the sidecar never sent. A kept worktree is taken only when it holds the
    commit asked for (its own work on top); else nothing changes and the error says why."""
    wt = prepared(root, src)
    git("commit", "-q", "--allow-empty", "-m", "the old session's work", cwd=wt)
    old = git("rev-parse", "HEAD", cwd=wt)
    # (a host that answers again after a resume elsewhere: its agent's later work is kept)
    again, _ = call({"op": "prepare", **sess(root), "branch": BRANCH, "commit": rev(src, "main"), "files": {}})
    assert Path(again["worktree"]) == wt and git("rev-parse", "HEAD", cwd=wt) == old
    # A later session of that name, from main as it is now (which the old one never saw).
    new = commit_file(src, "later.txt", "later\n", "main moves on")
    receive(root, src)
    before = state(root)
    answer, _ = call({"op": "prepare", **sess(root), "branch": BRANCH, "commit": new, "files": {"x.md": "x"}},
                     code="wrong_state")
    assert str(wt) in answer["error"] and old in answer["error"] and new in answer["error"], answer
    assert state(root) == before


def test_paras_own_files_stay_out_of_the_agents_git_add(root: Path, src: Path) -> None:
    """The instructions prepare writes (`.para-agent.md`) are para's: an agent's `git add -A`
    and commit leave them out, as in a local worktree, so they never reach the branch that
    comes home (nor show as a change of the session there)."""
    wt = prepared(root, src, files={".para-agent.md": "# para\n", "odd [x]*.md": "odd\n"})
    assert git("status", "--porcelain", cwd=wt) == ""
    (wt / "work.txt").write_text("work\n")
    git("add", "-A", cwd=wt)
    git("commit", "-qm", "work", cwd=wt)
    assert git("show", "--name-only", "--format=", "HEAD", cwd=wt).split() == ["work.txt"]
    prepared(root, src, files={".para-agent.md": "# para\n"})  # (again: no line twice)
    lines = (root / "repos/demo.git/info/exclude").read_text().splitlines()
    assert lines.count("/.para-agent.md") == 1 and "/odd \\[x]\\*.md" in lines, lines


def test_an_agent_that_cannot_start_exits_127_with_the_reason_in_its_log(root: Path, src: Path) -> None:
    prepared(root, src)
    call({"op": "start", **sess(root), "argv": ["/nonexistent/agent", "x"], "env": {"PATH": "/usr/bin:/bin"}})
    assert wait_until(lambda: (p := poll(root))["state"] == "exited" and p)["exit_code"] == 127
    assert b"cannot start /nonexistent/agent" in call({"op": "logs", **sess(root), "offset": 0})[1]


def test_a_change_to_the_cache_waits_for_its_lock(root: Path, src: Path) -> None:
    receive(root, src)
    tip = rev(src, "main")
    with open(root / "repos/demo.git/para-worker.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen([PYTHON, "-m", "para_rpc.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin and proc.stdout
        proc.stdin.write(line({"op": "receive", **base(root), "refs": {"refs/heads/copy": tip}}))
        proc.stdin.close()
        with pytest.raises(subprocess.TimeoutExpired):  # (a loaded machine can only make this pass)
            proc.wait(timeout=1.0)
        assert "refs/heads/copy" not in call({"op": "refs", **base(root)})[0]["refs"]
    assert proc.wait(timeout=120) == 0 and json.loads(proc.stdout.read())["refs"]["refs/heads/copy"] == tip


def test_a_session_op_waits_for_its_session_only(root: Path, src: Path) -> None:
    prepared(root, src)
    call({"op": "prepare", **base(root), "session": "other", "branch": "para/other", "commit": rev(src, "main")})
    with open(root / "run/demo" / SESSION / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen([PYTHON, "-m", "para_rpc.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin and proc.stdout
        proc.stdin.write(line({"op": "snapshot", **sess(root), "branch": BRANCH, "have": []}))
        proc.stdin.close()
        # another session of the same cache is not held up (this call would hang otherwise)
        call({"op": "snapshot", **base(root), "session": "other", "branch": "para/other", "have": []})
        with pytest.raises(subprocess.TimeoutExpired):  # (a loaded machine can only make this pass)
            proc.wait(timeout=1.0)
    assert proc.wait(timeout=120) == 0 and json.loads(proc.stdout.readline())["head"] == rev(src, "main")
    proc.stdout.close()


def test_concurrent_prepares_of_one_cache_all_succeed(root: Path, src: Path) -> None:
    receive(root, src)
    names = [f"c{i}" for i in range(6)]
    procs = [subprocess.Popen([PYTHON, "-m", "para_rpc.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in names]
    for name, proc in zip(names, procs, strict=True):
        assert proc.stdin
        proc.stdin.write(line({"op": "prepare", **base(root), "session": name, "branch": f"para/{name}",
                               "commit": rev(src, "main")}))
        proc.stdin.close()
    answers = [json.loads(proc.stdout.read()) for proc in procs if proc.stdout]
    assert [proc.wait(timeout=120) for proc in procs] == [0] * len(names)
    assert all("error" not in a for a in answers), answers
    listed = git("--git-dir", str(root / "repos/demo.git"), "worktree", "list", "--porcelain", cwd=root)
    assert all(f"branch refs/heads/para/{name}" in listed for name in names)


# ---- start, poll, secrets --------------------------------------------------------------------

AGENT = textwrap.dedent("""
    import json, os, sys
    out, fifo = sys.argv[1], sys.argv[2]
    with open(out + ".tmp", "w") as f:
        json.dump({"argv": sys.argv[3:], "stdin": sys.stdin.read(), "env": dict(os.environ),
                   "cwd": os.getcwd()}, f)
    os.replace(out + ".tmp", out)
    with open(fifo) as f:   # blocks until the test lets it end
        f.read()
    sys.exit(7)
""")

HOSTILE = ["it's \"quoted\" \\", "$(touch x)", "`touch y`", "a; touch z", "line1\nline2", "ünï ✓ 😀",
           "*", "--", "-c", "", "$HOME ${PATH}"]


def start_agent(root: Path, tmp_path: Path, env: dict[str, str], prompt: str = "") -> dict[str, Any]:
    out, fifo = tmp_path / "out.json", tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "agent.py").write_text(AGENT)
    answer, _ = call({"op": "start", **sess(root), "argv": [PYTHON, str(tmp_path / "agent.py"), str(out),
                                                             str(fifo), *HOSTILE],
                      "env": env, "prompt": prompt})
    return answer


def let_end(tmp_path: Path) -> None:
    with open(tmp_path / "fifo", "w") as f:
        f.write("go")


def poll(root: Path) -> dict[str, Any]:
    return call({"op": "poll", **sess(root)})[0]


def test_start_hands_over_argv_prompt_and_env_exactly_and_keeps_secrets(root: Path, src: Path,
                                                                        tmp_path: Path) -> None:
    wt = prepared(root, src)
    assert poll(root)["state"] == "none"
    secret = "s3cr3t-" + os.urandom(8).hex()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", "PARA_SESSION": SESSION,
           "API_TOKEN": secret}
    prompt = "do it; $(rm -rf /) 'now'\nline two ✓\n"
    started = start_agent(root, tmp_path, env, prompt)
    got = json.loads(wait_until(lambda: (tmp_path / "out.json").exists() and (tmp_path / "out.json").read_text(),
                                what="the agent's report"))
    assert got["argv"] == HOSTILE
    assert got["stdin"] == prompt
    assert got["env"] == {**env, "PARA_AGENT_RUN": started["exit_file"]}
    assert Path(got["cwd"]) == wt
    assert not any((d / n).exists() for d in (wt, tmp_path, root) for n in "xyz")
    assert poll(root)["state"] == "alive" and poll(root)["pid"] == started["pid"]
    # while it runs: no file under root and no command line of any process holds the secret
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert secret.encode() not in p.read_bytes(), p
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            assert secret.encode() not in cmdline, entry
    assert (Path(started["exit_file"]).parent / "prompt").stat().st_mode & 0o777 == 0o600
    # a second start while it runs is refused; so is release
    call({"op": "start", **sess(root), "argv": ["true"], "env": env}, code="wrong_state")
    call({"op": "release", **sess(root), "branch": BRANCH}, code="wrong_state")
    assert wt.is_dir()
    let_end(tmp_path)
    done = wait_until(lambda: (p := poll(root))["state"] == "exited" and p, what="exited")
    assert done["exit_code"] == 7 and done["ended_at"] >= started["started_at"]


def test_a_runner_killed_without_an_exit_file_is_lost(root: Path, src: Path, tmp_path: Path) -> None:
    prepared(root, src)
    started = start_agent(root, tmp_path, {"PATH": os.environ["PATH"]})
    wait_until(lambda: (tmp_path / "out.json").exists(), what="the agent")
    os.kill(started["pid"], signal.SIGKILL)
    wait_until(lambda: poll(root)["state"] == "lost", what="lost")
    stopped, _ = call({"op": "stop", **sess(root), "grace": 5})  # its orphaned agent goes too
    assert stopped["left_running"] == [] and stopped["pids"]
    assert poll(root)["state"] == "lost"


def test_poll_many_answers_each_session_in_one_process(root: Path, src: Path, tmp_path: Path) -> None:
    """The sidecar polls every run on a host with one request per round: each entry gets what
    `poll` would say of it, in order, and an entry that cannot be answered gets its own error."""
    prepared(root, src)
    started = start_agent(root, tmp_path, {"PATH": os.environ["PATH"]})
    base = sess(root)
    entries = [{"repo": base["repo"], "session": SESSION}, {"repo": base["repo"], "session": "never-prepared"},
               {"repo": base["repo"], "session": "../escape"}, "not an object"]
    got, _ = call({"op": "poll_many", "root": base["root"], "sessions": entries})
    states = got["states"]
    assert len(states) == 4
    assert states[0]["state"] == "alive" and states[0]["pid"] == started["pid"]
    assert states[0] == poll(root) | {"pid": started["pid"]}
    assert states[1]["state"] == "none"
    assert states[2]["code"] == "invalid_input" and "session name" in states[2]["error"]
    assert states[3]["code"] == "invalid_input" and "object" in states[3]["error"]
    let_end(tmp_path)
    wait_until(lambda: call({"op": "poll_many", "root": base["root"], "sessions": entries[:1]})[0]["states"][0]
               ["state"] == "exited", what="exited in poll_many")
    # A request for more sessions than one answer may hold is refused whole.
    too_many = [{"repo": base["repo"], "session": SESSION}] * 1001
    answer, _ = call({"op": "poll_many", "root": base["root"], "sessions": too_many}, code="invalid_input")
    assert "at most 1000" in answer["error"]


# ---- stop ----------------------------------------------------------------------------------

ESCAPER = textwrap.dedent("""
    import json, os, signal, subprocess, sys, time
    pids = {}
    if (child := os.fork()) == 0:          # a child in a session of its own
        os.setsid()
        time.sleep(3600)
        os._exit(0)
    pids["setsid"] = child
    r, w = os.pipe()
    if os.fork() == 0:                     # a daemon: double fork, new session, ignores TERM
        os.setsid()
        if (grandchild := os.fork()) != 0:
            os.write(w, str(grandchild).encode())
            os._exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)
        os._exit(0)
    os.close(w)
    pids["daemon"] = int(os.read(r, 20))
    env = {k: v for k, v in os.environ.items() if k != "PARA_AGENT_RUN"}
    pids["no_env"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], env=env,
                                      start_new_session=True).pid   # (its cwd: the worktree)
    pids["agent"] = os.getpid()
    with open(sys.argv[1] + ".tmp", "w") as f:
        json.dump(pids, f)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(3600)
""")


def run_processes(exit_file: str) -> list[int]:
    """Every live process whose environment names this run."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_alive(int(entry)):
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PARA_AGENT_RUN={exit_file}".encode() in env:
                found.append(int(entry))
    return found


def test_stop_leaves_no_process_of_the_run(root: Path, src: Path, tmp_path: Path) -> None:
    prepared(root, src)
    (tmp_path / "escaper.py").write_text(ESCAPER)
    bystander = subprocess.Popen(["sleep", "300"], env={**os.environ, "PARA_AGENT_RUN": "/elsewhere/exit.json"})
    # the user's shell on the worker, in the worktree since before the run: not the agent's
    shell = subprocess.Popen(["sleep", "300"], cwd=root / "wt/demo" / SESSION, start_new_session=True)
    try:
        started, _ = call({"op": "start", **sess(root), "argv": [PYTHON, str(tmp_path / "escaper.py"),
                                                                  str(tmp_path / "pids.json")],
                           "env": {"PATH": os.environ["PATH"]}})
        pids = json.loads(wait_until(lambda: (tmp_path / "pids.json").exists()
                                     and (tmp_path / "pids.json").read_text(), what="the escaper"))
        assert all(pid_alive(p) for p in pids.values())
        stopped, _ = call({"op": "stop", **sess(root), "grace": 0.5})
        assert stopped["left_running"] == []
        assert {started["pid"], *pids.values()} <= set(stopped["pids"])
        assert not any(pid_alive(p) for p in [started["pid"], *pids.values()])
        assert run_processes(started["exit_file"]) == []
        assert bystander.poll() is None and bystander.pid not in stopped["pids"]
        assert shell.poll() is None and shell.pid not in stopped["pids"]
        assert wait_until(lambda: (p := poll(root))["state"] in ("exited", "lost") and p)
        call({"op": "release", **sess(root), "branch": BRANCH})
    finally:
        for p in (bystander, shell):
            p.kill()
            p.wait()


def test_a_forged_runner_pid_names_no_group_to_stop(root: Path, src: Path) -> None:
    """runner.pid is in a directory the agent can write: a pid there that is not this run's
    runner (here a stand-in for the user's shell, leading its own group) is never signalled."""
    prepared(root, src)
    shell = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (root / "run/demo" / SESSION / "runner.pid").write_text(json.dumps({"pid": shell.pid, "start": None}))
        assert poll(root)["state"] == "lost"
        stopped, _ = call({"op": "stop", **sess(root), "grace": 0.5})
        assert shell.pid not in stopped["pids"] and shell.poll() is None
        call({"op": "release", **sess(root), "branch": BRANCH})   # not "still running" either
    finally:
        shell.kill()
        shell.wait()


def test_logs_by_offset(root: Path, src: Path, tmp_path: Path) -> None:
    prepared(root, src)
    assert call({"op": "logs", **sess(root), "offset": 0}) == ({"size": 0, "payload": 0}, b"")
    text = "".join(f"line {i} ✓\n" for i in range(2000)).encode()
    (tmp_path / "talk.py").write_text("import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read())\n")
    call({"op": "start", **sess(root), "argv": [PYTHON, str(tmp_path / "talk.py")],
          "env": {"PATH": os.environ["PATH"]}, "prompt": text.decode()})
    wait_until(lambda: poll(root)["state"] == "exited", what="exited")
    answer, data = call({"op": "logs", **sess(root), "offset": 0})
    assert data == text and answer["size"] == len(text)
    answer, data = call({"op": "logs", **sess(root), "offset": 100, "limit": 50})
    assert data == text[100:150] and answer["size"] == len(text)
    assert call({"op": "logs", **sess(root), "offset": len(text) + 10})[1] == b""


# ---- snapshot -----------------------------------------------------------------------------

def snapshot(root: Path, have: list[str]) -> tuple[dict[str, Any], bytes]:
    return call({"op": "snapshot", **sess(root), "branch": BRANCH, "have": have})


def fetch(local: Path, data: bytes, *refs: str) -> None:
    path = local.parent / f"snap-{os.urandom(4).hex()}.bundle"
    path.write_bytes(data)
    git("fetch", "-q", str(path), *(f"{r}:refs/para/got/{r.rsplit('/', 1)[-1]}-{i}" for i, r in enumerate(refs)),
        cwd=local)


def test_snapshot_of_a_clean_worktree_and_nothing_new(root: Path, src: Path) -> None:
    wt = prepared(root, src)
    tip = rev(src, "main")
    answer, data = snapshot(root, [])
    assert answer["head"] == answer["branch_tip"] == tip
    assert answer["checkpoint"] is None and answer["dirty"] is False and data
    answer, data = snapshot(root, [tip, "f" * 40])       # a have the cache does not know is ignored
    assert answer["payload"] == 0 and data == b""
    commit_file(wt, "new.txt", "n\n", "agent commit")
    answer, data = snapshot(root, [tip])
    fetch(src, data, f"refs/heads/{BRANCH}")
    assert rev(src, "refs/para/got/s1-0") == answer["head"] == git("rev-parse", "HEAD", cwd=wt)


def test_snapshot_checkpoints_dirty_work_without_touching_the_agents_index(root: Path, src: Path) -> None:
    wt = prepared(root, src, {".para-agent.md": "para's\n"})
    tip = rev(src, "main")
    (wt / "README.md").write_text("changed, unstaged\n")
    (wt / "staged.txt").write_text("staged\n")
    git("add", "staged.txt", cwd=wt)
    (wt / "staged.txt").write_text("staged, then changed again\n")
    (wt / "untracked dir").mkdir()
    (wt / "untracked dir/new ✓.txt").write_text("untracked\n")
    (wt / "noise.log").write_text("ignored\n")
    index = Path(git("rev-parse", "--git-path", "index", cwd=wt))
    index = index if index.is_absolute() else wt / index
    before = (index.read_bytes(), git("--no-optional-locks", "status", "--porcelain", cwd=wt),
              git("rev-parse", "HEAD", cwd=wt), (wt / "README.md").read_text())
    answer, data = snapshot(root, [tip])
    after = (index.read_bytes(), git("--no-optional-locks", "status", "--porcelain", cwd=wt),
             git("rev-parse", "HEAD", cwd=wt), (wt / "README.md").read_text())
    assert after == before
    assert answer["dirty"] is True and answer["head"] == tip and answer["checkpoint"]
    fetch(src, data, f"refs/para/checkpoint/{SESSION}")
    cp = "refs/para/got/s1-0"
    assert rev(src, cp) == answer["checkpoint"] and rev(src, f"{cp}^") == tip
    show = {p: git("show", f"{cp}:{p}", cwd=src) for p in ("README.md", "staged.txt", "untracked dir/new ✓.txt")}
    assert show == {"README.md": "changed, unstaged", "staged.txt": "staged, then changed again",
                    "untracked dir/new ✓.txt": "untracked"}
    assert git("ls-tree", "--name-only", cp, "noise.log", ".para-agent.md", cwd=src) == ""
    # the same dirty work again: the same checkpoint, nothing new for a sidecar that has it
    again, data = snapshot(root, [tip, answer["checkpoint"]])
    assert again["checkpoint"] == answer["checkpoint"] and data == b""
    (wt / "README.md").write_text("changed again\n")
    assert snapshot(root, [tip, answer["checkpoint"]])[0]["checkpoint"] != answer["checkpoint"]
    # clean again: the checkpoint ref goes
    git("reset", "-q", "--hard", cwd=wt)
    git("clean", "-qfd", cwd=wt)
    answer, _ = snapshot(root, [tip])
    assert answer["dirty"] is False and answer["checkpoint"] is None
    assert git("--git-dir", str(root / "repos/demo.git"), "for-each-ref", "refs/para/checkpoint", cwd=root) == ""


def test_snapshot_of_a_detached_head_brings_both(root: Path, src: Path) -> None:
    wt = prepared(root, src)
    on_branch = commit_file(wt, "b.txt", "b\n", "on the branch")
    git("checkout", "-q", "--detach", cwd=wt)
    detached = commit_file(wt, "d.txt", "d\n", "detached")
    answer, data = snapshot(root, [str(rev(src, "main"))])
    assert (answer["head"], answer["branch_tip"]) == (detached, on_branch)
    fetch(src, data, f"refs/heads/{BRANCH}", f"refs/para/head/{SESSION}")
    assert (rev(src, "refs/para/got/s1-0"), rev(src, f"refs/para/got/{SESSION}-1")) == (on_branch, detached)


# ---- commit, merge, release ------------------------------------------------------------------

def test_commit_only_when_dirty(root: Path, src: Path) -> None:
    wt = prepared(root, src, {".para-agent.md": "para's, never committed\n"})
    tip = rev(src, "main")
    assert call({"op": "commit", **sess(root), "message": "nothing"})[0] == {"head": tip, "committed": False}
    (wt / "work.txt").write_text("w\n")
    hooks = root / "hooks"  # (what an agent could configure in the shared cache config)
    hooks.mkdir()
    for hook in ("pre-commit", "post-commit"):  # (--no-verify skips only the first)
        (hooks / hook).write_text("#!/bin/sh\ntouch hook-ran\nexit 1\n")
        (hooks / hook).chmod(0o755)
    git("config", "core.hooksPath", str(hooks), cwd=wt)
    answer, _ = call({"op": "commit", **sess(root), "message": "agent's work; $(touch x)"})
    assert answer["committed"] is True and answer["head"] != tip
    assert git("log", "-1", "--format=%s", cwd=wt) == "agent's work; $(touch x)"
    assert git("status", "--porcelain", cwd=wt) == "" and not (wt / "hook-ran").exists()  # (para's file: ignored)
    assert git("show", "--name-only", "--format=", "HEAD", cwd=wt) == "work.txt"


@pytest.mark.parametrize(("target_text", "conflicted"), [("target line\n", ["README.md"]), (None, [])])
def test_merge_of_the_target_into_the_worktree(root: Path, src: Path, target_text: str | None,
                                               conflicted: list[str]) -> None:
    wt = prepared(root, src)
    tip = str(rev(src, "main"))
    commit_file(wt, "README.md", "agent line\n", "agent")
    (wt / ".gitignore").write_text("*.log\nbuild/\nmine/\n")  # uncommitted, untouched by the target: kept, no conflict
    target = commit_file(src, "README.md" if target_text else "other.txt", target_text or "o\n", "target")
    answer, _ = call({"op": "merge", **sess(root), "target": target}, bundle(src, "main", f"^{tip}"))
    assert answer["conflicted"] == conflicted
    assert (wt / ".gitignore").read_text().endswith("mine/\n")
    if conflicted:
        assert "<<<<<<<" in (wt / "README.md").read_text()
        assert git("diff", "--name-only", "--diff-filter=U", cwd=wt) == "README.md"
    else:
        assert git("rev-list", "--parents", "-n1", "HEAD", cwd=wt).split()[2:] == [target]
        assert answer["head"] == git("rev-parse", "HEAD", cwd=wt)


def test_release_is_idempotent(root: Path, src: Path) -> None:
    wt = prepared(root, src)
    call({"op": "receive", **base(root), "refs": {f"refs/para/base/{SESSION}": rev(src, "main")}})
    (wt / "dirty.txt").write_text("d\n")
    snapshot(root, [])
    cache = root / "repos/demo.git"
    for _ in range(2):
        assert call({"op": "release", **sess(root), "branch": BRANCH})[0] == {}
        assert not wt.exists() and not (root / "run/demo" / SESSION).exists()
        assert git("--git-dir", str(cache), "for-each-ref", "--format=%(refname)", cwd=root) == "refs/heads/main"
        assert git("--git-dir", str(cache), "worktree", "list", "--porcelain", cwd=root).count("worktree ") == 1
    call({"op": "release", **base(root / "never", session=SESSION), "branch": BRANCH})


# ---- bad input -------------------------------------------------------------------------------

def line(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode() + b"\n"


BAD: list[tuple[str, Any, str, str]] = [  # (case, request or raw bytes, code, what the error says)
    ("not JSON", b"{op: check\n", "invalid_input", "not JSON"),
    ("not an object", b"[1, 2]\n", "invalid_input", "JSON object"),
    ("unknown op", {"op": "rm -rf"}, "invalid_input", "unknown op"),
    ("repo with ..", {"op": "refs", "repo": "a..b"}, "invalid_input", "repo id"),
    ("repo with /", {"op": "refs", "repo": "a/b"}, "invalid_input", "repo id"),
    ("session with ..", {"op": "poll", "session": "../s1"}, "invalid_input", "session name"),
    ("session with /", {"op": "release", "session": "a/b", "branch": BRANCH}, "invalid_input", "session name"),
    ("relative root", {"op": "refs", "root": "relative/root"}, "invalid_input", "absolute"),
    ("file escaping", {"op": "prepare", "files": {"../escape.txt": "x"}}, "invalid_input", "inside the worktree"),
    ("absolute file", {"op": "prepare", "files": {"/tmp/abs.txt": "x"}}, "invalid_input", "inside the worktree"),
    ("file under .git", {"op": "prepare", "files": {".git/config": "x"}}, "invalid_input", "inside the worktree"),
    ("file through ..", {"op": "prepare", "files": {"a/../../x": "x"}}, "invalid_input", "inside the worktree"),
    ("file through a symlink", {"op": "prepare", "files": {"link/x.txt": "x"}}, "invalid_input", "through a symlink"),
    ("file over a directory", {"op": "prepare", "files": {"link/": "x", "sub/": "y"}}, "invalid_input", "cannot"),
    ("short payload", {"op": "receive", "refs": {}, "payload": 1000}, "invalid_input", "the request said 1000"),
    ("not a bundle", {"op": "receive", "refs": {}, "payload": 10}, "invalid_input", "not a bundle"),
    ("short merge payload", {"op": "merge", "target": "1" * 40, "payload": 1000}, "invalid_input", "the request said 1000"),
    ("bad env", {"op": "start", "argv": ["true"], "env": {"A=B": "x"}}, "invalid_input", "'env'"),
    ("argv not a list", {"op": "start", "argv": "rm -rf ~", "env": {}}, "invalid_input", "'argv'"),
    ("negative offset", {"op": "logs", "offset": -1}, "invalid_input", "negative"),
    ("bad have", {"op": "snapshot", "branch": BRANCH, "have": ["HEAD"]}, "invalid_input", "full commit id"),
    ("no such session", {"op": "snapshot", "session": "other", "branch": BRANCH}, "not_found", "not prepared"),
]


@pytest.mark.parametrize(("case", "request_", "code", "says"), BAD, ids=[c for c, _, _, _ in BAD])
def test_bad_input_changes_nothing(root: Path, src: Path, tmp_path: Path, case: str, request_: Any,
                                   code: str, says: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, src / "link")
    git("add", "link", cwd=src)
    git("commit", "-qm", "a symlink to outside", cwd=src)
    prepared(root, src)
    before = state(root)
    if isinstance(request_, bytes):
        raw = request_
    else:
        full = {**sess(root), "branch": "para/new", "commit": rev(src, "main"), **request_}
        full["session"] = request_.get("session", "new" if request_["op"] == "prepare" else SESSION)
        raw = line(full) + b"x" * 10  # a payload shorter than said where one is said
    answer, _ = call(raw=raw, code=code)
    assert says in answer["error"], answer
    assert state(root) == before
    assert list(outside.iterdir()) == []


def test_a_bad_first_receive_leaves_no_root_behind(tmp_path: Path, src: Path) -> None:
    fresh = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp")) / "new-root"
    try:
        for payload, says in ((b"x" * 10, "ended after 10 bytes"), (b"not a bundle", "not a bundle")):
            answer, _ = call(raw=line({"op": "receive", **base(fresh), "refs": {}, "payload": 1000 if says.startswith(
                "ended") else len(payload)}) + payload, code="invalid_input")
            assert says in answer["error"] and not fresh.exists()
    finally:
        shutil.rmtree(fresh.parent)


def test_a_root_under_home(root: Path, src: Path) -> None:
    """The executor's `root` may start with `~`: the worker's own home, wherever that is."""
    tip = str(rev(src, "main"))
    out = subprocess.run([PYTHON, "-m", "para_rpc.worker"], capture_output=True, timeout=120,
                         env={**os.environ, "HOME": str(root)},
                         input=line({"op": "receive", "root": "~/para", "repo": "demo", "refs": {"refs/heads/main": tip},
                                     "payload": len(data := bundle(src, "main"))}) + data)
    assert json.loads(out.stdout) == {"refs": {"refs/heads/main": tip}}
    assert (root / "para/repos/demo.git").is_dir() and (root / "para").stat().st_mode & 0o777 == 0o700


def test_a_root_that_makes_the_socket_path_too_long_is_refused(tmp_path: Path, src: Path) -> None:
    long_root = Path("/tmp") / ("r" * 80)
    answer, _ = call({"op": "prepare", "root": str(long_root), "repo": "demo", "session": SESSION,
                      "branch": BRANCH, "commit": rev(src, "main")}, code="invalid_input")
    assert "100-byte" in answer["error"] and "shorter" in answer["error"]
    assert not long_root.exists()
