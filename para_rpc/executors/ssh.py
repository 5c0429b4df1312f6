"""The `ssh` executor's connection: the sidecar dials the host (the host never needs a route
or a credential back), with strict host keys (the configured known_hosts file only: no trust
on first use) and no agent forwarding, and talks to para on the host through one constant
command, `<python> -m para_rpc.worker`, with the request as JSON on its stdin (worker.py).

asyncssh comes with `para_rpc[ssh]` and is imported only when an SSH executor is used."""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from para_rpc import PROTOCOL_VERSION, __version__
from para_rpc.errors import Code, ParaError

CONNECT_TIMEOUT = 20.0
CALL_TIMEOUT = 120.0


def worker_command(entry: dict[str, Any]) -> str:
    """The one remote command line: the configured python (the user's own setting, quoted) and
    a fixed module. Requests never go into it."""
    return shlex.join([entry["python"], "-m", "para_rpc.worker"])


def _where(name: str, entry: dict[str, Any]) -> str:
    user = f"{entry['user']}@" if entry["user"] else ""
    return f"executor {name} ({user}{entry['host']}:{entry['port']})"


async def connect(name: str, entry: dict[str, Any]) -> Any:
    try:
        import asyncssh
    except ImportError:
        raise ParaError(Code.config_error, f"{_where(name, entry)} needs asyncssh: "
                        "pip install 'para_rpc[ssh]'", executor=name) from None
    known = os.path.expanduser(entry["known_hosts"])
    if not os.path.isfile(known):
        raise ParaError(Code.config_error, f"{_where(name, entry)}: its known_hosts file {known} does not exist "
                        "(para never trusts a host key on first use)", executor=name)
    options: dict[str, Any] = {"port": entry["port"], "known_hosts": known, "agent_forwarding": False,
                               "connect_timeout": CONNECT_TIMEOUT, "config": []}
    if entry["user"]:
        options["username"] = entry["user"]
    if entry["identity_file"]:
        options["client_keys"] = [os.path.expanduser(entry["identity_file"])]
    try:
        return await asyncssh.connect(entry["host"], **options)
    except asyncssh.HostKeyNotVerifiable as e:
        raise ParaError(Code.config_error, f"{_where(name, entry)}: its host key is not the one in {known} "
                        f"({e.reason}); nothing was run there. If the host was really re-keyed, check the new "
                        "fingerprint and replace its line in that file", executor=name) from None
    except asyncssh.PermissionDenied as e:
        raise ParaError(Code.config_error, f"{_where(name, entry)} refused the login: {e.reason}",
                        executor=name) from None
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise ParaError(Code.config_error, f"cannot connect to {_where(name, entry)}: {e}",
                        executor=name) from None


async def call(conn: Any, name: str, entry: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """One worker request on `conn`: its JSON answer, or config_error saying what the host lacks."""
    import asyncssh

    try:
        proc = await conn.run(worker_command(entry), input=json.dumps(request), check=False,
                              timeout=CALL_TIMEOUT)
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise ParaError(Code.config_error, f"{_where(name, entry)}: the worker did not answer: {e}",
                        executor=name) from None
    out = str(proc.stdout or "")
    try:
        answer = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "error" in answer:
        why = answer["error"] if isinstance(answer, dict) else str(proc.stderr or out or "").strip()[-500:]
        raise ParaError(Code.config_error, f"{_where(name, entry)}: `{worker_command(entry)}` failed "
                        f"(exit {proc.exit_status}): {why or 'no output'}. The host needs python3 >= 3.11 "
                        "with para installed (pip install para_rpc) and git", executor=name)
    return answer


async def check(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Connect, ask the worker its versions: {"para", "protocol", "python", "git"}; a para of
    another version is version_mismatch, a host without git config_error."""
    conn = await connect(name, entry)
    try:
        got = await call(conn, name, entry, {"op": "check"})
    finally:
        conn.close()
    if got.get("para") != __version__ or got.get("protocol") != PROTOCOL_VERSION:
        raise ParaError(Code.version_mismatch, f"{_where(name, entry)} has para {got.get('para')} (protocol "
                        f"{got.get('protocol')}); this sidecar is {__version__} (protocol {PROTOCOL_VERSION}): "
                        "install the same version there", executor=name, worker=got)
    if not got.get("git"):
        raise ParaError(Code.config_error, f"{_where(name, entry)} has no git on PATH", executor=name)
    return {k: got.get(k) for k in ("para", "protocol", "python", "git")}
