"""The MCP transport: the sidecar's Service, served to AI clients (official `mcp` SDK).

One `MCPServer` holds the tools, resources and prompt; every MCP connection
(the unix socket `<socket>.mcp` that `para mcp` pumps stdio into, or the
optional streamable HTTP endpoint) is served by it against the one `Service`
the JSON-RPC connections use, so every front end sees the same state and
events. Tools are thin: arguments (validated by pydantic from the signature)
become the msgspec params of `params.py`, the operation runs shielded from
request cancellation, the result goes back as structured output (`outputSchema` is the
JSON schema of its Struct in results.py), and a `ParaError` becomes a
`ToolError` whose text starts with the error's code name and says what to do.

The bridge sends one preamble line before the MCP byte stream:
`{"para_mcp": 1, "cwd": ..., "env": {...}}`; `cwd` is the default repository
of tools called without `repo`, `env` the client's PARA_* overrides.

This module is the only user of the SDK's private `_lowlevel_server` (serving a
connection over explicit streams has no public API in mcp 2.3; pinned <2.4).
"""

import asyncio
import contextlib
import contextvars
import functools
import hmac
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from para_rpc import __version__, results
from para_rpc.errors import Code, ParaError
from para_rpc.model import Plan
from para_rpc.service import Service
from para_rpc.service.invoke import invoke

log = logging.getLogger("para.mcp")

MAX_LINE = 64 * 1024 * 1024   # one MCP message (a 1 MB task is fine; a runaway peer is not)
WAIT_PROGRESS_SECONDS = 1.0


# ---- the orchestration guide (the one copy: para://guide and the tool descriptions) ----

GUIDE_INTRO = """\
Para runs every task as a session: its own branch (para/<name>), its own git worktree and its
own agent process. You orchestrate: split the goal, write the tasks, dispatch them, follow what
happens. The agents do the work and land it on the base branch themselves."""

GUIDE_SECTIONS: dict[str, str] = {
    "split": """\
Split by independent areas. One task per part of the code that can change without touching the
others (a module, a service, a page, the docs). Two tasks editing the same file will collide, so
give each task clear file or directory boundaries. Foundations come first and in sequence (an
interface, a schema, a shared helper); what only builds on them runs in parallel afterwards.""",
    "tasks": """\
Write tasks as files tasks/TASK_<n>_<slug>.md (tasks/TASK_1_schema.md, tasks/TASK_2_api.md,
tasks/TASK_2_ui.md). The number is the step: tasks with the same number run in parallel, step
n+1 starts once every task of step n has landed; the slug becomes the session name. A task says
WHAT to achieve and how to tell it is done (behaviour, tests), not HOW to write the code; it
names the files or areas it owns and those it must leave alone; it stays small. It ends with
the workflow line
    When done: para integrate "<one-line summary>"
(or para finish "<summary>" to keep the branch for review instead of landing it).""",
    "dispatch": """\
Dispatch with para_dispatch: file="tasks" runs the whole directory as a plan (steps in order,
the tasks of a step in parallel); files=[...] runs a chosen set as a plan; task="..." (inline)
or file="tasks/TASK_1_x.md" runs one task; tasks=[{...}, ...] runs several independent tasks at
once. Every agent reports progress with `para status` and lands its own work with
`para integrate`; you do not integrate for it.""",
    "follow": """\
Follow, don't poll. para_wait blocks until one of the named sessions changes state (dispatched,
queued, integrated, conflicted, agent exited, ...) or the timeout passes; give the last_event it
returns back as after_event on the next call and no change is missed in between. para_status
gives the evidence per session (agent state, its last report, commits ahead, diffstat), the
resource para://session/<name> everything about one session. Keep working with the user while
agents run.""",
    "conflicts": """\
Conflicts pause only the session that collides: the markers are left in its own worktree, the
target branch does not move, other sessions keep landing. The session's own agent normally
resolves them there and runs `para continue` itself. If its agent has stopped, resolve the files
in that worktree (or have someone do it), then call para_continue; para_abort puts the session
back to its pre-integration commit. para_conflicts forecasts collisions before anything lands.""",
}
_TITLES = {"split": "Split the goal", "tasks": "Write task files", "dispatch": "Dispatch",
           "follow": "Follow the work", "conflicts": "Conflicts"}
