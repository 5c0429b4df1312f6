"""Shell completion: `para completion bash|zsh|fish` prints a script that calls
`para __complete WORD...` (the words of the command line up to the cursor, the last one the
word being completed), which prints one candidate a line.

Served by the fast path (stdlib only, typer never loads): a shell runs it on every Tab.
Session names come from a running sidecar (a socket with a short timeout); when none runs,
none are offered and none is started: starting a process that outlives the shell's Tab
press is not completion's business. Branches come from git, task files from the file system,
everything else from the tables below (tests/test_cli_complete.py checks them against the
typer declarations, so they cannot drift).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from para_rpc import PROTOCOL_VERSION, __version__, client

# command -> its options (every spelling); `--json`/`--help` are added to all.
OPTIONS: dict[str, list[str]] = {
    "start": ["--base", "-b", "--keep-on-failure"],
    "list": ["--all", "-a", "--archived", "--quiet", "-q", "--verbose", "-v"],
    "show": [],
    "finish": ["--session", "-s", "--branch", "--squash", "--no-squash", "--integrate"],
    "integrate": ["--session", "-s", "--strategy", "--target", "--dry-run"],
    "continue": ["--force"],
    "abort": [],
    "conflicts": ["--target"],
    "dispatch": ["--prompt", "-p", "--file", "-f", "--agent", "--mode", "--dangerously-skip-permissions", "-d",
                 "--base", "-b", "--sandbox", "--no-sandbox", "--network", "--no-network", "--keep-on-failure",
                 "--executor", "-e"],
    "wait": ["--after", "--timeout", "-t"],
    "status": ["--tests", "--todos", "--blocked", "--session", "-s"],
    "logs": ["--follow", "-f"],
    "attach": [],
    "stop": [],
    "restart": ["--prompt", "-p", "--stop"],
    "send": [],
    "messages": ["--wait", "--all"],
    "open": ["--editor"],
    "monitor": ["--once", "--until-done"],
    "demo": [],
    "cancel": ["--discard", "--force"],
    "recover": ["--keep-on-failure"],
    "resume": ["--keep-on-failure", "--executor", "-e"],
    "clean": ["--dry-run", "--force"],
    "adopt": [],
    "trust": ["--approve", "--show", "--revoke"],
    "lsp": [],
    "tour": [],
    "version": [],
    "completion": [],
    "config": [], "sidecar": [], "mcp": [], "executor": [],
    "executor list": [], "executor check": [],
    "config show": [], "config get": [], "config set": ["--project"], "config reset": ["--project"],
    "config path": [], "config edit": ["--project"], "config init": ["--yes", "--print"],
    "sidecar start": [], "sidecar stop": [], "sidecar restart": [], "sidecar status": [],
    "sidecar run": ["--idle-timeout", "--stderr", "--log-level"],
    "mcp init": ["--claude-code", "--cursor", "--vscode", "--print"],
}
# Commands without --json (README, JSON output, says why; the test checks both lists).
NO_JSON = {"attach", "demo", "tour", "lsp", "completion", "config edit", "sidecar run", "mcp"}
GROUPS = {"config": ["show", "get", "set", "reset", "path", "edit", "init"],
          "sidecar": ["start", "stop", "status", "restart", "run"],
          "mcp": ["init"],
          "executor": ["list", "check"]}
COMMANDS = sorted(c for c in OPTIONS if " " not in c) + ["ls"]
# Commands whose positionals are session names (wait: several; send: the first only).
SESSION_ARGS = {"show", "continue", "abort", "logs", "attach", "stop", "restart", "send", "messages", "open",
                "cancel", "recover", "resume", "wait"}
CHOICES: dict[str, list[str]] = {
    "--strategy": ["squash", "merge", "rebase", "ff"], "--mode": ["editor", "tmux", "headless"],
    "--editor": ["code", "cursor", "nvim"], "--tests": ["passed", "failed", "unknown"],
    "--log-level": ["DEBUG", "INFO", "WARNING", "ERROR"],
}
TAKES_VALUE = {"--base", "-b", "--target", "--session", "-s", "--branch", "--strategy", "--prompt", "-p",
               "--file", "--agent", "--mode", "--after", "--timeout", "-t", "--tests", "--todos", "--blocked",
               "--wait", "--editor", "--approve", "--idle-timeout", "--log-level", "--executor", "-e"}
# agents.BUILTIN's names (the CLI does not import the engines; a test keeps the two equal)
BUILTIN_PROFILES = ("claude", "codex", "gemini", "aider", "opencode", "scripted")
SOCKET_TIMEOUT = 2.0   # a sidecar that does not answer within this gets no more of the shell's time

SCRIPTS = {
    "bash": """# para completion for bash: eval "$(para completion bash)" (e.g. in ~/.bashrc)
_para_complete() {
    local IFS=$'\\n'
    COMPREPLY=($(para __complete "${COMP_WORDS[@]:0:COMP_CWORD+1}" 2>/dev/null))
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == */ ]]; then compopt -o nospace 2>/dev/null; fi
}
complete -F _para_complete para
""",
    "zsh": """#compdef para
