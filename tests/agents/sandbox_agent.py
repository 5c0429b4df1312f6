#!/usr/bin/env python3
"""A test agent that tries to leave its sandbox, says what happened, then does its job.

It prints one line `SANDBOX-PROBES <json>` (the runner logs it to .para/logs/<session>.log,
outside the sandbox): for each probe, "ok" or the error it got. Then, unless --no-finish, it
commits a file in its worktree with git and lands it with the real `para integrate` (which goes
over its session-bound socket). With --wait FILE it first waits for FILE to exist.

    --root DIR       the main checkout (writing there must fail)
    --sidecar SOCK   the sidecar's own socket (connecting must fail)
    --port N         a TCP port listening on the host's 127.0.0.1 (with the network off: must fail)
    --unix PATH      a unix socket a host service listens on (repeatable): probe `unix:PATH`
    --env NAME       report the variable NAME as the agent sees it (repeatable): probe `env:NAME`
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable


def attempt(fn: Callable[[], object]) -> str:
    try:
        fn()
        return "ok"
    except Exception as e:  # noqa: BLE001  (the probe's answer: what the sandbox said)
        return f"{type(e).__name__}: {e}"


def write(path: str) -> None:
    with open(path, "w") as f:
        f.write("the agent was here\n")


def run(*argv: str) -> None:
    res = subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} exited {res.returncode}: "
                           f"{res.stderr.strip()[-300:]}")


def connect_unix(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)


def connect_tcp(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def para() -> list[str]:
    exe = shutil.which("para")
    return [exe] if exe else [sys.executable, "-m", "para_rpc"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--sidecar", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--wait")
    ap.add_argument("--no-finish", action="store_true")
    ap.add_argument("--unix", action="append", default=[])
    ap.add_argument("--env", action="append", default=[])
    args = ap.parse_args()
    if args.wait:
        deadline = time.monotonic() + 120
        while not os.path.exists(args.wait) and time.monotonic() < deadline:
            time.sleep(0.05)
    session = os.environ.get("PARA_SESSION", "?")
    probes = {
        "write_worktree": attempt(lambda: write("made-in-sandbox.txt")),
        "write_main_checkout": attempt(lambda: write(os.path.join(args.root, "escaped.txt"))),
        "write_home": attempt(lambda: write(os.path.join(os.path.expanduser("~"), "escaped.txt"))),
        "write_tmp": attempt(lambda: write(f"/tmp/sandbox-agent-{session}.txt")),
        "move_main_branch": attempt(lambda: run("git", "update-ref", "refs/heads/main", "HEAD")),
        "git_config": attempt(lambda: run("git", "config", "core.hooksPath", "/tmp")),
        "sidecar_socket": attempt(lambda: connect_unix(args.sidecar)),
        "tcp_localhost": attempt(lambda: connect_tcp(args.port)),
        "para_status": attempt(lambda: run(*para(), "status", "probing the sandbox")),
        "para_socket": os.environ.get("PARA_SOCKET", ""),
        "pids_seen": str(sorted(int(p) for p in os.listdir("/proc") if p.isdigit())),
        # Capabilities would undo every mount (remount read-write, unmount what covers): none
        # even when para runs as root, as in containers and CI.
        "capabilities": next((line.split()[1] for line in open("/proc/self/status")
                              if line.startswith("CapEff:")), "?"),
        "remount_home_rw": attempt(lambda: run("mount", "-o", "remount,bind,rw", os.path.expanduser("~"))),
        "write_home_after_remount": attempt(lambda: write(os.path.join(os.path.expanduser("~"), "escaped.txt"))),
    }
    for path in args.unix:
        probes[f"unix:{path}"] = attempt(lambda path=path: connect_unix(path))
    for name in args.env:
        probes[f"env:{name}"] = os.environ.get(name, "<unset>")
    print("SANDBOX-PROBES " + json.dumps(probes), flush=True)
    if args.no_finish:
        return 0
    run("git", "add", "made-in-sandbox.txt")
    run("git", "commit", "-q", "-m", "made in the sandbox")
    res = subprocess.run([*para(), "integrate", "sandboxed work"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    print(f"integrate exited {res.returncode}: {res.stdout}{res.stderr}", flush=True)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
