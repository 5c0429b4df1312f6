"""A compromised or buggy host (issue 16, red team RT16): its worker's answers are input, like a
request is to the worker. The real CLI and sidecar and a real sshd on loopback; the executor's
`python` is a wrapper (tests/ssh_util.py's host, this machine) that runs the real worker and
rewrites its snapshot answer with what the test leaves in a file. What such a host may name must
never move the local branches: a harvest of an answer that is not a commit sha fails with a
clear error and changes nothing here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from agents_util import api, agent_env, agent_scripts, dispatch, out, step_profile, wait_file  # noqa: F401
from conftest import commit_file, full_state, git, rev, run_para, wait_until
from ssh_util import SshHost, ssh_host  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("sidecar")

# The worker's answer goes through this; everything else the host runs with this python is the
# real one (the agent's own python, the scripted profile).
WRAPPER = """#!{python}
import json, os, subprocess, sys
REAL, LIE = {python!r}, {lie!r}
if sys.argv[1:] != ["-m", "para_rpc.worker"]:
    os.execv(REAL, [REAL, *sys.argv[1:]])
data = sys.stdin.buffer.read()
got = subprocess.run([REAL, "-m", "para_rpc.worker"], input=data, capture_output=True)
line, _, rest = got.stdout.partition(b"\\n")
answer = json.loads(line)
lie = json.loads(open(LIE).read()) if os.path.exists(LIE) else {{}}
if json.loads(data.partition(b"\\n")[0]).get("op") == lie.pop("op", "snapshot"):
    pad = lie.pop("pad", None)
    answer.update(lie)
    if pad is not None:  # (a payload of `pad` bytes instead of the worker's)
        rest, answer["payload"] = b"x" * pad, pad
