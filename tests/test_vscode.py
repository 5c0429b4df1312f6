"""The VS Code extension (editors/vscode), in the four tiers of issue 11, each its own test
so that pytest-xdist runs them side by side:

1. static: `tsc --noEmit` (strict), eslint, prettier --check, the esbuild bundle and the .vsix
   of `npm run package`, plus the project's own rules (every `para.*` command of the issue is
   contributed and registered, protocol names live in lsp_ext.ts only);
2. unit: `node --test` on the pure parts (tree model, argument building, error mapping);
3. protocol: the connection module (no `vscode` import) against a real sidecar through
   `para lsp`: hello, subscribe, a CLI change arriving as notifications, a scripted agent
   dispatched in editor mode run through para/runInTerminal until review, reconnection after
   the sidecar is killed or restarted, `para` not found;
4. end to end: the built .vsix in code-server 4.139.1 on Node 24, driven through Chromium
   (test_vscode_e2e.py).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from conftest import PARA_SCRIPT, commit_file, make_repo
from vscode_util import EXT_DIR, built, npm_deps, npm_run, npm_env

ISSUE_COMMANDS = ["para.start", "para.dispatch", "para.integrate", "para.continue", "para.abort", "para.finish",
                  "para.cancel", "para.recover", "para.resume", "para.openWorktree", "para.openTerminal",
                  "para.showDiff", "para.showLog", "para.conflicts", "para.dispatchPlan", "para.editConfig",
                  "para.restartSidecar"]

HELLO_TASK = """# Say hello

```file:hello.txt
hello from the agent
```

When done: para finish "hello from the agent"
"""


def _ok(res, what: str) -> str:
    assert res.returncode == 0, f"{what} failed (exit {res.returncode}):\n{res.stdout[-8000:]}\n{res.stderr[-8000:]}"
    return res.stdout


def _node_tests_passed(out: str, at_least: int) -> None:
    passed = int(re.search(r"^# pass (\d+)$", out, re.M).group(1))
    failed = int(re.search(r"^# fail (\d+)$", out, re.M).group(1))
    assert failed == 0 and passed >= at_least, out[-8000:]


@pytest.mark.timeout(900)
def test_static_checks_bundle_and_vsix() -> None:
    npm_deps()
    for script in ("typecheck", "lint", "format:check"):
        _ok(npm_run(script), f"npm run {script}")
    _ok(npm_run("package"), "npm run package")
    vsix = EXT_DIR / "para.vsix"
    with zipfile.ZipFile(vsix) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("extension/package.json"))
        bundle = z.read("extension/out/main.js").decode()
    assert {"extension/out/main.js", "extension/package.json", "extension/readme.md", "extension/changelog.md"} <= names
    assert not any("node_modules" in n or "/src/" in n for n in names), sorted(names)
    # one bundle: vscode-jsonrpc inside it, only VS Code's own module left to require
    requires = set(re.findall(r'require\("([^"]+)"\)', bundle))
    assert "vscode" in requires and not {r for r in requires if not r.startswith("node:")} - {
        "vscode", "child_process", "fs", "path", "net", "os", "util", "crypto", "events", "stream", "url", "buffer"}

    contributed = {c["command"] for c in manifest["contributes"]["commands"]}
    assert set(ISSUE_COMMANDS) <= contributed
    assert all(c["category"] == "Para" for c in manifest["contributes"]["commands"])
    registered = set(re.findall(r'^\s*"(para\.\w+)": cmd\(', (EXT_DIR / "src" / "commands.ts").read_text(), re.M))
    assert registered == contributed, (registered ^ contributed)
    assert manifest["engines"]["vscode"] == "^1.100.0"
    assert manifest["activationEvents"] == ["workspaceContains:.git"]
    assert set(manifest["contributes"]["configuration"]["properties"]) == {"para.path", "para.agentTerminals"}
    readme = (EXT_DIR / "README.md").read_text()
    for key in ("para.path", "para.agentTerminals", *ISSUE_COMMANDS):
        assert key in readme, f"editors/vscode/README.md does not mention {key}"

    # every wire name in one file, so that a generated lsp_ext.ts can replace it
    for src in (EXT_DIR / "src").glob("*.ts"):
        if src.name != "lsp_ext.ts":
            assert not re.search(r'"para/\w+"', src.read_text()), f"{src.name} spells a para/ method"


@pytest.mark.timeout(600)
def test_unit_tests_of_the_pure_parts() -> None:
    built()
    out = _ok(npm_run("test:unit:run"), "node --test out/tests/unit")
    _node_tests_passed(out, 14)


@pytest.mark.timeout(600)
def test_connection_module_against_a_real_sidecar(tmp_path: Path, runtime_dir: Path) -> None:
    built()
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, "tasks/TASK_1_hello.md", HELLO_TASK, "a task for the agent")
    # the node process gets the test's isolated environment (runtime dir, HOME, git identity)
    import os
    env = dict(os.environ, PARA_BIN=str(PARA_SCRIPT), PARA_TEST_REPO=str(repo))
    out = _ok(npm_run("test:protocol:run", env=env | {"PATH": npm_env()["PATH"]}), "node --test out/tests/protocol")
    _node_tests_passed(out, 9)
