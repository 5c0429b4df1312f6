"""Nothing is lost (S2 red team, round 4): repositories inside repositories inside a
session's worktree, backups never overwritten, and backups expired by when they were made.

Each test re-creates an attack through the real CLI and the real sidecar, on real git
repositories; each failed on the code before its fix.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import commit_file, git, rev
from para_rpc.errors import Code
from safety_util import FILE_PROTOCOL, add_submodule, assert_error, make_source, nested_repo, refs, sessions, show, wt

SHARED_SIDECAR = True


# ---- repositories inside repositories (item 1) ----------------------------------------------

def test_cancel_saves_a_repository_nested_inside_a_nested_repository(sidecar, para, para_json, repo):
    """`git init inner` in the session, and inside it `git init deeper` (an agent vendoring a
    library that vendors another): cancel used to save `inner` only, its snapshot recording
    `deeper` as a bare gitlink, so deeper's commit and files went with the worktree."""
    para("start", "nn")
    path = wt(repo, "nn")
    inner = nested_repo(path, "inner")
    deeper = nested_repo(inner, "deeper")
    deeper_head = rev(deeper, "HEAD")
    (deeper / "draft.txt").write_text("uncommitted in the deepest repository\n")
    (inner / "u.txt").write_text("uncommitted in inner\n")
    result = para_json("cancel", "nn")
    (saved,) = [b for b in result["backups"] if b["what"] == "nested"]
    assert saved["path"] == "inner"
    by_name = {r.split("/sub/", 1)[1]: r for r in saved["refs"]}
    assert rev(repo, by_name["inner/sub/deeper/HEAD"]) == deeper_head
    assert show(repo, f"{by_name['inner/sub/deeper/wip']}:draft.txt") == "uncommitted in the deepest repository\n"
    assert show(repo, f"{by_name['inner/sub/deeper/wip']}:p.txt") == "p\n"
    # inner's own snapshot has its file and no gitlink for deeper (saved on its own).
    assert show(repo, f"{by_name['inner/wip']}:u.txt") == "uncommitted in inner\n"
    assert "deeper" not in git("ls-tree", "--name-only", by_name["inner/wip"], cwd=repo).split()
    assert refs(repo, "refs/para/backup/nn/") == saved["refs"]


# How the place of the clone is ignored: .gitignore, and what else the place holds.
IGNORED_PLACES = {
    "a directory pattern": ("vendor/\n", {}),
    "a directory pattern, deeper": ("vendor/\n", {"vendor/a/b/keep.txt": "x\n"}),
    "only ignored files around it": ("*.o\n", {"vendor/a.o": "o\n"}),
    "ignored files in the clone too": ("*.o\nlib/\n", {"vendor/a.o": "o\n", "vendor/lib/x.o": "o\n"}),
    "a pattern naming the clone": ("lib\n", {"vendor/readme.txt": "r\n"}),
    "info/exclude": (None, {}),
}


@pytest.mark.parametrize("place", list(IGNORED_PLACES))
def test_cancel_saves_a_repository_cloned_into_an_ignored_directory(sidecar, para, para_json, repo, place):
    """`vendor/` is ignored and an agent cloned a library there and committed a fix: git's
    status never shows it, so cancel used to delete it with the worktree, commit and all.
    (However the place is ignored: git names an ignored directory, or the clone as untracked.)"""
    ignore, files = IGNORED_PLACES[place]
    if ignore is None:
        exclude = Path(git("rev-parse", "--path-format=absolute", "--git-path", "info/exclude", cwd=repo))
        exclude.write_text(exclude.read_text() + "vendor/\n")
    else:
        commit_file(repo, ".gitignore", ignore, "ignore vendor")
    para("start", "ig")
    path = wt(repo, "ig")
    (path / "vendor").mkdir()
    lib = nested_repo(path / "vendor", "lib")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    head = commit_file(lib, "fix.txt", "the agent's fix\n", "a commit only this clone has")
    # A symlinked directory in an ignored place is not followed: it belongs elsewhere.
    (path / "vendor" / "elsewhere").symlink_to(repo)
    result = para_json("cancel", "ig")
    (saved,) = [b for b in result["backups"] if b["what"] == "nested"]
    assert saved["path"] == "vendor/lib"
    (kept,) = [r for r in saved["refs"] if r.endswith("/HEAD")]
    assert rev(repo, kept) == head
    assert show(repo, f"{kept}:fix.txt") == "the agent's fix\n"


