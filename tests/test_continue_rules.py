"""`para continue` lands exactly what was resolved, nothing else.

- A conflict that git left without text markers (binary, modify/delete, rename/rename,
  file/directory) is resolved only when someone staged a choice (`git add`/`git rm`), as
  `git commit` requires; until then `continue` refuses with `conflict`, names the paths and
  the fix, and changes nothing. `--force` stages everything as it is.
- A text conflict is resolved once its markers are gone (staged or not).
- Marker checks count only lines that neither side of the merge has: a reStructuredText
  title underlined with `=======` is content, a stray `=======` left from a conflict (CRLF
  included) is not. Symlinks are never followed.
- The merge commit that records a resolution runs the repository's commit hooks, as
  `git commit` would.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import git, rev

pytest.register_assert_rewrite("integrate_util")
from integrate_util import (Api, api, cli_json, commit_all, error_of, in_progress, start, write)  # noqa: E402,F401

SHARED_SIDECAR = True

PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"
RED, BLUE, GREY = PNG + b"\xff\0\0" * 40, PNG + b"\0\0\xff" * 40, PNG + b"\x80" * 120


class Link(str):
    """A symlink to this target, as a file's content."""


def land(api: Api, name: str, files: dict[str, Any], commands: list[list[str]] = ()) -> Path:
    """A session that runs `git` commands in its worktree, then writes `files` (bytes, str or a
    Link), and commits. Returns its worktree."""
    wt = Path(api.call("para/start", name=name)["worktree"])
    for argv in commands:
        git(*argv, cwd=wt)
    for path, content in files.items():
        p = wt / path
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            os.symlink(content, p)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    commit_all(wt, f"{name} changes")
    return wt


def base_commit(api: Api, files: dict[str, Any]) -> None:
    for path, content in files.items():
        p = api.repo / path
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    commit_all(api.repo, "base files")


def tree_of(repo: Path, rev_: str = "main") -> dict[str, str]:
    """{path: blob sha} of a commit."""
    out = git("ls-tree", "-r", "-z", rev_, cwd=repo)
    return {e.split("\t", 1)[1]: e.split()[2] for e in out.split("\0") if e}


def blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# name -> (base files, first session (lands), second session (conflicts),
#          unmerged paths at continue, the user's explicit resolution, main's files afterwards)
UNMARKED = {
    "binary": (
        {"logo.png": GREY},
        ({"logo.png": RED}, []), ({"logo.png": BLUE}, []),
        ["logo.png"],
        [["checkout", "--ours", "logo.png"], ["add", "logo.png"]],
        {"logo.png": blob(BLUE)}),
    "modify-delete": (
        {"doc.txt": "doc\n"},
        ({}, [["rm", "-q", "doc.txt"]]), ({"doc.txt": "doc, edited\n"}, []),
        ["doc.txt"],
        [["rm", "-q", "doc.txt"]],
        {"doc.txt": None}),
    "file-directory": (
        {"a.txt": "a\n"},
        ({"a.txt/inner": "inner\n"}, [["rm", "-q", "a.txt"]]), ({"a.txt": "a, edited\n"}, []),
        ["a.txt~HEAD"],
        [["rm", "-q", "a.txt~HEAD"]],
        {"a.txt/inner": blob(b"inner\n"), "a.txt": None, "a.txt~HEAD": None}),
    "rename-rename": (
        {"shared.txt": "shared\n"},
        ({}, [["mv", "shared.txt", "renamed_0.txt"]]), ({}, [["mv", "shared.txt", "renamed_1.txt"]]),
        ["renamed_0.txt", "renamed_1.txt", "shared.txt"],
        [["rm", "-q", "shared.txt", "renamed_0.txt"], ["add", "renamed_1.txt"]],
        {"renamed_1.txt": blob(b"shared\n"), "renamed_0.txt": None, "shared.txt": None}),
}


def conflicted_pair(api: Api, case: str) -> tuple[Path, str]:
    """Land the first session of `case`, then integrate the second into a conflict.
    Returns the second's worktree and main's commit."""
    base, (files1, cmds1), (files2, cmds2), *_ = UNMARKED[case]
    base_commit(api, base)
    land(api, "first", files1, cmds1)
    wt = land(api, "second", files2, cmds2)
    cli_json("integrate", "--session", "first", cwd=api.repo)
    landed = rev(api.repo, "main")
    err = error_of(cli_json("integrate", "--session", "second", cwd=api.repo, expect=7), "conflict")
    assert set(UNMARKED[case][3]) <= set(err["data"]["files"]), err
    return wt, landed


