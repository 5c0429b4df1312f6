"""`python -m para_rpc.gen [--check]`: the client bindings, generated from the protocol's
declarations (gopls' `go generate` over its command interface; rust-analyzer's `lsp_ext.ts`
without the hand copying).

The source of truth is Python: the params Structs (params.py), the result Structs
(results.py, model.py), the method table (methods.py), the error codes (errors.py) and the
protocol version. From them this writes

- the typed blocks of docs/protocol.md, between `<!-- generated ... -->` markers (the prose
  around them is the author's and stays as it is);
- editors/vscode/src/lsp_ext.ts: interfaces, `RequestType`/`NotificationType` constants for
  vscode-jsonrpc, error codes, protocol version;
- editors/nvim/lua/para/protocol.lua: method names, LuaLS `---@class` annotations, error codes,
  protocol version.

`--check` writes nothing: it exits 1 with a unified diff when a file is not what this would
write (tests/test_gen.py runs it, so a Struct changed without regenerating fails the suite).
Keys are snake_case exactly as on the wire. The output is already in the editors' formatter
style (prettier and stylua at 120 columns), so their format checks pass on it untouched.
Stdlib and msgspec only: it runs wherever para is installed.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import msgspec.inspect as mi

from para_rpc import PROTOCOL_VERSION, agents, methods
from para_rpc import params as P
from para_rpc import results as R
from para_rpc.errors import Code

ROOT = Path(__file__).resolve().parent.parent
DOC = Path("docs/protocol.md")
TS = Path("editors/vscode/src/lsp_ext.ts")
LUA = Path("editors/nvim/lua/para/protocol.lua")
WIDTH = 120  # prettier's printWidth and stylua's column_width in editors/

# Names the hand-written clients used before these files were generated: kept as aliases, so
# the generated files export everything the editors import (a superset, never a rename).
TS_ALIASES = {
    "Common": "RepoParams",
    "Session": "SessionDetail",
    "IntegrateForecast": "IntegrateDryRun",
    "AgentStatus": "AgentEvidence",
    "SessionStatus": "Evidence",
    "ConfigPathResult": "ConfigPaths",
    "ConfigGetResult": "ConfigValue",
    "ParaEvent": "DomainEvent",
}
LUA_ALIASES = {
    "Session": "SessionDetail",
    "AgentStatus": "AgentEvidence",
    "SessionStatus": "Evidence",
    "Event": "DomainEvent",
    "RunInTerminal": "RunInTerminalParams",
}
# Struct names that would clash with a name the clients use for something else.
RENAMED: dict[type, str] = {R.Event: "EventRecord"}
_RESERVED = {"continue", "delete", "default", "export", "import", "new", "function", "return", "class"}


@dataclass(frozen=True)
class Call:
    """One wire method: what goes in, what comes back (several shapes = a union)."""
    method: str
    direction: str  # "request" (client -> sidecar), "notification", "server request"
    params: type[msgspec.Struct] | None
    results: tuple[type[msgspec.Struct], ...]
    mutates: bool | None = None


def calls() -> list[Call]:
    out = [Call(m, "request", x.params, x.result_types(), x.mutates) for m, x in methods.METHODS.items()]
    out += [Call(m, "request", p, (r,)) for m, (p, r) in methods.TRANSPORT.items()]
    out += [Call(m, "notification", p, ()) for m, p in methods.NOTIFICATIONS.items()]
    out += [Call(m, "server request", p, (r,)) for m, (p, r) in methods.SERVER_REQUESTS.items()]
    return out


def verb(method: str) -> str:
    v = method.split("/", 1)[1]
    return v + "_" if v in _RESERVED else v


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# ---- the type model ------------------------------------------------------------------------

_INFO: dict[type, mi.Type] = {}


def info(cls: type) -> mi.StructType:
    if cls not in _INFO:
        t = mi.type_info(cls)
        assert isinstance(t, mi.StructType), cls
        _INFO[cls] = t
    t = _INFO[cls]
    assert isinstance(t, mi.StructType)
    return t


def name(cls: type) -> str:
    return RENAMED.get(cls, cls.__name__)


def parent(cls: type) -> type | None:
    """The Struct this one extends in the bindings: its nearest base that declares fields."""
    for base in cls.__mro__[1:]:
        if issubclass(base, msgspec.Struct) and base.__struct_fields__:
            return base
    return None


def own_fields(cls: type) -> list[mi.Field]:
    up = parent(cls)
    inherited = {f.name: f for f in info(up).fields} if up else {}
    return [f for f in info(cls).fields if inherited.get(f.name) != f]


def referenced(t: mi.Type) -> Iterator[type]:
    """Structs and enums a type mentions (not recursing into the Structs themselves)."""
    if isinstance(t, (mi.StructType, mi.EnumType)):
        yield t.cls
    elif isinstance(t, mi.UnionType):
        for x in t.types:
            yield from referenced(x)
    elif isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        yield from referenced(t.item_type)
    elif isinstance(t, mi.DictType):
        yield from referenced(t.value_type)
    elif isinstance(t, mi.TupleType):
        for x in t.item_types:
            yield from referenced(x)


def closure(roots: Iterable[type]) -> list[type]:
    """Every Struct and enum reachable from `roots` (parents and field types), roots first."""
    seen: dict[type, None] = {}
    todo = list(roots)
    while todo:
        cls = todo.pop(0)
        if cls in seen:
            continue
        seen[cls] = None
        if issubclass(cls, msgspec.Struct):
            up = parent(cls)
            if up:
                todo.append(up)
            for f in info(cls).fields:
                todo.extend(referenced(f.type))
    return list(seen)


def roots_of(call: Call) -> list[type]:
    return [c for c in (call.params, *call.results) if c is not None]


def all_types() -> list[type]:
    return closure(c for call in calls() for c in roots_of(call))


def enum_values(cls: type) -> list[str]:
    assert issubclass(cls, enum.Enum), cls
    return [str(m.value) for m in cls]


# ---- TypeScript ----------------------------------------------------------------------------

def ts_type(t: mi.Type) -> str:
    if isinstance(t, mi.AnyType):
        return "unknown"
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, (mi.IntType, mi.FloatType)):
        return "number"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.LiteralType):
        return " | ".join(json.dumps(v) for v in t.values)
    if isinstance(t, (mi.StructType, mi.EnumType)):
        return name(t.cls)
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        item = ts_type(t.item_type)
        return f"({item})[]" if " | " in item else f"{item}[]"
    if isinstance(t, mi.DictType):
        return f"Record<{ts_type(t.key_type)}, {ts_type(t.value_type)}>"
    if isinstance(t, mi.UnionType):
        return " | ".join(ts_type(x) for x in t.types)
    raise TypeError(f"no TypeScript for {t!r}")


def _doc(cls: type) -> str | None:
    d = cls.__doc__
    if not d or d.startswith(cls.__name__ + "("):  # msgspec's generated signature doc
        return None
    return " ".join(d.split())


def ts_comment(text: str, indent: str = "") -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(indent) + 3 + len(line) + 1 + len(w) > WIDTH:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    if len(lines) == 1 and len(indent) + 7 + len(lines[0]) <= WIDTH:
        return [f"{indent}/** {lines[0]} */"]
    return [f"{indent}/**", *(f"{indent} * {x}" for x in lines), f"{indent} */"]


def ts_union_alias(alias: str, parts: list[str]) -> list[str]:
    one = f"export type {alias} = {' | '.join(parts)};"
    if len(one) <= WIDTH:
        return [one]
    return [f"export type {alias} =", *(f"  | {p}" for p in parts[:-1]), f"  | {parts[-1]};"]


def outgoing() -> set[type]:
    """Structs a client sends: its params, and its answers to the sidecar's requests."""
    out: set[type] = {c for c in all_types() if issubclass(c, P.Base)}
    out |= {r for call in calls() if call.direction == "server request" for r in call.results}
    return out


