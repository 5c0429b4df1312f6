"""The typer declarations of `para`: one short function per command.

A command builds its request's params and names its renderer (`render.py`); `_call` (in
`para_rpc/cli/__init__.py`) sends it and prints the result. Importing this module imports
typer: `main()` does so only after the fast path (`fast.py`) declined the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Annotated, Any

import typer

from para_rpc import client, runtime
from para_rpc.cli import _call, _cwd, _fail, render
from para_rpc.errors import Code, ParaError

# Completion is `para completion SHELL` (complete.py: session names, branches, profiles, task
# files, served without typer), not typer's own --install-completion.
app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Run many AI coding agents in parallel git worktrees, coordinated by one sidecar.")
sidecar_app = typer.Typer(no_args_is_help=True, help="Manage the sidecar process.")
config_app = typer.Typer(no_args_is_help=True, help="Show and change configuration.")
app.add_typer(sidecar_app, name="sidecar")
app.add_typer(config_app, name="config")
executor_app = typer.Typer(no_args_is_help=True, help="The machines agents can run on (config `executors`).")
app.add_typer(executor_app, name="executor")
mcp_app = typer.Typer(invoke_without_command=True, help="MCP for AI clients: `para mcp` serves it on stdin/stdout "
                      "(through the sidecar); `para mcp init` registers it in a client's project config.")
app.add_typer(mcp_app, name="mcp")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
KeepOpt = Annotated[bool, typer.Option("--keep-on-failure", help="A failing session.setup keeps the session (a warning) instead of rolling it back.")]
SessionOpt = Annotated[str | None, typer.Option("--session", "-s", help="Session name (default: the one the current directory is in).")]


# ---- session lifecycle -----------------------------------------------------

@app.command()
def start(name: Annotated[str | None, typer.Argument(help="Session name (default: a friendly adjective_noun).")] = None,
          base: Annotated[str | None, typer.Option("--base", "-b", help="Branch to fork from.")] = None,
          keep: KeepOpt = False,
          as_json: JsonOpt = False) -> None:
    """Create a session: a branch para/NAME and its worktree, forked from the base branch."""
    _call("para/start", {"name": name, "base": base, **({"keep_on_failure": True} if keep else {})},
          as_json, render.print_started, progress=True)


@app.command("list")
def list_(all_: Annotated[bool, typer.Option("--all", "-a", help="Include cancelled and integrated sessions.")] = False,
          archived: Annotated[bool, typer.Option("--archived", help="The same as --all: archived (cancelled) and integrated sessions too.")] = False,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Names only, one a line (with --json: an array of names).")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Each session with its worktree, base, agent, ports and last event.")] = False,
          as_json: JsonOpt = False) -> None:
    """List sessions with their state; * marks the one the current directory is in."""
    if quiet and verbose:
        _fail(ParaError(Code.invalid_input, "give --quiet or --verbose, not both"), as_json)
    _call("para/list", {"all": all_ or archived, "verbose": verbose}, as_json,
          render.print_names if quiet else render.print_list_verbose if verbose else render.print_list,
          render.list_names if quiet else None)


app.command("ls", hidden=True)(list_)


@app.command()
def show(name: Annotated[str | None, typer.Argument(help="Session name.")] = None, as_json: JsonOpt = False) -> None:
    """Show one session: state, branch, worktree, commits and changes."""
    _call("para/show", {"session": name}, as_json, render.print_shown)


@app.command()
def finish(message: Annotated[str, typer.Argument(help="Commit message.")],
           session: SessionOpt = None,
           branch: Annotated[str | None, typer.Option("--branch", help="Rename the branch for review.")] = None,
           squash: Annotated[bool | None, typer.Option("--squash/--no-squash", help="Squash into one commit (default: config finish.squash).")] = None,
           integrate_: Annotated[bool, typer.Option("--integrate", help="Land the work on the base branch now (same as `para integrate MESSAGE`).")] = False,
           as_json: JsonOpt = False) -> None:
    """Commit everything in the session, squash it onto its fork point, keep the branch for review."""
    _call("para/finish", {"session": session, "message": message, "branch": branch, "squash": squash,
                          "integrate": integrate_}, as_json,
          render.print_integration if integrate_ else render.print_finished)


StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="squash | merge | rebase | ff (default: config integrate.strategy).")]


@app.command()
def integrate(message: Annotated[str | None, typer.Argument(help="Commit message (squash and merge).")] = None,
              session: SessionOpt = None,
              strategy: StrategyOpt = None,
              target: Annotated[str | None, typer.Option("--target", help="Branch to land on (default: the session's base).")] = None,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="Predict the result; change nothing.")] = False,
              as_json: JsonOpt = False) -> None:
    """Land the session's work on its target branch; conflicts pause only this session."""
    _call("para/integrate", {"session": session, "message": message, "strategy": strategy, "target": target,
                             "dry_run": dry_run}, as_json, render.print_prediction if dry_run else render.print_integration)