# how a repository at a path that is not UTF-8 ("caf\xe9": Latin-1) comes to be in a worktree
NOT_UTF8 = {"added as a gitlink": ".", "untracked": None, "in an ignored directory": "vendor"}


@pytest.mark.parametrize("how", list(NOT_UTF8))
def test_a_repository_at_a_path_that_is_not_utf8_is_never_removed_unsaved(sidecar, para, repo, how):
    """(Red team rt1 F3.) Git's names are read as UTF-8, U+FFFD for what is not: such a path
    named nothing on disk, and a clone there with a commit of its own was deleted with the
    worktree, unsaved. Cancel and integrate now refuse, naming it, with nothing changed;
    renamed, it is saved as any nested repository is."""
    para("start", "nu")
    path = wt(repo, "nu")
    where = NOT_UTF8[how]
    if where == "vendor":
        commit_file(path, ".gitignore", "vendor/\n", "ignore vendor")
        (path / "vendor").mkdir()
    top = os.fsencode(path / (where or "."))
    raw = os.path.join(top, b"caf\xe9")
    subprocess.run(["git", "init", "-q", raw], check=True, capture_output=True)
    inner = Path(os.fsdecode(raw))
    head = commit_file(inner, "p.txt", "p\n", "a commit only this clone has")
    if where == ".":
        subprocess.run(["git", "add", b"caf\xe9"], cwd=path, check=True, capture_output=True)
        git("commit", "-q", "-m", "add the clone", cwd=path)
    for argv in (("cancel", "nu"), ("integrate", "done", "--session", "nu")):
        out = para(*argv, check=False)
        assert_error(out, Code.wrong_state, "not UTF-8")
        assert inner.is_dir() and rev(inner, "HEAD") == head
    os.rename(raw, os.path.join(top, b"cafe"))
    para("cancel", "nu")
    assert head in git("for-each-ref", "--format=%(objectname)", "refs/para/backup/nu/", cwd=repo).split()


@pytest.fixture
def two_level_submodule(tmp_path: Path, repo: Path) -> None:
    """`sm` is a submodule whose source has a submodule `leaf` of its own."""
    leaf = make_source(tmp_path, "leaf")
    mid_bare = tmp_path / "mid.git"
    git("init", "-q", "--bare", "-b", "main", str(mid_bare), cwd=tmp_path)
    mid = tmp_path / "mid-src"
    git("init", "-q", "-b", "main", str(mid), cwd=tmp_path)
    commit_file(mid, "m.txt", "mid\n", "mid: initial")
    git(*FILE_PROTOCOL, "submodule", "add", "-q", str(leaf), "leaf", cwd=mid)
    git("commit", "-q", "-m", "mid: add leaf", cwd=mid)
    git("push", "-q", str(mid_bare), "main", cwd=mid)
    add_submodule(repo, mid_bare)


def _leaf_commit(repo: Path, para, name: str) -> tuple[Path, str]:
    para("start", name)
    path = wt(repo, name)
    git(*FILE_PROTOCOL, "submodule", "update", "--init", "--recursive", "-q", cwd=path)
    return path, commit_file(path / "sm" / "leaf", "deep.txt", "deep\n", "a commit only the leaf has")


def test_cancel_saves_a_commit_in_a_submodule_of_a_submodule(sidecar, para, para_json, repo, two_level_submodule):
    """The leaf's git directory lives in .git/worktrees/<name>/modules/sm/modules/leaf and
    went with the worktree; only sm was looked at."""
    path, leaf_commit = _leaf_commit(repo, para, "ss")
    result = para_json("cancel", "ss")
    (saved,) = [b for b in result["backups"] if b["what"] == "submodule"]
    (leaf_head,) = [r for r in saved["refs"] if r.endswith("/sub/sm/sub/leaf/HEAD")]
    assert rev(repo, leaf_head) == leaf_commit
    assert show(repo, f"{leaf_head}:deep.txt") == "deep\n"


@pytest.mark.parametrize("verb", ["finish", "integrate"])
def test_finish_and_integrate_refuse_a_submodule_of_a_submodule_holding_work(sidecar, para, repo,
                                                                            two_level_submodule, verb):
    path, leaf_commit = _leaf_commit(repo, para, "sf")
    before = git("for-each-ref", cwd=repo)
    args = ["finish", "m", "--session", "sf"] if verb == "finish" else ["integrate", "--session", "sf"]
    assert_error(para(*args, check=False), Code.dirty, f"submodule {path / 'sm' / 'leaf'} has 1 commit(s) no remote has")
    assert git("for-each-ref", cwd=repo) == before and rev(path / "sm" / "leaf", "HEAD") == leaf_commit
    assert sessions(repo)["sf"]["state"] in ("active", "dirty")


# ---- backups are created, never overwritten (item 2) ------------------------------------------

def _stamps(around: float, before: int = 2, after: int = 20) -> list[str]:
    return [time.strftime("%Y%m%d-%H%M%S", time.gmtime(around + d)) for d in range(-before, after)]


def test_a_backup_never_overwrites_an_earlier_backup_of_the_same_name(sidecar, para, para_json, repo):
    """Backup refs are named `<name>/<UTC second>-<what>`: two cancels of one name within a
    second (a cancel/recover/cancel cycle, a repair running a step again) used to overwrite
    the first backup. Earlier backups are seeded under every name the next ones could take,
    and the cycle runs twice: every seed survives, and each cancel kept its own snapshot."""
    para("start", "bk")
    path = wt(repo, "bk")
    seed = rev(repo, "main")
    seeded = {f"refs/para/backup/bk/{st}-discarded" for st in _stamps(time.time())}
    for ref in seeded:
        git("update-ref", ref, seed, cwd=repo)
    kept = []
    for n in (1, 2):
        (path / "draft.txt").write_text(f"draft {n}\n")
        saved = para_json("cancel", "bk", "--discard")["saved"]
        assert saved["ref"] not in seeded and show(repo, f"{saved['ref']}:draft.txt") == f"draft {n}\n"
        kept.append(saved["ref"])
        para("recover", "bk")
    now = refs(repo, "refs/para/backup/bk/")
    assert all(now[r] == seed for r in seeded), "an earlier backup was overwritten"
    assert len(set(kept)) == 2 and all(show(repo, f"{r}:draft.txt") == f"draft {n}\n" for n, r in enumerate(kept, 1))


def test_a_saved_nested_repository_never_overwrites_an_earlier_one(sidecar, para, para_json, repo):
    """The same for the refs a nested repository is saved under (they used to be pushed with
    `+`, replacing whatever an earlier cancel of the same name in the same second saved)."""
    seed = rev(repo, "main")
    seeded = {f"refs/para/backup/bn/{st}/sub/inner/{leaf}" for st in _stamps(time.time())
              for leaf in ("HEAD", "heads/master")}
    for ref in seeded:
        git("update-ref", ref, seed, cwd=repo)
    para("start", "bn")
    inner_head = rev(nested_repo(wt(repo, "bn"), "inner"), "HEAD")
    (saved,) = [b for b in para_json("cancel", "bn")["backups"] if b["what"] == "nested"]
    now = refs(repo, "refs/para/backup/bn/")
    assert all(now[r] == seed for r in seeded), "an earlier backup was overwritten"
    assert saved["refs"] and set(saved["refs"]).isdisjoint(seeded)
    assert all(now[r] == inner_head for r in saved["refs"]) and len(saved["refs"]) == 2


# ---- hostile sizes (item 6) ----------------------------------------------------------------

def _world(repo: Path) -> dict:
    from conftest import git_state
    return {**git_state(repo), "sessions": sessions(repo), "plans": git("for-each-ref", cwd=repo)}


@pytest.mark.parametrize("method, params, field", [
    ("para/finish", {"session": "hs", "message": "m" * (10 << 20)}, "message"),
    ("para/integrate", {"session": "hs", "message": "m" * (10 << 20)}, "message"),
    ("para/start", {"name": "n" * (1 << 20)}, "name"),
    ("para/dispatch", {"files": [f"TASK_{n}_t.md" for n in range(100_000)], "agent": "scripted"}, "files"),
    ("para/dispatch", {"prompt": "p" * (10 << 20), "agent": "scripted"}, "prompt"),
    ("para/report", {"session": "hs", "task": "t" * (10 << 20)}, "task"),
    ("para/show", {"session": "s" * (1 << 20)}, "session"),
    ("para/list", {"env": {f"PARA_X{n}": "1" for n in range(100_000)}}, "env"),
], ids=["finish-10MB-message", "integrate-10MB-message", "start-1M-name", "dispatch-100k-tasks",
        "dispatch-10MB-prompt", "report-10MB-task", "show-1M-session", "list-100k-env"])
