"""The trust gate: commands from a repository's own `.para/config.json` run only after the
user approved that exact content (`para trust`).

The threat (issue 9, point 3): an agent, or a cloned repository, commits a project file with
an `integrate.check` or an `agents` profile; after it lands, every integration runs that
check and every dispatch runs that argv, as the user, outside any sandbox. The rules:

- A command the project file sets (`config.COMMAND_KEYS`: `integrate.check`, the `agents`
  profiles) is refused with `untrusted` (exit 13) by any operation that needs it, before
  anything changes, until the user approved the file's content; the message lists the
  commands and says to run `para trust` in the repository.
- The user file and PARA_* variables are the user's own: never gated. Values that are not
  commands are never gated, and nothing that does not need a project command is affected.
- `para trust` shows the exact argv and records (common git dir, SHA-256 of the content) in
  `$XDG_DATA_HOME/para/trust.json` (0600). A changed file needs approval again; `--revoke`
  withdraws it; `--show` only looks. An agent's environment (PARA_SESSION) cannot approve.
- A project profile never takes a built-in profile's name (`config_error`, approved or not).
- An integration that changes `.para/config.json` says so (record, event, CLI, MCP).

The sidecar reads the trust file, so its environment decides where that is: every test sets
XDG_DATA_HOME before any sidecar starts (autouse fixture), and the sidecar inherits it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents_util import Api, agent_env, agent_pids, agent_scripts  # noqa: F401  (autouse: agents cleaned up)
from conftest import commit_file, git, git_state, rev, run_para, session_state, wait_until
from para_rpc.errors import Code, ParaError

pytestmark = pytest.mark.usefixtures("sidecar")

MARK_SCRIPT = """\
import pathlib, sys
pathlib.Path(sys.argv[1]).write_text("ran in " + str(pathlib.Path.cwd()))
"""


@pytest.fixture(autouse=True)
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trust file of this test: XDG_DATA_HOME is set before the sidecar starts (it
    inherits the test's environment), so CLI and sidecar agree on the data dir."""
    data = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    return data / "para" / "trust.json"


@pytest.fixture
def api(sidecar: Any, repo: Path) -> Api:
    return Api(sidecar.socket, repo)


@pytest.fixture
def marks(tmp_path: Path) -> Callable[[str], tuple[list[str], Path]]:
    """`marks(name)` -> (argv of a command that writes the marker file, the marker path)."""
    script = tmp_path / "mark.py"
    script.write_text(MARK_SCRIPT)

    def make(name: str) -> tuple[list[str], Path]:
        marker = tmp_path / "markers" / name
        marker.parent.mkdir(exist_ok=True)
        return [sys.executable, str(script), str(marker)], marker
    return make


def project_file(repo: Path) -> Path:
    return repo / ".para" / "config.json"


def write_project(repo: Path, tree: dict[str, Any], commit: bool = True) -> Path:
    """The project file, committed on main as a cloned repository would carry it."""
    path = project_file(repo)
    if commit:
        commit_file(repo, ".para/config.json", json.dumps(tree, indent=2), "project config")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(tree, indent=2))
    return path


def para_call(*args: str, cwd: Path, env: dict[str, str | None] | None = None) -> tuple[int, Any]:
    """`para ARGS --json` (any exit status): (exit status, parsed output)."""
    proc = run_para(*args, "--json", cwd=cwd, check=False, env=env)
    return proc.returncode, json.loads(proc.stdout)


def trust(repo: Path, *flags: str, env: dict[str, str | None] | None = None) -> dict[str, Any]:
    rc, out = para_call("trust", *flags, cwd=repo, env=env)
    assert rc == 0, out
    return out


def approve(repo: Path) -> dict[str, Any]:
    """What a user does: `para trust` shows the commands and their digest, `para trust
    --approve <sha256>` approves exactly that content."""
    shown = trust(repo)
    assert shown["action"] == "shown", shown
    return trust(repo, "--approve", shown["sha256"])


def assert_untrusted(rc: int, out: dict[str, Any], repo: Path, argv: list[str]) -> dict[str, Any]:
    """exit 13, code `untrusted`, the message lists the command and how to approve it, the
    data carries the commands and the file."""
    assert rc == Code.untrusted.exit == 13, out
    err = out["error"]
    assert err["code"] == "untrusted", err
    assert err["data"]["file"] == str(project_file(repo))
    assert any(c["argv"] == argv for c in err["data"]["commands"]), err["data"]["commands"]
    assert shlex.join(argv) in err["message"]
    assert f"`para trust` in {repo}" in err["message"]
    return err