@app.command("continue")
def continue_(name: Annotated[str | None, typer.Argument(help="Session name.")] = None,
              force: Annotated[bool, typer.Option("--force", help="Stage everything as it is, even conflicts nobody resolved (marker-like lines, unstaged binary/deleted/renamed paths).")] = False,
              as_json: JsonOpt = False) -> None:
    """Complete a paused integration once its conflicts are resolved in the worktree."""
    _call("para/continue", {"session": name, "force": force}, as_json, render.print_integration)


@app.command()
def abort(name: Annotated[str | None, typer.Argument(help="Session name.")] = None, as_json: JsonOpt = False) -> None:
    """Give up a paused integration: the session returns exactly to its pre-integration commit."""
    _call("para/abort", {"session": name}, as_json, render.print_aborted)


@app.command()
def conflicts(target: Annotated[str | None, typer.Option("--target", help="Forecast against this branch instead of each session's base.")] = None,
              as_json: JsonOpt = False) -> None:
    """Forecast collisions between active sessions (uncommitted work included) and with their targets."""
    _call("para/conflicts", {"target": target}, as_json, render.print_conflicts)


# ---- agents ------------------------------------------------------------------

@app.command()
def dispatch(name: Annotated[str | None, typer.Argument(help="Session name (default: from the task file, else friendly).")] = None,
             prompt: Annotated[list[str] | None, typer.Option("--prompt", "-p", help="The task, inline; several -p are several independent tasks, all started now.")] = None,
             file: Annotated[list[str] | None, typer.Option("--file", "-f", help="A task file (also looked up in tasks/), a directory of TASK_<n>_<slug>.md files, or several -f.")] = None,
             agent: Annotated[str | None, typer.Option("--agent", help="Launcher profile (claude, codex, gemini, aider, opencode, scripted, or a configured one).")] = None,
             mode: Annotated[str | None, typer.Option("--mode", help="editor | tmux | headless (default: config agent.mode).")] = None,
             skip: Annotated[bool, typer.Option("--dangerously-skip-permissions", "-d", help="Let the agent act without asking.")] = False,
             base: Annotated[str | None, typer.Option("--base", "-b", help="Branch to fork from.")] = None,
             sandbox: Annotated[bool | None, typer.Option("--sandbox/--no-sandbox", help="Confine the agent with bubblewrap: the filesystem read-only but its worktree, a socket of its session only (default: config agent.sandbox).")] = None,
             network: Annotated[bool | None, typer.Option("--network/--no-network", help="Whether a sandboxed agent keeps the network (default: config agent.network).")] = None,
             executor: Annotated[str | None, typer.Option("--executor", "-e", help="Where the agent runs: local or a configured executor (`para executor list`; default: config agent.executor).")] = None,
             keep: KeepOpt = False,
             as_json: JsonOpt = False) -> None:
    """Start a session and an agent in it, with a task (inline, from a file, or on stdin)."""
    source = _task_source(prompt or [], file or [], as_json)
    if "tasks" in source and name is not None:
        _fail(ParaError(Code.invalid_input, "several tasks get their names from para; drop NAME"), as_json)
    params: dict[str, Any] = {"name": name, "agent": agent, "mode": mode, "skip_permissions": skip, "base": base,
                              "in_tmux": bool(os.environ.get("TMUX")), "sandbox": sandbox, "network": network,
                              **source}
    if keep:
        params["keep_on_failure"] = True
    if executor is not None:
        params["executor"] = executor
    _call("para/dispatch", params, as_json, render.print_dispatched, progress=True)


def _task_source(prompts: list[str], files: list[str], as_json: bool) -> dict[str, Any]:
    """The task of `para dispatch`: -p, several -p (a batch), one -f, several -f (a plan), or stdin."""
    if prompts and files:
        _fail(ParaError(Code.invalid_input, "give either --prompt or --file, not both"), as_json)
    if len(prompts) == 1:
        return {"prompt": prompts[0]}
    if prompts:
        return {"tasks": [{"prompt": p} for p in prompts]}
    if len(files) == 1:
        return {"file": files[0]}
    if files:
        return {"files": files}
    if not sys.stdin.isatty():
        return {"prompt": sys.stdin.read()}
    _fail(ParaError(Code.invalid_input, "give the task with -p PROMPT, -f FILE, or on stdin"), as_json)


