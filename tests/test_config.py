"""para_rpc.config through `para config` and through the operations it steers.

Layers, lowest first: defaults < user file ($PARA_CONFIG) < project file
(<repo>/.para/config.json) < PARA_* variables of the shell running `para`
(forwarded with each request) < command-line flags.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from para_rpc import config
from para_rpc.errors import Code

from conftest import commit_file, git, proc_environ, rev

pytestmark = pytest.mark.usefixtures("sidecar")
SHARED_SIDECAR = True  # one sidecar for the module (see conftest), so one user file: reset per test


@pytest.fixture(autouse=True)
def user_file() -> Path:
    """$PARA_CONFIG, absent at the start of every test."""
    path = Path(os.environ["PARA_CONFIG"])
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def project_file(repo) -> Path:
    return repo / ".para" / "config.json"


def write_json(path: Path, tree: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tree))


def get(para_json, key: str, **kw) -> dict:
    return para_json("config", "get", key, **kw)


# ---- reading -----------------------------------------------------------------------------

def test_every_key_has_its_default_when_nothing_is_configured(para, para_json, repo, user_file, project_file):
    shown = para_json("config", "show")
    assert set(shown["values"]) == set(config.KEYS)
    for key, (default, _, description) in config.KEYS.items():
        assert shown["values"][key] == {"value": default, "source": "default"}
        assert shown["descriptions"][key] == description
        assert shown["env"][config.env_name(key)] == key
    assert shown["paths"] == {"user": str(user_file), "project": str(project_file)}
    assert para("config", "get", "finish.squash").stdout == "true\n"
    assert "finish.squash" in para("config", "show").stdout


def test_layers_user_file_then_project_file_then_environment(sidecar, para_json, repo, user_file,
                                                             project_file):
    key = "finish.squash"
    assert get(para_json, key) == {"key": key, "value": True, "source": "default"}

    write_json(user_file, {"finish": {"squash": False}})
    assert get(para_json, key) == {"key": key, "value": False, "source": f"user:{user_file}"}

    write_json(project_file, {"finish": {"squash": True}})
    assert get(para_json, key) == {"key": key, "value": True, "source": f"project:{project_file}"}

    env = {"PARA_FINISH_SQUASH": "off"}
    assert get(para_json, key, env=env) == {"key": key, "value": False, "source": "env:PARA_FINISH_SQUASH"}
    # The variable reached the sidecar with the request, not through its own environment.
    assert "PARA_FINISH_SQUASH" not in proc_environ(sidecar.pid)
    assert get(para_json, key)["value"] is True


def test_keys_in_files_may_be_nested_or_dotted(para_json, repo, user_file):
    write_json(user_file, {"clean.archive_days": 7, "integrate": {"strategy": "merge"}})
    assert get(para_json, "clean.archive_days")["value"] == 7
    assert get(para_json, "integrate.strategy")["value"] == "merge"


def test_a_config_change_applies_to_the_next_operation_without_a_restart(sidecar, para_json, repo,
                                                                        project_file):
    git("branch", "develop", cwd=repo)
    git("checkout", "-q", "develop", cwd=repo)
    develop_tip = commit_file(repo, "d.txt", "d\n", "develop")
    git("checkout", "-q", "main", cwd=repo)
    assert para_json("start", "before")["base_branch"] == "main"
    write_json(project_file, {"base_branch": "develop"})
    after = para_json("start", "after")
    assert after["base_branch"] == "develop" and after["base_commit"] == develop_tip
    assert para_json("sidecar", "status")["pid"] == sidecar.pid


def test_environment_beats_project_file_and_flag_beats_environment(para_json, repo, project_file):
    for b in ("develop", "release"):
        git("branch", b, cwd=repo)
    write_json(project_file, {"base_branch": "develop"})
    assert para_json("start", "a")["base_branch"] == "develop"
    env = {"PARA_BASE_BRANCH": "release"}
    assert para_json("start", "b", env=env)["base_branch"] == "release"
    assert para_json("start", "c", "--base", "main", env=env)["base_branch"] == "main"


def make_commits(path: Path) -> None:
    commit_file(path, "one.txt", "1\n", "one")
    commit_file(path, "two.txt", "2\n", "two")


def test_squash_setting_and_flags_decide_how_finish_commits(para, para_json, repo, project_file):
    write_json(project_file, {"finish": {"squash": True}})
    base = rev(repo, "main")
    cases = [("env-off", {"PARA_FINISH_SQUASH": "false"}, [], 3),
             ("flag-on", {"PARA_FINISH_SQUASH": "false"}, ["--squash"], 1),
             ("project-on", {}, [], 1),
             ("flag-off", {}, ["--no-squash"], 3)]
    for name, env, flags, commits in cases:
        path = Path(para_json("start", name)["worktree"])
        make_commits(path)
        (path / "three.txt").write_text("3\n")
        para("finish", f"Finish {name}", *flags, cwd=path, env=env)
        assert git("rev-list", "--count", f"{base}..para/{name}", cwd=repo) == str(commits), name


# ---- writing -----------------------------------------------------------------------------

def test_backups_are_kept_at_least_a_day(para, para_json, repo, user_file):
    """`clean.backup_days = 0` would let the next `clean` delete the backup the previous
    `clean --force` just made of a branch it deleted (red team RB1): refused, nothing written."""
    r = para("config", "set", "clean.backup_days", "0", "--json", check=False)
    assert r.returncode != 0 and "clean.backup_days" in r.stdout, r.stdout
    assert not user_file.exists() or "backup_days" not in user_file.read_text()
    assert para_json("config", "set", "clean.backup_days", "1")["value"] == 1


def test_config_set_writes_the_user_file(para, para_json, repo, user_file):
    out = para("config", "set", "finish.squash", "false").stdout
    assert str(user_file) in out
    assert json.loads(user_file.read_text()) == {"finish": {"squash": False}}
    assert para_json("config", "set", "clean.archive_days", "7") == {
        "key": "clean.archive_days", "value": 7, "scope": "user", "path": str(user_file)}
    para("config", "set", "base_branch", "develop")
    assert json.loads(user_file.read_text()) == {"finish": {"squash": False}, "clean": {"archive_days": 7},
                                                 "base_branch": "develop"}
    para("config", "set", "base_branch", "null")
    assert get(para_json, "base_branch")["value"] is None
    assert get(para_json, "finish.squash") == {"key": "finish.squash", "value": False,
                                              "source": f"user:{user_file}"}


def test_config_set_project_writes_the_one_committable_para_file(para, para_json, repo, project_file):
    para("config", "set", "--project", "integrate.strategy", "merge")
    assert json.loads(project_file.read_text()) == {"integrate": {"strategy": "merge"}}
    assert get(para_json, "integrate.strategy")["source"] == f"project:{project_file}"
    # Unlike everything else under .para/, the project file can be committed.
    assert git("status", "--porcelain", "--untracked-files=all", cwd=repo) == "?? .para/config.json"


def test_config_path(para_json, repo, user_file, project_file, tmp_path):
    assert para_json("config", "path") == {"paths": {"user": str(user_file), "project": str(project_file)}}
    outside = tmp_path / "outside"
    outside.mkdir()
    assert para_json("config", "path", cwd=outside) == {"paths": {"user": str(user_file)}}


def test_user_file_location_follows_xdg_config_home_without_para_config(runtime_dir, para_json, repo,
                                                                       tmp_path):
    # No sidecar is running: the CLI starts one with this environment.
    xdg = tmp_path / "xdg"
    env = {"PARA_CONFIG": None, "XDG_CONFIG_HOME": str(xdg)}
    para_json("sidecar", "stop")
    paths = para_json("config", "path", env=env)["paths"]
    assert paths["user"] == str(xdg / "para" / "config.json")
    para_json("config", "set", "finish.squash", "false", env=env)
    assert json.loads((xdg / "para" / "config.json").read_text()) == {"finish": {"squash": False}}


# ---- invalid configuration ---------------------------------------------------------------

INVALID_VALUES = [
    ("finish.squash", "maybe"),
    ("clean.archive_days", "99999"),
    ("clean.archive_days", "-1"),
    ("clean.archive_days", "soon"),
    ("sidecar.idle_timeout", "true"),
    ("integrate.strategy", "yolo"),
    ("base_branch", "a..b"),
    ("branch_prefix", "two words"),
    ("branch_prefix", ""),
    # RB11: nested past Python's recursion limit was an internal RecursionError with a traceback
    ("agent.max_running", "[" * 3000 + "]" * 3000),
    ("integrate.check", "[" * 3000 + "]" * 3000),
    ("branch_prefix", "[" * 3000 + "]" * 3000),
]


@pytest.mark.parametrize("key, value", INVALID_VALUES, ids=[f"{k}={v[:20]}" for k, v in INVALID_VALUES])
def test_config_set_refuses_invalid_values_with_exit_6_and_changes_nothing(para, repo, user_file,
                                                                         project_file, key, value):
    write_json(user_file, {"clean": {"archive_days": 3}})
    before = user_file.read_bytes()
    proc = para("config", "set", "--", key, value, check=False)
    assert proc.returncode == Code.config_error.exit == 6, proc.stderr
    assert proc.stderr.startswith("para: ") and key in proc.stderr
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr
    assert user_file.read_bytes() == before
    proc = para("config", "set", "--project", "--", key, value, check=False)
    assert proc.returncode == 6
    assert not project_file.exists()


def test_unknown_keys_are_invalid_input(para, repo, user_file):
    for args in (["config", "set", "no.such", "1"], ["config", "get", "no.such"]):
        proc = para(*args, check=False)
        assert proc.returncode == Code.invalid_input.exit == 2
        assert "unknown config key 'no.such'" in proc.stderr
    assert not user_file.exists()


@pytest.mark.parametrize("env, needle", [
    ({"PARA_FINISH_SQUASH": "maybe"}, "PARA_FINISH_SQUASH"),
    ({"PARA_CLEAN_ARCHIVE_DAYS": "-5"}, "PARA_CLEAN_ARCHIVE_DAYS"),
    ({"PARA_BASE_BRANCH": "a..b"}, "PARA_BASE_BRANCH"),
], ids=["bool", "range", "branch"])
def test_an_invalid_environment_value_stops_commands_with_exit_6(para, repo, env, needle):
    for args in (["config", "show"], ["start", "x"]):
        proc = para(*args, check=False, env=env)
        assert proc.returncode == Code.config_error.exit, proc.stderr
        assert needle in proc.stderr
    assert "para/x" not in git("branch", "--list", "para/x", cwd=repo)
    assert not (repo / ".para" / "worktrees" / "x").exists()


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"no": {"such": 1}}', "unknown key 'no.such'"),
    ('{"finish": {"squash": "perhaps"}}', "finish.squash"),
    ('{"integrate": {"check": ' + "[" * 3000 + "]" * 3000 + "}}", "nested too deeply"),
], ids=["syntax", "not-an-object", "unknown-key", "bad-value", "too-deep"])
@pytest.mark.parametrize("layer", ["user", "project"])
def test_a_broken_config_file_is_named_and_nothing_is_created(para, repo, user_file, project_file, layer,
                                                             content, needle):
    path = user_file if layer == "user" else project_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    proc = para("start", "x", check=False)
    assert proc.returncode == Code.config_error.exit, proc.stderr
    assert str(path) in proc.stderr and needle in proc.stderr
    assert git("branch", "--list", "para/*", cwd=repo) == ""
    assert not (repo / ".para" / "worktrees" / "x").exists()
    assert path.read_text() == content


async def test_a_value_nested_too_deep_over_mcp_is_config_error_and_changes_nothing(sidecar, repo, user_file):
    """RB11 over MCP: para_config_set was an internal -32000 with a RecursionError traceback logged."""
    from mcp_util import mcp_client

    write_json(user_file, {"clean": {"archive_days": 3}})
    before = user_file.read_bytes()
    async with mcp_client(repo) as c:
        r = await c.call_tool("para_config_set", {"key": "agent.max_running", "value": "[" * 3000 + "]" * 3000})
    text = "\n".join(x.text for x in r.content if hasattr(x, "text"))
    assert r.is_error and r.structured_content is not None, text
    assert r.structured_content["name"] == "config_error" and "nested too deeply" in text, text
    assert user_file.read_bytes() == before
    log = sidecar.log_path.read_text()
    assert "RecursionError" not in log and "Traceback" not in log
