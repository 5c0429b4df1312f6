"""Every request gets an answer: the sidecar's JSON-RPC transport never drops a message.

Real editors send what JSON-RPC allows and what their encoders produce: vscode-jsonrpc's
`sendRequest('para/unsubscribe')` and Neovim's `client:request('para/hello', nil)` leave the
`params` member out; Neovim encodes an empty Lua table `{}` as `[]`. Those are empty params.
Anything malformed gets a JSON-RPC error with the right code (-32700 parse error, -32600
invalid request, -32602 invalid params); framing that cannot be resynchronized (no
Content-Length, a length no message comes near) gets a parse error and a clean close. After
each, the connection (when it is still open) and the sidecar answer the next request.

The frames are written as raw bytes on the socket, with no project client code in the way.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from conftest import Sidecar

SHARED_SIDECAR = True
ANSWER_TIMEOUT = 20  # an answer that takes longer than this was never sent
REPO = "@REPO@"      # replaced by the test repository's path


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def request(method: str | None = "para/hello", params: Any = "-", msg_id: Any = 1, **extra: Any) -> bytes:
    """A framed request; `params="-"` leaves the member out."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id}
    if method is not None:
        msg["method"] = method
    if params != "-":
        msg["params"] = params
    msg.update(extra)
    return frame(json.dumps(msg).encode())


class Raw:
    """A bare socket speaking LSP framing."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(ANSWER_TIMEOUT)
        self.sock.connect(str(path))
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no answer within {ANSWER_TIMEOUT}s") from None
        except ConnectionResetError:
            chunk = b""
        self.buf += chunk
        return bool(chunk)

    def read(self) -> dict[str, Any] | None:
        """The next message, or None when the sidecar closed the connection."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                assert not self.buf, f"connection closed inside a message: {self.buf!r}"
                return None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            assert self._fill(), "connection closed inside a message body"
            rest = self.buf.partition(b"\r\n\r\n")[2]
        self.buf = rest[length:]
        return json.loads(rest[:length])

    def closed(self) -> bool:
        return not self.buf and not self._fill()

    def hello(self, msg_id: int = 77) -> dict[str, Any]:
        self.sock.sendall(request("para/hello", {"client": "tolerance"}, msg_id))
        reply = self.read()
        assert reply is not None and reply["id"] == msg_id, reply
        return reply["result"]


@pytest.fixture
def raw(sidecar: Sidecar) -> Any:
    conn = Raw(sidecar.socket)
    yield conn
    conn.close()