@app.command()
def wait(names: Annotated[list[str] | None, typer.Argument(help="Sessions to watch (default: every live session).")] = None,
         after: Annotated[int | None, typer.Option("--after", help="An event id (the `last event` a previous wait printed): what happened since then counts too.")] = None,
         timeout: Annotated[float, typer.Option("--timeout", "-t", help="Seconds to wait at most (0-3600).")] = 60.0,
         as_json: JsonOpt = False) -> None:
    """Wait until a session changes (its status, its agent ends, an event about it) or the timeout passes."""
    _call("para/wait", {"sessions": names or [], "timeout": timeout, "after_event": after}, as_json, render.print_wait)


@app.command()
def status(words: Annotated[list[str] | None, typer.Argument(help='"<what you are doing>", or `show [NAME]`.')] = None,
           tests: Annotated[str | None, typer.Option("--tests", help="passed | failed | unknown")] = None,
           todos: Annotated[str | None, typer.Option("--todos", help="DONE/TOTAL, e.g. 3/5")] = None,
           blocked: Annotated[str | None, typer.Option("--blocked", help="What blocks you.")] = None,
           session: SessionOpt = None,
           as_json: JsonOpt = False) -> None:
    """Agents: report progress (`para status "writing tests" --todos 2/5`). Anyone: `para status show [NAME]`."""
    words = words or []
    if not words or words[0] == "show":
        name = words[1] if len(words) > 1 else session
        _call("para/status", {"session": name}, as_json, render.print_status)
        return
    _call("para/report", {"session": session, "task": " ".join(words), "tests": tests, "todos": todos,
                          "blocked": blocked}, as_json, render.print_report)


def _agent_of(name: str | None, as_json: bool = False) -> tuple[str, dict[str, Any]]:
    """The session (named, else the one the current directory is in) and its agent run;
    `not_found` when the session never had an agent (`para start`, not `para dispatch`)."""
    r = _call("para/status", {"session": name}, False) if not as_json else _quiet_call("para/status", {"session": name})
    if name is None and len(r["sessions"]) != 1:
        _fail(ParaError(Code.invalid_input, f"{_cwd()} is not inside a session worktree; name the session"), as_json)
    s = r["sessions"][0]
    if not s.get("agent"):
        _fail(ParaError(Code.not_found, f"session {s['name']} has no agent: it was started with `para start`, "
                        "not `para dispatch`", session=s["name"]), as_json)
    return s["name"], s["agent"]


def _quiet_call(method: str, params: dict[str, Any]) -> Any:
    """A request whose result is not printed; its error is, as JSON."""
    try:
        return client.call(method, {"cwd": _cwd(), "env": client.forwarded_env(), **params})
    except ParaError as e:
        _fail(e, True)
    except OSError as e:
        _fail(ParaError(Code.sidecar_unavailable, f"cannot talk to the sidecar: {e}"), True)


