"""Agent-written text never drives the user's terminal (red team rb: RB5, RB6).

What each test guards:
- an agent's status and blocked text with terminal codes (CSI, OSC title, a bare \\r, a forged
  line) are refused when reported (`invalid_input`, nothing stored); commit subjects, which git
  keeps as written, reach `para show` only as visible escapes, one line each, and `para status
  show`, `para list --verbose`, `para messages`, `para monitor --once` print nothing raw;
  `--json` keeps the exact text;
- Rich markup in agent text (`[/]`, `[link=...]`) neither crashes `para monitor` (Textual) nor
  becomes a link or a style: it is shown as typed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from para_rpc.tui import MonitorApp
from textual.widgets import DataTable

from conftest import commit_file, run_para
from test_monitor_tui import until

# OSC title + clear screen + colour + \r and a forged next line; OSC 52 writes the clipboard.
STATUS = "pwn\x1b]0;TITLE\x07\x1b[2J\x1b[31mRED\r\nfake line"
BLOCKED = "b\x1b[5mX\x9b2J"
SUBJECT = "fix\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2K\rclean subject"
BLOCKED_MARKUP = "oops [/] [link=file:///etc/passwd]click[/link] [red]"
MESSAGE = "a follow-up [bold]"  # `para send` refuses control characters itself


def assert_harmless(out: str, what: str) -> None:
    for code in ("\x1b", "\x07", "\r", "\x9b"):
        assert code not in out, f"{what} printed {code!r} raw:\n{out!r}"
    assert not any(line.startswith("fake line") for line in out.splitlines()), f"{what} forged a line:\n{out}"


def test_agent_text_reaches_the_terminal_only_as_visible_escapes(sidecar: Any, repo: Path) -> None:
    run_para("start", "s1", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s1"
    commit_file(wt, "a.txt", "a\n", SUBJECT)
    for args in ([STATUS], ["working", "--blocked", BLOCKED]):
        refused = run_para("status", *args, cwd=wt, check=False)
        assert refused.returncode == 2 and "control characters" in refused.stderr, refused
        assert_harmless(refused.stderr, "the refusal")
    run_para("status", "working [bold]", "--blocked", "needs [link=x]a key", cwd=wt)
    run_para("send", "s1", MESSAGE, cwd=repo)

    for argv, cwd, shows in [
        (("status", "show"), repo, ["working [bold]", "needs [link=x]a key"]),
        (("show", "s1"), repo, ["fix\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2K\\rclean subject"]),
        (("list", "--verbose"), repo, ["s1"]),
        (("messages",), wt, [MESSAGE]),
        (("monitor", "--once"), repo, ["needs [link=x]a key"]),
    ]:
        out = run_para(*argv, cwd=cwd, env={"COLUMNS": "300"}).stdout
        assert_harmless(out, f"para {' '.join(argv)}")
        for text in shows:
            assert text in out.replace("\n", "") if argv[0] == "monitor" else text in out, (argv, text, out)

    # JSON stays exact: scripts get the agent's bytes as they were written.
    shown = json.loads(run_para("status", "show", "--json", cwd=repo).stdout)
    rep = shown["sessions"][0]["report"]
    assert (rep["task"], rep["blocked"]) == ("working [bold]", "needs [link=x]a key")
    subjects = [c["subject"] for c in json.loads(run_para("show", "s1", "--json", cwd=repo).stdout)["commits"]]
    assert SUBJECT in subjects


def test_rich_markup_from_an_agent_neither_crashes_the_monitor_nor_links(sidecar: Any, repo: Path) -> None:
    run_para("start", "s1", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s1"
    run_para("status", "oops [/] [bold", "--blocked", BLOCKED_MARKUP, cwd=wt)  # (markup, no control codes)

    async def view() -> list[Any]:
        app = MonitorApp(str(repo), {})
        async with app.run_test(size=(250, 40)) as pilot:
            await until(pilot, lambda: "s1" in app.session_names(), "s1 in the view")
            cells = list(app.query_one("#sessions", DataTable).get_row("s1"))
            await pilot.pause()
            assert app.is_running  # a MarkupError would have ended the app
            return cells

    cells = asyncio.run(view())
    task = next(c for c in cells if "BLOCKED" in str(c))
    assert str(task).startswith("BLOCKED: oops [/] [link=file:///etc/passwd]click[/link] [red"), task
    assert not getattr(task, "spans", []) and "link" not in str(getattr(task, "style", "")), task

    out = run_para("monitor", "--once", cwd=repo, env={"COLUMNS": "300"}).stdout
    assert "oops [/] [link=file:///etc/passwd]click" in out.replace("\n", ""), out
    assert_harmless(out, "para monitor --once")

