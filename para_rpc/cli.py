"""`para`: the command line, a thin client of the sidecar.

Every command sends one request (params built here, `cwd` = the current
directory) and renders the result: a readable summary by default, the
result object with `--json`. Errors print `para: <message>` (or a JSON
`{"error": ...}` with `--json`) and exit with the code's stable status (see
errors.py). Nothing here prompts; heavy libraries (pygls, mcp) are never
imported, and the commands agents and scripts run in loops (`para integrate`, `para status`,
`para list --json`, ...) and `para mcp` are served before typer is even imported (see `_FAST`,
`_fast_mcp`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

from para_rpc import client
from para_rpc.errors import Code, ParaError


def _cwd() -> str:
    try:
        return os.getcwd()
    except FileNotFoundError:
        _fail(ParaError(Code.invalid_input, "the current directory no longer exists"), False)


def _fail(e: ParaError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": {"code": e.code.name, "message": e.message, "data": e.data}}, indent=2))
    else:
        session = e.data.get("session")
        named = isinstance(session, str) and (f"'{session}'" in e.message or f"session {session}" in e.message)
        about = f" (session {session})" if isinstance(session, str) and not named else ""
        print(f"para: {e.message}{about}", file=sys.stderr)
    raise SystemExit(e.code.exit)


def _call(method: str, params: dict[str, Any], as_json: bool, render=None) -> Any:
    params = {"cwd": _cwd(), "env": client.forwarded_env(), **params}
    try:
        result = client.call(method, params)
    except ParaError as e:
        _fail(e, as_json)
    except OSError as e:
        _fail(ParaError(Code.sidecar_unavailable, f"cannot talk to the sidecar: {e}"), as_json)
    try:
        if as_json:
            print(json.dumps(result, indent=2))
        elif render is not None:
            render(result)
        sys.stdout.flush()
    except BrokenPipeError:  # `para list --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return result


def _age(ts: float) -> str:
    import time

    d = max(0, int(time.time() - ts))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if d >= n:
            return f"{d // n}{unit}"
    return f"{d}s"


def _print_session(r: dict[str, Any], headline: str | None = None) -> None:
    if headline:
        print(headline)
    # A cancelled session's branch is its archive (its old name no longer exists).
    archived = r.get("status") == "cancelled" and r.get("archived_branch")
    rows = [("state", r["state"]), ("branch", r["archived_branch"] if archived else r["branch"]), ("worktree", r["worktree"] if r.get("worktree_exists") else f"{r['worktree']} (absent)"),
            ("base", f"{r['base_branch']} @ {r['base_commit'][:10]}")]
    if r.get("worktree_exists") and r.get("status") == "active" and r.get("head_branch") != r["branch"]:
        rows.append(("HEAD", f"{r.get('head_branch') or 'detached'} in the worktree, not {r['branch']}"))
    if r.get("archived_branch") and not archived:
        rows.append(("archived as", r["archived_branch"]))
    if r.get("ahead") is not None:
        rows.append(("commits", str(r["ahead"])))
    if r.get("diffstat"):
        rows.append(("changes", r["diffstat"]))
    if r.get("saved"):
        s = r["saved"]
        if isinstance(s, dict):
            rows.append(("saved work", f"{str(s.get('commit'))[:10]} on {s.get('branch') or s.get('ref')}"))
        else:  # a ref (an older sidecar's abort)
            rows.append(("saved work", str(s)))
    for b in r.get("backups") or []:
        rows.append(_backup_row(b))
    for note in r.get("notes", []):
        rows.append(("note", note))
    for k, v in rows:
        print(f"  {k:<12} {v}")
    for c in r.get("commits", [])[:10]:
        print(f"    {c['sha'][:10]} {c['subject']}")


def _backup_row(b: dict[str, Any]) -> tuple[str, str]:
    """One thing the worktree held that was saved before it went, or that had nothing to save."""
    if b["what"] == "head":
        return ("saved HEAD", f"{b['commit'][:10]} ({b.get('head_branch') or 'detached'}) as {b['ref']}")
    if b.get("refs"):
        prefix = os.path.commonpath(list(b["refs"])) if len(b["refs"]) > 1 else next(iter(b["refs"]))
        return (f"saved {b['what']}", f"{b['path']} under {prefix}")
    return ("not saved", f"{b['what']} repository {b['path']}: "
            + (f"nothing its remote {b['remote']} lacks" if b.get("remote") else "it had no commits and no files"))


def _print_report(r: dict[str, Any]) -> None:
    rep = r.get("report") or {}
    todos = f", todos {rep['todos_done']}/{rep['todos_total']}" if rep.get("todos_total") else ""
    tests = f", tests {rep['tests']}" if rep.get("tests") else ""
    blocked = f", BLOCKED: {rep['blocked']}" if rep.get("blocked") else ""
    print(f"Reported for session {r['session']}: {rep.get('task', '')}{tests}{todos}{blocked}")


def _print_integration(r: dict[str, Any]) -> None:
    rec = r.get("integration") or {}
    if r.get("status") == "integrated":
        what = "already contained in" if rec.get("noop") else "landed on"
        print(f"Integrated session {r['name']}: {what} {rec.get('target')} at {str(rec.get('commit'))[:10]} "
              f"({rec.get('strategy')})")
        if rec.get("leftover"):
            print(f"  changes made after integration started were saved to {rec['leftover']}")
        if rec.get("config_changed"):
            print(f"  this changed .para/config.json on {rec.get('target')}: commands in it run only once you "
                  "approve them (`para trust --show`, then `para trust`)")
        for b in rec.get("backups") or []:
            print("  {:<12} {}".format(*_backup_row(b)))
    else:
        _print_session(r, f"Session {r['name']}")


# Commands that agents and scripts run in loops, served without typer when called
# with nothing but the arguments listed here: importing typer costs ~30-50 ms, its
# first dispatch (pydantic, every command built) ~0.15-0.3 s more, which twenty
# agents integrating at once feel. Each entry builds exactly the request its typer
# command builds and renders like it (a command without a renderer only with
# `--json`). Anything else (--help, `--opt=value`, an unknown or repeated argument,
# a value that looks like an option, a second positional) goes to typer.
# command -> (method, param of the one positional argument or None,
#             {flag: (param, takes a value)}, renderer of the human output or None)
_SESSION_FLAG = {"--session": ("session", True), "-s": ("session", True)}
_FAST: dict[str, tuple[str, str | None, dict[str, tuple[str, bool]], Any]] = {
    "list": ("para/list", None, {"--all": ("all", False), "-a": ("all", False)}, None),
    "ls": ("para/list", None, {"--all": ("all", False), "-a": ("all", False)}, None),
    "start": ("para/start", "name", {"--base": ("base", True), "-b": ("base", True)}, None),
    "show": ("para/show", "session", {}, None),
    "cancel": ("para/cancel", "session", {"--discard": ("discard", False), "--force": ("force", False)}, None),
    "integrate": ("para/integrate", "message", {**_SESSION_FLAG, "--strategy": ("strategy", True),
                                                "--target": ("target", True)}, _print_integration),
    "continue": ("para/continue", "session", {"--force": ("force", False)}, _print_integration),
    "status": ("para/report", "task", {**_SESSION_FLAG, "--tests": ("tests", True), "--todos": ("todos", True),
                                       "--blocked": ("blocked", True)}, _print_report),
}


def _fast_path(args: list[str]) -> bool:
    """Serve the commands in _FAST without typer."""
    if not args or args[0] not in _FAST:
        return False
    method, positional, flags, render = _FAST[args[0]]
    as_json = "--json" in args[1:]
    if render is None and not as_json:
        return False
    params: dict[str, Any] = {positional: None} if positional else {}
    params.update({param: None if takes_value else False for param, takes_value in flags.values()})
    seen: set[str] = set()
    rest = iter(args[1:])
    for a in rest:
        if a == "--json":
            continue
        if a in flags:
            param, takes_value = flags[a]
            if param in seen:
                return False
            seen.add(param)
            if takes_value:
                value = next(rest, None)
                if value is None or value.startswith("-"):
                    return False
                params[param] = value
            else:
                params[param] = True
        elif a.startswith("-") or positional is None or params[positional] is not None:
            return False
        else:
            params[positional] = a
    if args[0] == "status" and params["task"] in (None, "show"):
        return False  # `para status show ...` reads; typer serves it
    _call(method, params, as_json, render)
    return True


def _fast_json() -> None:
    """The `_FAST` commands, answered before typer is imported (only when run as the
    `para` program; `main` tries the same after typer for `python -m para_rpc`)."""
    if os.path.basename(sys.argv[0]) == "para" and _fast_path(sys.argv[1:]):
        raise SystemExit(0)


def _fast_mcp() -> None:
    """`para mcp` (what AI clients launch) runs the stdlib bridge before typer is even
    imported (typer alone costs ~30 ms, its first dispatch ~150 ms more). Only when run
    as the `para` program with exactly that argument; `para mcp init` goes to typer."""
    if sys.argv[1:] == ["mcp"] and os.path.basename(sys.argv[0]) == "para":
        from para_rpc import bridge

        raise SystemExit(bridge.main())


_fast_mcp()
_fast_json()

import typer  # noqa: E402

app = typer.Typer(no_args_is_help=True, add_completion=True, rich_markup_mode=None,
                  help="Run many AI coding agents in parallel git worktrees, coordinated by one sidecar.")
sidecar_app = typer.Typer(no_args_is_help=True, help="Manage the sidecar process.")
config_app = typer.Typer(no_args_is_help=True, help="Show and change configuration.")
app.add_typer(sidecar_app, name="sidecar")
app.add_typer(config_app, name="config")
mcp_app = typer.Typer(invoke_without_command=True, help="MCP for AI clients: `para mcp` serves it on stdin/stdout "
                      "(through the sidecar); `para mcp init` registers it in a client's project config.")
app.add_typer(mcp_app, name="mcp")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
SessionOpt = Annotated[Optional[str], typer.Option("--session", "-s", help="Session name (default: the one the current directory is in).")]


def _render_list(r: dict[str, Any]) -> None:
    sessions = r["sessions"]
    if not sessions:
        print("No sessions. Start one with `para start`.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("", "session", "state", "branch", "age"):
        table.add_column(col)
    for s in sessions:
        branch = s["branch"] + (f" (HEAD: {s.get('head_branch') or 'detached'})" if s["state"] == "off-branch" else "")
        table.add_row("*" if s["current"] else "", s["name"], s["state"], branch, _age(s["created_at"]))
    Console().print(table)
    for s in sessions:
        for line in _agent_warnings(s):
            print(f"! {s['name']}: {line}")


def _agent_warnings(s: dict[str, Any]) -> list[str]:
    """What `list` flags under its table: files changed outside an agent's worktree, agent
    processes that could not be stopped."""
    out = []
    changes = s.get("outside_changes") or []
    mine = [c for c in changes if c["agent"] == s["name"]]
    if mine:
        out.append(f"while its agent ran, {len(mine)} file(s) changed outside its worktree: "
                   + ", ".join(f"{c['path']} ({c['location'] if not c['session'] else 'session ' + c['session']})"
                               for c in mine[:5]) + (", ..." if len(mine) > 5 else "") + f" (`para show {s['name']}`)")
    for agent in sorted({c["agent"] for c in changes} - {s["name"]}):
        theirs = [c["path"] for c in changes if c["agent"] == agent]
        out.append(f"changed here while the agent of {agent} ran: {', '.join(theirs[:5])}"
                   + (", ..." if len(theirs) > 5 else ""))
    left = [p for stop in ((s.get("agent") or {}).get("stops") or []) for p in stop.get("left_running", [])]
    if left:
        out.append(f"agent processes still running, could not be stopped: {', '.join(map(str, left))}")
    return out


# ---- session lifecycle -----------------------------------------------------

@app.command()
def start(name: Annotated[Optional[str], typer.Argument(help="Session name (default: a friendly adjective_noun).")] = None,
          base: Annotated[Optional[str], typer.Option("--base", "-b", help="Branch to fork from.")] = None,
          as_json: JsonOpt = False) -> None:
    """Create a session: a branch para/NAME and its worktree, forked from the base branch."""
    _call("para/start", {"name": name, "base": base}, as_json,
          lambda r: _print_session(r, f"Started session {r['name']}"))


@app.command("list")
def list_(all_: Annotated[bool, typer.Option("--all", "-a", help="Include cancelled and integrated sessions.")] = False,
          as_json: JsonOpt = False) -> None:
    """List sessions with their state; * marks the one the current directory is in."""
    _call("para/list", {"all": all_}, as_json, _render_list)


app.command("ls", hidden=True)(list_)


@app.command()
def show(name: Annotated[Optional[str], typer.Argument(help="Session name.")] = None, as_json: JsonOpt = False) -> None:
    """Show one session: state, branch, worktree, commits and changes."""
    _call("para/show", {"session": name}, as_json, lambda r: _print_session(r, f"Session {r['name']}"))


@app.command()
def finish(message: Annotated[str, typer.Argument(help="Commit message.")],
           session: SessionOpt = None,
           branch: Annotated[Optional[str], typer.Option("--branch", help="Rename the branch for review.")] = None,
           squash: Annotated[Optional[bool], typer.Option("--squash/--no-squash", help="Squash into one commit (default: config finish.squash).")] = None,
           integrate_: Annotated[bool, typer.Option("--integrate", help="Land the work on the base branch now (same as `para integrate MESSAGE`).")] = False,
           as_json: JsonOpt = False) -> None:
    """Commit everything in the session, squash it onto its fork point, keep the branch for review."""
    _call("para/finish", {"session": session, "message": message, "branch": branch, "squash": squash,
                          "integrate": integrate_}, as_json,
          _print_integration if integrate_ else
          lambda r: _print_session(r, f"Finished session {r['name']}: branch {r['branch']} is ready for review"))


def _print_prediction(r: dict[str, Any]) -> None:
    if r.get("error"):
        print(f"would fail: {r['error']}")
    elif r["clean"]:
        print(f"{r['session']} would integrate cleanly into {r['target']} ({r['strategy']}, "
              f"{len(r['commits'])} commit(s){', uncommitted work included' if r['includes_uncommitted'] else ''})")
        if r.get("diffstat"):
            print(r["diffstat"])
    else:
        print(f"{r['session']} would conflict with {r['target']} in:")
        for f in r["conflicts"]:
            print(f"  {f} lines {', '.join(f'{a}-{b}' for a, b in r['hunks'].get(f, []))}")


StrategyOpt = Annotated[Optional[str], typer.Option("--strategy", help="squash | merge | rebase | ff (default: config integrate.strategy).")]


@app.command()
def integrate(message: Annotated[Optional[str], typer.Argument(help="Commit message (squash and merge).")] = None,
              session: SessionOpt = None,
              strategy: StrategyOpt = None,
              target: Annotated[Optional[str], typer.Option("--target", help="Branch to land on (default: the session's base).")] = None,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="Predict the result; change nothing.")] = False,
              as_json: JsonOpt = False) -> None:
    """Land the session's work on its target branch; conflicts pause only this session."""
    _call("para/integrate", {"session": session, "message": message, "strategy": strategy, "target": target,
                             "dry_run": dry_run}, as_json, _print_prediction if dry_run else _print_integration)


