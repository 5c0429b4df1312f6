"""Agents: launcher profiles, the prompt and instruction file, task files, and launching.

A profile is a set of argv templates (interactive, headless, skip-permissions
flags) with the placeholders `{prompt}`, `{prompt_file}`, `{worktree}` and
`{session}`, each replaced inside one argv element: the prompt is never
parsed by a shell. A headless agent reads its prompt on stdin (the runner
connects the prompt file), so the built-in headless profiles never put the
task into argv, where `ps` shows it to every user and a task starting with `-`
would be an option; the interactive ones, whose stdin is the terminal, pass it
after `--` or as `--option=<prompt>`. Every agent runs under `agent_runner`,
which records its exit code in a file so the sidecar learns it even across its
own restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from para_rpc import git, runtime
from para_rpc.errors import Code, ParaError

PLACEHOLDERS = ("{prompt_file}", "{prompt}", "{worktree}", "{session}")
MAX_ARG = 120_000  # below Linux's 128 KiB limit for one argv element
TASK_MAX_BYTES = 1 << 20  # a task file larger than this is refused, not read
TASK_RE = re.compile(r"TASK_(\d+)_([A-Za-z0-9][A-Za-z0-9_-]*)\.md")
INSTRUCTION_FILE = git.OWN_FILES[0]
RUN_ENV = "PARA_AGENT_RUN"  # set by agent_runner for the agent: its exit file (see stop_run)


@dataclass(frozen=True)
class Profile:
    name: str
    command: list[str]                      # interactive (tmux, editor terminal)
    headless: list[str] | None = None       # non-interactive; defaults to command
    skip_permissions: list[str] = field(default_factory=list)
    # A headless relaunch that continues the agent's last conversation (`para restart`):
    # it gets only the follow-up, on stdin like a headless prompt.
    resume: list[str] | None = None

    def argv(self, mode: str, skip: bool, resume: bool = False) -> list[str]:
        if resume and self.resume:
            base = list(self.resume)
        else:
            base = list(self.headless if mode == "headless" and self.headless else self.command)
        if skip:
            if not self.skip_permissions:
                raise ParaError(Code.invalid_input, f"agent profile {self.name!r} has no way to skip permissions; "
                                "configure its permissions in the agent itself")
            base[1:1] = self.skip_permissions
        return base


def _scripted_agent() -> list[str]:
    return runtime.python("-m", "para_rpc.scripted_agent", "{prompt_file}")


BUILTIN: dict[str, Profile] = {
    # Headless: the prompt arrives on stdin (claude -p, codex exec -, gemini and opencode run
    # read it when it is not a terminal).
    "claude": Profile("claude", ["claude", "--", "{prompt}"], ["claude", "-p"],
                      ["--dangerously-skip-permissions"], ["claude", "--continue", "-p"]),
    "codex": Profile("codex", ["codex", "--", "{prompt}"], ["codex", "exec", "-"],
                     ["--dangerously-bypass-approvals-and-sandbox"]),
    "gemini": Profile("gemini", ["gemini", "--prompt-interactive={prompt}"], ["gemini"], ["--yolo"]),
    "aider": Profile("aider", ["aider", "--message-file", "{prompt_file}"],
                     ["aider", "--no-pretty", "--message-file", "{prompt_file}"], ["--yes-always"]),
    "opencode": Profile("opencode", ["opencode", "--prompt={prompt}"], ["opencode", "run"], []),
    # A small real program that edits files as its task file describes and runs the
    # real `para` CLI: the demo's agent, and the stand-in for AI agents in tests.
    "scripted": Profile("scripted", _scripted_agent(), None, []),
}


def profile(name: str, custom: Mapping[str, dict[str, Any] | ParaError]) -> Profile:
    if name in custom:
        c = custom[name]
        if isinstance(c, ParaError):  # withheld by the trust gate (trust.settle): never run
            raise c
        return Profile(name, list(c["command"]), c.get("headless"), list(c.get("skip_permissions", [])),
                       c.get("resume"))
    if name in BUILTIN:
        return BUILTIN[name]
    raise ParaError(Code.invalid_input, f"unknown agent profile {name!r}; known: "
                    + ", ".join(sorted(set(BUILTIN) | set(custom))), profile=name)


_PLACEHOLDER_RE = re.compile("|".join(re.escape(ph) for ph in PLACEHOLDERS))


def render(argv: list[str], values: dict[str, str]) -> list[str]:
    """Substitute placeholders inside each element; never joins or splits elements.
    One pass: text substituted in (a prompt that mentions `{session}`) is not rescanned."""
    return [_PLACEHOLDER_RE.sub(lambda m: values[m.group(0)[1:-1]], element) for element in argv]


def check_prompt_fits(argv: list[str], prompt: str, profile_name: str) -> None:
    if not any("{prompt}" in a for a in argv):
        return
    for i, a in enumerate(argv):
        # A prompt that starts an argv element before any `--` is parsed as options when it
        # starts with `-` (a task that is a markdown list, or one crafted to add a flag).
        if i and a.startswith("{prompt}") and "--" not in argv[1:i] and prompt.startswith("-"):
            raise ParaError(Code.invalid_input, f"the prompt starts with '-' and profile {profile_name!r} passes it "
                            "as an argument where it would be read as an option; put \"--\" before {prompt} in "
                            "the profile (or use {prompt_file})", profile=profile_name)
    if "\0" in prompt:
        raise ParaError(Code.invalid_input, f"the prompt contains a NUL byte, which profile {profile_name!r} "
                        "cannot receive as an argument; use a profile that takes {prompt_file}")
    if len(prompt.encode()) > MAX_ARG:
        raise ParaError(Code.invalid_input, f"the prompt is {len(prompt.encode())} bytes, too long for an argument "
                        f"of profile {profile_name!r}; use a profile that takes {{prompt_file}}")


def require_binary(argv: list[str], profile_name: str) -> str:
    found = shutil.which(argv[0])
    if found is None:
        raise ParaError(Code.not_found, f"agent profile {profile_name!r} runs {argv[0]!r}, which is not installed "
                        "(not on PATH)", profile=profile_name, binary=argv[0])
    return found


FOOTERS = {
    "integrate": 'When done: para integrate "<one-line summary of your change>"',
    "finish": 'When done: para finish "<one-line summary of your change>"',
}
_HAS_WORKFLOW = re.compile(r"\bpara\s+(integrate|finish)\b|do not run any para commands", re.IGNORECASE)


def compose_prompt(task: str, workflow: str) -> str:
    """The task plus the workflow footer, unless the task already says how to finish."""
    task = task.rstrip("\n")
    if workflow == "none" or _HAS_WORKFLOW.search(task):
        return task + "\n"
    return f"{task}\n\n{FOOTERS[workflow]}\n"


def instruction_text(session: str, workflow: str) -> str:
    finish = {"integrate": 'para integrate "<summary>"', "finish": 'para finish "<summary>"'}.get(workflow)
    lines = [
        f"# You are working in para session `{session}`",
        "",
        "This directory is your own git worktree and branch. Other agents work in parallel in",
        "their own worktrees; stay within the scope of your task.",
        "",
        "Report progress (short, often):",
        "",
        '    para status "<what you are doing, a few words>" --tests passed|failed|unknown --todos 3/5',
        '    para status "<what blocks you>" --blocked "<reason>"',
        "",
        "The user may send you follow-up instructions while you work: the answer to `para status`",
        "shows them, and `para messages` lists the ones you have not read (`--wait 60` waits for one).",
        "",
    ]
    if finish:
        lines += [
            "When the task is complete and the tests pass, finish with:",
            "",
            f"    {finish}",
            "",
            "If `para integrate` reports conflicts (exit status 7), they are in this worktree:",
            "resolve the conflict markers, then run `para continue` (or `para abort` to go back).",
            "",
        ]
    lines.append("This file is not committed.")
    return "\n".join(lines) + "\n"


def find_task_file(root: str, cwd: str, path: object) -> Path:
    """Resolve a task file given by the user: relative to cwd, else in the repository's
    `tasks/`. It must stay inside the repository (symlinks included)."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise ParaError(Code.invalid_input, "task file path is empty or malformed")
    candidates = [Path(cwd, path)]
    if not os.path.isabs(path):
        candidates.append(Path(root, "tasks", path))
    real_root = os.path.realpath(root)
    for c in candidates:
        if c.exists():
            real = os.path.realpath(c)
            if real != real_root and not real.startswith(real_root + os.sep):
                raise ParaError(Code.invalid_input, f"task file {path!r} is outside the repository "
                                f"(resolves to {real}); refusing to read it", path=path)
            return Path(real)
    raise ParaError(Code.not_found, f"task file {path!r} not found (looked in {cwd} and {root}/tasks)", path=path)