@app.command()
def logs(name: Annotated[str | None, typer.Argument(help="Session name.")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing as the log grows.")] = False,
         as_json: Annotated[bool, typer.Option("--json", help="Print {session, log, text} once (not with --follow).")] = False) -> None:
    """Print a headless agent's output."""
    if follow and as_json:
        _fail(ParaError(Code.invalid_input, "--follow streams the log as it grows; --json prints it once: "
                        "give one of them"), True)
    s, agent = _agent_of(name, as_json)
    path = agent.get("log")
    if not path:
        where = f"tmux window {agent['window']} (`para attach {s}`)" if agent.get("window") \
            else "your editor's terminal, not a log file"
        _fail(ParaError(Code.not_found, f"the agent of session {s} writes to {where}", session=s), as_json)
    if as_json:
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            _fail(ParaError(Code.not_found, f"no log yet at {path}", session=s), True)
        print(json.dumps({"session": s, "log": path, "text": text}, indent=2))
        return
    _copy_log(path, follow)


def _copy_log(path: str, follow: bool) -> None:
    """Copy an agent's log to stdout; with `follow`, keep copying what is appended."""
    import time

    try:
        f = open(path, "rb")  # noqa: SIM115 (the `with f:` below; a missing log is its own error)
    except FileNotFoundError:
        _fail(ParaError(Code.not_found, f"no log yet at {path}"), False)
    with f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif not follow:
                return
            else:
                time.sleep(0.2)


@app.command()
def attach(name: Annotated[str | None, typer.Argument(help="Session name.")] = None) -> None:
    """Attach to the tmux window where the session's agent runs."""
    s, agent = _agent_of(name)
    window = agent.get("window")
    if not window:
        where = f"headless (`para logs {s}`)" if agent.get("log") else "your editor's terminal"
        _fail(ParaError(Code.not_found, f"the agent of session {s} does not run in tmux; it runs {where}",
                        session=s), False)
    if not sys.stdin.isatty():
        _fail(ParaError(Code.invalid_input, f"not a terminal; the agent is in tmux window {window}"), False)
    verb = "switch-client" if os.environ.get("TMUX") else "attach-session"
    os.execvp("tmux", ["tmux", verb, "-t", window])


@app.command()
def stop(name: Annotated[str | None, typer.Argument(help="Session name.")] = None, as_json: JsonOpt = False) -> None:
    """Stop the session's agent; the session and its work stay (`para restart` relaunches it)."""
    _call("para/stop", {"session": name}, as_json, render.print_stopped)


@app.command()
def restart(name: Annotated[str | None, typer.Argument(help="Session name.")] = None,
            prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="A follow-up, added to the original task.")] = None,
            stop_: Annotated[bool, typer.Option("--stop", help="Stop the agent first if it still runs (else refused).")] = False,
            as_json: JsonOpt = False) -> None:
    """Relaunch the session's agent: same profile and worktree, the original task plus unread messages and -p."""
    _call("para/restart", {"session": name, "prompt": prompt, "stop": stop_}, as_json, render.print_restarted)


@app.command()
def send(name: Annotated[str, typer.Argument(help="Session name.")],
         message: Annotated[str, typer.Argument(help="The follow-up for its agent.")],
         as_json: JsonOpt = False) -> None:
    """Queue a follow-up for the session's agent (it reads it with `para status`/`para messages`; restart gives it)."""
    _call("para/send", {"session": name, "message": message}, as_json, render.print_sent)


@app.command()
def messages(name: Annotated[str | None, typer.Argument(help="Session name (default: the one the current directory is in).")] = None,
             wait_: Annotated[float, typer.Option("--wait", help="Seconds to wait for a message (0-3600).")] = 0.0,
             all_: Annotated[bool, typer.Option("--all", help="Every message, read or not; marks nothing.")] = False,
             as_json: JsonOpt = False) -> None:
    """Agents: the follow-ups the user sent (`para send`) not read yet."""
    _call("para/messages", {"session": name, "wait": wait_, "all": all_}, as_json, render.print_messages)


EDITORS = ("code", "cursor", "nvim")


@app.command("open")
def open_(name: Annotated[str | None, typer.Argument(help="Session name.")] = None,
          editor: Annotated[str | None, typer.Option("--editor", help="code | cursor | nvim (default: ask a connected editor, else the first installed).")] = None,
          as_json: JsonOpt = False) -> None:
    """Open the session's worktree in an editor (a connected VS Code or Neovim is asked first)."""
    if editor is not None and editor not in EDITORS:
        _fail(ParaError(Code.invalid_input, f"--editor must be one of {', '.join(EDITORS)}, got {editor!r}"), as_json)
    # With --json the result is printed once the editor started: one document, the result or the error.
    r = _quiet_call("para/open", {"session": name, "editor": editor}) if as_json else \
        _call("para/open", {"session": name, "editor": editor}, False, None)
    if r["via"] == "editor":
        print(json.dumps(r, indent=2) if as_json else f"Asked {r['editors']} connected editor(s) to open {r['worktree']}")
        return
    argv = r.get("argv") or [next((e for e in EDITORS if shutil.which(e)), ""), r["worktree"]]
    binary = shutil.which(argv[0]) if argv[0] else None
    if binary is None:
        _fail(ParaError(Code.not_found, f"{argv[0]!r} is not installed (not on PATH)" if argv[0] else
                        "no editor is connected and none of code, cursor, nvim is on PATH; pass --editor",
                        session=r["session"]), as_json)
    if argv[0] == "nvim":  # a terminal editor takes over this terminal
        if as_json:
            print(json.dumps({**r, "argv": argv}, indent=2), flush=True)
        os.execv(binary, argv)
    subprocess.Popen([binary, *argv[1:]], stdin=subprocess.DEVNULL, start_new_session=True)
    print(json.dumps({**r, "argv": argv}, indent=2) if as_json else f"Opened {r['worktree']} with {argv[0]}")


