"""A small stdlib JSON-RPC client for the sidecar, with autostart.

Used by the CLI (and tests); imports nothing heavy, so `para` starts fast.
Messages use LSP framing (`Content-Length` headers). A connection says
`para/hello` first: a sidecar of another version is replaced when idle, or
reported clearly when busy, never silently used.
"""

from __future__ import annotations

# The C module, not `socket`: socket.py's enum wrapping costs ~2 ms of every `para` command's start.
import _socket
import itertools
import os
import select
import time

from para_rpc import PROTOCOL_VERSION, __version__, runtime, wire
from para_rpc.errors import Code, ParaError

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator
    from typing import Any, Self

START_TIMEOUT = float(os.environ.get("PARA_START_TIMEOUT", "30"))


class Connection:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.ids = itertools.count(1)
        self.pending_notifications: list[dict[str, Any]] = []

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, timeout: float | None = None) -> Connection:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(path or runtime.socket_file()))
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, msg: dict[str, Any]) -> None:
        body = wire.dumps(msg).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def read(self) -> dict[str, Any]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":  # (digits only: not `x`, `-5`, `1_0`)
                length = int(value) if value.strip().isdigit() else None
        if length is None:
            raise ParaError(Code.sidecar_unavailable, "malformed message from the sidecar")
        while len(rest) < length:
            self.buf = rest
            self._fill()
            rest = self.buf
        self.buf = rest[length:]
        try:
            msg = wire.loads(rest[:length])
        except ParaError as e:
            raise ParaError(Code.sidecar_unavailable, f"malformed message from the sidecar ({e.message})") from None
        if not isinstance(msg, dict):
            raise ParaError(Code.sidecar_unavailable, "malformed message from the sidecar")
        return msg

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ParaError(Code.sidecar_unavailable, "the sidecar closed the connection")
        self.buf += chunk

    def request(self, method: str, params: Any = None,
                on_progress: Callable[[dict[str, Any]], None] | None = None) -> Any:
        """Send one request and wait for its response (notifications are queued; `$/progress`
        ones go to `on_progress` when given)."""
        msg_id = next(self.ids)
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        while True:
            msg = self.read()
            if msg.get("id") == msg_id and "method" not in msg:
                if "error" in msg:
                    raise ParaError.from_rpc(msg["error"])
                return msg.get("result")
            if "method" in msg and "id" not in msg:
                if on_progress is not None and msg["method"] == "$/progress" and isinstance(msg.get("params"), dict):
                    on_progress(msg["params"])
                    continue
                self.pending_notifications.append(msg)

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def notifications(self) -> Iterator[dict[str, Any]]:
        """Yield server notifications as they arrive (after subscribing)."""
        while True:
            while self.pending_notifications:
                yield self.pending_notifications.pop(0)
            msg = self.read()
            if "method" in msg and "id" not in msg:
                yield msg


def hello(conn: Connection) -> dict[str, Any]:
    params: dict[str, Any] = {"client": "para-cli", "version": __version__, "protocol": PROTOCOL_VERSION}
    if os.environ.get("PARA_TOKEN"):  # a session-bound socket: the session's token opens it
        params["token"] = os.environ["PARA_TOKEN"]
    result: dict[str, Any] = conn.request("para/hello", params)
    return result


# The read end of each spawned sidecar's readiness pipe, by pid (see wait_for_sidecar).
_READY: dict[int, int] = {}