sys.stdout.buffer.write(json.dumps(answer).encode() + b"\\n" + rest)
sys.exit(got.returncode)
"""


def hostile_python(tmp_path: Path) -> tuple[Path, Path]:
    lie = tmp_path / "lie.json"
    wrapper = tmp_path / "bin" / "hostile-python"
    wrapper.parent.mkdir()
    wrapper.write_text(WRAPPER.format(python=sys.executable, lie=str(lie)))
    wrapper.chmod(0o755)
    return wrapper, lie


@pytest.mark.parametrize("lie", [
    {"branch_tip": "refs/heads/main"},           # a ref of this repository, not a commit of the host
    {"checkpoint": "refs/heads/main"},
    {"checkpoint": "{main}"},                    # a commit this repository has, not made on the host's head
    {"branch_tip": "-d"},                        # an option to the git that takes it
    {"branch_tip": 12},
    {"payload": -40},                            # RT16-9: a negative size (read as "all but the last 40")
], ids=["tip-main-ref", "checkpoint-main-ref", "checkpoint-not-on-head", "tip-option", "tip-int", "payload-negative"])
def test_a_snapshot_answer_naming_no_commit_moves_nothing(api, repo: Path, out: Path, tmp_path: Path,
                                                          ssh_host: SshHost, lie: dict) -> None:
    """RT16-1: the snapshot's branch_tip/checkpoint went to `git update-ref` and into the session
    unchecked: a host answering `refs/heads/main` fast-forwarded the session's branch to local main
    (and stored a ref name as its harvested commit, which the next snapshot request then failed on)."""
    wrapper, lie_file = hostile_python(tmp_path)
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"executors": {"h1": ssh_host.entry(python=str(wrapper))}}))
    prof = step_profile("write:a.txt=one\n", "commit:one", f"touch:{out}/ready", f"wait:{out}/never")
    dispatch(repo, "hs", "-p", "work", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    api.wait_event("harvested", "hs", timeout=60)  # (at its exit-less start: nothing yet, or its commit)
    commit_file(repo, "main.txt", "main moved on\n", "main moves ahead")  # (main now descends from the base)
    main, branch = rev(repo, "main"), rev(repo, "para/hs")
    lie_file.write_text(json.dumps(lie).replace("{main}", main or ""))
    proc = run_para("integrate", "--session", "hs", "--json", cwd=repo, check=False)
    assert proc.returncode != 0, proc.stdout
    err = json.loads(proc.stdout)["error"]["message"]
    assert "h1" in err and "snapshot" in err, err
    assert rev(repo, "main") == main
    assert rev(repo, "para/hs") in (branch, rev(repo, "refs/para/remote/hs"))
    assert rev(repo, "para/hs") != main
    assert git("for-each-ref", "--format=%(refname)", "--points-at", main, cwd=repo).split() == ["refs/heads/main"]
    show = api.call("para/show", session="hs")
    assert show["status"] == "active"
    # The host answers truthfully again: the next harvest works (no ref name kept as a commit).
    lie_file.unlink()
    run_para("cancel", "hs", "--json", cwd=repo)
    assert "refs/heads/para/hs" not in git("for-each-ref", "--format=%(refname)", "refs/heads/", cwd=repo).split()


@pytest.mark.parametrize("pad", [8 << 20, 80 << 20], ids=["over-the-limit", "over-any-answer's-cap"])
def test_a_log_answer_longer_than_asked_is_refused(api, repo: Path, out: Path, tmp_path: Path,
                                                   ssh_host: SshHost, runtime_dir: Path, pad: int) -> None:
    """RT16-5: the log pull asks the host for at most 1 MiB, but appended whatever came (and read
    any answer whole into memory): a host answering 8 MiB per pull grew `para logs`' file by as
    much on every harvest. Now a log answer past the limit is refused (harvests go on)."""
    wrapper, lie_file = hostile_python(tmp_path)
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps(
        {"executors": {"h1": ssh_host.entry(python=str(wrapper), harvest_interval=1)}}))
    prof = step_profile("print:hello from the host", f"touch:{out}/ready", f"wait:{out}/never")
    dispatch(repo, "hl", "-p", "work", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    log = repo / ".para" / "logs" / "hl.log"
    wait_until(lambda: log.exists() and b"hello from the host" in log.read_bytes(), 60, "the log to come home")
    lie_file.write_text(json.dumps({"op": "logs", "pad": pad}))
    seen = len([e for e in api.events() if e["kind"] == "harvested" and e.get("session") == "hl"])
    wait_until(lambda: len([e for e in api.events() if e["kind"] == "harvested" and e.get("session") == "hl"])
               >= seen + 2, 60, "two more harvests")
    assert log.stat().st_size < 1 << 20, log.stat().st_size
    # (the one past every answer's cap is not even read whole)
    why = "at most 1048576 asked" if pad < 64 << 20 else f"longer than {64 << 20} bytes"
    assert why in (runtime_dir / "sidecar.sock.log").read_text()
    run_para("cancel", "hl", "--json", cwd=repo)


def test_a_start_the_host_refuses_leaves_nothing_there_or_here(api, repo: Path, out: Path, tmp_path: Path,
                                                               ssh_host: SshHost) -> None:
    """RT16-6: a dispatch whose start failed on the host (after its prepare made the worktree
    and branch there) undid the session here but left the host's worktree, branch and run dir:
    a later session of that name found them (RT16-3 refuses that now, which made the leak a
    failed dispatch). The placement is released when the dispatch fails after prepare."""
    wrapper, lie_file = hostile_python(tmp_path)
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"executors": {"h1": ssh_host.entry(python=str(wrapper))}}))
    lie_file.write_text(json.dumps({"op": "start", "error": "the host refuses to start it", "code": "config_error"}))
    before = full_state(repo)
    prof = step_profile(f"touch:{out}/started")
    got, proc = dispatch(repo, "sf", "-p", "work", "--agent", "w", "--executor", "h1", profiles={"w": prof},
                         check=False)
    assert proc.returncode != 0 and "the host refuses to start it" in proc.stdout, proc.stdout
    assert full_state(repo) == before
    worker = ssh_host.dir / "worker"
    assert not list((worker / "wt").glob("*/sf")) and not list((worker / "run").glob("*/sf"))
    caches = list((worker / "repos").glob("*.git"))
    assert caches and all("para/sf" not in git("for-each-ref", "--format=%(refname)", cwd=c) for c in caches)
    # The same name again, main moved on meanwhile: dispatched (nothing of the first in the way).
    lie_file.unlink()
    commit_file(repo, "new.txt", "new\n", "main moves on")
    dispatch(repo, "sf", "-p", "work", "--agent", "w", "--executor", "h1", profiles={"w": prof})
    wait_file(out / "started", timeout=60)
