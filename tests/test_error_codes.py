"""`errors.Code` is not an `enum.Enum` at run time (`enum` costs every `para` process ~3.5 ms to
import) but behaves as one: mypy checks it as the Enum its source reads as, and here the same
class body, run as a real `enum.Enum`, must give the same members, order, values, lookups,
text, hashes, pickles and copies. A member added, renamed or changed stays in step by
construction; a difference in behaviour fails here."""

from __future__ import annotations

import ast
import copy
import enum
import inspect
import pickle

import pytest

from para_rpc import errors
from para_rpc.errors import Code, ParaError


def as_enum() -> type[enum.Enum]:
    """Code's own source (errors.py), with `enum.Enum` as its base."""
    tree = ast.parse(inspect.getsource(errors))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Code"]
    cls.bases = [ast.Attribute(ast.Name("enum", ast.Load()), "Enum", ast.Load())]
    scope: dict[str, object] = {"enum": enum}
    exec(compile(ast.fix_missing_locations(ast.Module([cls], [])), errors.__file__, "exec"), scope)
    reference = scope["Code"]
    assert isinstance(reference, type) and issubclass(reference, enum.Enum)
    return reference


REFERENCE = as_enum()
PAIRS = list(zip(Code, REFERENCE, strict=True))


def test_the_members_are_the_enums_in_order() -> None:
    assert len(Code) == len(REFERENCE) == len(PAIRS) > 0
    assert list(Code.__members__) == list(REFERENCE.__members__)
    for ours, theirs in PAIRS:
        assert (ours.name, ours.value) == (theirs.name, theirs.value)
        assert (ours.rpc, ours.exit, ours.meaning) == (theirs.rpc, theirs.exit, theirs.meaning)


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=lambda c: c.name)
def test_a_member_looks_and_behaves_as_the_enums(ours: Code, theirs: enum.Enum) -> None:
    assert repr(ours) == repr(theirs) and str(ours) == str(theirs)
    assert f"{ours}|{ours:>30}" == f"{theirs}|{theirs:>30}"
    assert hash(ours) == hash(theirs)
    assert Code[ours.name] is ours and Code(ours.value) is ours and Code(ours) is ours
    assert getattr(Code, ours.name) is ours and isinstance(ours, Code) and ours in Code
    assert ours == ours and ours != theirs and ours != ours.value and ours != ours.name
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(ours, protocol)) is ours
    assert copy.copy(ours) is ours and copy.deepcopy({"c": ours})["c"] is ours
    assert ParaError.from_rpc(ParaError(ours, "m").to_rpc()).code is ours


def test_what_is_not_a_member_is_refused_as_enum_refuses_it() -> None:
    for cls in (Code, REFERENCE):
        with pytest.raises(KeyError):
            cls["no_such_code"]
        with pytest.raises(ValueError, match="is not a valid Code"):
            cls((0, 0, "no such code"))
        with pytest.raises(AttributeError):
            cls.busy = cls.internal
        with pytest.raises(AttributeError):
            cls.busy.name = "other"
        with pytest.raises(TypeError):
            cls.__members__["busy"] = cls.internal
    assert Code.busy is not REFERENCE.busy and Code.busy.name == "busy"