def agent_profile(argv: list[str]) -> dict[str, Any]:
    return {"command": argv}


def start_with_commit(api: Api, name: str, path: str = "feature.txt") -> Path:
    wt = Path(api.call("para/start", name=name)["worktree"])
    commit_file(wt, path, f"{name}\n", f"{name}: work")
    return wt


def event_kinds(api: Api, session: str | None = None) -> list[str]:
    return [e["kind"] for e in api.events() if session is None or e["session"] == session]


# ---- refused until approved ----------------------------------------------------------------

@dataclass
class Case:
    """One way a project-file command is used: the project file (given the marker command),
    what to prepare, the para command that needs the command, and how its success shows."""
    project: Callable[[list[str]], dict[str, Any]]
    args: list[str]
    prepare: Callable[[Api], None]
    landed: Callable[[Api, Path], None]


def _prepare_feature(api: Api) -> None:
    wt = start_with_commit(api, "feat")
    (wt / "notes.txt").write_text("uncommitted work\n")  # a refused integration must not commit it


def _integrated(api: Api, marker: Path) -> None:
    assert marker.exists()  # the check ran, in a scratch worktree of the candidate
    assert api.sessions()["feat"]["status"] == "integrated"
    assert git("show", "main:feature.txt", cwd=api.repo) == "feat"


def _dispatched(api: Api, marker: Path) -> None:
    wait_until(marker.exists, 60, "the approved agent to run")
    assert api.sessions()["job"]["status"] == "active"