def optional(cls: type, f: mi.Field) -> bool:
    """May the key be absent? What a client sends may leave out any field with a default;
    what it receives lacks one only where the Struct omits defaults."""
    if f.required:
        return False
    assert issubclass(cls, msgspec.Struct), cls
    return cls in outgoing() or cls.__struct_config__.omit_defaults


def ts_decl(cls: type) -> list[str]:
    out = []
    if issubclass(cls, msgspec.Struct):
        doc = _doc(cls)
        if doc:
            out += ts_comment(doc)
        up = parent(cls)
        head = f"export interface {name(cls)}" + (f" extends {name(up)}" if up else "")
        fields = own_fields(cls)
        if not fields:  # (an empty interface would accept any value at all)
            return [*out, f"export type {name(cls)} = {name(up) if up else 'Record<string, never>'};"]
        out.append(head + " {")
        for f in fields:
            out.append(f"  {f.encode_name}{'?' if optional(cls, f) else ''}: {ts_type(f.type)};")
        out.append("}")
        return out
    return ts_union_alias(name(cls), [json.dumps(v) for v in enum_values(cls)])


def result_alias(call: Call) -> str:
    """The result type's name in the bindings; a union of several shapes gets its own alias."""
    if not call.results:
        return "void"
    if len(call.results) == 1:
        return name(call.results[0])
    return f"{verb(call.method).rstrip('_').capitalize()}Response"


