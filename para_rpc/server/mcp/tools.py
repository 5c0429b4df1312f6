"""The MCP tools, declared at module level: each is one call of its service method.

`@tool(...)` adds a function to `TOOLS` (name, title, hints, description, the result
Structs, Para's names for its arguments); `register(fe)` adds them all to a frontend's
server, the frontend bound as the first argument. The outputSchema of each is the JSON
schema of its Structs in results.py (plus the shapes only MCP has, below); the result goes
out as the service built it. Every call passes `arguments` first: Para's names become ours,
an unknown name is refused (the SDK would drop it silently), and every failure, ours or the
SDK's argument validation, leaves as one error result with `{code, name, message, data}`.
"""

import asyncio
import copy
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ContentBlock,
    TextContent,
    ToolAnnotations,
)
from pydantic import BaseModel, ConfigDict, Field

from para_rpc import config, display, results
from para_rpc.errors import Code, ParaError
from para_rpc.model import Plan
from para_rpc.server.mcp.guide import describe
from para_rpc.server.mcp.hints import error_result
from para_rpc.service.ports import PROGRESS

if TYPE_CHECKING:
    from para_rpc.server.mcp.frontend import McpFrontend

WAIT_PROGRESS_SECONDS = 1.0


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
    """The outputSchema of a tool returning one of `types` (an object at the root, as MCP wants):
    msgspec's schema of them, made lean (`lean_schema`, the same meaning)."""
    return lean_schema(struct_schema(*types))


def struct_schema(*types: type) -> dict[str, Any]:
    """msgspec's JSON schema of `types` as one object schema (definitions under `$defs`)."""
    refs, defs = msgspec.json.schema_components(types, ref_template=_REF + "{name}")
    if len(types) == 1:
        root = dict(defs.pop(types[0].__name__))
    else:
        root = {"type": "object", "anyOf": list(refs)}
    if defs:
        root["$defs"] = defs
    return root


# Why lean: the SDK's client validates every structured result against the outputSchema with
# jsonschema, and msgspec's spelling is its slow path: each optional field is
# `anyOf: [S, {"type": "null"}]` (every failed branch builds an error object) and every Struct a
# `$ref` resolved through `referencing` each time. For 30 sessions of para_list that validation
# was most of a call's 20 ms. The lean schema says the same with `type: [T, "null"]` and inlined
# definitions (tests/test_mcp_schema.py checks the verdicts are the same, value by value).
_REF = "#/$defs/"
# Keywords that constrain values of one JSON type only (JSON Schema 2020-12), and annotations,
# which constrain nothing: a schema made of these with a `type` lets null through as soon as
# "null" is one of its types. Anything else (const, the combinators, $ref, not, if/then/else,
# unevaluated*) applies to every value, so such a schema keeps its anyOf.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
                          "$comment"})
_TYPE_BOUND = _ANNOTATIONS | {
    "type",
    "minLength", "maxLength", "pattern", "format", "contentEncoding", "contentMediaType", "contentSchema",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains", "minContains", "maxContains",
    "properties", "required", "additionalProperties", "patternProperties", "minProperties", "maxProperties",
    "propertyNames", "dependentRequired", "dependentSchemas"}
_NULL = {"type": "null"}
# Keywords whose value is a subschema, a list of them, or a name -> subschema map; every other
# keyword's value is data (enum, const, default, required, ...) and is copied, never rewritten.
_ONE = frozenset({"items", "additionalProperties", "contains", "propertyNames", "not", "if", "then", "else",
                  "unevaluatedItems", "unevaluatedProperties", "contentSchema"})
_MANY = frozenset({"anyOf", "allOf", "oneOf", "prefixItems"})
_MAP = frozenset({"properties", "patternProperties", "dependentSchemas"})


