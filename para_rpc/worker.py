"""`python -m para_rpc.worker`: para's side on an executor's host (issue 16).

The sidecar runs this one constant command over SSH and writes the request as JSON on its
stdin: SSH hands a command line to the remote user's shell, so nothing that comes from a
user or an agent (argv, environment, prompt, token) may ever be part of it. The answer is
one JSON object on stdout. Stdlib only, so any host with python3 and para installed serves.

Requests: {"op": "check"} -> {"para", "protocol", "python", "git"}.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from typing import Any

from para_rpc import PROTOCOL_VERSION, __version__


def _git_version() -> str | None:
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def handle(request: Any) -> dict[str, Any]:
    if not isinstance(request, dict) or request.get("op") != "check":
        return {"error": f"unknown request {request!r:.200}"}
    return {"para": __version__, "protocol": PROTOCOL_VERSION, "python": platform.python_version(),
            "git": _git_version()}


def main() -> int:
    try:
        request = json.loads(sys.stdin.read(1 << 20) or "null")
    except ValueError as e:
        request = None
        print(json.dumps({"error": f"the request is not JSON: {e}"}))
        return 2
    answer = handle(request)
    print(json.dumps(answer))
    return 2 if "error" in answer else 0


if __name__ == "__main__":
    sys.exit(main())