CASES = {
    "integrate.check": Case(
        lambda argv: {"integrate": {"check": shlex.join(argv)}},
        ["integrate", "--session", "feat"], _prepare_feature, _integrated),
    "profile by --agent": Case(
        lambda argv: {"agents": {"bot": agent_profile(argv)}},
        ["dispatch", "job", "-p", "do the job", "--agent", "bot", "--mode", "headless"],
        lambda api: None, _dispatched),
    "profile as agent.default": Case(
        lambda argv: {"agent": {"default": "bot"}, "agents": {"bot": agent_profile(argv)}},
        ["dispatch", "job", "-p", "do the job", "--mode", "headless"], lambda api: None, _dispatched),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_project_command_is_refused_until_the_user_approves_it(api, repo, marks, store, runtime_dir,
                                                               case: Case):
    """Refused with `untrusted` before anything changes: the command does not run (its marker
    does not appear), no session, branch, worktree, commit, event or agent process appears,
    the target does not move. After `para trust` the same command works."""
    argv, marker = marks("ran")
    write_project(repo, case.project(argv))
    case.prepare(api)
    before = {**git_state(repo), "sessions": session_state(repo), "events": event_kinds(api)}
    feat_status = git("status", "--porcelain", cwd=repo / ".para/worktrees/feat") \
        if (repo / ".para/worktrees/feat").exists() else None

    rc, out = para_call(*case.args, cwd=repo)
    assert_untrusted(rc, out, repo, argv)
    assert not marker.exists()
    assert {**git_state(repo), "sessions": session_state(repo), "events": event_kinds(api)} == before
    if feat_status is not None:
        assert git("status", "--porcelain", cwd=repo / ".para/worktrees/feat") == feat_status
    assert agent_pids(runtime_dir) == []
    assert not store.exists()

    approved = approve(repo)
    assert approved["action"] == "approved" and approved["approved"] is True
    rc, out = para_call(*case.args, cwd=repo)
    assert rc == 0, out
    case.landed(api, marker)


def test_continue_of_a_paused_integration_is_refused_until_approved(api, repo, marks):
    """`para continue` lands too, so it needs the check: refused before anything changes,
    the session stays paused with its resolution, the target stays."""
    wt = Path(api.call("para/start", name="c1")["worktree"])
    commit_file(wt, "README.md", "# session\n", "session edits the readme")
    commit_file(repo, "README.md", "# main\n", "main edits the readme")
    rc, out = para_call("integrate", "--session", "c1", cwd=repo)
    assert rc == Code.conflict.exit, out
    (wt / "README.md").write_text("# both\n")
    argv, marker = marks("continue")
    write_project(repo, {"integrate": {"check": shlex.join(argv)}}, commit=False)
    main_before, status_before = rev(repo, "main"), git("status", "--porcelain", cwd=wt)

    rc, out = para_call("continue", "c1", cwd=repo)
    assert_untrusted(rc, out, repo, argv)
    assert not marker.exists()
    assert rev(repo, "main") == main_before
    assert api.sessions()["c1"]["status"] == "conflicted"
    assert git("status", "--porcelain", cwd=wt) == status_before

    approve(repo)
    rc, out = para_call("continue", "c1", cwd=repo)
    assert rc == 0 and out["status"] == "integrated", out
    assert marker.exists() and git("show", "main:README.md", cwd=repo) == "# both"


# ---- the user's own layers are trusted; nothing else is gated ----------------------------------

TRUSTED_LAYERS = ["user file", "environment"]


@pytest.mark.parametrize("layer", TRUSTED_LAYERS)
def test_commands_from_the_user_file_or_the_environment_run_without_approval(api, repo, marks, store, layer):
    """The user file and PARA_* variables are the user's own: their check and profiles run
    without `para trust`. The environment also outranks an unapproved project file, whose
    check is then not the one in effect and does not run (the project file outranks the
    user file, so there the project file has no check)."""
    check, check_marker = marks("user-check")
    bot, bot_marker = marks("user-bot")
    project_check, project_marker = marks("project-check")
    if layer == "environment":
        write_project(repo, {"integrate": {"check": shlex.join(project_check)}})
    tree = {"integrate": {"check": shlex.join(check)}, "agents": {"bot": agent_profile(bot)}}
    env: dict[str, str | None] = {}
    if layer == "user file":
        Path(os.environ["PARA_CONFIG"]).write_text(json.dumps(tree))
    else:
        env = {"PARA_INTEGRATE_CHECK": shlex.join(check), "PARA_AGENTS": json.dumps(tree["agents"])}
    try:
        start_with_commit(api, "feat")
        rc, out = para_call("integrate", "--session", "feat", cwd=repo, env=env)
        assert rc == 0 and out["integration"]["check"]["ok"] is True, out
        assert check_marker.exists() and not project_marker.exists()

        rc, out = para_call("dispatch", "job", "-p", "x", "--agent", "bot", "--mode", "headless", cwd=repo, env=env)
        assert rc == 0, out
        wait_until(bot_marker.exists, 60, "the user's agent to run")
    finally:
        Path(os.environ["PARA_CONFIG"]).unlink(missing_ok=True)
    assert not store.exists()  # nothing was approved, nothing needed to be


def test_what_needs_no_project_command_keeps_working(api, repo, marks, store):
    """With unapproved project profiles in place, settings that are not commands apply,
    integrations without a project check land, built-in and user profiles dispatch, and a
    user profile survives the project adding its own (profiles add up)."""
    bot, bot_marker = marks("project-bot")
    mine, mine_marker = marks("user-mine")
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"agents": {"mine": agent_profile(mine)}}))
    try:
        write_project(repo, {"branch_prefix": "work", "integrate": {"strategy": "merge"},
                             "agents": {"bot": agent_profile(bot)}})
        info = api.call("para/start", name="plain")
        assert info["branch"] == "work/plain"
        commit_file(Path(info["worktree"]), "plain.txt", "plain\n", "plain work")
        rc, out = para_call("integrate", "--session", "plain", cwd=repo)
        assert rc == 0 and out["integration"]["strategy"] == "merge", out
        assert len(git("rev-list", "--parents", "-n", "1", "main", cwd=repo).split()) == 3  # a merge commit

        rc, out = para_call("dispatch", "own", "-p", "x", "--agent", "mine", "--mode", "headless", cwd=repo)
        assert rc == 0, out
        wait_until(mine_marker.exists, 60, "the user's own profile to run")
        rc, out = para_call("dispatch", "builtin", "-p", "Review only; do not run any para commands.",
                            "--agent", "scripted", "--mode", "headless", cwd=repo)
        assert rc == 0 and out["name"] == "builtin" and out["status"] == "active", out
    finally:
        Path(os.environ["PARA_CONFIG"]).unlink(missing_ok=True)
    assert not bot_marker.exists()
    assert para_call("config", "show", cwd=repo)[0] == 0
    assert not store.exists()


# ---- approvals: recorded, honoured, invalidated, revoked -----------------------------------------

