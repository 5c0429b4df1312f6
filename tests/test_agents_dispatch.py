"""`para dispatch`: a session plus an agent in it, in headless, tmux and editor mode;
what the agent receives (prompt, footer, instruction file, placeholders) and
what is refused before anything is created.

The agents are tests/agents/step_agent.py and tests/agents/probe_agent.py,
configured as custom profiles through PARA_AGENTS in the CLI's environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents_util import (FOOTER, PROBE, STEP, Api, agent_env, agent_scripts, api,  # noqa: F401
                         assert_nothing_created, dispatch, editor, out, step_profile, wait_file)
from conftest import branches, commit_file, git, git_state, make_repo, rev, worktree_paths

pytestmark = pytest.mark.usefixtures("sidecar")


def probe_profile(out: Path) -> dict:
    return {"command": [PROBE, str(out), "{prompt_file}", "{prompt}"]}


def received(out: Path, session: str) -> tuple[bytes, bytes, dict]:
    """What the probe agent of `session` got: the prompt file, the {prompt} argument, info."""
    d = wait_file(out / session / "done").parent
    return ((d / "prompt_file.bin").read_bytes(), (d / "arg0.bin").read_bytes(),
            json.loads((d / "info.json").read_text()))


def wt(repo: Path, name: str) -> Path:
    return repo / ".para" / "worktrees" / name


# ---- the three modes ------------------------------------------------------------------------

def test_headless_dispatch_runs_the_agent_in_its_worktree_and_its_work_lands(api, repo, out, runtime_dir):
    """No --mode, no editor, not inside tmux: headless. The agent runs in the session's
    worktree with the way back to the sidecar in its environment, reports, and lands."""
    prof = step_profile(f"env:{out}/env.json", "status:writing hello", "write:hello.txt=hello\n",
                        "print:agent says hi", "eprint:agent warns", "print:session={session} wt={worktree}",
                        "integrate:Add hello")
    base = rev(repo, "main")  # read before: the agent may land before dispatch's answer is read
    r, _ = dispatch(repo, "hello", "-p", "Add a hello file", "--agent", "w", profiles={"w": prof})
    path = wt(repo, "hello")
    assert (r["name"], r["status"], r["branch"], r["worktree"]) == ("hello", "active", "para/hello", str(path))
    assert r["base_branch"] == "main" and r["base_commit"] == base
    assert r["prompt_file"] == str(repo / ".para" / "prompts" / "hello.md")
    assert Path(r["prompt_file"]).read_text() == f"Add a hello file\n\n{FOOTER}\n"

    api.wait_event("integrated", "hello")
    exited = api.wait_event("agent_exited", "hello")
    assert exited["data"]["exit_code"] == 0 and not exited["data"]["lost"]
    dispatched = api.wait_event("dispatched", "hello")
    assert dispatched["data"]["mode"] == "headless" and dispatched["data"]["profile"] == "w"
    assert dispatched["data"]["task"] == "Add a hello file"
    status = api.wait_event("status", "hello")
    assert status["data"]["task"] == "writing hello" and (status["data"]["todos_done"],
                                                          status["data"]["todos_total"]) == (1, 2)

    # Where and how it ran.
    seen = json.loads((out / "env.json").read_text())
    assert seen["cwd"] == str(path)
    assert seen["env"]["PARA_SESSION"] == "hello" and seen["env"]["PARA_WORKTREE"] == str(path)
    # Not the sidecar's own socket: its session's bound one (issue 16), opened by its token.
    bound = Path(seen["env"]["PARA_SOCKET"])
    assert bound.parent.parent == runtime_dir / "bound" and bound.name == "sock"
    assert len(seen["env"]["PARA_TOKEN"]) >= 32
    assert seen["argv"][1:] == [a.replace("{session}", "hello").replace("{worktree}", str(path))
                                for a in prof["command"][1:]]
    # Its output went to the headless log.
    log = (repo / ".para" / "logs" / "hello.log").read_text()
    assert "agent says hi" in log and "agent warns" in log and f"session=hello wt={path}" in log

    # The work landed on main; branch and worktree are gone.
    assert git("show", "main:hello.txt", cwd=repo) == "hello"
    assert git("log", "-1", "--format=%s", "main", cwd=repo) == "Add hello"
    assert "para/hello" not in branches(repo) and str(path) not in worktree_paths(repo)


def test_editor_mode_runs_the_agent_in_the_editor(api, repo, out, editor):
    """With an editor connected, auto mode asks it (para/runInTerminal) to run the agent.
    (The editor gets the longest agent.editor_timeout, so a slow machine cannot turn this
    into the headless fallback, which has its own test.)"""
    ed = editor("run")
    prof = step_profile(f"env:{out}/env.json", "write:e.txt=editor\n", "integrate:From the editor")
    r, _ = dispatch(repo, "ed", "-p", "edit it", "--agent", "w", profiles={"w": prof},
                    env={"PARA_AGENT_EDITOR_TIMEOUT": "120"})
    api.wait_event("integrated", "ed")
    assert api.wait_event("agent_exited", "ed")["data"]["exit_code"] == 0

    assert len(ed.requests) == 1
    req = ed.requests[0]
    path = str(wt(repo, "ed"))
    assert (req["session"], req["worktree"], req["title"]) == ("ed", path, "para: ed")
    assert req["argv"][1:4] == ["-P", "-m", "para_rpc.agent_runner"] and STEP in req["argv"]
    assert req["env"]["PARA_SESSION"] == "ed" and req["env"]["PARA_WORKTREE"] == path and req["env"]["PATH"]
    dispatched = api.wait_event("dispatched", "ed")["data"]
    assert dispatched["mode"] == "editor" and dispatched["pid"] == ed.procs[0].pid
    assert json.loads((out / "env.json").read_text())["cwd"] == path
    assert git("show", "main:e.txt", cwd=repo) == "editor"


# ---- what the agent receives ------------------------------------------------------------------

def tricky_prompt(canary: Path, size: int) -> str:
    head = (f'He said "hi", she said \'bye\'; $(touch {canary}1) `touch {canary}2` ${{HOME}} $HOME \\ \\n %s %%\n'
            "second line\twith a tab; unicode: é ✓ 日本語; placeholders {prompt} {prompt_file} {session} "
            "{worktree} {}\n\n  indented after a blank line; rm -rf / # ; | & > < * ~ !! \\\n")
    line = "filler $(date) `id` \"quoted\" 'single' {session} -- --help\n"
    body = head + line * ((size - len(head.encode())) // len(line.encode()) + 1)
    return body[:size]


def test_prompt_arrives_byte_exact(api, repo, out, tmp_path):
    """Quotes, $(…), backticks, newlines, placeholders and 100 KB of text reach the agent
    unchanged, both as {prompt_file} and as the {prompt} argument, whether the prompt
    came as -p, on stdin or in a task file; nothing is executed."""
    canary = tmp_path / "pwned"
    prompt = tricky_prompt(canary, 100 * 1024).rstrip("\n")
    (repo / "tasks").mkdir()
    (repo / "tasks" / "big.md").write_bytes(prompt.encode())
    ways = {"by-argument": (["-p", prompt], None), "on-stdin": ([], prompt), "in-a-file": (["-f", "tasks/big.md"], None)}
    expected = (prompt + "\n").encode()
    for name, (args, stdin) in ways.items():
        r, _ = dispatch(repo, name, *args, "--agent", "probe", profiles={"probe": probe_profile(out)}, input=stdin,
                        env={"PARA_AGENT_WORKFLOW": "none"})
        from_file, from_arg, info = received(out, name)
        assert from_file == expected, f"{name}: the {{prompt_file}} content differs from the prompt"
        assert from_arg == expected, f"{name}: the {{prompt}} argument differs from the prompt"
        assert info["argc"] == 3, name  # OUTDIR, the prompt file, the prompt: never split
        assert Path(r["prompt_file"]).read_bytes() == expected, name
        assert api.wait_agent(name)["agent"]["exit_code"] == 0, name
    assert not Path(f"{canary}1").exists() and not Path(f"{canary}2").exists()


def test_a_prompt_too_long_for_an_argument_goes_only_to_prompt_file_profiles(api, repo, out):
    prompt = tricky_prompt(out / "x", 200 * 1024).rstrip("\n")
    before = git_state(repo)
    err, proc = dispatch(repo, "big", "--agent", "probe", profiles={"probe": probe_profile(out)}, input=prompt,
                         check=False)
    assert proc.returncode == 2 and err["error"]["code"] == "invalid_input"
    assert "too long for an argument" in err["error"]["message"]
    assert_nothing_created(repo, before, api)

    file_only = {"command": [PROBE, str(out), "{prompt_file}"]}
    dispatch(repo, "big", "--agent", "fileonly", profiles={"fileonly": file_only}, input=prompt,
             env={"PARA_AGENT_WORKFLOW": "none"})
    d = wait_file(out / "big" / "done").parent
    assert (d / "prompt_file.bin").read_bytes() == (prompt + "\n").encode()


FINISH_FOOTER = 'When done: para finish "<one-line summary of your change>"'


FOOTER_CASES = {
    # session: (task, workflow (None: the default), what the agent receives)
    "added": ("Add a login page", None, f"Add a login page\n\n{FOOTER}\n"),
    "trailing-newlines": ("Add a login page\n\n\n", None, f"Add a login page\n\n{FOOTER}\n"),
    "has-integrate": ('Add a login page.\nWhen done: para integrate "Add login"\n', None,
                      'Add a login page.\nWhen done: para integrate "Add login"\n'),
    "has-footer": (f"Fix the bug.\n\n{FOOTER}", None, f"Fix the bug.\n\n{FOOTER}\n"),
    "no-para": ("Review only; do not run any para commands.", None, "Review only; do not run any para commands.\n"),
    "finish": ("Add a login page", "finish", f"Add a login page\n\n{FINISH_FOOTER}\n"),
    "has-finish": ('Add it, then para finish "Add it"', "integrate", 'Add it, then para finish "Add it"\n'),
    "none": ("Add a login page", "none", "Add a login page\n"),
}


def test_workflow_footer_is_added_once_and_only_when_missing(api, repo, out):
    for name, (task, workflow, expected) in FOOTER_CASES.items():
        api.dispatch(name, task, "probe", profiles={"probe": probe_profile(out)},
                     env={"PARA_AGENT_WORKFLOW": workflow} if workflow else None)
    for name, (task, workflow, expected) in FOOTER_CASES.items():
        from_file, from_arg, _ = received(out, name)
        assert from_file.decode() == expected and from_arg.decode() == expected, name
        assert expected.count("When done") <= 1


def test_instruction_file_is_written_to_the_worktree_and_never_committed(api, repo, out):
    prof = step_profile(f"env:{out}/env.json", f"touch:{out}/ready", f"wait:{out}/gate",
                        "write:feature.txt=feature\n", "commit:raw git commit by the agent",
                        "write:more.txt=more\n", "integrate:Feature")
    dispatch(repo, "inst", "-p", "build the feature", "--agent", "w", profiles={"w": prof})
    wait_file(out / "ready")
    path = wt(repo, "inst")
    text = (path / ".para-agent.md").read_text()
    assert "`inst`" in text and 'para integrate "<summary>"' in text and "para status" in text
    assert json.loads((out / "env.json").read_text())["instruction_file"] == text
    # It does not make the session dirty, and git does not see it.
    assert git("status", "--porcelain", "--untracked-files=all", "--ignored=no", cwd=path) == ""
    assert api.sessions()["inst"]["state"] == "active"

    (out / "gate").touch()
    api.wait_event("integrated", "inst")
    everything = git("log", "--all", "--name-only", "--format=", cwd=repo).split()
    assert "feature.txt" in everything and "more.txt" in everything
    assert ".para-agent.md" not in everything
    assert ".para-agent.md" not in git("ls-tree", "-r", "--name-only", "main", cwd=repo).split()


def test_instruction_file_stays_out_of_commits_when_the_gitignore_unignores_markdown(api, repo, out):
    """A tracked .gitignore may re-include *.md (it outranks info/exclude): para's own
    staging must still leave .para-agent.md out."""
    commit_file(repo, ".gitignore", "*\n!*/\n!*.md\n!*.txt\n!.gitignore\n", "whitelist gitignore")
    prof = step_profile("write:notes.md=notes\n", "integrate:Notes")
    dispatch(repo, "wl", "-p", "write notes", "--agent", "w", profiles={"w": prof})
    api.wait_event("integrated", "wl")
    assert git("show", "main:notes.md", cwd=repo) == "notes"
    assert ".para-agent.md" not in git("ls-tree", "-r", "--name-only", "main", cwd=repo).split()


# ---- task files -----------------------------------------------------------------------------

def test_task_file_is_found_in_tasks_and_names_the_session(api, repo, out):
    (repo / "tasks").mkdir()
    task = repo / "tasks" / "TASK_1_Login-Page.md"
    task.write_text("Build the login page.\n")
    (repo / "src").mkdir()
    r, _ = dispatch(repo, "-f", "TASK_1_Login-Page.md", "--agent", "probe", profiles={"probe": probe_profile(out)},
                    cwd=repo / "src")
    assert r["name"] == "login-page" and r["task"] == str(task)
    from_file, _, _ = received(out, "login-page")
    assert from_file.decode() == f"Build the login page.\n\n{FOOTER}\n"


def test_an_inline_prompt_with_slashes_is_never_read_as_a_path(api, repo, out):
    (repo / "tasks").mkdir()
    (repo / "tasks" / "TASK_1_x.md").write_text("SECRET TASK FILE CONTENT\n")
    (repo / "notes").mkdir()
    (repo / "notes" / "todo.md").write_text("SECRET NOTES\n")
    prompts = ["tasks/TASK_1_x.md", "TASK_1_x.md", "./notes/todo.md", "tasks/", "fix src/app.py and docs/"]
    for prompt in prompts:
        r, _ = dispatch(repo, "-p", prompt, "--agent", "probe", profiles={"probe": probe_profile(out)})
        assert r["name"] != "x" and r["task"] == prompt
        from_file, from_arg, _ = received(out, r["name"])
        assert from_file.decode() == from_arg.decode() == f"{prompt}\n\n{FOOTER}\n"
    assert api.plans() == []


def outside_setup(repo: Path, tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "TASK_1_evil.md").write_text("OUTSIDE SECRET\n")
    tasks = repo / "tasks"
    tasks.mkdir()
    (tasks / "TASK_1_fine.md").write_text("fine\n")
    return outside


def assert_refused_as_outside(api: Api, repo: Path, out: Path, arg: str) -> None:
    before = git_state(repo)
    err, proc = dispatch(repo, "-f", arg, "--agent", "probe", profiles={"probe": probe_profile(out)}, check=False)
    assert proc.returncode == 2 and err["error"]["code"] == "invalid_input", (arg, proc.stdout)
    assert "outside the repository" in err["error"]["message"], arg
    assert_nothing_created(repo, before, api)
    assert api.plans() == []
    assert not list(out.iterdir()), "an agent ran"


def test_task_files_outside_the_repository_are_refused(api, repo, out, tmp_path):
    outside = outside_setup(repo, tmp_path)
    (repo / "tasks" / "TASK_2_link.md").symlink_to(outside / "TASK_1_evil.md")
    (repo / "tasks" / "ext").symlink_to(outside)
    for arg in (str(outside / "TASK_1_evil.md"), "../outside/TASK_1_evil.md", "tasks/TASK_2_link.md",
                "TASK_2_link.md", "tasks/ext", "tasks/ext/TASK_1_evil.md"):
        assert_refused_as_outside(api, repo, out, arg)


def test_a_plan_directory_with_a_task_linked_from_outside_is_refused(api, repo, out, tmp_path):
    outside = outside_setup(repo, tmp_path)
    (repo / "tasks" / "TASK_2_link.md").symlink_to(outside / "TASK_1_evil.md")
    assert_refused_as_outside(api, repo, out, "tasks")


# ---- refused before anything exists -------------------------------------------------------------

ERRORS = {
    # id: (args, profiles, env, stdin, exit status, error code, words in the message)
    "missing-task-file": (["-f", "nope.md"], None, None, None, 3, "not_found", "not found"),
    "empty-task-file": (["-f", "tasks/empty.md"], None, None, None, 2, "invalid_input", "empty"),
    "blank-task-file": (["-f", "tasks/blank.md"], None, None, None, 2, "invalid_input", "empty"),
    "binary-task-file": (["-f", "tasks/binary.md"], None, None, None, 2, "invalid_input", "UTF-8"),
    "dir-without-tasks": (["-f", "docs"], None, None, None, 3, "not_found", "TASK_"),
    "unknown-profile": (["-p", "x", "--agent", "nosuch"], None, None, None, 2, "invalid_input", "nosuch"),
    "binary-not-installed": (["-p", "x", "--agent", "ghost"],
                             {"ghost": {"command": ["para-ghost-agent-xyz", "{prompt}"]}}, None, None, 3,
                             "not_found", "para-ghost-agent-xyz"),
    "empty-prompt-on-stdin": ([], None, None, " \n\n", 2, "invalid_input", "empty"),
    "prompt-and-file": (["-p", "x", "-f", "tasks/TASK_1_ok.md"], None, None, None, 2, "invalid_input", "not both"),
    "invalid-session-name": (["../evil", "-p", "x"], None, None, None, 2, "invalid_input", ""),
    "unknown-base": (["-p", "x", "--base", "nosuch"], None, None, None, 3, "not_found", "nosuch"),
    "nul-in-prompt": ([], None, None, "before\0after", 2, "invalid_input", "NUL"),
    "unknown-mode": (["-p", "x", "--mode", "screen"], None, None, None, 2, "invalid_input", "mode"),
    "bad-PARA_AGENTS": (["-p", "x"], None, {"PARA_AGENTS": "{not json"}, None, 6, "config_error", "PARA_AGENTS"),
    "no-skip-permissions": (["-p", "x", "--agent", "opencode", "-d"], None, None, None, 2, "invalid_input",
                            "skip permissions"),
    "plan-with-a-name": (["named", "-f", "tasks"], None, None, None, 2, "invalid_input", "drop the name"),
    "plan-with-an-empty-task": (["-f", "plan"], None, None, None, 2, "invalid_input", "empty"),
}


PLAIN_TOO = {"missing-task-file", "unknown-profile", "binary-not-installed", "empty-prompt-on-stdin"}


def test_refused_dispatches_create_nothing(api, tmp_path):
    """Each case in a fresh repository: the documented exit status and error code, a
    clear message, and no branch, worktree, session row, plan or agent."""
    for case, (args, profiles, env, stdin, status, code, words) in ERRORS.items():
        repo = make_repo(tmp_path / case)
        capi, out = api.for_repo(repo), tmp_path / f"{case}-out"
        out.mkdir()
        (repo / "tasks").mkdir()
        (repo / "tasks" / "empty.md").write_text("")
        (repo / "tasks" / "blank.md").write_text("  \n\t\n")
        (repo / "tasks" / "binary.md").write_bytes(b"\xff\xfe\x00task")
        (repo / "tasks" / "TASK_1_ok.md").write_text("ok\n")
        (repo / "docs").mkdir()
        (repo / "docs" / "readme.md").write_text("docs\n")
        (repo / "plan").mkdir()
        (repo / "plan" / "TASK_1_first.md").write_text("first\n")
        (repo / "plan" / "TASK_2_second.md").write_text("")
        profiles = {"probe": probe_profile(out), **(profiles or {})}
        args = [*args] + ([] if "--agent" in args else ["--agent", "probe"])
        before = git_state(repo)
        err, proc = dispatch(repo, *args, profiles=profiles, env=env, input=stdin, check=False)
        assert proc.returncode == status, (case, proc.stdout + proc.stderr)
        assert err["error"]["code"] == code and words in err["error"]["message"], (case, err)
        if case in PLAIN_TOO:
            _, plain = dispatch(repo, *args, profiles=profiles, env=env, input=stdin, check=False, as_json=False)
            assert plain.returncode == status and plain.stderr.startswith("para: ") and plain.stdout == "", case
        assert_nothing_created(repo, before, capi)
        assert capi.plans() == [], case
        assert not list(out.iterdir()), f"{case}: an agent ran"


def test_dispatch_to_an_existing_name_is_refused_and_leaves_it_alone(api, repo, out):
    dispatch(repo, "dup", "-p", "first", "--agent", "probe", profiles={"probe": probe_profile(out)})
    received(out, "dup")
    first = api.evidence("dup")
    before = git_state(repo)
    err, proc = dispatch(repo, "dup", "-p", "second", "--agent", "probe", profiles={"probe": probe_profile(out)},
                         check=False)
    assert proc.returncode == 4 and err["error"]["code"] == "already_exists"
    assert git_state(repo) == before
    again = api.evidence("dup")
    assert again["agent"]["pid"] == first["agent"]["pid"] and again["task"] == "first"
    assert (repo / ".para" / "prompts" / "dup.md").read_text() == f"first\n\n{FOOTER}\n"
