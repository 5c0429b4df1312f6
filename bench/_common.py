"""What the benchmarks in bench/ share: the private environment, the scratch repository,
a sidecar of their own, /proc readings, the machine description and the results file.

The bench_*.py scripts import it as a sibling module (`from _common import ...`): run as
`python bench/bench_X.py`, Python puts bench/ first on sys.path, so no package is needed.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
PARA_SCRIPT = Path(sys.executable).with_name("para")
PARA = [str(PARA_SCRIPT)] if PARA_SCRIPT.exists() else [PYTHON, "-m", "para_rpc"]
SMOKE_HELP = ("exercise every phase once at the smallest size and write no results (CI; implies --quick): "
              "exits non-zero only when the benchmark itself fails, never because of a timing")
IDENTITY = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@para.invalid",
            "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@para.invalid"}


# ---- environment ---------------------------------------------------------------

def byte_compile_para() -> None:
    """Byte-compile para_rpc as pip does when it installs a package. A checkout installed
    editable has no .pyc files, and with PYTHONDONTWRITEBYTECODE set (as on the machines these
    figures come from) every para process compiles every module it imports from source, a cost
    (up to half of a CLI call) an installed para never pays; its dependencies are compiled.
    Writes only __pycache__ directories (git ignores them)."""
    import compileall
    import io
    from contextlib import redirect_stdout

    import para_rpc
    with redirect_stdout(io.StringIO()):
        if not compileall.compile_dir(Path(para_rpc.__file__).parent, quiet=1):
            raise SystemExit("byte-compiling para_rpc failed")


def as_installed(work: Path) -> tuple[list[str], str, str]:
    """(the `para` argv, the python, a phrase for the header) of para laid out as pip installs
    it. A checkout installed editable (`pip install -e`, as in development and CI) is imported
    through setuptools' editable finder, which site.py loads into every Python process of the
    venv: ~20 ms of start-up (pathlib, importlib.util, re) that an installed para never pays,
    and `para` is a process per command. Then a venv of its own is made under `work` (no pip,
    the same base interpreter) whose site-packages names this checkout and the current venv's
    site-packages in a plain .pth (paths only: nothing in it runs), and its `bin/para` is the
    console script current pip writes. Otherwise the current install is used as it is."""
    import sysconfig

    import para_rpc
    purelib = Path(sysconfig.get_paths()["purelib"])
    if not list(purelib.glob("__editable__*para_rpc*")):
        return PARA, PYTHON, "para as installed"
    venv = work / "installed"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    own = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip())
    # The checkout first (para_rpc), then what the current venv holds (msgspec, pygls, mcp...).
    (own / "para-bench.pth").write_text(f"{Path(para_rpc.__file__).resolve().parent.parent}\n{purelib}\n")
    script = venv / "bin" / "para"
    # The console script current pip writes (26: PipScriptMaker; uv's is alike). pip 23's
    # imported `re` for its argv[0] tweak, ~6 ms of every `para` process.
    script.write_text(f"#!{python}\nimport sys\nfrom para_rpc.cli import main\n"
                      "if __name__ == '__main__':\n"
                      "    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n"
                      "    sys.exit(main())\n")
    script.chmod(0o755)
    return [str(script)], str(python), "para laid out as installed (this checkout is installed editable)"


def private_runtime(prefix: str = "p") -> Path:
    """A new 0700 directory under /tmp for a sidecar's socket (short: socket paths are limited)."""
    runtime = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(runtime, 0o700)
    return runtime


def isolate(work: Path, *, prefix: str = "p", unset: tuple[str, ...] = ("PARA_", "GIT_"),
            **extra_env: str) -> Path:
    """Point this process (and everything it spawns) at a private environment: a fresh HOME
    under `work`, PARA_CONFIG there, a new private_runtime(prefix) as PARA_RUNTIME_DIR
    (returned), no global or system git config, a fixed git identity. Variables starting with
    any of `unset` (and XDG_CONFIG_HOME, XDG_RUNTIME_DIR) are removed first; `extra_env` is
    set on top."""
    runtime = private_runtime(prefix)
    home = work / "home"
    home.mkdir()
    for k in list(os.environ):
        if k.startswith(unset) or k in ("XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
            del os.environ[k]
    os.environ.update(IDENTITY, HOME=str(home), PARA_RUNTIME_DIR=str(runtime),
                      PARA_CONFIG=str(work / "para-config.json"),
                      GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, **extra_env)
    return runtime


def git(*args: str, cwd: Path, input: str | None = None) -> str:
    """`git ARGS` in `cwd`, its stripped stdout; exits the benchmark if git fails."""
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, input=input,
                         stdin=None if input is not None else subprocess.DEVNULL)
    if res.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {cwd}: {res.stderr.strip()}")
    return res.stdout.strip()