def spawn_sidecar(socket: str | None = None) -> subprocess.Popen[bytes]:
    """Start the sidecar serving `socket` (default: ours, runtime.socket_path())."""
    import subprocess  # (only here: most `para` processes find a sidecar running)
    from pathlib import Path

    path = Path(socket) if socket else runtime.socket_path()
    runtime.ensure_private_dir(path.parent)
    r, w = os.pipe()
    env = _sidecar_env(str(path)) if socket else dict(os.environ)
    env[runtime.READY_FD_ENV] = str(w)
    try:
        proc = subprocess.Popen(runtime.python("-m", "para_rpc.server.sidecar"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                                pass_fds=(w,), env=env)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    _READY[proc.pid] = r
    return proc


# What an agent's environment says about its own session and run: never the sidecar's (its
# later agents and hooks would inherit it; a process marked as the run's is stopped with it).
_AGENT_ONLY = ("PARA_TOKEN", "PARA_SESSION", "PARA_WORKTREE", "PARA_AGENT_RUN", "PARA_SIDECAR_SOCKET")


def _sidecar_env(socket: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _AGENT_ONLY}
    env["PARA_SOCKET"] = socket
    return env


def _log_tail(lines: int = 5) -> str:
    try:
        return "\n".join(runtime.log_path().read_text().splitlines()[-lines:])
    except OSError:
        return ""


def _await_ready(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """The sidecar writes to its readiness pipe once it listens (or closes it by exiting: another
    one won the lock, or it failed): waited for, not polled, so the first call starts sooner."""
    ready = _READY.pop(proc.pid, None)
    if ready is not None:
        try:
            select.select([ready], [], [], timeout)
        finally:
            os.close(ready)


def wait_for_sidecar(proc: subprocess.Popen[bytes] | None, timeout: float = START_TIMEOUT) -> Connection:
    deadline = time.monotonic() + timeout
    if proc is not None:
        _await_ready(proc, timeout)
    while True:
        try:
            return Connection.open()
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        if proc is not None and proc.poll() not in (None, 0, 3):  # 3: another one won the lock
            raise ParaError(Code.sidecar_unavailable,
                            f"the sidecar exited with status {proc.returncode}: {_log_tail()}")
        if time.monotonic() > deadline:
            raise ParaError(Code.sidecar_unavailable,
                            f"no sidecar answered on {runtime.socket_path()} within {timeout:.0f}s; "
                            f"see {runtime.log_path()}")
        time.sleep(0.02)


def _wait_bound(proc: subprocess.Popen[bytes], sidecar_socket: str) -> Connection:
    """After starting the sidecar for an agent: its bound socket, once it listens there again.
    The one started finding another sidecar running that does not listen there means the
    session has ended: said at once, not after the start timeout."""
    deadline = time.monotonic() + START_TIMEOUT
    _await_ready(proc, START_TIMEOUT)
    while True:
        try:
            return Connection.open()
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        if proc.poll() is not None and time.monotonic() < deadline:
            try:
                Connection.open(sidecar_socket).close()
            except OSError:
                pass
            else:
                deadline = time.monotonic()  # the sidecar runs; one more look at the bound socket
                continue
        if time.monotonic() > deadline:
            raise ParaError(Code.sidecar_unavailable, f"the sidecar does not listen on {runtime.socket_path()}, "
                            "this session's socket: the session has ended (or its sidecar could not start: "
                            f"see {runtime.log_path()})")
        time.sleep(0.02)


def wait_for_exit(timeout: float = 30.0, pid: int | None = None) -> bool:
    """Wait until no sidecar accepts connections (after a stop request) and, given its `pid`,
    until that process has exited: it closes its socket first, then finishes its work, and
    "stopped" must mean stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            Connection.open().close()
        except (FileNotFoundError, ConnectionRefusedError):
            break
        time.sleep(0.05)
    else:
        return False
    while pid and _running_pid(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _running_pid(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, exited but not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def connect(autostart: bool = True) -> Connection:
    """A connection to a sidecar of our own version, starting or replacing one as needed.
    On a session-bound socket (PARA_TOKEN set: an agent) never a replacement (stopping the
    user's sidecar is not the agent's call), and a start only for an unsandboxed agent, which
    is told the sidecar's own socket for that (PARA_SIDECAR_SOCKET): the sidecar it starts
    listens on the agent's bound socket again. A sandboxed agent's would be its own."""
    bound_start = None
    if os.environ.get("PARA_TOKEN"):
        bound_start = os.environ.get("PARA_SIDECAR_SOCKET") if autostart else None
        autostart = False
    for attempt in range(2):
        try:
            conn = Connection.open()
        except (FileNotFoundError, ConnectionRefusedError):
            if bound_start:  # (it restores the bound sockets of live sessions before it serves)
                conn = _wait_bound(spawn_sidecar(bound_start), bound_start)
                bound_start = None
            elif not autostart:
                raise ParaError(Code.sidecar_unavailable,
                                f"no sidecar is running on {runtime.socket_path()}"
                                + ("; this is your session's socket: para listens there again once its "
                                   "sidecar runs (the session may also have ended)" if os.environ.get("PARA_TOKEN")
                                   else "")) from None
            else:
                conn = wait_for_sidecar(spawn_sidecar())
        info = hello(conn)
        if info.get("protocol") == PROTOCOL_VERSION and info.get("version") == __version__:
            return conn
        if info.get("busy") or attempt or not autostart:
            conn.close()
            raise ParaError(Code.version_mismatch,
                            f"the running sidecar is para {info.get('version')} (protocol {info.get('protocol')}), "
                            f"this client is {__version__} (protocol {PROTOCOL_VERSION}); "
                            "run `para sidecar restart` when its work is done")
        conn.request("para/shutdown", {})
        conn.close()
        wait_for_exit(pid=info.get("pid"))
    raise AssertionError("unreachable")


def call(method: str, params: Any = None, autostart: bool = True,
         on_progress: Callable[[dict[str, Any]], None] | None = None) -> Any:
    with connect(autostart) as conn:
        return conn.request(method, params, on_progress)


# PARA_* variables that are not configuration (where para runs, an agent's own session): with
# no other PARA_* variable set, there is nothing to forward, and the configuration module (its
# validators and their imports) is not loaded into the `para` process at all.
# (tests/test_cli_fast.py: none of them is a configuration key's variable.)
NOT_CONFIG_ENV = frozenset({"PARA_RUNTIME_DIR", "PARA_CONFIG", "PARA_SOCKET", "PARA_TOKEN", "PARA_SESSION",
                            "PARA_WORKTREE", "PARA_AGENT_RUN", "PARA_SIDECAR_SOCKET", "PARA_START_TIMEOUT",
                            "PARA_NO_FAST", "PARA_READY_FD", "PARA_REPO", "PARA_PORT", "PARA_PORTS", "PARA_BASE",
                            "PARA_LOG_LEVEL", "PARA_MCP_HTTP"})


def forwarded_env() -> dict[str, str]:
    """The caller's PARA_* configuration overrides, sent with each request."""
    if not any(k.startswith("PARA_") and k not in NOT_CONFIG_ENV for k in os.environ):
        return {}
    from para_rpc.config import ENV_NAMES

    return {k: v for k, v in os.environ.items() if k in ENV_NAMES}
