"""`para monitor` in a terminal: a full-screen Textual view of every session and plan, redrawn
when the sidecar pushes an event (para/subscribe), with keys to act on the selected session.

Textual is the `tui` extra: only `para monitor` imports this module, and `monitor.run` says how
to install it when it is missing. Requests run in worker threads, each on its own connection
(a `client.Connection` is not shared between threads); one more thread blocks on the event
connection and asks the app to reload when something happened: nothing here polls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Static

from para_rpc import client, monitor
from para_rpc.cli.render import safe
from para_rpc.errors import ParaError

COLUMNS = ("session", "state", "agent", "ports", "task", "tests", "todos", "changes", "active", "collides with")


class Confirm(ModalScreen[bool]):
    """A yes/no question; anything but y (n, Escape) answers no."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "yes"),
                                             Binding("n", "answer(False)", "no"),
                                             Binding("escape", "answer(False)", "no")]
    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Static { width: 70; padding: 1 2; border: thick $error; background: $surface; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(Text(safe(self.question) + "\n\n") + Text.from_markup("[b]y[/b] yes   [b]n[/b] no"),
                     id="question")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Pager(ModalScreen[None]):
    """A diff or a log, scrollable; Escape or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "close"), Binding("q", "close", "close")]
    DEFAULT_CSS = """
    Pager > Vertical { border: thick $primary; background: $surface; }
    """

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text, style="bold"), id="pager-title")
            with VerticalScroll():
                # a log or diff is what an agent wrote: its lines, but no terminal codes
                yield Static(Text("\n".join(map(safe, self.text.split("\n")))), id="pager-text")

    def action_close(self) -> None:
        self.dismiss(None)


class MonitorApp(App[int]):
    TITLE = "para monitor"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "integrate", "integrate"),
        Binding("c", "continue_", "continue"),
        Binding("a", "abort", "abort"),
        Binding("x", "cancel", "cancel"),
        Binding("s", "stop", "stop"),
        Binding("r", "restart", "restart"),
        Binding("t", "attach", "attach"),
        Binding("o", "open", "open"),
        Binding("d", "diff", "diff"),
        Binding("l", "log", "log"),
        Binding("q", "quit", "quit"),
    ]
    DEFAULT_CSS = """
    #sessions { height: 1fr; }
    #plans { height: auto; padding: 0 1; }
    #message { height: auto; padding: 0 1; color: $warning; }
    """

    def __init__(self, cwd: str, env: dict[str, str]) -> None:
        super().__init__()
        self.cwd, self.env = cwd, env
        self.status: dict[str, Any] | None = None
        self.listed: dict[str, dict[str, Any]] = {}
        self.forecast: dict[str, Any] | None = None
        self.forecast_at = 0.0
        self.loads = 0            # frames drawn (tests wait on it)
        self._wanted = threading.Event()
        self._leaving = threading.Event()
        self.events: client.Connection | None = None
        self._later: threading.Timer | None = None

    # ---- layout and data ---------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static("", id="plans")
        yield Static("", id="message")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#sessions", DataTable)
        table.add_columns(*COLUMNS)
        self.listen()
        self.loader()

    def on_unmount(self) -> None:
        self._leaving.set()
        if self._later is not None:
            self._later.cancel()
        self._wanted.set()
        if self.events is not None:
            try:
                self.events.sock.shutdown(2)
            except OSError:
                pass

    def _params(self, **extra: Any) -> dict[str, Any]:
        return {"cwd": self.cwd, "env": self.env, **extra}

    @work(thread=True, exclusive=True, group="events")
    def listen(self) -> None:
        """Block on the event connection; every notification about this repository (or of
        no repository) asks the loader for a new frame."""
        try:
            self.events = client.connect()
            self.events.request("para/subscribe", {})
            for msg in self.events.notifications():
                if self._leaving.is_set():
                    return
                repo = (msg.get("params") or {}).get("repo")
                if repo is None or self.status is None or repo == self.status.get("repo"):
                    self._wanted.set()
        except (ParaError, OSError) as e:
            if not self._leaving.is_set():
                self.call_from_thread(self.say, f"lost the sidecar's events: {getattr(e, 'message', e)}")

    @work(thread=True, exclusive=True, group="loader")
    def loader(self) -> None:
        """Draw a frame now, then again each time the listener saw an event (several events
        that arrive during one load make one more frame, not several)."""
        self._wanted.set()
        while not self._leaving.is_set():
            self._wanted.wait()
            if self._leaving.is_set():
                return
            self._wanted.clear()
            try:
                with client.connect() as conn:
                    status = conn.request("para/status", self._params(all=True))
                    listed = conn.request("para/list", self._params())
                    wait = monitor.CONFLICT_REFRESH - (time.monotonic() - self.forecast_at)
                    if wait <= 0:
                        self.forecast = conn.request("para/conflicts", self._params())
                        self.forecast_at = time.monotonic()
                    elif self._later is None or not self._later.is_alive():
                        # The forecast this event may change is due later: one more frame then.
                        self._later = threading.Timer(wait, self._wanted.set)
                        self._later.daemon = True
                        self._later.start()
            except (ParaError, OSError) as e:
                self.call_from_thread(self.say, f"para: {getattr(e, 'message', e)}")
                continue
            self.call_from_thread(self.show, status, listed)

    def show(self, status: dict[str, Any], listed: dict[str, Any]) -> None:
        self.status = status
        self.listed = {s["name"]: s for s in listed["sessions"]}
        self.sub_title = status["repo"]
        table = self.query_one("#sessions", DataTable)
        keep = self.selected()
        table.clear()
        hits = monitor.collisions(self.forecast)
        for s in status["sessions"]:
            row = monitor.row(s, hits)
            ports = " ".join(str(p) for p in (self.listed.get(s["name"]) or {}).get("ports") or [])
            state = (self.listed.get(s["name"]) or {}).get("state") or row[1]
            # Text: an agent's `[/]` or `[link=...]` is shown as typed, not parsed as Rich markup
            table.add_row(*(Text(c) for c in (row[0], safe(state), row[2], ports, *row[3:])), key=s["name"])
        names = [s["name"] for s in status["sessions"]]
        if keep in names:
            table.move_cursor(row=names.index(keep))
        plans = [monitor.plan_line(p) for p in status.get("plans", [])]
        empty = "No sessions. Start one with `para start` or `para dispatch`." if not names else ""
        self.query_one("#plans", Static).update(Text("\n".join(map(safe, plans)) or empty))
        self.loads += 1

    def say(self, text: str) -> None:
        # errors and results quote agent-written text: no markup, no control characters
        self.query_one("#message", Static).update(Text("\n".join(map(safe, text.split("\n")))))

    def selected(self) -> str | None:
        table = self.query_one("#sessions", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def session_names(self) -> list[str]:
        return [s["name"] for s in (self.status or {}).get("sessions", [])]

    # ---- actions -------------------------------------------------------------------------

    def _act(self, method: str, verb: str, **params: Any) -> None:
        name = self.selected()
        if name is None:
            self.say("no session selected")
            return
        self.request(method, name, verb, params)

    @work(thread=True, group="actions")
    def request(self, method: str, name: str, verb: str, params: dict[str, Any]) -> None:
        self.call_from_thread(self.say, f"{verb} {name}…")
        try:
            with client.connect() as conn:
                result = conn.request(method, self._params(session=name, **params))
        except ParaError as e:
            self.call_from_thread(self.say, f"{verb} {name}: {e.message} ({e.code.name})")
            return
        except OSError as e:
            self.call_from_thread(self.say, f"{verb} {name}: cannot talk to the sidecar: {e}")
            return
        done = result.get("message") if isinstance(result, dict) and isinstance(result.get("message"), str) \
            else f"{name}: {result.get('status', 'done')}" if isinstance(result, dict) else "done"
        warnings = (result.get("warnings") or []) if isinstance(result, dict) else []
        self.call_from_thread(self.say, f"{verb}: {done}" + "".join(f"\nwarning: {w}" for w in warnings))
        self._wanted.set()

    def action_integrate(self) -> None:
        self._act("para/integrate", "integrate")

    def action_continue_(self) -> None:
        self._act("para/continue", "continue")

    def action_stop(self) -> None:
        self._act("para/stop", "stop")

    def action_restart(self) -> None:
        self._act("para/restart", "restart")

    def _confirm(self, question: str, method: str, verb: str) -> None:
        name = self.selected()
        if name is None:
            self.say("no session selected")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.request(method, name, verb, {})
            else:
                self.say(f"{verb} {name}: not done")
        self.push_screen(Confirm(question.format(name=name)), answered)

    def action_abort(self) -> None:
        self._confirm("Abort the integration of {name}? The session returns to its pre-integration commit.",
                      "para/abort", "abort")

    def action_cancel(self) -> None:
        self._confirm("Cancel session {name}? Its work is committed to an archive branch and its worktree "
                      "removed (`para recover {name}` brings it back).", "para/cancel", "cancel")

    def _cli(self, *args: str) -> None:
        """Run `para ARGS` in this terminal (attach, open: they take it over), then come back."""
        with self.suspend():
            subprocess.run([sys.executable, "-P", "-m", "para_rpc", *args], cwd=self.cwd)
        self._wanted.set()

    def action_attach(self) -> None:
        name = self.selected()
        if name is not None:
            self._cli("attach", name)

    def action_open(self) -> None:
        name = self.selected()
        if name is not None:
            self._cli("open", name)

    def action_diff(self) -> None:
        name = self.selected()
        if name is not None:
            self.page("para/diff", name)

    def action_log(self) -> None:
        name = self.selected()
        if name is not None:
            self.page("para/status", name)

    @work(thread=True, group="pager")
    def page(self, method: str, name: str) -> None:
        try:
            with client.connect() as conn:
                r = conn.request(method, self._params(session=name))
        except (ParaError, OSError) as e:
            self.call_from_thread(self.say, f"{name}: {getattr(e, 'message', e)}")
            return
        if method == "para/diff":
            title = f"diff of {name} against {r['base'][:10]}" + (" (uncommitted work included)"
                                                                   if r.get("includes_uncommitted") else "")
            text = (r.get("stat") or "") + "\n" + (r.get("patch") or "") or "no changes"
        else:
            agent = r["sessions"][0].get("agent") if r["sessions"] else None
            path = (agent or {}).get("log")
            if not path:
                where = "has no agent" if not agent else f"writes to tmux window {agent['window']} (t attaches)" \
                    if agent.get("window") else "runs in an editor's terminal"
                self.call_from_thread(self.say, f"{name}: its agent {where}, no log file")
                return
            title = f"log of {name}: {path}"
            text = _tail(path)
        self.call_from_thread(self.push_screen, Pager(title, text))


def _tail(path: str, limit: int = 200_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"cannot read {path}: {e}"


def run(cwd: str, env: dict[str, str]) -> int:
    try:
        client.connect().close()  # starts the sidecar if none runs, says why not otherwise
    except ParaError as e:
        print(f"para: {e.message}", file=sys.stderr)
        return e.code.exit
    result = MonitorApp(cwd, env).run()
    return result or 0

