#!/usr/bin/env python3
"""A test agent that performs the steps given as its arguments, in order.

It stands in for an AI agent in the agent tests: a real process that edits
files in its worktree, runs git and the real `para` CLI. Each argument is one
step, `verb:argument`:

    write:PATH=TEXT      write TEXT to PATH (relative to the worktree)
    print:TEXT           print TEXT on stdout      eprint:TEXT   ... on stderr
    status:TEXT          para status TEXT --todos 1/2 (the agent fails if para does)
    touch:ABS            create the marker file ABS (tests wait for it)
    wait:ABS             wait until ABS exists (at most 90 s, then exit 97)
    commit:MSG           git add -A && git commit -m MSG (raw git, no para)
    commits:N            N times: change a file, git add -A, git commit; stop with 1 if git ever fails
    integrate:MSG        para integrate MSG; stop with its status if it fails
    env:ABS              write {argv, cwd, env, instruction file} as JSON to ABS
    exit:N               stop with status N
    kill:SIG             kill itself with signal SIG
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def para(*args: str) -> int:
    exe = shutil.which("para")
    argv = [exe] if exe else [sys.executable, "-m", "para_rpc"]
    res = subprocess.run([*argv, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"step agent: para {args[0]} exited {res.returncode}: {res.stdout}{res.stderr}", file=sys.stderr,
              flush=True)
    return res.returncode


def main(steps: list[str]) -> int:
    for step in steps:
        verb, _, arg = step.partition(":")
        if verb == "write":
            path, _, text = arg.partition("=")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        elif verb == "print":
            print(arg, flush=True)
        elif verb == "eprint":
            print(arg, file=sys.stderr, flush=True)
        elif verb == "status":
            rc = para("status", arg, "--todos", "1/2")
            if rc:
                return rc
        elif verb == "touch":
            Path(arg).touch()
        elif verb == "wait":
            deadline = time.monotonic() + 90
            while not os.path.exists(arg):
                if time.monotonic() > deadline:
                    print(f"step agent: gave up waiting for {arg}", file=sys.stderr, flush=True)
                    return 97
                time.sleep(0.02)
        elif verb == "commit":
            subprocess.run(["git", "add", "-A"], check=True, stdin=subprocess.DEVNULL)
            subprocess.run(["git", "commit", "-q", "-m", arg], check=True, stdin=subprocess.DEVNULL)
        elif verb == "commits":
            for i in range(int(arg)):
                Path("churn.txt").write_text(f"{i}\n")
                for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", f"churn {i}"]):
                    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
                    if res.returncode != 0:
                        print(f"step agent: {' '.join(cmd)} failed in round {i}: {res.stderr}", file=sys.stderr,
                              flush=True)
                        return 1
        elif verb == "integrate":
            rc = para("integrate", arg)
            if rc:
                return rc
        elif verb == "env":
            instr = Path(".para-agent.md")
            Path(arg).write_text(json.dumps({
                "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
                "instruction_file": instr.read_text() if instr.exists() else None}))
        elif verb == "exit":
            return int(arg)
        elif verb == "kill":
            os.kill(os.getpid(), int(arg))
            time.sleep(5)
        else:
            print(f"step agent: unknown step {step!r}", file=sys.stderr, flush=True)
            return 96
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