def test_an_approval_records_the_repository_and_the_content_hash_privately(repo, marks, store):
    argv, _ = marks("x")
    path = write_project(repo, {"integrate": {"check": shlex.join(argv)}})
    out = approve(repo)
    assert out["store"] == str(store)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    recorded = json.loads(store.read_text())["repos"]
    common_dir = os.path.realpath(repo / ".git")
    assert list(recorded) == [common_dir]
    assert recorded[common_dir]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == out["sha256"]
    assert recorded[common_dir]["commands"] == [{"key": "integrate.check", "argv": argv}]
    assert sorted(p.name for p in store.parent.iterdir()) == ["trust.json", "trust.json.lock"]  # no temp file left


CHANGES = {
    "the check": lambda tree, argv: {**tree, "integrate": {"check": shlex.join(argv + ["--more"])}},
    "a setting that is not a command": lambda tree, argv: {**tree, "branch_prefix": "other"},
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_a_changed_project_file_needs_approval_again(api, repo, marks, change):
    """The approval is of that exact content: any change to the file (its SHA-256) makes its
    commands wait for a new `para trust`; `--show` says the earlier content was approved."""
    argv, marker = marks("check")
    tree = {"integrate": {"check": shlex.join(argv)}}
    write_project(repo, tree)
    first = approve(repo)
    write_project(repo, change(tree, argv))
    start_with_commit(api, "feat")
    rc, out = para_call("integrate", "--session", "feat", cwd=repo)
    assert rc == 13 and out["error"]["code"] == "untrusted", out
    assert not marker.exists()
    shown = trust(repo, "--show")
    assert shown["approved"] is False and shown["approval"]["sha256"] == first["sha256"] != shown["sha256"]
    assert "changed since" in run_para("trust", "--show", cwd=repo).stdout

    assert approve(repo)["action"] == "approved"
    rc, out = para_call("integrate", "--session", "feat", cwd=repo)
    assert rc == 0, out
    assert marker.exists()


def test_revoke_withdraws_the_approval(api, repo, marks, store):
    argv, marker = marks("check")
    write_project(repo, {"integrate": {"check": shlex.join(argv)}})
    approve(repo)
    out = trust(repo, "--revoke")
    assert out["action"] == "revoked" and out["approved"] is False and out["approval"] is None
    assert json.loads(store.read_text())["repos"] == {}
    start_with_commit(api, "feat")
    rc, out = para_call("integrate", "--session", "feat", cwd=repo)
    assert rc == 13 and out["error"]["code"] == "untrusted", out
    assert not marker.exists() and api.sessions()["feat"]["status"] == "active"
    assert trust(repo, "--revoke")["action"] == "nothing_to_revoke"


def test_an_approval_over_json_rpc_can_be_bound_to_the_reviewed_content(rpc, repo, marks, store):
    """`para/trust` with `sha256` approves only the content that was reviewed: a file changed
    in between is refused (`wrong_state`) and nothing is recorded."""
    argv, _ = marks("x")
    write_project(repo, {"integrate": {"check": shlex.join(argv)}})
    shown = rpc.request("para/trust", {"cwd": str(repo)})
    assert shown["action"] == "shown" and shown["approved"] is False and not store.exists()
    write_project(repo, {"integrate": {"check": shlex.join(argv + ["changed"])}})
    with pytest.raises(ParaError) as e:
        rpc.request("para/trust", {"cwd": str(repo), "action": "approve", "sha256": shown["sha256"]})
    assert e.value.code is Code.wrong_state, e.value
    assert not store.exists() or json.loads(store.read_text())["repos"] == {}
    current = rpc.request("para/trust", {"cwd": str(repo)})
    done = rpc.request("para/trust", {"cwd": str(repo), "action": "approve", "sha256": current["sha256"]})
    assert done["action"] == "approved" and done["commands"][0]["argv"] == argv + ["changed"]


@pytest.mark.parametrize("content", [b"{not json", b'{"repos": ["x"]}', b"\xff"],
                         ids=["not json", "not para's shape", "not utf-8"])
def test_an_unreadable_trust_file_approves_nothing_and_says_so(api, repo, marks, store, content):
    """Only what needs a project command fails, with a config_error naming the trust file and
    what to do; everything else works; once it is moved away, approval works again."""
    argv, marker = marks("check")
    write_project(repo, {"integrate": {"check": shlex.join(argv)}})
    store.parent.mkdir(parents=True)
    store.write_bytes(content)
    start_with_commit(api, "feat")
    for args in (["integrate", "--session", "feat"], ["trust"]):
        rc, out = para_call(*args, cwd=repo)
        assert rc == Code.config_error.exit and str(store) in out["error"]["message"], out
        assert "move it away" in out["error"]["message"]
    assert not marker.exists() and api.sessions()["feat"]["status"] == "active"
    assert store.read_bytes() == content
    assert para_call("start", "other", cwd=repo)[0] == 0
    assert para_call("config", "show", cwd=repo)[1]["values"]["integrate.check"]["trusted"] is False

    store.rename(store.with_name("trust.json.broken"))
    assert para_call("integrate", "--session", "feat", cwd=repo)[0] == 13
    approve(repo)
    assert para_call("integrate", "--session", "feat", cwd=repo)[0] == 0 and marker.exists()


def test_an_agent_cannot_approve_its_own_commands(api, repo, marks, store):
    """Under PARA_SESSION (the environment para gives its agents) `para trust --approve`
    refuses (`forbidden`), records nothing, and says approval is the user's; looking is fine.
    (The sidecar's own check, which needs no cooperation: test_trust_boundary.py.)"""
    argv, _ = marks("x")
    write_project(repo, {"integrate": {"check": shlex.join(argv)}})
    env = {"PARA_SESSION": "feat"}
    sha = trust(repo)["sha256"]
    rc, out = para_call("trust", "--approve", sha, cwd=repo, env=env)
    assert rc == Code.forbidden.exit == 14 and out["error"]["code"] == "forbidden", out
    assert "human" in out["error"]["message"] and "PARA_SESSION" in out["error"]["message"]
    proc = run_para("trust", "--approve", sha, cwd=repo, env=env, check=False)
    assert proc.returncode == 14 and "human" in proc.stderr
    assert not store.exists()
    assert trust(repo, "--show", env=env)["approved"] is False


# ---- a project profile never shadows a built-in one ----------------------------------------------

SHADOW_CASES = {
    # name: (the built-in name the project file redefines, dispatch args)
    "--agent claude": ("claude", ["--agent", "claude"]),
    "claude as the default": ("claude", []),
    "--agent scripted": ("scripted", ["--agent", "scripted"]),
    "over the user's own claude": ("claude", ["--agent", "claude"]),
}


@pytest.mark.parametrize("name", SHADOW_CASES)
def test_a_project_profile_cannot_take_a_built_in_name(api, repo, marks, runtime_dir, name):
    """Refused with `config_error` naming the file and the key, whether the file's other
    commands are approved or not; nothing is started. `para trust` and `config show` show
    it as refused, and approving the file does not approve it."""
    builtin, args = SHADOW_CASES[name]
    argv, marker = marks("shadow")
    check, _ = marks("check")
    path = write_project(repo, {"agents": {builtin: agent_profile(argv)}, "integrate": {"check": shlex.join(check)}})
    if name == "over the user's own claude":
        user_argv, _ = marks("user-claude")
        Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"agents": {"claude": agent_profile(user_argv)}}))
    try:
        before = {**git_state(repo), "sessions": session_state(repo)}
        for approved in (False, True):
            rc, out = para_call("dispatch", "job", "-p", "x", "--mode", "headless", *args, cwd=repo)
            assert rc == Code.config_error.exit, out
            assert out["error"]["code"] == "config_error"
            assert str(path) in out["error"]["message"] and f"agents.{builtin}" in out["error"]["message"]
            assert out["error"]["data"] == {"file": str(path), "key": f"agents.{builtin}"}
            assert {**git_state(repo), "sessions": session_state(repo)} == before
            assert not marker.exists() and agent_pids(runtime_dir) == []
            if not approved:
                shown = approve(repo)
                assert shown["refused"] == [{"key": f"agents.{builtin}", "profile": builtin,
                                             "reason": f"a project file cannot redefine the built-in profile "
                                                       f"{builtin!r}"}]
                assert shown["commands"] == [{"key": "integrate.check", "argv": check}]
                assert shown["action"] == "approved"
        shown = para_call("config", "show", cwd=repo)[1]["values"]["agents"]
        assert shown["refused"] == {builtin: f"a project file cannot redefine the built-in profile {builtin!r}"}
        assert "refused" in run_para("trust", "--show", cwd=repo).stdout
        assert "refused" in run_para("config", "show", cwd=repo).stdout
    finally:
        Path(os.environ["PARA_CONFIG"]).unlink(missing_ok=True)


