"""Every command's human output, in every state a session can be in, from the main checkout
and from inside the session's worktree.

Scripts use `--json`; people read the default output, and that is where `para abort` after a
real conflict crashed with a TypeError in the renderer (issue 9.4). The rule, one row per
command × state × place: the exit status is the one README's table gives for the outcome
(0, or the error code's status), there is no traceback, the session's name is in the output,
and the effect is the intended one (the session's status afterwards; a refusal changes
nothing).

The states are built once per module in one repository (`World`): active, dirty, review,
conflicted, integrated, cancelled, missing worktree, agent running, agent exited, plus an
active session whose work conflicts with main. Rows that change a session get a fresh one
built in the state they need. Setup goes over JSON-RPC; only the command under test runs
through the real CLI.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents_util import agent_pids, kill_tree
from conftest import commit_file, git, make_repo, pid_alive, proc_environ, rev, run_para, wait_until
from para_rpc import __version__
from para_rpc.client import Connection
from para_rpc.errors import Code, ParaError

SHARED_SIDECAR = True

EXIT_AGENT = "```agent\nexit 0\n```\n"


@dataclass
class World:
    repo: Path
    env: dict[str, str]
    socket: Path
    gate: Path
    names: dict[str, str] = field(default_factory=dict)  # state -> the world's session in it
    counter: Iterator[int] = field(default_factory=itertools.count)

    # ---- JSON-RPC, for setup and effects -------------------------------------------------

    def call(self, verb: str, **params: Any) -> Any:
        with Connection.open(self.socket, timeout=60) as conn:
            return conn.request(f"para/{verb}", {"cwd": str(self.repo), **params})

    def status(self, name: str) -> str | None:
        """The session's list state (None if no session of that name was ever made)."""
        found = [s for s in self.call("list", all=True)["sessions"] if s["name"] == name]
        return found[-1]["state"] if found else None

    def agent_state(self, name: str) -> str | None:
        got = self.call("status", session=name)["sessions"]
        return (got[0].get("agent") or {}).get("state") if got else None

    def wt(self, name: str) -> Path:
        return self.repo / ".para" / "worktrees" / name

    # ---- sessions in each state ---------------------------------------------------------

    def new_name(self, state: str) -> str:
        return f"{state.replace('-', '')[:6]}{next(self.counter)}"

    def build(self, state: str, name: str | None = None) -> str:
        name = name or self.new_name(state)
        if state == "agent-running":
            self.call("dispatch", name=name, agent="scripted", mode="headless",
                      prompt=f"```agent\nwait-for {self.gate}\nexit 0\n```\n")
            wait_until(lambda: self.agent_state(name) == "running", what=f"the agent of {name} to run")
            return name
        if state == "agent-exited":
            self.call("dispatch", name=name, agent="scripted", mode="headless", prompt=EXIT_AGENT)
            wait_until(lambda: self.agent_state(name) == "exited", what=f"the agent of {name} to exit")
            return name
        self.call("start", name=name)
        wt = self.wt(name)
        if state == "dirty":
            (wt / f"draft-{name}.txt").write_text("not committed yet\n")
        if state in ("committed", "review", "integrated"):
            commit_file(wt, f"{name}.txt", f"work of {name}\n", f"work of {name}")
        if state == "review":
            self.call("finish", session=name, message=f"finish {name}")
        if state == "integrated":
            self.call("integrate", session=name)
        if state == "cancelled":
            self.call("cancel", session=name)
        if state == "missing":
            shutil.rmtree(wt)
        if state in ("conflicting", "conflicted", "resolved"):
            # the session and main both add c-<name>.txt: a conflict on integration
            commit_file(wt, f"c-{name}.txt", "the session's version\n", f"session side of {name}")
            commit_file(self.repo, f"c-{name}.txt", "main's version\n", f"main side of {name}")
        if state in ("conflicted", "resolved"):
            with pytest.raises(ParaError) as e:
                self.call("integrate", session=name)
            assert e.value.code is Code.conflict
        if state == "resolved":
            (wt / f"c-{name}.txt").write_text("both versions, resolved\n")
            git("add", f"c-{name}.txt", cwd=wt)
        return name


WORLD_STATES = ("active", "dirty", "review", "conflicted", "integrated", "cancelled", "missing",
                "agent-running", "agent-exited", "conflicting")


