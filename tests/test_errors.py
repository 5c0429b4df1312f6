"""para_rpc.errors through every front end: bad input gives a clear message, a
documented exit status (para_rpc.errors.Code), no traceback, and changes nothing.

"Nothing" is checked on git itself (`git for-each-ref`, `git worktree list
--porcelain`, the main checkout's status), on `para list --all --json`, and on
the files around the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from para_rpc.errors import Code, ParaError

from conftest import (PARA_ARGV, cli_env, commit_file, full_state, git, make_repo, raw_request, rev, session_state,
                      sidecar_pids)

SHARED_SIDECAR = True  # one sidecar serves every test repository of this module (see conftest)

# ---- helpers -------------------------------------------------------------------------------


def files_under(root: Path) -> list[str]:
    """Every path under `root`, except git's internals and the SQLite files that para rewrites."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for n in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, n), root)
            if not rel.endswith((".db-wal", ".db-shm")):
                found.append(rel)
    return sorted(found)


def snapshot(repo: Path) -> dict[str, Any]:
    return {**full_state(repo), "files": files_under(repo.parent)}


def assert_para_error(proc: subprocess.CompletedProcess, code: Code, *needles: str) -> None:
    """One clear line `para: <message>` on stderr, the code's exit status, nothing on stdout."""
    assert proc.returncode == code.exit, f"expected {code.name} ({code.exit}), got {proc.returncode}: {proc.stderr}"
    assert proc.stderr.startswith("para: "), proc.stderr
    assert proc.stderr.count("\n") == 1, f"not one line: {proc.stderr!r}"
    assert proc.stdout == ""
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in {proc.stderr!r}"


@pytest.fixture
def baseline(sidecar, para, repo) -> dict[str, Any]:
    """The repository opened by para once (so `.para/` exists), and its state."""
    session_state(repo)
    return snapshot(repo)


def wt(repo: Path, name: str) -> Path:
    return repo / ".para" / "worktrees" / name


# ---- hostile session names ---------------------------------------------------------------------

# argv cannot carry NUL; it is covered over JSON-RPC below.
HOSTILE_NAMES = {
    "traversal": "../x",
    "deep traversal": "../../../etc/x",
    "absolute": "/tmp/x",
    "option": "-rf",
    "empty": "",
    "500 chars": "a" * 500,
    "Cyrillic a": "b\u0430d",
    "full-width": "\uff46\uff4f\uff4f",
    "zero-width space": "foo\u200bbar",
    "newline": "foo\nbar",
    "slash": "a/b",
    "dot": ".",
    "shell": "$(touch pwned)",
    "space": "two words",
}


@pytest.mark.parametrize("name", list(HOSTILE_NAMES.values()), ids=list(HOSTILE_NAMES))
def test_start_refuses_hostile_names_and_changes_nothing(para, repo, baseline, name):
    proc = para("start", "--", name, check=False)
    assert_para_error(proc, Code.invalid_input, "session name")
    assert snapshot(repo) == baseline
    assert not Path(repo.parent, "pwned").exists() and not Path(repo, "pwned").exists()


def test_hostile_name_error_as_json(para, repo, baseline):
    proc = para("start", "--json", "--", "../x", check=False)
    assert proc.returncode == Code.invalid_input.exit
    assert proc.stderr == ""
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "invalid_input" and "'../x'" in err["message"]
    assert snapshot(repo) == baseline


SESSION_VERBS = {
    "para/show": {},
    "para/finish": {"message": "m"},
    "para/cancel": {},
    "para/resume": {},
    "para/recover": {},
}
RPC_HOSTILE = [*HOSTILE_NAMES.values(), "foo\0bar", "x" * 100_000]


@pytest.mark.parametrize("method", list(SESSION_VERBS))
def test_every_session_verb_refuses_hostile_names_over_json_rpc(rpc, para, repo, baseline, method, svc):
    svc("start", name="real")
    before = snapshot(repo)
    for name in RPC_HOSTILE:
        with pytest.raises(ParaError) as exc:
            rpc.request(method, {"cwd": str(repo), "session": name, **SESSION_VERBS[method]})
        assert exc.value.code is Code.invalid_input, (name[:20], exc.value)
        assert exc.value.message.isprintable()
    assert snapshot(repo) == before


def test_start_refuses_nul_over_json_rpc(rpc, repo, baseline):
    reply = raw_request(rpc, "para/start", {"cwd": str(repo), "name": "a\0b"})
    assert reply["error"]["code"] == Code.invalid_input.rpc
    assert reply["error"]["data"]["code"] == "invalid_input"
    assert snapshot(repo) == baseline


