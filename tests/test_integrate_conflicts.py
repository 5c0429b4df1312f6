"""Conflicts during `para integrate`: only the session pauses; `para continue` completes it
(never while markers remain); `para abort` restores the exact pre-integration commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import git, rev

pytest.register_assert_rewrite("integrate_util")
from integrate_util import (Api, BASE_FILES, assert_checkout_clean_at, assert_landed_cleanly, changed_files,  # noqa: E402
                            cli_json, edit_line, error_of, first_parent_chain, in_progress, message, api,
                            parents, porcelain, start, world, write)


SHARED_SIDECAR = True  # one sidecar for the module (conftest.py), as one user's serves all repos



MSG = "Land the feature"
SESSION_LINE = edit_line(BASE_FILES["app.py"], 3, "line 3, as the session wants it")
MAIN_LINE = edit_line(BASE_FILES["app.py"], 3, "line 3, as main has it now")
RESOLVED = edit_line(BASE_FILES["app.py"], 3, "line 3, resolved")
CONFLICTING = ("squash", "merge", "rebase")


def conflicting_session(api: Api, name: str = "feat") -> dict[str, str]:
    """A session whose first commit edits app.py line 3 (and adds feature.txt) and whose second
    adds lib/new.py; main then edits the same line."""
    repo = api.repo
    fork = rev(repo, "main")
    wt = start(api, name, {"app.py": SESSION_LINE, "feature.txt": "feature\n"}, {"lib/new.py": "NEW = 1\n"})
    write(repo, {"app.py": MAIN_LINE})
    git("commit", "-q", "-am", "main edits line 3", cwd=repo)
    return {"fork": fork, "old": rev(repo, "main"), "pre": rev(wt, "HEAD"), "wt": str(wt)}


def marker_blocks(path: Path) -> list[list[int]]:
    blocks, start_ = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("<<<<<<<"):
            start_ = n
        elif line.startswith(">>>>>>>"):
            blocks.append([start_, n])
    return blocks


def integrate_into_conflict(api: Api, strategy: str, f: dict[str, str]) -> dict:
    repo = api.repo
    checkout_before = world(repo)[f"wt:{repo}"]
    out = cli_json("integrate", MSG, "--session", "feat", "--strategy", strategy, cwd=repo, expect=7)
    err = error_of(out, "conflict")
    wt = Path(f["wt"])
    assert err["data"]["session"] == "feat" and err["data"]["target"] == "main"
    assert err["data"]["worktree"] == str(wt)
    assert err["data"]["files"] == ["app.py"]
    blocks = marker_blocks(wt / "app.py")
    assert blocks and all(a <= 3 <= b for a, b in blocks)
    assert err["data"]["hunks"] == {"app.py": blocks}
    assert "app.py" in err["message"] and "para continue" in err["message"]
    # Nothing moved on the target side; the main checkout was not touched.
    assert rev(repo, "main") == f["old"]
    assert world(repo)[f"wt:{repo}"] == checkout_before
    s = api.session("feat")
    assert s["status"] == "conflicted" and s["state"] == "conflicted"
    assert s["integration"]["files"] == ["app.py"] and s["integration"]["pre"] == f["pre"]
    assert in_progress(wt) == (["rebase-merge"] if strategy == "rebase" else ["MERGE_HEAD"])
    return err


@pytest.mark.parametrize("strategy", CONFLICTING)
def test_conflict_then_continue(api: Api, strategy: str) -> None:
    repo = api.repo
    f = conflicting_session(api)
    wt = Path(f["wt"])
    integrate_into_conflict(api, strategy, f)

    # A second integrate is refused with directions, not silently restarted.
    again = cli_json("integrate", MSG, "--session", "feat", cwd=repo, expect=4)
    assert "para continue" in error_of(again, "wrong_state")["message"]

    # continue refuses while markers remain, staged or not (from the worktree, no name needed).
    for stage in (False, True):
        if stage:
            git("add", "app.py", cwd=wt)
        out = cli_json("continue", cwd=wt, expect=7)
        err = error_of(out, "conflict")
        assert "marker" in err["message"]
        assert [m.split(":")[0] for m in err["data"]["markers"]] == ["app.py"] * len(err["data"]["markers"])
        assert api.session("feat")["status"] == "conflicted"
        assert rev(repo, "main") == f["old"]

    write(wt, {"app.py": RESOLVED})
    out = cli_json("continue", cwd=wt)
    assert out["status"] == "integrated"
    new = rev(repo, "main")
    assert git("show", f"{new}:app.py", cwd=repo) + "\n" == RESOLVED
    assert git("show", f"{new}:lib/new.py", cwd=repo) == "NEW = 1"
    if strategy == "squash":
        assert parents(repo, new) == [f["old"]]
        assert changed_files(repo, new) == ["app.py", "feature.txt", "lib/new.py"]
        assert message(repo, new) == MSG
    elif strategy == "merge":
        assert parents(repo, new)[0] == f["old"] and len(parents(repo, new)) == 2
        assert message(repo, new) == MSG
    else:
        chain = first_parent_chain(repo, new, f["old"])
        assert [message(repo, c) for c in chain] == ["feat: change 2", "feat: change 1"]
        assert all(len(parents(repo, c)) == 1 for c in chain) and parents(repo, chain[-1]) == [f["old"]]
    assert_checkout_clean_at(repo, "main")
    assert (repo / "app.py").read_text() == RESOLVED
    assert_landed_cleanly(repo, api, "feat")


@pytest.mark.parametrize("strategy", CONFLICTING)
def test_abort_restores_the_exact_pre_integration_commit(api: Api, strategy: str) -> None:
    repo = api.repo
    f = conflicting_session(api)
    wt = Path(f["wt"])
    integrate_into_conflict(api, strategy, f)
    write(wt, {"app.py": RESOLVED[:20], "half-done.txt": "started resolving\n"})  # a resolution under way

    out = cli_json("abort", "feat", cwd=repo)
    assert out["restored"] == f["pre"] and out["status"] == "active"
    assert rev(repo, "para/feat") == f["pre"]
    assert git("symbolic-ref", "HEAD", cwd=wt) == "refs/heads/para/feat"
    assert rev(wt, "HEAD") == f["pre"]
    # Tracked files are back at the pre-integration commit; a file the user created while
    # resolving is not deleted (like `git merge --abort`), and is in the backup ref too.
    assert in_progress(wt) == [] and porcelain(wt) == ["?? half-done.txt"]
    assert (wt / "app.py").read_text() == SESSION_LINE
    # The abandoned resolution is kept in a backup ref, not lost.
    saved = out["saved"]  # {ref, commit}, the shape cancel reports too
    assert saved["ref"].startswith("refs/para/backup/feat/") and rev(repo, saved["ref"]) == saved["commit"]
    assert git("show", f"{saved['ref']}:half-done.txt", cwd=repo) == "started resolving"
    assert rev(repo, "main") == f["old"]
    assert_checkout_clean_at(repo, "main")
    assert api.session("feat")["status"] == "active"

    # Not stranded: integrate again (the same conflict again), resolve, continue, land.
    (wt / "half-done.txt").unlink()
    integrate_into_conflict(api, strategy, f)
    write(wt, {"app.py": RESOLVED})
    out = cli_json("continue", cwd=wt)
    assert out["status"] == "integrated"
    assert (repo / "app.py").read_text() == RESOLVED
    assert (repo / "feature.txt").read_text() == "feature\n"
    assert_checkout_clean_at(repo, "main")


def test_a_paused_session_blocks_no_other_session(api: Api) -> None:
    """Para kept one integration state per checkout: one conflict stranded everyone."""
    repo = api.repo
    f = conflicting_session(api)
    start(api, "other", {"other.txt": "other\n"})
    integrate_into_conflict(api, "squash", f)
    cli_json("integrate", "other lands", "--session", "other", cwd=repo)
    assert changed_files(repo, "main") == ["other.txt"]
    assert parents(repo, "main") == [f["old"]]
    assert api.session("feat")["status"] == "conflicted"
    assert_checkout_clean_at(repo, "main")
    # The paused session then completes on top of what landed meanwhile.
    write(Path(f["wt"]), {"app.py": RESOLVED})
    cli_json("continue", "feat", cwd=repo)
    assert message(repo, "main") == MSG and parents(repo, "main") == [rev(repo, "main~1")]
    assert message(repo, "main~1") == "other lands"
    assert (repo / "other.txt").exists() and (repo / "app.py").read_text() == RESOLVED


def test_rebase_continue_stops_again_on_a_later_commit(api: Api) -> None:
    repo = api.repo
    wt = start(api, "feat", {"app.py": SESSION_LINE},
               {"app.py": edit_line(SESSION_LINE, 3, "line 3, the session's second thought")})
    pre = rev(wt, "HEAD")
    write(repo, {"app.py": MAIN_LINE})
    git("commit", "-q", "-am", "main edits line 3", cwd=repo)
    old = rev(repo, "main")
    out = cli_json("integrate", "--session", "feat", "--strategy", "rebase", cwd=repo, expect=7)
    assert error_of(out, "conflict")["data"]["files"] == ["app.py"]
    write(wt, {"app.py": RESOLVED})
    out = cli_json("continue", "feat", cwd=repo, expect=7)  # the second commit conflicts too
    assert error_of(out, "conflict")["data"]["files"] == ["app.py"]
    assert api.session("feat")["status"] == "conflicted"
    assert rev(repo, "main") == old
    final = edit_line(BASE_FILES["app.py"], 3, "line 3, final")
    write(wt, {"app.py": final})
    cli_json("continue", "feat", cwd=repo)
    chain = first_parent_chain(repo, "main", old)
    assert [message(repo, c) for c in chain] == ["feat: change 2", "feat: change 1"]
    assert (repo / "app.py").read_text() == final
    assert_checkout_clean_at(repo, "main")
    assert_landed_cleanly(repo, api, "feat")
    assert api.session("feat")["integration"]["pre"] == pre
