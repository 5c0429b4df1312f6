"""The service's outside goes in through its constructor (service/ports.py), and each
transport names the service's domain events itself.

In process: a `Service` built with its own ports publishes typed `DomainEvent`s (stored
first, with their ids) and asks `run_in_editor` to run an agent in editor mode, with no
transport at all. Through the real sidecar: one domain event reaches a JSON-RPC subscriber
as `para/event` (the event) and `para/sessionsChanged`. And the LSP `initialize` answer
advertises no text document sync (para is not a language server).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Sidecar, raw_request
from para_rpc.model import Binding, DomainEvent
from para_rpc.service import Service
from para_rpc.service.invoke import invoke
from para_rpc.service.ports import Ports

NOOP = {"PARA_AGENTS": json.dumps({"noop": {"command": ["true"]}})}


async def test_events_and_editor_requests_go_through_the_ports(repo: Path, tmp_path: Path) -> None:
    published: list[DomainEvent] = []
    asked: list[tuple[dict[str, Any], float]] = []

    async def run_in_editor(request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        asked.append((request, timeout))
        return {"ok": True, "pid": None}  # an editor's terminal runs it

    bound: list[str] = []

    async def bind_channel(binding: Binding) -> None:  # every agent gets its session-bound socket
        bound.append(binding.session)

    service = Service(Ports(publish=published.append, editor_available=lambda: True, run_in_editor=run_in_editor,
                            bind_channel=bind_channel), socket=str(tmp_path / "run" / "sidecar.sock"))
    try:
        started = await invoke(service, "para/start", {"cwd": str(repo), "name": "p1"})
        assert [(e.kind, e.session, e.repo) for e in published] == [("started", "p1", str(repo))]
        stored = await invoke(service, "para/events", {"cwd": str(repo)})
        assert stored["events"][-1]["id"] == published[0].id and published[0].data == stored["events"][-1]["data"]

        out = await invoke(service, "para/dispatch", {"cwd": str(repo), "name": "p2", "prompt": "x", "agent": "noop",
                                                       "mode": "auto", "env": NOOP})
        assert len(asked) == 1 and asked[0][0]["session"] == "p2" and asked[0][0]["worktree"] == out["worktree"]
        assert out["agent"]["mode"] == "editor" and "true" in asked[0][0]["argv"]
        assert bound == ["p2"] and asked[0][0]["env"]["PARA_TOKEN"]
        assert asked[0][0]["env"]["PARA_SOCKET"].startswith(str(tmp_path / "run" / "bound"))
        assert started["name"] == "p1"
    finally:
        service.close()


def test_a_domain_event_is_named_by_the_json_rpc_transport(sidecar: Sidecar, svc, repo: Path) -> None:
    with sidecar.connect() as conn:
        conn.request("para/subscribe", {"events": True})
        svc("start", name="seen")
        got: dict[str, Any] = {}
        while len(got) < 2:
            msg = conn.read()
            got.setdefault(msg.get("method"), msg.get("params"))
    event, changed = got["para/event"], got["para/sessionsChanged"]
    assert event["kind"] == "started" and event["session"] == "seen" and event["repo"] == str(repo)
    assert set(event) == {"repo", "id", "ts", "session", "kind", "data"}
    assert changed == {"repo": str(repo), "sessions": ["seen"], "kind": "started"}


def test_initialize_advertises_no_text_document_sync(sidecar: Sidecar) -> None:
    with sidecar.connect() as conn:
        init = raw_request(conn, "initialize", {"processId": None, "rootUri": None, "capabilities": {}}, 1)
    caps = init["result"]["capabilities"]
    assert "textDocumentSync" not in caps, caps
    assert caps["executeCommandProvider"]["commands"]