@app.command()
def monitor(once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
            until_idle: Annotated[bool, typer.Option("--until-done", help="Exit when no agent runs and no plan is running.")] = False,
            as_json: Annotated[bool, typer.Option("--json", help="With --once or --until-done: print the last frame's "
                                                  "{repo, sessions, plans, conflicts} as JSON.")] = False) -> None:
    """A full-screen view of every session, pushed by the sidecar's events, with keys to act on
    them (needs para_rpc[tui]); --once, --until-done or a stdout that is not a terminal print a
    plain table instead."""
    from para_rpc import monitor as monitor_mod

    if as_json and not (once or until_idle):
        _fail(ParaError(Code.invalid_input, "--json needs --once or --until-done (the live view is for a terminal)"),
              True)
    raise SystemExit(monitor_mod.run(_cwd(), client.forwarded_env(), once=once, until_done=until_idle,
                                     as_json=as_json))


@app.command()
def demo() -> None:
    """Dispatch a three-step plan to scripted agents in a throwaway repository and watch it land."""
    from para_rpc import demo as demo_mod

    raise SystemExit(demo_mod.main())


@app.command()
def cancel(name: Annotated[str | None, typer.Argument(help="Session name.")] = None,
           discard: Annotated[bool, typer.Option("--discard", help="Do not commit uncommitted work (a backup ref still keeps it).")] = False,
           force: Annotated[bool, typer.Option("--force", help="Cancel even with HEAD off the session branch or an unfinished operation (saved under refs/para/backup/ first).")] = False,
           as_json: JsonOpt = False) -> None:
    """Save uncommitted work, archive the branch, remove the worktree."""
    _call("para/cancel", {"session": name, "discard": discard, "force": force}, as_json, render.print_cancelled)


@app.command()
def recover(name: Annotated[str | None, typer.Argument(help="Session name.")] = None, keep: KeepOpt = False,
            as_json: JsonOpt = False) -> None:
    """Bring a cancelled session back to para/NAME at its standard worktree path (prepared as at start)."""
    _call("para/recover", {"session": name, **({"keep_on_failure": True} if keep else {})}, as_json,
          render.print_recovered, progress=True)


@app.command()
def resume(name: Annotated[str | None, typer.Argument(help="Session name.")] = None, keep: KeepOpt = False,
           executor: Annotated[str | None, typer.Option("--executor", "-e", help="Relaunch the session's agent there (local or a configured executor), from its branch and last checkpoint: after its host was lost, or it exited or was stopped.")] = None,
           as_json: JsonOpt = False) -> None:
    """Make sure the session's worktree exists (recreating it from the branch, prepared as at start) and print
    its path; with --executor, relaunch its agent there."""
    _call("para/resume", {"session": name, **({"keep_on_failure": True} if keep else {}),
                          **({"executor": executor} if executor is not None else {})}, as_json,
          render.print_resumed, progress=True)


@app.command()
def clean(dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be done.")] = False,
          force: Annotated[bool, typer.Option("--force", help="Also delete branches holding unintegrated commits.")] = False,
          as_json: JsonOpt = False) -> None:
    """Prune missing worktrees, forget orphan sessions, delete old archives and backups."""
    _call("para/clean", {"dry_run": dry_run, "force": force}, as_json, render.print_clean)


@app.command()
def adopt(as_json: JsonOpt = False) -> None:
    """Take over the sessions Para left (.para/state/*.state): each becomes a para session with
    its worktree, branch or archive. Done by itself on first contact; this runs it again and
    says what was adopted and what was left, and why. Para's files are left as they are."""
    _call("para/adopt", {}, as_json, render.print_adopt)


# ---- config ------------------------------------------------------------------

ScopeOpt = Annotated[bool, typer.Option("--project", help="The project file (.para/config.json) instead of the user file.")]


@executor_app.command("list")
def executor_list(as_json: JsonOpt = False) -> None:
    """`local` and every configured executor."""
    _call("para/executors", {}, as_json, render.print_executors)


@executor_app.command("check")
def executor_check(name: Annotated[str, typer.Argument(help="Executor name.")], as_json: JsonOpt = False) -> None:
    """Connect to an executor's host and check git, python and para's version there."""
    _call("para/executors", {"check": name}, as_json, render.print_executors)


