"""`para monitor`: the full-screen Textual view against the real sidecar (driven by Textual's
pilot), and the plain modes scripts get (`--once`, `--until-done`, a stdout that is no terminal,
Textual missing), through the real CLI.

What each test guards:
- a session started by the CLI appears without a key press (the view is pushed by events);
- `i` integrates the selected session, `d` shows its diff;
- cancel asks first: `n` leaves the session exactly as it was, `y` cancels it;
- `--once` prints the plain table (empty and populated) and `--json` the frame as JSON;
- a non-terminal stdout never gets the TUI; without Textual a terminal gets how to install it;
- an agent on another host (the real sshd): its cell says `@h1` and the age of its last harvest.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from para_rpc.tui import Confirm, MonitorApp, Pager

from agents_util import agents_env, step_profile
from conftest import IDENTITY, PARA_ARGV, cli_env, commit_file, git, in_terminal, rev, run_para
from ssh_util import SshHost, ssh_host  # noqa: F401  (fixture)


async def until(pilot: Pilot[Any], predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Let the app run until `predicate` holds (the app's own threads do the work)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def sessions(repo: Path) -> dict[str, str]:
    out = json.loads(run_para("list", "--all", "--json", cwd=repo).stdout)
    return {s["name"]: s["status"] for s in out["sessions"]}


def text_of(app: MonitorApp, selector: str) -> str:
    return str(app.query_one(selector, Static).content)


async def para_async(repo: Path, *args: str, env: dict[str, str | None] | None = None
                     ) -> subprocess.CompletedProcess[str]:
    # In a thread: the app (same event loop) keeps running while the CLI waits for the sidecar.
    return await asyncio.to_thread(run_para, *args, cwd=repo, env=env)


async def test_pushed_view_integrates_and_asks_before_cancelling(sidecar: Any, repo: Path) -> None:
    app = MonitorApp(str(repo), {})
    async with app.run_test(size=(200, 40)) as pilot:
        await until(pilot, lambda: app.loads >= 1, "the first frame")
        assert app.session_names() == []
        assert "No sessions" in text_of(app, "#plans")

        loads = app.loads
        await para_async(repo, "start", "alpha")
        await until(pilot, lambda: "alpha" in app.session_names(), "alpha to appear without a key press")
        assert app.loads > loads
        table = app.query_one("#sessions", DataTable)
        assert [str(c) for c in table.get_row("alpha")][:2] == ["alpha", "active"]

        wt = repo / ".para" / "worktrees" / "alpha"
        await asyncio.to_thread(commit_file, wt, "alpha.txt", "alpha\n", "alpha's work")
        await pilot.press("d")
        pager = await until(pilot, lambda: isinstance(app.screen, Pager) and app.screen.query("#pager-text")
                            and app.screen, "the diff")
        assert "alpha.txt" in str(pager.query_one("#pager-text", Static).content)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, Pager), "the diff to close")

        before = rev(repo, "main")
        await pilot.press("i")
        await until(pilot, lambda: rev(repo, "main") != before, "main to move", timeout=90)
        await until(pilot, lambda: "alpha" not in app.session_names(), "alpha to leave the view")
        assert git("show", "main:alpha.txt", cwd=repo) == "alpha"
        assert sessions(repo)["alpha"] == "integrated"
        assert "integrate" in text_of(app, "#message")

        await para_async(repo, "start", "beta")
        await until(pilot, lambda: app.session_names() == ["beta"], "beta to appear")
        assert app.selected() == "beta"
        state = await asyncio.to_thread(sessions, repo)

        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation")
        assert "beta" in str(app.screen.query_one("#question", Static).content)
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, Confirm), "the confirmation to close")
        assert "not done" in text_of(app, "#message")
        assert await asyncio.to_thread(sessions, repo) == state  # refused: nothing changed
        assert (repo / ".para" / "worktrees" / "beta").is_dir()

        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, Confirm), "the confirmation, again")
        await pilot.press("y")
        await until(pilot, lambda: "beta" not in app.session_names(), "beta to be cancelled")
        assert (await asyncio.to_thread(sessions, repo))["beta"] == "cancelled"
        assert not (repo / ".para" / "worktrees" / "beta").exists()


async def test_keys_on_an_empty_view_and_refused_actions_say_why(sidecar: Any, repo: Path) -> None:
    app = MonitorApp(str(repo), {})
    async with app.run_test(size=(200, 40)) as pilot:
        await until(pilot, lambda: app.loads >= 1, "the first frame")
        await pilot.press("i")
        assert text_of(app, "#message") == "no session selected"
        await pilot.press("x")
        assert not isinstance(app.screen, Confirm)
        await para_async(repo, "start", "idle")
        await until(pilot, lambda: "idle" in app.session_names(), "idle to appear")
        await pilot.press("c")  # nothing to continue: the sidecar's error, in words
        await until(pilot, lambda: "continue idle:" in text_of(app, "#message"), "continue's error")
        assert "wrong_state" in text_of(app, "#message") or "nothing_to_do" in text_of(app, "#message")
        await pilot.press("l")  # `para start`: no agent, no log
        await until(pilot, lambda: "no log file" in text_of(app, "#message"), "the log's absence, said")


async def test_an_agent_on_another_host_shows_where_and_its_harvest_age(sidecar: Any, repo: Path, tmp_path: Path,
                                                                        ssh_host: SshHost) -> None:
    """The agent column of an agent on the real sshd (executor h1, its sweep an hour): `@h1
    (never harvested)` until its status report harvests its commit, then `@h1 (harvest <age>
    ago)`, pushed without a key press; a local agent's cell is its state alone."""
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps(
        {"executors": {"h1": ssh_host.entry(env_passthrough=list(IDENTITY), harvest_interval=3600)}}))
    gate = tmp_path / "remote-gate"
    far = step_profile(f"wait:{gate}", "write:far.txt=far\n", "commit:far", "status:far along",
                       f"wait:{tmp_path}/never")
    await para_async(repo, "dispatch", "here", "-p", "stay", "--agent", "w", env=agents_env(w=step_profile(
        f"wait:{tmp_path}/never")))
    await para_async(repo, "dispatch", "far", "-p", "work there", "--agent", "w", "--executor", "h1",
                     env=agents_env(w=far))
    app = MonitorApp(str(repo), {})
    try:
        async with app.run_test(size=(220, 40)) as pilot:
            table = app.query_one("#sessions", DataTable)

            def agent_cell(name: str) -> str:
                return str(table.get_row(name)[2]) if name in app.session_names() else ""
            await until(pilot, lambda: agent_cell("far") == "running @h1 (never harvested)", "far, never harvested")
            assert agent_cell("here") == "running"
            gate.touch()
            await until(pilot, lambda: re.fullmatch(r"running @h1 \(harvest \d+s ago\)", agent_cell("far")),
                        "far's harvest, pushed")
            assert agent_cell("here") == "running"
    finally:
        for name in ("here", "far"):
            await asyncio.to_thread(run_para, "cancel", name, "--json", cwd=repo, check=False)


