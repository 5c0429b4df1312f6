"""`para tour`: a short scripted walk through the session lifecycle.

It builds a throwaway repository, runs the real `para` CLI against a private
sidecar (its own runtime directory, stopped at the end) and prints every
command with its output: start, list, finish, cancel, recover, resume, clean.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS_TITLE = "\033[1m{}\033[0m"


def _say(text: str) -> None:
    print(STEPS_TITLE.format(text) if sys.stdout.isatty() else text, flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="para-tour-") as tmp:
        base = Path(tmp)
        repo = base / "shop"
        runtime = base / "rt"
        runtime.mkdir(mode=0o700)
        # Nothing of the caller's para settings: PARA_SOCKET would point the tour at (and its
        # last step would stop) the caller's own sidecar.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PARA_")},
               "PARA_RUNTIME_DIR": str(runtime), "PARA_CONFIG": str(base / "config.json")}
        for k, v in (("GIT_AUTHOR_NAME", "Tour"), ("GIT_AUTHOR_EMAIL", "tour@example.com"),
                     ("GIT_COMMITTER_NAME", "Tour"), ("GIT_COMMITTER_EMAIL", "tour@example.com")):
            env.setdefault(k, v)
        para = [sys.executable, "-P", "-m", "para_rpc"]

        def run(argv: list[str], cwd: Path = repo, show: bool = True) -> str:
            shown = "para " + shlex.join(argv) if argv and argv[0] != "git" else shlex.join(argv)
            if show:
                where = "" if cwd == repo else f"  (in {cwd.relative_to(repo)})"
                print(f"\n$ {shown}{where}", flush=True)
            cmd = argv if argv[0] == "git" else para + argv
            res = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, stdin=subprocess.DEVNULL)
            output = (res.stdout + res.stderr).rstrip()
            if show and output:
                print(output, flush=True)
            if res.returncode != 0:
                # (the private sidecar must not outlive the throwaway repository)
                subprocess.run(para + ["sidecar", "stop"], cwd=base, env=env, capture_output=True,
                               stdin=subprocess.DEVNULL)
                raise SystemExit(f"tour step failed ({res.returncode}): {shown}")
            return res.stdout

        _say(f"A throwaway repository at {repo}, with a private sidecar in {runtime}")
        repo.mkdir()
        run(["git", "init", "-q", "-b", "main"], show=False)
        (repo / "README.md").write_text("# shop\n")
        (repo / "app.py").write_text("def greet():\n    return 'hello'\n")
        run(["git", "add", "-A"], show=False)
        run(["git", "commit", "-q", "-m", "Initial shop"], show=False)

        _say("\n1. Two sessions: one named, one with a friendly generated name (the sidecar starts on demand)")
        run(["start", "greeting"])
        other = run(["start", "--json"], show=False)
        import json

        other_name = json.loads(other)["name"]
        print(f"\n$ para start\nStarted session {other_name}")

        _say("\n2. Work happens in each session's own worktree; `list` sees uncommitted changes")
        wt = repo / ".para" / "worktrees" / "greeting"
        (wt / "app.py").write_text("def greet(name='world'):\n    return f'hello {name}'\n")
        (wt / "test_app.py").write_text("from app import greet\n\ndef test_greet():\n    assert greet('x') == 'hello x'\n")
        owt = repo / ".para" / "worktrees" / other_name
        (owt / "NOTES.md").write_text("half-finished idea\n")
        run(["list"], cwd=wt / ".")

        _say("\n3. `finish` from inside the worktree: commit, squash onto the fork point, keep the branch for review")
        run(["finish", "Greet by name"], cwd=wt)

        _say("\n4. `cancel` saves uncommitted work on the branch before archiving it")
        run(["cancel", other_name])
        run(["list", "--all"])

        _say("\n5. `recover` brings it back, work included")
        run(["recover", other_name])
        print(f"$ cat .para/worktrees/{other_name}/NOTES.md\n" + (owt / "NOTES.md").read_text().rstrip())

        _say("\n6. `resume` recreates the reviewed session's worktree from its branch")
        run(["resume", "greeting"])
        run(["show", "greeting"])

        _say("\n7. Housekeeping and the sidecar")
        run(["clean", "--dry-run"])
        run(["sidecar", "status"])
        run(["sidecar", "stop"])
        _say("\nThe main checkout was never switched or dirtied:")
        run(["git", "status", "--short", "--branch"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