def render_ts() -> str:
    types = all_types()
    cs = calls()
    out = [
        "// GENERATED by `python -m para_rpc.gen` from para_rpc/params.py, results.py, model.py, methods.py and",
        "// errors.py: do not edit. Change the Structs and run it again; tests/test_gen.py fails while this file",
        "// is stale. Keys are snake_case exactly as on the wire: there is no conversion layer. Every method name",
        "// and wire type the extension uses lives in this file only.",
        'import { NotificationType, RequestType } from "vscode-jsonrpc/node";',
        "",
        f"export const PROTOCOL_VERSION = {PROTOCOL_VERSION};",
        "",
    ]
    for cls in types:
        out += [*ts_decl(cls), ""]
    for call in cs:
        if len(call.results) > 1:
            out += [*ts_union_alias(result_alias(call), [name(r) for r in call.results]), ""]
    out.append("// The names the extension knew these by before they were generated.")
    out += [f"export type {a} = {t};" for a, t in TS_ALIASES.items()]
    out += ["export type Empty = Record<string, never>;", ""]
    for call in cs:
        params = name(call.params) if call.params else "Empty"
        if call.direction == "notification":
            out.append(f'export const {verb(call.method)} = new NotificationType<{params}>("{call.method}");')
        else:
            out.append(f"export const {verb(call.method)} = new RequestType<{params}, {result_alias(call)}, void>"
                       f'("{call.method}");')
    out += [
        "",
        "/** Methods that change state (the sidecar waits for them before it exits). */",
        *ts_string_array("MUTATING", [c.method for c in cs if c.mutates]),
        "",
        "/** Built-in launcher profiles (`para/dispatch` `agent`; the `agents` config key adds more). */",
        *ts_string_array("BUILTIN_PROFILES", list(agents.BUILTIN)),
        "",
        "/** JSON-RPC error codes of para errors; `error.data.code` carries the name. */",
        "export const ERROR_CODES = {",
        *(f"  {c.name}: {c.rpc}," for c in Code),
        "} as const;",
        "export type ErrorName = keyof typeof ERROR_CODES;",
        "",
    ]
    return "\n".join(out)


def ts_string_array(const: str, items: list[str]) -> list[str]:
    one = f"export const {const} = [{', '.join(json.dumps(i) for i in items)}];"
    if len(one) <= WIDTH:
        return [one]
    return [f"export const {const} = [", *(f"  {json.dumps(i)}," for i in items), "];"]


# ---- Lua (LuaLS annotations) ---------------------------------------------------------------

def lua_type(t: mi.Type) -> str:
    if isinstance(t, mi.AnyType):
        return "any"
    if isinstance(t, mi.NoneType):
        return "nil"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.IntType):
        return "integer"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.LiteralType):
        return "|".join(json.dumps(v) for v in t.values)
    if isinstance(t, (mi.StructType, mi.EnumType)):
        return "para." + name(t.cls)
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        item = lua_type(t.item_type)
        return f"({item})[]" if "|" in item else f"{item}[]"
    if isinstance(t, mi.DictType):
        return f"table<{lua_type(t.key_type)}, {lua_type(t.value_type)}>"
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
        inner = "|".join(lua_type(x) for x in rest)
        if len(rest) < len(t.types):
            return f"({inner})?" if "|" in inner else f"{inner}?"
        return inner
    raise TypeError(f"no Lua for {t!r}")


def lua_decl(cls: type) -> list[str]:
    if not issubclass(cls, msgspec.Struct):
        return [f"---@alias para.{name(cls)} {'|'.join(json.dumps(v) for v in enum_values(cls))}"]
    out = []
    doc = _doc(cls)
    if doc:
        out += lua_comment(doc, "--- ")
    up = parent(cls)
    out.append(f"---@class para.{name(cls)}" + (f" : para.{name(up)}" if up else ""))
    for f in own_fields(cls):
        t = lua_type(f.type)
        if optional(cls, f) and not t.endswith("?"):
            t = f"({t})?" if "|" in t else f"{t}?"
        out.append(f"---@field {f.encode_name} {t}")
    return out