def read_task(path: Path, root: str | None = None) -> str:
    """A task file's text: a regular file (never a FIFO, which would block the sidecar, nor a
    device), at most TASK_MAX_BYTES, inside `root` (symlinks resolved) when given."""
    if path.is_dir():
        raise ParaError(Code.invalid_input, f"{path} is a directory; give a task file")
    data = runtime.read_regular(path, what="task file", code=Code.invalid_input, limit=TASK_MAX_BYTES, within=root)
    if data is None:
        raise ParaError(Code.not_found, f"task file {path} no longer exists", path=str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParaError(Code.invalid_input, f"task file {path} is not UTF-8 text") from None
    if not text.strip():
        raise ParaError(Code.invalid_input, f"task file {path} is empty")
    return text


def plan_files(directory: Path) -> list[tuple[int, str, Path]]:
    """The `TASK_<n>_<slug>.md` files of a directory as (n, slug, path), ordered."""
    found = []
    for p in sorted(directory.iterdir()):
        m = TASK_RE.fullmatch(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), m.group(2), p))
    if not found:
        raise ParaError(Code.not_found, f"no TASK_<n>_<slug>.md files in {directory}")
    return sorted(found, key=lambda t: (t[0], t[1]))


def task_name(path: Path) -> str | None:
    m = TASK_RE.fullmatch(path.name)
    if not m:
        return None
    slug = re.sub(r"[-_]{2,}", "_", m.group(2).lower()).strip("-_")[:48]
    return slug or None