# Bytes that are not UTF-8 (Python hands them on as lone surrogates, JSON as `\udcff`): refused
# before anything is stored, naming what holds them (red team rt1: the report was stored, then
# the store failed on it, `internal` with a traceback).
NOT_UTF8_ARGV = {
    "a report's task": (["status", b"x\xff", "--session", "s"], "params.task"),
    "an integration's message": (["integrate", b"x\xff", "--session", "s"], "params.message"),
    "a message to an agent": (["send", "s", b"x\xff"], "params.message"),
}


@pytest.mark.parametrize(("argv", "where"), list(NOT_UTF8_ARGV.values()), ids=list(NOT_UTF8_ARGV))
def test_an_argument_that_is_not_utf8_is_refused_and_changes_nothing(para, repo, baseline, sidecar,
                                                                     argv: list[Any], where: str) -> None:
    para("start", "s")
    before = snapshot(repo)
    proc = subprocess.run([*PARA_ARGV, *argv], cwd=repo, env=cli_env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert_para_error(proc, Code.invalid_input, where, "not valid UTF-8")
    assert snapshot(repo) == before
    assert "Traceback" not in sidecar.log_path.read_text()


def test_a_directory_whose_name_is_not_utf8_is_refused_clearly(para, sidecar, tmp_path: Path) -> None:
    where = Path(os.fsdecode(bytes(tmp_path) + b"/d\xff"))
    make_repo(where)
    proc = subprocess.run([*PARA_ARGV, "list"], cwd=where, env=cli_env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert_para_error(proc, Code.invalid_input, "params.cwd", "not valid UTF-8")
    assert "Traceback" not in sidecar.log_path.read_text()


def test_option_like_name_without_separator_is_a_usage_error(para, repo, baseline):
    proc = para("start", "-rf", check=False)
    assert proc.returncode == 2
    assert "No such option" in proc.stderr
    assert snapshot(repo) == baseline


# ---- where para is run -------------------------------------------------------------------------

def test_not_a_repository(sidecar, para, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for args in (["list"], ["start", "x"], ["show", "x"], ["clean"]):
        assert_para_error(para(*args, cwd=plain, check=False), Code.not_a_repository,
                          f"not a git repository: {plain}")
    assert list(plain.iterdir()) == []


def test_a_repository_with_no_commits(sidecar, para, tmp_path):
    empty = tmp_path / "empty"
    git("init", "-q", "-b", "main", str(empty), cwd=tmp_path)
    empty = empty.resolve()
    assert_para_error(para("start", "x", cwd=empty, check=False), Code.not_a_repository,
                      "has no commits yet")
    assert git("for-each-ref", cwd=empty) == ""
    assert git("worktree", "list", "--porcelain", cwd=empty).count("worktree ") == 1
    assert git("status", "--porcelain", "--untracked-files=all", cwd=empty) == ""


def test_detached_head_without_main_or_master_needs_base(sidecar, para, para_json, tmp_path):
    r = make_repo(tmp_path / "trunky", branch="trunk")
    git("checkout", "-q", "--detach", cwd=r)
    para("list", cwd=r)
    before = snapshot(r)
    assert_para_error(para("start", "x", cwd=r, check=False), Code.not_found,
                      "HEAD is detached", "--base", "trunk")
    assert snapshot(r) == before
    # The hint works.
    assert para_json("start", "x", "--base", "trunk", cwd=r)["base_commit"] == rev(r, "trunk")


def test_a_bare_repository(sidecar, para, tmp_path):
    bare = tmp_path / "bare.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    refs = git("for-each-ref", cwd=bare)
    assert_para_error(para("start", "x", cwd=bare, check=False), Code.not_a_repository, "bare repository")
    assert git("for-each-ref", cwd=bare) == refs
    assert not (bare / ".para").exists()


def test_inside_the_git_directory(para, repo, baseline):
    assert_para_error(para("start", "x", cwd=repo / ".git", check=False), Code.not_a_repository,
                      "not a working tree")
    assert snapshot(repo) == baseline


def test_a_cwd_that_does_not_exist_over_json_rpc(rpc, tmp_path):
    with pytest.raises(ParaError) as exc:
        rpc.request("para/list", {"cwd": str(tmp_path / "nowhere")})
    assert exc.value.code is Code.not_a_repository


def test_a_relative_cwd_over_json_rpc(rpc, repo):
    with pytest.raises(ParaError) as exc:
        rpc.request("para/list", {"cwd": "relative/dir"})
    assert exc.value.code is Code.invalid_input and "absolute" in exc.value.message


# ---- unknown things --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["show", "nope"], ["finish", "msg", "--session", "nope"], ["cancel", "nope"],
                                  ["resume", "nope"], ["recover", "nope"]], ids=lambda a: a[0])
def test_unknown_session(para, repo, baseline, args):
    assert_para_error(para(*args, check=False), Code.not_found, "'nope'")
    assert snapshot(repo) == baseline


def test_unknown_session_message_lists_the_existing_ones(para, repo, baseline, svc):
    svc("start", name="known")
    assert_para_error(para("show", "nope", check=False), Code.not_found, "no session named 'nope'", "known")


def test_base_branch_that_does_not_exist(para, repo, baseline):
    assert_para_error(para("start", "x", "--base", "nosuch", check=False), Code.not_found,
                      "base branch 'nosuch' does not exist", "main")
    assert snapshot(repo) == baseline


def test_base_branch_that_is_not_a_valid_name(para, repo, baseline):
    assert_para_error(para("start", "x", "--base", "a..b", check=False), Code.invalid_input, "'a..b'")
    assert snapshot(repo) == baseline


def test_configured_base_branch_that_does_not_exist(para, repo, baseline):
    proc = para("start", "x", check=False, env={"PARA_BASE_BRANCH": "gone"})
    assert_para_error(proc, Code.not_found, "base branch 'gone' does not exist")
    assert snapshot(repo) == baseline


# ---- things in the way ------------------------------------------------------------------------

def test_existing_branch_para_x_is_not_taken_over(para, repo, baseline):
    git("branch", "para/x", cwd=repo)
    git("checkout", "-q", "para/x", cwd=repo)
    commit_file(repo, "mine.txt", "mine\n", "someone's work on para/x")
    git("checkout", "-q", "main", cwd=repo)
    before = snapshot(repo)
    assert_para_error(para("start", "x", check=False), Code.already_exists,
                      "branch 'para/x' already exists", "para resume", "para recover")
    assert snapshot(repo) == before


def test_the_commands_named_for_an_existing_branch_adopt_it(para, para_json, repo, baseline):
    """The refusal above names `para resume x`: following that advice adopts the existing
    branch as a session (a note says so) and gives it a worktree, with its commit; nothing
    else is needed. (`para recover` adopts *archived* branches, para/archived/*/x.)"""
    git("branch", "para/x", cwd=repo)
    git("checkout", "-q", "para/x", cwd=repo)
    mine = commit_file(repo, "mine.txt", "mine\n", "someone's work on para/x")
    git("checkout", "-q", "main", cwd=repo)
    message = para("start", "x", check=False).stderr
    assert "para resume x" in message, message
    resumed = para_json("resume", "x")
    assert resumed["recreated"] is True and resumed["state"] == "active"
    s = para_json("show", "x")
    assert s["branch"] == "para/x" and s["head"] == mine and s["status"] == "active"
    assert "adopted existing branch para/x" in s["notes"]
    assert (Path(s["worktree"]) / "mine.txt").read_text() == "mine\n"


def test_the_archive_namespace_is_reserved(para, svc, repo, baseline):
    assert_para_error(para("start", "archived", check=False), Code.invalid_input, "reserved")
    assert snapshot(repo) == baseline
    # So cancelling (which archives under para/archived/) keeps working.
    svc("start", name="other")
    assert svc("cancel", session="other")["status"] == "cancelled"


def test_existing_worktree_path_is_not_touched(para, repo, baseline):
    path = wt(repo, "x")
    path.mkdir(parents=True)
    (path / "precious.txt").write_text("precious\n")
    before = snapshot(repo)
    assert_para_error(para("start", "x", check=False), Code.already_exists, str(path), "already exists")
    assert snapshot(repo) == before
    assert (path / "precious.txt").read_text() == "precious\n"


def test_existing_session_names_resume(para, repo, baseline, svc):
    svc("start", name="x")
    before = snapshot(repo)
    assert_para_error(para("start", "x", check=False), Code.already_exists, "para resume x")
    assert snapshot(repo) == before


def test_cancelled_session_name_names_recover(para, repo, baseline, svc):
    svc("start", name="x")
    svc("cancel", session="x")
    before = snapshot(repo)
    assert_para_error(para("start", "x", check=False), Code.already_exists, "para recover x")
    assert snapshot(repo) == before


# ---- wrong state ---------------------------------------------------------------------------------

def test_finish_of_a_review_session(para, repo, baseline, svc):
    svc("start", name="x")
    (wt(repo, "x") / "f").write_text("f\n")
    svc("finish", message="done", session="x")
    before = snapshot(repo)
    assert_para_error(para("finish", "again", "--session", "x", check=False), Code.wrong_state, "review")
    assert snapshot(repo) == before


def test_cancel_of_a_cancelled_session(para, repo, baseline, svc):
    svc("start", name="x")
    svc("cancel", session="x")
    before = snapshot(repo)
    assert_para_error(para("cancel", "x", check=False), Code.wrong_state, "cancelled")
    assert snapshot(repo) == before


def test_recover_of_an_active_session(para, repo, baseline, svc):
    svc("start", name="x")
    before = snapshot(repo)
    assert_para_error(para("recover", "x", check=False), Code.wrong_state, "para resume x")
    assert snapshot(repo) == before


def test_resume_of_a_cancelled_session(para, repo, baseline, svc):
    svc("start", name="x")
    svc("cancel", session="x")
    before = snapshot(repo)
    assert_para_error(para("resume", "x", check=False), Code.wrong_state, "para recover x")
    assert snapshot(repo) == before


def test_recover_with_several_cancelled_sessions_needs_a_name(para, repo, baseline, svc):
    for n in ("a", "b"):
        svc("start", name=n)
        svc("cancel", session=n)
    before = snapshot(repo)
    assert_para_error(para("recover", check=False), Code.invalid_input, "a, b")
    assert snapshot(repo) == before


def test_finish_with_a_missing_worktree_names_resume(para, repo, baseline, svc):
    svc("start", name="x")
    git("worktree", "remove", str(wt(repo, "x")), cwd=repo)
    before = snapshot(repo)
    assert_para_error(para("finish", "m", "--session", "x", check=False), Code.wrong_state, "para resume x")
    assert snapshot(repo) == before


# ---- finish input ----------------------------------------------------------------------------

@pytest.fixture
def dirty_session(para, repo, baseline, svc) -> Path:
    """Session `x` with a commit, a tracked edit and an untracked file."""
    svc("start", name="x")
    path = wt(repo, "x")
    commit_file(path, "c.txt", "c\n", "a commit")
    (path / "README.md").write_text("edited\n")
    (path / "new.txt").write_text("new\n")
    return path


@pytest.mark.parametrize("args, code, needle", [
    (["finish", ""], Code.invalid_input, "message is empty"),
    (["finish", "  \n "], Code.invalid_input, "message is empty"),
    (["finish", "m", "--branch", "a..b"], Code.invalid_input, "'a..b'"),
    (["finish", "m", "--branch", "main"], Code.already_exists, "'main' already exists"),
], ids=["empty message", "blank message", "bad branch", "existing branch"])
def test_refused_finish_leaves_the_work_uncommitted(para, repo, dirty_session, args, code, needle):
    before = snapshot(repo)
    status = git("status", "--porcelain", cwd=dirty_session)
    assert_para_error(para(*args, cwd=dirty_session, check=False), code, needle)
    assert snapshot(repo) == before
    assert git("status", "--porcelain", cwd=dirty_session) == status


def test_finish_with_a_detached_head_in_the_worktree(para, repo, dirty_session):
    git("checkout", "-q", "--detach", cwd=dirty_session)
    before = snapshot(repo)
    assert_para_error(para("finish", "m", cwd=dirty_session, check=False), Code.wrong_state, "detached")
    assert snapshot(repo) == before


def test_finish_message_with_nul_over_json_rpc(rpc, repo, dirty_session):
    before = snapshot(repo)
    with pytest.raises(ParaError) as exc:
        rpc.request("para/finish", {"cwd": str(dirty_session), "message": "a\0b"})
    assert exc.value.code is Code.invalid_input
    assert snapshot(repo) == before


def test_finish_outside_a_worktree_without_session(para, repo, baseline, svc):
    svc("start", name="x")
    before = snapshot(repo)
    assert_para_error(para("finish", "m", check=False), Code.invalid_input, "--session")
    assert snapshot(repo) == before


def test_missing_arguments_are_usage_errors_not_prompts(para, repo, baseline):
    proc = para("finish", check=False)  # stdin is closed: a prompt would fail or hang
    assert proc.returncode == 2 and "Missing argument" in proc.stderr
    assert snapshot(repo) == baseline


# ---- JSON-RPC params ---------------------------------------------------------------------------

BAD_PARAMS = {
    "unknown field": ("para/start", {"cwd": "{repo}", "bogus": 1}),
    "cwd not a string": ("para/list", {"cwd": 42}),
    "name not a string": ("para/start", {"cwd": "{repo}", "name": 5}),
    "bool as string": ("para/list", {"cwd": "{repo}", "all": "yes"}),
    "missing cwd": ("para/list", {}),
    "null params": ("para/list", None),
    "array params": ("para/start", ["{repo}", "x"]),
    "env not a mapping": ("para/start", {"cwd": "{repo}", "env": ["PARA_X"]}),
    "bad enum": ("para/config", {"action": "delete"}),
    "subscribe bad type": ("para/subscribe", {"events": "all"}),
    "shutdown unknown field": ("para/shutdown", {"now": True}),
    "message missing": ("para/finish", {"cwd": "{repo}", "session": "x"}),
}


def _fill(value: Any, repo: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{repo}", str(repo))
    if isinstance(value, dict):
        return {k: _fill(v, repo) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, repo) for v in value]
    return value


@pytest.mark.parametrize("method, params", list(BAD_PARAMS.values()), ids=list(BAD_PARAMS))
def test_malformed_params_are_invalid_params_not_a_crash(sidecar, rpc, repo, baseline, method, params):
    reply = raw_request(rpc, method, _fill(params, repo))
    assert reply["error"]["code"] == -32602, reply
    assert method in reply["error"]["message"]
    # The sidecar and this connection live on, and nothing changed.
    assert rpc.request("para/hello", {})["pid"] == sidecar.pid
    assert sidecar.proc.poll() is None
    assert snapshot(repo) == baseline


def test_invalid_params_reach_the_client_as_invalid_input(rpc, repo):
    with pytest.raises(ParaError) as exc:
        rpc.request("para/start", {"cwd": str(repo), "bogus": 1})
    assert exc.value.code is Code.invalid_input and "bogus" in exc.value.message


# ---- JSON output and the environment ---------------------------------------------------------------

@pytest.mark.parametrize("args, code", [
    (["show", "nope"], Code.not_found),
    (["start", "x", "--base", "nosuch"], Code.not_found),
    (["finish", "m"], Code.invalid_input),
    (["config", "get", "nope"], Code.invalid_input),
    (["list"], Code.not_a_repository),
], ids=["show", "start", "finish", "config", "list-fast-path"])
def test_json_errors_are_printed_as_json(sidecar, para, repo, tmp_path, args, code):
    cwd = tmp_path if args == ["list"] else repo
    proc = para(*args, "--json", cwd=cwd, check=False)
    assert proc.returncode == code.exit
    assert proc.stderr == ""
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == code.name
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["data"], dict)


