"""Agents in tmux: `--mode tmux`, auto mode inside tmux, and the editor mode's
fallback to tmux when no editor runs the agent.

Each test has its own tmux server (TMUX_TMPDIR, see agents_util) and starts its
own sidecar after setting it (`own_sidecar`), so the sidecar's tmux commands
and its agents use that server and nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents_util import (Api, Editor, agent_env, agent_scripts, agents_env, assert_nothing_created,  # noqa: F401
                         dispatch, editors, out, own_sidecar, popen_para, step_profile, tmux, tmux_bin, wait_file)
from conftest import Sidecar, git, git_state, shutdown_sidecar, start_sidecar


@pytest.fixture
def api(own_sidecar: Sidecar, repo: Path, tmux_bin: str) -> Api:
    return Api(own_sidecar.socket, repo)


@pytest.fixture
def editor(own_sidecar: Sidecar) -> Iterator[Callable[..., Editor]]:
    yield from editors(own_sidecar.socket)


def wt(repo: Path, name: str) -> Path:
    return repo / ".para" / "worktrees" / name


def test_tmux_dispatch_runs_the_agent_in_a_window_of_the_para_session(api, repo, out, para):
    prof = step_profile(f"env:{out}/env.json", f"touch:{out}/ready", f"wait:{out}/gate",
                        "write:t.txt=tmux\n", "integrate:Work from tmux")
    r, _ = dispatch(repo, "tm", "-p", "work in tmux", "--agent", "w", "--mode", "tmux", profiles={"w": prof})
    wait_file(out / "ready")
    ev = api.evidence("tm")
    agent = ev["agent"]
    assert agent["mode"] == "tmux" and agent["state"] == "running" and agent["log"] is None
    assert agent["window"].startswith("@")
    windows = tmux("list-windows", "-t", "=para", "-F", "#{window_id} #{window_name}", check=True).stdout
    assert f"{agent['window']} tm" in windows.splitlines()
    seen = json.loads((out / "env.json").read_text())
    assert seen["cwd"] == str(wt(repo, "tm")) and seen["env"]["PARA_SESSION"] == "tm"
    assert seen["env"].get("TMUX"), "the agent does not run inside tmux"

    # Its output is in the window, not in a log; attach needs a terminal.
    logs = para("logs", "tm", check=False)
    assert logs.returncode == 3 and "para attach tm" in logs.stderr
    attach = para("attach", "tm", check=False)
    assert attach.returncode == 2 and agent["window"] in attach.stderr

    (out / "gate").touch()
    api.wait_event("integrated", "tm")
    assert api.wait_event("agent_exited", "tm")["data"]["exit_code"] == 0
    assert git("show", "main:t.txt", cwd=repo) == "tmux"


def test_concurrent_dispatches_inside_tmux_all_get_windows(api, repo, out):
    """Inside tmux (TMUX set for the CLI), auto mode picks tmux. Three dispatches at once,
    with no tmux session yet: all must open a window in the one `para` session."""
    env = {**agents_env(w=step_profile(f"touch:{out}/{{session}}", f"wait:{out}/gate")), "TMUX": "/tmp/x,1,0"}
    procs = [popen_para("dispatch", f"c{i}", "-p", "parallel work", "--agent", "w", "--json", cwd=repo, env=env)
             for i in range(3)]
    results = [(p, *p.communicate(timeout=60)) for p in procs]
    for p, stdout, stderr in results:
        assert p.returncode == 0, f"dispatch failed ({p.returncode}): {stdout}{stderr}"
    for i in range(3):
        wait_file(out / f"c{i}")
        assert api.evidence(f"c{i}")["agent"]["mode"] == "tmux"
    names = tmux("list-windows", "-t", "=para", "-F", "#{window_name}", check=True).stdout.split()
    assert sorted(names) == ["c0", "c1", "c2"]
    (out / "gate").touch()
    for i in range(3):
        assert api.wait_agent(f"c{i}")["agent"]["exit_code"] == 0


def test_editor_mode_falls_back_to_tmux_when_no_editor_runs_the_agent(api, repo, out, editor):
    """--mode editor: with no editor connected, an editor that never answers (within
    agent.editor_timeout), or one that answers ok=false, the agent runs in tmux."""
    for behaviour in ("absent", "silent", "refuse"):
        ed = editor(behaviour) if behaviour != "absent" else None
        prof = step_profile(f"touch:{out}/{{session}}.ran", f"wait:{out}/{{session}}.gate")
        r, _ = dispatch(repo, behaviour, "-p", "fall back", "--agent", "w", "--mode", "editor", profiles={"w": prof},
                        env={"PARA_AGENT_EDITOR_TIMEOUT": "1"})
        assert "no editor answered; the agent runs in tmux mode" in r["notes"], behaviour
        wait_file(out / f"{behaviour}.ran")
        agent = api.evidence(behaviour)["agent"]
        assert agent["mode"] == "tmux" and agent["window"] and agent["state"] == "running", behaviour
        if ed is not None:
            assert [q["session"] for q in ed.requests] == [behaviour] and ed.procs == []
            ed.close()
        (out / f"{behaviour}.gate").touch()
        assert api.wait_agent(behaviour)["agent"]["exit_code"] == 0, behaviour


def test_a_launch_that_fails_after_the_session_was_created_leaves_nothing_behind(repo, out, runtime_dir, tmp_path,
                                                                              tmux_bin):
    """tmux cannot start its server (TMUX_TMPDIR is a file): the dispatch fails with a
    clear message and the session it had already created is undone."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env={**os.environ, "TMUX_TMPDIR": str(blocker)})
    try:
        api = Api(sc.socket, repo)
        before = git_state(repo)
        err, proc = dispatch(repo, "doomed", "-p", "never runs", "--agent", "w", "--mode", "tmux",
                             profiles={"w": step_profile(f"touch:{out}/ran")}, check=False)
        assert proc.returncode == 1 and err["error"]["code"] == "internal", proc.stdout
        assert "tmux could not open a window" in err["error"]["message"]
        assert_nothing_created(repo, before, api)
        assert not (out / "ran").exists()
    finally:
        shutdown_sidecar(sc, wait=False)


