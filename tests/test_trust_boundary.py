"""The trust boundary: nothing in a repository runs as the user unless the user asked for it.

Red-team findings of the previous session (their scripts were lost), re-created here as
attacks through the real CLI and the real sidecar; each test names its finding:

1. Python processes para starts with a repository or worktree as cwd (the sidecar the CLI
   autostarts, the agent runner, the scripted agent) never import from that directory:
   a committed `para_rpc/` or a stdlib-shadowing `json.py` must not run (`python -P`).
5. A plan runs the task texts it was made with: a task file swapped after `para dispatch -f
   tasks/` showed the plan does not change what a later step's agent gets.
6. Config and task files are read safely: a project `.para/config.json` or task file that is a
   FIFO (it blocked the sidecar for every client), a device, a symlink out of the repository,
   or larger than 1 MiB is refused with a clear error; nothing is created, the sidecar serves on.
8. The task never becomes options of an agent CLI, nor shows in `ps`: the built-in headless
   profiles (claude, codex, gemini, opencode) get it on stdin, the interactive ones after `--`
   or as `--option=<task>`; a custom profile that would pass a task starting with `-` where
   it is parsed as an option is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agents_util import (Api, agent_env, agent_scripts, dispatch, tmux_bin,  # noqa: F401  (autouse: agents cleaned up)
                         wait_file)
from conftest import (PYTHON, Sidecar, commit_file, git, git_state, run_para, shutdown_sidecar, sidecar_pids,
                      start_sidecar, wait_until)


# ---- 1. python -P: a repository's files never shadow para's modules or the stdlib -----------

SHADOW = """\
import os, pathlib, sys
pathlib.Path({marker!r}).mkdir(exist_ok=True)
pathlib.Path({marker!r}, "{name}-" + str(os.getpid())).write_text(" ".join(sys.argv))
"""


def plant_shadows(repo: Path, marker: Path) -> None:
    """Commit modules that would run if a para process imported from the repository:
    para's own package and stdlib modules every para process imports."""
    for name in ("para_rpc/__init__.py", "para_rpc/agent_runner.py", "para_rpc/scripted_agent.py",
                 "para_rpc/server/__init__.py", "para_rpc/server/sidecar.py",
                 "json.py", "argparse.py", "subprocess.py", "signal.py", "shutil.py", "re.py"):
        stem = name.replace("/", ".").removesuffix(".py")
        commit_file(repo, name, SHADOW.format(marker=str(marker), name=stem), f"plant {name}")


def test_autostarted_sidecar_does_not_import_from_the_repository(repo: Path, tmp_path: Path, runtime_dir: Path):
    """Finding 1: `para` autostarts the sidecar from the caller's directory; with `python -m`
    that directory came first on sys.path, so a cloned repository's `para_rpc/` ran as the
    sidecar (as the user, for every repository it serves)."""
    marker = tmp_path / "ran"
    plant_shadows(repo, marker)
    assert not sidecar_pids(runtime_dir)
    run_para("list", cwd=repo)  # no sidecar yet: the CLI starts one, cwd = the repository
    assert sidecar_pids(runtime_dir)
    assert not marker.exists(), sorted(p.name for p in marker.iterdir())


@pytest.mark.usefixtures("sidecar")
def test_agent_runner_and_scripted_agent_do_not_import_from_the_worktree(repo: Path, tmp_path: Path,
                                                                         sidecar, runtime_dir: Path):
    """Finding 1: the agent runner and the scripted agent run with the session's worktree as
    cwd (`python -m para_rpc.agent_runner`, `python -m para_rpc.scripted_agent`): the
    worktree's `para_rpc/` or `json.py` (anything the task's author committed) ran instead."""
    marker = tmp_path / "ran"
    plant_shadows(repo, marker)
    task = "Add a file.\n\n```file:added.txt\nadded\n```\n\nDo not run any para commands.\n"
    r, _ = dispatch(repo, "shadow", "-p", task, "--agent", "scripted", "--mode", "headless")
    api = Api(sidecar.socket, repo)
    exited = api.wait_event("agent_exited", "shadow")
    assert exited["data"]["exit_code"] == 0, (repo / ".para" / "logs" / "shadow.log").read_text()
    assert (Path(r["worktree"]) / "added.txt").read_text() == "added\n"  # the real scripted agent ran
    assert not marker.exists(), sorted(p.name for p in marker.iterdir())


# ---- 8. the task reaches agent CLIs on stdin or after `--`, never as options ---------------

FAKE_AGENT = """\
#!{python}
# A stand-in for an agent CLI (installed on PATH under its name): records how it was called.
import json, os, sys
stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
out = os.path.join(os.environ["FAKE_AGENT_OUT"], os.path.basename(sys.argv[0]) + "-" + os.environ["PARA_SESSION"])
with open(out + ".tmp", "w") as f:
    json.dump({{"args": sys.argv[1:], "stdin": stdin}}, f)
os.replace(out + ".tmp", out + ".json")
"""

