"""`python -m para_rpc.agent_runner --exit-file F [--log L] [--stdin P] -- ARGV...`

Runs one agent process and records how it ended, so the sidecar can learn the
exit code even if it was restarted while the agent ran (it cannot wait() for
a process it did not start). Stdlib only: it starts in milliseconds.
The exit file is JSON written atomically: {"pid", "exit_code", "signal", "ended_at"}.
The agent gets PARA_AGENT_RUN=<exit file> in its environment (see agents.RUN_ENV).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="para-agent-runner")
    ap.add_argument("--exit-file", required=True)
    ap.add_argument("--log")
    ap.add_argument("--stdin")  # the prompt file: how a headless agent gets its task (not argv)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command")
    # open for the agent's whole life, which is this process's: the exit closes it
    out = open(args.log, "ab", buffering=0) if args.log else None  # noqa: SIM115
    try:
        # the child has its own copy; ours, like `out`, lives as long as this process
        stdin = open(args.stdin, "rb") if args.stdin else subprocess.DEVNULL if out else None  # noqa: SIM115
        # The agent and everything it starts inherit PARA_AGENT_RUN: how the sidecar tells this
        # run's leftover processes from unrelated ones once this runner is gone.
        child = subprocess.Popen(command, stdin=stdin, stdout=out,
                                 stderr=subprocess.STDOUT if out else None,
                                 env={**os.environ, "PARA_AGENT_RUN": args.exit_file})
    except OSError as e:
        code, sig = 127, None
        if out:
            out.write(f"para: cannot start {command[0]}: {e.strerror}\n".encode())
    else:
        def forward(signum: int, _frame: FrameType | None) -> None:
            child.send_signal(signum)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, forward)
        rc = child.wait()
        code, sig = (rc, None) if rc >= 0 else (128 - rc, -rc)
    tmp = f"{args.exit_file}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "exit_code": code, "signal": sig, "ended_at": time.time()}, f)
    os.replace(tmp, args.exit_file)
    return code


if __name__ == "__main__":
    sys.exit(main())