def lua_comment(text: str, prefix: str) -> list[str]:
    lines, line = [], ""
    for w in text.split():
        if line and len(prefix) + len(line) + 1 + len(w) > WIDTH:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return [prefix + x for x in lines]


def lua_key(k: str) -> str:
    return f'["{k}"]' if k in {"continue", "end", "function", "local", "return", "and", "or", "not"} else k


def lua_table(var: str, pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{var} = {{", *(f"  {lua_key(k)} = {v}," for k, v in pairs), "}"]


def lua_list(var: str, items: list[str]) -> list[str]:
    one = f"{var} = {{ {', '.join(json.dumps(i) for i in items)} }}"
    if len(one) <= WIDTH:
        return [one]
    return [f"{var} = {{", *(f"  {json.dumps(i)}," for i in items), "}"]


def literal_choices(cls: type, field: str) -> list[str]:
    """The values of a `Literal[...] | None` field, in the order the source lists them."""
    hint = typing.get_type_hints(cls)[field]
    opts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return [v for o in opts if typing.get_origin(o) is typing.Literal for v in typing.get_args(o)]


def render_lua() -> str:
    cs = calls()
    out = [
        "-- GENERATED by `python -m para_rpc.gen` from para_rpc/params.py, results.py, model.py, methods.py and",
        "-- errors.py: do not edit. Change the Structs and run it again; tests/test_gen.py fails while this file is",
        "-- stale. Every wire name the plugin uses is spelled here and nowhere else. Keys are snake_case, as on the",
        "-- wire.",
        "",
        "---@class para.protocol",
        "local M = {}",
        "",
        "--- Protocol version this plugin speaks (`para/hello` must answer the same).",
        f"M.VERSION = {PROTOCOL_VERSION}",
        "",
        "--- Requests, client -> sidecar, by verb.",
        *lua_table("M.methods", [(c.method.split("/", 1)[1], json.dumps(c.method)) for c in cs
                                 if c.direction == "request"]),
        "",
        "--- Notifications, sidecar -> client.",
        *lua_table("M.notifications", [(snake(c.method.split("/", 1)[1]), json.dumps(c.method)) for c in cs
                                       if c.direction == "notification"]),
        "",
        "--- Requests, sidecar -> client.",
        *lua_table("M.server_requests", [(snake(c.method.split("/", 1)[1]), json.dumps(c.method)) for c in cs
                                         if c.direction == "server request"]),
        "",
        "--- Methods that change state (the sidecar waits for them before it exits).",
        *lua_table("M.mutating", [(f'["{c.method}"]', "true") for c in cs if c.mutates]),
        "",
        "--- JSON-RPC error codes of para errors (`error.data.code` carries the name).",
        *lua_table("M.errors", [(c.name, str(c.rpc)) for c in Code]),
        "",
        "--- Built-in launcher profiles (`agents` config adds more).",
        *lua_list("M.builtin_profiles", list(agents.BUILTIN)),
        "",
        "--- Agent modes of `para/dispatch`.",
        *lua_list("M.modes", literal_choices(P.DispatchParams, "mode")),
        "",
        "--- Integration strategies of `para/integrate`.",
        *lua_list("M.strategies", literal_choices(P.IntegrateParams, "strategy")),
        "",
    ]
    for cls in all_types():
        out += [*lua_decl(cls), ""]
    for call in cs:
        if len(call.results) > 1:
            out += [f"---@alias para.{result_alias(call)} {'|'.join('para.' + name(r) for r in call.results)}", ""]
    out.append("-- The names the plugin knew these by before they were generated.")
    out += [f"---@alias para.{a} para.{t}" for a, t in LUA_ALIASES.items()]
    out += [
        "",
        "---@class para.ResponseError",
        "---@field code integer",
        "---@field message string",
        "---@field data { code: string, [string]: any }?",
        "",
        "return M",
        "",
    ]
    return "\n".join(out)


# ---- docs/protocol.md ----------------------------------------------------------------------

BEGIN = "<!-- generated by `python -m para_rpc.gen` from the Structs: do not edit ({what}) -->"
END = "<!-- end of generated block -->"
BLOCK = re.compile(r"<!-- generated by `python -m para_rpc\.gen` from the Structs: do not edit \((?P<what>[^)]*)\) -->"
                   r"\n.*?" + re.escape(END), re.DOTALL)
SHARED = "shared objects"


def doc_owner() -> dict[type, str]:
    """Where each type is shown: in its method's section when one method alone uses it,
    else under Shared objects."""
    users: dict[type, list[str]] = {}
    for call in calls():
        for cls in closure(roots_of(call)):
            users.setdefault(cls, []).append(call.method)
    return {cls: ms[0] if len(set(ms)) == 1 else SHARED for cls, ms in users.items()}


def doc_block(what: str, owner: dict[type, str]) -> str:
    lines: list[str] = []
    if what != SHARED:
        call = next(c for c in calls() if c.method == what)
        arrow = {"request": "client → sidecar", "notification": "sidecar → client",
                 "server request": "sidecar → client"}[call.direction]
        kind = {"request": "request", "notification": "notification", "server request": "request"}[call.direction]
        sig = f"// {kind} {what}, {arrow}"
        if call.mutates is not None:
            sig += ", changes state" if call.mutates else ", reads only"
        lines.append(sig)
        lines.append(f"// params: {name(call.params) if call.params else 'none'}")
        if call.direction != "notification":
            lines.append(f"// result: {' | '.join(name(r) for r in call.results)}")
    for cls in [c for c in all_types() if owner.get(c) == what]:
        lines += ["", *ts_decl(cls)]
    body = "\n".join(lines).lstrip("\n")
    return f"{BEGIN.format(what=what)}\n```ts\n{body}\n```\n{END}"


def render_doc(current: str) -> str:
    owner = doc_owner()
    wanted = [c.method for c in calls()] + [SHARED]
    text = current
    for what in wanted:
        block = doc_block(what, owner)
        found = [m for m in BLOCK.finditer(text) if m.group("what") == what]
        if found:
            m = found[0]
            text = text[:m.start()] + block + text[m.end():]
        else:
            text = _insert(text, what, block)
    for what in {m.group("what") for m in BLOCK.finditer(text)} - set(wanted):
        text = drop(text, what)  # a method that is gone takes its block with it
    return text


def drop(text: str, what: str) -> str:
    """`text` without the generated block of `what` (and the blank line it added)."""
    return "".join(_drop_pieces(text, what))


def _drop_pieces(text: str, what: str) -> Iterator[str]:
    at = 0
    for m in BLOCK.finditer(text):
        if m.group("what") == what:
            yield text[at:m.start()]
            at = m.end() + 2 if text.startswith("\n\n", m.end()) else m.end()
    yield text[at:]


def _insert(text: str, what: str, block: str) -> str:
    """A new block goes after the first paragraph of its section (the method's one-line
    summary), or at the start of Shared objects."""
    heading = "## Shared objects" if what == SHARED else f"## `{what}`"
    at = text.find(f"\n{heading}\n")
    if at < 0:
        raise SystemExit(f"docs/protocol.md has no section `{heading}` for the generated block of {what}")
    body = at + 1 + len(heading) + 1  # the blank line under the heading
    cut = body if what == SHARED else text.find("\n\n", body + 1) + 1
    return text[:cut] + "\n" + block + "\n" + text[cut:]


# ---- driver --------------------------------------------------------------------------------

OUTPUTS: dict[Path, Callable[[str], str]] = {
    DOC: render_doc,
    TS: lambda _current: render_ts(),
    LUA: lambda _current: render_lua(),
}


def generate(root: Path = ROOT) -> dict[Path, tuple[str, str]]:
    """{path: (what is there, what should be there)} for every generated file."""
    out = {}
    for rel, render in OUTPUTS.items():
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        out[rel] = (current, render(current))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m para_rpc.gen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff if a file is stale")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to write into (default: this one)")
    args = ap.parse_args(argv)
    stale = 0
    for rel, (current, wanted) in generate(args.root).items():
        if current == wanted:
            continue
        stale += 1
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(keepends=True),
                                                       wanted.splitlines(keepends=True),
                                                       f"a/{rel}", f"b/{rel}"))
        else:
            (args.root / rel).write_text(wanted, encoding="utf-8")
            print(f"wrote {rel}")
    if args.check and stale:
        print(f"{stale} generated file(s) stale: run `python -m para_rpc.gen`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
