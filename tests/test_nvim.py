"""The Neovim plugin (editors/nvim) in real Neovim 0.11.4 against the real sidecar.

Each `editors/nvim/tests/e2e/*.lua` script drives `:Para` commands in headless Neovim with
the plugin on the runtimepath, `para` on PATH and the test's sidecar; it prints what it saw
(`kind <json>` lines) and `OK`, and these tests check that and the CLI's own view. The pure
Lua parts have table-driven specs (tests/unit), and the Lua is checked with stylua (installed
from npm into a cache outside the checkout; a failed install fails the test).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agents_util import agents_env, step_profile
from conftest import IDENTITY, PARA_SCRIPT, Sidecar, git, run_para, sidecar_pids, wait_until
from nvim_util import CACHE_ROOT, TmuxNvim, nvim_env, run_lua
from ssh_util import SshHost, ssh_host  # noqa: F401  (fixture)

PLUGIN = Path(__file__).resolve().parent.parent / "editors" / "nvim"
STYLUA_VERSION = "2.5.2"
STYLUA_DIR = CACHE_ROOT / f"stylua-{STYLUA_VERSION}"


def run_script(name: str, repo: Path, tmp: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run e2e/<name>.lua; returns {kind: value} of what it printed (a failed script fails the test)."""
    rtp = tmp / "rtp"
    shutil.copytree(PLUGIN / "doc", rtp / "doc")  # helptags writes doc/tags: never into the checkout
    full = {"REPO": str(repo), "PARA_NVIM_TESTS": str(PLUGIN / "tests"), "PARA_DOC": str(rtp / "doc"),
            "PATH": f"{PARA_SCRIPT.parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    res = run_lua((PLUGIN / "tests" / "e2e" / f"{name}.lua").read_text(), tmp, env=full, cwd=repo,
                  rtp=[PLUGIN, rtp])
    where = f"nvim exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.returncode == 0 and res.stdout.rstrip().endswith("OK"), where
    assert "Traceback" not in res.stderr and "E5108" not in res.stderr, where
    seen: dict[str, Any] = {}
    for line in res.stdout.splitlines():
        kind, _, value = line.partition(" ")
        if value:
            seen[kind] = json.loads(value)
    seen["_stderr"] = res.stderr
    return seen


def show(repo: Path, name: str) -> dict[str, Any]:
    return json.loads(run_para("show", name, "--json", cwd=repo).stdout)


# ---- static checks ---------------------------------------------------------------------------

def stylua() -> Path:
    """stylua from npm (@johnnymorganz/stylua-bin), installed once into the test cache."""
    exe = STYLUA_DIR / "node_modules" / ".bin" / "stylua"
    if exe.exists():
        return exe
    if shutil.which("npm") is None:
        pytest.fail("npm is needed to install stylua (@johnnymorganz/stylua-bin): install Node.js", pytrace=False)
    STYLUA_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f"stylua-{STYLUA_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            res = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(STYLUA_DIR),
                                  f"@johnnymorganz/stylua-bin@{STYLUA_VERSION}"],
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
            if res.returncode != 0 or not exe.exists():
                pytest.fail(f"installing stylua failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}",
                            pytrace=False)
    return exe


def test_lua_is_formatted_with_stylua() -> None:
    res = subprocess.run([str(stylua()), "--check", "."], cwd=PLUGIN, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=120)
    assert res.returncode == 0, f"stylua --check editors/nvim:\n{res.stdout}\n{res.stderr}"


def test_lua_reads_and_writes_no_stray_globals(tmp_path: Path) -> None:
    """LuaJIT's bytecode listing of every plugin file: no global but Lua's and `vim` (this
    caught a closure reading an undeclared `rpc`, which silently broke reconnecting)."""
    res = run_lua((PLUGIN / "tests" / "lint_globals.lua").read_text(), tmp_path, env={"PARA_PLUGIN": str(PLUGIN)})
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"


def test_the_public_api_is_annotated() -> None:
    """LuaLS annotations on every public function of the modules users call."""
    missing = []
    for name in ("init.lua", "config.lua", "client.lua", "commands.lua"):
        lines = (PLUGIN / "lua" / "para" / name).read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"function (M|Connection)[.:][a-zA-Z]\w*\(", line) and not lines[i - 1].startswith("---"):
                missing.append(f"{name}:{i + 1}: {line}")
    assert missing == []


