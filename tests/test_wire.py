"""para_rpc/wire.py is `json` for what the CLI reads and writes: `dumps` prints what `json.dumps`
prints (compact, and with `indent=2` as `--json` does), byte for byte; `loads` returns what
`json.loads` returns; and what `json.loads` rejects is a ParaError, never a traceback.
The values are the hostile ones: a sidecar's result carries agents' text, paths and numbers."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import pytest

from para_rpc import wire
from para_rpc.errors import Code, ParaError


class Str(str):
    pass


class Int(int):
    pass


class Float(float):
    pass


VALUES: list[object] = [
    None, True, False, 0, -1, 10**300, -(10**4000), 2**63, Int(7),
    0.0, -0.0, 1.5, 1e400, -1e400, float("nan"), 1e-320, 1e16, 0.1 + 0.2, Float(2.5), 123456789.0,
    "", "plain", "é ü ñ 日本 😀", "\ud800 lone \udfff", "\udcff surrogateescape", "\x00\x01\x1f\x7f\x80\x9f",
    "quote \" backslash \\ slash / tab \t nl \n cr \r", "\u2028\u2029", Str("sub"),
    [], {}, [[]], [{}], {"": {}}, (1, "t"), [1, [2, [3, [4, {"five": [5]}]]]],
    {"a": 1, "b": [True, None], "c": {"d": "e\x1b[31m"}}, OrderedDict([("z", 1), ("a", 2)]),
    {1: "int key", 2.5: "float key", True: "bool key", None: "null key", float("inf"): "inf key", -0.0: "z"},
    {False: 0, 10**30: "huge key", Str("k"): Int(3)},
    {"sessions": [{"name": "alpha", "ports": [8000, 8001], "agent": None, "created_at": 1767225600.123456}]},
    list(range(50)), {"nested": [[[[[[[[[[]]]]]]]]]]},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
@pytest.mark.parametrize("indent", [None, 2, 0, "\t"], ids=lambda i: f"indent={i!r}")
def test_dumps_prints_what_json_dumps_prints(value: object, indent: int | str | None) -> None:
    assert wire.dumps(value, indent=indent) == json.dumps(value, indent=indent)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_loads_reads_back_what_json_reads(value: object) -> None:
    text = json.dumps(value, indent=2)
    for data in (text, text.encode(), f" \n\t{text}\r\n "):
        got, want = wire.loads(data), json.loads(data)
        assert repr(got) == repr(want)  # (repr: NaN is not equal to itself, -0.0 is equal to 0.0)
        assert type(got) is type(want)


@pytest.mark.parametrize("text", [
    '"\\u00e9\\ud83d\\ude00"', '"\\ud800"', '"é"', '[1e400, -1e400, NaN, Infinity, -Infinity]', '1E+2', '-0',
    '{"a": 1, "a": 2}', '[1.0000000000000001, 5e-324, 123.456e-789]', '{"k":[ ]}', ' \t\n\r[1]\r\n',
], ids=repr)
def test_loads_accepts_what_json_accepts(text: str) -> None:
    assert repr(wire.loads(text)) == repr(json.loads(text))
    assert repr(wire.loads(text.encode("utf-8", "surrogatepass"))) == repr(json.loads(text.encode("utf-8", "surrogatepass")))


REJECTED = [
    "", " ", "[1] [2]", '{"a": 1} x', "[1,]", '{"a" 1}', "{'a': 1}", "[", '"unterminated', '"ctl \x01 char"',
    '"bad \\x escape"', "tru", "nan", "01", "1.", ".5", "+1", "0x10", "[1 2]", '{"a":1,}', "\ufeff[1]", "//c\n1",
    "1" * 5000, "[" * 100_000, '{"a":' * 100_000, "\u00a0 1", "1\u00a0",
]


@pytest.mark.parametrize("text", REJECTED, ids=lambda t: repr(t[:30]))
def test_loads_rejects_what_json_rejects_with_a_para_error(text: str) -> None:
    with pytest.raises((ValueError, RecursionError)):
        json.loads(text)
    with pytest.raises(ParaError) as err:
        wire.loads(text)
    assert err.value.code is Code.invalid_input and err.value.message.startswith("not JSON: ")


@pytest.mark.parametrize("data", [b"\xff\xfe", b'"\xc3"', b'["\xed\xa0\x80"', b"[1] x"], ids=repr)
def test_loads_rejects_bytes_json_rejects(data: bytes) -> None:
    with pytest.raises(ValueError):  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        json.loads(data)
    with pytest.raises(ParaError):
        wire.loads(data)


def test_loads_takes_utf8_with_bom_and_surrogates_as_json_does() -> None:
    data = b'\xef\xbb\xbf["\xed\xa0\x80", "\xc3\xa9"]'
    assert wire.loads(data) == json.loads(data) == ["\ud800", "é"]


@pytest.mark.parametrize("value, error", [
    ({"k": object()}, TypeError), ([b"bytes"], TypeError), ({(1, 2): "tuple key"}, TypeError), ({1j}, TypeError),
    ([10**5000], ValueError),  # (past int's digit limit, as json's int.__repr__ finds)
], ids=["an object", "bytes", "a tuple key", "a set", "a huge int"])
def test_dumps_refuses_what_json_dumps_refuses(value: object, error: type[Exception]) -> None:
    for indent in (None, 2):
        with pytest.raises(error) as want:
            json.dumps(value, indent=indent)
        with pytest.raises(error) as got:
            wire.dumps(value, indent=indent)
        assert str(got.value) == str(want.value)


def test_dumps_refuses_a_circular_value_as_json_does() -> None:
    loop: list[object] = []
    loop.append(loop)
    for indent in (None, 2):
        with pytest.raises(ValueError, match="Circular reference detected"):
            json.dumps(loop, indent=indent)
        with pytest.raises(ValueError, match="Circular reference detected"):
            wire.dumps(loop, indent=indent)
    shared = [1]  # (the same list twice is not a loop)
    assert wire.dumps([shared, shared], indent=2) == json.dumps([shared, shared], indent=2)


def test_nan_and_infinities_print_as_json_prints_them() -> None:
    assert wire.dumps([math.nan, math.inf, -math.inf, -0.0]) == "[NaN, Infinity, -Infinity, -0.0]"


def test_importing_wire_loads_neither_json_re_nor_enum() -> None:
    """What it is for. `python -S`: nothing but the standard library's start and para_rpc."""
    from conftest import bare_imports
    assert bare_imports("from para_rpc import wire; wire.loads(wire.dumps({'a': [1.5, None, 'é']}, indent=2))",
                        {"json", "json.decoder", "json.encoder", "re", "enum", "typing"}) == []
