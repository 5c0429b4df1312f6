"""Every method's result is declared once (para_rpc/results.py, the table in methods.py),
and what the real sidecar answers is exactly that.

A lifecycle through the real sidecar calls every `para/...` method in the states that give
its result its different shapes (a clean and a conflicting integration, a dry run, a
continue and an abort, a single, a plan and a batch dispatch, every config action, every
trust action, ...) and decodes each answer strictly (`forbid_unknown_fields`) into the
Struct the method table declares: a key the code returns but the declaration lacks, a
declared key the code stopped returning, or a type that changed fails here. Every method
of the table must have been exercised. The MCP tools' output schemas are the JSON schemas
of the same Structs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import Sidecar, commit_file, git, make_repo
from para_rpc import methods, results
from para_rpc.client import Connection
from para_rpc.errors import Code, ParaError

NOOP = {"PARA_AGENTS": json.dumps({"noop": {"command": ["true"]}})}


class Recorder:
    def __init__(self, conn: Connection, repo: Path) -> None:
        self.conn, self.repo = conn, repo
        self.seen: dict[str, list[tuple[dict[str, Any], Any]]] = {}

    def __call__(self, method: str, **params: Any) -> Any:
        params.setdefault("cwd", str(self.repo))
        if method == "para/hello":
            params.pop("cwd")
        result = self.conn.request(method, params)
        self.seen.setdefault(method, []).append((params, result))
        return result

    def error(self, method: str, **params: Any) -> ParaError:
        params.setdefault("cwd", str(self.repo))
        with pytest.raises(ParaError) as info:
            self.conn.request(method, params)
        return info.value


def lifecycle(call: Recorder, repo: Path, tmp: Path) -> None:
    call("para/hello", client="test", protocol=1)
    for action in ("show", "path"):
        call("para/config", action=action)
    call("para/config", action="get", key="base_branch")
    call("para/config", action="set", key="finish.squash", value="true", scope="user")
    call("para/trust", action="show")
    (repo / ".para").mkdir(exist_ok=True)
    (repo / ".para" / "config.json").write_text(json.dumps({"integrate": {"check": ["true"]}}))
    shown = call("para/trust", action="show")
    call("para/trust", action="approve", sha256=shown["sha256"])
    call("para/trust", action="revoke")
    (repo / ".para" / "config.json").unlink()

    a = call("para/start", name="alpha")
    b = call("para/start", name="beta")
    g = call("para/start", name="gamma")
    Path(g["worktree"], "gamma.txt").write_text("gamma\n")
    call("para/start", name="delta")
    call("para/list")
    call("para/list", all=True)
    for wt, text in ((a["worktree"], "alpha\n"), (b["worktree"], "beta\n")):
        Path(wt, "shared.txt").write_text(text)
    call("para/show", session="alpha")
    call("para/diff", session="alpha")
    call("para/diff", session="alpha", stat_only=True)
    call("para/report", session="alpha", task="writing shared.txt", tests="passed", todos="1/2")
    call("para/status", all=True)
    call("para/status", session="alpha")
    first = call("para/events", after=0, limit=1)
    call("para/wait", sessions=["alpha"], timeout=0)
    call("para/wait", sessions=["alpha"], timeout=0, after_event=first["events"][0]["id"])
    call("para/conflicts")
    call("para/integrate", session="alpha", message="alpha", dry_run=True)
    call("para/integrate", session="alpha", message="alpha")
    call("para/integrate", session="beta", message="beta", dry_run=True)
    err = call.error("para/integrate", session="beta", message="beta")
    assert err.code is Code.conflict, err
    call("para/abort", session="beta")
    call.error("para/integrate", session="beta", message="beta")
    Path(b["worktree"], "shared.txt").write_text("alpha\nbeta\n")
    call("para/continue", session="beta")
    call("para/show", session="beta")
    call("para/list", all=True)

    call("para/finish", session="gamma", message="gamma for review")
    call("para/cancel", session="delta")
    call("para/recover", session="delta")
    call("para/resume", session="delta")
    call("para/cancel", session="delta", discard=True)
    # Para's leftovers: one session to adopt, one state file to leave (its branch is gone).
    git("branch", "para/from-para", cwd=repo)
    state = repo / ".para" / "state"
    state.mkdir()
    for name in ("from-para", "para-gone"):
        (state / f"{name}.state").write_text(json.dumps(
            {"name": name, "branch": f"para/{name}", "worktree_path": "/nowhere", "status": "Finished",
             "created_at": "2025-01-01T00:00:00Z"}))
    call("para/adopt")
    call("para/clean", dry_run=True)
    call("para/clean")

    env = dict(NOOP)
    call("para/dispatch", name="solo", prompt="do one thing", agent="noop", mode="headless", env=env)
    call("para/send", session="solo", message="and one more")
    call("para/stop", session="solo")
    call("para/restart", session="solo", prompt="follow up", stop=True, env=env)
    call("para/messages", session="solo", all=True)
    call("para/messages", session="solo")
    call("para/open", session="solo", editor="code")
    call("para/open", session="solo")
    tasks = repo / "tasks"
    tasks.mkdir()
    (tasks / "TASK_1_one.md").write_text("step one\n")
    (tasks / "TASK_2_two.md").write_text("step two\n")
    call("para/dispatch", file="tasks", agent="noop", mode="headless", env=env)
    call("para/plans")
    call("para/executors")
    call("para/executors", check="local")
    call("para/dispatch", agent="noop", mode="headless", env=env,
         tasks=[{"name": "many-a", "prompt": "first"}, {"prompt": ""}, {"name": "many-b", "prompt": "second"}])
    call("para/events", after=0, limit=1000)


def _decode(method: str, params: dict[str, Any], result: Any) -> None:
    types = methods.METHODS[method].result_types()
    errors = []
    for t in types:
        try:
            msgspec.convert(result, t, strict=True)
            return
        except msgspec.ValidationError as e:
            errors.append(f"{t.__name__}: {e}")
    raise AssertionError(f"{method} {params}: the result fits none of its declared types:\n"
                         + "\n".join(errors) + f"\nresult: {json.dumps(result, default=str)[:3000]}")


def test_every_result_decodes_strictly_into_its_declared_struct(sidecar: Sidecar, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with sidecar.connect() as conn:
        call = Recorder(conn, repo)
        lifecycle(call, repo, tmp_path)
    missing = sorted(set(methods.METHODS) - set(call.seen))
    assert not missing, f"the lifecycle never called {missing}"
    failures = []
    for method, answers in call.seen.items():
        for params, result in answers:
            try:
                _decode(method, params, result)
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, "\n\n".join(failures)


def test_the_declarations_are_strict_and_every_method_has_one() -> None:
    for name, m in methods.METHODS.items():
        for t in (m.params, *m.result_types()):
            assert issubclass(t, msgspec.Struct), (name, t)
        for t in m.result_types():
            assert t.__struct_config__.forbid_unknown_fields, f"{name}: {t.__name__} accepts unknown keys"
    assert set(methods.SERVICE_METHODS) == set(methods.METHODS)


def test_a_wrong_result_is_refused() -> None:
    """The check above can fail: a result with a key the declaration lacks does not decode."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"session": "x", "report": None, "surprise": 1}, results.ReportResult, strict=True)