def agent_env(session: str, worktree: str, socket: str) -> dict[str, str]:
    """The agent's environment: ours, plus the way back to this sidecar and `para` on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PARA_SESSION", "PARA_WORKTREE", RUN_ENV)}
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.update(PARA_SESSION=session, PARA_WORKTREE=worktree, PARA_SOCKET=socket)
    return env


def runner_argv(exit_file: str, argv: list[str], log: str | None = None, stdin: str | None = None) -> list[str]:
    return [*runtime.python("-m", "para_rpc.agent_runner"), "--exit-file", exit_file,
            *(["--log", log] if log else []), *(["--stdin", stdin] if stdin else []), "--", *argv]


class Detached:
    """A headless runner the event loop does not own. asyncio kills the children it
    started when its loop closes, so a sidecar that stops gracefully (SIGTERM,
    `para sidecar stop`, idle timeout) would take every headless agent with it;
    agents must outlive the sidecar and be re-adopted by the next one."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    async def wait(self) -> int:
        while (rc := self._popen.poll()) is None:
            await asyncio.sleep(0.25)
        return rc


async def launch_headless(argv: list[str], cwd: str, env: dict[str, str], log: str,
                          exit_file: str, prompt_file: str) -> Detached:
    os.makedirs(os.path.dirname(log), mode=0o700, exist_ok=True)
    runtime.create_private(log)  # the agent's whole output: 0600 before the runner appends to it
    # Popen, not asyncio: see Detached (agents outlive the loop that started them)
    return Detached(subprocess.Popen(  # noqa: ASYNC220
        runner_argv(exit_file, argv, log, prompt_file), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))


