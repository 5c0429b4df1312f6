"""Getting MCP to a client: `para mcp init`, the import hygiene of `para mcp`, its
failure modes, and the optional streamable HTTP endpoint behind a bearer token."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from para_rpc.runtime import mcp_socket_path

from conftest import PARA_ARGV, PYTHON, cli_env, commit_file, git, shutdown_sidecar, start_sidecar, wait_until
from mcp_util import call, call_error, mcp_client

HEAVY = ("mcp", "pygls", "lsprotocol", "typer", "pydantic", "starlette", "uvicorn")


# ---- import hygiene ------------------------------------------------------------------------

def _loaded(code: str) -> list[str]:
    out = subprocess.run([PYTHON, "-c", code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, env=cli_env()).stdout
    return json.loads(out.splitlines()[-1])


def test_cli_and_bridge_do_not_import_mcp_pygls_or_lsprotocol():
    cli = _loaded("import para_rpc.cli")
    assert not [m for m in cli if m.split(".")[0] in ("mcp", "pygls", "lsprotocol")]
    bridge = _loaded("import para_rpc.bridge")
    assert not [m for m in bridge if m.split(".")[0] in HEAVY], "the bridge must stay stdlib-only"


def test_para_mcp_runs_without_typer(sidecar, repo):
    """The real `para mcp` process, its imports traced: no typer, no SDK, no pygls."""
    proc = subprocess.run([*PARA_ARGV, "mcp"], cwd=repo, input=b"", capture_output=True, timeout=60,
                          env=cli_env({"PYTHONPROFILEIMPORTTIME": "1"}))
    assert proc.returncode == 0, proc.stderr.decode()
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0]
                for line in proc.stderr.decode().splitlines() if line.startswith("import time:") and "|" in line}
    assert "para_rpc" in imported and "socket" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_para_mcp_reports_an_unreachable_sidecar(tmp_path, repo):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    proc = subprocess.run([*PARA_ARGV, "mcp"], cwd=repo, input=b"", capture_output=True, timeout=60,
                          env=cli_env({"PARA_RUNTIME_DIR": str(not_a_dir)}))
    err = proc.stderr.decode()
    assert proc.returncode == 9 and err.startswith("para mcp: ") and "Traceback" not in err, err


def test_para_mcp_in_an_agent_says_it_is_not_served_there(sidecar, repo):
    """An agent's environment (its bound socket and token): a clear refusal, and no sidecar is
    started or reached for it."""
    proc = subprocess.run([*PARA_ARGV, "mcp"], cwd=repo, input=b"", capture_output=True, timeout=60,
                          env=cli_env({"PARA_TOKEN": "t" * 43, "PARA_SESSION": "s1",
                                       "PARA_SOCKET": str(repo / "no-such.sock")}))
    err = proc.stderr.decode()
    assert proc.returncode == 14 and "not served to an agent" in err and "Traceback" not in err, err
    assert proc.stdout == b""


# ---- para mcp init -----------------------------------------------------------------------

def _init(repo: Path, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PARA_ARGV, "mcp", "init", *args], cwd=cwd or repo, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, env=cli_env())
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _exclude(repo: Path) -> list[str]:
    return (repo / ".git" / "info" / "exclude").read_text().splitlines()


async def test_init_writes_claude_code_config_that_works_and_stays_out_of_commits(sidecar, repo):
    gitignore = (repo / ".gitignore").read_bytes()
    (repo / "sub").mkdir()
    out = _init(repo, cwd=repo / "sub")  # from a subdirectory: the project root gets it
    assert "created" in out.stdout
    cfg = json.loads((repo / ".mcp.json").read_text())
    entry = cfg["mcpServers"]["para"]
    assert entry["args"] == ["mcp"] and entry["type"] == "stdio"
    assert os.path.isabs(entry["command"]) and os.access(entry["command"], os.X_OK)
    assert "/.mcp.json" in _exclude(repo)
    assert git("status", "--porcelain", cwd=repo) == ""
    assert (repo / ".gitignore").read_bytes() == gitignore
    again = _init(repo, "--json")
    assert json.loads(again.stdout)["results"][0]["action"] == "unchanged"
    assert _exclude(repo).count("/.mcp.json") == 1
    # the command written there is a working MCP server
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=dict(os.environ), cwd=str(repo))
    async with Client(params) as configured:
        assert "para_dispatch" in {t.name for t in (await configured.list_tools()).tools}
        assert (await call(configured, "para_list"))["repo"] == str(repo)


def test_init_merges_and_never_clobbers(repo):
    existing = {"mcpServers": {"other": {"command": "/usr/bin/other", "args": ["--x"]},
                               "para": {"command": "/old/para", "args": ["mcp"]}},
                "someSetting": {"keep": [1, 2, 3]}}
    (repo / ".mcp.json").write_text(json.dumps(existing))
    os.chmod(repo / ".mcp.json", 0o600)
    out = _init(repo, "--json")
    assert json.loads(out.stdout)["results"][0]["action"] == "updated"
    cfg = json.loads((repo / ".mcp.json").read_text())
    assert cfg["mcpServers"]["other"] == existing["mcpServers"]["other"]
    assert cfg["someSetting"] == existing["someSetting"]
    assert cfg["mcpServers"]["para"]["command"] != "/old/para"
    assert stat.S_IMODE(os.stat(repo / ".mcp.json").st_mode) == 0o600  # its mode is kept


def test_init_cursor_and_vscode_shapes(repo):
    vscode = repo / ".vscode" / "mcp.json"
    vscode.parent.mkdir()
    vscode.write_text(json.dumps({"servers": {"mine": {"type": "http", "url": "http://x"}}, "inputs": []}))
    _init(repo, "--cursor", "--vscode")
    cursor = json.loads((repo / ".cursor" / "mcp.json").read_text())
    assert set(cursor) == {"mcpServers"} and cursor["mcpServers"]["para"]["args"] == ["mcp"]
    vs = json.loads(vscode.read_text())
    assert vs["servers"]["mine"] == {"type": "http", "url": "http://x"} and vs["inputs"] == []
    assert vs["servers"]["para"]["type"] == "stdio" and vs["servers"]["para"]["args"] == ["mcp"]
    assert "mcpServers" not in vs
    assert {"/.cursor/mcp.json", "/.vscode/mcp.json"} <= set(_exclude(repo))
    assert not (repo / ".mcp.json").exists()
    assert git("status", "--porcelain", cwd=repo) == ""


def test_init_refuses_an_unparsable_file(repo):
    broken = b'{"mcpServers": {"other": {"command": "x"},}  // a comment\n'
    (repo / ".mcp.json").write_bytes(broken)
    proc = _init(repo, check=False)
    assert proc.returncode == 6
    assert ".mcp.json is not valid JSON" in proc.stderr and "untouched" in proc.stderr
    assert (repo / ".mcp.json").read_bytes() == broken
    (repo / ".mcp.json").write_text(json.dumps({"mcpServers": ["not", "an", "object"]}))
    proc = _init(repo, check=False)
    assert proc.returncode == 6 and "not an object" in proc.stderr


def test_init_print_writes_nothing(repo):
    out = _init(repo, "--print", "--vscode")
    snippet = json.loads(out.stdout)
    assert snippet["servers"]["para"]["args"] == ["mcp"]
    assert not (repo / ".vscode").exists()
    assert "/.vscode/mcp.json" not in (repo / ".git" / "info" / "exclude").read_text()


def test_init_notes_a_tracked_config(repo):
    """A committed .mcp.json is still updated (the para entry is added, nothing else changes),
    and the output says that this tracked file now holds this machine's path."""
    commit_file(repo, ".mcp.json", json.dumps({"mcpServers": {"other": {"command": "o"}}}), "share MCP config")
    out = _init(repo)
    assert "note: this file is tracked by git" in out.stdout, out.stdout
    cfg = json.loads((repo / ".mcp.json").read_text())
    assert cfg["mcpServers"]["other"] == {"command": "o"}
    assert cfg["mcpServers"]["para"]["args"] == ["mcp"] and os.path.isabs(cfg["mcpServers"]["para"]["command"])
    assert git("ls-files", ".mcp.json", cwd=repo) == ".mcp.json"  # still tracked: para never untracks it
    assert git("diff", "--name-only", cwd=repo) == ".mcp.json"
    again = json.loads(_init(repo, "--json").stdout)["results"][0]
    assert again["tracked"] is True and again["action"] == "unchanged"