def lean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the same meaning, cheaper to validate: every `{"$ref": "#/$defs/X"}` of a
    definition that is not recursive replaced by the definition itself, and every
    `anyOf: [S, {"type": "null"}]` whose S lets null through once null is added to its `type`
    (and to its `enum`) written as that one schema. Definitions still referenced (recursive
    ones) stay in `$defs`; anything it is not sure of stays as it was."""
    defs: dict[str, Any] = schema.get("$defs") or {}

    def refs(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = {node["$ref"][len(_REF):]} if isinstance(node.get("$ref"), str) and node["$ref"].startswith(_REF) else set()
            return found.union(*(refs(v) for k, v in node.items() if k != "$ref"))
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node))
        return set()

    direct = {name: refs(d) & set(defs) for name, d in defs.items()}

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(direct[start])
        while todo:
            if (n := todo.pop()) not in seen:
                seen.add(n)
                todo.extend(direct[n])
        return seen

    recursive = {name for name in defs if name in reaches(name)}

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith(_REF) and ref[len(_REF):] in defs \
                and ref[len(_REF):] not in recursive:
            return walk(defs[ref[len(_REF):]])  # (terminates: a cycle is made of recursive definitions only)
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$defs":
                continue
            if k in _ONE:
                out[k] = walk(v)
            elif k in _MANY and isinstance(v, list):
                out[k] = [walk(x) for x in v]
            elif k in _MAP and isinstance(v, dict):
                out[k] = {name: walk(x) for name, x in v.items()}
            else:
                out[k] = copy.deepcopy(v)
        return _null_merged(out)

    lean: dict[str, Any] = walk(schema)
    kept: dict[str, Any] = {}
    todo = refs(lean) & set(defs)
    while todo:  # the definitions the lean schema still refers to, and those they refer to
        name = todo.pop()
        kept[name] = walk(defs[name])
        todo |= (refs(kept[name]) & set(defs)) - set(kept)
    if kept:
        lean["$defs"] = {name: kept[name] for name in defs if name in kept}
    return lean


def _null_merged(node: dict[str, Any]) -> dict[str, Any]:
    """`{anyOf: [S, {"type": "null"}], <annotations>}` as S taking null too, or `node` unchanged."""
    branches = node.get("anyOf")
    if not isinstance(branches, list) or len(branches) != 2 or _NULL not in branches or branches[0] == branches[1]:
        return node
    s = branches[1] if branches[0] == _NULL else branches[0]
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    if not isinstance(s, dict) or not set(outer) <= _ANNOTATIONS or not set(outer).isdisjoint(s) \
            or not set(s) <= _TYPE_BOUND | {"enum"}:
        return node
    merged = dict(s)
    if "enum" in s:
        if not isinstance(s["enum"], list):
            return node
        merged["enum"] = s["enum"] if None in s["enum"] else [*s["enum"], None]
    elif "type" not in s:
        return node  # (no type and no enum: S takes anything; not worth a special case)
    if "type" in s:
        types = [s["type"]] if isinstance(s["type"], str) else s["type"]
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            return node
        merged["type"] = types if "null" in types else [*types, "null"]
    return {**merged, **outer}


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
KeepOnFailure = Annotated[bool, Field(description="When the configured session.setup fails on the recreated "
                                      "worktree, keep it (reported in warnings) instead of rolling back.")]
SessionOpt = Annotated[str | None, Field(description="Session name (default: the session whose worktree is the "
                                         "client's directory).")]

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def _ann(*, destructive: bool, idempotent: bool = False, open_world: bool = False) -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=False, destructive_hint=destructive, idempotent_hint=idempotent,
                           open_world_hint=open_world)


# ---- the table -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolSpec:
    fn: Callable[..., Any]
    name: str
    title: str
    annotations: ToolAnnotations
    description: str
    out: tuple[type, ...]
    aliases: dict[str, str]     # Para's argument name -> ours

    def arguments(self) -> list[str]:
        """The argument names of the input schema, in signature order."""
        return [n for n, p in inspect.signature(self.fn).parameters.items()
                if n != "fe" and p.annotation is not Context and n != "ctx"]

    def full_description(self) -> str:
        if not self.aliases:
            return self.description
        names = ", ".join(f"{a} (= {c})" for a, c in self.aliases.items())
        return f"{self.description}\n\nPara's argument names are accepted too: {names}."


TOOLS: list[ToolSpec] = []
# Para's names of session arguments (its MCP server's session_name); the others per tool below.
SESSION_ALIASES = {"session_name": "session"}
# Para's names that mean nothing here, with what to use instead (said when refusing them).
NOT_HERE = {"dangerously_skip_permissions": "only para_dispatch starts an agent; pass skip_permissions=true there",
            "integrate": "call para_integrate to land the work",
            "verbose": "para_list always returns every field", "quiet": "para_list always returns every field",
            "archived": "pass all=true for the history"}


ToolFn = TypeVar("ToolFn", bound=Callable[..., Awaitable[dict[str, Any]]])


def tool(name: str, title: str, annotations: ToolAnnotations, description: str,
         *out: type, aliases: dict[str, str] | None = None) -> Callable[[ToolFn], ToolFn]:
    def deco(fn: ToolFn) -> ToolFn:
        takes = inspect.signature(fn).parameters
        names = {**(SESSION_ALIASES if "session" in takes else {}), **(aliases or {})}
        TOOLS.append(ToolSpec(fn, name, title, annotations, description, out, names))
        return fn
    return deco


def normalize(spec: ToolSpec, arguments: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments under our names: Para's names renamed, an unknown name refused
    with the accepted ones, a name given twice (ours and Para's, different values) refused."""
    accepted = spec.arguments()
    unknown = [k for k in arguments if k not in accepted and k not in spec.aliases]
    if unknown:
        why = "; ".join(f"{k}: {NOT_HERE[k]}" for k in unknown if k in NOT_HERE)
        raise ParaError(Code.invalid_input, f"{spec.name} does not take {', '.join(map(repr, unknown))}"
                        + (f" ({why})" if why else "") + f". It takes: {', '.join(accepted)}"
                        + (f"; Para's names: {', '.join(f'{a} (= {c})' for a, c in spec.aliases.items())}"
                           if spec.aliases else ""),
                        unknown=unknown, accepted=accepted, aliases=spec.aliases)
    out = {k: v for k, v in arguments.items() if k not in spec.aliases}
    for alias, ours in spec.aliases.items():
        if alias not in arguments:
            continue
        if ours in arguments and arguments[ours] != arguments[alias]:
            raise ParaError(Code.invalid_input, f"{spec.name} got both {ours}={arguments[ours]!r} and Para's name "
                            f"for it, {alias}={arguments[alias]!r}; give one", argument=ours, alias=alias)
        out[ours] = arguments[alias]
    return out


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    if c < 0x10000:
        return f"\\u{c:04x}"
    c -= 0x10000  # (as a UTF-16 surrogate pair, like json.dumps)
    return f"\\u{0xd800 | (c >> 10):04x}\\u{0xdc00 | (c & 0x3ff):04x}"