TMUX_SESSION = "para"


async def _tmux(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec("tmux", *args, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip(), err.decode(errors="replace").strip()


async def launch_tmux(argv: list[str], cwd: str, env: dict[str, str], exit_file: str,
                      window: str, keep: set[str] | frozenset[str] = frozenset()) -> tuple[str, int | None]:
    """Open a window named after the session in the `para` tmux session;
    returns (window id, pid of the process in it). A window starts from the tmux server's
    environment: PARA_*, PATH, GIT_* and the names in `keep` (`session.env`) are set in it."""
    if shutil.which("tmux") is None:
        raise ParaError(Code.not_found, "tmux is not installed; use --mode headless")
    full = runner_argv(exit_file, argv)
    env_args = [a for k, v in env.items() if k in keep or k.startswith(("PARA_", "PATH", "GIT_"))
                for a in ("-e", f"{k}={v}")]
    new_window = ("new-window", "-d", "-t", f"={TMUX_SESSION}:", "-n", window, "-c", cwd,
                  "-P", "-F", "#{window_id} #{pane_pid}", *env_args, "--", *full)
    rc, _, _ = await _tmux("has-session", "-t", f"={TMUX_SESSION}")
    if rc != 0:
        rc, out, err = await _tmux("new-session", "-d", "-s", TMUX_SESSION, "-n", window, "-c", cwd,
                                   "-P", "-F", "#{window_id} #{pane_pid}", *env_args, "--", *full, env=env)
        if rc != 0 and "duplicate session" in err:  # a concurrent dispatch created it just now
            rc, out, err = await _tmux(*new_window, env=env)
    else:
        rc, out, err = await _tmux(*new_window, env=env)
    if rc != 0:
        raise ParaError(Code.internal, f"tmux could not open a window: {err}")
    window_id, _, pid = out.partition(" ")
    return window_id, int(pid) if pid.isdigit() else None


async def close_tmux_window(window_id: str) -> None:
    """Close an agent's tmux window (gone already: nothing to do)."""
    if shutil.which("tmux") is not None:
        await _tmux("kill-window", "-t", window_id)


async def tmux_window_alive(window_id: str) -> bool:
    rc, out, _ = await _tmux("list-windows", "-a", "-F", "#{window_id}")
    return rc == 0 and window_id in out.split()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# ---- stopping an agent's processes ---------------------------------------------------------
#
# An agent's processes are found through its run, never by name. The runner normally leads its
# own process group (headless: start_new_session; tmux: the pane's process; an editor terminal's
# process), and it gives the agent RUN_ENV = its exit file, which every child inherits. So the
# processes of a run are: while the runner is alive (checked by its command line, since pids are
# reused) and leads its group, that whole group; and anywhere, any process carrying RUN_ENV with
# this run's exit file (daemons that left the group, or a runner that an editor started inside
# its own group, which must never be signalled as a group).

# A sidecar started by a `para` call inside an agent inherits the agent's RUN_ENV; its own
# processes (git, checks, other agents' runners) must never look like that agent's.
os.environ.pop(RUN_ENV, None)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    start: int   # start time in clock ticks after boot: (pid, start) names one process for good
    state: str


def _proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    try:
        return Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), fields[0])
    except (IndexError, ValueError):
        return None


def _processes() -> dict[int, Proc]:
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (p := _proc(int(name))) is not None and p.state not in ("Z", "X"):
            found[p.pid] = p
    return found


def _boot_time() -> float:
    try:
        with open("/proc/stat") as f:
            return float(next(line.split()[1] for line in f if line.startswith("btime ")))
    except (OSError, StopIteration, ValueError):
        return 0.0


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except OSError:
        return []


