"""A repository Para used (issue 14): its sessions become para's on first contact, every
command works on them, and nothing of Para's is deleted.

The repository is prepared the way Para leaves it: `.para/state/<name>.state` JSON files,
worktrees under `.para/worktrees/`, branches `para/<name>`, archives under
`para/archived/<stamp>/<name>`, Para's `.para/.gitignore`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import commit_file, git, rev

SHARED_SIDECAR = True


def para_state(repo: Path, stem: str, status: str, created_at: str = "2025-01-01T12:00:00Z", **over: str) -> Path:
    """`.para/state/<stem>.state` as Para writes it (`over` replaces fields)."""
    state = {"name": stem, "branch": f"para/{stem}", "worktree_path": str(repo / ".para" / "worktrees" / stem),
             "created_at": created_at, "status": status, **over}
    path = repo / ".para" / "state" / f"{stem}.state"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))
    return path


def commit_on(repo: Path, branch: str, path: str, content: str, message: str) -> None:
    """A commit on `branch` made in a throwaway worktree (the main checkout stays on main)."""
    scratch = repo.parent / f"scratch-{branch.replace('/', '-')}"
    git("worktree", "add", "-q", str(scratch), branch, cwd=repo)
    commit_file(scratch, path, content, message)
    git("worktree", "remove", str(scratch), cwd=repo)


@pytest.fixture
def para_repo(repo: Path) -> Path:
    """Para's leftovers: `live` Active with a worktree and a commit, `done` Finished (branch
    only), `gone` Cancelled (archive only), `old` an archive Para kept without a state file."""
    (repo / ".para").mkdir(exist_ok=True)
    (repo / ".para" / ".gitignore").write_text("# Para\n*\n!.gitignore\n")
    git("worktree", "add", "-q", "-b", "para/live", str(repo / ".para" / "worktrees" / "live"), cwd=repo)
    commit_file(repo / ".para" / "worktrees" / "live", "live.txt", "live\n", "live work")
    git("branch", "para/done", cwd=repo)
    commit_on(repo, "para/done", "done.txt", "done\n", "done work")
    git("branch", "para/archived/20250101-120000/gone", cwd=repo)
    commit_on(repo, "para/archived/20250101-120000/gone", "gone.txt", "gone\n", "cancelled work")
    para_state(repo, "live", "Active", created_at="2025-03-04T05:06:07Z")
    para_state(repo, "done", "Finished")
    para_state(repo, "gone", "Cancelled")
    return repo


def para_files(repo: Path) -> dict[str, bytes]:
    state = repo / ".para" / "state"
    return {p.name: p.read_bytes() for p in state.iterdir()} | {".gitignore": (repo / ".para" / ".gitignore").read_bytes()}


def test_para_sessions_are_para_sessions_on_first_contact(sidecar, para, para_json, para_repo):
    before = para_files(para_repo)
    listed = {s["name"]: s for s in para_json("list")["sessions"]}
    assert {n: listed[n]["status"] for n in ("live", "done")} == {"live": "active", "done": "review"}
    assert listed["live"]["worktree"] == str(para_repo / ".para" / "worktrees" / "live")
    assert listed["live"]["created_at"] == 1741064767.0  # Para's created_at, not the time of adoption
    gone = para_json("show", "gone")
    assert (gone["status"], gone["archived_branch"]) == ("cancelled", "para/archived/20250101-120000/gone")
    # Running it again adopts nothing twice and says what it already has.
    again = para_json("adopt")
    assert (again["adopted"], sorted(again["already"]), again["left"]) == ([], ["done", "gone", "live"], [])
    assert para_files(para_repo) == before  # Para's files are left as they are


def test_every_command_works_on_adopted_sessions(sidecar, para, para_json, para_repo):
    landed = para_json("integrate", "live lands", "-s", "live")
    assert landed["status"] == "integrated"
    assert git("show", "main:live.txt", cwd=para_repo) == "live"
    resumed = para_json("resume", "done")
    assert Path(resumed["worktree"], "done.txt").read_text() == "done\n"
    recovered = para_json("recover", "gone")
    assert recovered["status"] == "active" and Path(recovered["worktree"], "gone.txt").read_text() == "gone\n"


def test_clean_keeps_what_para_left_and_says_why(sidecar, para, para_json, para_repo):
    git("branch", "para/archived/20250101-120000/old", cwd=para_repo)  # no state file: para's rules
    para_state(para_repo, "stray", "Active")  # its branch is gone: left, and its name kept in mind
    git("branch", "para/archived/20250101-120000/stray", cwd=para_repo)
    archives = {b: rev(para_repo, b) for b in ("para/archived/20250101-120000/gone",
                                               "para/archived/20250101-120000/stray")}
    result = para_json("clean")
    kept = {k["branch"]: k["why_kept"] for k in result["kept"]}
    for branch, sha in archives.items():
        assert "Para's state file" in kept[branch] and rev(para_repo, branch) == sha
    assert [a["branch"] for a in result["actions"] if a["kind"] == "delete_branch"] == [
        "para/archived/20250101-120000/old"]
    human = para("clean", "--dry-run").stdout
    assert "kept para/archived/20250101-120000/gone: Para's state file" in human


def test_adopt_reports_what_it_left_and_why(sidecar, para, para_json, para_repo, tmp_path):
    state = para_repo / ".para" / "state"
    (state / "junk.state").write_text("not json")
    para_state(para_repo, "nobranch", "Active")
    para_state(para_repo, "renamed", "Active", name="other")
    para_state(para_repo, "hostile", "Active", branch="--upload-pack=touch /tmp/x")
    para_state(para_repo, "odd", "Paused")
    # The main checkout and the base branch are never a session (cancel would commit the user's
    # uncommitted work on main): found by our red team.
    para_state(para_repo, "main", "Active", branch="main", worktree_path=str(para_repo))
    git("branch", "develop", cwd=para_repo)
    para_state(para_repo, "dev", "Finished", branch="develop")  # cancel would rename develop away
    secret = tmp_path / "secret"
    secret.write_text(json.dumps({"name": "link", "branch": "para/live", "worktree_path": "/", "status": "Active"}))
    (state / "link.state").symlink_to(secret)
    os.mkfifo(state / "fifo.state")
    result = para_json("adopt")
    why = {x["session"]: x["why"] for x in result["left"]}
    assert set(why) == {"junk", "nobranch", "renamed", "hostile", "odd", "link", "fifo", "main", "dev"}, why
    assert "is not para/main, the session branch para would use" in why["main"]
    assert "is not para/dev" in why["dev"]
    assert "no longer exists" in why["nobranch"] and "file name" in why["renamed"]
    assert "Paused" in why["odd"] and "not a Para state file" in why["junk"]
    assert {s["name"] for s in para_json("list")["sessions"]} == {"live", "done"}
    human = para("adopt").stdout
    assert f"left nobranch ({state / 'nobranch.state'}): its branch para/nobranch no longer exists" in human


PARA_USER_CONFIG = {  # what Para writes to ~/.config/para/config.json, the file para reads too
    "ide": {"name": "cursor", "command": "cursor", "user_data_dir": None,
            "wrapper": {"enabled": False, "name": "", "command": ""}},
    "directories": {"subtrees_dir": ".para/worktrees", "state_dir": ".para/state"},
    "git": {"branch_prefix": "para", "auto_stage": True, "auto_commit": True,
            "default_integration_strategy": "Merge"},
    "session": {"default_name_format": "%Y%m%d-%H%M%S", "preserve_on_finish": False, "auto_cleanup_days": 12},
}


def test_paras_own_config_files_are_read_not_refused(sidecar, para, para_json, repo):
    """Para keeps its settings where para keeps its own (~/.config/para/config.json,
    .para/config.json): a Para user's files work as they are. The settings para shares are
    taken over, Para's others left alone, and nothing is rewritten."""
    user = Path(os.environ["PARA_CONFIG"])
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(json.dumps(PARA_USER_CONFIG))
    project = repo / ".para" / "config.json"
    project.parent.mkdir(parents=True, exist_ok=True)
    project.write_text(json.dumps({"sandbox": {"enabled": True}, "ide": {"preferred": "code"}}))
    before = (user.read_text(), project.read_text())
    para("start", "s1")
    assert para_json("config", "get", "integrate.strategy")["value"] == "merge"
    assert para_json("config", "get", "clean.archive_days")["value"] == 12
    assert para_json("config", "get", "branch_prefix")["value"] == "para"
    para("config", "set", "finish.squash", "false")  # para's own key, written next to Para's
    assert json.loads(user.read_text())["ide"] == PARA_USER_CONFIG["ide"]
    assert (user.read_text() != before[0]) and project.read_text() == before[1]