@app.command("continue")
def continue_(name: Annotated[Optional[str], typer.Argument(help="Session name.")] = None,
              force: Annotated[bool, typer.Option("--force", help="Stage everything as it is, even conflicts nobody resolved (marker-like lines, unstaged binary/deleted/renamed paths).")] = False,
              as_json: JsonOpt = False) -> None:
    """Complete a paused integration once its conflicts are resolved in the worktree."""
    _call("para/continue", {"session": name, "force": force}, as_json, _print_integration)


@app.command()
def abort(name: Annotated[Optional[str], typer.Argument(help="Session name.")] = None, as_json: JsonOpt = False) -> None:
    """Give up a paused integration: the session returns exactly to its pre-integration commit."""
    _call("para/abort", {"session": name}, as_json,
          lambda r: _print_session(r, f"Aborted the integration of {r['name']}; restored {str(r['restored'])[:10]}"))


@app.command()
def conflicts(target: Annotated[Optional[str], typer.Option("--target", help="Forecast against this branch instead of each session's base.")] = None,
              as_json: JsonOpt = False) -> None:
    """Forecast collisions between active sessions (uncommitted work included) and with their targets."""
    def render(r: dict[str, Any]) -> None:
        if r["clean"]:
            names = ", ".join(s["session"] for s in r["sessions"])
            print(f"No conflicts among {len(r['sessions'])} session(s)" + (f": {names}." if names else "."))
        for s in r["sessions"]:
            if not s["clean"]:
                print(f"{s['session']} x {s['target']}: "
                      + ("unrelated histories: it cannot land there" if s.get("unrelated") else ", ".join(s["files"])))
        for pair in r["pairs"]:
            print(f"{pair['a']} x {pair['b']}: {', '.join(pair['files'])}")
        for pair in r.get("unrelated", []):
            print(f"{pair['a']} x {pair['b']}: unrelated histories (not compared)")
    _call("para/conflicts", {"target": target}, as_json, render)


