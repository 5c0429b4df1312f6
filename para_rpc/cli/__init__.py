"""`para`: the command line, a thin client of the sidecar.

Every command sends one request (params built here, `cwd` = the current
directory) and renders the result: a readable summary by default, the
result object with `--json`. Errors print `para: <message>` (or a JSON
`{"error": ...}` with `--json`) and exit with the code's stable status (see
errors.py). Nothing here prompts; heavy libraries (pygls, mcp) are never
imported.

The package:
- `__init__.py` (this file): `main()` and the request helpers every command uses;
  importing it does nothing but define them;
- `fast.py`: the commands agents and scripts run in loops (`para integrate`, `para status`,
  `para list --json`, ...), and the forwarders `para mcp` and `para lsp`, served before
  typer is even imported (`PARA_NO_FAST=1` turns that off);
- `app.py`: the typer declarations, one short function per command;
- `render.py`: every human rendering of a result.
"""

from __future__ import annotations

import os
import sys

from para_rpc import client, wire
from para_rpc.errors import Code, ParaError

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn


def _cwd() -> str:
    try:
        return os.getcwd()
    except FileNotFoundError:
        _fail(ParaError(Code.invalid_input, "the current directory no longer exists"), False)


def _fail(e: ParaError, as_json: bool) -> NoReturn:
    if as_json:
        print(wire.dumps({"error": {"code": e.code.name, "message": e.message, "data": e.data}}, indent=2))
    else:
        session = e.data.get("session")
        named = isinstance(session, str) and (f"'{session}'" in e.message or f"session {session}" in e.message)
        about = f" (session {session})" if isinstance(session, str) and not named else ""
        print(f"para: {e.message}{about}", file=sys.stderr)
    raise SystemExit(e.code.exit)


def _show_progress(p: dict[str, Any]) -> None:
    value = p.get("value")
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        print(f"  | {value['message']}", file=sys.stderr, flush=True)


def _call(method: str, params: dict[str, Any], as_json: bool,
          render: Callable[[Any], None] | None = None, json_view: Callable[[Any], Any] | None = None,
          progress: bool = False) -> Any:
    """Send one request and print its result: JSON (`json_view` of it when given, e.g. names
    only for `list --quiet`) with `as_json`, else `render`'s summary. `progress`: in human mode,
    what the sidecar reports while it works (the output of session.setup) is shown on stderr
    as it comes."""
    params = {"cwd": _cwd(), "env": client.forwarded_env(), **params}
    if as_json and json_view is None:  # (the sidecar writes what is printed: docs/protocol.md)
        params["resultAsText"] = True
    on_progress = None
    if progress and not as_json:
        params["workDoneToken"] = "para-cli"
        on_progress = _show_progress
    try:
        result = client.call(method, params, on_progress=on_progress)
    except ParaError as e:
        _fail(e, as_json)
    except OSError as e:
        _fail(ParaError(Code.sidecar_unavailable, f"cannot talk to the sidecar: {e}"), as_json)
    try:
        if as_json:
            print(result if isinstance(result, str) and json_view is None
                  else wire.dumps(json_view(result) if json_view else result, indent=2))
        elif render is not None:
            render(result)
            # What para saved, or left, on the way: said after the summary, in every command.
            for line in (result.get("warnings") or []) if isinstance(result, dict) else []:
                print(f"warning: {line}")
        if sys.stdout is not None:  # (None: started with stdout closed, `>&-`; print wrote nothing)
            sys.stdout.flush()
    except BrokenPipeError:  # `para list --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as e:  # `para start x > /dev/full`: done, but its answer could not be written
        output_failed(e)
    return result


def output_failed(e: OSError) -> NoReturn:
    """The command went through but its output could not be written (a full disk, a closed
    terminal): said on stderr, never as a traceback, and the exit status is not 0."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (nothing more is tried there)
    except (OSError, AttributeError, ValueError):
        pass
    try:
        print(f"para: could not write the output ({e.strerror or e}); the command itself went through: "
              "`para list` and `para show` show where things are", file=sys.stderr, flush=True)
    except (OSError, AttributeError, ValueError):
        pass
    raise SystemExit(1)


def fast_enabled() -> bool:
    """False when `PARA_NO_FAST` is set (to anything but 0): then typer serves everything."""
    return os.environ.get("PARA_NO_FAST", "") in ("", "0")


def main() -> None:
    args = sys.argv[1:]
    if fast_enabled():
        from para_rpc.cli import fast

        fast.serve(args)  # exits when it served the command
    from para_rpc.cli.app import app

    app(prog_name="para")
