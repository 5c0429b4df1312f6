"""The fast path serves exactly what typer would.

`para_rpc/cli/fast.py` answers the commands agents and scripts run in loops (`_FAST`)
without importing typer. The rule: for every `_FAST` command, a command line it serves
prints the same stdout and stderr, and exits with the same status, as the same command
line served by typer (`PARA_NO_FAST=1`).

The check runs one script of command lines in two identical worlds at once (two
repositories made alike, with commit dates pinned so that commits are the same): the
fast path in one, typer in the other, each step compared before the next. Paths of the
two worlds and wall-clock times are the only differences allowed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from para_rpc.cli import fast

from conftest import EXIT_CODES, commit_file, git, make_repo, raw_request, rev, run_para

PINNED = "2026-01-01T00:00:00+0000"


def work(name: str, files: dict[str, str], message: str | None = None) -> Callable[[Path], None]:
    """Write files in session `name`'s worktree; commit them when `message` is given."""
    def do(repo: Path) -> None:
        wt = repo / ".para" / "worktrees" / name
        for path, text in files.items():
            (wt / path).write_text(text)
        if message:
            for path, text in files.items():
                commit_file(wt, path, text, message)
    return do


# (command line, what happens in the repository first); every line must be one the
# fast path serves, and every `_FAST` command must appear.
SCRIPT: list[tuple[list[str], Callable[[Path], None] | None]] = [
    (["list", "--json"], None),
    (["list", "-q"], None),                                                 # empty: prints nothing
    (["list", "--quiet", "--json"], None),
    (["list", "--verbose"], None),
    (["ls", "-a", "--json"], None),
    (["start", "alpha", "--json"], None),
    (["start", "beta", "-b", "main", "--json"], None),
    (["start", "alpha", "--json"], None),                                   # already exists
    (["start", "--json", "gamma", "--base", "main"], None),
    (["show", "alpha", "--json"], work("alpha", {"alpha.txt": "alpha\n"})),
    (["list", "--all", "--json"], None),
    (["status", "writing tests", "--session", "alpha", "--tests", "passed", "--todos", "1/2"], None),
    (["status", "halfway", "-s", "beta", "--blocked", "a review", "--json"], None),
    (["status", "nobody", "-s", "nope"], None),                             # no such session
    (["integrate", "land alpha", "--session", "alpha", "--strategy", "squash"],
     work("alpha", {"README.md": "# alpha was here\n"}, "alpha edits the readme")),
    (["integrate", "land beta", "-s", "beta", "--json"],
     work("beta", {"README.md": "# beta was here\n"}, "beta edits the readme")),  # conflicts
    (["continue", "beta"], None),                                           # still conflicted
    (["continue", "beta", "--json"], work("beta", {"README.md": "# alpha and beta were here\n"})),
    (["integrate", "x", "--target", "nope", "-s", "gamma"], None),         # no such target
    (["cancel", "gamma", "--json"], work("gamma", {"draft.txt": "unsaved\n"})),
    (["start", "delta", "--json"], None),
    (["cancel", "delta", "--discard", "--force", "--json"], work("delta", {"scratch.txt": "x\n"})),
    (["show", "nope", "--json"], None),
    (["cancel", "nope", "--json"], None),
    (["continue", "nope", "--force"], None),
    (["ls", "--json"], None),
    (["list", "-q"], None),
    (["ls", "--archived", "--quiet"], None),
    (["list", "--archived", "-q", "--json"], None),
    (["list", "-v"], None),
    (["list", "--all", "--verbose"], None),
    (["ls", "--verbose", "--archived", "--json"], None),
    (["start", "epsilon"], None),                                           # human output
    (["start", "epsilon"], None),                                           # already exists
    (["show", "epsilon"], work("epsilon", {"e.txt": "e\n"}, "epsilon works")),
    (["cancel", "epsilon"], work("epsilon", {"draft.txt": "unsaved\n"})),
    (["show", "epsilon"], None),                                            # cancelled, archived
    (["show", "nope"], None),
    (["cancel", "nope", "--discard"], None),
]


def test_the_script_covers_every_fast_command_and_only_fast_lines():
    assert {argv[0] for argv, _ in SCRIPT} == set(fast._FAST)
    assert [argv for argv, _ in SCRIPT if fast.plan(argv) is None] == []


_EPOCH = re.compile(r"\b1[6-9]\d{8}(\.\d+)?\b")
_STAMP = re.compile(r"\b\d{8}-\d{6}\b")
_AGE = re.compile(r"\b\d+[smhd] (old|ago)\b")


