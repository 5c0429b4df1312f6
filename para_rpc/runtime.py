"""Where the sidecar lives: runtime directory, socket, lock and log paths (stdlib only).

`PARA_SOCKET` names the socket directly (tests, several independent sidecars);
otherwise it is `sidecar.sock` in `PARA_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/para`,
else `/tmp/para-<uid>`. The lock and log files sit next to the socket.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from para_rpc.errors import Code, ParaError


def runtime_dir() -> Path:
    if os.environ.get("PARA_RUNTIME_DIR"):
        return Path(os.environ["PARA_RUNTIME_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "para"
    return Path(f"/tmp/para-{os.getuid()}")


def socket_path() -> Path:
    if os.environ.get("PARA_SOCKET"):
        return Path(os.environ["PARA_SOCKET"])
    return runtime_dir() / "sidecar.sock"


def mcp_socket_path(sock: Path | None = None) -> Path:
    """The sidecar's MCP socket: next to its JSON-RPC socket."""
    sock = sock or socket_path()
    return sock.with_name(sock.name + ".mcp")


def lock_path() -> Path:
    return socket_path().with_name(socket_path().name + ".lock")


def log_path() -> Path:
    return socket_path().with_name(socket_path().name + ".log")


def ensure_private_dir(path: Path) -> Path:
    """Create `path` as a 0700 directory owned by us, or refuse one that others could use."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise ParaError(Code.sidecar_unavailable, f"{path} is not a directory owned by you; refusing to use it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path
