"""`para mcp init`: register `para mcp` in an AI client's project config (stdlib only).

Each client keeps a JSON file in the project: Claude Code `.mcp.json`
(`mcpServers`), Cursor `.cursor/mcp.json` (`mcpServers`), VS Code
`.vscode/mcp.json` (`servers`). The `para` entry is added or updated; every
other server and key stays as it was, and a file that is not valid JSON is
refused rather than rewritten. The entry holds this machine's absolute path
of `para`, so the file is kept out of commits through the repository's
`info/exclude` (never by editing a tracked .gitignore).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from para_rpc.errors import Code, ParaError

SERVER_NAME = "para"
# client -> (file relative to the project root, key holding the servers, extra fields of the entry)
CLIENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "claude-code": (".mcp.json", "mcpServers", {"type": "stdio"}),
    "cursor": (".cursor/mcp.json", "mcpServers", {}),
    "vscode": (".vscode/mcp.json", "servers", {"type": "stdio"}),
}


def para_command() -> tuple[str, list[str]]:
    """The absolute command that runs `para mcp` on this machine."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "para" and os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0), ["mcp"]
    beside = Path(sys.executable).with_name("para")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside), ["mcp"]
    found = shutil.which("para")
    if found:
        return os.path.abspath(found), ["mcp"]
    return sys.executable, ["-P", "-m", "para_rpc", "mcp"]  # -P: see runtime.python


def entry(client: str) -> dict[str, Any]:
    command, args = para_command()
    return {**CLIENTS[client][2], "command": command, "args": args}


def snippet(client: str) -> dict[str, Any]:
    return {CLIENTS[client][1]: {SERVER_NAME: entry(client)}}


def _git(cwd: str, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def project(cwd: str) -> tuple[Path, Path | None]:
    """The project root (the git toplevel, else cwd) and the repository's common git dir."""
    top = _git(cwd, "rev-parse", "--show-toplevel")
    if top is None:
        return Path(cwd), None
    common = _git(cwd, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(top), Path(common) if common else None


def _load(path: Path, key: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ParaError(Code.config_error, f"cannot read {path}: {e}; para leaves it untouched", path=str(path))
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParaError(Code.config_error, f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column "
                        f"{e.colno}); para leaves it untouched: fix it, or add the entry printed by "
                        "`para mcp init --print` by hand", path=str(path)) from None
    if not isinstance(data, dict):
        raise ParaError(Code.config_error, f"{path} does not hold a JSON object; para leaves it untouched",
                        path=str(path))
    if key in data and not isinstance(data[key], dict):
        raise ParaError(Code.config_error, f"{path}: {key!r} is not an object; para leaves it untouched",
                        path=str(path))
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        if mode is not None:
            os.chmod(tmp, mode)
        else:
            os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def exclude(common_dir: Path, rel: str) -> bool:
    """Add `/<rel>` to info/exclude unless it is there; True when added."""
    line = "/" + rel
    path = common_dir / "info" / "exclude"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    if line in (x.strip() for x in text.splitlines()):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(("" if not text or text.endswith("\n") else "\n") + line + "\n")
    return True


def init(cwd: str, clients: list[str]) -> list[dict[str, Any]]:
    root, common = project(cwd)
    results = []
    for client in clients:
        rel, key, _ = CLIENTS[client]
        path = root / rel
        data = _load(path, key)
        servers = data.setdefault(key, {})
        new = entry(client)
        action = "unchanged" if servers.get(SERVER_NAME) == new else "updated" if SERVER_NAME in servers \
            else "created" if not path.exists() else "added"
        if action != "unchanged":
            servers[SERVER_NAME] = new
            _write(path, data)
        result = {"client": client, "path": str(path), "action": action, "entry": new,
                  "excluded": False, "exclude_added": False, "tracked": False}
        if common is not None:
            result["tracked"] = _git(str(root), "ls-files", "--error-unmatch", "--", rel) is not None
            result["exclude_added"] = exclude(common, rel)
            result["excluded"] = True
        results.append(result)
    return results
