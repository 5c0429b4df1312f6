"""`para monitor`: every session of the repository, redrawn when the sidecar says something
changed (para/subscribe notifications), not by polling git.

In a terminal it is the full-screen view of `tui.py` (Textual, the `tui` extra, imported only
here and only then); `--once`, `--until-done` and a stdout that is not a terminal get the plain
rich table below, for scripts and logs."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from para_rpc import client, display
from para_rpc.cli.render import safe
from para_rpc.errors import Code, ParaError

if TYPE_CHECKING:
    from rich.table import Table

CONFLICT_REFRESH = 3.0  # seconds between conflict forecasts (they run merge-tree per pair)
TUI_MISSING = ("para monitor's full-screen view needs Textual, which is not installed: "
               "pip install 'para_rpc[tui]' (into the environment para runs from); "
               "`para monitor --once` and `para monitor --until-done` print a plain table without it")


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    d = max(0, int(time.time() - ts))
    return f"{d // 3600}h" if d >= 3600 else f"{d // 60}m" if d >= 60 else f"{d}s"


def collisions(forecast: dict[str, Any] | None) -> dict[str, list[str]]:
    """Session -> what it would conflict with (its target, other sessions)."""
    out: dict[str, list[str]] = {}
    for r in (forecast or {}).get("sessions", []):
        if not r["clean"]:
            out.setdefault(r["session"], []).append(r["target"])
    for pair in (forecast or {}).get("pairs", []):
        out.setdefault(pair["a"], []).append(pair["b"])
        out.setdefault(pair["b"], []).append(pair["a"])
    return out


def row(s: dict[str, Any], hits: dict[str, list[str]]) -> tuple[str, ...]:
    """One session's cells: session, status, agent, task, tests, todos, changes, active, collides with."""
    rep = s.get("report") or {}
    agent = s.get("agent") or {}
    todos = f"{rep['todos_done']}/{rep['todos_total']}" if rep.get("todos_total") else ""
    task = ("BLOCKED: " + rep["blocked"]) if rep.get("blocked") else (rep.get("task") or s.get("task") or "")
    state = s["status"] + (" (stale)" if s.get("stale") else "")
    agent_state = f"{agent.get('state')}" + (f" ({agent['exit_code']})" if agent.get("exit_code") else "") \
        if agent else ""
    if display.remote(agent):  # on another host: which, and how old the work brought home is
        agent_state += f" {display.list_mark(agent)}"
    changes = (s.get("diffstat") or "").replace(" changed", "").replace("insertions", "ins").replace("deletions", "del")
    cells = (s["name"], state, agent_state, task[:60], rep.get("tests", ""), todos, changes,
             _age(s.get("last_activity")), ", ".join(hits.get(s["name"], [])))
    return tuple(safe(c) for c in cells)  # agents write task, blocked, tests: never terminal codes


def plan_line(plan: dict[str, Any]) -> str:
    step = plan["steps"][plan["current"]] if plan["current"] < len(plan["steps"]) else None
    return (f"plan {plan['id']}: step {plan['current'] + 1}/{len(plan['steps'])}"
            + (f" (task {step['number']})" if step else "") + f", {plan['state']}")


def table(status: dict[str, Any], forecast: dict[str, Any] | None) -> Table:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"para · {status['repo']}", title_justify="left", expand=False)
    for col in ("session", "status", "agent", "task", "tests", "todos", "changes", "active", "collides with"):
        t.add_column(col, overflow="fold")
    hits = collisions(forecast)
    for s in status["sessions"]:
        t.add_row(*(Text(c) for c in row(s, hits)))  # Text: agent text is never Rich markup
    plans = [plan_line(p) for p in status.get("plans", [])]
    if plans:
        t.caption = Text("\n".join(map(safe, plans)))
    elif not status["sessions"]:
        t.caption = "No sessions. Start one with `para start` or `para dispatch`."
    return t


def _done(status: dict[str, Any]) -> bool:
    running = any((s.get("agent") or {}).get("state") == "running" for s in status["sessions"])
    integrating = any(s["status"] == "integrating" for s in status["sessions"])
    return not running and not integrating and not status.get("plans")


def run(cwd: str, env: dict[str, str], once: bool = False, until_done: bool = False, as_json: bool = False) -> int:
    if not (once or until_done) and sys.stdout.isatty() and sys.stdin.isatty():
        try:
            from para_rpc import tui
        except ImportError as e:
            if getattr(e, "name", None) not in ("textual", None) and not str(e.name).startswith("textual."):
                raise
            print(f"para: {TUI_MISSING}", file=sys.stderr)
            return Code.not_found.exit
        return tui.run(cwd, env)
    return _plain(cwd, env, once, until_done, as_json)


def _plain(cwd: str, env: dict[str, str], once: bool, until_done: bool, as_json: bool) -> int:
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=140)
    try:
        requests = client.connect()
        events = client.connect()
        events.request("para/subscribe", {})
    except ParaError as e:
        _error(e, as_json)
        return e.code.exit
    params = {"cwd": cwd, "env": env}
    forecast: dict[str, Any] | None = None
    forecast_at = 0.0

    def frame() -> dict[str, Any]:
        nonlocal forecast, forecast_at
        status: dict[str, Any] = requests.request("para/status", {**params, "all": True})
        if time.monotonic() - forecast_at > CONFLICT_REFRESH:
            forecast, forecast_at = requests.request("para/conflicts", params), time.monotonic()
        return status

    def emit(status: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps({**status, "conflicts": forecast}, indent=2))
        else:
            console.print(table(status, forecast))

    last_printed = None
    try:
        status = frame()
        if once:
            emit(status)
            return 0
        # Without a deadline the socket would block forever between events; a conflict forecast
        # may still change (work committed in a worktree is no event), so it is read again then.
        events.sock.settimeout(CONFLICT_REFRESH)
        while True:
            text = _signature(status, forecast)
            if not as_json and text != last_printed:
                emit(status)
                last_printed = text
            if until_done and _done(status):
                if as_json:
                    emit(status)
                return 0
            try:
                msg = next(events.notifications())
                if msg.get("params", {}).get("repo") not in (None, status["repo"]):
                    continue
            except TimeoutError:
                pass
            status = frame()
    except ParaError as e:
        _error(e, as_json)
        return e.code.exit
    except KeyboardInterrupt:
        return 0
    finally:
        requests.close()
        events.close()


def _error(e: ParaError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": {"code": e.code.name, "message": e.message, "data": e.data}}, indent=2))
    else:
        print(f"para: {e.message}", file=sys.stderr)


def _signature(status: dict[str, Any], forecast: dict[str, Any] | None) -> str:
    return repr([(s["name"], s["status"], (s.get("agent") or {}).get("state"), (s.get("report") or {}).get("task"),
                  (s.get("agent") or {}).get("harvested_commit"))
                 for s in status["sessions"]] + [p["current"] for p in status.get("plans", [])]
                + sorted((k, tuple(v)) for k, v in collisions(forecast).items()))
