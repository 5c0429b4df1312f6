"""The import layers of docs/architecture.md: dependencies point down only.

front ends -> client -> (vocabulary); server -> service -> engines -> execution -> vocabulary.
A module imports from its own layer or a lower one, never upward, and the client side
(front ends, agent side, client) never reaches into the server side (transports, service,
engines, execution): what it shares with the sidecar is the vocabulary. Every import
counts, also one inside a function. A new module must be given its layer here.

And the process-level half: the CLI's fast paths (`para list --json`, `para mcp`,
`para lsp`) load none of pygls, lsprotocol, mcp or typer; importing the CLI does nothing
but import it; `para sidecar run` execs the server instead of loading it into the CLI.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import para_rpc
import pytest
from para_rpc import methods, params
from para_rpc.client import Connection
from para_rpc.errors import Code

from conftest import (
    PARA_ARGV,
    PYTHON,
    Sidecar,
    cli_env,
    pid_alive,
    run_para,
    shutdown_sidecar,
    sidecar_pids,
    start_sidecar,
    wait_until,
)

PACKAGE = Path(para_rpc.__file__).parent
LAYERS: list[tuple[str, set[str]]] = [  # top to bottom; a name is a module or package of para_rpc
    ("tools", {"gen"}),
    ("front ends", {"cli", "monitor", "tui", "bridge", "mcp_init", "tour", "demo", "__main__"}),
    ("agent side", {"agent_runner", "scripted_agent", "worker", "worker_git", "worker_place", "worker_proc", "worker_run",
                    "worker_hold"}),
    ("client", {"client"}),
    ("transports", {"server"}),
    ("service", {"service"}),
    ("engines", {"integrate", "agents", "trust", "sandbox", "executors"}),
    ("execution", {"git", "git_index", "store", "workspace", "watch"}),
    ("vocabulary", {"model", "params", "results", "methods", "errors", "names", "config", "runtime", "display", "wire",
                    "__init__"}),
]
RANK = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}
LAYER = {name: layer for layer, names in LAYERS for name in names}
CLIENT_SIDE = {"front ends", "agent side", "client"}
SERVER_SIDE = {"transports", "service", "engines", "execution"}


def top(path: Path) -> str:
    """The layer key of a source file: `cli` for cli/app.py, `git` for git.py."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imported(path: Path) -> set[str]:
    """The layer keys of the para_rpc modules `path` imports (anywhere in the file)."""
    module = ["para_rpc", *path.relative_to(PACKAGE).with_suffix("").parts]
    if module[-1] == "__init__":
        module.pop()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (module[:len(module) - node.level + (path.name == "__init__.py")] if node.level else [])
            base += node.module.split(".") if node.module else []
            names = [base + [a.name] for a in node.names] if base == ["para_rpc"] else [base]
        else:
            continue
        for parts in names:
            if parts[0] == "para_rpc":
                sub = parts[1] if len(parts) > 1 else "__init__"
                is_module = (PACKAGE / sub).is_dir() or (PACKAGE / f"{sub}.py").is_file()
                found.add(sub if is_module else "__init__")
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert sorted({top(p) for p in SOURCES} - set(RANK)) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_only(path: Path):
    mine = top(path)
    wrong = sorted(f"{dep} ({LAYER[dep]})" for dep in imported(path) if dep in RANK and dep != mine
                   and (RANK[dep] < RANK[mine] or (LAYER[mine] in CLIENT_SIDE and LAYER[dep] in SERVER_SIDE)))
    assert wrong == [], f"{path.relative_to(PACKAGE)} ({LAYER[mine]}) imports upward or across: {wrong}"


# ---- processes ---------------------------------------------------------------------------------

HEAVY = ("pygls", "lsprotocol", "mcp", "typer", "click", "pydantic")


def loaded_packages(stderr: str) -> set[str]:
    """The top-level packages a `python -X importtime` run imported (its stderr)."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0]
            for line in stderr.splitlines() if line.startswith("import time:") and "|" in line}


WIRE_NAMES = sorted({*methods.METHODS, *params.TRANSPORT_METHODS, *params.NOTIFICATIONS, *params.SERVER_REQUESTS,
                     "workspace/executeCommand"})


def _strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that its code uses (docstrings are prose: left out)."""
    tree = ast.parse(path.read_text(), str(path))
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def _spells(text: str, name: str) -> bool:
    # A name inside a path (`/.para/config.json`, `refs/para/...`) is not the method.
    return re.search(rf"(?<![\w./-]){re.escape(name)}(?![\w./-])", text) is not None


@pytest.mark.parametrize("path", [p for p in SOURCES if top(p) == "service"], ids=lambda p: p.name)
def test_the_service_spells_no_wire_method(path: Path):
    """The service publishes domain events and calls ports; each transport names them
    (`para/event`, `para/sessionsChanged`, `para/runInTerminal`, MCP resource updates).
    No string in the service is a JSON-RPC method or notification name."""
    found = [(line, text) for line, text in _strings(path) for name in WIRE_NAMES if _spells(text, name)]
    assert found == [], f"{path.relative_to(PACKAGE)} spells wire names: {found}"