def json_text(obj: Any) -> str:
    """The result as indented JSON text, what `json.dumps(obj, indent=2, default=str)` gives
    (non-ASCII escaped; only a float's exponent is spelled shorter: 1e-7, not 1e-07). msgspec:
    json's indenting encoder is pure Python, 5 ms for a list of 100 sessions; this is 0.1 ms."""
    text = msgspec.json.format(msgspec.json.encode(obj, enc_hook=str), indent=2).decode()
    return text if text.isascii() else _NON_ASCII.sub(_escape, text)


# The tools whose sessions carry agents: their text says in words where each agent on another
# host runs and how old the work brought home is (the JSON has only the executor's name and an
# epoch `harvested_at`, which a model reading the text cannot age). Local agents add nothing.
WHERE_TOOLS = {"para_list", "para_status"}


def where_text(r: dict[str, Any]) -> str | None:
    """`Agents on other hosts:` and a line per such session (display.remote_where), else None."""
    lines = [f"  {s['name']}: " + ("lost, " if s["agent"].get("lost") or s["agent"].get("state") == "lost" else "")
             + display.remote_where(s["agent"]) for s in r.get("sessions") or [] if display.remote(s.get("agent"))]
    return "Agents on other hosts:\n" + "\n".join(lines) if lines else None