def test_hostile_sizes_are_invalid_params_and_change_nothing(sidecar, para, rpc, repo, method, params, field):
    """A 10 MB commit message used to be committed and landed (and stored in the session and
    its events), 100 000 task files were each looked up, a megabyte of name reached git and
    the store. Now each is `-32602` naming the field, and nothing changed."""
    from conftest import raw_request
    para("start", "hs")
    (wt(repo, "hs") / "work.txt").write_text("work\n")
    before = _world(repo)
    answer = raw_request(rpc, method, {"cwd": str(repo), **params})
    assert answer.get("error", {}).get("code") == -32602, str(answer)[:500]
    assert field in answer["error"]["message"] and len(answer["error"]["message"]) < 500, answer["error"]
    assert _world(repo) == before


def test_a_plan_directory_with_too_many_tasks_is_refused_before_anything_starts(sidecar, para, repo, tmp_path):
    plan = repo / "plan"
    plan.mkdir()
    for n in range(1, 1002):
        (plan / f"TASK_{n}_t{n}.md").write_text(f"task {n}\n")
    git("add", "plan", cwd=repo)
    git("commit", "-q", "-m", "a huge plan", cwd=repo)
    before = _world(repo)
    proc = para("dispatch", "--file", "plan", "--agent", "scripted", "--json", check=False)
    assert proc.returncode == Code.invalid_input.exit, proc.stdout
    assert "at most 1000 tasks" in proc.stdout and "1001" in proc.stdout
    assert _world(repo) == before


# ---- results say what was saved or left (item 5) ---------------------------------------------

def test_results_say_what_para_saved_and_recover_lists_the_backups(sidecar, para, para_json, repo):
    """cancel, finish, integrate and recover each carry `warnings` naming what para kept
    where (the human output prints them); recover lists every backup of the session's name
    and says that a repository that was inside the worktree is not put back."""
    para("start", "w1")
    path = wt(repo, "w1")
    (path / "draft.txt").write_text("draft\n")
    inner_head = rev(nested_repo(path, "inner"), "HEAD")
    cancelled = para_json("cancel", "w1")
    archive = cancelled["archived_branch"]
    assert cancelled["warnings"][0] == f"uncommitted work was committed as {rev(repo, archive)[:10]} on {archive}"
    assert any(w.startswith("nested repository inner went with the worktree; what it held that no remote has "
                            "was saved under refs/para/backup/w1/") for w in cancelled["warnings"]), cancelled
    recovered = para_json("recover", "w1")
    assert {b["ref"] for b in recovered["backup_refs"]} == set(refs(repo, "refs/para/backup/w1/"))
    assert all(b["made_at"] and abs(b["made_at"] - time.time()) < 3600 for b in recovered["backup_refs"])
    (w,) = recovered["warnings"]
    assert "inner is not restored by recover" in w and "git fetch origin" in w
    # The restore the warning gives works.
    prefix = w.split("its commits are under ", 1)[1].split("/ ", 1)[0]
    git("clone", "-q", "--no-checkout", str(repo / ".git"), "inner", cwd=path)
    git("fetch", "-q", "origin", f"{prefix}/HEAD", cwd=path / "inner")
    assert git("rev-parse", "FETCH_HEAD", cwd=path / "inner") == inner_head

    shutil_rmtree(path / "inner")
    commit_file(path, "a.txt", "a\n", "first")
    commit_file(path, "b.txt", "b\n", "second")
    tip = rev(path, "HEAD")
    finished = para_json("finish", "squashed", "--session", "w1")
    (w,) = finished["warnings"]
    ref = w.rsplit(" ", 1)[1]
    assert w.startswith("the branch before the squash is kept under ") and rev(repo, ref) == tip

    para("resume", "w1")
    session_tip = rev(repo, "para/w1")
    human = para("integrate", "--session", "w1")
    kept = [x for x in human.stdout.splitlines() if x.startswith("warning: the session branch's tip")]
    assert len(kept) == 1 and rev(repo, kept[0].split(" is kept under ")[1].split(" ", 1)[0]) == session_tip


def shutil_rmtree(p: Path) -> None:
    import shutil
    shutil.rmtree(p)


# ---- a busy worktree (item 8) ------------------------------------------------------------------