# para completion for zsh: eval "$(para completion zsh)" (e.g. in ~/.zshrc, after compinit)
_para() {
    local -a candidates
    candidates=("${(@f)$(para __complete "${(@)words[1,CURRENT]}" 2>/dev/null)}")
    candidates=(${candidates:#})
    compadd -Q -S '' -- ${(M)candidates:#*/}
    compadd -Q -- ${candidates:#*/}
}
compdef _para para
""",
    "fish": """# para completion for fish: para completion fish > ~/.config/fish/completions/para.fish
complete -c para -f -a '(para __complete (commandline -opc) (commandline -ct) 2>/dev/null)'
""",
}


def candidates(words: list[str], cwd: str) -> list[str]:
    """What may replace the last of `words` (`words[0]` is the program)."""
    args, current = words[1:-1], words[-1] if len(words) > 1 else ""
    command, positional, prev = _parse(args)
    if prev is not None:
        found = _value(command, prev, current, cwd)
    elif command is None:
        found = COMMANDS if not current.startswith("-") else ["--help"]
    elif command in GROUPS:
        found = GROUPS[command] if not current.startswith("-") else ["--help"]
    elif current.startswith("-"):
        found = [*OPTIONS.get(command, []), *([] if command in NO_JSON else ["--json"]), "--help"]
    else:
        found = _positional(command, positional, current, cwd)
    return sorted({c for c in found if c.startswith(current)})


def _parse(args: list[str]) -> tuple[str | None, list[str], str | None]:
    """The command (`config reset` for a group's), its positionals so far, and the word
    before the cursor when it is an option."""
    command: str | None = None
    positional: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a.startswith("-"):
            skip = _takes_value(command, a)
            continue
        if command is None:
            command = "list" if a == "ls" else a
        elif command in GROUPS and not positional and f"{command} {a}" in OPTIONS:
            command = f"{command} {a}"
        else:
            positional.append(a)
    prev = args[-1] if skip else None  # the last word is an option waiting for its value
    return command, positional, prev


def _takes_value(command: str | None, option: str) -> bool:
    # -f is dispatch's --file but logs' --follow
    return option in TAKES_VALUE or (option == "-f" and command == "dispatch")


def _value(command: str | None, option: str, current: str, cwd: str) -> list[str]:
    if option in CHOICES:
        return CHOICES[option]
    if option in ("--session", "-s"):
        return sessions(cwd)
    if option in ("--base", "-b", "--target"):
        return branches(cwd)
    if option == "--agent":
        return profiles(cwd)
    if option == "--file" or (option == "-f" and command == "dispatch"):
        return task_files(current, cwd)
    return []


def _positional(command: str, positional: list[str], current: str, cwd: str) -> list[str]:
    if command == "completion":
        return list(SCRIPTS) if not positional else []
    if command in ("config get", "config set", "config reset") and not positional:
        from para_rpc.config import KEYS

        return list(KEYS)
    if command in SESSION_ARGS and (command == "wait" or not positional):
        return sessions(cwd, history=command == "recover")
    return []


# ---- the sources -----------------------------------------------------------------------------

def sessions(cwd: str, history: bool = False) -> list[str]:
    """Session names, from a running sidecar of our version; [] when none runs (none is started)."""
    if os.environ.get("PARA_TOKEN"):
        return []  # a session-bound socket: an agent completing on the user's sessions is no use
    try:
        with client.Connection.open(timeout=SOCKET_TIMEOUT) as conn:
            info = client.hello(conn)
            if info.get("protocol") != PROTOCOL_VERSION or info.get("version") != __version__:
                return []
            r = conn.request("para/list", {"cwd": cwd, "env": client.forwarded_env(), "all": history})
    except Exception:  # noqa: BLE001 completion offers what it can; it never prints a traceback into a prompt
        return []
    return [s["name"] for s in r["sessions"] if not history or s["status"] == "cancelled"]


def branches(cwd: str) -> list[str]:
    try:
        out = subprocess.run(["git", "for-each-ref", "--format=%(refname:short)", "refs/heads/"], cwd=cwd,
                             capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    # (archives, <prefix>/archived/..., are history: no base to fork from)
    return [b for b in out.stdout.split() if "/archived/" not in b] if out.returncode == 0 else []


def profiles(cwd: str) -> list[str]:
    """Built-in launcher profiles, and those of the config files (read from a running sidecar,
    which knows the project file; the user file alone otherwise)."""
    from para_rpc import config

    names = set(BUILTIN_PROFILES)
    try:
        with client.Connection.open(timeout=SOCKET_TIMEOUT) as conn:
            client.hello(conn)
            r = conn.request("para/config", {"cwd": cwd, "env": client.forwarded_env(), "action": "get",
                                             "key": "agents"})
        names |= set(r.get("value") or {})
    except Exception:  # noqa: BLE001 (as in sessions)
        with contextlib.suppress(Exception):  # a broken user file: para itself says so, completion does not
            names |= set(config.read_file(config.user_config_path()).get("agents") or {})
    return sorted(names)


def task_files(current: str, cwd: str) -> list[str]:
    """Paths under the cursor's directory (directories end with /), and the files of the
    repository's tasks/ directory, which `para dispatch -f NAME` looks in too."""
    found: list[str] = []
    head, _, _ = current.rpartition("/")
    base = Path(cwd, head) if head else Path(cwd)
    try:
        for entry in base.iterdir():
            if entry.name.startswith(".") and not current.rpartition("/")[2].startswith("."):
                continue
            name = f"{head}/{entry.name}" if head else entry.name
            found.append(name + "/" if entry.is_dir() else name)
    except OSError:
        pass
    if not head:
        try:
            top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                                 timeout=5, stdin=subprocess.DEVNULL).stdout.strip()
            if top and Path(top, "tasks").is_dir():
                found += [p.name for p in Path(top, "tasks").iterdir() if p.is_file()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return found


def main(words: list[str]) -> int:
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        return 0
    for c in candidates(words, cwd):
        print(c)
    return 0


def script(shell: str) -> str:
    if shell not in SCRIPTS:
        print(f"para: completion is for bash, zsh or fish, not {shell!r}", file=sys.stderr)
        raise SystemExit(2)
    return SCRIPTS[shell]
