"""Helpers shared by the integration tests (test_integrate*.py).

Setup goes through a JSON-RPC connection to the test sidecar (fast: no CLI
start-up per step); the operation under test always runs through the real
`para` CLI. Each integration test module imports the `api` fixture defined here
(`from integrate_util import api`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PARA_ARGV, Sidecar, cli_env, git, rev, wait_until
from para_rpc.client import Connection

STRATEGIES = ("squash", "merge", "rebase", "ff")
BASE_FILES = {"app.py": "".join(f"line {i}\n" for i in range(1, 21)),
              "lib/util.py": "def util():\n    return 1\n"}


class Api:
    """A JSON-RPC connection to the test sidecar, bound to one repository."""

    def __init__(self, conn: Connection, repo: Path) -> None:
        self.conn = conn
        self.repo = repo

    def call(self, method: str, cwd: str | Path | None = None, **params: Any) -> Any:
        return self.conn.request(method, {"cwd": str(cwd or self.repo), **params})

    def sessions(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.call("para/list", all=True)["sessions"]}

    def session(self, name: str) -> dict[str, Any]:
        return self.sessions()[name]


def add_project_files(repo: Path) -> Path:
    """Commit app.py (20 numbered lines) and lib/util.py on main in `repo`."""
    for path, content in BASE_FILES.items():
        Path(repo, path).parent.mkdir(parents=True, exist_ok=True)
        Path(repo, path).write_text(content)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "add app and lib", cwd=repo)
    return repo


@pytest.fixture
def api(sidecar: Sidecar, repo: Path) -> Iterator[Api]:
    """`repo` with app.py and lib/util.py committed, and an RPC connection to the test sidecar
    (each integration test module imports this fixture)."""
    add_project_files(repo)
    conn = sidecar.connect()
    try:
        yield Api(conn, repo)
    finally:
        conn.close()


def worktree(repo: Path, name: str) -> Path:
    return repo / ".para" / "worktrees" / name


def write(root: Path, files: dict[str, str | None]) -> None:
    """Write (or, for None, delete) files under `root`."""
    for path, content in files.items():
        p = Path(root, path)
        if content is None:
            p.unlink()
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)


def commit_all(cwd: Path, message: str) -> str:
    git("add", "-A", cwd=cwd)
    git("commit", "-q", "-m", message, cwd=cwd)
    return git("rev-parse", "HEAD", cwd=cwd)


def start(api: Api, name: str, *commits: dict[str, str | None], base: str | None = None,
          uncommitted: dict[str, str | None] | None = None) -> Path:
    """Start a session and give it one commit per dict in `commits` (message `<name>: change N`),
    then `uncommitted` edits left in its worktree. Returns the worktree path."""
    params: dict[str, Any] = {"name": name}
    if base is not None:
        params["base"] = base
    info = api.call("para/start", **params)
    wt = Path(info["worktree"])
    for n, files in enumerate(commits, 1):
        write(wt, files)
        commit_all(wt, f"{name}: change {n}")
    if uncommitted:
        write(wt, uncommitted)
    return wt


def edit_line(content: str, line_no: int, text: str) -> str:
    lines = content.splitlines(keepends=True)
    lines[line_no - 1] = text + "\n"
    return "".join(lines)


def run_cli(*args: str, cwd: Path, env: dict[str, str | None] | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess:
    """The real CLI, without asserting the exit status (the caller checks it)."""
    return subprocess.run([*PARA_ARGV, *args], cwd=cwd, env=cli_env(env), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def cli_json(*args: str, cwd: Path, expect: int = 0, env: dict[str, str | None] | None = None) -> Any:
    """Run `para ARGS --json`, check its exit status, return the parsed output."""
    proc = run_cli(*args, "--json", cwd=cwd, env=env)
    where = (f"`para {' '.join(args)} --json` in {cwd}: exit {proc.returncode}, expected {expect}\n"
             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, where
    assert proc.returncode == expect, where
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON output: {where}") from None


def error_of(out: dict[str, Any], code: str) -> dict[str, Any]:
    assert "error" in out, out
    assert out["error"]["code"] == code, out
    return out["error"]


def git_rc(*args: str, cwd: Path) -> int:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=60).returncode


def porcelain(cwd: Path) -> list[str]:
    """`git status --porcelain` lines, leading spaces kept."""
    out = subprocess.run(["git", "status", "--porcelain=v1", "--untracked-files=all"], cwd=cwd,
                         capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
    return out.splitlines()


def is_ancestor(repo: Path, a: str, b: str) -> bool:
    return git_rc("merge-base", "--is-ancestor", a, b, cwd=repo) == 0


def in_progress(wt: Path) -> list[str]:
    """Which of a merge or a rebase is stopped in this worktree."""
    found = []
    for name in ("MERGE_HEAD", "rebase-merge", "rebase-apply"):
        if Path(git("rev-parse", "--path-format=absolute", "--git-path", name, cwd=wt)).exists():
            found.append(name)
    return found


def parents(repo: Path, commit: str) -> list[str]:
    return git("rev-list", "--parents", "-n", "1", commit, cwd=repo).split()[1:]


def changed_files(repo: Path, commit: str) -> list[str]:
    """Files a commit changes against its first parent."""
    return sorted(git("diff", "--name-only", f"{commit}^1", commit, cwd=repo).splitlines())


def message(repo: Path, commit: str) -> str:
    return git("log", "-1", "--format=%B", commit, cwd=repo).strip()


def first_parent_chain(repo: Path, tip: str, stop: str) -> list[str]:
    """Commits from `tip` back to (excluding) `stop` along first parents, newest first."""
    return git("rev-list", "--first-parent", f"{stop}..{tip}", cwd=repo).splitlines()


def show(repo: Path, spec: str) -> str:
    return git("show", spec, cwd=repo)


def files_of(root: Path) -> dict[str, bytes]:
    """Every file in a working tree except .git and para's own .para directory."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == root and d in (".git", ".para"))]
        for f in filenames:
            p = Path(dirpath, f)
            if Path(dirpath) == root and f == ".git":
                continue
            result[str(p.relative_to(root))] = p.read_bytes()
    return result