def _bound(spec: ToolSpec, fe: "McpFrontend") -> Callable[..., Any]:
    """`spec.fn` with the frontend bound, as the SDK sees a tool: the signature without `fe`
    (the arguments' input schema comes from it), the result as structured content."""
    sig = inspect.signature(spec.fn)

    async def call(*args: Any, **kwargs: Any) -> CallToolResult:
        try:
            r = await spec.fn(fe, *args, **kwargs)
        except ParaError as e:
            return error_result(e)
        content: list[ContentBlock] = [TextContent(type="text", text=json_text(r))]
        if spec.name in WHERE_TOOLS and (where := where_text(r)):
            content.append(TextContent(type="text", text=where))
        return CallToolResult(content=content, structured_content=r)

    call.__name__, call.__doc__, call.__module__ = spec.fn.__name__, spec.fn.__doc__, spec.fn.__module__
    call.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:],  # type: ignore[attr-defined]  # inspect reads it
                                     return_annotation=CallToolResult)
    call.__annotations__ = {k: v for k, v in spec.fn.__annotations__.items() if k not in ("fe", "return")}
    return call


def register(fe: "McpFrontend") -> None:
    srv = fe.server
    for spec in TOOLS:
        srv.add_tool(_bound(spec, fe), name=spec.name, title=spec.title, description=spec.full_description(),
                     annotations=spec.annotations, structured_output=False)
        added = srv._tool_manager.get_tool(spec.name)
        if added is None:  # the SDK dropped the tool it was just given: no silent schema-less tool
            raise ParaError(Code.internal, f"MCP tool {spec.name} was not registered")
        added.fn_metadata.output_schema = output_schema(*spec.out)
    low = srv._lowlevel_server
    entry = low.get_request_handler("tools/call")
    if entry is None:
        raise ParaError(Code.internal, "the MCP SDK serves no tools/call")
    sdk_call = entry.handler
    by_name = {spec.name: spec for spec in TOOLS}

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams) -> Any:
        spec = by_name.get(params.name)
        if spec is None:
            return error_result(ParaError(Code.invalid_input, f"there is no tool {params.name!r}; the tools are "
                                          + ", ".join(by_name), tool=params.name))
        try:
            args = normalize(spec, dict(params.arguments or {}))
        except ParaError as e:
            return error_result(e)
        result = await sdk_call(ctx, params.model_copy(update={"arguments": args}))
        if isinstance(result, CallToolResult) and result.is_error and result.structured_content is None:
            # the SDK's own failure: the arguments did not fit the input schema (or a bug)
            text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
            text = text.removeprefix(f"Error executing tool {spec.name}").removeprefix(": ")
            if "validation error" in text:
                return error_result(ParaError(Code.invalid_input, text, accepted=spec.arguments()))
            return error_result(ParaError(Code.internal, f"{spec.name} failed unexpectedly: {text or 'no detail'}; "
                                          "see the sidecar log"))
        return result

    low.add_request_handler("tools/call", CallToolRequestParams, call_tool)


# ---- the tools -----------------------------------------------------------------------------

@tool("para_dispatch", "Dispatch tasks to agents", _ann(destructive=False, open_world=True), describe(
    "PRIMARY TOOL. Start one session per task (branch + worktree) with an agent working on it. Give "
    "exactly one of: task (inline text), file (a task file, or a directory of TASK_<n>_<slug>.md files "
    "run as a plan), files (task files run as a plan), tasks (several independent tasks at once). "
    "The result lists the sessions started and, for a plan, its steps.",
    "split", "tasks", "preferences", "dispatch", "follow", "conflicts"), McpDispatchOut,
    aliases={"session_name": "session", "task_description": "task",
             "dangerously_skip_permissions": "skip_permissions"})