# ---- streamable HTTP -------------------------------------------------------------------------

def _post(url: str, token: str | None) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


async def test_streamable_http_needs_the_bearer_token(runtime_dir, repo):
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", "--mcp-http", "127.0.0.1:0")
    try:
        sock = runtime_dir / "sidecar.sock"
        url_file, token_file = Path(f"{sock}.mcp-url"), Path(f"{sock}.mcp-token")
        wait_until(url_file.exists, what="the MCP HTTP endpoint")
        url = url_file.read_text().strip()
        token = token_file.read_text().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600 and len(token) >= 32
        assert _post(url, None) == 401
        assert _post(url, "wrong") == 401
        assert _post(url, token[:-1]) == 401
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            async with Client(streamable_http_client(url, http_client=http)) as c:
                assert "para_wait" in {t.name for t in (await c.list_tools()).tools}
                err = await call_error(c, "para_list")
                assert "no default repository" in err
                s = await call(c, "para_start", {"session": "web", "repo": str(repo)})
                assert s["name"] == "web"
        # the same Service: a stdio client sees it
        async with mcp_client(repo) as c:
            assert [x["name"] for x in (await call(c, "para_list"))["sessions"]] == ["web"]
    finally:
        shutdown_sidecar(sc)
    assert not token_file.exists() and not url_file.exists()
    assert not mcp_socket_path(runtime_dir / "sidecar.sock").exists()


def test_http_is_off_by_default_and_loopback_only(sidecar, runtime_dir):
    assert not Path(f"{runtime_dir / 'sidecar.sock'}.mcp-url").exists()
    proc = subprocess.run([PYTHON, "-m", "para_rpc.server.sidecar", "--mcp-http", "0.0.0.0:8080"],
                          capture_output=True, text=True, timeout=60, env=cli_env())
    assert proc.returncode == 2 and "loopback" in proc.stderr