def _run_env(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    prefix = RUN_ENV.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)


def _run_session(exit_file: str) -> str:
    return os.path.basename(exit_file).rsplit(".", 2)[0]  # <runs>/<session>.<ms>.exit


def agent_caller(pid: int | None) -> str | None:
    """Whether the client process `pid` (the peer of a connection, SO_PEERCRED) is an agent
    para started or runs under one: "the agent of session X (process N)", else None.
    Judged from /proc, not from anything the client says:
    - one of its ancestors is an agent runner (the agent and everything it starts: an agent
      that runs `env -i para ...` is still recognised);
    - its process group or session, or an ancestor's, is led by an agent runner;
    - it or an ancestor carries RUN_ENV, unless the chain passes a shared daemon (a tmux
      server an agent happened to start also serves the user's own windows, which inherit it);
    - it runs inside the worktree named by its own PARA_WORKTREE with PARA_SESSION set.
    Para cannot sandbox: a process that detaches, scrubs its environment and leaves the
    worktree is not recognised (docs/protocol.md, `forbidden`)."""
    if not pid or pid == os.getpid():
        return None

    def runner_session(leader: int) -> str | None:
        argv = _cmdline(leader)
        if "para_rpc.agent_runner" in argv and "--exit-file" in argv[:-1]:
            return _run_session(argv[argv.index("--exit-file") + 1])
        return None

    chain, p, shared = [], pid, False
    while p > 1 and p != os.getpid() and p not in chain:
        proc = _proc(p)
        if proc is None:
            break
        if _comm(p) in SHARED_DAEMONS:
            shared = True
            break
        chain.append(p)
        for leader in (proc.ppid, proc.pgid, proc.sid):
            if leader != p and (session := runner_session(leader)):
                return f"the agent of session {session!r} (process {p}, under its runner {leader})"
        p = proc.ppid
    if not shared:
        for p in chain:
            if run := _run_env(p):
                return f"the agent of session {_run_session(run)!r} (process {p})"
    env = _environ(pid)
    if env.get("PARA_SESSION") and env.get("PARA_WORKTREE"):
        try:
            cwd = os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            cwd = ""
        wt = os.path.realpath(env["PARA_WORKTREE"])
        if cwd == wt or cwd.startswith(wt + os.sep):
            return f"the agent of session {env['PARA_SESSION']!r} (process {pid}, in its worktree)"
    return None


def is_runner(pid: int | None, exit_file: str | None) -> bool:
    """Whether `pid` is still the agent_runner of this run (and not a process that reused the pid)."""
    if not pid or not exit_file:
        return False
    argv = _cmdline(pid)
    return "para_rpc.agent_runner" in argv and exit_file in argv


# Daemons other programs share (a terminal multiplexer, key agents). An agent may be the one
# that started it (its first `tmux new -d`, a git commit that autostarted gpg-agent), so it
# carries the run's RUN_ENV, and so does everything started in it later, the user's own tmux
# windows included. Neither it nor anything running under it is the agent's to stop (nor
# counts as the agent in agent_caller), unless it sits in the runner's own process group.
SHARED_DAEMONS = frozenset({"tmux: server", "screen", "SCREEN", "gpg-agent", "ssh-agent", "dbus-daemon",
                            "keyboxd", "scdaemon"})


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return ""


def _under_shared(pid: int, table: dict[int, Proc]) -> bool:
    """Whether `pid` is a shared daemon or runs under one."""
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        if _comm(pid) in SHARED_DAEMONS:
            return True
        p = table.get(pid) or _proc(pid)
        if p is None:
            return False
        pid = p.ppid
    return False


