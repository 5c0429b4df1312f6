"""Helpers for the MCP tests: a real `mcp.Client` talking to a real `para mcp` process."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from conftest import PARA_ARGV, commit_file

TOOLS = {"para_dispatch", "para_integrate", "para_list", "para_start", "para_finish", "para_cancel",
         "para_recover", "para_resume", "para_status", "para_continue", "para_abort", "para_conflicts",
         "para_diff", "para_config_show", "para_wait", "para_stop", "para_restart", "para_send", "para_open",
         "para_config_set", "para_clean", "para_plans"}


def bridge_params(cwd: str | Path, env: dict[str, str] | None = None) -> StdioServerParameters:
    """`para mcp` as an MCP client launches it (the client's environment passed through)."""
    return StdioServerParameters(command=PARA_ARGV[0], args=[*PARA_ARGV[1:], "mcp"],
                                 env={**os.environ, **(env or {})}, cwd=str(cwd))


@asynccontextmanager
async def mcp_client(cwd: str | Path, env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    async with Client(bridge_params(cwd, env)) as client:
        yield client


async def call(client: Client, tool: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    """Call a tool that must succeed; return its structured content."""
    r = await client.call_tool(tool, args or {}, **kw)
    text = r.content[0].text if r.content else ""
    assert not r.is_error, f"{tool}({args}) failed: {text}"
    assert r.structured_content is not None, f"{tool} returned no structured content"
    return r.structured_content


async def call_error(client: Client, tool: str, args: dict[str, Any] | None = None) -> str:
    """Call a tool that must fail; return the error text the agent reads."""
    r = await client.call_tool(tool, args or {})
    text = "\n".join(c.text for c in r.content if hasattr(c, "text"))
    assert r.is_error, f"{tool}({args}) should have failed, got {r.structured_content}"
    return text


async def wait_for_states(client: Client, want: dict[str, Any], timeout: float = 90.0,
                          cursor: int | None = None) -> tuple[dict[str, Any], int]:
    """para_wait until every named session satisfies its predicate (a status string or a
    callable on the session's wait entry); returns (sessions, last_event)."""
    names = sorted(want)
    deadline = time.monotonic() + timeout
    while True:
        args: dict[str, Any] = {"sessions": names, "timeout": 20}
        if cursor is not None:
            args["after_event"] = cursor
        r = await call(client, "para_wait", args)
        cursor = r["last_event"]
        ok = all((pred(r["sessions"].get(n)) if callable(pred) else (r["sessions"].get(n) or {}).get("status") == pred)
                 for n, pred in want.items())
        if ok:
            return r["sessions"], cursor
        assert time.monotonic() < deadline, f"timed out waiting for {want}; last: {r['sessions']}"


def task_file(repo: Path, name: str, text: str, commit: bool = True) -> Path:
    path = repo / "tasks" / name
    if commit:
        commit_file(repo, f"tasks/{name}", text, f"task {name}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path