# ---- agents ------------------------------------------------------------------

@app.command()
def dispatch(name: Annotated[Optional[str], typer.Argument(help="Session name (default: from the task file, else friendly).")] = None,
             prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="The task, inline.")] = None,
             file: Annotated[Optional[list[str]], typer.Option("--file", "-f", help="A task file (also looked up in tasks/), a directory of TASK_<n>_<slug>.md files, or several -f.")] = None,
             agent: Annotated[Optional[str], typer.Option("--agent", help="Launcher profile (claude, codex, gemini, aider, opencode, scripted, or a configured one).")] = None,
             mode: Annotated[Optional[str], typer.Option("--mode", help="editor | tmux | headless (default: config agent.mode).")] = None,
             skip: Annotated[bool, typer.Option("--dangerously-skip-permissions", "-d", help="Let the agent act without asking.")] = False,
             base: Annotated[Optional[str], typer.Option("--base", "-b", help="Branch to fork from.")] = None,
             as_json: JsonOpt = False) -> None:
    """Start a session and an agent in it, with a task (inline, from a file, or on stdin)."""
    params: dict[str, Any] = {"name": name, "agent": agent, "mode": mode, "skip_permissions": skip, "base": base,
                              "in_tmux": bool(os.environ.get("TMUX"))}
    files = file or []
    if prompt is not None and files:
        _fail(ParaError(Code.invalid_input, "give either --prompt or --file, not both"), as_json)
    if prompt is not None:
        params["prompt"] = prompt
    elif len(files) == 1:
        params["file"] = files[0]
    elif files:
        params["files"] = files
    elif not sys.stdin.isatty():
        params["prompt"] = sys.stdin.read()
    else:
        _fail(ParaError(Code.invalid_input, "give the task with -p PROMPT, -f FILE, or on stdin"), as_json)

    def render(r: dict[str, Any]) -> None:
        if "name" not in r:
            plan = r["plan"]
            print(f"Plan {plan['id']}: {len(plan['steps'])} step(s)")
            for st in plan["steps"]:
                print(f"  step {st['number']}: " + ", ".join(t["name"] for t in st["tasks"]))
            print("Later steps start when every earlier task is integrated; watch with `para monitor`.")
        else:
            _print_session(r, f"Dispatched session {r['name']}")
    _call("para/dispatch", params, as_json, render)