def run_processes(pid: int, exit_file: str, since: float = 0.0) -> tuple[bool, dict[int, int]]:
    """The live processes of one agent run as {pid: start time}, and whether its runner is
    alive and leads its process group (then the whole group is the agent's). Processes that
    started before `since` (the run's start, epoch seconds) cannot be the run's: their
    environment is not even read."""
    table = _processes()
    me = os.getpid()
    runner = table.get(pid) if is_runner(pid, exit_file) else None
    leader = runner is not None and runner.pgid == pid
    # Process start times count clock ticks since boot; btime has whole seconds, hence the slack.
    first_tick = (since - _boot_time() - 2) * os.sysconf("SC_CLK_TCK") if since else 0
    found = {}
    for p in table.values():
        ours = ((p.pid == pid and runner is not None) or (leader and p.pgid == pid)
                or (p.start >= first_tick and _run_env(p.pid) == exit_file and not _under_shared(p.pid, table)))
        # Never the sidecar itself, even one that an agent's `para` call started.
        if ours and p.pid != me and "para_rpc.server.sidecar" not in _cmdline(p.pid):
            found[p.pid] = p.start
    return leader, found


def _alive(procs: dict[int, int]) -> dict[int, int]:
    """The processes of `procs` still running (same pid and start time, not a zombie)."""
    out = {}
    for pid, start in procs.items():
        p = _proc(pid)
        if p is not None and p.start == start and p.state not in ("Z", "X"):
            out[pid] = start
    return out


def _send(pid: int, exit_file: str, procs: dict[int, int], sig: signal.Signals) -> None:
    # SIGCONT after SIGTERM: a process paused by `freeze_run` acts on the SIGTERM only once it runs.
    sigs = (sig, signal.SIGCONT) if sig == signal.SIGTERM else (sig,)
    for s in sigs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if is_runner(pid, exit_file) and os.getpgid(pid) == pid:
                os.killpg(pid, s)  # the runner's group, members started since included
        for p in _alive(procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, s)


def worktree_processes(worktree: str, exit_file: str, since: float, run: dict[int, int]) -> dict[int, int]:
    """{pid: start time} of the processes an agent run left in its worktree without its mark
    (a daemon that scrubbed its environment: `env -i setsid ...`, red team RA4). Each one:
    - has its current directory (or root) in `worktree`, started after the run began (`since`,
      epoch seconds), has no controlling terminal, carries no other run's mark, is not under a
      shared daemon (tmux, screen), is not the sidecar;
    - and descends from the run: going up its parents, it meets one of `run` (the run's known
      processes), or only processes of the same kind (started after the run, in the worktree)
      up to an orphans' reaper (pid 1, `systemd --user`): a daemon is orphaned on purpose.
    The user's shell or editor there is none of that: started before the run, or holding a
    terminal, or a child of something the user started (a terminal, an editor, a shell).
    Blocking: call it from a worker thread."""
    if not since:
        return {}  # who started after the run cannot be told: nothing is taken for the agent's
    top = os.path.realpath(worktree)
    try:  # (/proc/uptime has hundredths where btime has whole seconds: a shell opened just before counts as before)
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return {}
    first_tick = (uptime - (time.time() - since) - 0.1) * os.sysconf("SC_CLK_TCK")
    table = _processes()

    def inside(pid: int) -> bool:
        for link in ("cwd", "root"):
            with contextlib.suppress(OSError):
                if _under(os.readlink(f"/proc/{pid}/{link}").removesuffix(" (deleted)"), top):
                    return True
        return False

    def descends(p: Proc) -> bool:
        seen = {p.pid}
        while True:
            if p.ppid in run:
                return True
            parent = table.get(p.ppid)
            if parent is None or parent.pid in seen:
                return p.ppid == 1
            if parent.start < first_tick:
                return parent.pid == 1 or _comm(parent.pid) == "systemd"
            if not inside(parent.pid):
                return False
            seen.add(parent.pid)
            p = parent

    found = {}
    for p in table.values():
        if p.start < first_tick or p.pid == os.getpid() or p.pid in run or not inside(p.pid) or _tty(p.pid):
            continue
        mark = _run_env(p.pid)
        if (mark is not None and mark != exit_file) or _under_shared(p.pid, table) or not descends(p):
            continue
        if "para_rpc.server.sidecar" not in _cmdline(p.pid):
            found[p.pid] = p.start
    return found


