"""What a sandboxed agent can do through its session object directory to the repository's own
history and to para's git, through the real CLI, sidecar and bubblewrap (red team rt13 O1, G1, A1).

O1: the common store listed the session directory as an alternate, so the user's own `git
commit` in the main checkout found objects there (planted by the agent) and did not write them,
and `git gc` dropped the common store's copies: once the agent deleted them, `main` was broken.
G1: a commit-graph in that directory rewrote `main`'s history for `git log`. Now only para's own
git sees the directory (through its environment, its objects and nothing else of it), and an
integration copies every object its target needs into the common store, verified.
A1: para rewrote the directory's `info/alternates` through whatever stood there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path
from typing import Any

from agents_util import Api, agent_env, agent_scripts, api  # noqa: F401  (fixtures)
from conftest import commit_file, git, rev, run_para
from test_sandbox_git import (  # noqa: F401
    _bwrap_installed,
    _dispatch,
    _fsck_clean,
    _profile,
    _wait_log,
)

# In the sandbox: put main's whole history into a pack of the session's own directory and the
# empty blob loose there, then delete them once the host has committed and collected garbage.
PLANT_THEN_DELETE = r"""
obj=$(git rev-parse --git-path objects)
git rev-list --objects --all | git pack-objects -q "$obj/pack/pack" >/dev/null
printf '' | git hash-object -w --stdin >/dev/null
echo "PLANTED"
while [ ! -e GO ]; do sleep 0.1; done
rm -f "$obj"/pack/pack-* "$obj"/e6/* "$obj"/??/* 2>/dev/null
echo "DELETED"
exec sleep 600
"""


def test_objects_the_agent_planted_and_deleted_never_break_main(api: Api, repo: Path, sidecar: Any) -> None:
    s = _dispatch(repo, "o1", _profile(PLANT_THEN_DELETE))
    _wait_log(repo, "o1", "PLANTED")
    commit_file(repo, "__init__.py", "", "an empty file on main")  # the empty blob the agent holds
    git("gc", "-q", cwd=repo)
    Path(s["worktree"], "GO").touch()
    _wait_log(repo, "o1", "DELETED")
    assert len(git("log", "--format=%H", "main", cwd=repo).splitlines()) == 3
    assert git("show", "main:__init__.py", cwd=repo) == ""
    _fsck_clean(repo)
    alternates = repo / ".git" / "objects" / "info" / "alternates"
    assert "para-objects" not in (alternates.read_text() if alternates.exists() else "")
    run_para("list", cwd=repo)
    run_para("cancel", "o1", "--force", cwd=repo)
    _fsck_clean(repo)


# In the sandbox: commit, then wait (the test forges a commit-graph into the directory).
COMMIT_AND_WAIT = r"""
echo kept > kept.txt && git add kept.txt && git commit -q -m "kept by the agent" && echo "COMMIT ok"
exec sleep 600
"""


def _forged_graph(commit: str, tree: str) -> bytes:
    """A commit-graph that says `commit` has no parents and the tree `tree` (forge.py, rt13)."""
    oid = bytes.fromhex(commit)
    fan = b"".join(struct.pack(">I", 1 if i >= oid[0] else 0) for i in range(256))
    when = 1796300000
    cdat = (bytes.fromhex(tree) + struct.pack(">II", 0x70000000, 0x70000000)
            + struct.pack(">II", (1 << 2) | (when >> 32), when & 0xffffffff))
    chunks = [(0x4f494446, fan), (0x4f49444c, oid), (0x43444154, cdat)]
    head = b"CGPH" + bytes([1, 1, len(chunks), 0])
    off = len(head) + 12 * (len(chunks) + 1)
    table = b""
    for cid, data in chunks:
        table += struct.pack(">IQ", cid, off)
        off += len(data)
    table += struct.pack(">IQ", 0, off)
    body = head + table + b"".join(d for _, d in chunks)
    return body + hashlib.sha1(body).digest()


def test_a_commit_graph_in_the_session_objects_changes_no_history(api: Api, repo: Path, sidecar: Any) -> None:
    """(Its `info/` is read-only in the sandbox; the graph stands for anything else that lies
    there: neither the user's git nor para's may believe it.)"""
    _dispatch(repo, "g1", _profile(COMMIT_AND_WAIT))
    _wait_log(repo, "g1", "COMMIT ok")
    objects = repo / ".git" / "para-objects" / "g1"
    main = rev(repo, "main")
    before = git("log", "--format=%H %T", "main", cwd=repo)
    scratch = repo.parent / "scratch"
    git("init", "-q", str(scratch), cwd=repo.parent)
    (scratch / "PWNED.txt").write_text("main's history was replaced\n")
    git("add", "PWNED.txt", cwd=scratch)
    tree = git("write-tree", cwd=scratch)
    for sha in (tree, git("rev-parse", ":PWNED.txt", cwd=scratch)):
        (objects / sha[:2]).mkdir(exist_ok=True)
        shutil.copy(scratch / ".git" / "objects" / sha[:2] / sha[2:], objects / sha[:2] / sha[2:])
    (objects / "info" / "commit-graph").write_bytes(_forged_graph(main, tree))
    assert git("log", "--format=%H %T", "main", cwd=repo) == before
    assert git("status", "--porcelain", cwd=repo) == ""
    shown = json.loads(run_para("show", "g1", "--json", cwd=repo).stdout)
    assert [c["subject"] for c in shown["commits"]] == ["kept by the agent"], shown["commits"]
    commit_file(repo, "other.txt", "other\n", "main moves on")
    res = run_para("integrate", "--session", "g1", "--json", cwd=repo)
    assert res.returncode == 0, res.stdout + res.stderr
    assert git("show", "main:kept.txt", cwd=repo) == "kept"
    assert git("show", "main:other.txt", cwd=repo) == "other"
    _fsck_clean(repo)


# In the sandbox: wait; the test leaves a symlink where para writes the directory's alternates.
WAIT = r"""
echo "STARTED"
exec sleep 600
"""


def test_a_symlinked_alternates_file_never_makes_para_write_through_it(api: Api, repo: Path, sidecar: Any,
                                                                      tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    _dispatch(repo, "a1", _profile(WAIT))
    _wait_log(repo, "a1", "STARTED")
    info = repo / ".git" / "para-objects" / "a1" / "info"
    (info / "alternates").unlink()
    (info / "alternates").symlink_to(victim)
    run_para("restart", "--stop", "a1", cwd=repo, env=_profile(WAIT))
    assert victim.read_text() == "precious\n"
    assert not (info / "alternates").is_symlink() and (info / "alternates").read_text() == "shared\n"
    run_para("cancel", "a1", "--force", cwd=repo)
    _fsck_clean(repo)


# In the sandbox: a session branch naming an object that does not exist, and a symbolic one.
BAD_REF = r"""
common=$(git rev-parse --git-common-dir)
echo 1234567890123456789012345678901234567890 > "$common/refs/heads/para/zzz"
echo "ref: refs/heads/para/zzz2" > "$common/refs/heads/para/zzz2"
echo "WRITTEN"
exec sleep 600
"""


def test_a_ref_to_a_missing_object_breaks_no_other_session(api: Api, repo: Path, sidecar: Any) -> None:
    run_para("start", "other", cwd=repo)
    _dispatch(repo, "b1", _profile(BAD_REF))
    _wait_log(repo, "b1", "WRITTEN")
    listed = json.loads(run_para("list", "--json", cwd=repo).stdout)
    assert {s["name"] for s in listed["sessions"]} >= {"other", "b1"}, listed
    assert json.loads(run_para("show", "other", "--json", cwd=repo).stdout)["name"] == "other"
    run_para("cancel", "other", cwd=repo)
    run_para("cancel", "b1", "--force", cwd=repo)


# In the sandbox: commit, then make the branch's and the worktree's reflogs links to host files
# ($1, $2: paths on the host, out of the sandbox's sight).
REFLOG_LINKS = r"""
common=$(git rev-parse --git-common-dir); gd=$(git rev-parse --git-dir)
echo work > w.txt && git add w.txt && git commit -qm "agent work"
rm -f "$common/logs/refs/heads/para/$PARA_SESSION" && ln -s "$1" "$common/logs/refs/heads/para/$PARA_SESSION"
rm -f "$gd/logs/HEAD" && ln -s "$2" "$gd/logs/HEAD"
echo dirty >> w.txt
echo "LINKED"
exec sleep 600
"""


def test_reflogs_linked_to_host_files_are_not_written_through(api: Api, repo: Path, sidecar: Any,
                                                             tmp_path: Path) -> None:
    victims = [tmp_path / "victim-reflog", tmp_path / "victim-headlog"]
    for v in victims:
        v.write_text("original\n")
    _dispatch(repo, "l1", _profile(REFLOG_LINKS, *map(str, victims)))
    _wait_log(repo, "l1", "LINKED")
    archived = json.loads(run_para("cancel", "l1", "--json", cwd=repo).stdout)["archived_branch"]
    assert [v.read_text() for v in victims] == ["original\n"] * 2
    assert git("show", f"{archived}:w.txt", cwd=repo) == "work\ndirty"
    _fsck_clean(repo)


# In the sandbox: a rebase integration stops on a conflict; the agent resolves it, plants an
# `exec` line in the todo list (in its writable git dir) and asks para to continue. $1: a host path.
REBASE_EXEC = r"""
echo "agent side" > f1 && git commit -qam "agent edits f1"
echo "second" > g && git add g && git commit -qm "agent adds g"
echo "COMMITTED"
while [ ! -e GO ]; do sleep 0.1; done
para integrate --strategy rebase; echo "integrate rc=$?"
todo=$(git rev-parse --git-path rebase-merge)/git-rebase-todo
echo resolved > f1 && git add f1
{ echo "exec touch $1"; cat "$todo"; } > "$todo.new" && cat "$todo.new" > "$todo"
para continue; echo "continue rc=$?"
exec sleep 600
"""


def test_a_command_planted_in_a_rebase_todo_never_runs(api: Api, repo: Path, sidecar: Any, tmp_path: Path) -> None:
    commit_file(repo, "f1", "base\n", "f1")
    marker = tmp_path / "PWNED-rebase-exec"
    s = _dispatch(repo, "r1", _profile(REBASE_EXEC, str(marker)))
    _wait_log(repo, "r1", "COMMITTED")
    main = commit_file(repo, "f1", "main side\n", "main edits f1")
    Path(s["worktree"], "GO").touch()
    log = _wait_log(repo, "r1", "continue rc=")
    assert "integrate rc=" in log and "continue rc=0" not in log, log
    assert "did not write" in log, log
    assert not marker.exists()
    assert rev(repo, "main") == main
    run_para("abort", "r1", cwd=repo)
    run_para("cancel", "r1", "--force", cwd=repo)
    assert not marker.exists()
    _fsck_clean(repo)


# In the sandbox: a branch named where every archive branch goes under.
ARCHIVE_BLOCKER = r"""
git update-ref refs/heads/para/archived HEAD && echo "BLOCKED"
exec sleep 600
"""


def test_a_ref_in_the_way_of_archives_does_not_block_cancels(api: Api, repo: Path, sidecar: Any) -> None:
    run_para("start", "other", cwd=repo)
    commit_file(repo / ".para" / "worktrees" / "other", "o.txt", "o\n", "other's work")
    _dispatch(repo, "ra8", _profile(ARCHIVE_BLOCKER))
    _wait_log(repo, "ra8", "BLOCKED")
    for name in ("ra8", "other"):
        out = json.loads(run_para("cancel", name, "--json", cwd=repo).stdout)
        assert out["archived_branch"].startswith("para/archived-"), out
        assert any("in the way" in n for n in out["notes"]), out
    assert git("show", f"{out['archived_branch']}:o.txt", cwd=repo) == "o"
    _fsck_clean(repo)


# In the sandbox: a nested repository whose own config has a clean filter (and a hook path),
# left with changes, so that saving it at cancel would run git there. $1: a host path.
NESTED_FILTER = r"""
mkdir -p nest && cd nest && git init -q && git config user.email a@b && git config user.name a
echo hello > a.txt && git add a.txt && git commit -qm one
echo '* filter=x' > .gitattributes
git config filter.x.clean "sh -c 'touch $1-\$\$; cat'"
git config filter.x.smudge cat
git config core.hooksPath /nonexistent
echo changed >> a.txt
echo untracked > b.txt
cd .. && echo "NESTED"
exec sleep 600
"""


def test_a_nested_repos_own_config_never_runs_when_para_saves_it(api: Api, repo: Path, sidecar: Any,
                                                                 tmp_path: Path) -> None:
    marker = tmp_path / "PWNED-nested-filter"
    _dispatch(repo, "n1", _profile(NESTED_FILTER, str(marker)))
    _wait_log(repo, "n1", "NESTED")
    run_para("list", cwd=repo)
    run_para("show", "n1", cwd=repo)
    out = json.loads(run_para("cancel", "n1", "--json", cwd=repo).stdout)
    assert not list(tmp_path.glob("PWNED-nested-filter*")), list(tmp_path.glob("PWNED*"))
    nested = next(b for b in out["backups"] if b["path"] == "nest")
    wip = next(ref for ref in nested["refs"] if ref.endswith("/wip"))
    assert git("show", f"{wip}:a.txt", cwd=repo) == "hello\nchanged"
    assert git("show", f"{wip}:b.txt", cwd=repo) == "untracked"
    _fsck_clean(repo)
