"""The executor seam (issue 16 point 1): every agent, sandboxed or not, runs under the detached
runner of its executor (`local` here) and reaches the sidecar only on its session's bound
socket. Driven through the real CLI, the real sidecar and the scripted agent: an unsandboxed
agent's socket refuses everything beyond its session and changes nothing, forces its session
and cwd, goes when the session ends (a late `para status` fails cleanly, fast), and after a
sidecar crash the agent's own `para` brings the sidecar (and its socket) back.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from para_rpc import executors
from para_rpc.client import Connection
from para_rpc.errors import Code, ParaError
from para_rpc.executors import local
from para_rpc.model import AgentRun, Session

from agents_util import Api, agent_env, agent_scripts, api, out, wait_file  # noqa: F401  (fixtures)
from conftest import full_state, proc_environ, run_para, sidecar_pids
from test_sandbox import REFUSED


def _waiting(repo: Path, out: Path, name: str) -> dict[str, Any]:
    """An unsandboxed scripted agent that waits for `<out>/go-<name>`: its session as dispatched."""
    task = f"Wait.\n\n```agent\nwait-for {out}/go-{name}\n```\n\nDo not run any para commands.\n"
    proc = run_para("dispatch", name, "-p", task, "--agent", "scripted", "--mode", "headless", "--json", cwd=repo)
    return json.loads(proc.stdout)


def _agent_env(detail: dict[str, Any]) -> dict[str, str]:
    env = proc_environ(detail["agent"]["pid"])
    return {k: env[k] for k in ("PARA_SOCKET", "PARA_TOKEN", "PARA_SIDECAR_SOCKET", "PARA_SESSION") if k in env}


def _bound(env: dict[str, str]) -> Connection:
    conn = Connection.open(env["PARA_SOCKET"], timeout=30)
    conn.request("para/hello", {"client": "test", "token": env["PARA_TOKEN"]})
    return conn


def test_an_unsandboxed_agent_gets_its_bound_socket_which_refuses_everything_else(
        api: Api, repo: Path, sidecar: Any, out: Path) -> None:
    run_para("start", "bystander", cwd=repo)
    detail = _waiting(repo, out, "free")
    env = _agent_env(detail)
    # Its own socket and token, not the sidecar's socket (which it is told only to start it).
    assert env["PARA_SOCKET"] != str(sidecar.socket) and env["PARA_SOCKET"] == detail["agent"]["channel"]
    assert Path(env["PARA_SOCKET"]).parent.parent == Path(sidecar.socket).parent / "bound"
    assert oct(os.stat(env["PARA_SOCKET"]).st_mode & 0o777) == oct(0o600)
    assert env["PARA_SIDECAR_SOCKET"] == str(sidecar.socket) and len(env["PARA_TOKEN"]) >= 32
    assert api.call("para/show", session="free")["agent"]["executor"] == "local"
    before = full_state(repo)
    with _bound(env) as conn:
        for method, params in REFUSED:
            with pytest.raises(ParaError) as err:
                conn.request(method, {"cwd": str(repo), **params})
            assert err.value.code is Code.forbidden, (method, err.value.message)
        # Another session's name and a cwd outside the repository: still about its own session.
        assert conn.request("para/show", {"cwd": "/", "session": "bystander"})["name"] == "free"
        conn.request("para/report", {"cwd": "/nonexistent", "session": "bystander", "task": "bound report"})
    assert full_state(repo) == {**before, "sessions": full_state(repo)["sessions"]}
    assert api.evidence("free")["report"]["task"] == "bound report"
    assert (api.evidence("bystander") or {}).get("report") is None
    assert not Path("/tmp/pwned").exists()
    # The real CLI with the agent's environment: the same answers.
    cli_env = {**env, "PARA_SESSION": "free"}
    assert run_para("cancel", "bystander", cwd=repo, env=cli_env, check=False).returncode == Code.forbidden.exit
    assert run_para("config", "set", "agent.stale_after", "5", cwd=repo, env=cli_env,
                    check=False).returncode == Code.forbidden.exit
    assert "bystander" in api.sessions()


def test_the_socket_goes_with_the_session_and_a_late_call_fails_cleanly(
        api: Api, repo: Path, sidecar: Any, out: Path, runtime_dir: Path) -> None:
    detail = _waiting(repo, out, "brief")
    env = _agent_env(detail)
    run_para("cancel", "brief", cwd=repo)
    assert not Path(env["PARA_SOCKET"]).parent.exists()
    pids = sidecar_pids(runtime_dir)
    # Said at once: with an hour's start timeout, waiting for it would hit the CLI's timeout.
    late = run_para("status", "--json", cwd=repo, env={**env, "PARA_SESSION": "brief", "PARA_START_TIMEOUT": "3600"},
                    check=False)
    err = json.loads(late.stdout)["error"]
    assert late.returncode == Code.sidecar_unavailable.exit and "session has ended" in err["message"], err
    assert sidecar_pids(runtime_dir) == pids  # the sidecar it tried to start found the running one and left


def test_after_a_crash_the_agents_para_starts_the_sidecar_and_its_socket_again(
        api: Api, repo: Path, sidecar: Any, out: Path, runtime_dir: Path) -> None:
    task = (f"Report after a crash.\n\n```agent\nwait-for {out}/go\nstatus after the crash\n"
            f"run touch {out}/reported\n```\n\nDo not run any para commands.\n")
    detail = json.loads(run_para("dispatch", "phoenix", "-p", task, "--agent", "scripted", "--mode",
                                 "headless", "--json", cwd=repo).stdout)
    env = _agent_env(detail)
    os.kill(sidecar.pid, 9)
    sidecar.proc.wait(timeout=30)
    (out / "go").touch()
    wait_file(out / "reported", 90)
    assert api.evidence("phoenix")["report"]["task"] == "after the crash"
    with _bound(env) as conn:
        assert conn.request("para/show", {"cwd": "/"})["name"] == "phoenix"
    (new,) = sidecar_pids(runtime_dir)
    assert "PARA_TOKEN" not in proc_environ(new) and "PARA_AGENT_RUN" not in proc_environ(new)
    assert proc_environ(new).get("PARA_SOCKET", str(sidecar.socket)) == str(sidecar.socket)


def test_runs_recorded_before_executors_read_as_local(repo: Path, sidecar: Any, api: Api, out: Path) -> None:
    """Store migration: an AgentRun row written before `executor` existed is a local run."""
    _waiting(repo, out, "old")
    run_para("sidecar", "stop", cwd=repo)
    db = repo / ".para" / "para.db"
    with sqlite3.connect(db) as c:
        (row,) = c.execute("select doc from sessions where name = 'old'").fetchall()
        data = json.loads(row[0])
        assert data["agent"].pop("executor") == "local"
        c.execute("update sessions set doc = ? where name = 'old'", (json.dumps(data).encode(),))
    s = msgspec.json.decode(json.dumps(data).encode(), type=Session)
    assert s.agent is not None and s.agent.executor == "local"
    (out / "go-old").touch()
    run_para("show", "old", "--json", cwd=repo)  # (starts a sidecar, which reads the old row)
    assert api.wait_agent("old")["agent"]["state"] == "exited"
    assert api.call("para/show", session="old")["agent"]["executor"] == "local"


def test_the_local_executor_reads_logs_by_offset_and_polls_the_exit_file(tmp_path: Path) -> None:
    log, exit_file = tmp_path / "a.log", tmp_path / "a.exit"
    log.write_bytes(b"0123456789")
    run = AgentRun(profile="p", mode="headless", argv=["x"], log=str(log), exit_file=str(exit_file),
                   pid=os.getpid())
    ex = executors.get("local")
    assert ex is local.LOCAL
    assert asyncio.run(ex.logs(run, 4, 3)) == b"456"
    assert asyncio.run(ex.logs(run, 100)) == b""
    assert asyncio.run(ex.poll(run)).state == "alive"
    exit_file.write_text(json.dumps({"exit_code": 3, "ended_at": 5.0}))
    assert asyncio.run(ex.poll(run)) == executors.RunState(state="exited", exit_code=3, ended_at=5.0)
    with pytest.raises(ParaError) as err:
        executors.get("nowhere")
    assert err.value.code is Code.config_error
