"""`para mcp` and `para lsp`: the forwarders AI clients and editors launch (stdlib only).

Both make sure a sidecar of our version runs (starting one if needed, replacing an idle
one of another version, refusing a busy one: `client.connect`, the policy of every CLI
call), connect to one of its sockets, then copy bytes between stdin/stdout and that
socket until either side closes. They import neither mcp nor pygls nor lsprotocol, so a
client's session is usable in milliseconds once the sidecar is warm.

- `para mcp` (`main`), the MCP server an AI client launches: the MCP socket
  `<socket>.mcp`, after one preamble line (the client's working directory, the default
  repository of tools called without `repo`, and its PARA_* overrides). The tools live in
  the sidecar (`para_rpc/server/mcp.py`).
- `para lsp` (`lsp_main`), what an editor launches, as gopls `-remote=auto`: the
  JSON-RPC socket itself, with no preamble, so the editor speaks to the sidecar exactly
  as a direct socket client would and never handles socket paths, autostart races or
  versions. Frames are forwarded whole, and the ids of the editor's requests are noted
  until answered: if the sidecar goes away (restart, crash, `para sidecar stop`), each
  request still open gets a `sidecar_unavailable` error answer, then `para lsp` exits 9
  with a message on stderr, so an editor never waits on a request nobody will answer.
"""

from __future__ import annotations

import _socket  # (the type of client.Connection's socket, which `para lsp` pumps)
import json
import os
import socket
import sys
import threading
from typing import Any

from para_rpc import __version__, client, runtime
from para_rpc.errors import Code, ParaError

PREAMBLE_VERSION = 1
CHUNK = 1 << 16


def preamble(cwd: str | None) -> bytes:
    return (json.dumps({"para_mcp": PREAMBLE_VERSION, "cwd": cwd, "env": client.forwarded_env(),
                        "client": f"para mcp {__version__}", "pid": os.getpid()}) + "\n").encode()


def connect() -> socket.socket:
    """A connection to the MCP socket of a sidecar of our version (started when none runs)."""
    with client.connect(autostart=True):
        pass  # started, version-checked (an idle sidecar of another version is replaced)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(runtime.mcp_socket_path()))
    except OSError as e:
        sock.close()
        raise ParaError(Code.sidecar_unavailable, f"the sidecar does not serve MCP on {runtime.mcp_socket_path()}: {e}; "
                        f"see {runtime.log_path()}") from None
    return sock


_STDOUT = threading.Lock()  # (MCP: the stdin thread's parse errors go between whole lines)


def _parse_error(line: bytes) -> bytes | None:
    """The JSON-RPC answer to an MCP line the MCP SDK cannot parse, else None: one that is not
    JSON, or that holds a lone surrogate escape (`"\\udcff"`: json takes it, the SDK's parser
    does not). The SDK drops such a line without a word, and a client waiting for its answer
    would wait forever."""
    if not line.strip():
        return None
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as e:
        return json.dumps({"jsonrpc": "2.0", "id": None, "error": {
            "code": -32700, "message": f"Parse error: the line is not JSON ({type(e).__name__})"}}).encode() + b"\n"
    if b"\\ud" not in line.lower():  # (no surrogate escape at all: the common case, at no cost)
        return None
    try:
        json.dumps(msg, ensure_ascii=False).encode("utf-8")
        return None
    except UnicodeEncodeError:
        msg_id = msg.get("id") if isinstance(msg, dict) else None
        if isinstance(msg, dict) and "method" in msg and "id" not in msg:
            return None  # (a notification gets no answer; the SDK drops it)
        return json.dumps({"jsonrpc": "2.0", "id": msg_id if isinstance(msg_id, (str, int)) else None, "error": {
            "code": -32602, "message": "Invalid params: a string holds a lone surrogate escape (\\udXXX), "
                                       "which is not UTF-8 text"}}).encode() + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Framer:
    """Cuts an LSP-framed byte stream (`Content-Length` headers) into whole messages, reading
    only their headers. A stream that is not such framing is passed on as it is from then on
    (the sidecar answers it with a parse error and closes the connection)."""

    def __init__(self) -> None:
        self.buf = bytearray()  # (appending to bytes would copy a large message once per chunk)
        self.broken = False

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """The whole messages `data` completes: their bytes, and where the body starts in
        them (-1 for bytes that are not a message)."""
        if self.broken:
            return [(data, -1)]
        self.buf += data
        out: list[tuple[bytes, int]] = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return out + self._give_up() if len(self.buf) > 8192 else out  # no header is that long
            length = None
            for line in bytes(self.buf[:end]).split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value) if value.strip().isdigit() else None
            if length is None:
                return out + self._give_up()
            total = end + 4 + length
            if len(self.buf) < total:
                return out
            out.append((bytes(self.buf[:total]), end + 4))
            del self.buf[:total]

    def _give_up(self) -> list[tuple[bytes, int]]:
        self.broken = True
        return [(self.rest(), -1)]

    def rest(self) -> bytes:
        """What is left of an unfinished message (at the end of the stream)."""
        rest = bytes(self.buf)
        self.buf.clear()
        return rest


