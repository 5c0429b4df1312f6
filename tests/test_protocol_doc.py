"""docs/protocol.md and the code must agree.

Static checks (no sidecar): the `## \\`para/...\\`` headings are exactly the registered
methods, notifications and sidecar-to-client requests; every params field of every
method appears in that method's section; the error code table is `errors.Code`; the
`workspace/executeCommand` section names exactly the registered commands.

Live check: the test sidecar (conftest's `sidecar` fixture) answers every documented
method and command with `{}` params as documented: a result when the method has no
required field, else -32602 naming the missing field (docs/protocol.md, "Common params");
never a crash (-32000 internal, -32603), never -32601. An undocumented name gets -32601.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import Sidecar
from para_rpc import methods, params
from para_rpc.client import Connection
from para_rpc.errors import Code

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
METHOD_HEADING = re.compile(r"^## `(para/[^`]+)`[ \t]*$", re.M)
ANY_H2 = re.compile(r"^## .*$", re.M)
ERROR_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|\s*(-?\d+)\s*\|\s*(\d+)\s*\|\s*(.*?)\s*\|\s*$", re.M)
COMMAND_NAME = re.compile(r"`(para\.[A-Za-z_]+)`")

REQUESTS = {**{m: x.params for m, x in methods.METHODS.items()}, **params.TRANSPORT_METHODS}
NOTIFICATIONS = set(params.NOTIFICATIONS)
SERVER_REQUESTS = set(getattr(params, "SERVER_REQUESTS", ()))


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def h2_sections(text: str) -> list[tuple[str, str]]:
    """(heading line, body up to the next level-2 heading) for every `## ` heading."""
    heads = list(ANY_H2.finditer(text))
    out = []
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        out.append((m.group(0), text[m.end():end]))
    return out


def method_sections() -> dict[str, str]:
    found: dict[str, str] = {}
    for heading, body in h2_sections(doc_text()):
        m = METHOD_HEADING.fullmatch(heading)
        if m:
            assert m.group(1) not in found, f"docs/protocol.md documents {m.group(1)} twice"
            found[m.group(1)] = body
    return found


def section_titled(title: str) -> str:
    for heading, body in h2_sections(doc_text()):
        if heading.strip() == f"## {title}":
            return body
    raise AssertionError(f"docs/protocol.md has no `## {title}` section")


# ---- static checks ----------------------------------------------------------------

def test_method_headings_are_exactly_the_registered_methods_and_notifications() -> None:
    documented = set(method_sections())
    registered = set(REQUESTS) | NOTIFICATIONS | SERVER_REQUESTS
    assert not registered - documented, f"registered but not documented: {sorted(registered - documented)}"
    assert not documented - registered, f"documented but not registered: {sorted(documented - registered)}"


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_every_params_field_is_mentioned_in_its_method_section(method: str) -> None:
    body = method_sections().get(method)
    assert body is not None, f"{method} has no section"
    fields = [f.name for f in msgspec.structs.fields(REQUESTS[method])]
    missing = [f for f in fields if f"`{f}`" not in body]
    assert not missing, f"{method} ({REQUESTS[method].__name__}): fields not mentioned: {missing}"


def test_error_code_table_is_errors_code() -> None:
    rows = ERROR_ROW.findall(section_titled("Error codes"))
    documented = [(name, int(rpc), int(exit_), meaning) for name, rpc, exit_, meaning in rows]
    names = [r[0] for r in documented]
    assert len(names) == len(set(names)), f"duplicate rows: {names}"
    expected = [(c.name, c.rpc, c.exit, c.meaning) for c in Code]
    assert sorted(documented) == sorted(expected)


def test_every_execute_command_is_documented() -> None:
    from para_rpc.server.lsp import COMMANDS

    mentioned = set(COMMAND_NAME.findall(section_titled("`workspace/executeCommand`")))
    assert not set(COMMANDS) - mentioned, f"not documented: {sorted(set(COMMANDS) - mentioned)}"
    assert not mentioned - set(COMMANDS), f"documented but not registered: {sorted(mentioned - set(COMMANDS))}"


# ---- live check --------------------------------------------------------------------

def raw(conn: Connection, method: str, params_: Any, msg_id: int) -> dict[str, Any]:
    conn.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params_})
    while True:
        msg = conn.read()
        if msg.get("id") == msg_id and "method" not in msg:
            return msg


def assert_answered_as_documented(method: str, msg: dict[str, Any]) -> None:
    """`{}` params: a result if `method` has no required field, else -32602 naming the first one."""
    required = [f.name for f in msgspec.structs.fields(REQUESTS[method]) if f.required]
    if required:
        error = msg.get("error") or {}
        assert error.get("code") == -32602, f"{method} with {{}}: expected -32602, got {msg}"
        assert f"missing required field `{required[0]}`" in error.get("message", ""), f"{method}: {msg}"
    else:
        assert "result" in msg and "error" not in msg, f"{method} with {{}}: expected a result, got {msg}"


def test_every_documented_method_is_answered_and_others_are_method_not_found(sidecar: Sidecar) -> None:
    documented = set(method_sections()) - NOTIFICATIONS - SERVER_REQUESTS
    assert documented, "no documented request methods"
    with sidecar.connect() as conn:  # a CLI-style client: no `initialize`
        for i, method in enumerate(sorted(documented - {"para/shutdown"}), 1):
            assert_answered_as_documented(method, raw(conn, method, {}, i))
        msg = raw(conn, "para/notDocumented", {}, 900)
        assert msg.get("error", {}).get("code") == -32601, msg

        commands = set(COMMAND_NAME.findall(section_titled("`workspace/executeCommand`")))
        for i, command in enumerate(sorted(commands), 1000):
            msg = raw(conn, "workspace/executeCommand", {"command": command, "arguments": [{}]}, i)
            assert_answered_as_documented("para/" + command[len("para."):], msg)
        msg = raw(conn, "workspace/executeCommand", {"command": "para.notDocumented", "arguments": [{}]}, 1999)
        assert "is not defined" in msg["error"]["message"], msg

    with sidecar.connect() as conn:  # an LSP client sees the same commands announced
        init = raw(conn, "initialize", {"processId": None, "rootUri": None, "capabilities": {}}, 1)
        announced = set(init["result"]["capabilities"]["executeCommandProvider"]["commands"])
        assert announced == commands

    if "para/shutdown" in documented:
        with sidecar.connect() as conn:
            msg = raw(conn, "para/shutdown", {}, 1)
            assert msg.get("result") == {"stopping": True, "setups_stopped": []}, msg
        sidecar.proc.wait(timeout=30)
        assert sidecar.proc.returncode == 0