@config_app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """Every key, its value and where it came from."""
    _call("para/config", {"action": "show"}, as_json, render.print_config)


@config_app.command("get")
def config_get(key: str, as_json: JsonOpt = False) -> None:
    """Print one key's effective value."""
    _call("para/config", {"action": "get", "key": key}, as_json, render.print_config_value)


@config_app.command("set")
def config_set(key: str, value: str, project: ScopeOpt = False, as_json: JsonOpt = False) -> None:
    """Set a key in the user file (or the project file with --project)."""
    _call("para/config", {"action": "set", "key": key, "value": value, "scope": "project" if project else "user"},
          as_json, render.print_config_set)


@config_app.command("reset")
def config_reset(key: str, project: ScopeOpt = False, as_json: JsonOpt = False) -> None:
    """Remove a key from the user file (or the project file with --project): the next layer's value applies."""
    _call("para/config", {"action": "reset", "key": key, "scope": "project" if project else "user"},
          as_json, render.print_config_reset)


@config_app.command("path")
def config_path(as_json: JsonOpt = False) -> None:
    """Print the config file paths."""
    _call("para/config", {"action": "path"}, as_json, render.print_config_paths)


@config_app.command("edit")
def config_edit(project: ScopeOpt = False) -> None:
    """Open the config file in $EDITOR (terminals only)."""
    import shlex
    import subprocess

    r = _call("para/config", {"action": "path"}, False)
    path = r["paths"]["project" if project else "user"]
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        _fail(ParaError(Code.invalid_input, f"not a terminal; edit {path} directly"), False)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
    raise SystemExit(subprocess.call([*editor, path]))


# Agent CLIs `config init` looks for, in order of preference: built-in profiles, and the
# profile it proposes for those that have none.
AGENT_CLIS = ("claude", "codex", "gemini", "aider", "opencode", "cursor-agent")
EXTRA_PROFILES: dict[str, dict[str, list[str]]] = {
    "cursor-agent": {"command": ["cursor-agent", "{prompt}"], "headless": ["cursor-agent", "-p", "{prompt}"],
                     "skip_permissions": ["--force"]},
}


def init_proposal(agent: str | None = None) -> dict[str, Any]:
    """What `config init` found on PATH and the keys it would set (`agent` picks the default)."""
    agents = [a for a in AGENT_CLIS if shutil.which(a)]
    editors = [e for e in EDITORS if shutil.which(e)]
    chosen = agent if agent is not None else (agents[0] if agents else None)
    values: dict[str, Any] = {}
    if chosen is not None:
        values["agent.default"] = chosen
        if chosen in EXTRA_PROFILES:
            values["agents"] = {chosen: EXTRA_PROFILES[chosen]}
    return {"agents": agents, "editors": editors, "values": values}


def _ask(question: str) -> str:
    """A question on stderr (stdout keeps only the result, JSON with --json); the answer, stripped."""
    print(question, end="", file=sys.stderr, flush=True)
    try:
        return input().strip()
    except EOFError:
        return ""


@config_app.command("init")
def config_init(yes: Annotated[bool, typer.Option("--yes", help="Write without asking (the first agent found is the default).")] = False,
                print_only: Annotated[bool, typer.Option("--print", help="Only print what would be written.")] = False,
                as_json: JsonOpt = False) -> None:
    """Find the agent CLIs and editors on PATH, pick the default agent, show the keys and write
    them to the user file after you said yes. Never asks when stdin is not a terminal."""
    interactive = not (yes or print_only) and sys.stdin.isatty()
    if not (yes or print_only or interactive):
        _fail(ParaError(Code.invalid_input, "config init asks questions and stdin is not a terminal: nothing was "
                        "written; `para config init --print` shows what it would write, `para config init --yes` "
                        "writes it"), as_json)
    user = (_quiet_call if as_json else lambda m, p: _call(m, p, False))("para/config", {"action": "path"})["paths"]["user"]
    proposal = init_proposal()
    if interactive:
        print("Agent CLIs on PATH: " + (", ".join(proposal["agents"]) or "none")
              + "\nEditors on PATH:    " + (", ".join(proposal["editors"]) or "none")
              + " (`para open` uses the first; a connected VS Code or Neovim is asked first)", file=sys.stderr)
        if proposal["agents"]:
            first = proposal["agents"][0]
            answer = _ask(f"Default agent for `para dispatch` [{first}] ({', '.join(proposal['agents'])}): ")
            while answer and answer not in proposal["agents"]:
                answer = _ask(f"one of {', '.join(proposal['agents'])} (Enter: {first}): ")
            proposal = init_proposal(answer or first)
    written = False
    if proposal["values"] and not print_only:
        if interactive:
            print(f"\nThese keys go into {user} (the rest of the file is kept):\n"
                  + json.dumps(render.config_tree(proposal["values"]), indent=2), file=sys.stderr)
            written = _ask("Write them? [y/N] ").lower() in ("y", "yes")
        else:
            written = True
        for key, value in proposal["values"].items() if written else ():
            params = {"action": "set", "key": key, "value": json.dumps(value), "scope": "user"}
            if as_json:
                _quiet_call("para/config", params)
            else:
                _call("para/config", params, False)
    if as_json:
        print(json.dumps({"path": user, "detected": {"agents": proposal["agents"], "editors": proposal["editors"]},
                          "values": proposal["values"], "written": written}, indent=2))
    else:
        render.print_config_init(user, proposal, written, print_only, interactive)


