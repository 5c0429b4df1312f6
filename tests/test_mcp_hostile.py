"""Hostile input through MCP arrives literally and harms nothing.

Para's MCP server built shell strings from tool arguments; here arguments go
through pydantic and msgspec into argv lists and files, never a shell. The
`scripted` profile receives its task as {prompt_file}, so the prompt file can
be compared byte for byte with what the client sent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from para_rpc import agents

from conftest import git, git_state
from mcp_util import call, call_error, mcp_client, task_file, wait_for_states

HOSTILE = ("Do not run any para commands.\n"
           "$(touch x) `touch x` ; touch x ; rm -rf ~ && echo pwned > x | tee x\n"
           "\"double\" 'single' \\\" \\' \\\\ $HOME ${HOME} %s {prompt} {prompt_file} {session}\n"
           "line\r\nwith\ttabs and a NUL:\x00after the NUL\n"
           "unicode: é ß 漢字 🙂\n")


def _no_x_anywhere(*roots: Path) -> None:
    for root in roots:
        found = [p for p in root.rglob("x")] + [p for p in root.rglob("pwned")]
        assert not found, f"something ran a shell: {found}"


async def test_hostile_task_text_arrives_byte_exact_and_runs_nothing(sidecar, repo, tmp_path):
    task = HOSTILE + "padding " * (1 << 17)  # about 1 MB
    assert len(task.encode()) > 1_000_000
    home = Path(os.environ["HOME"])
    home_before = sorted(p.name for p in home.iterdir())
    async with mcp_client(repo) as c:
        r = await call(c, "para_dispatch", {"session": "hostile", "task": task, "agent": "scripted"})
        s = r["sessions"][0]
        assert s["name"] == "hostile"
        prompt_file = Path(s["prompt_file"])
        assert prompt_file.read_bytes() == agents.compose_prompt(task, "integrate").encode("utf-8")
        assert prompt_file.read_bytes().startswith(HOSTILE.encode("utf-8"))  # "Do not run any para ..."
        await wait_for_states(c, {"hostile": lambda e: bool(e) and e["agent_exit_code"] is not None})
        st = (await call(c, "para_status", {"session": "hostile"}))["sessions"][0]
        assert st["agent"]["exit_code"] == 0 and st["status"] == "active"
        # the task text is stored and reported literally too
        assert st["task"].startswith("Do not run any para commands.")
    _no_x_anywhere(tmp_path, home, Path(s["worktree"]))
    assert home.is_dir() and sorted(p.name for p in home.iterdir()) == home_before


async def test_hostile_session_names_are_refused_and_touch_nothing(sidecar, repo, tmp_path):
    before = git_state(repo)
    names = ["../../etc", "../x", "/etc/passwd", "$(touch x)", "`touch x`", "a;touch x", "-rf", "a b",
             "a\nb", "a\x00b", "", "." , "..", "x" * 300, "--help", "main~1", "a/b"]
    async with mcp_client(repo) as c:
        for name in names:
            for tool, args in (("para_start", {"session": name}),
                               ("para_dispatch", {"session": name, "task": "t", "agent": "scripted"}),
                               ("para_cancel", {"session": name}),
                               ("para_continue", {"session": name}),
                               ("para_diff", {"session": name}),
                               ("para_wait", {"sessions": [name], "timeout": 0})):
                err = await call_error(c, tool, args)
                assert "invalid_input: " in err and "not_found" not in err, (tool, name, err)  # refused as a name
        assert (await call(c, "para_list", {"all": True}))["sessions"] == []
    assert git_state(repo) == before
    _no_x_anywhere(tmp_path)
    assert not (tmp_path / "etc").exists()


async def test_task_files_outside_the_repository_are_refused(sidecar, repo, tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("```file:stolen.txt\nsecret\n```\nWhen done: para integrate \"steal\"\n")
    task_file(repo, "TASK_1_ok.md", "```file:ok.txt\nok\n```\n", commit=False)
    (repo / "tasks" / "TASK_2_evil.md").symlink_to(outside)
    (repo / "escape").symlink_to(tmp_path)
    async with mcp_client(repo) as c:
        for args in ({"file": str(outside)}, {"file": "../outside.md"}, {"file": "tasks/TASK_2_evil.md"},
                     {"file": "TASK_2_evil.md"}, {"file": "escape/outside.md"}, {"files": ["TASK_2_evil.md"]},
                     {"files": [str(outside)]}, {"tasks": [{"file": str(outside)}]}):
            err = await call_error(c, "para_dispatch", {**args, "agent": "scripted"})
            assert "invalid_input" in err and "outside the repository" in err, (args, err)
        # a plan directory holding such a link is refused as a whole, before anything starts
        for args in ({"file": "tasks"}, {"tasks": [{"file": "tasks"}]}):
            err = await call_error(c, "para_dispatch", {**args, "agent": "scripted"})
            assert "invalid_input" in err and "outside the repository" in err and "TASK_2_evil.md" in err
        assert (await call(c, "para_list", {"all": True}))["sessions"] == []
    assert git("for-each-ref", "refs/heads/para/", cwd=repo) == ""
    assert not (repo / "stolen.txt").exists()


async def test_unknown_sessions_and_wrong_argument_types(sidecar, repo):
    async with mcp_client(repo) as c:
        for tool in ("para_status", "para_continue", "para_abort", "para_cancel", "para_diff", "para_resume",
                     "para_recover"):
            err = await call_error(c, tool, {"session": "nope"})
            assert "not_found" in err and "nope" in err, (tool, err)
        err = await call_error(c, "para_wait", {"sessions": ["nope"], "timeout": 0})
        assert "not_found" in err
        for tool, args, field in (("para_list", {"all": "maybe"}, "all"),
                                  ("para_wait", {"timeout": "soon"}, "timeout"),
                                  ("para_wait", {"timeout": -1}, "timeout"),
                                  ("para_wait", {"sessions": "shared"}, "sessions"),
                                  ("para_wait", {"sessions": [1, 2]}, "sessions"),
                                  ("para_dispatch", {"files": "tasks"}, "files"),
                                  ("para_dispatch", {"tasks": [{"task": "t", "bogus": 1}]}, "tasks"),
                                  ("para_diff", {"session": "x", "max_bytes": 10}, "max_bytes"),
                                  ("para_integrate", {"session": "x", "strategy": "octopus"}, "strategy"),
                                  ("para_cancel", {}, "session"),
                                  ("para_start", {"session": ["a"]}, "session"),
                                  ("para_list", {"repo": 5}, "repo")):
            err = await call_error(c, tool, args)
            assert "validation error" in err and field in err, (tool, args, err)
        err = await call_error(c, "para_dispatch", {"task": "a", "file": "b"})
        assert "exactly one" in err
        err = await call_error(c, "para_dispatch", {})
        assert "exactly one" in err
        r = await c.call_tool("no_such_tool", {})
        assert r.is_error
        # the connection and the sidecar are fine afterwards
        assert (await call(c, "para_list"))["sessions"] == []


def test_an_mcp_line_with_a_lone_surrogate_escape_gets_an_answer(sidecar: Any, repo: Path) -> None:
    """Python's json takes `\\udcff`, the MCP SDK's parser does not and drops the line: the
    bridge answers it (bridge.py `_parse_error`), or the client would wait forever (rt2)."""
    from test_mcp_push import RawMcp
    c = RawMcp(repo)
    try:
        c.buf = b""
        assert c.p.stdin is not None
        c.p.stdin.write(b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"para_list",'
                        b'"arguments":{"repo":"/x\\udcff"}}}\n')
        c.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "para_list", "arguments": {}}})
        assert c.read_until(b'"id":7', 60), c.buf[-500:]
        answers = [json.loads(x) for x in c.buf.splitlines() if x.strip()]
        assert any(a.get("id") == 6 and "error" in a for a in answers), answers
    finally:
        c.close()