def test_unit_specs(tmp_path: Path) -> None:
    """Argument parsing, completion, rendering of the sessions buffer, quickfix items."""
    res = run_lua((PLUGIN / "tests" / "run_unit.lua").read_text(), tmp_path, rtp=[PLUGIN],
                  env={"PARA_NVIM_TESTS": str(PLUGIN / "tests")})
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert " passed, 0 failed" in res.stdout


def test_protocol_names_live_only_in_protocol_lua() -> None:
    """Every wire name is spelled in protocol.lua alone, so the generated file can replace it."""
    offenders = [f"{p.relative_to(PLUGIN)}: {line.strip()}"
                 for p in (PLUGIN / "lua").rglob("*.lua") if p.name != "protocol.lua"
                 for line in p.read_text().splitlines() if '"para/' in line]
    assert offenders == []


# ---- real Neovim, real sidecar ---------------------------------------------------------------

def test_commands_buffer_health_and_help(sidecar: Sidecar, repo: Path, tmp_path: Path) -> None:
    seen = run_script("basic", repo, tmp_path)
    # :Para start made a session the CLI sees
    assert seen["started"]["name"] == "nv-own"
    assert [s["name"] for s in seen["cli_list"]["sessions"]] == ["nv-own"]
    # the CLI's session appeared in the sessions buffer by itself
    assert any(line.split()[:2] == ["nv-cli", "active"] for line in seen["buffer"]), seen["buffer"]
    print(f"\nsessions buffer redrawn {seen['event_to_buffer_ms']:.0f} ms after the sidecar recorded the CLI's "
          f"change ({seen['cli_to_buffer_ms']:.0f} ms after launching `para start`)")
    assert "start" in seen["complete_sub"] and "status" not in seen["complete_sub"]
    assert seen["complete_session"] == ["nv-cli", "nv-own"] or sorted(seen["complete_session"]) == ["nv-cli", "nv-own"]
    # a buffer in the worktree names the session; diff shows its uncommitted file
    assert seen["context"]["cwd"] == seen["started"]["worktree"]
    assert seen["diff"]["ft"] == "diff" and "+made in neovim" in seen["diff"]["text"]
    assert seen["tab_cwd"] == seen["started"]["worktree"]
    # errors are messages, never tracebacks, and change nothing
    assert seen["show_nope"]["ok"] is False and seen["show_nope"]["code"] == "not_found"
    refused = [m["m"] for m in seen["refused"]]
    assert any('unknown subcommand "bogus"' in m for m in refused), refused
    assert any("unknown option --nope" in m for m in refused), refused
    # cancel went through the sidecar; the statusline has nothing running to say
    assert show(repo, "nv-cli")["status"] == "cancelled"
    assert seen["statusline"] == ""
    health = seen["health"]
    assert "para" in health and "OK" in health and "ERROR" not in health, health
    assert f"sidecar 0.1.0 (pid {sidecar.pid})" in health and "protocol 1 matches" in health, health
    assert "executors: local only" in health, health
    assert seen["helptags_err"] == ""
    assert set(seen["help"].values()) == {"para.txt"}, seen["help"]


def test_an_agent_dispatched_in_editor_mode_runs_in_a_neovim_terminal(sidecar: Sidecar, repo: Path,
                                                                       tmp_path: Path) -> None:
    seen = run_script("agent", repo, tmp_path)
    term = seen["terminal"]
    assert term["buftype"] == "terminal" and term["session"] == "nv-agent"
    assert any("agent_runner" in a for a in term["argv"]), term["argv"]  # argv as the sidecar sent it
    assert term["tabs"] == 1 and term["focus_kept"] is True
    assert "[scripted agent]" in seen["output"]
    assert seen["agent_exited"]["data"] == {"exit_code": 0, "lost": False, "status": "review"}
    assert seen["log_buf_is_terminal"] is True
    detail = show(repo, "nv-agent")
    assert detail["status"] == "review" and detail["agent"]["mode"] == "editor", detail
    assert git("show", f"{detail['branch']}:hello.txt", cwd=repo) == "hello from a neovim terminal"


