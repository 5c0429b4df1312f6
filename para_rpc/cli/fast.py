"""The typer-free fast path: what agents, scripts, AI clients and editors start most often.

- `para mcp` and `para lsp` (exactly that argv) run the stdlib forwarders of `bridge.py`:
  an AI client or an editor waits for them at every start, and typer alone costs
  ~30 ms, its first dispatch (pydantic, every command built) ~0.15-0.3 s more.
- The `_FAST` commands, which agents and scripts run in loops (twenty agents integrating at
  once feel that cost), when called with nothing but the arguments listed there. Each entry
  builds exactly the request its typer command builds and renders like it (with the same
  function of `render.py`; a command without a renderer only with `--json`). Anything else
  (--help, `--opt=value`, an unknown or repeated argument, a value that looks like an option,
  a second positional) goes to typer.

`tests/test_cli_fast.py` runs every entry with and without `PARA_NO_FAST=1` and compares.
"""

from __future__ import annotations

from para_rpc.cli import _call

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    Renderer = Callable[[Any], None]

# command -> (method, param of the one positional argument or None,
#             {flag: (param, takes a value)}, the `render.py` function of the human output or None)
# (By name: `render` is imported only to print for people; `--json` prints the sidecar's text.)
_SESSION_FLAG = {"--session": ("session", True), "-s": ("session", True)}
# `--quiet` changes only the printing: `_`-params are the CLI's, never sent.
_LIST_FLAGS = {"--all": ("all", False), "-a": ("all", False), "--archived": ("all", False),
               "--verbose": ("verbose", False), "-v": ("verbose", False),
               "--quiet": ("_quiet", False), "-q": ("_quiet", False)}
_FAST: dict[str, tuple[str, str | None, dict[str, tuple[str, bool]], str | None]] = {
    "list": ("para/list", None, _LIST_FLAGS, None),
    "ls": ("para/list", None, _LIST_FLAGS, None),
    "start": ("para/start", "name", {"--base": ("base", True), "-b": ("base", True)}, "print_started"),
    "show": ("para/show", "session", {}, "print_shown"),
    "cancel": ("para/cancel", "session", {"--discard": ("discard", False), "--force": ("force", False)},
               "print_cancelled"),
    "integrate": ("para/integrate", "message", {**_SESSION_FLAG, "--strategy": ("strategy", True),
                                                "--target": ("target", True)}, "print_integration"),
    "continue": ("para/continue", "session", {"--force": ("force", False)}, "print_integration"),
    "status": ("para/report", "task", {**_SESSION_FLAG, "--tests": ("tests", True), "--todos": ("todos", True),
                                       "--blocked": ("blocked", True)}, "print_report"),
}


_PROGRESS = {"para/start"}  # methods whose human output shows the sidecar's progress meanwhile


class Plan:
    """The request a `_FAST` command line makes, and how its answer is printed. (A plain class:
    typing.NamedTuple would import typing into every `para` process.)"""
    __slots__ = ("as_json", "json_view", "method", "params", "render")

    def __init__(self, method: str, params: dict[str, Any], as_json: bool, render: Renderer | None,
                 json_view: Callable[[Any], Any] | None = None) -> None:
        self.method, self.params, self.as_json, self.render, self.json_view = (
            method, params, as_json, render, json_view)


def plan(args: list[str]) -> Plan | None:
    """What the fast path would do with `args`; None when typer must serve them."""
    if not args or args[0] not in _FAST:
        return None
    method, positional, flags, shown_by = _FAST[args[0]]
    as_json = "--json" in args[1:]
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
                return None
            seen.add(param)
            if takes_value:
                value = next(rest, None)
                if value is None or value.startswith("-"):
                    return None
                params[param] = value
            else:
                params[param] = True
        elif a.startswith("-") or positional is None or params[positional] is not None:
            return None
        else:
            params[positional] = a
    if args[0] == "status" and params["task"] in (None, "show"):
        return None  # `para status show ...` reads; typer serves it
    json_view = None
    if method == "para/list":
        quiet = params.pop("_quiet")
        if quiet and params["verbose"]:
            return None  # typer says why not
        shown_by = "print_names" if quiet else "print_list_verbose" if params["verbose"] else None
        if quiet:
            from para_rpc.cli import render
            json_view = render.list_names
    if shown_by is None and not as_json:
        return None  # the rich table: typer serves it
    renderer = None
    if shown_by is not None and not as_json:
        from para_rpc.cli import render
        renderer = getattr(render, shown_by)
    return Plan(method, params, as_json, renderer, json_view)


def serve(args: list[str]) -> None:
    """Serve `args` without typer when they are one of the commands above (and exit);
    return when typer must serve them."""
    if args[:1] == ["__complete"]:  # a shell's Tab: never typer (complete.py)
        from para_rpc.cli import complete

        raise SystemExit(complete.main(args[1:]))
    if args in (["mcp"], ["lsp"]):
        from para_rpc import bridge

        raise SystemExit(bridge.main() if args == ["mcp"] else bridge.lsp_main())
    p = plan(args)
    if p is not None:
        try:
            # (what a setup prints while `start` waits is shown as it comes, as typer's start does)
            _call(p.method, p.params, p.as_json, p.render, p.json_view, progress=p.method in _PROGRESS)
        except SystemExit as e:  # (`_call` exits so on an error, with its message printed)
            _exit(e.code)
        _exit(0)


def _exit(code: object) -> NoReturn:
    """Exit once the output is out, without the interpreter's teardown: freeing every module
    and object costs ~2 ms of every command, and a request command has nothing else to
    finish (no threads, no atexit work, no files open but stdout and stderr)."""
    import os
    import sys

    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # (started with that descriptor closed, `2>&-`: Python has no stream)
            continue
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # (a reader gone: what it did not take is not wanted)
            pass
        except OSError as e:  # (a full disk: what was printed did not get out)
            if stream is sys.stdout and not code:
                from para_rpc.cli import output_failed
                try:
                    output_failed(e)
                except SystemExit:
                    code = 1
    os._exit(code or 0)