@pytest.fixture(scope="module")
def world(_module_runtime: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    runtime, cfg = _module_runtime
    base = tmp_path_factory.mktemp("human")
    w = World(make_repo(base / "w"), {"PARA_RUNTIME_DIR": str(runtime), "PARA_CONFIG": str(cfg)},
              runtime / "sidecar.sock", base / "gate")
    run_para("sidecar", "start", cwd=w.repo, env=w.env)
    for state in WORLD_STATES:
        w.names[state] = w.build(state)
    yield w
    w.gate.write_text("go\n")  # the running agent ends
    for pid in agent_pids(runtime):
        kill_tree(pid)


# ---- the table -------------------------------------------------------------------------

OK = "ok"
UNCHANGED = "unchanged"


@dataclass
class Row:
    id: str
    state: str                      # the session's state before (a WORLD_STATE, or built fresh)
    argv: tuple[str, ...]           # {s} = the session's name, {new} = a name for a new session
    where: str = "main"             # "main" checkout or "in" the session's worktree
    expect: str = OK                # OK or the name of the error code
    after: str | None = UNCHANGED   # the session's list state afterwards (None: not checked)
    says: str | None = None         # also in the output
    named: bool = True              # the session's name is in the output
    fresh: bool = False             # the row changes the session: build one just for it

    def __post_init__(self) -> None:
        self.fresh = self.fresh or (self.after not in (UNCHANGED, None) and self.state in WORLD_STATES) \
            or self.state not in WORLD_STATES


def rows() -> list[Row]:
    r: list[Row] = []
    sessionful = ("active", "dirty", "conflicted", "agent-running", "agent-exited", "conflicting")
    # read-only commands, in every state
    for st in WORLD_STATES:
        r.append(Row(f"show-{st}", st, ("show", "{s}")))
        r.append(Row(f"status-show-{st}", st, ("status", "show", "{s}")))
        if st in ("agent-running", "agent-exited"):
            r.append(Row(f"logs-{st}", st, ("logs", "{s}"), says="[scripted agent]", named=False))
        else:
            # (the message of `logs` is helper D's; it does not name the session)
            r.append(Row(f"logs-{st}", st, ("logs", "{s}"), expect="not_found", named=False))
    for st in sessionful:
        r.append(Row(f"show-in-{st}", st, ("show",), where="in", says=f"Session "))
        r.append(Row(f"status-show-in-{st}", st, ("status", "show"), where="in"))
        r.append(Row(f"list-in-{st}", st, ("list",), where="in", says="*"))
    for st in ("active", "dirty", "agent-running", "agent-exited"):
        r.append(Row(f"dry-run-in-{st}", st, ("integrate", "--dry-run"), where="in", says="would integrate cleanly"))
    r += [
        Row("list", "active", ("list",)),
        Row("list-all-integrated", "integrated", ("list", "--all")),
        Row("list-all-cancelled", "cancelled", ("list", "--all")),
        Row("dry-run-clean", "active", ("integrate", "--dry-run", "--session", "{s}"), says="would integrate cleanly"),
        Row("dry-run-conflicting", "conflicting", ("integrate", "--dry-run", "--session", "{s}"),
            says="would conflict with main"),
        Row("dry-run-conflicting-in", "conflicting", ("integrate", "--dry-run"), where="in", says="would conflict"),
        Row("conflicts", "conflicting", ("conflicts",), says=" x main"),
        Row("conflicts-in", "conflicting", ("conflicts",), where="in", says=" x main"),
        Row("clean-dry-run", "missing", ("clean", "--dry-run"), says="would prune"),
        Row("resume-active", "active", ("resume", "{s}")),
        Row("resume-in-active", "active", ("resume",), where="in"),
        Row("status-report-in-active", "active", ("status", "writing tests", "--todos", "1/3"), where="in",
            says="writing tests"),
        Row("status-report-in-agent-running", "agent-running", ("status", "helping out"), where="in",
            says="helping out"),
        Row("start-existing", "active", ("start", "{s}"), expect="already_exists"),
    ]
    # refusals: nothing changes
    for st, verbs in {
        "active": (("finish", "msg", "--session", "{s}", "nothing_to_do"), ("continue", "{s}", "wrong_state"),
                   ("abort", "{s}", "wrong_state"), ("recover", "{s}", "wrong_state")),
        "dirty": (("continue", "{s}", "wrong_state"), ("abort", "{s}", "wrong_state")),
        "review": (("finish", "msg", "--session", "{s}", "wrong_state"), ("continue", "{s}", "wrong_state"),
                   ("abort", "{s}", "wrong_state"), ("recover", "{s}", "wrong_state")),
        "conflicted": (("finish", "msg", "--session", "{s}", "wrong_state"), ("continue", "{s}", "conflict"),
                       ("recover", "{s}", "wrong_state"), ("integrate", "--session", "{s}", "wrong_state")),
        "integrated": (("finish", "msg", "--session", "{s}", "wrong_state"), ("cancel", "{s}", "wrong_state"),
                       ("continue", "{s}", "wrong_state"), ("abort", "{s}", "wrong_state"),
                       ("recover", "{s}", "wrong_state"), ("resume", "{s}", "wrong_state")),
        "cancelled": (("finish", "msg", "--session", "{s}", "wrong_state"), ("continue", "{s}", "wrong_state"),
                      ("abort", "{s}", "wrong_state")),
        "missing": (("finish", "msg", "--session", "{s}", "wrong_state"), ("continue", "{s}", "wrong_state"),
                    ("abort", "{s}", "wrong_state"), ("recover", "{s}", "wrong_state")),
        "agent-running": (("continue", "{s}", "wrong_state"), ("abort", "{s}", "wrong_state")),
        "agent-exited": (("continue", "{s}", "wrong_state"), ("recover", "{s}", "wrong_state")),
    }.items():
        for *argv, code in verbs:
            r.append(Row(f"{argv[0]}-refused-{st}", st, tuple(argv), expect=code))
    for st, verbs in {"active": (("continue", "wrong_state"), ("abort", "wrong_state")),
                      "conflicted": (("continue", "conflict"),),
                      "agent-running": (("continue", "wrong_state"),)}.items():
        for verb, code in verbs:
            r.append(Row(f"{verb}-refused-in-{st}", st, (verb,), where="in", expect=code))
    # commands that change the session (each on a fresh one)
    r += [
        Row("start", "none", ("start", "{new}"), after=None),
        Row("start-in-active", "active", ("start", "{new}"), where="in", after=None),
        Row("dispatch", "none", ("dispatch", "{new}", "-p", EXIT_AGENT, "--agent", "scripted", "--mode", "headless"),
            after=None, says="Dispatched session"),
        Row("dispatch-in-active", "active", ("dispatch", "{new}", "-p", EXIT_AGENT, "--agent", "scripted",
                                             "--mode", "headless"), where="in", after=None, says="Dispatched session"),
        Row("finish-committed", "committed", ("finish", "done", "--session", "{s}"), after="review"),
        Row("finish-dirty", "dirty", ("finish", "done", "--session", "{s}"), after="review"),
        Row("finish-in-committed", "committed", ("finish", "done"), where="in", after="review"),
        Row("finish-in-agent-exited", "agent-exited", ("finish", "done", "--session", "{s}"),
            expect="nothing_to_do"),
        Row("integrate-committed", "committed", ("integrate", "--session", "{s}"), after="integrated",
            says="Integrated session"),
        Row("integrate-dirty", "dirty", ("integrate", "land it", "--session", "{s}"), after="integrated"),
        Row("integrate-review", "review", ("integrate", "--session", "{s}"), after="integrated"),
        Row("integrate-in-committed", "committed", ("integrate", "land it"), where="in", after="integrated"),
        Row("integrate-conflicting", "conflicting", ("integrate", "--session", "{s}"), expect="conflict",
            after="conflicted", fresh=True),
        Row("integrate-in-conflicting", "conflicting", ("integrate",), where="in", expect="conflict",
            after="conflicted", fresh=True),
        Row("continue-resolved", "resolved", ("continue", "{s}"), after="integrated"),
        Row("continue-in-resolved", "resolved", ("continue",), where="in", after="integrated"),
        Row("abort-conflicted", "conflicted", ("abort", "{s}"), after="active", says="saved work"),
        Row("abort-in-conflicted", "conflicted", ("abort",), where="in", after="active", says="saved work"),
        Row("cancel-active", "active", ("cancel", "{s}"), after="cancelled", says="`para recover"),
        Row("cancel-dirty", "dirty", ("cancel", "{s}"), after="cancelled", says="saved work"),
        Row("cancel-review", "review", ("cancel", "{s}"), after="cancelled"),
        Row("cancel-conflicted", "conflicted", ("cancel", "{s}"), after="cancelled"),
        Row("cancel-missing", "missing", ("cancel", "{s}"), after="cancelled"),
        Row("cancel-agent-exited", "agent-exited", ("cancel", "{s}"), after="cancelled"),
        Row("cancel-in-dirty", "dirty", ("cancel",), where="in", after="cancelled"),
        Row("recover-cancelled", "cancelled", ("recover", "{s}"), after="active", says="Recovered session"),
        Row("resume-missing", "missing", ("resume", "{s}"), after="active", says="worktree recreated"),
        Row("resume-review", "review", ("resume", "{s}"), after="active"),
    ]
    return r


ROWS = rows()


def test_the_table_covers_every_command_and_state() -> None:
    """The table is the specification: every command appears, every state appears."""
    commands = {"status show" if row.argv[:2] == ("status", "show") else row.argv[0] for row in ROWS}
    assert commands >= {"start", "list", "show", "finish", "integrate", "continue", "abort", "cancel", "recover",
                        "resume", "conflicts", "dispatch", "status", "status show", "logs", "clean"}
    assert {row.state for row in ROWS} >= set(WORLD_STATES)
    assert {row.where for row in ROWS} == {"main", "in"}
    assert len({row.id for row in ROWS}) == len(ROWS)


def mentions(text: str, name: str) -> bool:
    """`name` as a word of its own (not inside a file name such as c-<name>.txt)."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w.-])", text) is not None


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_human_output(world: World, row: Row) -> None:
    if row.state == "none":
        name = None
    elif row.fresh:
        name = world.build(row.state)
    else:
        name = world.names[row.state]
    new = world.new_name("new") if any("{new}" in a for a in row.argv) else None
    before = world.status(name) if name else None
    cwd = world.wt(name) if row.where == "in" else world.repo
    argv = [a.format(s=name, new=new) for a in row.argv]
    res = run_para(*argv, cwd=cwd, check=False, env=world.env)
    out = res.stdout + res.stderr
    where = f"`para {' '.join(argv)}` in {cwd} exited {res.returncode}:\n{out}"
    expected_exit = 0 if row.expect == OK else Code[row.expect].exit
    assert res.returncode == expected_exit, where
    assert "Traceback" not in out, where
    if row.expect == OK:
        assert not res.stderr.startswith("para:"), where
    else:
        assert res.stderr.startswith("para: "), where
    if row.named and (name or new):
        assert mentions(out, new or name), where
    if row.says:
        assert row.says in out, where
    if name is not None and row.after is not None:
        assert world.status(name) == (before if row.after == UNCHANGED else row.after), where
    if new is not None:
        assert world.status(new) == "active", where


# ---- effects of the rows above, checked in detail where the output claims something -------

def test_abort_after_a_real_conflict_prints_what_it_restored_and_saved(world: World) -> None:
    """The TypeError of issue 9.4: `saved` is `{ref, commit}` (like cancel's), and the human
    output shows where the resolution in progress went."""
    name = world.build("conflicted")
    pre = rev(world.repo, f"para/{name}")
    res = run_para("abort", name, cwd=world.repo, env=world.env)
    assert f"Aborted the integration of {name}; restored {pre[:10]}" in res.stdout
    saved_line = next(line for line in res.stdout.splitlines() if "saved work" in line)
    commit, _, ref = saved_line.split()[2:5]
    assert ref.startswith(f"refs/para/backup/{name}/") and rev(world.repo, ref).startswith(commit)
    assert rev(world.repo, f"para/{name}") == pre
    assert git("status", "--porcelain", cwd=world.wt(name)) == ""


def test_the_status_report_says_what_was_recorded(world: World) -> None:
    name = world.build("active")
    res = run_para("status", "writing docs", "--tests", "passed", "--todos", "2/5", cwd=world.wt(name), env=world.env)
    assert res.stdout.strip() == f"Reported for session {name}: writing docs, tests passed, todos 2/5"
    report = world.call("status", session=name)["sessions"][0]["report"]
    assert (report["task"], report["tests"], report["todos_done"], report["todos_total"]) == \
        ("writing docs", "passed", 2, 5)


def test_a_refusal_found_from_the_worktree_names_the_session(world: World) -> None:
    """`para continue` inside a conflicted worktree with markers left: the message (from the
    integration engine) does not name the session; the CLI adds it from `data.session`."""
    name = world.names["conflicted"]
    res = run_para("continue", cwd=world.wt(name), env=world.env, check=False)
    assert res.returncode == Code.conflict.exit
    assert res.stderr.startswith("para: ") and f"(session {name})" in res.stderr
    err = run_para("continue", "--json", cwd=world.wt(name), env=world.env, check=False)
    assert f'"session": "{name}"' in err.stdout


def test_clean_prunes_a_missing_worktree_and_says_so(tmp_path: Path, world: World) -> None:
    """`para clean` for real, in a repository of its own (the world keeps its missing one)."""
    repo = make_repo(tmp_path / "c")
    run_para("start", "gone", cwd=repo, env=world.env)
    shutil.rmtree(repo / ".para" / "worktrees" / "gone")
    res = run_para("clean", cwd=repo, env=world.env)
    assert "did prune worktrees" in res.stdout and "gone" in res.stdout
    assert "gone" not in git("worktree", "list", cwd=repo)


def test_version_prints_the_package_version(world: World) -> None:
    res = run_para("version", cwd=world.repo, env=world.env)
    assert res.stdout.strip() == __version__ and res.stderr == ""


@pytest.mark.parametrize("argv,says", [
    (("config", "show"), "base_branch"),
    (("config", "get", "branch_prefix"), '"para"'),
    (("config", "path"), "user: "),
    (("sidecar", "status"), "running, pid"),
], ids=["config-show", "config-get", "config-path", "sidecar-status"])
@pytest.mark.parametrize("where", ["main", "in"])
def test_repository_wide_commands(world: World, argv: tuple[str, ...], says: str, where: str) -> None:
    cwd = world.repo if where == "main" else world.wt(world.names["active"])
    res = run_para(*argv, cwd=cwd, env=world.env)
    assert says in res.stdout and res.stderr == ""
    if argv[0] == "config" and argv[1] == "path":
        assert f"project: {world.repo}/.para/config.json" in res.stdout
    if argv[0] == "sidecar":
        assert f"serving {world.repo}" in res.stdout


@pytest.mark.parametrize("argv,says", [
    (("conflicts",), "No conflicts among 0 session(s)."),
    (("status", "show"), "No sessions."),
    (("list",), "No sessions. Start one with `para start`."),
    (("trust",), "/.para/config.json does not exist."),
    (("trust", "--revoke"), "Nothing to revoke: no approval is recorded for "),
    (("adopt",), "Nothing to adopt: no new Para sessions in "),
], ids=["conflicts", "status", "list", "trust", "trust-revoke", "adopt"])
def test_a_repository_without_sessions_says_so(world: World, tmp_path: Path, argv: tuple[str, ...], says: str) -> None:
    """The empty states people meet first: a sentence, exit 0, never a blank screen."""
    fresh = make_repo(tmp_path / "fresh")
    res = run_para(*argv, cwd=fresh, env=world.env)
    assert res.returncode == 0 and res.stderr == "", res
    assert says in res.stdout, res.stdout


def test_tour_runs_start_to_end_on_a_private_sidecar_and_leaves_nothing_running(world: World, tmp_path: Path) -> None:
    """`para tour` walks the session commands in a throwaway repository with its own sidecar.
    It must not pick up the caller's PARA_SOCKET (it would stop the caller's sidecar) and must
    stop its own sidecar."""
    ours = json.loads(run_para("sidecar", "start", "--json", cwd=world.repo, env=world.env).stdout)["pid"]
    tmp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: socket paths are limited
    res = run_para("tour", cwd=world.repo, env={**world.env, "TMPDIR": str(tmp), "PARA_SOCKET": str(world.socket)},
                   timeout=180)
    out = res.stdout
    for step in ("$ para start greeting", "Started session greeting", "$ para finish", "$ para cancel",
                 "Recovered session", "$ para resume greeting", "$ para sidecar stop", "sidecar stopped"):
        assert step in out, out
    assert pid_alive(ours), "the tour stopped the caller's sidecar"
    assert json.loads(run_para("sidecar", "status", "--json", cwd=world.repo, env=world.env).stdout)["pid"] == ours
    leftover = [p for p in _sidecar_processes() if proc_environ(p).get("PARA_RUNTIME_DIR", "").startswith(str(tmp))]
    assert leftover == [], "the tour's sidecar is still running"
    assert list(tmp.iterdir()) == [], "the tour left its throwaway repository behind"
    tmp.rmdir()


def _sidecar_processes() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"para_rpc.server.sidecar" in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids
