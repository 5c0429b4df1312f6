"""Integration in repositories as real projects have them keeps the repository's rules.

Each test follows one finding of the third red team (`redteam-r3.md`, ids in the
docstrings): a symlink to a FIFO in a conflict, sparse checkouts, signed commits with a
user's colourful git config, unrelated histories, submodules, odd file names, and which
branch is the base. Setup goes through JSON-RPC; what is under test runs through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import PARA_ARGV, cli_env, git, make_repo, rev, wait_until

pytest.register_assert_rewrite("integrate_util")
from integrate_util import (Api, api, cli_json, commit_all, error_of, porcelain, run_cli, start,  # noqa: E402,F401
                            write)

SHARED_SIDECAR = True


def landed_tree(repo: Path, rev_: str = "main") -> set[str]:
    return {p for p in git("ls-tree", "-r", "-z", "--name-only", rev_, cwd=repo).split("\0") if p}


# ---- R3-6: session content cannot freeze the shared sidecar ---------------------------------

def test_a_symlink_to_a_fifo_in_a_conflict_freezes_nobody(api: Api, tmp_path: Path) -> None:
    """R3-6: two sessions commit a symlink `x`, one to a file outside, one to a FIFO outside.
    The second integration pauses on the conflict (its hunks read nothing through the link),
    `para list` in an unrelated repository answers meanwhile, and continue with the FIFO
    link as the resolution lands without reading it. (Before, the sidecar read the FIFO in
    its event loop and hung for every repository.)"""
    out = tmp_path / "out"
    out.mkdir()
    (out / "otherfile").write_text("=======\n")
    fifo = out / "fifo"
    os.mkfifo(fifo)
    other = make_repo(tmp_path / "unrelated")
    wa = Path(api.call("para/start", name="fa")["worktree"])
    os.symlink(out / "otherfile", wa / "x")
    commit_all(wa, "x -> otherfile")
    wb = Path(api.call("para/start", name="fb")["worktree"])
    os.symlink(fifo, wb / "x")
    commit_all(wb, "x -> fifo")
    api.call("para/integrate", session="fa")
    proc = subprocess.Popen([*PARA_ARGV, "integrate", "--session", "fb", "--json"], cwd=api.repo, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Once the conflict is materialized in fb's worktree, the pause reads the conflicted files.
        merge_head = Path(git("rev-parse", "--path-format=absolute", "--git-path", "MERGE_HEAD", cwd=wb))
        wait_until(lambda: merge_head.exists() or proc.poll() is not None, what="the conflict to be materialized")
        listed = run_cli("list", "--json", cwd=other, timeout=30)
        assert listed.returncode == 0, listed.stderr
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 7, (stdout, stderr)
        err = error_of(json.loads(stdout), "conflict")
        assert err["data"]["files"] == ["x"] and err["data"]["hunks"] == {"x": []}
        git("checkout", "--ours", "x", cwd=wb)
        git("add", "x", cwd=wb)
        assert run_cli("continue", "fb", "--json", cwd=api.repo, timeout=30).returncode == 0
        assert os.readlink(api.repo / "x") == str(fifo)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:  # let a reader that is stuck on the FIFO go (only the old code would be)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


# ---- R3-8: sparse checkouts ------------------------------------------------------------------

def sparse_repo(api: Api) -> None:
    write(api.repo, {"dir1/f.txt": "f\n", "dir2/g.txt": "g1\ng2\ng3\n"})
    commit_all(api.repo, "two directories")
    git("sparse-checkout", "set", "dir1", cwd=api.repo)


def sparse_edit(wt: Path, files: dict[str, str]) -> None:
    """Commit a change outside the cone the way a user does: widen, edit, commit, narrow."""
    git("sparse-checkout", "disable", cwd=wt)
    write(wt, files)
    commit_all(wt, "edit outside the cone")
    git("sparse-checkout", "set", "dir1", cwd=wt)


# command -> (argv, status afterwards, the ref that must hold the work afterwards)
OUTSIDE_THE_CONE = {
    "integrate": (["integrate", "outside the cone", "--session", "sp"], "integrated", "main"),
    "finish": (["finish", "outside the cone", "--session", "sp"], "review", "para/sp"),
    "cancel": (["cancel", "sp"], "cancelled", None),
}


@pytest.mark.parametrize("command", list(OUTSIDE_THE_CONE))
def test_a_new_file_outside_the_sparse_cone_is_committed(api: Api, command: str) -> None:
    """R3-8a: `git add -A --sparse`: a file the session created outside the cone is committed
    by integrate, finish and cancel alike (before: exit 5 "paths … outside of your
    sparse-checkout definition")."""
    argv, status, ref = OUTSIDE_THE_CONE[command]
    sparse_repo(api)
    wt = Path(api.call("para/start", name="sp")["worktree"])
    assert not (wt / "dir2").exists()
    write(wt, {"dir2/new.txt": "new\n", "dir1/f.txt": "f, edited\n"})
    out = cli_json(*argv, cwd=api.repo)
    assert out["status"] == status
    ref = ref or out["archived_branch"]
    assert git("show", f"{ref}:dir2/new.txt", cwd=api.repo) == "new"
    assert git("show", f"{ref}:dir1/f.txt", cwd=api.repo) == "f, edited"
    if command == "integrate":
        assert (api.repo / "dir1" / "f.txt").read_text() == "f, edited\n"
    assert porcelain(api.repo) == []


def test_a_conflict_outside_the_sparse_cone_can_be_continued(api: Api) -> None:
    """R3-8b: the resolved file outside the cone is staged (before: "unmerged paths remain:
    dir2/g.txt" on every continue)."""
    sparse_repo(api)
    wa = Path(api.call("para/start", name="sa")["worktree"])
    wb = Path(api.call("para/start", name="sb")["worktree"])
    sparse_edit(wa, {"dir2/g.txt": "g1\ng2, a\ng3\n"})
    sparse_edit(wb, {"dir2/g.txt": "g1\ng2, b\ng3\n"})
    api.call("para/integrate", session="sa")
    err = error_of(cli_json("integrate", "--session", "sb", cwd=api.repo, expect=7), "conflict")
    assert err["data"]["files"] == ["dir2/g.txt"] and err["data"]["hunks"]["dir2/g.txt"]
    write(wb, {"dir2/g.txt": "g1\ng2, a and b\ng3\n"})
    assert cli_json("continue", "sb", cwd=api.repo)["status"] == "integrated"
    assert git("show", "main:dir2/g.txt", cwd=api.repo) == "g1\ng2, a and b\ng3"
    assert porcelain(api.repo) == []


# ---- R3-9 and R3-14: signing, hooks, the user's git config ------------------------------------

HOOK = """#!/bin/sh
echo "$(git symbolic-ref -q HEAD)" >> '{log}'
[ "$(git symbolic-ref -q HEAD)" = refs/heads/main ] && {{ echo "main is protected" >&2; exit 1; }}
exit 0
"""


def signing_repo(repo: Path, tmp_path: Path) -> None:
    """SSH signing with a throwaway key, every commit signed; plus a user's git config that
    decorates output (colours, signature reports) and a pre-commit hook protecting main."""
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"test@para.invalid namespaces=\"git\" {(tmp_path / 'key.pub').read_text()}")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "pre-commit").write_text(HOOK.format(log=tmp_path / "hook.log"))
    (hooks / "pre-commit").chmod(0o755)
    for k, v in {"gpg.format": "ssh", "user.signingkey": str(key), "commit.gpgSign": "true",
                 "gpg.ssh.allowedSignersFile": str(signers), "log.showSignature": "true",
                 "color.ui": "always", "core.hooksPath": str(hooks)}.items():
        git("config", k, v, cwd=repo)


def signature(repo: Path, rev_: str) -> str:
    return git("-c", "log.showSignature=false", "log", "-1", "--format=%G?", rev_, cwd=repo)


def test_what_lands_is_signed_and_the_users_git_config_does_not_leak(api: Api, tmp_path: Path) -> None:
    """R3-9: with `commit.gpgSign`, the squash and merge commits para lands are signed (`%G?` =
    G; before: N). Hooks do not gate what lands on the target (documented: para builds it with
    plumbing; `integrate.check` is the gate): the hook that protects main never ran for it.
    R3-14: `log.showSignature` and `color.ui=always` leak nothing into the dry run's
    commits and diffstat or into the default message (before: a bogus commit entry with ANSI
    escapes, and "Integrate session k1" instead of the single commit's subject)."""
    repo = api.repo
    signing_repo(repo, tmp_path)
    wt = start(api, "k1", {"feature.txt": "feature\n"})
    tip = rev(wt, "HEAD")
    assert signature(repo, tip) == "G"  # the key works: the session's own commit is signed

    dry = cli_json("integrate", "--dry-run", "--session", "k1", cwd=repo)
    assert dry["commits"] == [{"sha": tip, "subject": "k1: change 1"}]
    assert "\x1b" not in dry["diffstat"] and "feature.txt | 1 +" in dry["diffstat"]

    out = cli_json("integrate", "--session", "k1", cwd=repo)
    assert out["integration"]["message"] == "k1: change 1"
    assert git("-c", "log.showSignature=false", "log", "-1", "--format=%s", "main", cwd=repo) == "k1: change 1"
    assert signature(repo, "main") == "G"

    start(api, "k2", {"other.txt": "other\n"})
    cli_json("integrate", "Merge it", "--session", "k2", "--strategy", "merge", cwd=repo)
    assert len(git("rev-list", "--parents", "-n", "1", "main", cwd=repo).split()) == 3
    assert signature(repo, "main") == "G"
    assert "refs/heads/main" not in (tmp_path / "hook.log").read_text().split()
    assert porcelain(repo) == []


# ---- R3-10: unrelated histories --------------------------------------------------------------

def test_one_unrelated_pair_does_not_hide_the_forecast(api: Api) -> None:
    """R3-10: a session based on an orphan branch (gh-pages) shares no history with the
    others: the forecast reports that pair as unrelated and still reports the real collision
    between two other sessions (before: exit 5 "refusing to merge unrelated histories")."""
    repo = api.repo
    orphan = git("commit-tree", "main^{tree}", "-m", "pages", cwd=repo)
    git("branch", "gh-pages", orphan, cwd=repo)
    start(api, "ga", {"a.txt": "a\n"})
    start(api, "gb", {"pages.txt": "p\n"}, base="gh-pages")
    start(api, "gc", {"same.txt": "c\n"})
    start(api, "gd", {"same.txt": "d\n"})
    out = cli_json("conflicts", cwd=repo)
    by = {s["session"]: s for s in out["sessions"]}
    assert by["gb"]["target"] == "gh-pages" and by["gb"]["clean"] and not by["gb"]["unrelated"]
    assert by["ga"]["clean"] and not by["ga"]["unrelated"]
    assert [(p["a"], p["b"], p["files"]) for p in out["pairs"]] == [("gc", "gd", ["same.txt"])]
    assert sorted((p["a"], p["b"]) for p in out["unrelated"]) == [("ga", "gb"), ("gb", "gc"), ("gb", "gd")]
    assert out["clean"] is False

    # Against one target, the session that cannot land there says so.
    out = cli_json("conflicts", "--target", "gh-pages", cwd=repo)
    by = {s["session"]: s for s in out["sessions"]}
    assert by["ga"]["unrelated"] and not by["ga"]["clean"] and by["ga"]["files"] == []
    assert by["gb"]["clean"]
    human = run_cli("conflicts", "--target", "gh-pages", cwd=repo)
    assert human.returncode == 0 and "ga x gh-pages: unrelated histories" in human.stdout


# ---- R3-11: submodules --------------------------------------------------------------------------

def submodule_repo(repo: Path, tmp_path: Path) -> list[str]:
    """`sm` from a local bare repository with commits c0 and two children of it, c1 and c2
    (on branches b1, b2: neither contains the other), initialised in the main checkout at c0.
    Returns [c0, c1, c2]."""
    src = make_repo(tmp_path / "subsrc")
    commits = [git("rev-parse", "HEAD", cwd=src)]
    for n in (1, 2):
        git("checkout", "-q", "-b", f"b{n}", commits[0], cwd=src)
        write(src, {"sub.txt": f"sub {n}\n"})
        commits.append(commit_all(src, f"sub {n}"))
    bare = tmp_path / "sub.git"
    git("clone", "-q", "--bare", str(src), str(bare), cwd=tmp_path)
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(bare), "sm", cwd=repo)
    git("-C", "sm", "checkout", "-q", commits[0], cwd=repo)
    git("add", "sm", cwd=repo)
    git("commit", "-q", "-m", "add sm at c0", cwd=repo)
    return commits


def point(api: Api, name: str, sha: str) -> Path:
    wt = Path(api.call("para/start", name=name)["worktree"])
    git("update-index", "--cacheinfo", f"160000,{sha},sm", cwd=wt)
    git("commit", "-q", "-m", f"{name}: sm -> {sha[:7]}", cwd=wt)
    return wt


def sm_head(repo: Path) -> str:
    return git("rev-parse", "HEAD", cwd=repo / "sm")


def test_the_users_submodule_follows_a_landed_pointer(api: Api, tmp_path: Path) -> None:
    """R3-11: after a landing moves `sm`, the initialised submodule in the main checkout
    follows (before: it stayed behind, ` M sm`, and the next landing touching it, here a
    conflict resolution, was refused: "has uncommitted changes … sm", exit 11)."""
    repo = api.repo
    c0, c1, c2 = submodule_repo(repo, tmp_path)
    point(api, "sa", c1)
    wb = point(api, "sb", c2)
    cli_json("integrate", "--session", "sa", cwd=repo)
    assert sm_head(repo) == c1 and porcelain(repo) == []

    err = error_of(cli_json("integrate", "--session", "sb", cwd=repo, expect=7), "conflict")
    assert err["data"]["files"] == ["sm"]
    git("update-index", "--cacheinfo", f"160000,{c2},sm", cwd=wb)
    assert cli_json("continue", "sb", cwd=repo)["status"] == "integrated"
    assert git("rev-parse", "main:sm", cwd=repo) == c2
    assert sm_head(repo) == c2 and porcelain(repo) == []


def test_a_submodule_the_user_moved_is_neither_blamed_nor_moved(api: Api, tmp_path: Path) -> None:
    """The user checked out another commit inside `sm` (` M sm`, nothing staged): a landing
    that moves the pointer only changes the index entry, so it is not refused, and the
    user's submodule checkout stays where the user put it."""
    repo = api.repo
    c0, c1, c2 = submodule_repo(repo, tmp_path)
    git("checkout", "-q", c2, cwd=repo / "sm")
    point(api, "sa", c1)
    cli_json("integrate", "--session", "sa", cwd=repo)
    assert git("rev-parse", "main:sm", cwd=repo) == c1
    assert sm_head(repo) == c2 and porcelain(repo) == [" M sm"]


# ---- R3-15: odd names -----------------------------------------------------------------------------

ODD = ["café.txt", "new\nline.txt", "--force"]


def test_odd_names_appear_verbatim_in_forecasts(api: Api) -> None:
    """R3-15: names are read NUL-separated: `café.txt`, a name with a newline and `--force`
    appear verbatim, with their hunks (before: C-quoted names and empty hunks)."""
    repo = api.repo
    write(repo, {n: "one\ntwo\nthree\n" for n in ODD})
    commit_all(repo, "odd names")
    start(api, "o1", {n: "one\ntwo, o1\nthree\n" for n in ODD})
    start(api, "o2", {n: "one\ntwo, o2\nthree\n" for n in ODD})
    pair = cli_json("conflicts", cwd=repo)["pairs"][0]
    assert sorted(pair["files"]) == sorted(ODD)
    assert all(pair["hunks"][n] for n in ODD), pair["hunks"]

    api.call("para/integrate", session="o1")
    dry = cli_json("integrate", "--dry-run", "--session", "o2", cwd=repo)
    assert sorted(dry["conflicts"]) == sorted(ODD) and all(dry["hunks"][n] for n in ODD), dry


# ---- R3-16: which branch is the base ----------------------------------------------------------------

# case -> (initial branch, extra branches, local init.defaultBranch, branch checked out, expected base)
BASES = {
    "on master with a stale main": ("master", ["main"], None, "master", "master"),
    "on init.defaultBranch": ("trunk", [], "trunk", "trunk", "trunk"),
    "feature checked out, init.defaultBranch exists": ("trunk", ["feature"], "trunk", "feature", "trunk"),
    "feature checked out, main exists": ("main", ["feature"], None, "feature", "main"),
    "only a trunk, checked out": ("trunk", [], None, "trunk", "trunk"),
}


@pytest.mark.parametrize("case", list(BASES))
def test_the_base_branch_is_the_trunk_the_user_works_on(case: str, sidecar, tmp_path: Path) -> None:
    """R3-16: without --base, config or origin/HEAD, the base is the branch the main checkout
    is on when it is named like a trunk (init.defaultBranch, main, master), else
    init.defaultBranch, main, master, else the branch the main checkout is on; a feature
    branch the user has checked out is not taken while a trunk exists. Before, (a) a stale
    `main` won over the `master` the user works on, and (b) a repository on `trunk` could not
    start a session at all."""
    initial, extra, default, current, expected = BASES[case]
    repo = make_repo(tmp_path / "r", branch=initial)
    for b in extra:
        git("branch", b, cwd=repo)
    if default:
        git("config", "init.defaultBranch", default, cwd=repo)
    git("checkout", "-q", current, cwd=repo)
    write(repo, {"later.txt": "later\n"})
    tip = commit_all(repo, f"work goes on on {current}")
    s = cli_json("start", "s1", cwd=repo)
    assert s["base_branch"] == expected and s["base_commit"] == rev(repo, expected)
    if expected == current:
        assert s["base_commit"] == tip
        # And the work lands where the user is, bringing the checkout along.
        write(Path(s["worktree"]), {"s1.txt": "s1\n"})
        cli_json("integrate", "s1 lands", "--session", "s1", cwd=repo)
        assert (repo / "s1.txt").read_text() == "s1\n" and porcelain(repo) == []
        for b in extra:
            assert "s1.txt" not in landed_tree(repo, b)


def test_a_checked_out_main_with_no_commit_yet_leaves_the_base_to_init_default_branch(sidecar, tmp_path: Path) -> None:
    """`para start` skips reading init.defaultBranch while the main checkout is on main or
    master (that branch comes first whatever the default is); when that branch has no commit
    yet, the whole order is tried, the default included."""
    repo = make_repo(tmp_path / "r", branch="trunk")
    git("config", "init.defaultBranch", "trunk", cwd=repo)
    git("checkout", "-q", "--orphan", "main", cwd=repo)
    s = cli_json("start", "s1", cwd=repo)
    assert s["base_branch"] == "trunk" and s["base_commit"] == rev(repo, "trunk")


# state -> (commands that make it, after a repository on main with one commit and a clone of it)
SYMREF_STATES = {
    "on a branch": [],
    "on a nested branch name": [["checkout", "-q", "-b", "feature/x"]],
    "detached": [["checkout", "-q", "--detach"]],
    "on an unborn branch": [["checkout", "-q", "--orphan", "fresh"]],
    "origin/HEAD moved": [["remote", "set-head", "origin", "side"]],
    "origin/HEAD deleted": [["remote", "set-head", "origin", "-d"]],
    "origin/HEAD a plain ref, packed": [["remote", "set-head", "origin", "-d"],
                                        ["update-ref", "refs/remotes/origin/HEAD", "HEAD"],
                                        ["pack-refs", "--all"]],
    "HEAD pointing at a remote branch": [["symbolic-ref", "HEAD", "refs/remotes/origin/side"]],
}


@pytest.mark.parametrize("state", list(SYMREF_STATES))
@pytest.mark.parametrize("ref", ["HEAD", "refs/remotes/origin/HEAD"])
def test_symbolic_refs_read_from_their_files_say_what_git_says_or_defer_to_it(state: str, ref: str,
                                                                              tmp_path: Path) -> None:
    """git.symbolic_ref_file (`para start` reads HEAD and origin/HEAD without a git process)
    gives git's own `symbolic-ref --short` answer, or raises LookupError for git to answer."""
    upstream = make_repo(tmp_path / "up")
    git("branch", "side", cwd=upstream)
    clone = tmp_path / "clone"
    git("clone", "-q", str(upstream), str(clone), cwd=tmp_path)
    for argv in SYMREF_STATES[state]:
        git(*argv, cwd=clone)
    read = _read_as_git_would(clone, ref)
    # Whatever stands for origin/ in `--short` is the remote's name: para keeps what follows it.
    if read is not None and ref != "HEAD":
        assert read.startswith("origin/")


def _read_as_git_would(clone: Path, ref: str) -> str | None:
    """git.symbolic_ref_file of `ref`, checked against git's own `symbolic-ref --short` (None
    when the file defers to git: then git's answer is the one that counts)."""
    from para_rpc import git as para_git
    res = subprocess.run(["git", "symbolic-ref", "--quiet", "--short", ref], cwd=clone, capture_output=True, text=True)
    says = res.stdout.strip() if res.returncode == 0 else None
    try:
        read = para_git.symbolic_ref_file(str(clone / ".git"), ref)
    except LookupError:
        return None
    assert read == says
    return read


# What git reads as a symbolic ref, in files git may write so (core.preferSymlinkRefs) or a
# hand edit leaves so: ref file -> its content (a str is written, a ("link", x) is a symlink to x).
SYMREF_FILES = {
    "HEAD with CRLF": ("HEAD", "ref: refs/heads/side\r\n"),
    "HEAD with a trailing space": ("HEAD", "ref: refs/heads/side \n"),
    "HEAD with a trailing tab": ("HEAD", "ref: refs/heads/side\t\n"),
    "HEAD with no space after ref:": ("HEAD", "ref:refs/heads/side\n"),
    "HEAD a symlink": ("HEAD", ("link", "refs/heads/side")),
    "origin/HEAD with CRLF": ("refs/remotes/origin/HEAD", "ref: refs/remotes/origin/side\r\n"),
    "origin/HEAD a symlink": ("refs/remotes/origin/HEAD", ("link", "refs/remotes/origin/side")),
    "origin/HEAD a symlink, its branch packed": ("refs/remotes/origin/HEAD", ("link", "refs/remotes/origin/side")),
    "HEAD's name longer than a read": ("HEAD", "ref: refs/heads/" + "s" * 4079 + "\n" + "junk\n"),
}


@pytest.mark.parametrize("case", list(SYMREF_FILES))
def test_symbolic_ref_files_as_git_may_leave_them_say_what_git_says_or_defer_to_it(case: str,
                                                                                    tmp_path: Path) -> None:
    """(Red team t15-1/2.) A ref file git reads as a symbolic ref with its whitespace trimmed,
    or written as a symlink (`core.preferSymlinkRefs`, git's old style: the link's text is the
    ref name, not a path that resolves): git.symbolic_ref_file gives git's answer or defers to
    git. Before, HEAD "ref: refs/heads/side\\r\\n" read as `side\\r` and a symlinked
    origin/HEAD as no origin/HEAD at all."""
    upstream = make_repo(tmp_path / "up")
    git("branch", "side", cwd=upstream)
    clone = tmp_path / "clone"
    git("clone", "-q", str(upstream), str(clone), cwd=tmp_path)
    ref, content = SYMREF_FILES[case]
    if "packed" in case:
        git("pack-refs", "--all", cwd=clone)
    path = clone / ".git" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    if isinstance(content, tuple):
        path.symlink_to(content[1])
    else:
        path.write_bytes(content.encode())
    _read_as_git_would(clone, ref)


def test_a_clone_made_with_symlinked_refs_forks_from_its_origin_head(sidecar, tmp_path: Path) -> None:
    """(Red team t15-1.) With `core.preferSymlinkRefs` (a user's global config), `git clone`
    writes origin/HEAD as a symlink whose text is the ref's name. The base is still the branch
    origin/HEAD names (here `develop`, while the user has `main` checked out), as before the
    symbolic refs were read from their files: then para saw no origin/HEAD and forked from main."""
    upstream = make_repo(tmp_path / "up", branch="develop")
    git("branch", "main", cwd=upstream)
    repo = tmp_path / "r"
    git("-c", "core.preferSymlinkRefs=true", "clone", "-q", str(upstream), str(repo), cwd=tmp_path)
    assert (repo / ".git" / "refs" / "remotes" / "origin" / "HEAD").is_symlink()
    git("checkout", "-q", "main", cwd=repo)
    s = cli_json("start", "s1", cwd=repo)
    assert s["base_branch"] == "develop" and s["base_commit"] == rev(repo, "develop")


def test_a_head_file_with_crlf_still_names_the_trunk_checked_out(sidecar, tmp_path: Path) -> None:
    """(Red team t15-2.) HEAD saved by an editor with CRLF: git trims it and says `master`;
    on master with a stale main, master is the base (R3-16), as when git was asked."""
    repo = make_repo(tmp_path / "r", branch="master")
    git("branch", "main", cwd=repo)
    write(repo, {"later.txt": "later\n"})
    tip = commit_all(repo, "work goes on on master")
    (repo / ".git" / "HEAD").write_bytes(b"ref: refs/heads/master\r\n")
    assert git("symbolic-ref", "--short", "HEAD", cwd=repo) == "master"
    s = cli_json("start", "s1", cwd=repo)
    assert s["base_branch"] == "master" and s["base_commit"] == tip


def test_a_fifo_for_origin_head_freezes_nobody(sidecar, tmp_path: Path) -> None:
    """(Red team t15-4.) A FIFO where origin/HEAD is: git blocks reading it, in its own
    process; `para start` reading it in the sidecar's event loop blocked every client of every
    repository (R3-6's lesson). Now the file is opened without waiting for a writer and, not
    being a regular file, left to git: only that start waits. (A FIFO for HEAD blocks git's
    discovery of the repository first, in a git process: nothing to test there.)"""
    repo = make_repo(tmp_path / "r")
    other = make_repo(tmp_path / "unrelated")
    fifo = repo / ".git" / "refs" / "remotes" / "origin" / "HEAD"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    proc = subprocess.Popen([*PARA_ARGV, "start", "s1", "--json"], cwd=repo, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)  # (the start is at the FIFO by now: its reads before it take milliseconds)
        assert proc.poll() is None, proc.communicate()
        listed = run_cli("list", "--json", cwd=other, timeout=20)
        assert listed.returncode == 0, listed.stderr
    finally:
        try:  # let whatever reads the FIFO go
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"ref: refs/remotes/origin/main\n")
            os.close(fd)
        except OSError:
            pass
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_a_reftable_repository_is_never_read_from_files(tmp_path: Path) -> None:
    from para_rpc import git as para_git
    repo = make_repo(tmp_path / "r")
    (repo / ".git" / "reftable").mkdir()  # (git 2.45+ keeps refs there; HEAD is a placeholder)
    with pytest.raises(LookupError):
        para_git.symbolic_ref_file(str(repo / ".git"), "HEAD")


# ---- a worktree git cannot fully remove, after the work has landed --------------------------

@pytest.mark.parametrize("pinned, says, branch_kept", [
    # A file git cannot delete in the worktree's git dir (what a git process reading the worktree
    # meanwhile leaves, only for good): git has dropped the worktree by then; what is left is said.
    ("pinned", "git no longer uses the worktree's git dir", False),
    # Its `gitdir` file itself: git still lists the worktree, so its branch cannot be deleted.
    ("gitdir", "worktree not fully removed", True),
])
def test_a_worktree_git_cannot_fully_remove_still_ends_the_integration(api: Api, pinned: str, says: str,
                                                                       branch_kept: bool) -> None:
    """Seen with 20 agents integrating at once (bench_remote): `git worktree remove` deleted
    the working tree, then failed on its git dir ("Directory not empty"), and the session
    stayed `integrating` although its commit was on main, its agent told the integrate
    failed. Here a file nobody can delete (immutable) in the git dir makes the failure last:
    the work lands, the session is integrated, the answer and its notes say what was left,
    and a branch that cannot go is kept with its commit."""
    wt = Path(api.call("para/start", name="stuck")["worktree"])
    write(wt, {"stuck.txt": "landed\n"})
    commit_all(wt, "stuck work")
    tip = rev(api.repo, "para/stuck")
    pin = Path(git("rev-parse", "--absolute-git-dir", cwd=wt)) / pinned
    pin.touch()
    chattr = subprocess.run(["chattr", "+i", str(pin)], capture_output=True, text=True)
    assert chattr.returncode == 0, f"this test needs chattr on an ext4-like /tmp: {chattr.stderr}"
    try:
        res = cli_json("integrate", "Land stuck", "--session", "stuck", cwd=api.repo)
    finally:
        subprocess.run(["chattr", "-i", str(pin)], check=True)
    assert git("show", "main:stuck.txt", cwd=api.repo) == "landed"
    assert git("log", "-1", "--format=%s", "main", cwd=api.repo) == "Land stuck"
    show = api.call("para/show", session="stuck")
    assert show["status"] == "integrated", show
    said = [w for w in res["warnings"] if says in w]
    assert said and str(pin.parent) in said[0], res["warnings"]
    assert said[0] in show["notes"], show["notes"]
    assert not wt.exists()  # (git took the working tree in both cases)
    assert (rev(api.repo, "para/stuck") == tip) if branch_kept else \
        git("branch", "--list", "para/stuck", cwd=api.repo) == ""
    # The next integration is not held up by what was left.
    w2 = Path(api.call("para/start", name="after")["worktree"])
    write(w2, {"after.txt": "x\n"})
    commit_all(w2, "after")
    cli_json("integrate", "Land after", "--session", "after", cwd=api.repo)
    assert git("show", "main:after.txt", cwd=api.repo) == "x"


# ---- the main checkout changes while an integration is under way (issue 15 red team) -------

SIGNER = """#!/bin/sh
# Test signing program: the armed signature (the integration's own commit, computed while it
# holds the target's queue, after it read the main checkout's status) waits to be released.
ctl='{ctl}'
if [ "$1" = -Y ] && [ "$2" = sign ] && [ -e "$ctl/armed" ]; then
  rm -f "$ctl/armed"
  touch "$ctl/blocked"
  i=0
  while [ ! -e "$ctl/release" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done
fi
exec ssh-keygen "$@"
"""


def blocking_signer(repo: Path, tmp_path: Path) -> Path:
    """Every commit signed through a program that blocks while `ctl/armed` exists."""
    ctl = tmp_path / "sign-ctl"
    ctl.mkdir()
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    program = tmp_path / "signer.sh"
    program.write_text(SIGNER.format(ctl=ctl))
    program.chmod(0o755)
    for k, v in {"gpg.format": "ssh", "user.signingkey": str(key), "commit.gpgSign": "true",
                 "gpg.ssh.program": str(program)}.items():
        git("config", k, v, cwd=repo)
    return ctl


def user_meanwhile(repo: Path, what: str) -> None:
    if what == "edits":
        (repo / "app.py").write_text("the user's own app.py\n")
    elif what == "creates":
        (repo / "lib" / "new.py").write_text("the user's own new.py\n")
    elif what == "stages":
        (repo / "app.py").write_text("the user's own app.py\n")
        git("add", "app.py", cwd=repo)
    elif what == "switches-away":
        git("checkout", "-q", "-b", "other", cwd=repo)
    elif what == "deletes":
        (repo / "app.py").unlink()
    elif what == "switches-to-main":
        git("checkout", "-q", "main", cwd=repo)
    elif what == "the-linked-worktree-switches-away":
        git("checkout", "-q", "-b", "other2", cwd=repo.parent / "linked")
    elif what == "main-moves-to-another-linked-worktree":
        git("checkout", "-q", "-b", "other2", cwd=repo.parent / "linked")
        git("worktree", "add", "-q", str(repo.parent / "linked2"), "main", cwd=repo)
    elif what == "main-moves-from-the-linked-worktree-to-the-main-checkout":
        git("checkout", "-q", "-b", "other2", cwd=repo.parent / "linked")
        git("checkout", "-q", "main", cwd=repo)
    elif what == "moves-to-a-linked-worktree":
        git("checkout", "-q", "-b", "other", cwd=repo)
        git("worktree", "add", "-q", str(repo.parent / "linked"), "main", cwd=repo)
    elif what == "switches-away-and-back":
        git("checkout", "-q", "-b", "other", cwd=repo)
        git("checkout", "-q", "main", cwd=repo)


MOVING = """#!/bin/sh
# Test hook: the armed update of refs/heads/main waits, prepared (locked, not committed), to be released.
ctl='{ctl}'
[ "$1" = prepared ] && [ -e "$ctl/armed" ] || exit 0
grep -q ' refs/heads/main$' || exit 0
rm -f "$ctl/armed"
touch "$ctl/blocked"
i=0
while [ ! -e "$ctl/release" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done
exit 0
"""


def blocking_ref_update(repo: Path, tmp_path: Path) -> Path:
    ctl = tmp_path / "ref-ctl"
    ctl.mkdir()
    hook = Path(git("rev-parse", "--path-format=absolute", "--git-path", "hooks", cwd=repo), "reference-transaction")
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(MOVING.format(ctl=ctl))
    hook.chmod(0o755)
    return ctl