GUIDE = "# Orchestrating parallel agents with para\n\n" + GUIDE_INTRO + "\n\n" + "\n\n".join(
    f"## {i}. {_TITLES[k]}\n\n{v}" for i, (k, v) in enumerate(GUIDE_SECTIONS.items(), 1)) + "\n"


def _describe(summary: str, *sections: str) -> str:
    return summary + "".join("\n\n" + GUIDE_SECTIONS[s] for s in sections)


# ---- per-connection facts -------------------------------------------------------

@dataclass
class Peer:
    """What the bridge told us about the MCP client on this connection."""

    cwd: str | None = None                 # default repository for tools without `repo`
    env: dict[str, str] = field(default_factory=dict)
    client: str = "unknown"


PEER: contextvars.ContextVar[Peer | None] = contextvars.ContextVar("para_mcp_peer", default=None)


# ---- structured results (what outputSchema promises) ---------------------------------
# The output schemas are the JSON schemas of the Structs in results.py (the same that declare
# the JSON-RPC results), plus the two shapes only MCP has: para_dispatch's summary and the
# `note` para_integrate adds. The SDK's client validates every structured result against them.

class McpFailedTask(results.Result, kw_only=True):
    task: str
    error: str    # `<code>: <message>`, as a tool error reads


class McpDispatchOut(results.Result, kw_only=True):
    sessions: list[results.SessionDetail]
    plan: Plan | None
    failed: list[McpFailedTask]
    next: str     # what to call next


def output_schema(*types: type) -> dict[str, Any]:
    """The outputSchema of a tool returning one of `types` (an object at the root, as MCP wants)."""
    refs, defs = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    if len(types) == 1:
        root = dict(defs.pop(types[0].__name__))
    else:
        root = {"type": "object", "anyOf": list(refs)}
    if defs:
        root["$defs"] = defs
    return root


class TaskSpec(BaseModel):
    """One task of a multi-task dispatch."""

    model_config = ConfigDict(extra="forbid")
    session: str | None = Field(None, description="Session name (default: from the task file name, else a friendly one).")
    task: str | None = Field(None, description="The task text, inline.")
    file: str | None = Field(None, description="A task file (relative to the repository or in its tasks/).")


# ---- argument types ------------------------------------------------------------------

Repo = Annotated[str | None, Field(description="Path of the git repository (or one of its worktrees). "
                                   "Default: the directory the MCP client was started in.")]
SessionReq = Annotated[str, Field(description="Session name (see para_list).")]
SessionOpt = Annotated[str | None, Field(description="Session name (default: the session whose worktree is the "
                                         "client's directory).")]

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def _ann(*, destructive: bool, idempotent: bool = False, open_world: bool = False) -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=False, destructive_hint=destructive, idempotent_hint=idempotent,
                           open_world_hint=open_world)


# ---- errors ------------------------------------------------------------------------------

_HINTS = {
    Code.not_found: "Call para_list (all=true for history) to see the sessions.",
    Code.not_a_repository: "Pass repo=<absolute path of a git working tree>.",
    Code.wrong_state: "para_status shows where the session is.",
    Code.dirty: "Commit, stash or move those changes, then retry.",
    Code.busy: "Another para sidecar serves this repository; stop it or use the same PARA_SOCKET.",
    Code.untrusted: "These commands come from the repository's .para/config.json and run only once the user "
                    "approved them. Do not try to approve them yourself: show the user the commands and ask them "
                    "to review and run `para trust` in the repository. Operations that do not need them keep "
                    "working.",
}


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    """The error's data without the bulky parts (hunks, check output)."""
    out = {}
    for k, v in data.items():
        if k in ("hunks",):
            continue
        if isinstance(v, str) and len(v) > 2000:
            v = v[-2000:]
        out[k] = v
    return out