@pytest.mark.parametrize("case", list(UNMARKED))
def test_conflicts_without_markers_need_an_explicit_choice(api: Api, case: str) -> None:
    """R3-4: continue right after the pause, touching nothing, must not land the side the
    worktree happens to show (p1's image replaced, d1's deletion undone, a junk `a.txt~HEAD`,
    both renamed copies): it refuses, names the paths and the fix, and changes nothing."""
    repo = api.repo
    wt, landed = conflicted_pair(api, case)
    before = tree_of(repo)

    err = error_of(cli_json("continue", "second", cwd=repo, expect=7), "conflict")
    assert sorted(err["data"]["files"]) == sorted(UNMARKED[case][3]), err
    assert "git add" in err["message"] and "git rm" in err["message"] and "--force" in err["message"]
    assert rev(repo, "main") == landed and tree_of(repo) == before
    assert api.session("second")["status"] == "conflicted"
    assert in_progress(wt) == ["MERGE_HEAD"]

    # The user decides, stages the decision, and exactly that lands.
    for argv in UNMARKED[case][4]:
        git(*argv, cwd=wt)
    out = cli_json("continue", "second", cwd=repo)
    assert out["status"] == "integrated"
    after = tree_of(repo)
    for path, sha in UNMARKED[case][5].items():
        assert after.get(path) == sha, (path, after)
    assert git("status", "--porcelain", cwd=repo) == ""


def test_force_stages_everything_as_it_is(api: Api) -> None:
    """`--force` is the explicit way to land the worktree as git left it (what `git add -A`
    then `git commit` would do): here the session's own image."""
    wt, landed = conflicted_pair(api, "binary")
    out = cli_json("continue", "second", "--force", cwd=api.repo)
    assert out["status"] == "integrated"
    assert tree_of(api.repo)["logo.png"] == blob(BLUE)
    assert (api.repo / "logo.png").read_bytes() == BLUE


def test_a_text_conflict_edited_by_hand_needs_no_git_add(api: Api) -> None:
    """The markers were the conflict: once they are edited away the file is resolved (the
    documented flow agents follow); other unmarked conflicts in the same merge still block."""
    base_commit(api, {"notes.txt": "one\ntwo\n", "logo.png": GREY})
    land(api, "first", {"notes.txt": "one\ntwo, first\n", "logo.png": RED})
    wt = land(api, "second", {"notes.txt": "one\ntwo, second\n", "logo.png": BLUE})
    cli_json("integrate", "--session", "first", cwd=api.repo)
    err = error_of(cli_json("integrate", "--session", "second", cwd=api.repo, expect=7), "conflict")
    assert err["data"]["files"] == ["logo.png", "notes.txt"] and err["data"]["hunks"]["notes.txt"]
    write(wt, {"notes.txt": "one\ntwo, both\n"})
    err = error_of(cli_json("continue", "second", cwd=api.repo, expect=7), "conflict")
    assert err["data"]["files"] == ["logo.png"]
    git("add", "logo.png", cwd=wt)
    cli_json("continue", "second", cwd=api.repo)
    assert git("show", "main:notes.txt", cwd=api.repo) == "one\ntwo, both"
    assert tree_of(api.repo)["logo.png"] == blob(BLUE)


RST = "Install\n=======\n\nRun make.\n"


def rst_conflict(api: Api) -> Path:
    base_commit(api, {"README.rst": RST})
    land(api, "first", {"README.rst": RST.replace("Run make.", "Run make all.")})
    wt = land(api, "second", {"README.rst": RST.replace("Run make.", "Run make install.")})
    cli_json("integrate", "--session", "first", cwd=api.repo)
    error_of(cli_json("integrate", "--session", "second", cwd=api.repo, expect=7), "conflict")
    return wt


@pytest.mark.parametrize("staged", [True, False], ids=["git-add", "edited-only"])
def test_a_restructuredtext_title_is_not_a_conflict_marker(api: Api, staged: bool) -> None:
    """R3-7a: `=======` under a seven-letter title is content both sides have; continue once
    the real conflict is resolved (before, it refused forever: "markers remain: README.rst:2")."""
    wt = rst_conflict(api)
    resolved = RST.replace("Run make.", "Run make all install.")
    write(wt, {"README.rst": resolved})
    if staged:
        git("add", "README.rst", cwd=wt)
    assert cli_json("continue", "second", cwd=api.repo)["status"] == "integrated"
    assert (api.repo / "README.rst").read_text() == resolved


def test_a_marker_line_neither_side_has_blocks_until_forced(api: Api) -> None:
    """A resolution that adds a new `=======` line (a second title) is indistinguishable from a
    leftover marker: continue refuses, naming the line, and `--force` lands it on purpose."""
    wt = rst_conflict(api)
    resolved = RST.replace("Run make.", "Run make all.\n\nUsage\n=======\n\nRun it.")
    write(wt, {"README.rst": resolved})
    git("add", "README.rst", cwd=wt)
    err = error_of(cli_json("continue", "second", cwd=api.repo, expect=7), "conflict")
    assert err["data"]["markers"] == ["README.rst:2", "README.rst:7"] and "--force" in err["message"]
    assert api.session("second")["status"] == "conflicted"
    cli_json("continue", "second", "--force", cwd=api.repo)
    assert (api.repo / "README.rst").read_text() == resolved


