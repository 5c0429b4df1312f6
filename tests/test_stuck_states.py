"""No stuck states (R3-5, issue 17.4, issue 9.13), and crash repair of the new save steps.

- A finish or cancel that fails before the worktree is removed (a rejecting pre-commit
  hook, a reference-transaction hook protecting the branch, something git cannot stage)
  returns its error and leaves the session as it was: no `<op>-pending`. The pending
  marker is for crashes only.
- A session stuck with an unfinished operation (a crash whose repair keeps failing) has
  a way out: `para cancel --force` saves the branch tip and cancels it; the refusal of
  every other command says so, and `para sidecar restart` retries the repair as it says.
- `kill -9` right after a new save step (a nested repository's backup, a saved HEAD) and
  before the worktree is removed: the repair neither loses nor saves twice.
- `para cancel` of a session that an integration landed meanwhile says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PARA_ARGV, branches, cli_env, commit_file, git, rev, wait_until, worktree_paths
from para_rpc.errors import Code
from safety_util import assert_error, nested_repo, refs, sessions, show, wt
from test_crash import crash_at, ref_update

pytestmark = pytest.mark.usefixtures("sidecar")


def hooks_dir(repo: Path, tmp: Path, **hooks: str) -> Path:
    """`core.hooksPath` set to a directory holding the given hooks (name -> shell body)."""
    d = tmp / "hooks"
    d.mkdir(exist_ok=True)
    for name, body in hooks.items():
        path = d / name.replace("_", "-")
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
    git("config", "core.hooksPath", str(d), cwd=repo)
    return d


def no_pending(repo: Path, name: str, status: str = "active") -> dict:
    s = sessions(repo)[name]
    assert (s["status"], s["pending_op"]) == (status, None), s
    assert not s["state"].endswith("-pending"), s
    return s


# ---- refusals leave the session as it was (R3-5) -------------------------------------------

def test_a_finish_refused_by_a_pre_commit_hook_is_not_stuck(para, repo, tmp_path):
    """R3-5 (a): the session used to stay finish-pending for good."""
    hooks_dir(repo, tmp_path, pre_commit='echo "commits are refused by policy" >&2; exit 1')
    para("start", "h3")
    path = wt(repo, "h3")
    (path / "work.txt").write_text("uncommitted\n")
    tip = rev(repo, "para/h3")
    assert_error(para("finish", "m", "--session", "h3", check=False), Code.git_failed, "refused by policy")
    assert no_pending(repo, "h3")["state"] == "dirty"
    assert rev(repo, "para/h3") == tip and (path / "work.txt").read_text() == "uncommitted\n"
    # Once the hook lets it through, the same finish completes.
    git("config", "--unset", "core.hooksPath", cwd=repo)
    para("finish", "m", "--session", "h3")
    assert no_pending(repo, "h3", "review") and show(repo, "para/h3:work.txt") == "uncommitted\n"


def test_a_squash_refused_half_way_puts_the_branch_back(para, repo, tmp_path):
    """The squash moves the branch back to its fork point before committing again: a
    refusal there used to leave the work only in the index, with finish pending."""
    para("start", "sq")
    path = wt(repo, "sq")
    commit_file(path, "one.txt", "1\n", "one")
    commit_file(path, "two.txt", "2\n", "two")
    (path / "three.txt").write_text("3\n")
    counter = tmp_path / "commits-allowed"
    counter.write_text("")
    # Lets the first commit through (the uncommitted work), refuses the squash commit.
    hooks_dir(repo, tmp_path, pre_commit=f'[ -s "{counter}" ] && {{ echo "no more commits" >&2; exit 1; }}\n'
                                         f'echo used > "{counter}"')
    assert_error(para("finish", "All of it", "--session", "sq", check=False), Code.git_failed, "no more commits")
    no_pending(repo, "sq")
    assert git("log", "--format=%s", "main..para/sq", cwd=repo).splitlines() == ["All of it", "two", "one"]
    assert git("status", "--porcelain", cwd=path) == ""


def test_a_cancel_refused_by_a_protected_branch_hook_is_not_stuck(para, para_json, repo, tmp_path):
    """A reference-transaction hook that refuses updates of the session branch makes the
    work-in-progress commit fail: the error comes back, the session stays active."""
    para("start", "pb")
    path = wt(repo, "pb")
    hooks_dir(repo, tmp_path, reference_transaction=(
        '[ "$1" = prepared ] || exit 0\n'
        'grep -q " refs/heads/para/pb$" && { echo "para/pb is protected" >&2; exit 1; }\nexit 0'))
    (path / "work.txt").write_text("work\n")
    assert_error(para("cancel", "pb", check=False), Code.git_failed, "protected")
    no_pending(repo, "pb")
    assert (path / "work.txt").read_text() == "work\n" and str(path) in worktree_paths(repo)
    git("config", "--unset", "core.hooksPath", cwd=repo)
    assert show(repo, para_json("cancel", "pb")["archived_branch"] + ":work.txt") == "work\n"


@pytest.mark.parametrize("blocker", ["refs/heads/para/archived", "logs/refs/heads/para/archived"])
def test_a_ref_in_the_way_of_the_archive_makes_cancel_archive_under_another_name(para, para_json, repo, blocker):
    """refs are paths: a branch `para/archived` (anyone, or an agent, can make one) keeps every
    `para/archived/<stamp>/<name>` from existing. Cancel archives under `para/archived-<stamp>/`
    and says so in a note, instead of failing half done (red team RA8) or refusing every cancel
    until someone deletes the ref (rt13 RA8). So does a file where the reflog's directory goes
    (a sandboxed agent can write `logs/refs/heads/para/`): `branch -m` moves the reflog too,
    and failed there after the worktree went, the cancel stuck half done (red team rt1 F2)."""
    para("start", "rb")
    (wt(repo, "rb") / "work.txt").write_text("work\n")
    if blocker.startswith("refs/"):
        git("branch", "para/archived", "main", cwd=repo)
    else:
        (repo / ".git" / blocker).parent.mkdir(parents=True, exist_ok=True)
        (repo / ".git" / blocker).write_text("not a directory\n")
    out = para_json("cancel", "rb")
    archived = out["archived_branch"]
    assert archived.startswith("para/archived-"), out
    assert any(f"{blocker} is in the way" in n for n in out["notes"]), out
    no_pending(repo, "rb", "cancelled")
    assert show(repo, archived + ":work.txt") == "work\n"
    recovered = para_json("recover", "rb")
    assert (wt(repo, "rb") / "work.txt").read_text() == "work\n", recovered


def test_cancel_in_a_sparse_checkout_never_sticks(para, repo):
    """R3-5 (c): an untracked file outside the sparse cone made `git add -A` fail and the
    session stuck in cancel-pending. Now it is either saved, or the cancel is refused with
    the session as it was; never pending."""
    for d in ("dir1", "dir2"):
        commit_file(repo, f"{d}/f.txt", f"{d}\n", f"add {d}")
    git("sparse-checkout", "set", "dir1", cwd=repo)
    para("start", "sp2")
    path = wt(repo, "sp2")
    (path / "dir2").mkdir(exist_ok=True)
    (path / "dir2" / "new.txt").write_text("outside the cone\n")
    proc = para("cancel", "sp2", "--json", check=False)
    if proc.returncode == 0:
        archive = json.loads(proc.stdout)["archived_branch"]
        assert show(repo, f"{archive}:dir2/new.txt") == "outside the cone\n"
        no_pending(repo, "sp2", "cancelled")
    else:
        assert proc.returncode == Code.git_failed.exit, proc.stdout
        no_pending(repo, "sp2")
        assert (path / "dir2" / "new.txt").read_text() == "outside the cone\n"


# ---- a way out of a stuck pending operation ------------------------------------------------

@pytest.fixture
def stuck_finish(sidecar, para, para_json, repo, tmp_path) -> Path:
    """Session x stuck in finish-pending: the sidecar is killed while finish squashes (the
    branch is back at its fork point, the work only in the index), and a pre-commit hook
    installed meanwhile makes every repair of it fail."""
    para("start", "x")
    path = wt(repo, "x")
    commit_file(path, "one.txt", "1\n", "one")
    commit_file(path, "two.txt", "2\n", "two")
    (path / "three.txt").write_text("3\n")
    base = rev(repo, "main")
    crash_at(ref_update(repo, tmp_path, f"^[0-9a-f]{{40}} {base} refs/heads/para/x$"),
             sidecar, repo, "finish", "All of it", "--session", "x")
    hooks_dir(repo, tmp_path, pre_commit='echo "commits are refused by policy" >&2; exit 1')
    s = sessions(repo)["x"]  # (the new sidecar tried to repair it)
    assert (s["state"], s["pending_op"]) == ("finish-pending", "finish")
    assert any("could not repair interrupted finish" in n and "refused by policy" in n for n in s["notes"])
    return path


def test_a_stuck_session_is_refused_with_the_way_out(para, repo, stuck_finish):
    for verb in (["finish", "m", "--session", "x"], ["cancel", "x"], ["integrate", "--session", "x"]):
        assert_error(para(*verb, check=False), Code.wrong_state, "unfinished finish", "refused by policy",
                     "para sidecar restart", "para cancel --force x")


def test_cancel_force_gets_a_session_out_of_a_stuck_finish(para, para_json, repo, stuck_finish):
    result = para_json("cancel", "x", "--force")
    assert result["status"] == "cancelled" and result["pending_op"] is None
    archive = result["archived_branch"]
    for f, content in (("one.txt", "1\n"), ("two.txt", "2\n"), ("three.txt", "3\n")):
        assert show(repo, f"{archive}:{f}") == content
    assert [r for r in refs(repo, "refs/para/backup/x/") if r.endswith("-forced")]
    assert any("dropped by `para cancel --force`" in n for n in result["notes"])
    assert not stuck_finish.exists() and "para/x" not in branches(repo)
    para("recover", "x")
    assert (stuck_finish / "three.txt").read_text() == "3\n"


def test_sidecar_restart_retries_the_repair_once_the_cause_is_fixed(para, repo, stuck_finish):
    """What the refusal says is true: fix the hook, restart, and the finish completes."""
    git("config", "--unset", "core.hooksPath", cwd=repo)
    para("sidecar", "restart")
    s = no_pending(repo, "x", "review")
    assert s["state"] == "review" and git("log", "-1", "--format=%s", "para/x", cwd=repo) == "All of it"
    for f in ("one.txt", "two.txt", "three.txt"):
        assert show(repo, f"para/x:{f}") is not None


# ---- kill -9 after a new save step, before the worktree is removed ---------------------------

def test_kill_after_cancel_saved_a_nested_repository(sidecar, para, repo, tmp_path):
    para("start", "n1")
    path = wt(repo, "n1")
    inner = nested_repo(path, "inner")
    inner_head = rev(inner, "HEAD")
    (inner / "u.txt").write_text("u\n")
    (path / "top.txt").write_text("top\n")
    crash_at(ref_update(repo, tmp_path, r" refs/para/backup/n1/[0-9-]+/sub/inner/"), sidecar, repo, "cancel", "n1")
    s = sessions(repo)["n1"]  # the repair ran the cancel again
    assert (s["status"], s["pending_op"]) == ("cancelled", None)
    saved = refs(repo, "refs/para/backup/n1/")
    assert sorted(r.rsplit("/sub/inner/", 1)[1] for r in saved) == ["HEAD", "heads/master", "wip"]  # one set
    (stamp,) = {r.split("/")[4] for r in saved}
    assert s["archived_branch"] == f"para/archived/{stamp}/n1"  # named from the cancel's journal, not the clock
    assert saved[f"refs/para/backup/n1/{stamp}/sub/inner/HEAD"] == inner_head
    assert show(repo, f"refs/para/backup/n1/{stamp}/sub/inner/wip:u.txt") == "u\n"
    assert show(repo, f"{s['archived_branch']}:top.txt") == "top\n"
    assert not path.exists()


def test_kill_after_cancel_force_saved_the_head(sidecar, para, repo, tmp_path):
    para("start", "dh")
    path = wt(repo, "dh")
    git("checkout", "-q", "--detach", cwd=path)
    detached = commit_file(path, "d.txt", "d\n", "on a detached HEAD")
    crash_at(ref_update(repo, tmp_path, r" refs/para/backup/dh/[0-9-]+-head$"), sidecar, repo,
             "cancel", "dh", "--force")
    s = sessions(repo)["dh"]
    assert (s["status"], s["pending_op"]) == ("cancelled", None)
    saved = refs(repo, "refs/para/backup/dh/")
    assert list(saved.values()) == [detached] and len(saved) == 1
    assert not path.exists()


# ---- cancel while the same session integrates (issue 9.13) -----------------------------------

CHECK = """\
import pathlib, sys, time
ctl = pathlib.Path(sys.argv[1])
(ctl / "blocked").write_text("")
deadline = time.monotonic() + 120
while not (ctl / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
"""


def test_cancel_waiting_on_an_integration_says_it_was_integrated(sidecar, rpc, para, repo, tmp_path):
    """Cancel waits for the session's lock while the integration runs; it used to answer
    "no session named …" afterwards."""
    para("start", "ci")
    commit_file(wt(repo, "ci"), "ci.txt", "ci\n", "ci work")
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    (tmp_path / "check.py").write_text(CHECK)
    env = cli_env({"PARA_INTEGRATE_CHECK": f"{sys.executable} {tmp_path / 'check.py'} {ctl}"})
    integrating = subprocess.Popen([*PARA_ARGV, "integrate", "--session", "ci"], cwd=repo, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (ctl / "blocked").exists() or integrating.poll() is not None, what="the check to run")
        assert (ctl / "blocked").exists(), integrating.communicate()
        rpc.send({"jsonrpc": "2.0", "id": 9001, "method": "para/cancel", "params": {"cwd": str(repo), "session": "ci"}})
        rpc.send({"jsonrpc": "2.0", "id": 9002, "method": "para/hello", "params": {}})
        order = []
        while 9002 not in order:
            order.append(rpc.read().get("id"))
        assert 9001 not in order  # the cancel is waiting for the integration
        (ctl / "release").touch()
        answer = next(m for m in iter(rpc.read, None) if m.get("id") == 9001)
        assert integrating.wait(timeout=60) == 0, integrating.communicate()
    finally:
        (ctl / "release").touch()
        if integrating.poll() is None:
            integrating.kill()
            integrating.wait()
    assert answer["error"]["data"]["code"] == "wrong_state", answer
    assert "was integrated into main" in answer["error"]["message"]
    assert sessions(repo)["ci"]["status"] == "integrated" and show(repo, "main:ci.txt") == "ci\n"
    # And from the CLI once the integration is over.
    assert_error(para("cancel", "ci", check=False), Code.wrong_state, "'ci' was integrated into main at")


def test_cancel_prints_the_archived_branch_not_the_old_one(para, repo):
    para("start", "gone")
    out = para("cancel", "gone").stdout
    archive = sessions(repo)["gone"]["archived_branch"]
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in out.splitlines()[1:] if line.strip()}
    assert rows["branch"] == archive
    assert "para/gone" not in out.replace(archive, "")


def test_an_archive_name_taken_this_second_gets_the_next_suffix(para_json, repo):
    """Two cancels of one name within a second, or an archive branch made by hand: the cancel
    archives under `<stamp>-2` (then -3 ...), leaving the existing archive as it was."""
    import time as _time
    para_json("start", "twice")
    (wt(repo, "twice") / "work.txt").write_text("work\n")
    now = _time.time()
    taken = {_time.strftime("%Y%m%d-%H%M%S", _time.gmtime(now + d)) for d in range(-1, 30)}
    for stamp in taken:  # (whichever second the cancel reads, its first choice is taken)
        git("branch", f"para/archived/{stamp}/twice", "main", cwd=repo)
    before = rev(repo, "main")
    archived = para_json("cancel", "twice")["archived_branch"]
    stamp = archived.split("/")[2]
    assert stamp.endswith("-2") and stamp[:-2] in taken, archived
    assert show(repo, archived + ":work.txt") == "work\n"
    assert all(rev(repo, f"para/archived/{s}/twice") == before for s in taken)
