"""Many `para` processes at once against one sidecar and one repository
(para_rpc.service's per-repository and per-session locks)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from para_rpc.errors import Code
from para_rpc.names import validate_session_name

from conftest import PARA_ARGV, CLI_TIMEOUT, branches, cli_env, commit_file, git, rev, worktree_paths

pytestmark = pytest.mark.usefixtures("sidecar")


def run_all(commands: list[list[str]], cwd: Path) -> list[tuple[int, str, str]]:
    """Start every command at once; return (status, stdout, stderr) of each, in order."""
    procs = [subprocess.Popen([*PARA_ARGV, *args], cwd=cwd, env=cli_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in commands]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=CLI_TIMEOUT * 2)
        assert "Traceback" not in err, err
        results.append((p.returncode, out, err))
    return results


def test_twenty_concurrent_starts_make_twenty_distinct_sessions(para_json, repo):
    main_tip = rev(repo, "main")
    results = run_all([["start", "--json"]] * 20, repo)
    for rc, out, err in results:
        assert rc == 0, err
    sessions = [json.loads(out) for _, out, _ in results]
    names = {s["name"] for s in sessions}
    assert len(names) == 20
    for name in names:
        validate_session_name(name)

    registered = worktree_paths(repo)
    assert len(registered) == 21
    for s in sessions:
        assert s["worktree"] in registered
        assert rev(repo, s["branch"]) == main_tip
        assert git("status", "--porcelain", cwd=s["worktree"]) == ""
    assert sorted(b for b in branches(repo) if b.startswith("para/")) == sorted(f"para/{n}" for n in names)
    listed = para_json("list")["sessions"]
    assert sorted(s["name"] for s in listed) == sorted(names)
    assert {s["state"] for s in listed} == {"active"}


def test_concurrent_starts_of_one_name_create_it_once(para_json, repo):
    results = run_all([["start", "same"]] * 8, repo)
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0] + [Code.already_exists.exit] * 7
    for rc, _, err in results:
        if rc:
            assert "'same' already exists" in err
    assert [s["name"] for s in para_json("list")["sessions"]] == ["same"]
    assert len(worktree_paths(repo)) == 2


def test_concurrent_start_and_cancel_on_different_sessions(svc, para_json, repo):
    old = [f"old{i}" for i in range(5)]
    for name in old:
        path = Path(svc("start", name=name)["worktree"])
        commit_file(path, f"{name}.txt", f"{name} committed\n", f"work of {name}")
        (path / f"{name}-wip.txt").write_text(f"{name} uncommitted\n")
    new = [f"new{i}" for i in range(5)]
    results = run_all([["cancel", n, "--json"] for n in old] + [["start", n, "--json"] for n in new], repo)
    for rc, _, err in results:
        assert rc == 0, err

    for (_, out, _), name in zip(results[:5], old):
        archive = json.loads(out)["archived_branch"]
        assert git("show", f"{archive}:{name}.txt", cwd=repo) == f"{name} committed"
        assert git("show", f"{archive}:{name}-wip.txt", cwd=repo) == f"{name} uncommitted"
    listing = {s["name"]: s for s in para_json("list", "--all")["sessions"]}
    assert {n: listing[n]["status"] for n in old} == {n: "cancelled" for n in old}
    assert {n: listing[n]["state"] for n in new} == {n: "active" for n in new}
    assert sorted(worktree_paths(repo)[1:]) == sorted(listing[n]["worktree"] for n in new)
    assert not any(b in branches(repo) for b in (f"para/{n}" for n in old))


def test_concurrent_finishes_of_different_sessions(svc, para_json, repo):
    names = [f"f{i}" for i in range(5)]
    for name in names:
        path = Path(svc("start", name=name)["worktree"])
        commit_file(path, "a.txt", f"{name}\n", "first")
        (path / "b.txt").write_text(f"{name}\n")
    results = run_all([["finish", f"Finish {n}", "--session", n] for n in names], repo)
    for rc, _, err in results:
        assert rc == 0, err
    main_tip = rev(repo, "main")
    for name in names:
        assert rev(repo, f"para/{name}^") == main_tip
        assert git("log", "-1", "--format=%s", f"para/{name}", cwd=repo) == f"Finish {name}"
        assert git("show", f"para/{name}:b.txt", cwd=repo) == name
    assert worktree_paths(repo) == [str(repo)]
    assert {s["status"] for s in para_json("list")["sessions"]} == {"review"}
