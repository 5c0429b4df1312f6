"""The MCP resources (sessions, one session, plans, config, the guide) and the `orchestrate` prompt."""

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.mcpserver.resources.templates import ResourceSecurity
from pydantic import Field

from para_rpc.errors import Code, ParaError
from para_rpc.server.mcp.guide import GUIDE, PROMPT_STEPS
from para_rpc.server.mcp.hints import error_text

if TYPE_CHECKING:
    from para_rpc.server.mcp.frontend import McpFrontend


def register(fe: "McpFrontend") -> None:
    srv = fe.server

    # -- resources

    # Each repository resource is also a template with `?repo=<absolute path>`: a connection
    # without a default repository (HTTP) names it in the URI, as its tools take `repo`.
    any_repo = ResourceSecurity(exempt_params={"repo"})

    async def sessions(repo: str | None = None) -> str:
        return _json(await _resource_call(fe, "para/list", repo))

    async def session(name: str, repo: str | None = None) -> str:
        show = await _resource_call(fe, "para/show", repo, session=name)
        status = await _resource_call(fe, "para/status", repo, session=name)
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

    async def plans(repo: str | None = None) -> str:
        return _json(await _resource_call(fe, "para/plans", repo))

    async def config(repo: str | None = None) -> str:
        return _json(await _resource_call(fe, "para/config", repo, action="show"))

    described: list[tuple[str, str, Callable[..., Awaitable[str]], str]] = [
        ("sessions", "Sessions", sessions, "The live sessions of the client's repository with their state (para_list)."),
        ("session/{name}", "One session", session, ("One session: state, branch, worktree, commits and diffstat, "
         "what its agent reported and whether it still runs, and the conflicts it is paused on.")),
        ("plans", "Plans", plans, ("The plans of the client's repository (task files dispatched as steps): each "
         "step's tasks with their session and state, and the plan's own state (para_plans).")),
        ("config", "Configuration", config, "Effective configuration with the source of every value."),
    ]
    for path, title, fn, text in described:
        name = path.split("/")[0]
        # (the `?repo` template first: it must win over the plain template for `session/x?repo=`)
        srv.resource(f"para://{path}{{?repo}}", name=f"{name}-in-repo", title=f"{title} (of a repository)",
                     mime_type="application/json", security=any_repo,
                     description=f"{text} `?repo=<absolute path>` names the repository (needed over HTTP).")(fn)
        srv.resource(f"para://{path}", name=name, title=title, mime_type="application/json",
                     description=text)(_default_repo(fn, named="{" in path))

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


def _default_repo(fn: Callable[..., Awaitable[str]], named: bool) -> Callable[..., Awaitable[str]]:
    """`fn` without its `repo` parameter (the SDK wants a handler's parameters to be exactly its
    URI's variables): the connection's default repository."""
    if named:
        async def read_named(name: str) -> str:
            return await fn(name)
        return read_named

    async def read() -> str:
        return await fn()
    return read


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


async def _resource_call(fe: "McpFrontend", method: str, repo: str | None, **params: Any) -> Any:
    try:
        return await fe.call(method, repo, **params)
    except ParaError as e:
        if e.code is Code.not_found:
            raise ResourceNotFoundError(error_text(e)) from None
        raise ResourceError(error_text(e)) from None