def test_the_user_file_may_customise_a_built_in_profile(api, repo, marks):
    argv, marker = marks("user-claude")
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"agents": {"claude": agent_profile(argv)}}))
    try:
        rc, out = para_call("dispatch", "job", "-p", "x", "--mode", "headless", cwd=repo)
        assert rc == 0, out
        wait_until(marker.exists, 60, "the user's claude profile to run")
    finally:
        Path(os.environ["PARA_CONFIG"]).unlink(missing_ok=True)


# ---- the attack end to end, and integrations that change the project file ------------------------

def test_an_agent_landing_a_project_file_is_reported_and_its_commands_wait_for_approval(api, repo, marks,
                                                                                       runtime_dir):
    """The attack of issue 9: the scripted agent of a session writes .para/config.json with a
    check, a profile named claude and a new default profile, and integrates it. The landing
    says so (integration record, `config_changed` event); afterwards the check does not run
    on the next integration, the default dispatch does not start the agent's profile and
    claude is not redefined, until the user approves; then the check runs."""
    check, check_marker = marks("evil-check")
    claude, claude_marker = marks("evil-claude")
    helper, helper_marker = marks("evil-helper")
    evil = {"integrate": {"check": shlex.join(check)}, "agent": {"default": "helper"},
            "agents": {"claude": agent_profile(claude), "helper": agent_profile(helper)}}
    task = ("Tune the configuration.\n\n```file:.para/config.json\n" + json.dumps(evil, indent=2)
            + "\n```\n\nWhen done: para integrate \"Tune the configuration\"\n")
    rc, out = para_call("dispatch", "tune", "-p", task, "--agent", "scripted", "--mode", "headless", cwd=repo)
    assert rc == 0, out
    api.wait_event("integrated", "tune")
    landed = api.sessions()["tune"]["integration"]
    assert landed["config_changed"] is True
    changed = api.wait_event("config_changed", "tune")["data"]
    assert changed == {"target": "main", "commit": rev(repo, "main"), "path": ".para/config.json"}
    assert json.loads(project_file(repo).read_text()) == evil  # the main checkout was brought along
    assert not check_marker.exists()  # the landing itself ran the old (empty) configuration

    start_with_commit(api, "next")
    main_before = rev(repo, "main")
    rc, out = para_call("integrate", "--session", "next", cwd=repo)
    assert_untrusted(rc, out, repo, check)
    assert rev(repo, "main") == main_before and api.sessions()["next"]["status"] == "active"
    rc, out = para_call("dispatch", "job", "-p", "x", "--mode", "headless", cwd=repo)
    assert_untrusted(rc, out, repo, helper)
    rc, out = para_call("dispatch", "job", "-p", "x", "--agent", "claude", "--mode", "headless", cwd=repo)
    assert rc == 6 and out["error"]["data"]["key"] == "agents.claude", out
    assert "job" not in api.sessions()
    assert not check_marker.exists() and not claude_marker.exists() and not helper_marker.exists()

    shown = run_para("trust", "--show", cwd=repo).stdout
    assert shlex.join(check) in shown and shlex.join(helper) in shown and "refused" in shown
    approve(repo)
    rc, out = para_call("integrate", "--session", "next", cwd=repo)
    assert rc == 0 and check_marker.exists(), out
    assert out["integration"]["config_changed"] is False


