"""Writes outside an agent's worktree are noticed (red team R3-13, issue 17 point 3).

Para cannot sandbox an agent, but it notices: when an agent starts, it records `git status`
(with each entry's size and mtime) of the main checkout and of the other live session worktrees,
and the git directory's config and hooks; when the agent has ended it compares. What changed is
an `outside_changes` event, the `outside_changes` field of the agent's session (and of a session
whose worktree changed), a note on both, and a line under `para list`'s table. A worktree whose
own agent ran meanwhile is not compared: what changed there is that agent's work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents_util import Api, agent_env, agent_scripts, api, dispatch, out, step_profile, wait_file  # noqa: F401
from conftest import commit_file, git, run_para, wait_until

pytestmark = pytest.mark.usefixtures("sidecar")


def task(*commands: str, finish: bool = True) -> str:
    text = "Change some files.\n\n```file:own.txt\nmine\n```\n\n```agent\n" + "".join(f"{c}\n" for c in commands)
    text += "```\n\n"
    return text + ('When done: para integrate "Own work"\n' if finish else "Do not run any para commands.\n")


def settled(api: Api, name: str) -> dict[str, Any]:
    """The session once para has compared what its agent's run changed outside its worktree."""
    def done() -> dict[str, Any] | None:
        s = api.call("para/show", session=name)
        return s if s["agent"] and s["agent"]["settled"] else None
    return wait_until(done, 60, f"the agent of {name} to be settled", interval=0.05)


def changes(rows: list[dict[str, Any]]) -> set[tuple]:
    return {(c["agent"], c["location"], c["session"], c["path"], c["status"], c["was"]) for c in rows}


def test_writes_into_the_main_checkout_and_another_session_are_reported(api, repo, para):
    """R3-13: the agent writes ../../../pwned.txt, appends to ../../../b.txt and writes
    ../other/injected.txt (another live session), then integrates."""
    commit_file(repo, "b.txt", "world\n", "add b.txt")
    para("start", "other")
    dispatch(repo, "dmn", "-p", task('run sh -c "echo pwned-main > ../../../pwned.txt"',
                                     'run sh -c "echo tampered >> ../../../b.txt"',
                                     'run sh -c "echo injected > ../other/injected.txt"'),
             "--agent", "scripted", "--mode", "headless")
    ev = api.wait_event("outside_changes", "dmn")["data"]
    expected = {("dmn", "main checkout", None, "pwned.txt", "??", ""),
                ("dmn", "main checkout", None, "b.txt", " M", ""),
                ("dmn", "session", "other", "injected.txt", "??", "")}
    assert changes(ev["changes"]) == expected
    assert api.sessions()["dmn"]["status"] == "integrated"  # noticing never blocks the agent's work
    assert (repo / "pwned.txt").read_text() == "pwned-main\n"  # ... and never touches what it finds

    shown = json.loads(para("show", "dmn", "--json").stdout)
    assert changes(shown["outside_changes"]) == expected
    text = para("show", "dmn").stdout
    for words in ("changed outside its worktree", "main checkout: b.txt (modified), pwned.txt (untracked)",
                  "session other: injected.txt (untracked)"):
        assert words in text, text

    other = {s["name"]: s for s in json.loads(para("list", "--json").stdout)["sessions"]}["other"]
    assert changes(other["outside_changes"]) == {("dmn", "session", "other", "injected.txt", "??", "")}
    assert any("check them before integrating" in n for n in other["notes"])
    assert "! other: changed here while the agent of dmn ran: injected.txt" in para("list").stdout
    listed = para("list", "--all").stdout
    assert "! dmn: while its agent ran, 3 file(s) changed outside its worktree" in listed
    for path in ("pwned.txt (main checkout)", "b.txt (main checkout)", "injected.txt (session other)"):
        assert path in listed, listed


