"""The MCP resources (sessions, one session, plans, config, the guide) and the `orchestrate` prompt."""

import json
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from pydantic import Field

from para_rpc.errors import Code, ParaError
from para_rpc.server.mcp.guide import GUIDE, PROMPT_STEPS
from para_rpc.server.mcp.hints import error_text

if TYPE_CHECKING:
    from para_rpc.server.mcp.frontend import McpFrontend


def register(fe: "McpFrontend") -> None:
    srv = fe.server

    # -- resources

    @srv.resource("para://sessions", name="sessions", title="Sessions", mime_type="application/json",
                  description="The live sessions of the client's repository with their state (para_list).")
    async def sessions_resource() -> str:
        return _json(await _resource_call(fe, "para/list"))

    @srv.resource("para://session/{name}", name="session", title="One session", mime_type="application/json",
                  description="One session: state, branch, worktree, commits and diffstat, what its agent "
                              "reported and whether it still runs, and the conflicts it is paused on.")
    async def session_resource(name: str) -> str:
        show = await _resource_call(fe, "para/show", session=name)
        status = await _resource_call(fe, "para/status", session=name)
        ev = status["sessions"][0] if status["sessions"] else {}
        rec = show.get("integration") or {}
        conflicts = None
        if show["status"] == "conflicted":
            conflicts = {"target": rec.get("target"), "kind": rec.get("kind"), "files": rec.get("files", []),
                         "hunks": rec.get("hunks", {}), "worktree": show["worktree"],
                         "next": f"the session's agent resolves these in {show['worktree']} and runs "
                                 f"`para continue`; if it has stopped, resolve them there and call "
                                 f"para_continue(session={name!r}), or para_abort to go back"}
        return _json({**show, "agent": ev.get("agent"), "report": ev.get("report"), "stale": ev.get("stale"),
                      "last_activity": ev.get("last_activity"), "conflicts": conflicts})

    @srv.resource("para://plans", name="plans", title="Plans", mime_type="application/json",
                  description="The plans of the client's repository (task files dispatched as steps): each step's "
                              "tasks with their session and state, and the plan's own state (para_plans).")
    async def plans_resource() -> str:
        return _json(await _resource_call(fe, "para/plans"))

    @srv.resource("para://config", name="config", title="Configuration", mime_type="application/json",
                  description="Effective configuration with the source of every value.")
    async def config_resource() -> str:
        return _json(await _resource_call(fe, "para/config", action="show"))

    @srv.resource("para://guide", name="guide", title="Orchestration guide", mime_type="text/markdown",
                  description="How to split a goal into task files, dispatch them and follow the agents.")
    def guide_resource() -> str:
        return GUIDE

    # -- prompt

    @srv.prompt("orchestrate", title="Orchestrate a goal with parallel agents",
                description="Break a goal into numbered task files in tasks/, dispatch them as a plan, follow "
                            "the sessions until everything has landed.")
    def orchestrate(goal: Annotated[str, Field(description="What should be built or changed.")]) -> str:
        return f"Goal: {goal}\n\n" + PROMPT_STEPS + "\n\n" + GUIDE


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


async def _resource_call(fe: "McpFrontend", method: str, **params: Any) -> Any:
    try:
        return await fe.call(method, None, **params)
    except ParaError as e:
        if e.code is Code.not_found:
            raise ResourceNotFoundError(error_text(e)) from None
        raise ResourceError(error_text(e)) from None
