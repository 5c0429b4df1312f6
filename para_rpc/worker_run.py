"""A session's agent run on the worker (worker.py): start, poll, logs, stop. Stdlib only.

The runner is para's agent_runner, detached in a session of its own so that neither the end of
this worker nor a dropped SSH connection touches it; it records how the agent ended in the exit
file, which wins over anything else poll sees. A runner gone without one is `lost`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from typing import IO, Any

from para_rpc import worker_proc
from para_rpc.errors import Code, ParaError
from para_rpc.worker_place import Place, Reply, bad, field, locate, session_locked

LOG_LIMIT = 1 << 20
LOG_CAP = 16 << 20           # however much is asked for, one answer holds at most this


def runner_of(place: Place) -> tuple[int | None, int | None]:
    """The recorded runner: (pid, start ticks), (None, None) if it never started."""
    try:
        got = json.loads((place.run / "runner.pid").read_text())
        return int(got["pid"]), got.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def exit_record(place: Place) -> dict[str, Any] | None:
    try:
        got = json.loads((place.run / "exit.json").read_text())
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def _runner_alive(place: Place) -> bool:
    pid, start = runner_of(place)
    return pid is not None and worker_proc.is_runner(pid, start, str(place.run / "exit.json"))


def is_running(place: Place) -> bool:
    return exit_record(place) is None and _runner_alive(place)


def op_start(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = locate(req)
    argv = field(req, "argv", list)
    if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise bad("'argv' must be a non-empty list of strings without NUL")
    env = field(req, "env", dict)
    if not all(isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
               for k, v in env.items()):
        raise bad("'env' must map names (no '=' or NUL) to strings without NUL")
    prompt = field(req, "prompt", str, "")
    # Names whose values come from this worker's own environment, not the request: a pod's
    # secrets arrive in its container's environment (executors/k8s.py), never in a request.
    inherit = field(req, "inherit", list, [])
    if not all(isinstance(k, str) and k and "=" not in k and "\0" not in k for k in inherit):
        raise bad("'inherit' must be a list of variable names")
    env = {**{k: os.environ[k] for k in inherit if k in os.environ}, **env}
    with session_locked(place):
        if not place.wt.is_dir() or not place.run.is_dir():
            raise ParaError(Code.not_found, f"session {place.session} is not prepared on this worker")
        if is_running(place):
            raise ParaError(Code.wrong_state, f"session {place.session} already has a running agent "
                            f"(runner pid {runner_of(place)[0]})")
        run = place.run
        (run / "exit.json").unlink(missing_ok=True)
        (run / "prompt").unlink(missing_ok=True)
        fd = os.open(run / "prompt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(prompt)
        exit_file, log = run / "exit.json", run / "agent.log"
        with open(log, "ab") as err:  # the runner's own complaints land in the log, not in SSH's pipe
            proc = subprocess.Popen(
                [sys.executable, "-m", "para_rpc.agent_runner", "--exit-file", str(exit_file), "--log", str(log),
                 "--stdin", str(run / "prompt"), "--", *argv],
                cwd=place.wt, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        started = time.time()
        proc.returncode = 0  # detached on purpose: this worker exits now, the runner stays
        tmp = run / "runner.pid.tmp"
        tmp.write_text(json.dumps({"pid": proc.pid, "start": worker_proc.start_ticks(proc.pid),
                                   "started_at": started}))
        os.replace(tmp, run / "runner.pid")
    return {"pid": proc.pid, "log": str(log), "exit_file": str(exit_file), "started_at": started}, None


def op_poll(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = locate(req)
    pid, _ = runner_of(place)
    answer: dict[str, Any] = {"state": "none", "pid": pid, "exit_code": None, "ended_at": None}
    if pid is None:
        return answer, None
    # the exit file is read again after the pid is found gone: the runner writes it, then exits
    done = exit_record(place) or (None if _runner_alive(place) else exit_record(place))
    if done is not None:
        answer.update(state="exited", exit_code=done.get("exit_code"), ended_at=done.get("ended_at"))
    else:
        answer["state"] = "alive" if _runner_alive(place) else "lost"
    return answer, None


MAX_POLLS = 1000


def op_poll_many(req: dict[str, Any], stdin: IO[bytes]) -> Reply:
    """`poll` for every session in `sessions` (each {"repo", "session"}, all under `root`), in
    one process: the sidecar asks once per round for every run on this host, not once per run.
    An entry that cannot be answered gets its own error; the others are answered."""
    sessions = field(req, "sessions", list)
    if len(sessions) > MAX_POLLS:
        raise bad(f"'sessions' lists {len(sessions)} entries; at most {MAX_POLLS} per request")
    states: list[dict[str, Any]] = []
    for one in sessions:
        if not isinstance(one, dict):
            states.append({"error": "each entry of 'sessions' must be an object", "code": Code.invalid_input.name})
            continue
        try:
            states.append(op_poll({**one, "root": req.get("root")}, stdin)[0])
        except ParaError as e:
            states.append({"error": e.message, "code": e.code.name})
    return {"states": states}, None


def op_logs(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = locate(req)
    offset = field(req, "offset", int, 0)
    limit = field(req, "limit", int, LOG_LIMIT)
    if offset < 0 or limit < 0:
        raise bad("'offset' and 'limit' must not be negative")
    try:
        with open(place.run / "agent.log", "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(min(limit, LOG_CAP, max(size - offset, 0)))
    except FileNotFoundError:
        size, data = 0, b""
    return {"size": size, "payload": len(data)}, data


def op_stop(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = locate(req)
    grace = req.get("grace", 10.0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 3600:
        raise bad("'grace' must be between 0 and 3600 seconds")
    # under the session's lock: a snapshot's git working in the worktree is not taken for the agent's
    with session_locked(place) if place.run.is_dir() else contextlib.nullcontext():
        pid, start = runner_of(place)
        pids, left = worker_proc.stop(pid, start, str(place.run / "exit.json"), float(grace),
                                      os.path.realpath(place.wt))
    return {"pids": pids, "left_running": left}, None