def test_a_conflict_reaches_the_quickfix_list_and_abort_restores_the_session(sidecar: Sidecar, repo: Path,
                                                                              tmp_path: Path) -> None:
    seen = run_script("conflict", repo, tmp_path)
    assert seen["integrate"] == {"ok": False, "code": "conflict"}
    assert seen["event"]["session"] == "cf" and seen["event"]["data"]["files"] == ["shared.txt"]
    worktree = seen["event"]["data"]["worktree"]
    assert seen["qf"]["items"] == [{"file": f"{worktree}/shared.txt", "lnum": 1, "text": "cf: conflict with main"}]
    assert seen["current"]["file"] == f"{worktree}/shared.txt" and seen["current"]["line"].startswith("<<<<<<<")
    assert seen["continue"] == {"ok": False, "code": "conflict", "markers": ["shared.txt:1", "shared.txt:3",
                                                                            "shared.txt:5"]}
    assert seen["markers_qf"] == [{"file": f"{worktree}/shared.txt", "lnum": n} for n in (1, 3, 5)]
    assert seen["aborted"]["name"] == "cf" and seen["aborted"]["status"] == "active"
    detail = show(repo, "cf")
    assert detail["status"] == "active" and detail["head"] == seen["aborted"]["restored"]
    assert (Path(worktree) / "shared.txt").read_text() == "session side\n"
    assert git("show", "main:shared.txt", cwd=repo) == "main side"


def test_the_plugin_reconnects_when_the_sidecar_goes_away(sidecar: Sidecar, repo: Path, runtime_dir: Path,
                                                          tmp_path: Path) -> None:
    """`para sidecar stop` under an open sessions buffer: `para lsp` exits, the plugin says so,
    starts it again (a new sidecar comes up), subscribes again, and live updates go on."""
    seen = run_script("reconnect", repo, tmp_path)
    assert seen["first_pid"] == sidecar.pid and seen["second_pid"] != sidecar.pid
    assert sidecar_pids(runtime_dir) == [seen["second_pid"]]
    assert any("reconnecting" in m["m"] for m in seen["notified"]), seen["notified"]
    assert any(line.split()[:2] == ["rc-two", "active"] for line in seen["buffer"]), seen["buffer"]
    assert [s["name"] for s in json.loads(run_para("list", "--json", cwd=repo).stdout)["sessions"]] == \
        ["rc-one", "rc-two"]


AGENT_TASK = """Write the greeting.
```agent
status writing hello
sleep 1
```
```file:hello.txt
hello from tmux
```
When done: para finish "add hello"
"""


def test_the_ui_in_a_real_terminal(sidecar: Sidecar, repo: Path, tmp_path: Path) -> None:
    """Neovim in tmux, as a user sees it: `:Para list` draws the sessions, a session started
    from a shell appears on screen, and an agent dispatched from the shell in editor mode
    opens its terminal tab in this Neovim and runs to review."""
    run_para("start", "tm-one", cwd=repo)
    env = nvim_env(tmp_path, {"PATH": f"{PARA_SCRIPT.parent}{os.pathsep}{os.environ['PATH']}"})
    ui = TmuxNvim(repo, env, [PLUGIN], ["lua require('para').setup({ terminal_focus = true })", "Para list"])
    try:
        wait_until(lambda: "tm-one" in ui.screen() and "SESSION" in ui.screen(), what="the sessions buffer")
        run_para("start", "tm-two", cwd=repo)
        wait_until(lambda: re.search(r"^tm-two +active", ui.screen(), re.M), what="tm-two on screen")
        run_para("dispatch", "tm-agent", "--agent", "scripted", "--mode", "editor", "-p", AGENT_TASK, cwd=repo)
        wait_until(lambda: "[scripted agent]" in ui.screen(), what="the agent's terminal on screen")
        # (check=False: a `para show` that races the agent's own finish can fail while the worktree goes)
        wait_until(lambda: '"status": "review"' in run_para("show", "tm-agent", "--json", cwd=repo, check=False).stdout,
                   what="the agent's session in review")
        detail = show(repo, "tm-agent")
        assert detail["agent"]["mode"] == "editor", detail
        ui.keys("gt")  # back to the first tab: the buffer followed the agent to review
        wait_until(lambda: re.search(r"^tm-agent +review", ui.screen(), re.M), what="tm-agent in review on screen")
    finally:
        ui.close()