def test_only_what_changed_during_the_run_is_reported(api, repo, para):
    """Files already dirty or untracked when the agent started are not its doing; one that
    changes again while it runs is reported (same status, new content)."""
    commit_file(repo, "b.txt", "world\n", "add b.txt")
    (repo / "notes.txt").write_text("the user's own untracked file\n")
    (repo / "b.txt").write_text("the user's edit\n")
    other = Path(para_json_start(para, "other"))
    (other / "draft.txt").write_text("work in progress\n")
    dispatch(repo, "dmn", "-p", task('run sh -c "echo more >> ../../../b.txt"', finish=False),
             "--agent", "scripted", "--mode", "headless")
    s = settled(api, "dmn")
    assert changes(s["outside_changes"]) == {("dmn", "main checkout", None, "b.txt", " M", " M")}
    assert "b.txt (modified, changed again)" in para("show", "dmn").stdout
    assert (repo / "notes.txt").exists() and (other / "draft.txt").exists()
    assert api.sessions()["other"]["outside_changes"] == []


def para_json_start(para, name: str) -> str:
    return json.loads(para("start", name, "--json").stdout)["worktree"]


def test_a_hook_written_into_the_git_directory_is_reported(api, repo, para):
    """A hook in the shared git directory runs as the user on their next commit."""
    dispatch(repo, "hk", "-p", task('run sh -c "echo echo hi > ../../../.git/hooks/post-commit"', finish=False),
             "--agent", "scripted", "--mode", "headless")
    s = settled(api, "hk")
    assert changes(s["outside_changes"]) == {("hk", "git directory", None, "hooks/post-commit", "", "")}
    assert "git directory: hooks/post-commit" in para("show", "hk").stdout
    assert api.wait_event("outside_changes", "hk")


def test_an_agent_that_stays_in_its_worktree_is_not_blamed_for_another_agents_work(api, repo, out, para):
    """Two agents at once: `busy` writes in its own worktree while `calm` runs. Neither is
    reported; `calm` reads no one else's work as its own."""
    para("start", "idle")
    api.dispatch("busy", "work", "w", profiles={"w": step_profile(
        f"wait:{out}/go", "write:busy.txt=busy\n", f"touch:{out}/busy.wrote", f"wait:{out}/end")})
    dispatch(repo, "calm", "-p", task(f"wait-for {out}/busy.wrote", finish=False),
             "--agent", "scripted", "--mode", "headless")
    (out / "go").touch()
    wait_file(out / "busy.wrote")
    s = settled(api, "calm")
    assert s["outside_changes"] == [] and not any("outside" in n for n in s["notes"])
    (out / "end").touch()
    assert settled(api, "busy")["outside_changes"] == []
    assert not [e for e in api.events() if e["kind"] == "outside_changes"]
    assert "!" not in para("list").stdout


def test_agents_integrating_at_once_are_not_blamed_for_each_others_landings(api, repo, out, para):
    """Seen with 20 agents (bench_remote): each integration moves main, then the main
    checkout's files, and lands another session (which leaves the live list). An agent whose
    run was compared at that moment was blamed for a "deleted" file in the main checkout, or
    for the landed session's files. Twelve agents land at once here: nobody is blamed."""
    n = 12
    for i in range(n):
        text = (f"Note {i}.\n\n```file:notes/n{i:02d}.txt\nnote {i}\n```\n\n```agent\nwait-for {out}/go\n```\n\n"
                f'When done: para integrate "note {i}"\n')
        dispatch(repo, f"c{i:02d}", "-p", text, "--agent", "scripted", "--mode", "headless")
    (out / "go").touch()
    wait_until(lambda: sum(e["kind"] == "integrated" for e in api.events()) >= n, 120, "every integration")
    for i in range(n):
        s = settled(api, f"c{i:02d}")
        assert s["outside_changes"] == [] and not any("outside" in x for x in s["notes"]), s
    assert not [e for e in api.events() if e["kind"] == "outside_changes"]
    assert len(git("ls-tree", "--name-only", "main", "notes/", cwd=repo).split()) == n