def _tty(pid: int) -> int:
    """The controlling terminal of `pid` (0: none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[4])
    except (OSError, IndexError, ValueError):
        return 0


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


async def stop_run(pid: int | None, exit_file: str | None, grace: float, since: float = 0.0,
                   worktree: str | None = None) -> dict[str, Any]:
    """SIGTERM every process of an agent run, SIGKILL what is left after `grace` seconds;
    with `worktree`, also what it left running there (`worktree_processes`).
    Returns what was signalled: {pgid, group, pids, signals, left_running}."""
    result: dict[str, Any] = {"pgid": pid, "group": False, "pids": [], "signals": [], "left_running": []}
    if not pid or not exit_file:
        return result
    leader, procs = await asyncio.to_thread(run_processes, pid, exit_file, since)
    if worktree:
        left_behind = await asyncio.to_thread(worktree_processes, worktree, exit_file, since, procs)
        procs = {**left_behind, **procs}
    if not procs:
        return result
    result.update(group=leader, pids=sorted(procs))
    left = procs
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        await asyncio.to_thread(_send, pid, exit_file, procs, sig)
        result["signals"].append(sig.name)
        deadline = time.monotonic() + wait
        while (left := await asyncio.to_thread(_alive, procs)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not left:
            break
    result["left_running"] = sorted(left)
    return result


def ancestors(pid: int | None) -> set[int]:
    """`pid` and every process above it (its parent, the parent's parent, ...)."""
    found: set[int] = set()
    while pid and pid not in found and pid > 1:
        found.add(pid)
        p = _proc(pid)
        pid = p.ppid if p is not None else None
    return found


def freeze_run(pid: int | None, exit_file: str | None, since: float, spare: set[int]) -> dict[int, int]:
    """SIGSTOP every process of an agent run except those in `spare` (the caller of the
    operation and its ancestors: an agent that runs `para integrate` itself must get its
    answer). Processes forked while this runs are caught by looking again. Returns what
    was stopped, for `thaw_run`. Blocking: call it from a worker thread."""
    stopped: dict[int, int] = {}
    if not pid or not exit_file:
        return stopped
    for _ in range(5):
        _, procs = run_processes(pid, exit_file, since)
        new = {p: start for p, start in procs.items() if p not in spare and p not in stopped}
        if not new:
            break
        for p, start in new.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGSTOP)
                stopped[p] = start
    return stopped


def thaw_run(stopped: dict[int, int]) -> None:
    """SIGCONT what `freeze_run` stopped."""
    for p in _alive(stopped):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGCONT)


def still_running(procs: dict[int, int]) -> dict[int, int]:
    """The processes of `procs` ({pid: start time}) still running."""
    return _alive(procs)


def end_frozen(stopped: dict[int, int]) -> None:
    """SIGTERM, then SIGCONT so they act on it, what `freeze_run` stopped and is still alive:
    the end of an agent whose session ended while no sidecar was there to stop it."""
    for sig in (signal.SIGTERM, signal.SIGCONT):
        for p in _alive(stopped):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)


def cwd_holders(path: str, exclude: set[int]) -> dict[int, str]:
    """{pid: command name} of the processes (not in `exclude`) whose current directory is
    `path` or below it: a shell or an editor still in a worktree about to be removed.
    Blocking: call it from a worker thread."""
    top = os.path.realpath(path)
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            if cwd != top and not cwd.startswith(top + os.sep):
                continue  # (the name is read only for those found: every cancel and integration looks)
            with open(f"/proc/{entry}/comm") as f:
                found[int(entry)] = f.read().strip()
        except OSError:
            continue
    return found