def world(repo: Path, api: Api | None = None) -> dict[str, Any]:
    """Everything an integration could change: all refs, the worktree list, and for every
    worktree its HEAD, index state, in-progress operation and file contents; plus the
    sessions as the sidecar reports them."""
    state: dict[str, Any] = {
        "refs": git("for-each-ref", "--format=%(refname) %(objectname)", cwd=repo),
        "worktrees": git("worktree", "list", "--porcelain", cwd=repo),
    }
    for block in state["worktrees"].split("\n\n"):
        path = block.splitlines()[0][len("worktree "):]
        wt = Path(path)
        state[f"wt:{path}"] = {
            "head": git("symbolic-ref", "-q", "HEAD", cwd=wt, check=False) or rev(wt, "HEAD"),
            "status": porcelain(wt),
            "staged": git("diff", "--cached", "--name-status", cwd=wt),
            "files": files_of(wt),
            "in_progress": in_progress(wt),
        }
    if api is not None:
        state["sessions"] = {n: {k: s[k] for k in ("status", "state", "branch", "head", "worktree_exists",
                                                    "branch_exists")}
                             for n, s in api.sessions().items()}
    return state


def assert_same_world(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys(), (sorted(before), sorted(after))
    for k in before:
        assert before[k] == after[k], f"{k} changed:\nbefore: {before[k]!r}\nafter:  {after[k]!r}"


def assert_landed_cleanly(repo: Path, api: Api, name: str, target: str = "main") -> dict[str, Any]:
    """The session is integrated: worktree gone, branch gone, a backup ref of its tip kept."""
    s = api.session(name)
    assert s["status"] == "integrated", s
    assert not s["worktree_exists"] and not Path(s["worktree"]).exists(), s
    assert not s["branch_exists"] and rev(repo, f"refs/heads/{s['branch']}") is None, s
    backups = git("for-each-ref", "--format=%(objectname)", f"refs/para/backup/{name}/", cwd=repo).split()
    assert s["head"] in backups, (s["head"], backups)
    assert s["integration"]["target"] == target
    assert is_ancestor(repo, s["integration"]["commit"], target), s["integration"]
    return s


def assert_checkout_clean_at(repo: Path, branch: str = "main") -> None:
    """The main checkout still has `branch` checked out, at its tip, with nothing uncommitted."""
    assert git("symbolic-ref", "HEAD", cwd=repo) == f"refs/heads/{branch}"
    assert git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""
    assert git_rc("diff", "--quiet", f"refs/heads/{branch}", cwd=repo) == 0


# ---- holding an integration at a known point ---------------------------------------------------

_BLOCKING_CHECK = """\
import os, pathlib, sys, time
ctl = pathlib.Path(sys.argv[1])
n = len(list(ctl.glob("run-*")))
(ctl / f"run-{n}").write_text(os.getcwd())
(ctl / "blocked.tmp").write_text(os.getcwd())
os.replace(ctl / "blocked.tmp", ctl / "blocked")
deadline = time.monotonic() + 120          # never outlive the test by much
while not (ctl / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
release = ctl / "release"
sys.exit(int(release.read_text() or 0) if release.exists() else 99)
"""


class BlockingCheck:
    """An `integrate.check` command that blocks until released, then exits with the status
    given to `release`. While it blocks, the integration holds the target's queue and has
    computed its result but not moved the target. It is given to the CLI through
    PARA_INTEGRATE_CHECK (`env`), which the CLI forwards with each request."""

    def __init__(self, tmp: Path) -> None:
        self.ctl = tmp / "check-ctl"
        self.ctl.mkdir()
        self.script = tmp / "blocking_check.py"
        self.script.write_text(_BLOCKING_CHECK)

    @property
    def command(self) -> str:
        return f"{sys.executable} {self.script} {self.ctl}"

    def env(self, **extra: str) -> dict[str, str]:
        return {"PARA_INTEGRATE_CHECK": self.command, **extra}

    def wait_blocked(self, proc: subprocess.Popen | None = None) -> Path:
        """Wait until the check runs; returns its working directory (the scratch worktree)."""
        marker = self.ctl / "blocked"
        wait_until(lambda: marker.exists() or (proc is not None and proc.poll() is not None),
                   what="the integration check to start")
        assert marker.exists(), f"the integration ended before its check ran: {proc and proc.communicate()}"
        return Path(marker.read_text())

    def release(self, status: int = 0) -> None:
        (self.ctl / "release.tmp").write_text(str(status))
        os.replace(self.ctl / "release.tmp", self.ctl / "release")

    def runs(self) -> int:
        return len(list(self.ctl.glob("run-*")))


def launch(*args: str, cwd: Path, env: dict[str, str | None] | None = None) -> subprocess.Popen:
    """`para ARGS --json` in the background (the real CLI)."""
    return subprocess.Popen([*PARA_ARGV, *args, "--json"], cwd=cwd, env=cli_env(env), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def outcome(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, Any]:
    """Wait for a launched `para ... --json`; (exit status, parsed output)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err
    try:
        return proc.returncode, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON output (exit {proc.returncode}):\n{out}\n{err}") from None


def events(api: Api, after: int = 0, kind: str | None = None) -> list[dict[str, Any]]:
    """The repository's events after id `after` (of one kind if given), oldest first."""
    found = api.call("para/events", after=after, limit=1000)["events"]
    return [e for e in found if kind is None or e["kind"] == kind]


def last_event(api: Api) -> int:
    found = events(api)
    return found[-1]["id"] if found else 0
