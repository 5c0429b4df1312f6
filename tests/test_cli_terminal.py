"""The operator's terminal (issue 14), through the real `para` CLI and the real sidecar:
`para list --quiet/--archived/--verbose`, `--json` on every command (or the README says why
not), shell completion, `para config reset` and `para config init`.

What each test guards:
- list's new flags print what they say in the empty and the populated state, both output modes
  (the fast path prints the same bytes as typer: tests/test_cli_fast.py);
- every registered command takes --json and prints one JSON document, except exactly the ones
  the README lists under "JSON output" (and complete.NO_JSON);
- completion offers sessions, branches, profiles and task files the way bash/zsh/fish ask,
  never starts a sidecar and loads no heavy library; its tables match the typer declarations;
- config reset removes only that key (user or project file), says when there was nothing;
- config init never asks without a terminal (prints, or refuses with a hint), asks in one (pty).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import typer.main

from para_rpc import agents
from para_rpc.cli import complete
from para_rpc.cli.app import app

from agents_util import Api
from conftest import PARA_ARGV, cli_env, commit_file, in_terminal, run_para, sidecar_pids
from test_layers import HEAVY, loaded_packages

README = Path(__file__).resolve().parents[1] / "README.md"


def commands() -> dict[str, click.Command]:
    """Every registered command by its full name (`config reset`), groups included."""
    out: dict[str, click.Command] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, cmd in group.commands.items():
            full = f"{prefix} {name}".strip()
            out[full] = cmd
            if hasattr(cmd, "commands"):
                walk(cmd, full)
    walk(typer.main.get_command(app), "")
    return out


def options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


# ---- para list ----------------------------------------------------------------------------------

def test_list_quiet_archived_verbose_empty_and_populated(sidecar: Any, repo: Path) -> None:
    assert run_para("list", "--quiet", cwd=repo).stdout == ""
    assert json.loads(run_para("list", "-q", "--json", cwd=repo).stdout) == []
    assert run_para("list", "--verbose", cwd=repo).stdout == "No sessions. Start one with `para start`.\n"
    assert run_para("list", "--archived", cwd=repo).stdout == "No sessions. Start one with `para start`.\n"

    run_para("start", "alpha", cwd=repo)
    run_para("start", "beta", cwd=repo)
    run_para("cancel", "beta", cwd=repo)
    assert run_para("list", "-q", cwd=repo).stdout == "alpha\n"
    assert run_para("list", "--quiet", "--archived", cwd=repo).stdout == "alpha\nbeta\n"
    assert json.loads(run_para("list", "--archived", "-q", "--json", cwd=repo).stdout) == ["alpha", "beta"]
    assert "beta" not in run_para("list", cwd=repo).stdout
    assert "beta" in run_para("list", "--archived", cwd=repo).stdout

    wt = repo / ".para" / "worktrees" / "alpha"
    verbose = run_para("list", "--verbose", "--archived", cwd=wt).stdout
    blocks = verbose.split("\n\n")
    assert blocks[0].startswith("* alpha  active  para/alpha  (")
    assert f"    worktree    {wt}\n" in blocks[0]
    assert "    base        main @ " in blocks[0] and "    agent       -\n" in blocks[0]
    assert "    ports       -\n" in blocks[0]
    assert re.search(r"    last event  started \d+s ago \(#\d+\)", blocks[0]), blocks[0]
    assert blocks[1].startswith("  beta  cancelled  para/beta  (")
    assert "    archived as para/archived/" in blocks[1] and "(absent)" in blocks[1]
    assert re.search(r"    last event  cancelled \d+s ago", blocks[1]), blocks[1]

    data = json.loads(run_para("list", "-v", "--json", cwd=repo).stdout)
    assert data["sessions"][0]["last_event"]["kind"] == "started"
    assert "last_event" not in json.loads(run_para("list", "--json", cwd=repo).stdout)["sessions"][0]

    refused = run_para("list", "-q", "-v", cwd=repo, check=False)
    assert refused.returncode == 2 and "not both" in refused.stderr


def test_list_verbose_shows_ports_and_the_agent(sidecar: Any, repo: Path, tmp_path: Path) -> None:
    cfg = Path(os.environ["PARA_CONFIG"])
    cfg.write_text(json.dumps({"session": {"ports": 2}}))
    task = "```file:hello.txt\nhello\n```\n```agent\nstatus wrote hello\n```\n"
    run_para("dispatch", "worker", "-p", task, "--agent", "scripted", "--mode", "headless", cwd=repo,
             env={"PARA_AGENT_WORKFLOW": "none"})
    Api(sidecar.socket, repo).wait_agent("worker")
    out = run_para("list", "--verbose", cwd=repo).stdout
    ports = json.loads(run_para("list", "--json", cwd=repo).stdout)["sessions"][0]["ports"]
    assert len(ports) == 2 and f"    ports       {ports[0]} {ports[1]}\n" in out
    assert re.search(r"    agent       scripted \(headless\), (exited 0|pid \d+), log /\S+", out), out


# ---- --json on every command --------------------------------------------------------------------

def readme_no_json() -> set[str]:
    text = README.read_text()
    section = text.split("### JSON output", 1)[1].split("\n#", 1)[0]
    return {m for m in re.findall(r"^- `para ([a-z_ ]+?)`", section, re.MULTILINE)}


def test_the_no_json_list_is_exactly_the_commands_without_json() -> None:
    cmds = {name: cmd for name, cmd in commands().items() if not cmd.hidden}
    without = {name for name, cmd in cmds.items() if "--json" not in options(cmd) and not hasattr(cmd, "commands")}
    without |= {"mcp"}  # the group itself serves MCP on stdio (its callback)
    assert without == complete.NO_JSON
    assert readme_no_json() == complete.NO_JSON


# command -> the arguments a run with --json gets; None: may fail, but still prints JSON.
JSON_RUNS: list[tuple[str, list[str], bool]] = [
    ("version", [], True),
    ("start", ["one"], True),
    ("start", ["two"], True),
    ("list", [], True),
    ("show", ["one"], True),
    ("status", ["show", "one"], True),
    ("conflicts", [], True),
    ("dispatch", ["worker", "-p", "```file:w.txt\nw\n```\n", "--agent", "scripted", "--mode", "headless"], True),
    ("wait", ["worker", "--timeout", "5"], True),
    ("logs", ["worker"], True),
    ("stop", ["worker"], True),
    ("send", ["worker", "a follow-up"], True),
    ("messages", ["worker", "--all"], True),
    ("restart", ["worker", "--stop"], True),
    ("integrate", ["--dry-run", "-s", "one"], True),
    ("finish", ["done", "-s", "one"], True),
    ("integrate", ["land two", "-s", "two"], True),
    ("continue", ["two"], False),
    ("abort", ["two"], False),
    ("cancel", ["worker", "--force"], True),
    ("recover", ["worker"], True),
    ("resume", ["worker"], True),
    ("open", ["worker", "--editor", "nvim"], False),
    ("adopt", [], True),
    ("clean", ["--dry-run"], True),
    ("trust", [], True),
    ("monitor", ["--once"], True),
    ("config show", [], True),
    ("config get", ["agent.mode"], True),
    ("config set", ["agent.stale_after", "700"], True),
    ("config reset", ["agent.stale_after"], True),
    ("config path", [], True),
    ("config init", ["--print"], True),
    ("mcp init", ["--print"], True),
    ("executor list", [], True),
    ("executor check", ["local"], True),
    ("sidecar status", [], True),
    ("sidecar restart", [], True),
    ("sidecar stop", [], True),
    ("sidecar start", [], True),
]


def test_every_command_with_json_prints_one_json_document(sidecar: Any, repo: Path) -> None:
    cmds = {name for name, cmd in commands().items()
            if not cmd.hidden and not hasattr(cmd, "commands") and name not in complete.NO_JSON}
    assert {name for name, _, _ in JSON_RUNS} == cmds
    for name, args, must_succeed in JSON_RUNS:
        if name == "logs":
            Api(sidecar.socket, repo).wait_agent("worker")
        if name == "finish":
            commit_file(repo / ".para" / "worktrees" / "one", "one.txt", "one\n", "one's work")
        if name == "integrate" and args[0] == "land two":
            commit_file(repo / ".para" / "worktrees" / "two", "two.txt", "two\n", "two's work")
        proc = run_para(*name.split(), *args, "--json", cwd=repo, check=False,
                        env={"PARA_AGENT_WORKFLOW": "none", "PATH": os.path.dirname(shutil.which("git") or "/usr/bin")
                             + os.pathsep + str(Path(PARA_ARGV[0]).parent)})
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"para {name} {args} --json printed no JSON document:\n{proc.stdout}\n{proc.stderr}")
        if must_succeed:
            assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
        else:
            assert proc.returncode == 0 or set(doc) == {"error"}, (name, doc)
    assert json.loads(run_para("version", "--json", cwd=repo).stdout)["version"]


def test_json_errors_of_the_new_json_commands(repo: Path, runtime_dir: Path) -> None:
    logs = run_para("logs", "nope", "--json", cwd=repo, check=False)
    assert logs.returncode == 3 and json.loads(logs.stdout)["error"]["code"] == "not_found"
    both = run_para("logs", "nope", "-f", "--json", cwd=repo, check=False)
    assert both.returncode == 2 and json.loads(both.stdout)["error"]["code"] == "invalid_input"


# ---- completion ---------------------------------------------------------------------------------

def complete_words(*words: str, cwd: Path, env: dict[str, str | None] | None = None) -> list[str]:
    proc = subprocess.run([*PARA_ARGV, "__complete", *words], cwd=cwd, env=cli_env(env), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


def bash_complete(line: str, cwd: Path) -> list[str]:
    """What bash offers for `line` (the cursor at its end), through the script `para completion bash`
    prints, called the way bash calls a -F function."""
    words = line.split(" ")
    script = run_para("completion", "bash", cwd=cwd).stdout
    quoted = " ".join(shlex.quote(w) for w in words)
    driver = (f"{script}\nCOMP_WORDS=({quoted}); "
              f"COMP_CWORD={len(words) - 1}; COMP_LINE={line!r}; COMP_POINT={len(line)}; _para_complete; "
              'printf "%s\\n" "${COMPREPLY[@]}"')
    env = cli_env({"PATH": f"{Path(PARA_ARGV[0]).parent}{os.pathsep}{os.environ['PATH']}"})
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.splitlines() if w]


def test_bash_completes_commands_sessions_branches_profiles_and_task_files(sidecar: Any, repo: Path) -> None:
    run_para("start", "alpha", cwd=repo)
    run_para("start", "beta", cwd=repo)
    run_para("start", "gone", cwd=repo)
    run_para("cancel", "gone", cwd=repo)
    (repo / "tasks").mkdir()
    (repo / "tasks" / "TASK_1_api.md").write_text("x\n")
    (repo / "tasks" / "TASK_2_ui.md").write_text("x\n")

    assert bash_complete("para con", repo) == ["config", "conflicts", "continue"]
    assert bash_complete("para show ", repo) == ["alpha", "beta"]
    assert bash_complete("para cancel b", repo) == ["beta"]
    assert bash_complete("para recover ", repo) == ["gone"]
    assert bash_complete("para integrate -s a", repo) == ["alpha"]
    assert bash_complete("para start x --base ", repo) == ["main", "para/alpha", "para/beta"]
    assert "scripted" in bash_complete("para dispatch --agent ", repo)
    assert bash_complete("para dispatch -f TASK_", repo) == ["TASK_1_api.md", "TASK_2_ui.md"]
    assert bash_complete("para dispatch -f tasks/TASK_2", repo) == ["tasks/TASK_2_ui.md"]
    assert bash_complete("para dispatch -f tas", repo) == ["tasks/"]
    assert bash_complete("para integrate --strategy s", repo) == ["squash"]
    assert bash_complete("para config reset agent.de", repo) == ["agent.default"]
    assert bash_complete("para list --q", repo) == ["--quiet"]
    assert bash_complete("para completion ", repo) == ["bash", "fish", "zsh"]
    assert bash_complete("para wait alpha ", repo) == ["alpha", "beta"]
    assert bash_complete("para send alpha ", repo) == []  # the message is not a session


def test_zsh_and_fish_ask_with_their_words(sidecar: Any, repo: Path) -> None:
    """zsh passes words[1,CURRENT], fish `commandline -opc` then `commandline -ct`: both are
    the words up to the cursor, the last one being completed (an empty one after a space)."""
    run_para("start", "alpha", cwd=repo)
    zsh = run_para("completion", "zsh", cwd=repo).stdout
    fish = run_para("completion", "fish", cwd=repo).stdout
    assert 'para __complete "${(@)words[1,CURRENT]}"' in zsh and "compdef _para para" in zsh
    assert "para __complete (commandline -opc) (commandline -ct)" in fish
    assert complete_words("para", "show", "", cwd=repo) == ["alpha"]
    assert complete_words("para", "attach", "al", cwd=repo) == ["alpha"]
    bad = run_para("completion", "tcsh", cwd=repo, check=False)
    assert bad.returncode == 2 and "bash, zsh or fish" in bad.stderr


def test_completion_never_starts_a_sidecar_and_loads_nothing_heavy(repo: Path, runtime_dir: Path) -> None:
    assert complete_words("para", "show", "", cwd=repo) == []       # no sidecar: no names, no error
    assert complete_words("para", "start", "-b", "", cwd=repo) == ["main"]   # git needs none
    assert sidecar_pids(runtime_dir) == []
    proc = subprocess.run([*PARA_ARGV, "__complete", "para", "show", ""], cwd=repo, capture_output=True, text=True,
                          env=cli_env({"PYTHONPROFILEIMPORTTIME": "1"}), stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 0
    assert sorted(loaded_packages(proc.stderr) & {*HEAVY, "textual", "rich"}) == []


def test_completion_tables_match_the_typer_declarations() -> None:
    cmds = commands()
    for name, cmd in cmds.items():
        if cmd.hidden or name == "ls":
            continue
        declared = options(cmd) - {"--json", "--help"}
        if name == "sidecar run":  # its options pass through to the server
            declared = {"--idle-timeout", "--stderr", "--log-level"}
        assert set(complete.OPTIONS.get(name, ["missing"])) == declared, name
    assert set(complete.OPTIONS) == {n for n, c in cmds.items() if not c.hidden}
    assert set(complete.BUILTIN_PROFILES) == set(agents.BUILTIN)
    for group, subs in complete.GROUPS.items():
        assert set(subs) == set(cmds[group].commands), group  # type: ignore[attr-defined]


# ---- config reset and init ------------------------------------------------------------------------

def test_config_reset_user_and_project(sidecar: Any, repo: Path) -> None:
    user = Path(os.environ["PARA_CONFIG"])
    run_para("config", "set", "agent.stale_after", "700", cwd=repo)
    run_para("config", "set", "finish.squash", "false", cwd=repo)
    out = run_para("config", "reset", "agent.stale_after", cwd=repo).stdout
    assert out == f"Removed agent.stale_after from {user}; now 600 (default)\n"
    assert json.loads(user.read_text()) == {"finish": {"squash": False}}
    again = run_para("config", "reset", "agent.stale_after", cwd=repo).stdout
    assert again == f"agent.stale_after was not set in {user}; nothing changed (it is 600, default)\n"

    run_para("config", "set", "--project", "finish.squash", "true", cwd=repo)
    project = repo / ".para" / "config.json"
    r = json.loads(run_para("config", "reset", "--project", "finish.squash", "--json", cwd=repo).stdout)
    assert r == {"key": "finish.squash", "removed": True, "scope": "project", "path": str(project),
                 "value": False, "source": f"user:{user}"}
    assert json.loads(project.read_text()) == {}
    assert json.loads(user.read_text()) == {"finish": {"squash": False}}

    before = user.read_text()
    bad = run_para("config", "reset", "no.such", cwd=repo, check=False)
    assert bad.returncode != 0 and "unknown config key" in bad.stderr and user.read_text() == before
    fresh = Path(str(user) + ".absent")
    none = run_para("config", "reset", "agent.mode", "--json", cwd=repo, env={"PARA_CONFIG": str(fresh)})
    assert json.loads(none.stdout)["removed"] is False and not fresh.exists()


def fake_path(tmp_path: Path, *names: str) -> str:
    """A PATH with stand-ins for `names` (and git and para, nothing else)."""
    bin_dir = tmp_path / ("bin-" + "-".join(names))
    bin_dir.mkdir()
    for n in names:
        (bin_dir / n).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / n).chmod(0o755)
    git_dir = os.path.dirname(shutil.which("git") or "/usr/bin/git")
    return os.pathsep.join([str(bin_dir), str(Path(PARA_ARGV[0]).parent), git_dir])


def test_config_init_without_a_terminal_prints_or_refuses(sidecar: Any, repo: Path, tmp_path: Path) -> None:
    user = Path(os.environ["PARA_CONFIG"])
    env = {"PATH": fake_path(tmp_path, "codex", "cursor-agent", "nvim")}
    refused = run_para("config", "init", cwd=repo, env=env, check=False)
    assert refused.returncode == 2 and "stdin is not a terminal" in refused.stderr
    assert "--print" in refused.stderr and "--yes" in refused.stderr and not user.exists()

    shown = run_para("config", "init", "--print", cwd=repo, env=env).stdout
    assert shown == ("Agent CLIs on PATH: codex, cursor-agent\nEditors on PATH:    nvim\n"
                     f"Would write to {user} (the rest of the file is kept):\n"
                     + json.dumps({"agent": {"default": "codex"}}, indent=2) + "\n")
    assert not user.exists()
    r = json.loads(run_para("config", "init", "--print", "--json", cwd=repo, env=env).stdout)
    assert r == {"path": str(user), "detected": {"agents": ["codex", "cursor-agent"], "editors": ["nvim"]},
                 "values": {"agent.default": "codex"}, "written": False}

    run_para("config", "set", "finish.squash", "false", cwd=repo)
    wrote = run_para("config", "init", "--yes", cwd=repo, env=env).stdout
    assert wrote.endswith(f"Wrote agent.default to {user}\n")
    assert json.loads(user.read_text()) == {"finish": {"squash": False}, "agent": {"default": "codex"}}

    nothing = run_para("config", "init", "--print", cwd=repo, env={"PATH": fake_path(tmp_path)}).stdout
    assert "Agent CLIs on PATH: none" in nothing and "nothing to write" in nothing


def test_config_init_in_a_terminal_asks_then_writes(sidecar: Any, repo: Path, tmp_path: Path) -> None:
    user = Path(os.environ["PARA_CONFIG"])
    env = cli_env({"PATH": fake_path(tmp_path, "claude", "cursor-agent", "code")})
    code, out = in_terminal([*PARA_ARGV, "config", "init"], repo, env,
                            [("Default agent", "cursor-agent\n"), ("Write them? [y/N]", "n\n")])
    assert code == 0, out
    assert "Agent CLIs on PATH: claude, cursor-agent" in out and "Editors on PATH:    code" in out
    assert '"cursor-agent"' in out and f"Nothing written to {user}" in out and not user.exists()

    code, out = in_terminal([*PARA_ARGV, "config", "init"], repo, env,
                            [("Default agent", "\n"), ("Write them? [y/N]", "y\n")])
    assert code == 0, out
    assert f"Wrote agent.default to {user}" in out
    assert json.loads(user.read_text()) == {"agent": {"default": "claude"}}

    code, out = in_terminal([*PARA_ARGV, "config", "init"], repo, env,
                            [("Default agent", "cursor-agent\n"), ("Write them? [y/N]", "yes\n")])
    assert code == 0, out
    saved = json.loads(user.read_text())
    assert saved["agent"]["default"] == "cursor-agent"
    assert saved["agents"]["cursor-agent"]["command"][0] == "cursor-agent"
    # The profile is valid config and is the default now: para picks it (the sidecar, whose PATH
    # has no cursor-agent, then says exactly that).
    dispatch = run_para("dispatch", "x", "-p", "hi", "--mode", "headless", "--json", cwd=repo, check=False)
    assert json.loads(dispatch.stdout)["error"]["data"] == {"profile": "cursor-agent", "binary": "cursor-agent"}


@pytest.mark.parametrize("argv", [["list", "--quiet"], ["list", "--verbose", "--json"]], ids=" ".join)
def test_new_list_flags_stay_on_the_fast_path(sidecar: Any, repo: Path, argv: list[str]) -> None:
    proc = subprocess.run([*PARA_ARGV, *argv], cwd=repo, capture_output=True, text=True, timeout=60,
                          env=cli_env({"PYTHONPROFILEIMPORTTIME": "1"}), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(loaded_packages(proc.stderr) & {*HEAVY, "textual", "rich"}) == []