def _decode(frame: bytes, body_at: int) -> Any:
    """The JSON of a message, or None."""
    if body_at < 0:
        return None
    try:
        return json.loads(frame[body_at:])
    except ValueError:
        return None


def _key(msg_id: Any) -> Any:
    # 1 and "1" are different ids; True is not an id at all (the sidecar refuses it).
    return (type(msg_id).__name__, msg_id) if isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool) else None


class InFlight:
    """The editor's requests the sidecar has not answered yet (LSP mode)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[Any, tuple[Any, str]] = {}
        self.closed = False     # the sidecar side ended: nothing is forwarded any more
        # The editor ended it: it said LSP `exit` (the sidecar closes that connection), or its
        # `para/shutdown` was answered (the sidecar stops). Its closing is then no failure.
        self.ended_by_editor = False

    def from_editor(self, body: Any) -> bool:
        """Note a request of the editor; False once the sidecar side is gone (drop it)."""
        with self.lock:
            if self.closed:
                return False
            if isinstance(body, dict) and isinstance(body.get("method"), str):
                key = _key(body.get("id"))
                if key is not None:
                    self.open[key] = (body["id"], body["method"])
                elif body["method"] == "exit" and "id" not in body:
                    self.ended_by_editor = True
            return True

    def from_sidecar(self, body: Any) -> None:
        if isinstance(body, dict) and "method" not in body:
            with self.lock:
                _, method = self.open.pop(_key(body.get("id")), (None, None))
                if method == "para/shutdown" and "result" in body:
                    self.ended_by_editor = True

    def close(self) -> list[tuple[Any, str]]:
        """The sidecar side ended: the requests it will never answer."""
        with self.lock:
            self.closed = True
            left = list(self.open.values())
            self.open.clear()
            return left


def _error_frame(msg_id: Any, message: str) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": msg_id,
                       "error": {"code": Code.sidecar_unavailable.rpc, "message": message,
                                 "data": {"code": Code.sidecar_unavailable.name}}}).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _stdin_to_socket(sock: _socket.socket, state: dict[str, bool], inflight: InFlight | None) -> None:
    framer = Framer() if inflight is not None else None
    lines = b""  # MCP: the start of a line not complete yet
    try:
        while True:
            data = os.read(0, CHUNK)
            if not data:
                state["stdin_closed"] = True
                if framer is not None:
                    sock.sendall(framer.rest())
                elif lines:
                    sock.sendall(lines)
                break
            if framer is None or inflight is None:
                lines += data
                cut = lines.rfind(b"\n") + 1
                whole, lines = lines[:cut], lines[cut:]
                good = []
                for line in whole.splitlines(keepends=True):
                    answer = _parse_error(line)
                    if answer is None:
                        good.append(line)
                    else:
                        with _STDOUT:
                            _write_all(1, answer)
                if good:
                    sock.sendall(b"".join(good))
                continue
            frames = framer.feed(data)
            for frame, body_at in frames:
                if not inflight.from_editor(_decode(frame, body_at)):
                    return  # the sidecar side is gone; the main thread reports it
            sock.sendall(b"".join(frame for frame, _ in frames))
    except OSError:
        return  # stdin unreadable, or the sidecar went away (the main thread sees it too)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def pump(sock: _socket.socket, name: str = "para mcp", inflight: InFlight | None = None,
         pending: bytes = b"") -> int:
    """Copy stdin -> socket (a thread) and socket -> stdout (here) until the sidecar side ends.

    With `inflight` (LSP), messages are forwarded whole in both directions, and requests
    left open when the sidecar goes away are answered with a `sidecar_unavailable` error."""
    state = {"stdin_closed": False}
    framer = Framer() if inflight is not None else None
    threading.Thread(target=_stdin_to_socket, args=(sock, state, inflight), daemon=True).start()
    failure = None
    partial = b""  # MCP: written up to the last whole line
    try:
        data = pending
        while True:
            if data:
                if framer is None or inflight is None:
                    partial += data
                    cut = partial.rfind(b"\n") + 1
                    if cut:
                        with _STDOUT:
                            _write_all(1, partial[:cut])
                        partial = partial[cut:]
                else:
                    frames = framer.feed(data)
                    for frame, body_at in frames:
                        if inflight.open:  # (nothing to match an answer with: no need to decode)
                            inflight.from_sidecar(_decode(frame, body_at))
                    _write_all(1, b"".join(frame for frame, _ in frames))
            data = sock.recv(CHUNK)
            if not data:
                break
        if partial:
            _write_all(1, partial)
    except BrokenPipeError:
        return 0  # the client went away
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        failure = f"connection to the sidecar failed: {e}"
    finally:
        sock.close()
    left: list[tuple[Any, str]] = []
    if inflight is not None:
        left = inflight.close()
        if failure is None and (state["stdin_closed"] or inflight.ended_by_editor):
            return 0  # the editor ended it: closed stdin, or LSP `exit`, or para/shutdown
    elif failure is None and state["stdin_closed"]:
        return 0
    why = failure or "the sidecar closed the connection (it stopped, restarted or crashed)"
    if inflight is not None:
        message = f"{why}; restart the editor's para connection (`para lsp`)"
        try:
            _write_all(1, b"".join(_error_frame(msg_id, f"{method}: {message}") for msg_id, method in left))
        except OSError:
            pass  # the editor is gone too
    print(f"{name}: {why}; see {runtime.log_path()}", file=sys.stderr)
    return Code.sidecar_unavailable.exit


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    """`para mcp`."""
    cwd = _cwd()
    if sys.stdin.isatty():
        print("para mcp: speaks MCP on stdin/stdout for AI clients; configure one with `para mcp init`",
              file=sys.stderr)
    if os.environ.get("PARA_TOKEN"):
        # An agent's para reaches only its session-bound socket, whose gate serves the session's
        # own CLI verbs: MCP's tools (dispatch, cancel, every session) are the orchestrator's.
        print("para mcp: not served to an agent of a session (PARA_TOKEN is set): its para reaches only "
              "its session's bound socket; use `para status`, `para integrate` and the other session "
              "commands of the CLI", file=sys.stderr)
        return Code.forbidden.exit
    try:
        sock = connect()
        sock.sendall(preamble(cwd))
    except ParaError as e:
        print(f"para mcp: {e.message}", file=sys.stderr)
        return e.code.exit
    except OSError as e:
        print(f"para mcp: cannot reach the sidecar: {e}", file=sys.stderr)
        return Code.sidecar_unavailable.exit
    return pump(sock)


def lsp_main(argv: list[str] | None = None) -> int:
    """`para lsp`."""
    if sys.stdin.isatty():
        print("para lsp: speaks JSON-RPC (LSP framing) on stdin/stdout for editors, which start it; "
              "see docs/protocol.md", file=sys.stderr)
    try:
        conn = client.connect(autostart=True)  # said para/hello: our version, or replaced, or refused
    except ParaError as e:
        print(f"para lsp: {e.message}", file=sys.stderr)
        return e.code.exit
    except OSError as e:
        print(f"para lsp: cannot reach the sidecar: {e}", file=sys.stderr)
        return Code.sidecar_unavailable.exit
    conn.sock.settimeout(None)
    # (anything the sidecar sent after its hello answer belongs to the editor)
    return pump(conn.sock, "para lsp", InFlight(), pending=conn.buf)


if __name__ == "__main__":
    sys.exit(main())