def tool_error(e: ParaError) -> ToolError:
    """A ParaError as the text an agent reads: `<code>: <message>`, what to do, the data."""
    text = f"{e.code.name}: {e.message}"
    if e.code is Code.conflict:
        name, wt = e.data.get("session", "<session>"), e.data.get("worktree", "its worktree")
        text += (f"\nWhat to do: the agent of session {name!r} normally resolves the conflicts in its worktree "
                 f"({wt}) and runs `para continue` itself. If no agent is working there, edit the files "
                 f"listed above in that worktree (remove the conflict markers, keep what both sides need), "
                 f"then call para_continue(session={name!r}); para_abort(session={name!r}) gives the "
                 "integration up. The target branch has not moved.")
    elif e.code in _HINTS:
        text += "\nWhat to do: " + _HINTS[e.code]
    if e.data:
        text += "\n" + json.dumps(_compact(e.data), default=str)
    return ToolError(text)


# ---- the frontend: one per sidecar --------------------------------------------------------

class McpFrontend:
    """The MCP server of one sidecar, bound to its Service."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.bus = InMemorySubscriptionBus()
        self.server = MCPServer(
            "para", version=__version__, title="para",
            description="Parallel AI agents in git worktrees, coordinated by one sidecar.",
            instructions=GUIDE, subscriptions=self.bus)
        self._init_options = self.server._lowlevel_server.create_initialization_options()
        _register(self)

    # -- events from the Service (called on the loop by Service.emit)

    def notify(self, method: str, payload: dict[str, Any]) -> None:
        if method != "para/event":
            return
        uris = ["para://sessions"] + ([f"para://session/{payload['session']}"] if payload.get("session") else [])
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.create_task(self._publish(uris))

    async def _publish(self, uris: list[str]) -> None:
        for uri in uris:
            try:
                await self.bus.publish(ResourceUpdated(uri=uri))
            except Exception:  # a listener that went away must not break the emitter
                log.exception("resource update for %s failed", uri)

    # -- calling the service

    def cwd(self, repo: str | None) -> str:
        peer = PEER.get()
        if repo is not None:
            if not isinstance(repo, str) or not repo or "\0" in repo:
                raise ToolError("invalid_input: repo must be a path")
            path = os.path.expanduser(repo)
            if not os.path.isabs(path):
                if peer is None or not peer.cwd:
                    raise ToolError("invalid_input: repo must be an absolute path on this connection")
                path = os.path.join(peer.cwd, path)
            return os.path.normpath(path)
        if peer is None or not peer.cwd:
            raise ToolError("invalid_input: this connection has no default repository; pass repo=<absolute path>")
        return peer.cwd

    async def call(self, method: str, repo: str | None, **params: Any) -> Any:
        peer = PEER.get()
        data = {"cwd": self.cwd(repo), "env": dict(peer.env) if peer else {},
                **{k: v for k, v in params.items() if v is not None}}
        try:
            return await invoke(self.service, method, data)
        except ParaError as e:
            raise tool_error(e) from None

    async def repo_root(self, repo: str | None) -> str:
        try:
            return (await self.service.repo(self.cwd(repo))).root
        except ParaError as e:
            raise tool_error(e) from None

    # -- serving a connection

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readline()
        if not first:
            return
        peer, pushback = Peer(), None
        try:
            hello = json.loads(first)
        except ValueError:
            hello = None
        if isinstance(hello, dict) and hello.get("para_mcp"):
            cwd = hello.get("cwd")
            if isinstance(cwd, str) and os.path.isabs(cwd) and "\0" not in cwd:
                peer.cwd = cwd
            env = hello.get("env")
            if isinstance(env, dict):
                peer.env = {k: v for k, v in env.items()
                            if isinstance(k, str) and isinstance(v, str) and k.startswith("PARA_")}
            peer.client = str(hello.get("client", "para mcp"))[:100]
        else:
            pushback = first  # a client speaking MCP directly, without the bridge's preamble
        token = PEER.set(peer)
        try:
            async with stdio_server(stdin=_Lines(reader, pushback), stdout=_Out(writer)) as (rs, ws):
                await self.server._lowlevel_server.run(rs, ws, self._init_options)
        finally:
            PEER.reset(token)

    # -- streamable HTTP (optional, loopback, bearer token)

    def http_app(self, token: str, host: str) -> Any:
        return _BearerGate(self.server.streamable_http_app(host=host), token)


class _Lines:
    """The MCP byte stream from the socket as an async iterator of text lines."""

    def __init__(self, reader: asyncio.StreamReader, pushback: bytes | None) -> None:
        self.reader, self.pushback = reader, pushback

    def __aiter__(self) -> "_Lines":
        return self

    async def __anext__(self) -> str:
        if self.pushback is not None:
            line, self.pushback = self.pushback, None
        else:
            try:
                line = await self.reader.readline()
            except (ValueError, asyncio.LimitOverrunError, ConnectionError):
                log.warning("dropping an MCP connection: message over %d bytes or connection error", MAX_LINE)
                raise StopAsyncIteration from None
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _Out:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()


class _BearerGate:
    """ASGI wrapper: every HTTP request needs `Authorization: Bearer <token>`, else 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), b"")
            if not hmac.compare_digest(got, self.expected):
                body = b'{"error": "unauthorized: send Authorization: Bearer <token from the mcp-token file>"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b'Bearer realm="para"'),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class HttpServer:
    """uvicorn serving the MCP streamable HTTP app inside the sidecar's loop."""

    def __init__(self, frontend: McpFrontend, host: str, port: int, token: str) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # the sidecar owns SIGTERM/SIGINT
                yield

        self.sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        bound = self.sock.getsockname()
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{bound[1]}/mcp"
        config = uvicorn.Config(frontend.http_app(token, host), lifespan="on", log_level="warning",
                                access_log=False)
        self.server = Quiet(config)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)
        self.sock.close()