def _status_line(s: dict[str, Any]) -> str:
    rep = s.get("report") or {}
    agent = s.get("agent") or {}
    todos = f"{rep['todos_done']}/{rep['todos_total']}" if rep.get("todos_total") else "-"
    parts = [f"{s['name']:<18}", f"{s['status']:<11}", f"agent {agent.get('state', '-'):<8}",
             f"tests {rep.get('tests', '-'):<8}", f"todos {todos:<6}"]
    if rep.get("blocked"):
        parts.append(f"BLOCKED: {rep['blocked']}")
    parts.append(rep.get("task") or s.get("task") or "")
    return " ".join(parts)


@app.command()
def status(words: Annotated[Optional[list[str]], typer.Argument(help='"<what you are doing>", or `show [NAME]`.')] = None,
           tests: Annotated[Optional[str], typer.Option("--tests", help="passed | failed | unknown")] = None,
           todos: Annotated[Optional[str], typer.Option("--todos", help="DONE/TOTAL, e.g. 3/5")] = None,
           blocked: Annotated[Optional[str], typer.Option("--blocked", help="What blocks you.")] = None,
           session: SessionOpt = None,
           as_json: JsonOpt = False) -> None:
    """Agents: report progress (`para status "writing tests" --todos 2/5`). Anyone: `para status show [NAME]`."""
    words = words or []
    if not words or words[0] == "show":
        name = words[1] if len(words) > 1 else session
        _call("para/status", {"session": name}, as_json,
              lambda r: [print(_status_line(s)) for s in r["sessions"]] or (not r["sessions"] and print("No sessions.")))
        return
    _call("para/report", {"session": session, "task": " ".join(words), "tests": tests, "todos": todos,
                          "blocked": blocked}, as_json, _print_report)


