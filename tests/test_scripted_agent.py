"""The scripted agent (para_rpc/scripted_agent.py) stands in for an AI agent in the demo, the
tests and bench/: bad arguments get a usage line or a clear reason, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("args, says", [
    ([], "usage:"),
    (["--help"], "usage:"),
    (["a", "b"], "usage:"),
    (["/nonexistent/task.md"], "cannot read the task file /nonexistent/task.md"),
    (["{dir}"], "cannot read the task file"),
])
def test_bad_arguments_get_a_clear_reason_and_status_2(tmp_path: Path, args: list[str], says: str) -> None:
    args = [a.replace("{dir}", str(tmp_path)) for a in args]
    res = subprocess.run([sys.executable, "-m", "para_rpc.scripted_agent", *args], capture_output=True, text=True,
                         cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and says in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
