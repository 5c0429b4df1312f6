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
   (test_end_to_end_in_code_server).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from agents_util import step_profile
from conftest import IDENTITY, PARA_SCRIPT, commit_file, make_repo
from ssh_util import SshHost, ssh_host  # noqa: F401  (fixture)
from vscode_util import EXT_DIR, _checkout_key, built, locked, npm_deps, npm_env, npm_run

# Read when the module is collected: the session fixture then drops every PARA_* variable.
UPDATE_SCREENSHOTS = os.environ.get("PARA_UPDATE_SCREENSHOTS") == "1"

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
    with locked(f"build-{_checkout_key()}"):  # the package step rebuilds out/main.js
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
    _node_tests_passed(out, 18)


@pytest.mark.timeout(600)
def test_connection_module_against_a_real_sidecar(tmp_path: Path, runtime_dir: Path) -> None:
    built()
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, "tasks/TASK_1_hello.md", HELLO_TASK, "a task for the agent")
    # the node process gets the test's isolated environment (runtime dir, HOME, git identity)
    import os
    env = dict(os.environ, PARA_BIN=str(PARA_SCRIPT), PARA_TEST_REPO=str(repo))
    out = _ok(npm_run("test:protocol:run", env=env | {"PATH": npm_env()["PATH"]}), "node --test out/tests/protocol")
    _node_tests_passed(out, 10)


# ---- tier 4: the real editor ----------------------------------------------------------------

@pytest.mark.timeout(2400)  # a cold install (apt, Node 24, code-server's native builds) takes minutes
def test_end_to_end_in_code_server(tmp_path: Path, runtime_dir: Path, ssh_host: SshHost) -> None:
    """From the real UI of code-server 4.139.1 with the built .vsix installed: the Para view
    and its welcome, "Para: Start Session" from the palette, `para start` from a shell showing
    up by itself, a scripted agent dispatched into a VS Code terminal reaching review,
    integrating it (preview, confirm, message) until it leaves the tree and its file is on
    main, a conflict whose notification's "Abort" restores the session, and an agent on another
    host (the real sshd of tests/ssh_util.py) whose item says `@h1 (never harvested)`, then its
    harvest's age, with `runs on h1 (127.0.0.1), last harvest ...` in its tooltip. A screenshot per
    step under the test's output (PARA_UPDATE_SCREENSHOTS=1 also copies them into
    editors/vscode/media/ for the README); activation time and the CLI-to-tree delay are
    printed, never asserted."""
    import os
    import shutil
    import signal
    import subprocess
    import tempfile
    import time
    import urllib.request

    from vscode_util import QUIET_SETTINGS, code_server, free_port, node24, step

    cs = code_server()
    n24 = node24()
    built()
    vsix = tmp_path / "para.vsix"
    with locked(f"build-{_checkout_key()}"):
        step(["npx", "vsce", "package", "--no-dependencies", "--out", str(vsix)], "vsce package", cwd=EXT_DIR,
             env=npm_env())

    repo = make_repo(tmp_path / "repo")
    gate = tmp_path / "agent-gate"
    # the agent on the host commits and reports (its first harvest) only once the driver saw it
    # never harvested; the sweep is an hour, so nothing else harvests it meanwhile
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps(
        {"executors": {"h1": ssh_host.entry(env_passthrough=list(IDENTITY), harvest_interval=3600)}}))
    remote_gate = tmp_path / "remote-gate"
    remote_agent = step_profile(f"wait:{remote_gate}", "write:far.txt=far\n", "commit:far", "status:far along",
                                f"wait:{tmp_path}/never")
    # the agent reports and then waits for the driver (which screenshots its terminal meanwhile)
    gated = HELLO_TASK.replace("When done:", f"```agent\nstatus saying hello\nwait-for {gate}\n```\n\nWhen done:")
    commit_file(repo, "tasks/TASK_1_hello.md", gated, "a task for the agent")
    home, ud, exts, shots = (tmp_path / d for d in ("home", "ud", "ext", "screenshots"))
    for d in (home, ud / "User", exts, shots):
        d.mkdir(parents=True)
    (ud / "User" / "settings.json").write_text(json.dumps(QUIET_SETTINGS | {"para.path": str(PARA_SCRIPT)}))
    trace = tmp_path / "trace.jsonl"
    # a short TMPDIR: Chromium's and VS Code's unix sockets go there, and a socket path is
    # limited to ~100 bytes (pytest-xdist's tmp_path is longer than that allows)
    short_tmp = Path(tempfile.mkdtemp(prefix="pv", dir="/tmp"))
    env = dict(os.environ, HOME=str(home), SHELL="/bin/bash", TMPDIR=str(short_tmp),
               XDG_CONFIG_HOME=str(tmp_path / "xdg-config"), XDG_DATA_HOME=str(tmp_path / "xdg-data"),
               XDG_CACHE_HOME=str(tmp_path / "xdg-cache"), PARA_VSCODE_TRACE=str(trace))
    env["PATH"] = f"{n24}{os.pathsep}{env['PATH']}"
    dirs = ["--user-data-dir", str(ud), "--extensions-dir", str(exts)]
    step([str(cs), *dirs, "--install-extension", str(vsix)], "code-server --install-extension", env=env)

    port = free_port()
    log = open(tmp_path / "code-server.log", "w")
    proc = subprocess.Popen([str(cs), "--auth", "none", "--bind-addr", f"127.0.0.1:{port}", "--disable-telemetry",
                             "--disable-update-check", "--disable-workspace-trust", *dirs, str(repo)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
                break
            except OSError:
                assert proc.poll() is None, f"code-server exited {proc.returncode}:\n{(tmp_path / 'code-server.log').read_text()[-4000:]}"
                assert time.monotonic() < deadline, "code-server did not answer /healthz within 120 s"
                time.sleep(0.2)
        drive_env = dict(env, CS_URL=f"http://127.0.0.1:{port}", PARA_TEST_REPO=str(repo), PARA_BIN=str(PARA_SCRIPT),
                         SHOTS_DIR=str(shots), AGENT_GATE=str(gate), HOME=npm_env()["HOME"],
                         REMOTE_EXECUTOR="h1", REMOTE_GATE=str(remote_gate), REMOTE_AGENTS=json.dumps({"w": remote_agent}))
        res = subprocess.run(["node", str(EXT_DIR / "out" / "tests" / "e2e" / "drive.js")], env=drive_env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its extension host and pty host go with it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(short_tmp, ignore_errors=True)
    steps = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    for s in steps:
        if s["step"].startswith("measure") or s["step"] in ("workbench visible", "done"):
            print("vscode e2e:", json.dumps(s))
    if UPDATE_SCREENSHOTS:
        for png in shots.glob("*.png"):
            shutil.copy(png, EXT_DIR / "media" / png.name)
    assert res.returncode == 0 and steps and steps[-1]["step"] == "done", (
        f"the end-to-end run failed (screenshots in {shots}):\n{res.stdout[-8000:]}\n{res.stderr[-4000:]}\n"
        f"code-server log:\n{(tmp_path / 'code-server.log').read_text()[-4000:]}")
    names = sorted(p.name for p in shots.glob("*.png"))
    assert [n.split("-", 2)[2] for n in names] == [
        "welcome.png", "start-from-palette.png", "cli-start.png", "agent-terminal.png", "agent-review.png", "diff.png",
        "integrate-preview.png", "integrated.png", "conflict.png", "aborted.png", "remote-agent.png"], names
