#!/usr/bin/env python3
"""A test agent that leaves a daemon the way one hides from `para stop` (red team RA4): with
an empty environment (no PARA_AGENT_RUN mark), in a session of its own (setsid), ignoring
SIGTERM, its current directory in the worktree. The daemon runs `sleep TAG`, so a test finds it
by its command line (inside a sandbox its pid is another one). Without GATE, or once GATE
exists, it starts the daemon and prints `DAEMON`; then it sleeps.

    detaching_agent.py TAG [GATE]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time


def main() -> int:
    tag = sys.argv[1]
    gate = sys.argv[2] if len(sys.argv) > 2 else None
    if gate is None or os.path.exists(gate):
        sleep = shutil.which("sleep") or "/bin/sleep"
        subprocess.Popen(["/bin/sh", "-c", f"trap '' TERM; exec {sleep} {tag}"], env={}, start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("DAEMON", flush=True)
    time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