def test_an_unusable_runtime_directory_is_refused(para, repo, runtime_dir, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "rt-link"
    link.symlink_to(target)
    proc = para("list", check=False, env={"PARA_RUNTIME_DIR": str(link)})
    assert_para_error(proc, Code.sidecar_unavailable, "not a directory owned by you")
    assert list(target.iterdir()) == []


def test_a_runtime_path_that_is_a_file(para, repo, tmp_path):
    """PARA_RUNTIME_DIR names a file: refused, and nothing is created, replaced or started."""
    f = tmp_path / "a-file"
    f.write_text("mine\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_para_error(para("list", check=False, env={"PARA_RUNTIME_DIR": str(f)}), Code.sidecar_unavailable)
    assert f.is_file() and f.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sidecar_pids(f) == []
    assert not (repo / ".para").exists()  # no sidecar ever looked at the repository


def test_config_edit_without_a_terminal_does_not_start_an_editor(sidecar, para, repo, tmp_path):
    marker = tmp_path / "editor-ran"
    editor = tmp_path / "editor.sh"
    editor.write_text(f"#!/bin/sh\ntouch {marker}\n")
    editor.chmod(0o755)
    proc = para("config", "edit", check=False, env={"VISUAL": str(editor), "EDITOR": str(editor)})
    assert_para_error(proc, Code.invalid_input, "not a terminal")
    assert not marker.exists()


def test_exit_statuses_and_rpc_codes_are_distinct_and_in_range():
    # Exit statuses stay clear of 0 (success) and of the shell's 126+ (not found, signals).
    assert all(1 <= c.exit <= 125 for c in Code)
    # JSON-RPC codes sit in the server-error range and never collide.
    assert all(-32099 <= c.rpc <= -32000 for c in Code)
    assert len({c.rpc for c in Code}) == len(Code)
    for c in Code:
        assert ParaError.from_rpc(ParaError(c, "m").to_rpc()).code is c
