"""Pushed resource updates reach every MCP subscriber, whatever one of them does.

A client that subscribes and then stops reading (a hung IDE, a paused debugger) must not
hold up the updates of the others: each subscriber is sent to on its own, and one whose
sends time out loses its subscriptions instead of costing every later event another wait
(red team RB9).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

from para_rpc.server.mcp.frontend import SEND_TIMEOUT

from conftest import PARA_ARGV, cli_env, run_para


class RawMcp:
    """`para mcp` over raw stdio, read only when asked (so it can stop reading)."""

    def __init__(self, cwd: Path) -> None:
        self.p = subprocess.Popen([*PARA_ARGV, "mcp"], cwd=cwd, env=cli_env(), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.buf = b""
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        self.read_until(b'"id":0', 60)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.send({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "para://sessions"}})
        self.read_until(b'"id":1', 60)

    def send(self, msg: dict[str, Any]) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write((json.dumps(msg) + "\n").encode())

    def read_until(self, needle: bytes, timeout: float) -> bool:
        assert self.p.stdout is not None
        end = time.monotonic() + timeout
        while needle not in self.buf.replace(b" ", b""):
            left = end - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.p.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.p.stdout.fileno(), 1 << 20)
                if not chunk:
                    return False
                self.buf += chunk
        return True

    def close(self) -> None:
        self.p.kill()
        self.p.wait(timeout=10)


def test_a_subscriber_that_stopped_reading_does_not_hold_up_the_others(sidecar: Any, repo: Path) -> None:
    run_para("start", "m1", cwd=repo)
    stuck, live = RawMcp(repo), RawMcp(repo)
    try:
        # `stuck` asks for big answers and never reads them: its pipes fill up.
        for i in range(400):
            stuck.send({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
                        "params": {"name": "para_config_show", "arguments": {}}})
        time.sleep(2)  # (lets its pipes fill before the events)
        # Three events: with the old one-at-a-time sending, each waited SEND_TIMEOUT on `stuck`
        # before `live` got it; now the three arrive within one such wait, all told.
        start = time.monotonic()
        for k in range(3):
            live.buf = b""
            run_para("status", f"step {k}", cwd=repo / ".para" / "worktrees" / "m1")
            assert live.read_until(b"notifications/resources/updated", 3 * SEND_TIMEOUT), f"event {k} never came"
        assert time.monotonic() - start < 2 * SEND_TIMEOUT, "a stuck subscriber held up the others"
    finally:
        stuck.close()
        live.close()
