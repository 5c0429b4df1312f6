"""The lean outputSchemas (tools.lean_schema) mean exactly what msgspec's schemas of the
result Structs mean: jsonschema gives every value the same verdict under both.

The values: real results of every tool from a real sidecar through the real `para mcp`
bridge (sessions active and dirty, integrated, conflicted then aborted, cancelled,
recovered, in review, with scripted agents, a plan), and, from each of them, hostile
copies (every key deleted in turn, an unknown key added to every object, every value
replaced by null and by a value of each other JSON type). Plus hand-made schemas where the
transformation must not merge, and a check that it left no mergeable anyOf behind.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import validator_for
from referencing import Registry

from para_rpc.server.mcp.tools import TOOLS, lean_schema, output_schema, struct_schema

from conftest import commit_file
from mcp_util import TOOLS as SERVED, call, call_error, mcp_client, wait_for_states

SPECS = {spec.name: spec for spec in TOOLS}
# What replaces a value in the hostile copies: null and one value of every JSON type.
REPLACEMENTS: list[Any] = [None, True, 1, 1.5, "x", [], {}, [None], {"zz": None}]


def validator(schema: dict[str, Any]) -> Any:
    """As the SDK's client builds it (mcp/client/session.py: _output_schema_validator)."""
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=Registry())


def hostile(value: Any) -> Iterator[tuple[str, Any]]:
    """(where, a copy of `value` with one thing wrong there). A list is cut down to the one
    element being spoiled, so each copy stays small (and each element's shape is tried)."""
    for r in REPLACEMENTS:
        yield f"<root>={r!r}", r
    if isinstance(value, dict):
        yield "+zz_unknown", {**value, "zz_unknown": 1}
        for k, v in value.items():
            yield f"-{k}", {kk: vv for kk, vv in value.items() if kk != k}
            for where, bad in hostile(v):
                yield f"{k}/{where}", {**value, k: bad}
    elif isinstance(value, list):
        for i, v in enumerate(value):
            for where, bad in hostile(v):
                yield f"[{i}]/{where}", [bad]


def same_verdicts(tool: str, instances: list[Any]) -> tuple[int, int]:
    """Assert the msgspec schema and the lean one agree on every instance and every hostile
    copy of it; return (copies tried, copies refused) so a caller sees the test has teeth."""
    spec = SPECS[tool]
    orig, lean = validator(struct_schema(*spec.out)), validator(output_schema(*spec.out))
    tried = refused = 0
    for inst in instances:
        assert orig.is_valid(inst) and lean.is_valid(inst), (tool, "a real result fails its schema", inst)
        for where, bad in hostile(inst):
            verdict = orig.is_valid(bad)
            assert lean.is_valid(bad) == verdict, (tool, where, verdict)
            tried += 1
            refused += not verdict
    return tried, refused


# ---- real results from every tool -----------------------------------------------------------