def test_the_workflow_from_neovim(sidecar: Sidecar, repo: Path, tmp_path: Path) -> None:
    seen = run_script("workflow", repo, tmp_path)
    # dispatch without a prompt asks for it; the headless agent's log is followed in a terminal
    assert seen["asked"] == ["para task: "]
    assert seen["headless_exit"]["exit_code"] == 0
    assert seen["log"]["buftype"] == "terminal" and Path(seen["log"]["argv"][0]).name == "tail" and seen["log"]["argv"][1:4] == ["-n", "+1", "-F"]
    assert git("show", "main:wf.txt", cwd=repo) == "from the prompt"  # the footer: para integrate
    # the forecast names both worktrees' file
    assert seen["forecast"]["title"] == "para conflicts (forecast)"
    assert {(Path(i["file"]).name, i["text"]) for i in seen["forecast"]["items"]} == \
        {("same.txt", "wf-a collides with wf-b")}
    assert any(line.split()[:2] == ["wf-a", "dirty"] and "wf-b (1)" in line for line in seen["collides"])
    # keys on a line of the sessions buffer
    assert seen["key_x"] == {"ok": True, "name": "wf-b", "status": "cancelled"}
    assert seen["key_i"] == {"ok": True, "name": "wf-a", "status": "integrated"}
    assert show(repo, "wf-b")["status"] == "cancelled"
    assert git("show", "main:same.txt", cwd=repo) == "a side"
    # `i` names the session; it is not taken for the message (para's default message is used)
    assert git("log", "-1", "--format=%s", "main", cwd=repo) not in ("wf-a", "")
    # finish asks for its message; the session is found from the buffer's worktree
    assert seen["finish"] == {"name": "wf-fin", "status": "review"}
    assert seen["asked_all"] == ["para task: ", "para finish message: "]
    assert git("log", "-1", "--format=%s", "para/wf-fin", cwd=repo) == "fin: from the prompt"
    assert seen["refused_run"] == [{"ok": False}] * 3
    # the autocmd carried every change
    for change in ("started:wf-agent", "dispatched:wf-agent", "cancelled:wf-b", "integrated:wf-a",
                   "finished:wf-fin"):
        assert change in seen["changes"], seen["changes"]


def test_an_agent_on_another_host_in_the_sessions_buffer_show_and_health(sidecar: Sidecar, repo: Path,
                                                                        tmp_path: Path, ssh_host: SshHost) -> None:
    """A scripted agent on the real sshd (executor h1, its sweep an hour so only its own report
    harvests) next to a local one: the sessions buffer marks it `@h1 (never harvested)`, then
    `@h1 (harvest <age> ago)`; `:Para show` says `runs on h1 (127.0.0.1), ...` with the tip
    brought home; the local agent's line and detail say nothing of executors; `:checkhealth
    para` lists h1 and that its check passed."""
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps(
        {"executors": {"h1": ssh_host.entry(env_passthrough=list(IDENTITY), harvest_interval=3600)}}))
    gate = tmp_path / "remote-gate"
    far = step_profile(f"wait:{gate}", "write:far.txt=far\n", "commit:far", "status:far along",
                       f"wait:{tmp_path}/never")
    here = step_profile(f"wait:{tmp_path}/never")
    run_para("dispatch", "here", "-p", "stay", "--agent", "w", env=agents_env(w=here), cwd=repo)
    run_para("dispatch", "far", "-p", "work there", "--agent", "w", "--executor", "h1", env=agents_env(w=far), cwd=repo)
    try:
        seen = run_script("remote", repo, tmp_path, env={"REMOTE_GATE": str(gate)})
    finally:
        for name in ("here", "far"):
            run_para("cancel", name, "--json", cwd=repo, check=False)
    assert re.match(r"^far +active +running/headless @h1 \(never harvested\) ", seen["never"]["far"]), seen["never"]
    assert re.match(r"^here +active +running/headless +0", seen["never"]["here"]), seen["never"]
    assert "agent     runs on h1 (127.0.0.1), never harvested" in seen["show_never"]["far"], seen["show_never"]
    assert not [line for line in seen["show_never"]["here"] if re.search("@|runs on|harvest", line)], seen["show_never"]
    assert re.match(r"^far +active +running/headless @h1 \(harvest \d+s ago\) +1 ", seen["harvested"]["far"]), seen
    assert "@" not in seen["harvested"]["here"] and "harvest" not in seen["harvested"]["here"], seen["harvested"]
    shown = "\n".join(seen["show_harvested"])
    assert re.search(r"^agent     runs on h1 \(127\.0\.0\.1\), last harvest \d+s ago \([0-9a-f]{10}\)$", shown, re.M), shown
    sha = re.search(r"last harvest \d+s ago \(([0-9a-f]{10})\)", shown).group(1)
    assert re.search(rf"^  {sha} far$", shown, re.M), shown  # the harvested tip is the agent's commit
    health = seen["health"]
    assert re.search(r"executor h1 \(ssh \S*127\.0\.0\.1:\d+\): check passed \(para 0\.1\.0, protocol 1, python ",
                     health), health
    assert "ERROR" not in health, health