def test_a_mount_inside_the_worktree_is_refused_and_what_it_shows_is_not_deleted(sidecar, para, repo, tmp_path):
    """`git worktree remove --force` descends into a bind mount inside the worktree, deletes
    the files of the mounted directory (outside the repository), then fails on the busy mount
    point, leaving a half-removed worktree. cancel, finish and integrate refuse it first."""
    import os
    import subprocess
    para("start", "mt")
    path = wt(repo, "mt")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not para's to delete\n")
    (path / "m").mkdir()
    (path / "work.txt").write_text("work\n")
    res = subprocess.run(["mount", "--bind", str(outside), str(path / "m")], capture_output=True, text=True)
    assert res.returncode == 0, f"this test needs to bind-mount (run as root): {res.stderr}"
    try:
        before = git("for-each-ref", cwd=repo)
        for args in (["cancel", "mt"], ["finish", "m", "--session", "mt"], ["integrate", "--session", "mt"]):
            assert_error(para(*args, check=False), Code.wrong_state, f"{path / 'm'} inside the worktree of 'mt'",
                         "umount")
        assert (outside / "keep.txt").read_text() == "not para's to delete\n"
        assert git("for-each-ref", cwd=repo) == before and (path / "work.txt").exists()
        assert sessions(repo)["mt"]["pending_op"] is None
    finally:
        subprocess.run(["umount", str(path / "m")], capture_output=True)
    para("cancel", "mt")
    assert (outside / "keep.txt").exists() and not path.exists() and os.path.isdir(outside)


@pytest.mark.parametrize("verb", ["cancel", "integrate"])
def test_a_shell_still_in_the_worktree_is_named_when_the_worktree_goes(sidecar, para, para_json, repo, verb):
    """A shell (here a `sleep`) whose current directory is in the worktree does not stop the
    removal on Linux, but it is left in a deleted directory, and whatever it writes there is
    lost: the result says which process, and the human output prints it."""
    import subprocess
    para("start", "sh1")
    path = wt(repo, "sh1")
    commit_file(path, "f.txt", "f\n", "work")
    shell = subprocess.Popen(["sleep", "300"], cwd=path / ".")
    try:
        args = ["cancel", "sh1"] if verb == "cancel" else ["integrate", "--session", "sh1"]
        out = para(*args).stdout
        line = f"warning: process {shell.pid} (sleep) has its current directory in {path}, which was removed"
        assert line in out, out
        assert not path.exists() and sessions(repo)["sh1"]["pending_op"] is None
    finally:
        shell.kill()
        shell.wait()


@pytest.mark.parametrize("verb", ["cancel", "integrate"])
def test_the_caller_in_the_worktree_is_not_named_but_the_others_there_are(sidecar, para, repo, verb):
    """An agent ends its session from its worktree: `para` and the shell that ran it are the
    caller, about to leave; they are not named. A process that is not the caller's is."""
    from conftest import PARA_ARGV, cli_env
    para("start", "sh2")
    path = wt(repo, "sh2")
    commit_file(path, "f.txt", "f\n", "work")
    other = subprocess.Popen(["sleep", "300"], cwd=path)
    try:
        argv = [*PARA_ARGV, *(["cancel"] if verb == "cancel" else ["integrate"])]
        # (The shell waits for `para`: `exec` would make it no process of its own.)
        out = subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", *argv], cwd=path, env=cli_env(), text=True,
                             capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        named = [line for line in out.stdout.splitlines() if "has its current directory in" in line]
        assert named == [f"warning: process {other.pid} (sleep) has its current directory in {path}, "
                         "which was removed: it is now in a deleted directory (`cd` out of it; files it "
                         "writes there are lost)"], out.stdout
    finally:
        other.kill()
        other.wait()


def test_a_tip_no_backup_ref_can_hold_keeps_its_branch_and_the_landing_completes(sidecar, para_json, repo):
    """Where every name under refs/para/backup/<name>/ is blocked (a file where that directory
    goes), the work still lands and the session ends integrated, not stuck integrating: the
    branch, which holds the tip that landed, is kept instead, and that is said."""
    para_json("start", "nb")
    path = wt(repo, "nb")
    tip = commit_file(path, "nb.txt", "nb\n", "nb: work")
    blocker = repo / ".git" / "refs" / "para" / "backup" / "nb"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory\n")
    out = para_json("integrate", "--session", "nb")
    assert out["status"] == "integrated", out
    assert show(repo, "main:nb.txt") == "nb\n"
    assert rev(repo, "para/nb") == tip
    said = [w for w in out["warnings"] if w.startswith("branch para/nb kept: its tip")]
    assert said and "could not be saved under refs/para/backup/nb/" in said[0], out["warnings"]
    assert sessions(repo)["nb"]["pending_op"] is None
    assert blocker.read_text() == "not a directory\n"