async def collect_results(repo: Path) -> dict[str, list[Any]]:
    got: dict[str, list[Any]] = {}

    async def c_(c: Any, tool: str, args: dict[str, Any] | None = None) -> Any:
        r = await call(c, tool, args)
        got.setdefault(tool, []).append(copy.deepcopy(r))
        return r

    async with mcp_client(repo) as c:
        wts = {}
        for name in ("alpha", "beta", "gamma"):
            wts[name] = Path((await c_(c, "para_start", {"session": name}))["worktree"])
        (wts["alpha"] / "a.txt").write_text("a\n")
        (wts["beta"] / "shared.txt").write_text("beta\n")
        (wts["gamma"] / "shared.txt").write_text("gamma\n")
        await c_(c, "para_list")
        await c_(c, "para_diff", {"session": "alpha"})
        await c_(c, "para_conflicts")                                     # beta x gamma collide
        await c_(c, "para_integrate", {"session": "alpha", "dry_run": True})
        await c_(c, "para_integrate", {"session": "beta", "message": "Beta"})
        assert "conflict" in await call_error(c, "para_integrate", {"session": "gamma", "message": "Gamma"})
        await c_(c, "para_list")                                          # gamma conflicted, beta gone
        await c_(c, "para_status")
        await c_(c, "para_abort", {"session": "gamma"})
        await c_(c, "para_cancel", {"session": "alpha"})
        await c_(c, "para_recover", {"session": "alpha"})
        await c_(c, "para_finish", {"session": "alpha", "message": "Alpha"})
        await c_(c, "para_resume", {"session": "alpha"})                  # recreated
        await c_(c, "para_send", {"session": "gamma", "message": "look at shared.txt"})
        await c_(c, "para_stop", {"session": "gamma"})
        await c_(c, "para_open", {"session": "gamma"})
        await c_(c, "para_config_show")
        await c_(c, "para_config_set", {"key": "agent.workflow", "value": "integrate", "scope": "project"})
        await c_(c, "para_clean")
        await c_(c, "para_cancel", {"session": "gamma", "discard": True})
        tasks = [{"session": "delta", "task": "```file:d.txt\nd\n```\n\nWhen done: para integrate \"D\"\n"},
                 {"session": "epsilon", "task": "```agent\nstatus working on it\nsleep 120\n```\n"}]
        await c_(c, "para_dispatch", {"tasks": tasks, "agent": "scripted"})
        plan = await c_(c, "para_dispatch", {"file": "tasks", "agent": "scripted"})   # a plan of one step
        assert plan["plan"] is not None
        await wait_for_states(c, {"delta": "integrated", "zeta": "integrated"})
        await c_(c, "para_send", {"session": "epsilon", "message": "and then this"})
        await c_(c, "para_status")
        await c_(c, "para_restart", {"session": "epsilon", "follow_up": "again", "stop": True})
        await c_(c, "para_wait", {"sessions": ["epsilon"], "timeout": 0})
        await c_(c, "para_plans")
        await c_(c, "para_list", {"all": True})
        await c_(c, "para_stop", {"session": "epsilon"})
        await c_(c, "para_list")
        await c_(c, "para_integrate", {"session": "alpha", "message": "Alpha"})
    return got


async def test_lean_schemas_give_every_real_and_hostile_value_the_same_verdict(sidecar, repo):
    commit_file(repo, "shared.txt", "base\n", "shared")
    commit_file(repo, "tasks/TASK_1_zeta.md", "```file:z.txt\nz\n```\n\nWhen done: para integrate \"Z\"\n", "task")
    got = await collect_results(repo)
    assert set(got) == SERVED - {"para_continue"}, set(SERVED) - set(got)
    # para_continue returns an IntegrateResult: para_integrate's real results stand for it
    got["para_continue"] = [r for r in got["para_integrate"] if "dry_run" not in r]
    total = 0
    for tool, instances in sorted(got.items()):
        tried, refused = same_verdicts(tool, instances)
        assert refused > tried // 4, (tool, tried, refused)  # the copies are hostile: most are refused
        total += tried
    assert total > 2000


# ---- hand-made schemas: where it must (and must not) merge ----------------------------------

NULL = {"type": "null"}
TREE = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Tree"}},
                                         "leaf": {"$ref": "#/$defs/Leaf"}}, "additionalProperties": False}