# ---- trust ---------------------------------------------------------------------

@app.command("trust")
def trust_(approve: Annotated[str | None, typer.Option("--approve", metavar="SHA256", help="Approve the content `para trust` showed, named by its sha256; refused if the file changed since.")] = None,
           show: Annotated[bool, typer.Option("--show", help="Only show the commands (the default; kept for scripts).")] = False,
           revoke: Annotated[bool, typer.Option("--revoke", help="Withdraw the approval.")] = False,
           as_json: JsonOpt = False) -> None:
    """Show the commands and settings this repository's .para/config.json would make para run
    (integrate.check, agent profiles, ...) with the sha256 of that content; `--approve SHA256`
    approves exactly that content. Until then operations that need them fail (exit 13); a
    changed file needs approval again."""
    if sum((approve is not None, show, revoke)) > 1:
        _fail(ParaError(Code.invalid_input, "give one of --approve, --show, --revoke"), as_json)
    action = "approve" if approve is not None else "revoke" if revoke else "show"
    if action == "approve" and os.environ.get("PARA_SESSION"):
        _fail(ParaError(Code.forbidden,
                        "approving commands that run as you is a human's decision, and this is the environment of "
                        f"the agent of session {os.environ['PARA_SESSION']!r} (PARA_SESSION is set); the user "
                        "reviews them with `para trust` and approves with `para trust --approve <sha256>` in the "
                        "repository", session=os.environ["PARA_SESSION"]), as_json)
    _call("para/trust", {"action": action, **({"sha256": approve} if approve is not None else {})}, as_json,
          render.print_trust)


# ---- sidecar -------------------------------------------------------------------

def _running() -> dict[str, Any] | None:
    try:
        with client.Connection.open() as conn:
            return client.hello(conn)
    except (FileNotFoundError, ConnectionRefusedError):
        return None


@sidecar_app.command("start")
def sidecar_start(as_json: JsonOpt = False) -> None:
    """Start the sidecar in the background (no-op when one is running)."""
    info = _running()
    if info is None:
        try:
            if os.environ.get("PARA_TOKEN"):
                raise ParaError(Code.forbidden, "this is a session-bound socket (PARA_TOKEN is set): an agent "
                                "does not start sidecars; the user's sidecar listens here again when it runs")
            with client.wait_for_sidecar(client.spawn_sidecar()) as conn:
                info = client.hello(conn)
        except ParaError as e:
            _fail(e, as_json)
    print(json.dumps(info, indent=2) if as_json else f"sidecar running, pid {info['pid']}")


@sidecar_app.command("stop")
def sidecar_stop(as_json: JsonOpt = False) -> None:
    """Ask the sidecar to finish its work and exit."""
    info = _running()
    setups: list[dict[str, Any]] = []
    if info is not None:
        try:
            setups = client.call("para/shutdown", {}, autostart=False).get("setups_stopped") or []
        except ParaError as e:  # (a session-bound socket refuses it: forbidden)
            _fail(e, as_json)
        client.wait_for_exit(pid=info.get("pid"))
    if as_json:
        print(json.dumps({"stopped": info is not None, "setups_stopped": setups}))
        return
    for x in setups:
        print(f"stopped session.setup of {x['session']} (pid {x['pid']}) in {x['repo']}: its start was rolled back")
    print("sidecar stopped" if info else "no sidecar was running")


