"""`para monitor`: a live table of every session, redrawn when the sidecar says
something changed (para/subscribe notifications), not by polling git."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from para_rpc import client
from para_rpc.errors import ParaError

if TYPE_CHECKING:
    from rich.table import Table

CONFLICT_REFRESH = 3.0  # seconds between conflict forecasts (they run merge-tree per pair)


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    d = max(0, int(time.time() - ts))
    return f"{d // 3600}h" if d >= 3600 else f"{d // 60}m" if d >= 60 else f"{d}s"


def _collisions(forecast: dict[str, Any] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in (forecast or {}).get("sessions", []):
        if not r["clean"]:
            out.setdefault(r["session"], []).append(r["target"])
    for pair in (forecast or {}).get("pairs", []):
        out.setdefault(pair["a"], []).append(pair["b"])
        out.setdefault(pair["b"], []).append(pair["a"])
    return out


def table(status: dict[str, Any], forecast: dict[str, Any] | None) -> Table:
    from rich.table import Table

    t = Table(title=f"para · {status['repo']}", title_justify="left", expand=False)
    for col in ("session", "status", "agent", "task", "tests", "todos", "changes", "active", "collides with"):
        t.add_column(col, overflow="fold")
    hits = _collisions(forecast)
    for s in status["sessions"]:
        rep = s.get("report") or {}
        agent = s.get("agent") or {}
        todos = f"{rep['todos_done']}/{rep['todos_total']}" if rep.get("todos_total") else ""
        task = ("BLOCKED: " + rep["blocked"]) if rep.get("blocked") else (rep.get("task") or s.get("task") or "")
        state = s["status"] + (" (stale)" if s.get("stale") else "")
        agent_state = f"{agent.get('state')}" + (f" ({agent['exit_code']})" if agent.get("exit_code") else "") \
            if agent else ""
        t.add_row(s["name"], state, agent_state, task[:60], rep.get("tests", ""), todos,
                  (s.get("diffstat") or "").replace(" changed", "").replace("insertions", "ins")
                  .replace("deletions", "del"), _age(s.get("last_activity")), ", ".join(hits.get(s["name"], [])))
    for plan in status.get("plans", []):
        step = plan["steps"][plan["current"]] if plan["current"] < len(plan["steps"]) else None
        t.caption = (f"plan {plan['id']}: step {plan['current'] + 1}/{len(plan['steps'])}"
                     + (f" (task {step['number']})" if step else "") + f", {plan['state']}")
    return t


def _done(status: dict[str, Any], cwd: str, env: dict[str, str]) -> bool:
    running = any((s.get("agent") or {}).get("state") == "running" for s in status["sessions"])
    integrating = any(s["status"] == "integrating" for s in status["sessions"])
    return not running and not integrating and not status.get("plans")


def run(cwd: str, env: dict[str, str], once: bool = False, until_done: bool = False) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console() if sys.stdout.isatty() else Console(width=140)
    try:
        requests = client.connect()
        events = client.connect()
        events.request("para/subscribe", {})
    except ParaError as e:
        print(f"para: {e.message}", file=sys.stderr)
        return e.code.exit
    params = {"cwd": cwd, "env": env}
    forecast: dict[str, Any] | None = None
    forecast_at = 0.0

    def frame() -> tuple[dict[str, Any], Table]:
        nonlocal forecast, forecast_at
        status = requests.request("para/status", {**params, "all": True})
        if time.monotonic() - forecast_at > CONFLICT_REFRESH:
            forecast, forecast_at = requests.request("para/conflicts", params), time.monotonic()
        return status, table(status, forecast)

    status, view = frame()
    if once:
        console.print(view)
        return 0
    live = Live(view, console=console, refresh_per_second=4, transient=False) if console.is_terminal else None
    last_printed = None
    try:
        if live:
            live.start()
        events.sock.settimeout(1.0)
        while True:
            if not live:
                text = _plain(status)
                if text != last_printed:
                    console.print(view)
                    last_printed = text
            if until_done and _done(status, cwd, env):
                return 0
            try:
                msg = next(events.notifications())
                if msg.get("params", {}).get("repo") not in (None, status["repo"]):
                    continue
            except TimeoutError:
                pass
            status, view = frame()
            if live:
                live.update(view)
    except KeyboardInterrupt:
        return 0
    finally:
        if live:
            live.stop()
        requests.close()
        events.close()


def _plain(status: dict[str, Any]) -> str:
    return repr([(s["name"], s["status"], (s.get("agent") or {}).get("state"), (s.get("report") or {}).get("task"))
                 for s in status["sessions"]] + [p["current"] for p in status.get("plans", [])])