CASES: list[tuple[str, dict[str, Any], bool]] = [
    # (name, schema, whether the lean one still has an anyOf)
    ("type", {"anyOf": [{"type": "integer", "minimum": 3}, NULL], "default": None}, False),
    ("null first", {"anyOf": [NULL, {"type": "string", "minLength": 2}]}, False),
    ("type list", {"anyOf": [{"type": ["string", "integer"]}, NULL]}, False),
    ("object", {"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                           "additionalProperties": False}, NULL]}, False),
    ("array", {"anyOf": [{"type": "array", "items": {"type": "integer"}, "minItems": 1}, NULL]}, False),
    ("enum", {"anyOf": [{"enum": ["a", 1]}, NULL]}, False),
    ("typed enum", {"anyOf": [{"type": "string", "enum": ["a", "b"]}, NULL]}, False),
    ("const", {"anyOf": [{"const": "a"}, NULL]}, True),
    ("not", {"anyOf": [{"type": "string", "not": {"const": "a"}}, NULL]}, True),
    ("nested anyOf", {"anyOf": [{"type": "string", "anyOf": [{"minLength": 3}, {"maxLength": 1}]}, NULL]}, True),
    ("outer validation", {"anyOf": [{"type": "string"}, NULL], "maxLength": 1}, True),
    ("outer collides", {"anyOf": [{"type": "string", "default": "x"}, NULL], "default": None}, True),
    ("no type", {"anyOf": [{"minimum": 3}, NULL]}, True),
    ("three branches", {"anyOf": [{"type": "string"}, {"type": "integer"}, NULL]}, True),
    ("ref with siblings", {"type": "object", "properties": {"a": {"$ref": "#/$defs/Leaf", "maxLength": 1}},
                           "$defs": {"Leaf": {"type": "string"}}}, False),
    ("ref to a nullable def", {"type": "object", "properties": {"a": {"anyOf": [{"$ref": "#/$defs/Leaf"}, NULL]}},
                               "$defs": {"Leaf": {"title": "Leaf", "type": "string", "maxLength": 2}}}, False),
    ("recursive", {"type": "object", "properties": {"t": {"anyOf": [{"$ref": "#/$defs/Tree"}, NULL]}},
                   "$defs": {"Tree": TREE, "Leaf": {"enum": ["x", "y"]}}}, True),
]
VALUES: list[Any] = [None, True, 0, 3, 4.5, "", "a", "ab", "abc", "x", 1, [], [1], [1, "a"], {}, {"a": "s"},
                     {"a": 1}, {"a": "s", "b": 1}, {"t": None}, {"t": {}}, {"t": {"kids": [{}, {"leaf": "x"}]}},
                     {"t": {"kids": [{"leaf": "z"}]}}, {"t": {"kids": [{"kids": [{"zz": 1}]}]}}, {"a": None},
                     {"a": "abc"}, {"a": "x"}]


def _has(node: Any, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_has(v, key) for v in node.values())
    return isinstance(node, list) and any(_has(v, key) for v in node)


@pytest.mark.parametrize(("name", "schema", "keeps_anyof"), CASES, ids=[c[0] for c in CASES])
def test_lean_schema_by_hand(name: str, schema: dict[str, Any], keeps_anyof: bool) -> None:
    lean = lean_schema(schema)
    assert _has(lean, "anyOf") == keeps_anyof, lean
    orig, new = validator(schema), validator(lean)
    for v in VALUES:
        assert new.is_valid(v) == orig.is_valid(v), (name, v, lean)
        assert new.is_valid({"t": v}) == orig.is_valid({"t": v}), (name, v, lean)
    if name == "recursive":  # the recursive definition stays, referenced; the other is inlined
        assert set(lean["$defs"]) == {"Tree"} and lean["$defs"]["Tree"]["properties"]["leaf"] == {"enum": ["x", "y"]}
    if name == "ref with siblings":  # a $ref next to other keywords is left alone, its definition kept
        assert lean["properties"]["a"] == {"$ref": "#/$defs/Leaf", "maxLength": 1} and "Leaf" in lean["$defs"]
    assert schema == CASES[[c[0] for c in CASES].index(name)][1]  # (the input is not changed)


# ---- nothing mergeable left in the served schemas ---------------------------------------------

def _null_anyofs(node: Any) -> list[Any]:
    if isinstance(node, dict):
        here = [node] if isinstance(node.get("anyOf"), list) and NULL in node["anyOf"] else []
        return here + [x for v in node.values() for x in _null_anyofs(v)]
    if isinstance(node, list):
        return [x for v in node for x in _null_anyofs(v)]
    return []


def test_served_schemas_have_no_null_anyof_and_no_ref() -> None:
    """Every `anyOf: [S, null]` msgspec writes for our results is one the lean schema merges
    (none of our Structs is recursive, so no `$ref` is left either)."""
    before = 0
    for spec in TOOLS:
        orig, lean = struct_schema(*spec.out), output_schema(*spec.out)
        before += len(_null_anyofs(orig))
        assert _null_anyofs(lean) == [], (spec.name, _null_anyofs(lean)[:2])
        assert not _has(lean, "$ref") and "$defs" not in lean, spec.name
    assert before > 500  # (msgspec's spelling has many: the check above is not vacuous)