async def para_dispatch(
    fe: "McpFrontend",
    ctx: Context,
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
                                            "(its profile's flag, e.g. --dangerously-skip-permissions). Only when "
                                            "the project's instructions (CLAUDE.md, AGENTS.md) or the user allow "
                                            "it.")] = False,
    mode: Annotated[Literal["auto", "headless", "tmux", "editor"] | None,
                    Field(description="Where the agent runs (default: config agent.mode).")] = None,
    base: Annotated[str | None, Field(description="Branch to fork from (default: the base branch).")] = None,
    sandbox: Annotated[bool | None, Field(description="Confine the agent with bubblewrap: the filesystem read-only "
                                          "but its worktree, a socket of its own session only (default: config "
                                          "agent.sandbox).")] = None,
    network: Annotated[bool | None, Field(description="Whether a sandboxed agent keeps the network (default: "
                                          "config agent.network).")] = None,
    keep_on_failure: Annotated[bool, Field(description="When the configured session.setup fails, keep the "
                                           "session (reported in warnings) instead of rolling it back.")] = False,
    executor: Annotated[str | None, Field(description="Where the agent runs: local or a configured executor, e.g. "
                                          "an SSH host (default: config agent.executor).")] = None,
    repo: Repo = None,
) -> dict[str, Any]:
    given = [n for n, v in (("task", task), ("file", file), ("files", files), ("tasks", tasks)) if v]
    if len(given) != 1:
        raise ParaError(Code.invalid_input, "give exactly one of task, file, files or tasks"
                        + (f" (got {', '.join(given)})" if given else ""))
    if files and session is not None:
        raise ParaError(Code.invalid_input, "a plan names its sessions after its task files; drop session")
    specs = [{"name": t.session, "prompt": t.task, "file": t.file} for t in tasks or []]
    r = await _with_progress(ctx, fe.call(
        "para/dispatch", repo, name=session if not tasks else None, prompt=task, file=file, files=files,
        tasks=specs or None, agent=agent, skip_permissions=skip_permissions, mode=mode, base=base, sandbox=sandbox,
        network=network, keep_on_failure=keep_on_failure or None, executor=executor))
    out: dict[str, Any] = {"sessions": [], "plan": None, "failed": [], "next": ""}
    if "failed" in r:  # several tasks
        out["sessions"] = r["sessions"]
        out["plan"] = r["plans"][-1] if r["plans"] else None
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
    fe: "McpFrontend",
    all: Annotated[bool, Field(description="Include integrated and cancelled sessions (history).")] = False,
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/list", repo, all=all)

@tool("para_start", "Start a session without an agent", _ann(destructive=False),
      "Create a session (branch para/<name> and its worktree under .para/worktrees/) forked from the base "
      "branch, without an agent: for work you do yourself or with the user. To hand a task to an agent use "
      "para_dispatch.", results.SessionDetail)
async def para_start(
    fe: "McpFrontend",
    ctx: Context,
    session: Annotated[str | None, Field(description="Session name (default: a friendly adjective_noun).")] = None,
    base: Annotated[str | None, Field(description="Branch to fork from.")] = None,
    keep_on_failure: Annotated[bool, Field(description="When the configured session.setup fails, keep the "
                                           "session (reported in warnings) instead of rolling it back.")] = False,
    repo: Repo = None,
) -> dict[str, Any]:
    return await _with_progress(ctx, fe.call("para/start", repo, name=session, base=base,
                                             keep_on_failure=keep_on_failure or None))

@tool("para_finish", "Finish a session for review", _ann(destructive=True),
      "Commit everything in the session, squash it onto its fork point (configurable), remove the worktree "
      "and keep the branch for review. Nothing lands on the base branch; para_integrate does that.", results.SessionDetail,
      aliases={"session_name": "session", "commit_message": "message"})
