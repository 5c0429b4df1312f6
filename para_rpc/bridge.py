"""`para mcp`: the MCP server an AI client launches, as a stdlib-only byte pump.

The tools live in the sidecar (`para_rpc/server/mcp.py`); this process only
makes sure a sidecar of our version runs (starting one if needed, through
`client.connect`), connects to its MCP socket `<socket>.mcp`, sends one
preamble line (the client's working directory, the default repository of
tools called without `repo`, and its PARA_* overrides), then copies bytes
both ways until either side closes. It imports neither mcp nor pygls nor
lsprotocol, so an AI client's session is usable in milliseconds once the
sidecar is warm.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _stdin_to_socket(sock: socket.socket, state: dict[str, bool]) -> None:
    try:
        while True:
            data = os.read(0, CHUNK)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    state["stdin_closed"] = True
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def pump(sock: socket.socket) -> int:
    """Copy stdin -> socket (a thread) and socket -> stdout (here) until the sidecar side ends."""
    state = {"stdin_closed": False}
    threading.Thread(target=_stdin_to_socket, args=(sock, state), daemon=True).start()
    try:
        while True:
            data = sock.recv(CHUNK)
            if not data:
                break
            _write_all(1, data)
    except BrokenPipeError:
        return 0  # the client went away
    except OSError as e:
        print(f"para mcp: connection to the sidecar failed: {e}", file=sys.stderr)
        return Code.sidecar_unavailable.exit
    finally:
        sock.close()
    if not state["stdin_closed"]:
        print(f"para mcp: the sidecar closed the connection; see {runtime.log_path()}", file=sys.stderr)
        return Code.sidecar_unavailable.exit
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        cwd: str | None = os.getcwd()
    except FileNotFoundError:
        cwd = None
    if sys.stdin.isatty():
        print("para mcp: speaks MCP on stdin/stdout for AI clients; configure one with `para mcp init`",
              file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