def make_repo(path: Path, files: int, message: str = "initial import") -> Path:
    """A repository on `main` with `files` small tracked files in 10 packages and a README,
    all in one commit; returns its real path."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", str(path), cwd=path.parent)
    for i in range(files):
        d = path / "src" / f"pkg{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"mod{i:04d}.py").write_text("".join(f"def f{j}(x):\n    return x + {j}\n\n" for j in range(20)))
    (path / "README.md").write_text("# bench\n")
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", message, cwd=path)
    return Path(os.path.realpath(path))


# ---- a sidecar of our own ----------------------------------------------------------

class Sidecar:
    """A sidecar of our own on `runtime`/sidecar.sock, waited for until it answers, stopped
    by `stop()`. Optionally under cProfile (`profile_to`) and with git's trace2 event log
    (`trace_to`)."""

    def __init__(self, runtime: Path, profile_to: Path | None = None, trace_to: Path | None = None,
                 python: str = PYTHON) -> None:
        self.runtime = runtime
        self.socket = runtime / "sidecar.sock"
        self.started = time.monotonic()
        env = dict(os.environ, PARA_RUNTIME_DIR=str(runtime))
        argv = [python]
        if profile_to is not None:
            argv += ["-m", "cProfile", "-o", str(profile_to)]
        argv += ["-m", "para_rpc.server.sidecar", "--idle-timeout", "0"]
        if trace_to is not None:
            env["GIT_TRACE2_EVENT"] = str(trace_to)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        from para_rpc.client import Connection
        deadline = time.monotonic() + 30
        while True:
            try:
                Connection.open(self.socket, timeout=5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"the sidecar did not start (exit {self.proc.poll()}); "
                                     f"see {runtime / 'sidecar.sock.log'}")
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def connect(self):
        from para_rpc.client import Connection, hello
        conn = Connection.open(self.socket, timeout=120)
        hello(conn)
        return conn

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                with self.connect() as conn:
                    conn.request("para/shutdown", {})
                self.proc.wait(timeout=60)
            except Exception:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


# ---- git's trace2 event log ----------------------------------------------------------

def _git_subcommand(argv: list[str]) -> str:
    for a in argv[1:]:
        if not a.startswith("-") and "=" not in a:
            return a
    return "?"


def git_processes(trace: Path, per: int) -> dict[str, Any]:
    """Top-level git processes in a trace2 event log (children such as the `reset` that
    `worktree add` runs are counted in their parent), per operation."""
    argv_of: dict[str, list[str]] = {}
    per_cmd: dict[str, list[float]] = defaultdict(list)
    for line in trace.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        sid = ev.get("sid", "")
        if "/" in sid:
            continue
        if ev.get("event") == "start":
            argv_of[sid] = ev.get("argv", [])
        elif ev.get("event") == "exit" and sid in argv_of:
            per_cmd[_git_subcommand(argv_of[sid])].append(ev.get("t_abs", 0.0))
    order = sorted(per_cmd, key=lambda k: -sum(per_cmd[k]))
    return {"count": sum(len(v) for v in per_cmd.values()) / per,
            "seconds": sum(sum(v) for v in per_cmd.values()) / per,
            "by_command": {k: {"count": len(per_cmd[k]) / per, "seconds": sum(per_cmd[k]) / per} for k in order}}


# ---- /proc readings ------------------------------------------------------------------

def proc_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / tick, (cutime + cstime) / tick


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB, from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (0.0 if it has none, as a zombie)."""
    return rss(pid).get("VmRSS", 0.0)


# ---- results ---------------------------------------------------------------------------

def git_version() -> str:
    return subprocess.run(["git", "--version"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL).stdout.strip()


def machine(**extra: Any) -> dict[str, Any]:
    """The machine a benchmark ran on (CPUs, Python, git, platform), plus `extra`
    (the load average, for one)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "git": git_version(),
            "platform": platform.platform(), **extra}


def results_path(name: str) -> Path:
    """bench/results/<name>.json"""
    return HERE / "results" / f"{name}.json"


def write_results(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