async def para_finish(
    fe: "McpFrontend",
    message: Annotated[str, Field(description="Commit message.")],
    session: SessionOpt = None,
    branch: Annotated[str | None, Field(description="Rename the branch for review.")] = None,
    squash: Annotated[bool | None, Field(description="Squash into one commit (default: config finish.squash).")] = None,
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/finish", repo, session=session, message=message, branch=branch, squash=squash)

@tool("para_integrate", "Land a session on its target", _ann(destructive=True), describe(
    "Land the session's work (uncommitted changes are committed first) on its target branch (default: the "
    "branch it forked from), then remove its worktree and branch (a backup ref keeps the tip). Agents "
    "normally do this themselves with `para integrate`. dry_run=true predicts the result and changes "
    "nothing. On a conflict the result is an error naming the files.", "conflicts"), results.IntegrateResult, results.IntegrateDryRun)
async def para_integrate(
    fe: "McpFrontend",
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

@tool("para_continue", "Complete a paused integration", _ann(destructive=True), describe(
    "After the conflicts of a paused (conflicted) session have been resolved in its worktree, complete "
    "its integration: the resolution is committed and the session lands on its target. Conflicts without "
    "text markers (binary, deleted, renamed, submodule) count as resolved only once a choice is staged "
    "there (git add / git rm); force=true stages everything as it is.", "conflicts"), results.IntegrateResult)
async def para_continue(
    fe: "McpFrontend",
    session: SessionReq,
    force: Annotated[bool, Field(description="Stage everything as it is, even conflicts nobody resolved "
                                 "(marker-like lines left, binary/deleted/renamed paths not staged).")] = False,
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/continue", repo, session=session, force=force)

@tool("para_abort", "Abort a paused integration", _ann(destructive=True),
      "Give up a paused integration: the session goes back exactly to its pre-integration commit and "
      "becomes active again (a resolution in progress is saved under refs/para/backup/).", results.SessionDetail)
async def para_abort(fe: "McpFrontend", session: SessionReq, repo: Repo = None) -> dict[str, Any]:
    return await fe.call("para/abort", repo, session=session)

@tool("para_cancel", "Cancel a session", _ann(destructive=True),
      "Stop a session: its uncommitted work is committed onto its branch, the branch is archived under "
      "para/archived/, the worktree is removed. para_recover brings it back. Never cancel a session whose "
      "agent is still working unless the user asked for it.", results.SessionDetail)
async def para_cancel(
    fe: "McpFrontend",
    session: SessionReq,
    discard: Annotated[bool, Field(description="Do not commit uncommitted work (a backup ref still keeps a "
                                   "snapshot).")] = False,
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/cancel", repo, session=session, discard=discard)

@tool("para_recover", "Recover a cancelled session", _ann(destructive=False),
      "Bring a cancelled session back: its archived branch becomes para/<name> again with a fresh worktree.", results.SessionDetail)
async def para_recover(fe: "McpFrontend", session: SessionReq, keep_on_failure: KeepOnFailure = False,
                       repo: Repo = None) -> dict[str, Any]:
    return await fe.call("para/recover", repo, session=session, keep_on_failure=keep_on_failure or None)

@tool("para_resume", "Resume a session", _ann(destructive=False, idempotent=True),
      "Make sure the session's worktree exists (recreating it from the branch if it was deleted) and "
      "return its path. With executor: relaunch the session's agent there (after its host was lost, or "
      "it exited or was stopped) from its branch and last checkpoint of uncommitted work.", results.SessionDetail)
async def para_resume(fe: "McpFrontend", session: SessionReq, keep_on_failure: KeepOnFailure = False,
                      executor: Annotated[str | None, Field(description="Relaunch the agent here: local or a "
                                                            "configured executor (e.g. another SSH host).")] = None,
                      repo: Repo = None) -> dict[str, Any]:
    return await fe.call("para/resume", repo, session=session, keep_on_failure=keep_on_failure or None,
                         executor=executor)

# -- steering agents

@tool("para_stop", "Stop a session's agent", _ann(destructive=True, idempotent=True),
      "Stop the agent working in a session (SIGTERM, then SIGKILL); the session and its work stay, "
      "para_restart relaunches it. A queued agent (agent.max_running) leaves the queue. Saying nothing "
      "runs is not an error.", results.StopResult)
async def para_stop(fe: "McpFrontend", session: SessionReq, repo: Repo = None) -> dict[str, Any]:
    return await fe.call("para/stop", repo, session=session)

@tool("para_restart", "Relaunch a session's agent", _ann(destructive=False, open_world=True),
      "Relaunch the agent of a session (same profile, same worktree) with its original task plus the "
      "unread messages and the follow-up. Refused while the agent runs unless stop is true.",
      results.SessionDetail)
async def para_restart(
    fe: "McpFrontend",
    session: SessionReq,
    follow_up: Annotated[str | None, Field(description="What the agent should do now, added to its task.")] = None,
    stop: Annotated[bool, Field(description="Stop the agent first if it still runs.")] = False,
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/restart", repo, session=session, prompt=follow_up, stop=stop)

@tool("para_send", "Send a follow-up to an agent", _ann(destructive=False),
      "Keep a follow-up message for a session's agent: a running agent reads it with its next status "
      "report; an agent that has exited gets it when para_restart relaunches it.", results.SendResult)
async def para_send(
    fe: "McpFrontend",
    session: SessionReq,
    message: Annotated[str, Field(description="The follow-up, plain text (1 to 20000 characters).")],
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/send", repo, session=session, message=message)

@tool("para_open", "Open a worktree in the editor", _ann(destructive=False, idempotent=True),
      "Ask the editors connected to para (VS Code, Neovim) to open a session's worktree. With none "
      "connected, the answer's via is `argv`: the user can run the editor on `worktree`.", results.OpenResult)
async def para_open(fe: "McpFrontend", session: SessionReq, repo: Repo = None) -> dict[str, Any]:
    return await fe.call("para/open", repo, session=session)

# -- observing

@tool("para_status", "Evidence per session", READ, describe(
    "What each session's agent last reported (`para status`: task, tests, todos, blocked) next to what "
    "the sidecar sees itself: agent process state and exit code, commits ahead, diffstat, last activity, "
    "stale flag, and the running plans.", "follow"), results.StatusResult)
async def para_status(
    fe: "McpFrontend",
    session: Annotated[str | None, Field(description="One session (default: all live sessions).")] = None,
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/status", repo, session=session, all=session is None)

@tool("para_wait", "Wait for a session to change", READ, describe(
    "Block until one of the named sessions (all live ones if none named) changes state, or timeout "
    "seconds pass. Reports progress while waiting. Returns which sessions changed, their status, the "
    "events seen and last_event.", "follow"), results.WaitResult)
async def para_wait(
    fe: "McpFrontend",
    ctx: Context,
    sessions: Annotated[list[str], Field(description="Session names to watch (default: every live session).")] = [],  # noqa: B006 (pydantic copies the default)
    timeout: Annotated[float, Field(description="Seconds to wait at most (0-3600).", ge=0, le=3600)] = 60.0,
    after_event: Annotated[int | None, Field(description="The last_event of your previous para_wait: changes "
                                             "since then count too, so nothing is missed.", ge=0, le=2**63 - 1)] = None,
    repo: Repo = None,
) -> dict[str, Any]:
    return await _wait(fe, ctx, sessions, timeout, after_event, repo)

@tool("para_conflicts", "Forecast conflicts", READ, describe(
    "Forecast collisions before anything lands: every active session (uncommitted work included) against "
    "its target and against each other session, with the files and line ranges.", "conflicts"), results.ConflictsResult)
async def para_conflicts(
    fe: "McpFrontend",
    target: Annotated[str | None, Field(description="Forecast against this branch instead of each session's "
                                        "base.")] = None,
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/conflicts", repo, target=target)

@tool("para_diff", "Show a session's changes", READ,
      "The session's changes against its fork point (uncommitted work included): a diffstat and the patch "
      "(truncated at max_bytes).", results.DiffResult)
async def para_diff(
    fe: "McpFrontend",
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
async def para_config_show(fe: "McpFrontend", repo: Repo = None) -> dict[str, Any]:
    return await fe.call("para/config", repo, action="show")


async def _with_progress(ctx: Context, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await `call` (a start or dispatch), sending what the service reports meanwhile (the
    output of session.setup, bounded by the service) as MCP progress notifications, in order,
    all of them before the result."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    async def send() -> None:
        n = 0
        while (text := await lines.get()) is not None:
            n += 1
            try:
                await ctx.report_progress(n, None, text)
            except Exception:  # noqa: BLE001 a client that went away still gets its call served
                return

    sender = asyncio.ensure_future(send())
    token = PROGRESS.set(lines.put_nowait)
    try:
        return await call
    finally:
        PROGRESS.reset(token)
        lines.put_nowait(None)
        await sender

@tool("para_config_set", "Change a configuration value", _ann(destructive=False, idempotent=True),
      "Set one configuration key (para_config_show lists them with what each means) in the user file "
      "(scope=\"user\", the default: every repository of this user) or the repository's .para/config.json "
      "(scope=\"project\"). Keys that make para run something or choose what runs (agents, agent.default, "
      "integrate.check, session.setup, ...; para_config_show marks them) are the user's decision: they can only "
      "be set in the project file, where they take effect once the user approved the file with `para trust`. "
      "E.g. key=\"agent.workflow\", value=\"finish\", scope=\"project\" makes agents keep their branch for "
      "review instead of landing it.", results.ConfigSet)
async def para_config_set(
    fe: "McpFrontend",
    key: Annotated[str, Field(description="The key, e.g. agent.workflow, integrate.strategy, agent.max_running.")],
    value: Annotated[str, Field(description="The value as text; JSON for numbers, booleans, lists and objects "
                                "(\"3\", \"true\", \"[\\\"make\\\", \\\"test\\\"]\").")],
    scope: Annotated[Literal["user", "project"], Field(description="user: the user's own file; project: "
                                                       ".para/config.json of the repository.")] = "user",
    repo: Repo = None,
) -> dict[str, Any]:
    if scope == "user" and key in config.GATED_KEYS:
        # The user file is trusted as the user's own word; written by an AI client it would make
        # para run what nobody approved. In the project file the trust gate still applies.
        raise ParaError(Code.forbidden, f"{key} decides what para runs ({config.GATED_KEYS[key]}); an MCP client "
                        "may set it only in the project file (scope=\"project\"), where it takes effect once the "
                        "user approved the file with `para trust`, or the user sets it with "
                        f"`para config set {key} VALUE`", key=key, scope=scope)
    return await fe.call("para/config", repo, action="set", key=key, value=value, scope=scope)

@tool("para_clean", "Clean up leftovers", _ann(destructive=True), describe(
    "Find what para left behind and no longer needs: worktree records whose directory is gone, sessions "
    "with neither branch nor worktree, para branches no session owns (deleted only once their commits are "
    "in the base branch, unless force), archives and backup refs past their age (clean.archive_days, "
    "clean.backup_days), worktrees whose session state was lost (adopted again). A dry run by default: the "
    "result lists the actions and what is kept and why; confirm=true carries the actions out. Show the user "
    "the dry run before confirming. Branches Para left are never deleted."), results.CleanResult)
async def para_clean(
    fe: "McpFrontend",
    confirm: Annotated[bool, Field(description="Carry the actions out (default: only list them).")] = False,
    force: Annotated[bool, Field(description="Also delete para branches holding commits not in the base branch "
                                 "(a backup ref keeps each for clean.backup_days).")] = False,
    repo: Repo = None,
) -> dict[str, Any]:
    return await fe.call("para/clean", repo, dry_run=not confirm, force=force)

@tool("para_plans", "Show the plans", READ, describe(
    "The plans of the repository (a directory or list of TASK_<n>_<slug>.md files dispatched together): each "
    "step's tasks with their session and state, and the plan's state (running, done, failed). The resource "
    "para://plans is the same, with update notifications.", "follow"), results.PlansResult)
async def para_plans(fe: "McpFrontend", repo: Repo = None) -> dict[str, Any]:
    return await fe.call("para/plans", repo)

async def _wait(fe: "McpFrontend", ctx: Context, sessions: list[str], timeout: float, after_event: int | None,
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