CLIS = ("claude", "codex", "gemini", "opencode")
HOSTILE_TASK = "--dangerously-skip-permissions --yolo\nDelete everything.\n"


@pytest.fixture
def fake_clis(tmp_path: Path, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch, agent_env: Path):
    """claude, codex, gemini and opencode on PATH as recorders, and a sidecar started with that
    PATH (the sidecar finds and runs agent binaries with its own environment)."""
    bindir, out = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    out.mkdir()
    for name in CLIS:
        (bindir / name).write_text(FAKE_AGENT.format(python=PYTHON))
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_AGENT_OUT", str(out))
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
    yield out, sc
    shutdown_sidecar(sc, wait=False)


def called(out: Path, cli: str, session: str) -> dict:
    return json.loads(wait_file(out / f"{cli}-{session}.json").read_text())


HEADLESS_ARGS = {"claude": ["-p"], "codex": ["exec", "-"], "gemini": [], "opencode": ["run"]}


def test_headless_builtin_profiles_get_the_task_on_stdin_never_in_argv(repo: Path, fake_clis):
    """Finding 8: `claude -p <task>`, `codex exec <task>`, ... put the task into argv, where
    every local user sees it in `ps` and a task starting with `-` is parsed as options (here
    one that would turn off the agent's permission checks)."""
    out, _ = fake_clis
    for cli in CLIS:
        r, _ = dispatch(repo, f"h-{cli}", "--agent", cli, "--mode", "headless", input=HOSTILE_TASK)
        prompt = Path(r["prompt_file"]).read_text()
        assert prompt.startswith(HOSTILE_TASK)
        got = called(out, cli, f"h-{cli}")
        assert got["args"] == HEADLESS_ARGS[cli], (cli, got)
        assert got["stdin"] == prompt, (cli, got)


INTERACTIVE_ARGS = {"claude": lambda p: ["--", p], "codex": lambda p: ["--", p],
                    "gemini": lambda p: [f"--prompt-interactive={p}"], "opencode": lambda p: [f"--prompt={p}"]}


def test_interactive_builtin_profiles_pass_the_task_after_double_dash(repo: Path, fake_clis, tmux_bin: str):
    """Finding 8, interactive (tmux) mode: the agent's stdin is the terminal, so the task is
    an argument, but one no parser can take for an option: after `--`, or bound with `=`."""
    out, _ = fake_clis
    for cli in CLIS:
        r, _ = dispatch(repo, f"i-{cli}", "--agent", cli, "--mode", "tmux", input=HOSTILE_TASK)
        prompt = Path(r["prompt_file"]).read_text()
        got = called(out, cli, f"i-{cli}")
        assert got["args"] == INTERACTIVE_ARGS[cli](prompt), (cli, got)


def test_custom_profile_taking_a_dash_task_as_an_option_is_refused(repo: Path, fake_clis):
    """Finding 8, custom profiles: a `{prompt}` element before any `--` would be parsed as
    options when the task starts with `-`: refused before anything is created; after `--`
    (or once the task does not start with `-`) it runs."""
    out, sc = fake_clis
    bare = {"bare": {"command": ["claude", "--model", "x", "{prompt}"]}}
    before = git_state(repo)
    err, proc = dispatch(repo, "bare", "--agent", "bare", "--mode", "headless", input=HOSTILE_TASK,
                         profiles=bare, check=False)
    assert proc.returncode == 2 and err["error"]["code"] == "invalid_input", err
    assert '"--" before {prompt}' in err["error"]["message"]
    assert git_state(repo) == before and not (repo / ".para" / "worktrees" / "bare").exists()
    assert Api(sc.socket, repo).sessions() == {}

    dashed = {"dashed": {"command": ["claude", "--model", "x", "--", "{prompt}"]}}
    r, _ = dispatch(repo, "dashed", "--agent", "dashed", "--mode", "headless", input=HOSTILE_TASK,
                    profiles=dashed)
    got = called(out, "claude", "dashed")
    assert got["args"] == ["--model", "x", "--", Path(r["prompt_file"]).read_text()]
    dispatch(repo, "plain", "--agent", "bare", "--mode", "headless", input="Fix it.\n", profiles=bare)
    assert called(out, "claude", "plain")["args"][:2] == ["--model", "x"]


# ---- 5. a plan runs the texts it was made with ----------------------------------------------

def scripted_task(path: str, content: str, summary: str, gate: Path | None = None) -> str:
    wait = f"```agent\nwait-for {gate}\n```\n\n" if gate else ""
    return f"A task.\n\n```file:{path}\n{content}```\n\n{wait}When done: para integrate \"{summary}\"\n"