def _agent_of(name: str | None) -> tuple[str, dict[str, Any]]:
    """The session (named, else the one the current directory is in) and its agent run;
    `not_found` when the session never had an agent (`para start`, not `para dispatch`)."""
    r = _call("para/status", {"session": name}, False)
    if name is None and len(r["sessions"]) != 1:
        _fail(ParaError(Code.invalid_input, f"{_cwd()} is not inside a session worktree; name the session"), False)
    s = r["sessions"][0]
    if not s.get("agent"):
        _fail(ParaError(Code.not_found, f"session {s['name']} has no agent: it was started with `para start`, "
                        "not `para dispatch`", session=s["name"]), False)
    return s["name"], s["agent"]


@app.command()
def logs(name: Annotated[Optional[str], typer.Argument(help="Session name.")] = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing as the log grows.")] = False) -> None:
    """Print a headless agent's output."""
    import time

    s, agent = _agent_of(name)
    path = agent.get("log")
    if not path:
        where = f"tmux window {agent['window']} (`para attach {s}`)" if agent.get("window") \
            else "your editor's terminal, not a log file"
        _fail(ParaError(Code.not_found, f"the agent of session {s} writes to {where}", session=s), False)
    try:
        f = open(path, "rb")
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
def attach(name: Annotated[Optional[str], typer.Argument(help="Session name.")] = None) -> None:
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
def monitor(once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
            until_idle: Annotated[bool, typer.Option("--until-done", help="Exit when no agent runs and no plan is running.")] = False) -> None:
    """A live table of all sessions, refreshed by the sidecar's notifications."""
    from para_rpc import monitor as monitor_mod

    raise SystemExit(monitor_mod.run(_cwd(), client.forwarded_env(), once=once, until_done=until_idle))


@app.command()
def demo() -> None:
    """Dispatch a three-step plan to scripted agents in a throwaway repository and watch it land."""
    from para_rpc import demo as demo_mod

    raise SystemExit(demo_mod.main())


@app.command()
def cancel(name: Annotated[Optional[str], typer.Argument(help="Session name.")] = None,
           discard: Annotated[bool, typer.Option("--discard", help="Do not commit uncommitted work (a backup ref still keeps it).")] = False,
           force: Annotated[bool, typer.Option("--force", help="Cancel even with HEAD off the session branch or an unfinished operation (saved under refs/para/backup/ first).")] = False,
           as_json: JsonOpt = False) -> None:
    """Save uncommitted work, archive the branch, remove the worktree."""
    _call("para/cancel", {"session": name, "discard": discard, "force": force}, as_json,
          lambda r: _print_session(r, f"Cancelled session {r['name']}; `para recover {r['name']}` brings it back"))


@app.command()
def recover(name: Annotated[Optional[str], typer.Argument(help="Session name.")] = None, as_json: JsonOpt = False) -> None:
    """Bring a cancelled session back to para/NAME at its standard worktree path."""
    _call("para/recover", {"session": name}, as_json, lambda r: _print_session(r, f"Recovered session {r['name']}"))


@app.command()
def resume(name: Annotated[Optional[str], typer.Argument(help="Session name.")] = None, as_json: JsonOpt = False) -> None:
    """Make sure the session's worktree exists (recreating it from the branch) and print its path."""
    def render(r: dict[str, Any]) -> None:
        # The path alone on stdout, so `cd "$(para resume NAME)"` works.
        print(f"session {r['name']}{': worktree recreated' if r['recreated'] else ''}", file=sys.stderr)
        print(r["worktree"])
    _call("para/resume", {"session": name}, as_json, render)


@app.command()
def clean(dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be done.")] = False,
          force: Annotated[bool, typer.Option("--force", help="Also delete branches holding unintegrated commits.")] = False,
          as_json: JsonOpt = False) -> None:
    """Prune missing worktrees, forget orphan sessions, delete old archives and backups."""
    def render(r: dict[str, Any]) -> None:
        verb = "would" if r["dry_run"] else "did"
        if not r["actions"]:
            print("Nothing to clean.")
        for a in r["actions"]:
            target = a.get("branch") or a.get("session") or a.get("ref") or ", ".join(a.get("paths", []))
            print(f"{verb} {a['kind'].replace('_', ' ')}: {target} ({a['reason']})")
        for k in r["kept"]:
            print(f"kept {k['branch']}: {k['why_kept']}")
    _call("para/clean", {"dry_run": dry_run, "force": force}, as_json, render)


# ---- config ------------------------------------------------------------------

ScopeOpt = Annotated[bool, typer.Option("--project", help="The project file (.para/config.json) instead of the user file.")]


@config_app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """Every key, its value and where it came from."""
    def render(r: dict[str, Any]) -> None:
        for k, v in r["values"].items():
            mark = {True: " (approved)", False: " (NOT APPROVED: `para trust`)"}.get(v.get("trusted"), "")
            mark += "".join(f" (agents.{n} refused: {why})" for n, why in v.get("refused", {}).items())
            print(f"{k:<22} {json.dumps(v['value']):<12} {v['source']}{mark}")
    _call("para/config", {"action": "show"}, as_json, render)


@config_app.command("get")
def config_get(key: str, as_json: JsonOpt = False) -> None:
    """Print one key's effective value."""
    _call("para/config", {"action": "get", "key": key}, as_json, lambda r: print(json.dumps(r["value"])))


@config_app.command("set")
def config_set(key: str, value: str, project: ScopeOpt = False, as_json: JsonOpt = False) -> None:
    """Set a key in the user file (or the project file with --project)."""
    _call("para/config", {"action": "set", "key": key, "value": value, "scope": "project" if project else "user"},
          as_json, lambda r: print(f"{r['key']} = {json.dumps(r['value'])} in {r['path']}"))


@config_app.command("path")
def config_path(as_json: JsonOpt = False) -> None:
    """Print the config file paths."""
    _call("para/config", {"action": "path"}, as_json,
          lambda r: [print(f"{k}: {v}") for k, v in r["paths"].items()])


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


# ---- trust ---------------------------------------------------------------------

def _render_trust(r: dict[str, Any]) -> None:
    import shlex

    action, file, repo = r["action"], r["file"], r["repo"]
    if action == "nothing_to_approve":
        print(f"Nothing to approve: {file} " + ("defines no commands." if r["exists"] else "does not exist."))
    elif action == "nothing_to_revoke":
        print(f"Nothing to revoke: no approval is recorded for {repo}.")
    elif action == "revoked":
        print(f"Revoked the approval of the commands of {file}; they do not run until approved again.")
    elif action == "approved":
        print(f"Approved the commands of {file} for {repo}:")
    elif r["approved"]:
        print(f"Approved: the commands of {file}:")
    elif r["commands"]:
        print(f"Not approved: the commands of {file} do not run until you approve them with `para trust` "
              f"in {repo}:")
    else:
        print(f"{file} " + ("defines no commands." if r["exists"] else "does not exist."))
    for c in r["commands"]:
        print(f"  {c['key']:<28} {shlex.join(c['argv'])}")
    for c in r["refused"]:
        print(f"  {c['key']:<28} refused: {c['reason']}; rename it")
    if r["approved"]:
        print(f"Recorded as sha256 {r['sha256'][:16]}… in {r['store']}; a change to the file needs approval "
              "again, `para trust --revoke` withdraws it.")
    elif r["approval"] and r["commands"]:
        print(f"(An earlier content, sha256 {str(r['approval'].get('sha256'))[:16]}…, was approved; "
              "the file changed since.)")


@app.command("trust")
def trust_(show: Annotated[bool, typer.Option("--show", help="Only show the commands and whether they are approved.")] = False,
           revoke: Annotated[bool, typer.Option("--revoke", help="Withdraw the approval.")] = False,
           as_json: JsonOpt = False) -> None:
    """Approve the commands this repository's .para/config.json would run (integrate.check, agent
    profiles), printing exactly what you approve; until then operations that need them fail
    (exit 13). A changed file needs approval again."""
    if show and revoke:
        _fail(ParaError(Code.invalid_input, "give --show or --revoke, not both"), as_json)
    action = "show" if show else "revoke" if revoke else "approve"
    if action == "approve" and os.environ.get("PARA_SESSION"):
        _fail(ParaError(Code.invalid_input,
                        "approving commands that run as you is a human's decision, and this is the environment of "
                        f"the agent of session {os.environ['PARA_SESSION']!r} (PARA_SESSION is set); the user "
                        "reviews them with `para trust --show` and approves with `para trust` in the repository",
                        session=os.environ["PARA_SESSION"]), as_json)
    _call("para/trust", {"action": action}, as_json, _render_trust)


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
            with client.wait_for_sidecar(client.spawn_sidecar()) as conn:
                info = client.hello(conn)
        except ParaError as e:
            _fail(e, as_json)
    print(json.dumps(info, indent=2) if as_json else f"sidecar running, pid {info['pid']}")


@sidecar_app.command("stop")
def sidecar_stop(as_json: JsonOpt = False) -> None:
    """Ask the sidecar to finish its work and exit."""
    info = _running()
    if info is not None:
        client.call("para/shutdown", {}, autostart=False)
        client.wait_for_exit()
    print(json.dumps({"stopped": info is not None}) if as_json else
          ("sidecar stopped" if info else "no sidecar was running"))


@sidecar_app.command("restart")
def sidecar_restart(as_json: JsonOpt = False) -> None:
    """Stop the sidecar (after its work) and start a new one."""
    if _running() is not None:
        client.call("para/shutdown", {}, autostart=False)
        client.wait_for_exit()
    sidecar_start(as_json)


@sidecar_app.command("status")
def sidecar_status(as_json: JsonOpt = False) -> None:
    """Report whether a sidecar runs, its version, pid and repositories (exit 9 if none)."""
    from para_rpc import runtime

    info = _running()
    if as_json:
        print(json.dumps({"running": info is not None, "socket": str(runtime.socket_path()), **(info or {})}, indent=2))
    elif info:
        print(f"sidecar {info['version']} running, pid {info['pid']}, socket {runtime.socket_path()}")
        for r in info["repos"]:
            print(f"  serving {r}")
    else:
        print(f"no sidecar running on {runtime.socket_path()}")
    if info is None:
        raise SystemExit(Code.sidecar_unavailable.exit)


@sidecar_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sidecar_run(ctx: typer.Context) -> None:
    """Run the sidecar in the foreground (options: --idle-timeout S, --stderr, --log-level L)."""
    from para_rpc.server import sidecar

    raise SystemExit(sidecar.main(list(ctx.args)))


# ---- MCP -------------------------------------------------------------------------

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
        return
    for r in results:
        print(f"{r['path']}: para server {r['action']} ({r['entry']['command']} {' '.join(r['entry']['args'])})")
        if r["tracked"]:
            print("  note: this file is tracked by git; it now holds this machine's path of para")
        elif r["excluded"]:
            print("  kept out of commits through .git/info/exclude")


@app.command()
def tour() -> None:
    """A short scripted tour in a throwaway repository: start, list, finish, cancel, recover."""
    from para_rpc import tour as tour_mod

    raise SystemExit(tour_mod.main())


@app.command()
def version() -> None:
    """Print the version."""
    from para_rpc import __version__

    print(__version__)


def main() -> None:
    if _fast_path(sys.argv[1:]):
        return
    app(prog_name="para")


if __name__ == "__main__":
    main()
