"""Pictures of the Neovim plugin for editors/nvim/README.md, taken from the real thing.

    .venv/bin/python tools/nvim_screenshots.py [OUTDIR]     (default editors/nvim/media)

In a throwaway repository with its own sidecar, it sets up sessions (one with an agent the
plugin runs in a Neovim terminal, a collision, a conflict), runs real Neovim 0.11.4 with the
plugin in tmux, and saves what tmux shows (`capture-pane -e`) as SVG through rich. Needs tmux,
and OpenSSH's sshd (tests/sshd.py starts one on loopback as the "host" `build1` of an agent
that runs elsewhere: its line shows `@build1` and its last harvest, checkhealth its check).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import sshd  # noqa: E402
from nvim_util import TmuxNvim, nvim_env  # noqa: E402

PLUGIN = ROOT / "editors" / "nvim"
PARA = str(Path(sys.executable).with_name("para"))
SIZE = (118, 30)


def run(*argv: str, cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=120)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {res.returncode}: {res.stderr}{res.stdout}")
    return res.stdout


def wait_for(ui: TmuxNvim, text: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while text not in ui.screen():
        if time.monotonic() > end:
            raise SystemExit(f"never saw {text!r} on screen:\n{ui.screen()}")
        time.sleep(0.1)  # tmux has no event for "the screen changed"
    time.sleep(0.3)  # let Neovim finish the redraw it is in


def save(ui: TmuxNvim, out: Path, name: str, title: str) -> None:
    console = Console(record=True, width=SIZE[0], file=io.StringIO(), color_system="truecolor")
    console.print(Text.from_ansi(ui.screen(ansi=True).rstrip("\n")), overflow="crop", no_wrap=True)
    console.save_svg(str(out / f"{name}.svg"), title=title)
    print(f"wrote {out / name}.svg")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else PLUGIN / "media"
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="nvs", dir="/tmp"))
    runtime = tmp / "rt"
    runtime.mkdir(mode=0o700)
    env = nvim_env(tmp, {"PARA_RUNTIME_DIR": str(runtime), "PATH": f"{Path(PARA).parent}{os.pathsep}{os.environ['PATH']}",
                         "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.invalid",
                         "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.invalid",
                         "GIT_CONFIG_GLOBAL": os.devnull, "HOME": str(tmp)})
    (tmp / "sshd").mkdir()
    host, sshd_proc = sshd.start(tmp / "sshd")
    identity = ["GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"]
    (tmp / "config.json").write_text(json.dumps(
        {"executors": {"build1": host.entry(env_passthrough=identity, harvest_interval=3600)}}))
    env["PARA_CONFIG"] = str(tmp / "config.json")
    repo = tmp / "shop"
    repo.mkdir()
    run("git", "init", "-q", "-b", "main", cwd=repo, env=env)
    (repo / "README.md").write_text("# shop\n\nA small shop.\n")
    (repo / "cart.py").write_text("def total(items):\n    return sum(i.price for i in items)\n")
    run("git", "add", ".", cwd=repo, env=env)
    run("git", "commit", "-q", "-m", "shop", cwd=repo, env=env)
    ui = None
    try:
        run(PARA, "sidecar", "start", cwd=repo, env=env)
        # a session with work and a report, two that collide, one in review
        run(PARA, "start", "login-form", cwd=repo, env=env)
        wt = repo / ".para" / "worktrees" / "login-form"
        (wt / "login.py").write_text("def login(user, password):\n    ...\n")
        run("git", "add", ".", cwd=wt, env=env)
        run("git", "commit", "-q", "-m", "login form", cwd=wt, env=env)
        run(PARA, "status", "wiring the form to the session store", "--todos", "2/5", "--tests", "passed",
            cwd=wt, env=env)
        for name, text in (("cart-tax", "    return sum(i.price * 1.2 for i in items)\n"),
                           ("cart-discount", "    return sum(i.price for i in items) * 0.9\n")):
            run(PARA, "start", name, cwd=repo, env=env)
            w = repo / ".para" / "worktrees" / name
            (w / "cart.py").write_text("def total(items):\n" + text)
        run(PARA, "start", "readme", cwd=repo, env=env)
        w = repo / ".para" / "worktrees" / "readme"
        (w / "README.md").write_text("# shop\n\nA small shop, with carts.\n")
        run(PARA, "finish", "readme: carts", "--session", "readme", cwd=repo, env=env)

        ui = TmuxNvim(repo, env, [PLUGIN], ["set termguicolors", "set laststatus=2",
                                            "lua require('para').setup({ conflicts_interval = 0 })",
                                            "Para list"], size=SIZE)
        wait_for(ui, "cart-discount")
        task = ("Add a CHANGELOG.\n```agent\nstatus writing the changelog\nsleep 1\n"
                "status checking links\nsleep 60\n```\n```file:CHANGELOG.md\n# Changes\n```\n"
                'When done: para integrate "changelog"\n')
        run(PARA, "dispatch", "changelog", "--agent", "scripted", "--mode", "editor", "-p", task, cwd=repo, env=env)
        wait_for(ui, "checking links")
        remote = ("Document the API.\n```agent\nstatus documenting the endpoints\nsleep 120\n```\n"
                  "```file:API.md\n# API\n```\n")
        run(PARA, "dispatch", "api-docs", "--agent", "scripted", "--executor", "build1", "-p", remote,
            cwd=repo, env=env)
        wait_for(ui, "@build1 (harvest")
        wait_for(ui, "cart-tax (1)")
        save(ui, out, "sessions", ":Para list")

        ui.keys(":tabnext", "Enter")
        wait_for(ui, "[scripted agent]")
        save(ui, out, "agent-terminal", "an agent in a Neovim terminal")
        ui.keys(":tabfirst", "Enter")

        # a conflict of your own integrate: quickfix, and the file at its markers
        run(PARA, "integrate", "--session", "cart-tax", cwd=repo, env=env)
        ui.keys(":only", "Enter")
        ui.keys(f":e {repo}/.para/worktrees/cart-discount/cart.py", "Enter")
        ui.keys(":Para integrate discount", "Enter")
        wait_for(ui, "<<<<<<<")
        save(ui, out, "conflict", ":Para integrate with a conflict")
        ui.keys(":Para abort", "Enter")
        ui.keys(":only", "Enter")

        ui.keys(":checkhealth para", "Enter")
        wait_for(ui, "protocol 1 matches")
        wait_for(ui, "check passed")
        save(ui, out, "checkhealth", ":checkhealth para")
    finally:
        if ui is not None:
            ui.close()
        subprocess.run([PARA, "cancel", "api-docs"], cwd=repo, env=env, capture_output=True, timeout=60)
        subprocess.run([PARA, "sidecar", "stop"], cwd=repo, env=env, capture_output=True, timeout=60)
        sshd.stop(sshd_proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