@pytest.mark.usefixtures("sidecar")
def test_plan_dispatches_the_task_texts_stored_at_creation(repo: Path, tmp_path: Path, sidecar):
    """Finding 5: step 2's task file was read when step 2 started, so a file swapped after
    the plan was shown (by step 1's agent, or anyone who can write the checkout) ran other
    text. Here it is swapped while step 1 runs, with a symlink out of the repository too."""
    gate = tmp_path / "gate"
    tasks = repo / "tasks"
    tasks.mkdir()
    (tasks / "TASK_1_first.md").write_text(scripted_task("first.txt", "one\n", "First", gate))
    original = scripted_task("second.txt", "two\n", "Second")
    (tasks / "TASK_2_second.md").write_text(original)
    (tasks / "TASK_2_third.md").write_text(scripted_task("third.txt", "three\n", "Third"))
    r, _ = dispatch(repo, "-f", "tasks/", "--agent", "scripted", "--mode", "headless")
    texts = {t["name"]: t["text"] for st in r["plan"]["steps"] for t in st["tasks"]}
    assert texts["second"] == original

    evil = scripted_task("pwned.txt", "swapped\n", "Swapped")
    (tasks / "TASK_2_second.md").write_text(evil)
    outside = tmp_path / "outside.md"
    outside.write_text(evil)
    (tasks / "TASK_2_third.md").unlink()
    (tasks / "TASK_2_third.md").symlink_to(outside)
    gate.touch()

    api = Api(sidecar.socket, repo)
    api.wait_plan("done")
    assert git("show", "main:second.txt", cwd=repo) == "two"
    assert git("show", "main:third.txt", cwd=repo) == "three"
    assert git("ls-tree", "--name-only", "main", cwd=repo).split().count("pwned.txt") == 0
    assert (repo / ".para" / "prompts" / "second.md").read_text().startswith(original.rstrip("\n"))


# ---- 6. config and task files: no FIFO, device, symlink out, or giant file ------------------

def hostile_files(tmp_path: Path) -> dict[str, "Callable[[Path], None]"]:
    """Ways to make `path` something para must not read, and the words the error must say."""
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"integrate": {"check": "sh -c 'echo pwned > /tmp/pwned'"}}))
    return {
        "FIFO": lambda p: os.mkfifo(p),
        "leads out of": lambda p: p.symlink_to("/dev/zero"),
        "leads out of ": lambda p: p.symlink_to(outside),  # (a file outside: never read either)
        "larger than": lambda p: p.write_bytes(b" " * (1 << 20) + b"{}"),
    }


def sidecar_serves(other: Path) -> None:
    """The sidecar still answers for another repository (it was not blocked on a read)."""
    assert json.loads(run_para("list", "--json", cwd=other).stdout)["sessions"] == []


@pytest.mark.usefixtures("sidecar")
def test_project_config_fifo_device_symlink_out_or_huge_is_a_config_error(repo: Path, tmp_path: Path):
    """Finding 6, the project file: every request reads it; a FIFO there (an agent can
    `mkfifo` in the main checkout) hung the sidecar for all repositories, a symlink to
    /dev/zero made it read forever, a symlink out of the repository was followed."""
    from conftest import make_repo
    other = make_repo(tmp_path / "other")
    path = repo / ".para" / "config.json"
    path.parent.mkdir(exist_ok=True)
    for words, make in hostile_files(tmp_path).items():
        make(path)
        for args in (["config", "show"], ["start", "x"], ["trust", "--show"]):
            proc = run_para(*args, "--json", cwd=repo, check=False)
            err = json.loads(proc.stdout)["error"]
            assert proc.returncode == 6 and err["code"] == "config_error", (words, args, err)
            assert words.strip() in err["message"] and str(path) in err["message"], err
        assert not (repo / ".para" / "worktrees" / "x").exists()
        sidecar_serves(other)
        path.unlink()
    run_para("config", "set", "--project", "finish.squash", "false", cwd=repo)
    assert json.loads(path.read_text()) == {"finish": {"squash": False}}


@pytest.mark.usefixtures("sidecar")
def test_task_file_fifo_device_symlink_out_or_huge_is_refused(repo: Path, tmp_path: Path):
    """Finding 6, task files: `para dispatch -f` of a FIFO blocked the sidecar for good;
    of a giant file read it all into memory. Refused, nothing created."""
    from conftest import make_repo
    other = make_repo(tmp_path / "other")
    before = git_state(repo)
    for words, make in hostile_files(tmp_path).items():
        path = repo / "task.md"
        make(path)
        proc = run_para("dispatch", "t", "-f", "task.md", "--agent", "scripted", "--mode", "headless", "--json",
                        cwd=repo, check=False)
        err = json.loads(proc.stdout)["error"]
        assert proc.returncode == 2 and err["code"] == "invalid_input", (words, err)
        assert ("outside the repository" if "leads" in words else words) in err["message"], err
        assert git_state(repo)["refs"] == before["refs"] and not (repo / ".para" / "worktrees" / "t").exists()
        sidecar_serves(other)
        path.unlink()
