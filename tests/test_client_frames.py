"""The CLI's client reads what the sidecar sends and nothing else: a frame whose body is not
JSON, or is JSON but not a JSON-RPC message (an array, a number), is a clear
`sidecar_unavailable` error, never a traceback from deep in the caller."""

from __future__ import annotations

import socket

import pytest

from para_rpc.client import Connection
from para_rpc.errors import Code, ParaError


def refusal_of(body: bytes) -> ParaError:
    """What a request gets back when the sidecar answers with one frame of `body`."""
    ours, sidecar = socket.socketpair()
    with Connection(ours) as conn, sidecar:
        sidecar.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        with pytest.raises(ParaError) as err:
            conn.request("para/hello", {})
    assert err.value.code is Code.sidecar_unavailable
    return err.value


@pytest.mark.parametrize("body", [b"[1]", b"3", b'"x"', b"null"])
def test_a_frame_that_is_not_an_object_is_a_clear_error(body: bytes) -> None:
    assert "malformed message" in refusal_of(body).message


@pytest.mark.parametrize("body", [b"{", b'{"id": 1} {}', b"\xff\xfe", b"[" * 100_000, b"NaN x", b""], ids=lambda b: repr(b[:12]))
def test_a_frame_that_is_not_json_is_a_clear_error(body: bytes) -> None:
    """(what json.loads raised, ValueError or RecursionError, reached the CLI as a traceback)"""
    message = refusal_of(body).message
    assert message.startswith("malformed message from the sidecar (not JSON: "), message


@pytest.mark.parametrize("header", [b"Content-Length: x", b"Content-Length: -5", b"Content-Length: 1_0",
                                    b"Content-Length:", b"Content-Type: text"], ids=repr)
def test_a_frame_without_a_usable_length_is_a_clear_error(header: bytes) -> None:
    ours, sidecar = socket.socketpair()
    with Connection(ours) as conn, sidecar:
        sidecar.sendall(header + b"\r\n\r\n{}")
        with pytest.raises(ParaError) as err:
            conn.request("para/hello", {})
        assert err.value.code is Code.sidecar_unavailable and "malformed message" in err.value.message