@pytest.mark.parametrize("touches, expected", [(True, True), (False, False)], ids=["changes it", "does not"])
def test_an_integration_says_whether_it_changed_the_project_file(api, repo, touches, expected):
    wt = start_with_commit(api, "feat")
    if touches:
        commit_file(wt, ".para/config.json", json.dumps({"integrate": {"strategy": "merge"}}), "config")
    proc = run_para("integrate", "--session", "feat", cwd=repo)
    assert ("changed .para/config.json" in proc.stdout) is expected, proc.stdout
    assert ("para trust" in proc.stdout) is expected
    record = api.sessions()["feat"]["integration"]
    assert record["config_changed"] is expected
    assert ("config_changed" in event_kinds(api, "feat")) is expected


# ---- output ------------------------------------------------------------------------------------

def test_para_trust_output_human_and_json(repo, marks, store):
    """Each state of `para trust`, in both outputs: nothing to approve (no file; a file
    without commands), not approved (with the digest to approve), approved, already
    approved, revoked."""
    proc = run_para("trust", cwd=repo)
    assert proc.stdout.startswith(f"{project_file(repo)} does not exist.")
    assert trust(repo)["action"] == "shown" and not store.exists()

    write_project(repo, {"integrate": {"strategy": "merge"}})
    assert "defines no commands" in run_para("trust", cwd=repo).stdout
    assert trust(repo)["commands"] == []

    check, _ = marks("check")
    bot = {"command": ["bot", "--task", "{prompt_file}"], "headless": ["bot", "--batch", "{prompt}"],
           "skip_permissions": ["--yolo"]}
    path = write_project(repo, {"integrate": {"check": shlex.join(check)}, "agents": {"bot": bot}})
    expected = [{"key": "agents.bot.command", "profile": "bot", "argv": bot["command"]},
                {"key": "agents.bot.headless", "profile": "bot", "argv": bot["headless"]},
                {"key": "agents.bot.skip_permissions", "profile": "bot", "argv": bot["skip_permissions"]},
                {"key": "integrate.check", "argv": check}]
    shown = trust(repo, "--show")
    assert shown["action"] == "shown" and shown["approved"] is False and shown["commands"] == expected
    assert shown["file"] == str(path) and shown["repo"] == str(repo) and shown["refused"] == []
    human = run_para("trust", "--show", cwd=repo).stdout
    assert human == run_para("trust", cwd=repo).stdout  # showing is the default
    assert human.startswith("Not approved:") and f"para trust --approve {shown['sha256']}" in human
    for c in expected:
        assert f"{c['key']}" in human and shlex.join(c["argv"]) in human
    assert not store.exists()

    human = run_para("trust", "--approve", shown["sha256"], cwd=repo).stdout
    assert human.startswith(f"Approved the commands of {path} for {repo}:")
    assert shlex.join(check) in human and str(store) in human and "--revoke" in human
    again = trust(repo, "--approve", shown["sha256"])
    assert again["action"] == "already_approved" and again["approved"] is True
    assert run_para("trust", "--show", cwd=repo).stdout.startswith("Approved:")
    assert run_para("trust", "--revoke", cwd=repo).stdout.startswith("Revoked")
    assert run_para("trust", "--revoke", cwd=repo).stdout.startswith("Nothing to revoke")
    for both in (["--show", "--revoke"], ["--approve", shown["sha256"], "--revoke"]):
        assert run_para("trust", *both, cwd=repo, check=False).returncode == 2