@pytest.mark.parametrize("when,what", [
    *(("signing", w) for w in ("edits", "creates", "stages", "deletes", "switches-away", "switches-to-main",
                               "moves-to-a-linked-worktree", "the-linked-worktree-switches-away",
                               "main-moves-from-the-linked-worktree-to-the-main-checkout",
                               "main-moves-to-another-linked-worktree", "switches-away-and-back")),
    # (While main's update is prepared git holds HEAD's lock too: the main checkout cannot leave main.)
    *(("moving", w) for w in ("edits", "creates", "stages", "deletes", "switches-to-main",
                              "the-linked-worktree-switches-away")),
])
def test_the_main_checkout_changed_while_the_integration_computes_loses_nothing(api: Api, tmp_path: Path,
                                                                               when: str, what: str) -> None:
    """Issue 15: the main checkout's status is read as the integration takes the target's
    queue, before its commit is computed. What the user does to the main checkout in between
    (here: while that commit is being signed, or while main's update is prepared) is never overwritten: the integration is refused
    with `dirty`, main stays where it was and the user's files are as they left them; or, when
    nothing of theirs is in the way, main lands and the checkout of main follows it, and a
    checkout that left main meanwhile is not touched (the main checkout or a linked worktree
    that had main checked out: before, read-tree staged main's change in it; and the one
    that took main over instead was left with the old files under the new HEAD)."""
    repo = api.repo
    ctl = blocking_signer(repo, tmp_path) if when == "signing" else blocking_ref_update(repo, tmp_path)
    start(api, "feat", {"app.py": "the session's app.py\n", "lib/new.py": "NEW = 1\n"})
    old = rev(repo, "main")
    if what == "switches-to-main":  # the main checkout is elsewhere as the integration starts
        git("checkout", "-q", "-b", "other", cwd=repo)
    if what in ("the-linked-worktree-switches-away",  # main is checked out in a linked worktree
                "main-moves-from-the-linked-worktree-to-the-main-checkout", "main-moves-to-another-linked-worktree"):
        git("checkout", "-q", "-b", "other", cwd=repo)
        git("worktree", "add", "-q", str(repo.parent / "linked"), "main", cwd=repo)
    (ctl / "armed").touch()
    proc = subprocess.Popen([*PARA_ARGV, "integrate", "Land it", "--session", "feat", "--json"], cwd=repo,
                            env=cli_env(), text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (ctl / "blocked").exists() or proc.poll() is not None, what=f"the {when}")
        assert proc.poll() is None, f"integrate ended before the {when}: {proc.communicate()}"
        user_meanwhile(repo, what)
        before = {p: (repo / p).read_bytes() for p in ("app.py", "lib/new.py") if (repo / p).exists()}
        status = porcelain(repo)
        (ctl / "release").touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err
    result = json.loads(out)
    if what in ("edits", "creates", "stages", "deletes"):
        error = error_of(result, "dirty")
        assert rev(repo, "main") == old, "main stayed moved"
        assert {p: (repo / p).read_bytes() for p in ("app.py", "lib/new.py") if (repo / p).exists()} == before
        assert porcelain(repo) == status
        assert api.session("feat")["status"] == "active"
        assert str(repo) in error["message"]
        assert error["data"]["files"] == ["lib/new.py" if what == "creates" else "app.py"], error
        return
    assert proc.returncode == 0, result
    assert rev(repo, "main") != old and git("show", "main:app.py", cwd=repo) == "the session's app.py"
    if what == "moves-to-a-linked-worktree":  # main's checkout is that one now: it follows main
        assert porcelain(repo.parent / "linked") == []
        assert (repo.parent / "linked" / "app.py").read_text() == "the session's app.py\n"
    if what == "main-moves-to-another-linked-worktree":  # main's checkout is that one now: it follows main
        assert porcelain(repo.parent / "linked2") == []
        assert (repo.parent / "linked2" / "app.py").read_text() == "the session's app.py\n"
    if what in ("the-linked-worktree-switches-away",  # it left main before main moved: not touched
                "main-moves-from-the-linked-worktree-to-the-main-checkout", "main-moves-to-another-linked-worktree"):
        linked = repo.parent / "linked"
        assert git("symbolic-ref", "--short", "HEAD", cwd=linked) == "other2" and rev(linked, "HEAD") == old
        assert porcelain(linked) == [] and (linked / "app.py").read_bytes() == before["app.py"]
    if what in ("switches-away", "moves-to-a-linked-worktree", "the-linked-worktree-switches-away",
                "main-moves-to-another-linked-worktree"):
        # The checkout left main before main moved: it is not main's checkout any more.
        assert git("symbolic-ref", "--short", "HEAD", cwd=repo) == "other"
        assert rev(repo, "other") == old
        assert porcelain(repo) == [] and (repo / "app.py").read_bytes() == before["app.py"]
    else:
        assert porcelain(repo) == []
        assert (repo / "app.py").read_text() == "the session's app.py\n"


