"""`python -m para_rpc.worker_hold`: the main process of a Kubernetes Job's pod (issue 16,
executors/k8s.py). Stdlib only, like the worker.

It does no work itself: it keeps the pod up (the sidecar runs `python -m para_rpc.worker` in it
over the pod's exec stream, one request at a time, exactly as over SSH) and it carries the
session's bound channel. The pod cannot dial the sidecar (it has no route to the user's machine,
and must not need one), so the sidecar dials in: it keeps a few connections open to this
process's TCP port through the API server's port-forward ("spares"). When the agent's `para`
connects to the session's unix socket, the next spare is claimed with one byte (CLAIM), the sidecar joins its end to the
session's bound socket and answers ACK, and the two are copied to each other.

The TCP port listens on 127.0.0.1 of the pod only. Any process in the pod can connect to it,
but all it can get there is a connection of the pod's own agent: the token still guards every
request on the bound socket. `<root>/hold/<h>.json` says the pid and port (for a diagnosis, and
for the test kubelet that runs several "pods" on one machine with port 0).

Argv only (a Job's args): --root ROOT --repo REPO --session NAME --port PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys

from para_rpc.errors import ParaError
from para_rpc.worker_place import locate, mkdir

CLAIM = b"\x01"
ACK = b"\x02"        # the sidecar's answer to a claim: joined to the session's bound socket
ACK_WAIT = 10.0
CLAIM_WAIT = 30.0     # an agent's connection waits this long for the sidecar to have a spare in place
CHUNK = 1 << 16


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Copy both ways until both sides are done, then close both."""
    try:
        await asyncio.gather(_copy(a[0], b[1]), _copy(b[0], a[1]))
    finally:
        for w in (a[1], b[1]):
            w.close()


class Hold:
    def __init__(self) -> None:
        # Newest first: after a sidecar restart the spares the dead one left may look open for a
        # while (each then costs ACK_WAIT to find out), while the new sidecar's are live.
        self.spares: asyncio.LifoQueue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.LifoQueue()

    async def sidecar(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.spares.put((reader, writer))

    async def agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(CLAIM_WAIT):
                while True:
                    spare = await self.spares.get()
                    if spare[0].at_eof() or spare[1].is_closing():
                        spare[1].close()  # (a forward that died while it waited)
                        continue
                    try:
                        spare[1].write(CLAIM)
                        await spare[1].drain()
                        # The sidecar answers once it reached the session's socket: a spare whose
                        # forward died unseen (a sidecar killed) never does, and the next is tried.
                        async with asyncio.timeout(ACK_WAIT):
                            ack = await spare[0].readexactly(1)
                    except (OSError, TimeoutError, asyncio.IncompleteReadError):
                        ack = b""
                    if ack != ACK:
                        spare[1].close()
                        continue
                    break
        except TimeoutError:
            writer.close()  # the agent's `para` sees the sidecar as unavailable and says so
            return
        await splice((reader, writer), spare)


async def serve(root: str, repo: str, session: str, port: int) -> None:
    place = locate({"root": root, "repo": repo, "session": session})
    hold = Hold()
    mkdir(place.socket.parent)
    place.socket.unlink(missing_ok=True)
    agents = await asyncio.start_unix_server(hold.agent, path=str(place.socket))
    os.chmod(place.socket, 0o600)
    sidecars = await asyncio.start_server(hold.sidecar, host="127.0.0.1", port=port)
    bound = sidecars.sockets[0].getsockname()[1]
    note = mkdir(place.root / "hold") / f"{place.socket.stem}.json"
    note.write_text(json.dumps({"pid": os.getpid(), "port": bound, "socket": str(place.socket)}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with agents, sidecars:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m para_rpc.worker_hold")
    ap.add_argument("--root", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--session", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        asyncio.run(serve(args.root, args.repo, args.session, args.port))
    except ParaError as e:
        print(f"para worker_hold: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