# (id, frame bytes, expected: "result" or the JSON-RPC error code, the connection closes after)
CASES = [
    # params: empty forms are {}
    ("params-omitted", request("para/hello"), "result", False),
    ("params-null", request("para/hello", None), "result", False),
    ("params-empty-array", request("para/hello", []), "result", False),
    ("unsubscribe-params-omitted", request("para/unsubscribe"), "result", False),
    ("subscribe-params-empty-array", request("para/subscribe", []), "result", False),
    # params that are not an object
    ("params-array-with-items", request("para/hello", [1]), -32602, False),
    ("params-string", request("para/hello", "x"), -32602, False),
    ("params-number", request("para/hello", 3), -32602, False),
    ("params-true", request("para/hello", True), -32602, False),
    # wrong contents
    ("unknown-key", request("para/list", {"cwd": REPO, "bogus": 1}), -32602, False),
    ("wrong-type", request("para/list", {"cwd": REPO, "all": "yes"}), -32602, False),
    ("missing-required", request("para/list", {}), -32602, False),
    ("list-params-omitted", request("para/list"), -32602, False),
    ("nested-object-that-looks-like-a-message",
     request("para/hello", {"client": {"jsonrpc": "2.0", "id": 3, "result": 1}}), -32602, False),
    ("extension-member-at-top-level", request("para/hello", {}, 1, x=1), "result", False),
    # the envelope
    ("id-without-method", request(None, {}), -32600, False),
    ("id-without-method-or-params", request(None), -32600, False),
    ("method-not-a-string", request(5, {}), -32600, False),  # type: ignore[arg-type]
    ("id-an-object", request("para/hello", {}, {"a": 1}), -32600, False),
    ("no-jsonrpc-member", frame(b'{"id": 1, "method": "para/hello", "params": {}}'), -32600, False),
    ("jsonrpc-1.0", frame(b'{"jsonrpc": "1.0", "id": 1, "method": "para/hello"}'), -32600, False),
    ("unknown-method", request("para/nope", {}), -32601, False),
    ("batch", frame(b'[{"jsonrpc": "2.0", "id": 1, "method": "para/hello"}]'), -32600, False),
    ("empty-batch", frame(b"[]"), -32600, False),
    ("a-string", frame(b'"para/hello"'), -32600, False),
    ("a-number", frame(b"42"), -32600, False),
    ("invalid-json", frame(b'{"jsonrpc": "2.0", "id": 1, "method": '), -32700, False),
    ("nan-is-not-json", frame(b'{"jsonrpc": "2.0", "id": 1, "method": "para/hello", "params": {"protocol": NaN}}'),
     -32700, False),
    ("invalid-utf8", frame(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}'), -32700, False),
    # workspace/executeCommand
    ("execute-command-without-arguments",
     request("workspace/executeCommand", {"command": "para.list"}), -32602, False),
    ("execute-command-with-empty-arguments",
     request("workspace/executeCommand", {"command": "para.list", "arguments": []}), -32602, False),
    ("execute-command-without-params", request("workspace/executeCommand"), -32602, False),
    ("execute-command-without-command", request("workspace/executeCommand", {"arguments": [{}]}), -32602, False),
    ("execute-command-unknown", request("workspace/executeCommand", {"command": "para.nope"}), -32602, False),
    ("execute-command-list", request("workspace/executeCommand",
                                     {"command": "para.list", "arguments": [{"cwd": REPO}]}), "result", False),
    ("initialize-without-params", request("initialize"), -32602, False),
    # framing that cannot be resynchronized: a parse error, then the connection closes
    ("huge-content-length", b"Content-Length: 99999999999\r\n\r\n{}", -32700, True),
    ("no-content-length", b"Content-Type: application/json\r\n\r\n{}", -32700, True),
    ("not-a-header", b"hello there\r\n\r\n", -32700, True),
    ("content-length-not-a-number", b"Content-Length: abc\r\n\r\n{}", -32700, True),
    ("header-line-without-end", b"Content-Length: 2" + b"0" * 100_000, -32700, True),
]


@pytest.mark.parametrize("raw_bytes,expected,closes", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_malformed_request_is_answered_and_the_connection_stays_usable(
        sidecar: Sidecar, raw: Raw, repo: Path, raw_bytes: bytes, expected: Any, closes: bool) -> None:
    """Each frame gets exactly one answer (a result, or an error with the code JSON-RPC
    prescribes); afterwards the same connection answers a hello (unless the framing was
    garbage: then it is closed cleanly), and so does a fresh connection."""
    if REPO.encode() in raw_bytes:
        raw_bytes = frame(raw_bytes.partition(b"\r\n\r\n")[2].replace(REPO.encode(), str(repo).encode()))
    raw.sock.sendall(raw_bytes)
    reply = raw.read()
    assert reply is not None, "the sidecar closed the connection without an answer"
    assert reply.get("jsonrpc") == "2.0"
    if expected == "result":
        assert "error" not in reply, reply
        assert reply["id"] == 1 and "result" in reply
    else:
        assert "result" not in reply, reply
        assert reply["error"]["code"] == expected, reply
        assert reply["error"]["message"]
        assert reply["id"] in (1, None)
    if closes:
        assert raw.closed(), "framing garbage must close the connection"
    else:
        assert raw.hello()["pid"] == sidecar.pid
    fresh = Raw(sidecar.socket)
    try:
        assert fresh.hello()["pid"] == sidecar.pid
    finally:
        fresh.close()
    assert sidecar.proc.poll() is None


@pytest.mark.parametrize("method,params", [
    ("para/hello", "-"), ("para/hello", None), ("para/hello", []),
    ("para/unsubscribe", "-"), ("para/unsubscribe", []),
    ("para/subscribe", "-"), ("para/subscribe", []),
], ids=["hello-omitted", "hello-null", "hello-array", "unsubscribe-omitted", "unsubscribe-array",
        "subscribe-omitted", "subscribe-array"])
def test_empty_params_in_every_form_an_editor_sends_mean_the_defaults(
        sidecar: Sidecar, raw: Raw, method: str, params: Any) -> None:
    """vscode-jsonrpc's sendRequest(method) omits params, Neovim's request(m, nil) omits them
    and request(m, {}) sends []: each is answered like `{}`."""
    raw.sock.sendall(request(method, params, 5))
    reply = raw.read()
    assert reply is not None and reply["id"] == 5 and "error" not in reply, reply
    expected = {"para/hello": lambda r: r["name"] == "para" and r["pid"] == sidecar.pid,
                "para/unsubscribe": lambda r: r == {"subscribed": False},
                "para/subscribe": lambda r: r == {"subscribed": True, "editor": False}}[method]
    assert expected(reply["result"]), reply


def test_a_subscription_made_with_omitted_params_delivers_events(sidecar: Sidecar, raw: Raw, para: Any,
                                                                  repo: Path) -> None:
    """The natural editor call `sendRequest('para/subscribe')` really subscribes, and
    `sendRequest('para/unsubscribe')` really stops the stream."""
    raw.sock.sendall(request("para/subscribe", "-", 1))
    assert raw.read()["result"]["subscribed"] is True
    para("start", "tol1")
    kinds = []
    while "para/sessionsChanged" not in kinds:
        msg = raw.read()
        assert msg is not None
        kinds.append(msg.get("method"))
    assert "para/event" in kinds
    raw.sock.sendall(request("para/unsubscribe", "-", 2))
    assert raw.read() == {"jsonrpc": "2.0", "id": 2, "result": {"subscribed": False}}
    para("cancel", "tol1")
    assert raw.hello(3)["pid"] == sidecar.pid  # nothing arrived in between: hello is the next message


def test_requests_after_lsp_shutdown_get_an_invalid_request_error(sidecar: Sidecar, raw: Raw) -> None:
    """LSP: a server that got `shutdown` errs every later request with InvalidRequest
    (pygls drops them silently, so a client would wait forever)."""
    raw.sock.sendall(request("shutdown", "-", 1))
    assert raw.read() == {"jsonrpc": "2.0", "id": 1, "result": None}
    raw.sock.sendall(request("para/hello", {}, 2))
    reply = raw.read()
    assert reply["id"] == 2 and reply["error"]["code"] == -32600, reply
    raw.sock.sendall(frame(json.dumps({"jsonrpc": "2.0", "method": "exit"}).encode()))
    assert raw.closed()
    assert sidecar.proc.poll() is None


def test_a_notification_with_omitted_params_is_handled(sidecar: Sidecar, raw: Raw) -> None:
    """Notifications get no answer by definition, but one without params (LSP `initialized`
    as some clients send it, `exit`) still takes effect."""
    raw.sock.sendall(frame(json.dumps({"jsonrpc": "2.0", "method": "initialized"}).encode()))
    assert raw.hello()["pid"] == sidecar.pid
    raw.sock.sendall(frame(json.dumps({"jsonrpc": "2.0", "method": "exit"}).encode()))
    assert raw.closed(), "`exit` without params closes this connection"
    assert sidecar.proc.poll() is None


# ---- integer bounds ----------------------------------------------------------------------

BIG = 10**30


@pytest.mark.parametrize("method,params", [
    ("para/events", {"after": BIG}),
    ("para/events", {"after": -1}),
    ("para/events", {"limit": BIG}),
    ("para/events", {"limit": -5}),
    ("para/diff", {"session": "b1", "max_bytes": BIG}),
    ("para/diff", {"session": "b1", "max_bytes": -1}),
    ("para/wait", {"timeout": -1}),
], ids=["after-huge", "after-negative", "limit-huge", "limit-negative", "max-bytes-huge",
        "max-bytes-negative", "timeout-negative"])
def test_integers_out_of_range_are_invalid_params_not_internal_errors(
        sidecar: Sidecar, raw: Raw, repo: Path, method: str, params: dict[str, Any]) -> None:
    """`para/events` with after = 10**30 was an OverflowError (`internal`): every integer a
    client sends is bounded (0 … 2**63-1; seconds ≥ 0) where its params are declared."""
    raw.sock.sendall(request(method, {"cwd": str(repo), **params}, 1))
    reply = raw.read()
    assert reply["error"]["code"] == -32602, reply
    field = next(iter(k for k in params if k != "session"))
    assert f"$.{field}" in reply["error"]["message"], reply
    assert raw.hello()["pid"] == sidecar.pid


def test_the_largest_integers_within_bounds_are_served(sidecar: Sidecar, raw: Raw, para: Any,
                                                       repo: Path) -> None:
    """Within the bounds, the documented clamps apply: after = 2**63-1 finds no event, a huge
    limit is clamped to 1000, a huge max_bytes to the diff's own limit."""
    para("start", "b2")
    for method, params in (("para/events", {"after": 2**63 - 1}), ("para/events", {"limit": 2**63 - 1}),
                           ("para/diff", {"session": "b2", "max_bytes": 2**63 - 1})):
        raw.sock.sendall(request(method, {"cwd": str(repo), **params}, 1))
        reply = raw.read()
        assert "error" not in reply, reply
    raw.sock.sendall(request("para/events", {"cwd": str(repo), "after": 2**63 - 1}, 2))
    assert raw.read()["result"] == {"events": []}
    raw.sock.sendall(request("para/events", {"cwd": str(repo), "limit": 2**63 - 1}, 3))
    assert [e["kind"] for e in raw.read()["result"]["events"]] == ["started"]