def test_a_dozen_integrations_at_once_while_the_user_edits_the_main_checkout(api: Api) -> None:
    """Issue 15: twelve sessions integrate at once (each changes its own file p<i>) while the
    user keeps editing the main checkout: rewriting p0, p2, ... and creating untracked files.
    Afterwards every file the user wrote holds what they last wrote; each integration either
    landed or was refused as `dirty` (only ones whose file the user edited); main's index is
    its tip's tree (nothing landed is left staged as reverted) and the checkout's other files
    are what main holds."""
    import threading
    repo = api.repo
    n = 12
    write(repo, {f"p{i}.txt": f"base {i}\n" for i in range(n)})
    commit_all(repo, "the files the sessions change")
    for i in range(n):
        start(api, f"s{i}", {f"p{i}.txt": f"session {i}\n"})
    wrote: dict[str, str] = {}
    stop = threading.Event()

    first = rev(repo, "main")

    def user() -> None:
        k = 0
        while rev(repo, "main") == first and not stop.is_set():  # (from the first landing on)
            time.sleep(0.002)
        while not stop.is_set():
            path = f"p{2 * (k % (n // 2))}.txt" if k % 2 else f"u{k}.txt"
            wrote[path] = f"the user's edit {k}\n"
            (repo / path).write_text(wrote[path])
            k += 1
            time.sleep(0.005)

    thread = threading.Thread(target=user)
    procs = [subprocess.Popen([*PARA_ARGV, "integrate", "--session", f"s{i}", "--json"], cwd=repo, env=cli_env(),
                              text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(n)]
    thread.start()
    try:
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        stop.set()
        thread.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    landed, refused = set(), set()
    for i, (p, (out, err)) in enumerate(zip(procs, results)):
        assert "Traceback" not in err, err
        result = json.loads(out)
        if p.returncode == 0:
            landed.add(i)
        else:
            assert error_of(result, "dirty") and i % 2 == 0, result
            refused.add(i)
    assert landed | refused == set(range(n)) and landed, (landed, refused)
    for path, content in wrote.items():
        assert (repo / path).read_text() == content, path
    staged = [line for line in porcelain(repo) if line[0] not in " ?"]
    assert staged == [], staged
    for i in range(n):
        expected = f"session {i}\n" if i in landed else f"base {i}\n"
        assert git("show", f"main:p{i}.txt", cwd=repo) + "\n" == expected
        if f"p{i}.txt" not in wrote:
            assert (repo / f"p{i}.txt").read_text() == expected


@pytest.mark.parametrize("theirs,adds", [("debug.log", "debug.log"), ("build/out.txt", "build/out.txt"),
                                         ("build/keep.txt", "build"), ("debug.log", "debug.log/inner.txt")])
def test_an_ignored_file_in_the_main_checkout_is_never_overwritten_by_what_lands(api: Api, theirs: str,
                                                                               adds: str) -> None:
    """Issue 15 red team: the user's ignored files (`*.log`, `build/` here; a `.env` alike)
    are not in `git status`, and read-tree overwrites an ignored file with what lands at its
    path without a word (git counts them expendable), an ignored directory or a file where
    the added file's directory goes too. A session that adds, force-added, a file there is
    refused as `dirty` naming it; main does not move; the user's file stays."""
    repo = api.repo
    write(repo, {theirs: "the user's own\n"})
    wt = start(api, "adds")
    write(wt, {adds: "the session's\n"})
    git("add", "-f", adds, cwd=wt)
    git("commit", "-q", "-m", f"add {adds}", cwd=wt)
    old = rev(repo, "main")
    error = error_of(cli_json("integrate", "--session", "adds", cwd=repo, expect=11), "dirty")
    assert adds in error["message"] and str(repo) in error["message"], error
    assert rev(repo, "main") == old
    assert (repo / theirs).read_text() == "the user's own\n"
    assert porcelain(repo) == []


def test_a_tracked_file_the_session_turns_into_a_directory_is_not_in_the_way(api: Api) -> None:
    """(The other side of the test above: the file standing where an added file's directory
    goes is one the integration itself removes, so it lands and the checkout follows.)"""
    repo = api.repo
    wt = start(api, "todir")
    git("rm", "-q", "app.py", cwd=wt)
    write(wt, {"app.py/inner.txt": "now a directory\n"})
    commit_all(wt, "app.py becomes a directory")
    cli_json("integrate", "--session", "todir", cwd=repo)
    assert (repo / "app.py" / "inner.txt").read_text() == "now a directory\n"
    assert porcelain(repo) == []


# A branch's ref file as git may leave it (or a hand edit): name -> how to make it, after
# `side` exists as a loose ref. (A str is written as the file; a callable does the rest.)
BRANCH_FILES: dict[str, Any] = {
    "loose": None,
    "packed": lambda clone: git("pack-refs", "--all", cwd=clone),
    "with CRLF": "{sha}\r\n",
    "with a trailing space": "{sha} \n",
    "no newline": "{sha}",
    "short id": "{short}\n",
    "upper case": "{upper}\n",
    "symbolic ref": "ref: refs/heads/main\n",
    "a symlink to main's file": lambda clone: _relink(clone / ".git" / "refs" / "heads" / "side", "main"),
    "a directory": lambda clone: _as_directory(clone / ".git" / "refs" / "heads" / "side"),
    "an object that is not there": "0123456789abcdef0123456789abcdef01234567\n",
    "missing": lambda clone: git("update-ref", "-d", "refs/heads/side", cwd=clone),
}


def _relink(path: Path, to: str) -> None:
    path.unlink()
    path.symlink_to(to)


def _as_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("case", list(BRANCH_FILES))
def test_a_branch_read_from_its_ref_file_is_what_git_says_or_git_is_asked(case: str, tmp_path: Path) -> None:
    """git.branch_file (`para integrate` finds its target without a git process): the object
    id git itself resolves the branch to, or LookupError for git to answer (a packed ref, a
    file git would read some other way or not at all)."""
    from para_rpc import git as para_git
    clone = make_repo(tmp_path / "r")
    git("branch", "side", cwd=clone)
    sha = rev(clone, "side")
    how = BRANCH_FILES[case]
    if callable(how):
        how(clone)
    elif how is not None:
        (clone / ".git" / "refs" / "heads" / "side").write_text(
            how.format(sha=sha, short=sha[:12], upper=sha.upper()), newline="")
    res = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "refs/heads/side"], cwd=clone,
                         capture_output=True, text=True)
    says = res.stdout.strip() if res.returncode == 0 else None
    try:
        read = para_git.branch_file(str(clone / ".git"), "side")
    except LookupError:
        assert case not in ("loose",), "a plain loose ref is read from its file"
        return  # (git is asked: its answer is the one above)
    assert read == says, (read, says)


def test_a_worktree_listing_that_meets_a_worktree_being_added_asks_again(tmp_path: Path) -> None:
    """`git worktree add` (para's, in another request, or the user's) makes its directory under
    .git/worktrees/ before it writes the files there: a listing in that moment failed with
    "failed to read .git/worktrees/<id>/commondir" (seen in CI: `para monitor` exited 5)."""
    import asyncio
    import threading

    from para_rpc import git as para_git
    repo = make_repo(tmp_path / "r")
    ghost = repo / ".git" / "worktrees" / "ghost"
    ghost.mkdir(parents=True)
    (ghost / "gitdir").write_text(f"{tmp_path / 'wt' / '.git'}\n")
    (ghost / "HEAD").write_text("ref: refs/heads/main\n")
    (ghost / "commondir").write_text("")  # (opened, not yet written)
    assert subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True).returncode != 0
    done = threading.Timer(0.1, lambda: (ghost / "commondir").write_text("../..\n"))
    done.start()
    try:
        listed = asyncio.run(para_git.worktrees(repo))
    finally:
        done.join()
    assert [w.path for w in listed][0] == os.path.realpath(repo) and len(listed) == 2
