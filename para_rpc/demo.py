"""`para demo`: the whole workflow with scripted agents, in a throwaway repository.

A three-step plan (tasks/TASK_<n>_*.md): an API note first, then two tasks in
parallel that both extend calc.py at the same place (they collide), then the
docs. The agents are the built-in `scripted` profile: real processes that edit
files, report `para status` and finish with `para integrate`; the one that
lands second hits the conflict, resolves it in its own worktree and runs
`para continue`. The monitor shows it live; the final history is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TASKS = {
    "TASK_1_api_note.md": '''# API note

Write down the calculator's public API before anyone extends it.

```file:API.md
# calc API

Every operation is a function of two numbers in calc.py.
```

```agent
status reading the code
sleep 0.5
```

When done: para integrate "Document the calc API"
''',
    "TASK_2_multiply.md": '''# Multiplication

Add `mul(a, b)` to calc.py, with a test.

```append:calc.py

def mul(a, b):
    return a * b
```

```file:test_mul.py
from calc import mul


def test_mul():
    assert mul(3, 4) == 12
```

```agent
status running the tests
sleep 1
```

When done: para integrate "Add multiplication"
''',
    "TASK_2_subtract.md": '''# Subtraction

Add `sub(a, b)` to calc.py, with a test.

```append:calc.py

def sub(a, b):
    return a - b
```

```file:test_sub.py
from calc import sub


def test_sub():
    assert sub(5, 3) == 2
```

```agent
status running the tests
sleep 1.5
```

When done: para integrate "Add subtraction"
''',
    "TASK_3_usage.md": '''# Usage docs

Now that add, mul and sub exist, document them.

```file:USAGE.md
# Using calc

    from calc import add, mul, sub
    add(1, 2), mul(3, 4), sub(5, 3)
```

When done: para integrate "Document usage"
''',
}


def _say(text: str) -> None:
    bold = sys.stdout.isatty()
    print(f"\n\033[1m{text}\033[0m" if bold else f"\n== {text}", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="para-demo-") as tmp:
        base = Path(tmp)
        repo, runtime = base / "calc", base / "rt"
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "PARA_RUNTIME_DIR": str(runtime), "PARA_CONFIG": str(base / "config.json"),
               "PARA_AGENT_WORKFLOW": "integrate"}
        for k, v in (("GIT_AUTHOR_NAME", "Demo"), ("GIT_AUTHOR_EMAIL", "demo@example.com"),
                     ("GIT_COMMITTER_NAME", "Demo"), ("GIT_COMMITTER_EMAIL", "demo@example.com")):
            env.setdefault(k, v)
        env.pop("TMUX", None)
        para = [sys.executable, "-P", "-m", "para_rpc"]

        def run(argv: list[str], show: bool = True, check: bool = True) -> subprocess.CompletedProcess[str]:
            is_git = argv[0] == "git"
            if show:
                print(f"$ {' '.join(argv) if is_git else 'para ' + ' '.join(argv)}", flush=True)
            res = subprocess.run(argv if is_git else para + argv, cwd=repo, env=env, text=True,
                                 stdin=subprocess.DEVNULL, capture_output=not show)
            if check and res.returncode != 0:
                raise SystemExit(f"demo step failed ({res.returncode}): {argv}\n{res.stdout or ''}{res.stderr or ''}")
            return res

        _say(f"A throwaway repository {repo} with a three-step plan in tasks/")
        repo.mkdir()
        run(["git", "init", "-q", "-b", "main"], show=False)
        (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
        (repo / "tasks").mkdir()
        for name, text in TASKS.items():
            (repo / "tasks" / name).write_text(text)
        run(["git", "add", "-A"], show=False)
        run(["git", "commit", "-q", "-m", "A tiny calculator and its plan"], show=False)
        for name in sorted(TASKS):
            print(f"  tasks/{name}")

        _say("Dispatch the plan to scripted agents: step 1 now, both step-2 tasks in parallel after it lands")
        run(["dispatch", "-f", "tasks/", "--agent", "scripted", "--mode", "headless"])

        _say("The monitor, redrawn on every notification from the sidecar, until the plan is done")
        run(["monitor", "--until-done"])

        _say("What happened, from the sidecar's event log")
        events = json.loads(subprocess.run(para + ["status", "show", "--json"], cwd=repo, env=env, text=True,
                                           capture_output=True).stdout or "{}")
        log = subprocess.run([sys.executable, "-P", "-c", _EVENTS], cwd=repo, env=env, text=True, capture_output=True)
        print(log.stdout.rstrip() or log.stderr.rstrip())
        del events

        _say("The collision was resolved in the session's own worktree and landed with `para continue`:")
        run(["git", "show", "--stat", "--format=%h %s", "main~1"])
        print("$ cat calc.py\n" + (repo / "calc.py").read_text().rstrip())

        _say("Final history of main: one commit per task, in plan order, the user's checkout untouched")
        run(["git", "log", "--graph", "--oneline", "main"])
        run(["git", "status", "--short", "--branch"])
        run(["list", "--all"])
        plans = json.loads(run(["status", "show", "--json"], show=False).stdout)
        run(["sidecar", "stop"], show=False)
        ok = all(s["status"] == "integrated" for s in json.loads(
            subprocess.run(para + ["list", "--all", "--json"], cwd=repo, env=env, text=True,
                           capture_output=True).stdout or '{"sessions": []}').get("sessions", [])) and \
            not plans.get("plans")
        subprocess.run(para + ["sidecar", "stop"], cwd=repo, env=env, capture_output=True)
        return 0 if ok else 1


_EVENTS = """
import os, sys
from para_rpc import client
with client.connect() as c:
    evs = c.request("para/events", {"cwd": os.getcwd(), "limit": 1000})["events"]
for e in evs:
    if e["kind"] in ("plan_started", "dispatched", "conflicted", "continued", "integrated", "plan_step",
                     "plan_done", "plan_failed", "agent_exited"):
        d = e["data"]
        extra = {"conflicted": lambda: "files " + ", ".join(d["files"]),
                 "integrated": lambda: d["commit"][:10] + " on " + d["target"],
                 "plan_step": lambda: "step " + str(d["step"]) + ": " + ", ".join(d["sessions"]),
                 "agent_exited": lambda: "exit " + str(d["exit_code"])}.get(e["kind"], lambda: "")()
        print(f"  {e['kind']:<14} {e['session'] or '':<12} {extra}")
"""