def normalized(text: str, repo: Path) -> str:
    """What may differ between the two worlds: their paths, and the clock."""
    return _AGE.sub(r"<age> \1", _STAMP.sub("<stamp>", _EPOCH.sub("<time>", text.replace(str(repo), "<repo>"))))


@pytest.fixture
def worlds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Two repositories made alike, with commit dates pinned (for the sidecar too: the first
    `para` call starts it with this environment)."""
    monkeypatch.setenv("GIT_AUTHOR_DATE", PINNED)
    monkeypatch.setenv("GIT_COMMITTER_DATE", PINNED)
    return {"fast": make_repo(tmp_path / "fast" / "repo"), "typer": make_repo(tmp_path / "typer" / "repo")}


def test_fast_path_and_typer_print_the_same(worlds: dict[str, Path]) -> None:
    for argv, prepare in SCRIPT:
        seen = {}
        for world, repo in worlds.items():
            if prepare is not None:
                prepare(repo)
            proc = run_para(*argv, cwd=repo, check=False, env={"PARA_NO_FAST": "1" if world == "typer" else None})
            seen[world] = (proc.returncode, normalized(proc.stdout, repo), normalized(proc.stderr, repo))
        assert seen["fast"] == seen["typer"], f"para {' '.join(argv)}"
    # the script did what it says, in both worlds alike
    for repo in worlds.values():
        sessions = json.loads(run_para("list", "--all", "--json", cwd=repo).stdout)["sessions"]
        assert {s["name"]: s["status"] for s in sessions} == \
            {"alpha": "integrated", "beta": "integrated", "gamma": "cancelled", "delta": "cancelled",
             "epsilon": "cancelled"}
        assert git("show", "main:README.md", cwd=repo) == "# alpha and beta were here"
    assert rev(worlds["fast"], "main") == rev(worlds["typer"], "main")


def test_configuration_is_forwarded_and_loaded_only_when_set(sidecar, repo: Path):
    """A `para` process loads the configuration module only when a configuration variable is set
    (it forwards those with each request); the PARA_* variables that are not configuration never
    make it load, and none of them is a configuration key's variable."""
    from para_rpc import client, config

    assert client.NOT_CONFIG_ENV.isdisjoint(config.ENV_NAMES)
    plain = run_para("list", "--json", cwd=repo, env={"PYTHONPROFILEIMPORTTIME": "1", "PARA_NO_FAST": None})
    loaded = {line.rsplit("|", 1)[1].strip() for line in plain.stderr.splitlines() if line.startswith("import time:")}
    assert "para_rpc.cli.fast" in loaded and "para_rpc.config" not in loaded, sorted(loaded)
    # Nor typing, nor subprocess (wanted only to start a sidecar): milliseconds in every command.
    assert not loaded & {"typing", "subprocess"}, sorted(loaded)
    # A configuration variable still reaches the sidecar (a base branch that does not exist is refused).
    told = run_para("start", "x", "--json", cwd=repo, check=False,
                    env={"PYTHONPROFILEIMPORTTIME": "1", "PARA_BASE_BRANCH": "no-such-branch"})
    assert told.returncode != 0 and "no-such-branch" in told.stdout, told.stdout
    assert "para_rpc.config" in told.stderr


def test_the_cli_modules_load_no_pathlib_typing_or_subprocess():
    """What para's own modules load for a command, apart from what site-packages loads (an
    editable install's finder loads pathlib; an installed para has none): `python -S` with
    only para's directory on the path."""
    from conftest import bare_imports
    assert bare_imports("import para_rpc.cli.fast", {"pathlib", "typing", "subprocess", "urllib.parse",
                                                     "para_rpc.config", "json", "re", "enum"}) == []


# What a `para` process must not load on the fast path: `json` pulls `re`, which pulls `enum` (and
# functools, collections); `typing` is as heavy. ~8 ms of CPU in every command, where a bare
# Python costs ~9 (para_rpc/wire.py, errors.Code).
NOT_ON_THE_FAST_PATH = {"json", "re", "enum", "typing"}