@sidecar_app.command("restart")
def sidecar_restart(as_json: JsonOpt = False) -> None:
    """Stop the sidecar (after its work) and start a new one."""
    info = _running()
    if info is not None:
        try:
            setups = client.call("para/shutdown", {}, autostart=False).get("setups_stopped") or []
        except ParaError as e:
            _fail(e, as_json)
        client.wait_for_exit(pid=info.get("pid"))
        for x in [] if as_json else setups:
            print(f"stopped session.setup of {x['session']} (pid {x['pid']}) in {x['repo']}: its start was rolled back")
    sidecar_start(as_json)


@sidecar_app.command("status")
def sidecar_status(as_json: JsonOpt = False) -> None:
    """Report whether a sidecar runs, its version, pid and repositories (exit 9 if none)."""
    info = _running()
    if as_json:
        print(json.dumps({"running": info is not None, "socket": str(runtime.socket_path()), **(info or {})}, indent=2))
    else:
        render.print_sidecar_status(info, str(runtime.socket_path()))
    if info is None:
        raise SystemExit(Code.sidecar_unavailable.exit)


@sidecar_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sidecar_run(ctx: typer.Context) -> None:
    """Run the sidecar in the foreground (options: --idle-timeout S, --stderr, --log-level L)."""
    # exec, not import: the server (pygls, lsprotocol, the service) never loads into the CLI.
    sys.stdout.flush()
    os.execv(sys.executable, runtime.python("-m", "para_rpc.server.sidecar", *ctx.args))


# ---- MCP and editors ---------------------------------------------------------------

@mcp_app.callback()
def mcp_serve(ctx: typer.Context) -> None:
    """Serve MCP on stdin/stdout for an AI client (a byte pump to the sidecar, started if needed)."""
    if ctx.invoked_subcommand is None:
        from para_rpc import bridge

        raise SystemExit(bridge.main())


@mcp_app.command("init")
def mcp_init(claude_code: Annotated[bool, typer.Option("--claude-code", help="Write .mcp.json (the default).")] = False,
             cursor: Annotated[bool, typer.Option("--cursor", help="Write .cursor/mcp.json.")] = False,
             vscode: Annotated[bool, typer.Option("--vscode", help="Write .vscode/mcp.json (VS Code's `servers`).")] = False,
             print_only: Annotated[bool, typer.Option("--print", help="Only print the config snippet; write nothing.")] = False,
             as_json: JsonOpt = False) -> None:
    """Register `para mcp` in an AI client's project config, merging with what is there."""
    from para_rpc import mcp_init as mi

    clients = [c for c, on in (("claude-code", claude_code), ("cursor", cursor), ("vscode", vscode)) if on] \
        or ["claude-code"]
    if print_only:
        snippets = {c: mi.snippet(c) for c in clients}
        print(json.dumps(snippets if as_json or len(clients) > 1 else snippets[clients[0]], indent=2))
        return
    try:
        results = mi.init(_cwd(), clients)
    except ParaError as e:
        _fail(e, as_json)
    if as_json:
        print(json.dumps({"results": results}, indent=2))
    else:
        render.print_mcp_init(results)


@app.command()
def lsp() -> None:
    """Serve the sidecar's JSON-RPC on stdin/stdout for an editor (started by the editor; the
    sidecar is started if needed and checked for our version). Exits when the editor closes stdin."""
    from para_rpc import bridge

    raise SystemExit(bridge.lsp_main())


@app.command()
def tour() -> None:
    """A short scripted tour in a throwaway repository: start, list, finish, cancel, recover."""
    from para_rpc import tour as tour_mod

    raise SystemExit(tour_mod.main())


@app.command()
def completion(shell: Annotated[str, typer.Argument(help="bash | zsh | fish")]) -> None:
    """Print the shell completion script (session names, branches, agent profiles, task files):
    eval "$(para completion bash)" in ~/.bashrc, likewise zsh; fish: save it under completions/."""
    from para_rpc.cli import complete

    print(complete.script(shell), end="")


@app.command("__complete", hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def complete_(ctx: typer.Context) -> None:
    """What the completion scripts call (served by the fast path; here only with PARA_NO_FAST)."""
    from para_rpc.cli import complete

    raise SystemExit(complete.main(ctx.args))


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print the version (with --json also the protocol version)."""
    from para_rpc import PROTOCOL_VERSION, __version__

    print(json.dumps({"version": __version__, "protocol": PROTOCOL_VERSION}, indent=2) if as_json else __version__)