# ---- tools, resources, prompt --------------------------------------------------------------

def _register(fe: McpFrontend) -> None:
    srv = fe.server

    def tool(name: str, title: str, annotations: ToolAnnotations, description: str, *out: type):
        """Register `fn` as a tool whose structured result is one of `out` (Structs): the
        outputSchema is theirs, and the result goes out as the service built it."""
        def deco(fn):
            @functools.wraps(fn)
            async def structured(*args: Any, **kwargs: Any) -> CallToolResult:
                r = await fn(*args, **kwargs)
                return CallToolResult(content=[TextContent(type="text", text=_json(r))], structured_content=r)
            srv.add_tool(structured, name=name, title=title, description=description, annotations=annotations,
                         structured_output=False)
            srv._tool_manager.get_tool(name).fn_metadata.output_schema = output_schema(*out)
            return fn
        return deco

    # -- dispatch

    @tool("para_dispatch", "Dispatch tasks to agents", _ann(destructive=False, open_world=True), _describe(
        "PRIMARY TOOL. Start one session per task (branch + worktree) with an agent working on it. Give "
        "exactly one of: task (inline text), file (a task file, or a directory of TASK_<n>_<slug>.md files "
        "run as a plan), files (task files run as a plan), tasks (several independent tasks at once). "
        "The result lists the sessions started and, for a plan, its steps.",
        "split", "tasks", "dispatch", "follow", "conflicts"), McpDispatchOut)
    async def para_dispatch(
        session: Annotated[str | None, Field(description="Session name for a single task (default: from the task "
                                             "file name, else a friendly adjective_noun).")] = None,
        task: Annotated[str | None, Field(description="The task, inline. Say what to achieve and which files it "
                                          "owns; end with: When done: para integrate \"<summary>\".")] = None,
        file: Annotated[str | None, Field(description="A task file (relative paths are looked up in the repository "
                                          "and its tasks/ directory), or a directory of TASK_<n>_<slug>.md files "
                                          "to run as a plan, e.g. \"tasks\".")] = None,
        files: Annotated[list[str] | None, Field(description="Task files named TASK_<n>_<slug>.md to run as one "
                                                 "plan (same number = parallel).")] = None,
        tasks: Annotated[list[TaskSpec] | None, Field(description="Several independent tasks, each with task or "
                                                      "file and an optional session name; all start now.")] = None,
        agent: Annotated[str | None, Field(description="Launcher profile: claude, codex, gemini, aider, opencode, "
                                           "scripted, or a configured one (default: config agent.default).")] = None,
        skip_permissions: Annotated[bool, Field(description="Let the agent act without asking for permission "
                                                "(its profile's flag, e.g. --dangerously-skip-permissions).")] = False,
        mode: Annotated[Literal["auto", "headless", "tmux", "editor"] | None,
                        Field(description="Where the agent runs (default: config agent.mode).")] = None,
        base: Annotated[str | None, Field(description="Branch to fork from (default: the base branch).")] = None,
        repo: Repo = None,
    ) -> dict[str, Any]:
        given = [n for n, v in (("task", task), ("file", file), ("files", files), ("tasks", tasks)) if v]
        if len(given) != 1:
            raise ToolError("invalid_input: give exactly one of task, file, files or tasks"
                            + (f" (got {', '.join(given)})" if given else ""))
        if files and session is not None:
            raise ToolError("invalid_input: a plan names its sessions after its task files; drop session")
        specs = [{"name": t.session, "prompt": t.task, "file": t.file} for t in tasks or []]
        r = await fe.call("para/dispatch", repo, name=session if not tasks else None, prompt=task, file=file,
                          files=files, tasks=specs or None, agent=agent, skip_permissions=skip_permissions,
                          mode=mode, base=base)
        out: dict[str, Any] = {"sessions": [], "plan": None, "failed": [], "next": ""}
        if "failed" in r:  # several tasks
            out["sessions"] = r["sessions"]
            out["failed"] = [{"task": f["task"], "error": f"{f['code']}: {f['error']}"} for f in r["failed"]]
        elif "plan" in r and "name" not in r:
            out["plan"] = r["plan"]
        else:
            out["sessions"].append(r)
        names = [s["name"] for s in out["sessions"]] or [
            t["name"] for t in (out["plan"] or {}).get("steps", [{}])[0].get("tasks", [])]
        out["next"] = (f"Call para_wait(sessions={names}) to follow them (pass last_event back as after_event); "
                       "the agents integrate their own work.")
        return out

    # -- session lifecycle

    @tool("para_list", "List sessions", READ,
          "Sessions of the repository with their state (active, dirty, review, integrating, conflicted, "
          "integrated, cancelled, missing) and branch, worktree and agent. For waiting on changes use para_wait, "
          "not repeated para_list calls.", results.ListResult)
    async def para_list(
        all: Annotated[bool, Field(description="Include integrated and cancelled sessions (history).")] = False,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await fe.call("para/list", repo, all=all)

    @tool("para_start", "Start a session without an agent", _ann(destructive=False),
          "Create a session (branch para/<name> and its worktree under .para/worktrees/) forked from the base "
          "branch, without an agent: for work you do yourself or with the user. To hand a task to an agent use "
          "para_dispatch.", results.SessionDetail)
    async def para_start(
        session: Annotated[str | None, Field(description="Session name (default: a friendly adjective_noun).")] = None,
        base: Annotated[str | None, Field(description="Branch to fork from.")] = None,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await fe.call("para/start", repo, name=session, base=base)

    @tool("para_finish", "Finish a session for review", _ann(destructive=True),
          "Commit everything in the session, squash it onto its fork point (configurable), remove the worktree "
          "and keep the branch for review. Nothing lands on the base branch; para_integrate does that.", results.SessionDetail)
    async def para_finish(
        message: Annotated[str, Field(description="Commit message.")],
        session: SessionOpt = None,
        branch: Annotated[str | None, Field(description="Rename the branch for review.")] = None,
        squash: Annotated[bool | None, Field(description="Squash into one commit (default: config finish.squash).")] = None,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await fe.call("para/finish", repo, session=session, message=message, branch=branch, squash=squash)

    @tool("para_integrate", "Land a session on its target", _ann(destructive=True), _describe(
        "Land the session's work (uncommitted changes are committed first) on its target branch (default: the "
        "branch it forked from), then remove its worktree and branch (a backup ref keeps the tip). Agents "
        "normally do this themselves with `para integrate`. dry_run=true predicts the result and changes "
        "nothing. On a conflict the result is an error naming the files.", "conflicts"), results.IntegrateResult, results.IntegrateDryRun)
    async def para_integrate(
        session: SessionOpt = None,
        message: Annotated[str | None, Field(description="Commit message (squash and merge strategies).")] = None,
        strategy: Annotated[Literal["squash", "merge", "rebase", "ff"] | None,
                            Field(description="How to land (default: config integrate.strategy).")] = None,
        target: Annotated[str | None, Field(description="Branch to land on (default: the session's base).")] = None,
        dry_run: Annotated[bool, Field(description="Only predict: clean or conflicting files.")] = False,
        repo: Repo = None,
    ) -> dict[str, Any]:
        out = await fe.call("para/integrate", repo, session=session, message=message, strategy=strategy,
                            target=target, dry_run=dry_run)
        if (out.get("integration") or {}).get("config_changed"):
            out["note"] = ("This integration changed .para/config.json; commands in it (integrate.check, agent "
                           "profiles) run only after the user approves them with `para trust`. Tell the user.")
        return out

    @tool("para_continue", "Complete a paused integration", _ann(destructive=True), _describe(
        "After the conflicts of a paused (conflicted) session have been resolved in its worktree, complete "
        "its integration: the resolution is committed and the session lands on its target. Conflicts without "
        "text markers (binary, deleted, renamed, submodule) count as resolved only once a choice is staged "
        "there (git add / git rm); force=true stages everything as it is.", "conflicts"), results.IntegrateResult)
    async def para_continue(
        session: SessionReq,
        force: Annotated[bool, Field(description="Stage everything as it is, even conflicts nobody resolved "
                                     "(marker-like lines left, binary/deleted/renamed paths not staged).")] = False,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await fe.call("para/continue", repo, session=session, force=force)

    @tool("para_abort", "Abort a paused integration", _ann(destructive=True),
          "Give up a paused integration: the session goes back exactly to its pre-integration commit and "
          "becomes active again (a resolution in progress is saved under refs/para/backup/).", results.SessionDetail)
    async def para_abort(session: SessionReq, repo: Repo = None) -> dict[str, Any]:
        return await fe.call("para/abort", repo, session=session)

    @tool("para_cancel", "Cancel a session", _ann(destructive=True),
          "Stop a session: its uncommitted work is committed onto its branch, the branch is archived under "
          "para/archived/, the worktree is removed. para_recover brings it back. Never cancel a session whose "
          "agent is still working unless the user asked for it.", results.SessionDetail)
    async def para_cancel(
        session: SessionReq,
        discard: Annotated[bool, Field(description="Do not commit uncommitted work (a backup ref still keeps a "
                                       "snapshot).")] = False,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await fe.call("para/cancel", repo, session=session, discard=discard)

    @tool("para_recover", "Recover a cancelled session", _ann(destructive=False),
          "Bring a cancelled session back: its archived branch becomes para/<name> again with a fresh worktree.", results.SessionDetail)
    async def para_recover(session: SessionReq, repo: Repo = None) -> dict[str, Any]:
        return await fe.call("para/recover", repo, session=session)

    @tool("para_resume", "Resume a session", _ann(destructive=False, idempotent=True),
          "Make sure the session's worktree exists (recreating it from the branch if it was deleted) and "
          "return its path.", results.SessionDetail)
    async def para_resume(session: SessionReq, repo: Repo = None) -> dict[str, Any]:
        return await fe.call("para/resume", repo, session=session)

    # -- observing

    @tool("para_status", "Evidence per session", READ, _describe(
        "What each session's agent last reported (`para status`: task, tests, todos, blocked) next to what "
        "the sidecar sees itself: agent process state and exit code, commits ahead, diffstat, last activity, "
        "stale flag, and the running plans.", "follow"), results.StatusResult)
    async def para_status(
        session: Annotated[str | None, Field(description="One session (default: all live sessions).")] = None,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await fe.call("para/status", repo, session=session, all=session is None)

    @tool("para_wait", "Wait for a session to change", READ, _describe(
        "Block until one of the named sessions (all live ones if none named) changes state, or timeout "
        "seconds pass. Reports progress while waiting. Returns which sessions changed, their status, the "
        "events seen and last_event.", "follow"), results.WaitResult)
    async def para_wait(
        ctx: Context,
        sessions: Annotated[list[str], Field(description="Session names to watch (default: every live session).")] = [],  # noqa: B006
        timeout: Annotated[float, Field(description="Seconds to wait at most (0-3600).", ge=0, le=3600)] = 60.0,
        after_event: Annotated[int | None, Field(description="The last_event of your previous para_wait: changes "
                                                 "since then count too, so nothing is missed.", ge=0, le=2**63 - 1)] = None,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await _wait(fe, ctx, sessions, timeout, after_event, repo)

    @tool("para_conflicts", "Forecast conflicts", READ, _describe(
        "Forecast collisions before anything lands: every active session (uncommitted work included) against "
        "its target and against each other session, with the files and line ranges.", "conflicts"), results.ConflictsResult)
    async def para_conflicts(
        target: Annotated[str | None, Field(description="Forecast against this branch instead of each session's "
                                            "base.")] = None,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await fe.call("para/conflicts", repo, target=target)

    @tool("para_diff", "Show a session's changes", READ,
          "The session's changes against its fork point (uncommitted work included): a diffstat and the patch "
          "(truncated at max_bytes).", results.DiffResult)
    async def para_diff(
        session: SessionReq,
        stat_only: Annotated[bool, Field(description="Only the diffstat.")] = False,
        max_bytes: Annotated[int, Field(description="Truncate the patch after this many bytes.", ge=1000,
                                        le=5_000_000)] = 200_000,
        repo: Repo = None,
    ) -> dict[str, Any]:
        return await fe.call("para/diff", repo, session=session, stat_only=stat_only, max_bytes=max_bytes)

    @tool("para_config_show", "Show configuration", READ,
          "Every configuration key with its effective value and where it came from (default, user file, "
          "project file .para/config.json, PARA_* environment), the file paths and what each key means.", results.ConfigShow)
    async def para_config_show(repo: Repo = None) -> dict[str, Any]:
        return await fe.call("para/config", repo, action="show")

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
        return (f"Goal: {goal}\n\n"
                "Orchestrate this goal with para's tools, following the guide below.\n"
                "1. Read the code enough to know its areas. Plan the steps: foundations first, then the parts "
                "that can run in parallel, each owning its own files.\n"
                "2. Write one file per task as tasks/TASK_<n>_<slug>.md (same n = parallel). Each states what "
                "to achieve, the files it owns, how to verify it, and ends with "
                "`When done: para integrate \"<summary>\"`.\n"
                "3. Show the plan to the user, then call para_dispatch(file=\"tasks\").\n"
                "4. Follow with para_wait (pass last_event back as after_event) and para_status; read "
                "para://session/<name> when a session conflicts or its agent stops, and help it (resolve in its "
                "worktree, then para_continue).\n"
                "5. When everything has integrated, summarize what landed.\n\n" + GUIDE)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


async def _resource_call(fe: McpFrontend, method: str, **params: Any) -> Any:
    try:
        return await fe.call(method, None, **params)
    except ToolError as e:
        text = str(e)
        if text.startswith("not_found:"):
            raise ResourceNotFoundError(text) from None
        raise ResourceError(text) from None


async def _wait(fe: McpFrontend, ctx: Context, sessions: list[str], timeout: float, after_event: int | None,
                repo: str | None) -> dict[str, Any]:
    """One `para/wait`; while it blocks, MCP progress notifications say it is still waiting."""
    what = f"waiting for {', '.join(sessions) or 'any session'}"
    await ctx.report_progress(0, timeout, what)
    call = asyncio.ensure_future(fe.call("para/wait", repo, sessions=sessions, timeout=timeout,
                                         after_event=after_event))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        while not call.done():
            done, _ = await asyncio.wait({call}, timeout=WAIT_PROGRESS_SECONDS)
            if not done:
                await ctx.report_progress(min(timeout, loop.time() - started), timeout, what)
        out = call.result()
    finally:
        call.cancel()
    changed = out["changed"]
    await ctx.report_progress(timeout, timeout, "changed: " + ", ".join(changed) if changed else "timed out")
    return out
