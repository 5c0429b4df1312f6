"""Helpers for the worktree-safety suites (test_worktree_safety.py, test_stuck_states.py,
test_clean_adopt.py): repositories inside a session's worktree, backup refs, one-line
error checks. Everything is real git; nothing is mocked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import commit_file, git, run_para

from para_rpc.errors import Code

FILE_PROTOCOL = ("-c", "protocol.file.allow=always")  # local submodule sources (git >= 2.38.1 refuses them)


def wt(repo: Path, name: str) -> Path:
    return repo / ".para" / "worktrees" / name


def sessions(repo: Path) -> dict[str, dict[str, Any]]:
    """`para list --all --json` by session name."""
    out = run_para("list", "--all", "--json", cwd=repo).stdout
    return {s["name"]: s for s in json.loads(out)["sessions"]}


def refs(repo: Path, prefix: str) -> dict[str, str]:
    """{refname: commit} under `prefix`."""
    out = git("for-each-ref", "--format=%(refname) %(objectname)", prefix, cwd=repo)
    return dict(line.split(" ", 1) for line in out.splitlines()) if out else {}


def show(repo: Path, spec: str) -> str | None:
    """The content of `<rev>:<path>`, or None when it does not exist."""
    res = subprocess.run(["git", "show", spec], cwd=repo, capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else None


def tree_paths(repo: Path, rev: str) -> dict[str, str]:
    """{path: mode} of every entry of `rev`'s tree (gitlinks included)."""
    out = git("ls-tree", "-r", "-z", "--full-tree", rev, cwd=repo)
    found = {}
    for entry in out.split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            found[path] = meta.split(" ")[0]
    return found


def assert_error(proc: subprocess.CompletedProcess, code: Code, *needles: str) -> str:
    """`para: <message>` on stderr (one line, unless it quotes git's own lines) with the code's
    exit status; returns the message."""
    assert proc.returncode == code.exit, f"expected {code.name} ({code.exit}), got {proc.returncode}: {proc.stderr}"
    assert proc.stderr.startswith("para: ") and proc.stdout == "", proc.stderr
    assert code is Code.git_failed or proc.stderr.count("\n") == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in {proc.stderr!r}"
    return proc.stderr


def make_source(tmp: Path, name: str = "sub") -> Path:
    """A local bare repository with one commit on main (`$SUB` of the red-team steps)."""
    bare = tmp / f"{name}.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp)
    work = tmp / f"{name}-src"
    git("init", "-q", "-b", "main", str(work), cwd=tmp)
    commit_file(work, "s.txt", "sub\n", "sub: initial")
    git("push", "-q", str(bare), "main", cwd=work)
    return bare


def add_submodule(repo: Path, source: Path, path: str = "sm") -> None:
    """`git submodule add $SUB sm; git commit` in the main checkout."""
    git(*FILE_PROTOCOL, "submodule", "add", "-q", str(source), path, cwd=repo)
    git("commit", "-q", "-m", f"add submodule {path}", cwd=repo)


def init_submodule(worktree: Path) -> Path:
    """`git submodule update --init` in a session's worktree; returns the submodule's directory."""
    git(*FILE_PROTOCOL, "submodule", "update", "--init", "-q", cwd=worktree)
    return worktree / "sm"


def nested_repo(parent: Path, name: str, commit: bool = True) -> Path:
    """`git init NAME` inside `parent`, with one commit of p.txt unless told otherwise."""
    git("init", "-q", name, cwd=parent)
    path = parent / name
    if commit:
        commit_file(path, "p.txt", "p\n", "inner commit")
    return path