def test_no_fast_command_loads_json_re_enum_or_typing(sidecar, repo: Path):
    """Every line of SCRIPT (every fast command, with and without --json, answers and errors),
    run as `para` runs it but with `python -S` and only para's directory on the path: what para's
    own code loads, without what site-packages loads (an editable install's finder) or what the
    console script does before it calls para (pip's imports `re` for its argv[0])."""
    import subprocess
    import sys

    import para_rpc

    root = str(Path(para_rpc.__file__).parent.parent)
    launcher = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.argv[0] = 'para'; "
                "from para_rpc.cli import main; main()")
    found = {}
    for argv, prepare in SCRIPT:
        if prepare is not None:
            prepare(repo)
        proc = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", launcher, root, *argv], cwd=repo,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert "Traceback" not in proc.stderr and proc.returncode in {0, *EXIT_CODES}, (argv, proc.stderr[-2000:])
        loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert "para_rpc.cli.fast" in loaded and "para_rpc.cli.app" not in loaded, argv
        found[" ".join(argv)] = sorted(m for m in loaded if m.split(".")[0] in NOT_ON_THE_FAST_PATH)
        # --json prints the sidecar's text: the human renderings are not even loaded.
        if "--json" in argv and not {"-q", "--quiet"} & set(argv):
            found[" ".join(argv)] += sorted(m for m in loaded if m in {"para_rpc.cli.render", "para_rpc.display"})
    assert {line: mods for line, mods in found.items() if mods} == {}


@pytest.mark.parametrize("env", [{"PARA_SOCKET": "/tmp/x/s.sock"}, {"PARA_RUNTIME_DIR": "/tmp/rt/"},
                                 {"PARA_RUNTIME_DIR": None, "XDG_RUNTIME_DIR": "/run/user/7"},
                                 {"PARA_RUNTIME_DIR": None, "XDG_RUNTIME_DIR": None}], ids=str)
def test_the_socket_string_is_the_socket_path(monkeypatch, env: dict[str, str | None]):
    """The CLI connects to `runtime.socket_file()`; everything else names `socket_path()`."""
    import os

    from para_rpc import runtime

    monkeypatch.delenv("PARA_SOCKET", raising=False)
    for k, v in env.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    assert os.path.normpath(runtime.socket_file()) == str(runtime.socket_path())


@pytest.mark.parametrize("argv, code", [(["list", "--json"], 0), (["show", "nope", "--json"], 3),
                                        (["show", "nope"], 3)], ids=str)
def test_a_request_command_exits_with_all_its_output_written(sidecar, repo: Path, argv: list[str], code: int):
    """The fast path ends with os._exit (no interpreter teardown): what it printed into the
    buffers of a pipe (not a terminal, nor PYTHONUNBUFFERED as the test machines have) still
    comes out, with the exit status of the answer."""
    proc = run_para(*argv, cwd=repo, check=False, env={"PYTHONUNBUFFERED": None})
    assert proc.returncode == code, proc.stderr
    if "--json" in argv:
        answer = json.loads(proc.stdout)
        assert ("sessions" in answer) if code == 0 else answer["error"]["code"] == "not_found", proc.stdout
    else:
        assert proc.stderr.startswith("para: no session named 'nope'"), proc.stderr


@pytest.mark.parametrize("argv, closed, code", [(["show", "s1", "--json"], 2, 0), (["list", "--json"], 2, 0),
                                                (["show", "nope", "--json"], 2, 3), (["show", "nope"], 1, 3),
                                                (["show", "s1"], 1, 0)], ids=str)
def test_a_request_command_with_stdout_or_stderr_closed_exits_with_its_answers_status(
        sidecar, repo: Path, argv: list[str], closed: int, code: int):
    """(Red team t15-3.) A command run with stderr (or stdout) closed, as a daemon or `2>&-`
    leaves it: Python has no sys.stderr then, and the quick exit's flush of it failed, so a
    command that succeeded exited 1 (a traceback nobody could read). The status is the answer's."""
    import os
    import subprocess

    from conftest import PARA_ARGV, cli_env

    run_para("start", "s1", "--json", cwd=repo)
    proc = subprocess.run([*PARA_ARGV, *argv], cwd=repo, env=cli_env({"PYTHONUNBUFFERED": None}),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                          preexec_fn=lambda: os.close(closed))
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    if closed == 2 and "--json" in argv:
        answer = json.loads(proc.stdout)
        assert ("error" not in answer) if code == 0 else answer["error"]["code"] == "not_found", proc.stdout


@pytest.mark.parametrize("argv, through", [(["start", "full", "--json"], ["fast"]), (["start", "full"], ["fast"]),
                                           (["list", "--json"], ["fast", "typer"]), (["list"], ["fast", "typer"]),
                                           (["show", "s1"], ["fast"])], ids=str)