def _session_env_config(tmp_path: Path) -> None:
    """`session.env` and a port in this test's user file (read by the sidecar at each request)."""
    cfg = Path(os.environ["PARA_CONFIG"])
    cfg.write_text(json.dumps({"session": {"env": {"MY_VAR": "from session.env", "PATH": "/usr/bin:/bin"},
                                           "ports": 1, "port_range": "29700-29799"}}))


def test_session_env_reaches_an_agent_in_a_window_of_a_running_tmux_server(api, repo, out, tmp_path):
    """A tmux window starts from the tmux server's environment, not the sidecar's: with a
    server already running (started without them), session.env and PARA_PORT must be set in
    the window itself, and `para` must stay first on PATH."""
    tmux("new-session", "-d", "-s", "before-para", check=True)
    _session_env_config(tmp_path)
    prof = step_profile(f"env:{out}/env.json")
    r, _ = dispatch(repo, "te", "-p", "show me the environment", "--agent", "w", "--mode", "tmux",
                    profiles={"w": prof})
    seen = json.loads(wait_file(out / "env.json").read_text())["env"]
    assert seen.get("MY_VAR") == "from session.env", sorted(seen)
    assert seen["PARA_PORT"] == str(r["ports"][0]) and seen["PARA_SESSION"] == "te"
    assert seen["PATH"].endswith(":/usr/bin:/bin") and os.path.exists(seen["PATH"].split(":")[0] + "/para")
    assert api.wait_agent("te")["agent"]["exit_code"] == 0


def test_session_env_reaches_an_agent_in_an_editor_terminal(api, repo, out, editor, tmp_path):
    """The editor runs the agent with the env of para/runInTerminal: session.env must be in it."""
    ed = editor("run")
    _session_env_config(tmp_path)
    prof = step_profile(f"env:{out}/env.json")
    r, _ = dispatch(repo, "ee", "-p", "show me the environment", "--agent", "w", "--mode", "editor",
                    profiles={"w": prof}, env={"PARA_AGENT_EDITOR_TIMEOUT": "120"})
    seen = json.loads(wait_file(out / "env.json").read_text())["env"]
    payload = ed.requests[0]["env"]
    for env in (payload, seen):
        assert env.get("MY_VAR") == "from session.env" and env["PARA_PORT"] == str(r["ports"][0])
        assert env["PATH"].endswith(":/usr/bin:/bin") and os.path.exists(env["PATH"].split(":")[0] + "/para")
    assert api.wait_agent("ee")["agent"]["exit_code"] == 0