def test_config_show_marks_project_commands_approved_or_not(repo, marks):
    argv, _ = marks("check")
    write_project(repo, {"integrate": {"check": shlex.join(argv), "strategy": "merge"}})
    values = para_call("config", "show", cwd=repo)[1]["values"]
    assert values["integrate.check"]["trusted"] is False
    assert "trusted" not in values["integrate.strategy"]  # not a command: never gated
    assert "NOT APPROVED" in [line for line in run_para("config", "show", cwd=repo).stdout.splitlines()
                              if line.startswith("integrate.check")][0]
    approve(repo)
    assert para_call("config", "get", "integrate.check", cwd=repo)[1]["trusted"] is True
    assert "(approved)" in run_para("config", "show", cwd=repo).stdout


async def test_mcp_reports_untrusted_with_the_hint_and_offers_no_way_to_approve(sidecar, repo, marks, tmp_path):
    """An AI client over MCP: the refusal reads `untrusted: …` with what to do (ask the
    user), there is no trust tool, and an integration that changed the project file
    carries a note saying so."""
    from mcp_util import call, call_error, mcp_client

    argv, marker = marks("check")
    api = Api(sidecar.socket, repo)
    wt = start_with_commit(api, "feat")
    async with mcp_client(repo) as c:
        assert not [t.name for t in (await c.list_tools()).tools if "trust" in t.name]
        commit_file(wt, ".para/config.json", json.dumps({"integrate": {"check": shlex.join(argv)}}), "config")
        landed = await call(c, "para_integrate", {"session": "feat"})
        assert landed["integration"]["config_changed"] is True and "para trust" in landed["note"]
        start_with_commit(api, "next", "next.txt")
        text = await call_error(c, "para_integrate", {"session": "next"})
    assert text.splitlines()[0].startswith("untrusted: ")
    assert "What to do:" in text and "para trust" in text and "ask them" in text
    assert not marker.exists()