# ---- plain modes, through the CLI ------------------------------------------------------------

def test_once_prints_the_plain_table_empty_and_populated(sidecar: Any, repo: Path) -> None:
    empty = run_para("monitor", "--once", cwd=repo)
    assert f"para · {repo}" in empty.stdout.replace("\n", "") or "para ·" in empty.stdout
    assert "No sessions. Start one with `para start` or `para dispatch`." in empty.stdout
    as_json = json.loads(run_para("monitor", "--once", "--json", cwd=repo).stdout)
    assert as_json["sessions"] == [] and as_json["repo"] == str(repo) and "conflicts" in as_json

    run_para("start", "alpha", cwd=repo)
    full = run_para("monitor", "--once", cwd=repo)
    assert "alpha" in full.stdout and "active" in full.stdout and "No sessions" not in full.stdout
    as_json = json.loads(run_para("monitor", "--once", "--json", cwd=repo).stdout)
    assert [s["name"] for s in as_json["sessions"]] == ["alpha"]
    done = json.loads(run_para("monitor", "--until-done", "--json", cwd=repo).stdout)
    assert [s["name"] for s in done["sessions"]] == ["alpha"]

    refused = run_para("monitor", "--json", cwd=repo, check=False)
    assert refused.returncode == 2 and json.loads(refused.stdout)["error"]["code"] == "invalid_input"


def test_a_pipe_gets_the_plain_table_never_the_tui(sidecar: Any, repo: Path) -> None:
    run_para("start", "alpha", cwd=repo)
    proc = subprocess.Popen([*PARA_ARGV, "monitor"], cwd=repo, env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("alpha" in line for line in lines):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"para monitor ended: {proc.wait()} {proc.stderr.read()}"  # type: ignore[union-attr]
            lines.append(line)
        assert not any("\x1b[?1049h" in line for line in lines)  # no alternate screen: no TUI
        assert any("para ·" in line for line in lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_without_textual_a_terminal_is_told_how_to_install_it(sidecar: Any, repo: Path, tmp_path: Path) -> None:
    hide = tmp_path / "no-textual"
    (hide / "textual").mkdir(parents=True)
    (hide / "textual" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'textual'\", "
                                                  "name='textual')\n")
    env = cli_env({"PYTHONPATH": str(hide)})
    code, out = in_terminal([*PARA_ARGV, "monitor"], repo, env)
    assert code == 3, out
    assert "pip install 'para_rpc[tui]'" in out and "Traceback" not in out
    # the plain modes do not need it
    once = subprocess.run([*PARA_ARGV, "monitor", "--once"], cwd=repo, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert once.returncode == 0 and "para ·" in once.stdout, once.stderr


def test_only_para_monitor_imports_textual() -> None:
    code = ("import sys; from para_rpc.cli import app, fast; import para_rpc.monitor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("key", ["q"])
async def test_q_quits(sidecar: Any, repo: Path, key: str) -> None:
    app = MonitorApp(str(repo), {})
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.loads >= 1, "the first frame")
        await pilot.press(key)
        await until(pilot, lambda: not app.is_running, "the app to exit")


async def test_collisions_show_once_an_event_says_something_changed(sidecar: Any, repo: Path) -> None:
    """Work committed in a worktree is no event: the forecast is read again on the next one (a
    progress report here), and a forecast due later than that is still read (no key press)."""
    app = MonitorApp(str(repo), {})
    async with app.run_test(size=(220, 40)) as pilot:
        await until(pilot, lambda: app.loads >= 1, "the first frame")
        for name in ("left", "right"):
            await para_async(repo, "start", name)
            wt = repo / ".para" / "worktrees" / name
            await asyncio.to_thread(commit_file, wt, "README.md", f"# {name} was here\n", f"{name} edits")
        await until(pilot, lambda: app.session_names() == ["left", "right"], "both sessions")
        table = app.query_one("#sessions", DataTable)
        await para_async(repo, "status", "editing the readme", "-s", "left")
        await until(pilot, lambda: str(table.get_row("left")[-1]) == "right"
                    and str(table.get_row("right")[-1]) == "left", "the collision to show")
        await until(pilot, lambda: str(table.get_row("left")[4]).startswith("editing the readme"), "the report")