MCP_TOOL_METHOD = {"para_list": "para/list", "para_start": "para/start", "para_finish": "para/finish",
                   "para_integrate": "para/integrate", "para_continue": "para/continue", "para_abort": "para/abort",
                   "para_cancel": "para/cancel", "para_recover": "para/recover", "para_resume": "para/resume",
                   "para_status": "para/status", "para_wait": "para/wait", "para_conflicts": "para/conflicts",
                   "para_diff": "para/diff", "para_clean": "para/clean", "para_plans": "para/plans"}


@pytest.mark.anyio
async def test_mcp_output_schemas_are_the_declared_structs(sidecar: Sidecar, tmp_path: Path) -> None:
    """What MCP clients are promised (outputSchema, which the SDK's client validates every
    structured result against) is the JSON schema of the same Structs."""
    from mcp_util import mcp_client
    from para_rpc.server.mcp import McpDispatchOut, output_schema

    repo = make_repo(tmp_path / "repo")
    async with mcp_client(repo) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    for tool, method in MCP_TOOL_METHOD.items():
        assert tools[tool].output_schema == output_schema(*methods.METHODS[method].result_types()), tool
    assert tools["para_config_show"].output_schema == output_schema(results.ConfigShow)
    assert tools["para_config_set"].output_schema == output_schema(results.ConfigSet)
    assert tools["para_dispatch"].output_schema == output_schema(McpDispatchOut)
    assert tools["para_list"].output_schema["additionalProperties"] is False


def test_a_session_sends_its_integration_record_as_stored(sidecar: Sidecar, tmp_path: Path) -> None:
    """Every method that returns a session builds the one declared shape (results.SessionDetail):
    list and show send the integration record exactly as status sends the stored object, key
    order included, while it is paused on conflicts and after it landed with a check."""
    repo = make_repo(tmp_path / "repo")
    check = {"PARA_INTEGRATE_CHECK": f"{sys.executable} -c pass"}

    def sent(conn: Connection, name: str) -> list[str]:
        def req(method: str, **params: Any) -> Any:
            return conn.request(method, {"cwd": str(repo), **params})
        listed = next(x for x in req("para/list", all=True)["sessions"] if x["name"] == name)
        return [json.dumps(req("para/show", session=name)["integration"]), json.dumps(listed["integration"]),
                json.dumps(req("para/status", session=name)["sessions"][0]["integration"])]

    with sidecar.connect() as conn:
        a = conn.request("para/start", {"cwd": str(repo), "name": "alpha"})
        b = conn.request("para/start", {"cwd": str(repo), "name": "beta"})
        Path(a["worktree"], "shared.txt").write_text("alpha\n")
        Path(b["worktree"], "shared.txt").write_text("beta\n")
        conn.request("para/integrate", {"cwd": str(repo), "session": "alpha", "message": "alpha", "env": check})
        with pytest.raises(ParaError) as info:
            conn.request("para/integrate", {"cwd": str(repo), "session": "beta", "message": "beta"})
        assert info.value.code is Code.conflict
        paused = sent(conn, "beta")
        Path(b["worktree"], "shared.txt").write_text("alpha\nbeta\n")
        conn.request("para/continue", {"cwd": str(repo), "session": "beta", "env": check})
        landed = [sent(conn, "alpha"), sent(conn, "beta")]
    for shown, listed, stored in (paused, *landed):
        assert shown == listed == stored
    assert list(json.loads(paused[0]))[-3:] == ["kind", "files", "hunks"], paused[0]
    assert "check" in json.loads(landed[0][0]) and "check" in json.loads(landed[1][0]), landed


def test_a_service_method_that_returns_a_struct_returns_its_declared_one() -> None:
    """The service methods moving from plain dicts to their result Structs (invoke encodes
    them) return the very type the method table declares; the read path `list` already does."""
    import typing

    from para_rpc.service import Service

    structs = {}
    for name, m in methods.METHODS.items():
        returned = typing.get_type_hints(getattr(Service, m.attr))["return"]
        if returned != dict[str, Any]:
            structs[name] = returned
            assert returned in m.result_types(), f"{name}: returns {returned}, declares {m.result_types()}"
    assert structs["para/list"] is results.ListResult
