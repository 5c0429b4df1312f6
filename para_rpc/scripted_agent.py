"""A small real agent that follows a task file literally (the `scripted` profile).

It stands in for an AI agent in the demo and in tests: it edits files as the
task describes, reports progress and finishes with the real `para` CLI, and
resolves an integration conflict by keeping both sides, then `para continue`.

What it understands in the task text:

    ```file:path/in/repo        the block's content becomes that file
    ```append:path/in/repo      the block's content is appended to that file
    ```agent                    one directive per line:
        status <words...>         para status "<words>" (with --todos i/n as it goes)
        sleep <seconds>
        wait-for <path>           wait until a file exists (tests use it to line agents up)
        wait-message <path>       wait for a follow-up (`para send`) and append its text to a file
        exit <code>               stop right there with that status (a crash)
        run <argv...>             run a command (shlex-split, no shell)
        on-conflict stop          leave a conflict for someone else (exit 7) instead of resolving it
    When done: para integrate "message"   (or para finish "message")
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

_BLOCK = re.compile(r"^```(file|append):(\S+)[ \t]*\n(.*?)^```[ \t]*$|^```agent[ \t]*\n(.*?)^```[ \t]*$",
                    re.MULTILINE | re.DOTALL)
_FINISH = re.compile(r"""\bpara\s+(integrate|finish)\s+(?:"([^"]*)"|'([^']*)')""")


def para(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("para")
    argv = [exe] if exe else [sys.executable, "-P", "-m", "para_rpc"]  # -P: see runtime.python
    return subprocess.run([*argv, *args], text=True, capture_output=True, stdin=subprocess.DEVNULL)


def log(msg: str) -> None:
    print(f"[scripted agent] {msg}", flush=True)


def resolve_keep_both(path: Path) -> None:
    """Replace each conflict block by 'ours' followed by 'theirs'."""
    out, side = [], None
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("<<<<<<<"):
            side = "ours"
        elif line.startswith("|||||||") and side:
            side = "base"
        elif line.startswith("=======") and side:
            side = "theirs"
        elif line.startswith(">>>>>>>") and side:
            side = None
        elif side != "base":
            out.append(line)
    path.write_text("".join(out))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m para_rpc.scripted_agent PROMPT_FILE", file=sys.stderr)
        return 2
    try:
        text = Path(argv[0]).read_text()
    except (OSError, UnicodeDecodeError) as e:
        print(f"scripted agent: cannot read the task file {argv[0]}: {e}", file=sys.stderr)
        return 2
    root = Path.cwd()
    blocks = list(_BLOCK.finditer(text))
    total = max(1, len(blocks))
    log(f"working in {root} on {total} step(s)")
    resolve_conflicts = True
    for i, m in enumerate(blocks, 1):
        if m.group(1):
            target = (root / m.group(2)).resolve()
            if root.resolve() not in target.parents:
                log(f"refusing to write outside the worktree: {m.group(2)}")
                return 2
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "a" if m.group(1) == "append" else "w") as f:
                f.write(m.group(3))
            log(f"{'appended to' if m.group(1) == 'append' else 'wrote'} {m.group(2)}")
            para("status", f"editing {m.group(2)}", "--todos", f"{i}/{total}")
            continue
        for line in m.group(4).splitlines():
            words = shlex.split(line)
            if not words:
                continue
            cmd, rest = words[0], words[1:]
            if cmd == "status":
                para("status", " ".join(rest), "--todos", f"{i}/{total}")
            elif cmd == "sleep":
                time.sleep(float(rest[0]))
            elif cmd == "wait-for":
                deadline = time.time() + 120
                while not Path(rest[0]).exists() and time.time() < deadline:
                    time.sleep(0.05)
            elif cmd == "wait-message":
                if root.resolve() not in (root / rest[0]).resolve().parents:
                    log(f"refusing to write outside the worktree: {rest[0]}")
                    return 2
                res = para("messages", "--wait", "120", "--json")
                texts = [m["text"] for m in json.loads(res.stdout).get("messages", [])] if res.returncode == 0 else []
                with open(root / rest[0], "a") as f:
                    f.writelines(t + "\n" for t in texts)
                log(f"read {len(texts)} message(s)")
            elif cmd == "exit":
                log(f"exiting with status {rest[0]} as instructed")
                return int(rest[0])
            elif cmd == "run":
                subprocess.run(rest, check=False)
            elif cmd == "on-conflict" and rest == ["stop"]:
                resolve_conflicts = False
    finish = _FINISH.search(text)
    if not finish:
        log("no `para integrate` or `para finish` line in the task; leaving the work in place")
        return 0
    verb, message = finish.group(1), finish.group(2) if finish.group(2) is not None else finish.group(3)
    para("status", "tests pass, finishing", "--tests", "passed", "--todos", f"{total}/{total}")
    res = para(verb, message, "--json")
    for _ in range(5):
        if res.returncode != 7 or not resolve_conflicts:
            break
        files = json.loads(res.stdout)["error"]["data"].get("files", [])
        log(f"conflicts in {', '.join(files)}: keeping both sides")
        for f in files:
            resolve_keep_both(root / f)
        para("status", "resolving conflicts", "--todos", f"{total}/{total}")
        res = para("continue", "--json")
    log(f"para {verb} exited with status {res.returncode}")
    if res.returncode != 0:
        print(res.stdout + res.stderr, file=sys.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