def test_a_stray_marker_in_a_crlf_file_does_not_land(api: Api) -> None:
    """R3-7c: with core.autocrlf=true the leftover line is `=======\\r`; it must be found as
    in an LF file (before, it landed on main)."""
    git("config", "core.autocrlf", "true", cwd=api.repo)
    base_commit(api, {"crlf.txt": "alpha\nbeta\ngamma\n"})
    land(api, "first", {"crlf.txt": "alpha\nbeta, first\ngamma\n"})
    wt = land(api, "second", {"crlf.txt": "alpha\nbeta, second\ngamma\n"})
    cli_json("integrate", "--session", "first", cwd=api.repo)
    error_of(cli_json("integrate", "--session", "second", cwd=api.repo, expect=7), "conflict")
    assert b"\r\n" in (wt / "crlf.txt").read_bytes()
    landed = rev(api.repo, "main")
    (wt / "crlf.txt").write_bytes(b"alpha\r\nbeta, both\r\n=======\r\ngamma\r\n")
    git("add", "crlf.txt", cwd=wt)
    err = error_of(cli_json("continue", "second", cwd=api.repo, expect=7), "conflict")
    assert err["data"]["markers"] == ["crlf.txt:3"]
    assert rev(api.repo, "main") == landed
    (wt / "crlf.txt").write_bytes(b"alpha\r\nbeta, both\r\ngamma\r\n")
    cli_json("continue", "second", cwd=api.repo)
    assert git("show", "main:crlf.txt", cwd=api.repo) == "alpha\nbeta, both\ngamma"


def test_a_conflicted_symlink_is_never_followed(api: Api, tmp_path: Path) -> None:
    """R3-7b: the link's target outside the repository has a `=======` line; para must not read
    it (before, continue refused forever, reading a file outside the repository)."""
    out = tmp_path / "outside"
    out.mkdir()
    for name in ("one", "two"):
        (out / name).write_text("Title\n=======\n")
    land(api, "first", {"x": Link(out / "one")})
    wt = land(api, "second", {"x": Link(out / "two")})
    cli_json("integrate", "--session", "first", cwd=api.repo)
    err = error_of(cli_json("integrate", "--session", "second", cwd=api.repo, expect=7), "conflict")
    assert err["data"]["files"] == ["x"] and err["data"]["hunks"] == {"x": []}
    git("checkout", "--theirs", "x", cwd=wt)
    git("add", "x", cwd=wt)
    cli_json("continue", "second", cwd=api.repo)
    assert os.readlink(api.repo / "x") == str(out / "one")


HOOK = """#!/bin/sh
echo "$(git symbolic-ref -q HEAD)" >> '{log}'
if [ -e '{block}' ]; then echo "pre-commit: commits are frozen today" >&2; exit 1; fi
"""


def test_the_resolution_commit_runs_the_repositorys_hooks(api: Api, tmp_path: Path) -> None:
    """Documented rule: commits made on a session's branch (by its agent, or by para on its
    behalf, like this merge of a resolution) run the repository's hooks; nothing para builds
    for the target does. A refusing pre-commit hook stops continue with git_failed and git's
    message; the session stays paused with its resolution, and continue works once the hook
    lets it through."""
    hooks, log, block = tmp_path / "hooks", tmp_path / "hook.log", tmp_path / "block"
    hooks.mkdir()
    (hooks / "pre-commit").write_text(HOOK.format(log=log, block=block))
    (hooks / "pre-commit").chmod(0o755)
    wt = rst_conflict(api)
    git("config", "core.hooksPath", str(hooks), cwd=api.repo)
    write(wt, {"README.rst": RST.replace("Run make.", "Run make all install.")})
    landed = rev(api.repo, "main")
    block.touch()
    err = error_of(cli_json("continue", "second", cwd=api.repo, expect=5), "git_failed")
    assert "commits are frozen today" in err["message"]
    assert api.session("second")["status"] == "conflicted" and in_progress(wt) == ["MERGE_HEAD"]
    assert rev(api.repo, "main") == landed
    block.unlink()
    assert cli_json("continue", "second", cwd=api.repo)["status"] == "integrated"
    # The hook ran for the session's commits only; the squash commit on main ran none.
    assert set(log.read_text().split()) == {"refs/heads/para/second"}
    assert rev(api.repo, "main~1") == landed