def test_output_that_cannot_be_written_is_said_on_stderr_and_the_command_still_counts(
        sidecar, repo: Path, argv: list[str], through: list[str]):
    """`para start x > /dev/full`: the session is started (the sidecar did it), but the answer
    cannot be written. Said on stderr, never a traceback, and the exit status is not 0 (the
    caller did not get its answer); before, a traceback of OSError."""
    import subprocess

    from conftest import PARA_ARGV, cli_env

    run_para("start", "s1", "--json", cwd=repo)
    for path in through:
        env = {"PARA_NO_FAST": "1" if path == "typer" else None, "PYTHONUNBUFFERED": None}
        with open("/dev/full", "w") as full:
            proc = subprocess.run([*PARA_ARGV, *argv], cwd=repo, env=cli_env(env), stdout=full,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (path, proc.stderr)
        assert proc.stderr.startswith("para: could not write the output (No space left on device)"), proc.stderr
        if argv[0] == "start":
            assert run_para("show", "full", "--json", cwd=repo).returncode == 0  # it did start
            run_para("cancel", "--discard", "full", "--json", cwd=repo)


# ---- `--json`: what is printed is the sidecar's result, as json.dumps(result, indent=2) writes it

@pytest.mark.parametrize("task", ["all ASCII", "not ASCII: é \u2028 — ✓ 😀", 'quotes " and \\ and\nnew\tlines'])
def test_json_output_is_the_result_as_json_writes_it_whatever_its_text(rpc, svc, repo: Path, task: str) -> None:
    """The CLI asks the sidecar for the text (`resultAsText`: msgspec formats it, ~1 ms less
    per `list` of a hundred sessions than indenting it in the CLI): the text must be exactly
    what `json.dumps(result, indent=2)` made of the result, escapes and all."""
    svc("start", name="s")
    svc("report", session="s", task=task)
    for argv in (["list", "--json"], ["show", "s", "--json"], ["list", "--all", "--verbose", "--json"]):
        out = run_para(*argv, cwd=repo).stdout
        assert out == json.dumps(json.loads(out), indent=2) + "\n", argv
    as_text = raw_request(rpc, "para/list", {"cwd": str(repo), "resultAsText": True})["result"]
    plain = raw_request(rpc, "para/list", {"cwd": str(repo)})["result"]
    assert isinstance(as_text, str) and as_text == json.dumps(plain, indent=2)
    assert json.loads(as_text)["sessions"][0]["report"]["task"] == task


def test_a_result_asked_as_text_is_still_an_error_when_it_fails(rpc, repo: Path) -> None:
    reply = raw_request(rpc, "para/show", {"cwd": str(repo), "session": "nope", "resultAsText": True})
    assert reply["error"]["data"]["code"] == "not_found" and "result" not in reply


def _as_json_dumps_would(out: str) -> str:
    return json.dumps(json.loads(out), indent=2) + "\n"


def test_json_of_a_config_value_with_a_lone_surrogate_is_printed_not_refused(sidecar: Any, repo: Path) -> None:
    """A user file's string may hold `\\udcff` (valid JSON; json.loads takes it), which msgspec
    refuses: the text is json's then, the escape printed as json prints it (red team rt1 F1)."""
    Path(os.environ["PARA_CONFIG"]).write_text('{"session": {"setup": ["echo", "\\udcff"]}}')
    proc = run_para("config", "get", "session.setup", "--json", cwd=repo, check=False)
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["value"] == ["echo", "\udcff"]
    assert proc.stdout == _as_json_dumps_would(proc.stdout)


def test_json_of_a_string_with_del_is_written_as_json_dumps_writes_it(sidecar: Any, repo: Path) -> None:
    """U+007F is ASCII, which msgspec writes raw and json.dumps escapes, `\\u007f`: printed as
    json writes it (docs/protocol.md, "Results as text"; rt1 F2)."""
    Path(os.environ["PARA_CONFIG"]).write_text('{"session": {"setup": ["echo", "a\\u007fb"]}}')
    proc = run_para("config", "get", "session.setup", "--json", cwd=repo)
    assert proc.stdout == _as_json_dumps_would(proc.stdout)


def test_config_set_json_that_wrote_the_file_does_not_report_invalid_input(sidecar: Any, repo: Path) -> None:
    """A command that made its change says so: its answer is never turned into an error by
    how it is written (a script would believe nothing was written; rt1 F1)."""
    Path(os.environ["PARA_CONFIG"]).write_text("{}")
    proc = run_para("config", "set", "session.setup", '["echo", "\\udcff"]', "--json", cwd=repo, check=False)
    written = json.loads(Path(os.environ["PARA_CONFIG"]).read_text())["session"]["setup"]
    assert written == ["echo", "\udcff"]
    assert proc.returncode == 0, proc.stdout
