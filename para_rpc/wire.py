"""The JSON the CLI reads and writes, without importing `json`.

`json` imports `re`, which imports `enum`, `functools` and `collections`: ~7 ms of CPU in every
`para` process, and twenty agents integrating at once on two CPUs feel that. CPython's `_json`
C module (always built, imports nothing) does the work `json` itself hands it: its scanner
decodes, its compact encoder and string quoting encode. What is here is only what `json` adds
around them, so the text is the same: `dumps(x)` is `json.dumps(x)`, `dumps(x, indent=2)` is
`json.dumps(x, indent=2)`, and `loads` accepts what `json.loads` accepts (tests/test_wire.py
compares them on hostile values). What `json.loads` rejects is a ParaError here, not a
traceback.
"""

from __future__ import annotations

import _json

from para_rpc.errors import Code, ParaError

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    from typing import Any

_INF = float("inf")
_quote = _json.encode_basestring_ascii  # (json's default: ensure_ascii)


class _Decoding:
    """What `_json.make_scanner` reads off `json.JSONDecoder()`: its defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": -_INF, "Infinity": _INF, "NaN": _INF - _INF}.__getitem__


_scan = _json.make_scanner(_Decoding)  # type: ignore[arg-type]  # (typeshed wants a make_scanner; the C code reads attributes)
_SPACE = " \t\n\r"  # (JSON's whitespace: json.decoder.WHITESPACE)


def loads(data: str | bytes) -> Any:
    """`json.loads(data)` for a str or UTF-8 bytes (what the wire carries); what it would
    reject raises ParaError(invalid_input) with json's reason."""
    if isinstance(data, (bytes, bytearray)):
        try:  # (json.loads detects a UTF-8 BOM and drops it, and passes surrogates through)
            data = bytes(data).removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as e:
            raise ParaError(Code.invalid_input, f"not JSON: not UTF-8 ({e})") from None
    elif data.startswith("\ufeff"):
        raise ParaError(Code.invalid_input, "not JSON: it starts with a UTF-8 BOM")
    start = len(data) - len(data.lstrip(_SPACE))
    try:
        value, end = _scan(data, start)
    except StopIteration as e:
        raise ParaError(Code.invalid_input, f"not JSON: expecting a value at character {e.value}") from None
    except (ValueError, RecursionError) as e:  # (JSONDecodeError, an int past the digit limit, deep nesting)
        raise ParaError(Code.invalid_input, f"not JSON: {e}") from None
    rest = data[end:].lstrip(_SPACE)
    if rest:
        raise ParaError(Code.invalid_input, f"not JSON: extra data at character {len(data) - len(rest)}")
    return value


def _unserializable(o: object) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # (json's words for them, allow_nan)


def _float(o: float) -> str:
    text = float.__repr__(o)
    return _SPECIAL.get(text, text)


def _key(k: object) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, float):
        return _float(k)
    if k is True or k is False or k is None:
        return "null" if k is None else "true" if k else "false"
    if isinstance(k, int):
        return int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


def dumps(obj: Any, indent: int | str | None = None) -> str:
    """`json.dumps(obj)` or `json.dumps(obj, indent=indent)`, to the byte."""
    if indent is None:
        # json's own path for these arguments: the C encoder, which ignores an indent (3.11).
        encode = _json.make_encoder({}, _unserializable, _quote, None, ": ", ", ", False, False, True)
        return "".join(encode(obj, 0))
    out: list[str] = []
    _indented(obj, " " * indent if isinstance(indent, int) else indent, "\n", out, set())
    return "".join(out)


def _indented(o: Any, pad: str, newline: str, out: list[str], seen: set[int]) -> None:
    """json.encoder's `_make_iterencode` with json.dumps's defaults, appending to `out`;
    `newline` is the line break and indentation `o` starts at. (A container's strings,
    nulls and booleans are written in its own loop: `list --json` of a hundred sessions is
    thousands of them, and a call per value was most of its time.)"""
    if isinstance(o, str):
        out.append(_quote(o))
    elif o is None or o is True or o is False:
        out.append("null" if o is None else "true" if o else "false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        out.append(_float(o))
    elif isinstance(o, (list, tuple, dict)):
        if not o:
            out.append("{}" if isinstance(o, dict) else "[]")
            return
        if id(o) in seen:
            raise ValueError("Circular reference detected")
        seen.add(id(o))
        inner = newline + pad
        between = "," + inner
        if isinstance(o, dict):
            out.append("{" + inner)
            first = True
            for k, v in o.items():
                key = _quote(k if isinstance(k, str) else _key(k)) + ": "
                if not first:
                    key = between + key
                first = False
                if isinstance(v, str):
                    out.append(key + _quote(v))
                elif v is None or v is True or v is False:
                    out.append(key + ("null" if v is None else "true" if v else "false"))
                else:
                    out.append(key)
                    _indented(v, pad, inner, out, seen)
            out.append(newline + "}")
        else:
            out.append("[" + inner)
            for i, v in enumerate(o):
                if i:
                    out.append(between)
                if isinstance(v, str):
                    out.append(_quote(v))
                else:
                    _indented(v, pad, inner, out, seen)
            out.append(newline + "]")
        seen.discard(id(o))
    else:
        _unserializable(o)
