"""`para mcp` answers every line it is given.

The MCP SDK drops a line that is not JSON without a word, so a client waiting for its
answer would wait forever (red team RB10): the stdio bridge answers it with a JSON-RPC
parse error itself, and keeps the stream in whole lines both ways, so that answer never
lands inside another message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from test_mcp_push import RawMcp

BAD = [b"{not json", b'{"jsonrpc": "2.0", "id": 5, "method": ', b"[" * 100_000 + b"]" * 100_000]


@pytest.mark.parametrize("line", BAD, ids=["garbage", "cut short", "nested 100000 deep"])
def test_a_line_that_is_not_json_gets_a_parse_error_and_the_next_request_its_answer(
        sidecar: Any, repo: Path, line: bytes) -> None:
    c = RawMcp(repo)
    try:
        c.buf = b""
        assert c.p.stdin is not None
        c.p.stdin.write(line + b"\n")
        c.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "para_list", "arguments": {}}})
        assert c.read_until(b'"id":7', 60), c.buf[-500:]
        answers = [json.loads(x) for x in c.buf.splitlines() if x.strip()]
        assert answers[0]["id"] is None and answers[0]["error"]["code"] == -32700
        assert any(a.get("id") == 7 and "result" in a for a in answers)
    finally:
        c.close()