def test_the_wire_name_check_can_fail(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text('def emit(notify):\n    notify("para/sessionsChanged", {})\n')
    assert [t for _, t in _strings(bad) if any(_spells(t, n) for n in WIRE_NAMES)] == ["para/sessionsChanged"]
    assert not _spells("/.para/config.json", "para/config") and _spells("send para/event now", "para/event")


@pytest.mark.parametrize("argv", [["list", "--json"], ["show", "nope", "--json"], ["mcp"], ["lsp"]],
                         ids=" ".join)
def test_fast_paths_load_no_heavy_library(sidecar: Sidecar, repo: Path, argv: list[str]):
    proc = subprocess.run([*PARA_ARGV, *argv], cwd=repo, input=b"", capture_output=True, timeout=60,
                          env=cli_env({"PYTHONPROFILEIMPORTTIME": "1"}))
    assert proc.returncode in (0, Code.not_found.exit), proc.stderr.decode()[-2000:]
    loaded = loaded_packages(proc.stderr.decode())
    assert "para_rpc" in loaded and "_socket" in loaded
    assert sorted(loaded & set(HEAVY)) == []
    if argv[0] not in ("mcp", "lsp"):  # (the request commands: socket.py's enum wrapping is not needed)
        assert "socket" not in loaded


def test_para_no_fast_hands_everything_to_typer(sidecar: Sidecar, repo: Path):
    """(so the differential test of test_cli_fast.py compares two different paths)"""
    proc = subprocess.run([*PARA_ARGV, "list", "--json"], cwd=repo, capture_output=True, timeout=60,
                          env=cli_env({"PYTHONPROFILEIMPORTTIME": "1", "PARA_NO_FAST": "1"}))
    assert proc.returncode == 0 and json.loads(proc.stdout)["sessions"] == []
    assert "typer" in loaded_packages(proc.stderr.decode())


def test_a_sidecar_serving_only_the_cli_loads_no_pygls_lsprotocol_or_mcp(repo: Path, runtime_dir: Path):
    """The sidecar answers `para/...` itself: the CLI's first call (an autostart) never waits
    for pygls and lsprotocol (a quarter of a second). They load when a client speaks LSP (and
    MCP when an MCP client comes), off the event loop. (Its imports are traced on its stderr,
    with its log: what a preload started after its delay loaded does not count.)"""
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", "--stderr", env=cli_env({"PYTHONPROFILEIMPORTTIME": "1"}))
    try:
        assert run_para("start", "a", "--json", cwd=repo).returncode == 0
        assert [s["name"] for s in json.loads(run_para("list", "--json", cwd=repo).stdout)["sessions"]] == ["a"]
        run_para("cancel", "--discard", "a", "--json", cwd=repo)
        with sc.connect() as conn:
            conn.request("para/subscribe", {"events": True})
            assert conn.request("para/hello", {})["pid"] == sc.pid

        def served() -> str:
            return sc.stderr_path.read_text().split(" loading the ", 1)[0]
        loaded = loaded_packages(served())
        assert {"para_rpc", "msgspec", "asyncio"} <= loaded  # (the trace is there: the check can see)
        assert sorted(loaded & set(HEAVY)) == []
        assert "para_rpc.server.lsp" not in served()

        with sc.connect() as conn:  # an editor: LSP initialize loads pygls, then para/... as before
            init = conn.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
            assert init["serverInfo"]["name"] == "para" and "textDocumentSync" not in init["capabilities"]
            assert conn.request("para/list", {"cwd": str(repo)})["sessions"] == []
        assert {"pygls", "lsprotocol"} <= loaded_packages(sc.stderr_path.read_text())
    finally:
        shutdown_sidecar(sc)


IMPORT_ALL = """
import sys
sys.argv = [{para!r}, "list", "--json"]  # what `para list --json` would see
import para_rpc.cli, para_rpc.cli.fast, para_rpc.cli.render, para_rpc.cli.app, para_rpc.bridge
print("imported", sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r} or m.startswith(
    ("para_rpc.server", "para_rpc.service"))))
"""


def test_importing_the_cli_does_nothing_but_import(repo: Path, runtime_dir: Path):
    """No command runs (no request, no sidecar started) and no server code loads, however
    sys.argv looks; typer comes with app.py only."""
    code = IMPORT_ALL.format(para=str(PARA_ARGV[0]), heavy=("pygls", "lsprotocol", "mcp"))
    proc = subprocess.run([PYTHON, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60,
                          env=cli_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "imported []\n", proc.stdout
    assert sidecar_pids(runtime_dir) == []


def test_sidecar_run_execs_the_server_module(repo: Path, runtime_dir: Path):
    """`para sidecar run` becomes `python -P -m para_rpc.server.sidecar` (same pid): the server
    is never loaded into the CLI process (and -P: never from the cwd, test_trust_boundary.py)."""
    proc = subprocess.Popen([*PARA_ARGV, "sidecar", "run", "--idle-timeout", "0"], cwd=repo, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def hello():
            try:
                with Connection.open(runtime_dir / "sidecar.sock", timeout=10) as conn:
                    return conn.request("para/hello", {})
            except OSError:
                assert proc.poll() is None, f"para sidecar run exited {proc.returncode}"
                return None
        assert wait_until(hello, what="the foreground sidecar")["pid"] == proc.pid
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:5] == [b"-P", b"-m", b"para_rpc.server.sidecar", b"--idle-timeout"], cmdline
        run_para("sidecar", "stop", cwd=repo)
        assert proc.wait(timeout=60) == 0
    finally:
        if pid_alive(proc.pid):
            proc.kill()
        proc.wait()
