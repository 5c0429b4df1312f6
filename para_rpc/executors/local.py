"""The `local` executor: agents on this machine, in the mode the dispatch chose: headless
(output to a log file), a tmux window, or an editor's terminal (falling back to tmux, then
headless, when no editor answers). Its worktree is the session's own, so prepare, harvest
and release have nothing to move; the runner's exit file is how a run's end is learned."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import Any

from para_rpc import agents
from para_rpc.executors import EditorLauncher, LaunchSpec, RunState, Started
from para_rpc.model import AgentRun

# A runner younger than this whose pid is not seen yet is still starting, not lost.
START_GRACE = 2.0


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ended(run: AgentRun) -> RunState | None:
    data = _read_json(run.exit_file) if run.exit_file else None
    if data is None:
        return None
    return RunState(state="exited", exit_code=data.get("exit_code"), ended_at=data.get("ended_at"))


def _read_from(path: str, offset: int, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, offset))
            return f.read(limit)
    except OSError:
        return b""


class Local:
    name = "local"

    async def prepare(self, spec: LaunchSpec) -> dict[str, Any]:
        return {}  # the session's worktree is where it runs

    async def start(self, run: AgentRun, spec: LaunchSpec, editor: EditorLauncher | None) -> Started:
        exit_file = run.exit_file or ""
        note = None
        if run.mode == "editor":
            answer = await editor(
                {"session": spec.session, "worktree": spec.worktree, "title": f"para: {spec.session}",
                 "argv": agents.runner_argv(exit_file, spec.argv),
                 "env": {k: v for k, v in spec.env.items() if k in spec.keep}},
                spec.editor_timeout) if editor is not None else None
            if answer and answer.get("ok"):
                run.pid = answer.get("pid")
                return Started(run=run)
            run.mode = "tmux" if shutil.which("tmux") else "headless"
            note = f"no editor answered; the agent runs in {run.mode} mode"
        if run.mode == "tmux":
            run.window, run.pid = await agents.launch_tmux(spec.argv, spec.worktree, spec.env, exit_file,
                                                           spec.session, keep=set(spec.keep))
            return Started(run=run, note=note)
        run.log = spec.log
        proc = await agents.launch_headless(spec.argv, spec.worktree, spec.env, spec.log, exit_file,
                                            spec.prompt_file)
        run.pid = proc.pid
        return Started(run=run, wait=proc.wait, note=note)

    async def bind(self, run: AgentRun, socket: str) -> str:
        return socket  # same machine: the agent connects to the bound socket itself

    async def poll(self, run: AgentRun) -> RunState:
        ended = _ended(run)
        if ended is not None:
            return ended
        if run.pid and not agents.pid_alive(run.pid) and time.time() - run.started_at > START_GRACE:
            return _ended(run) or RunState(state="lost", ended_at=time.time())  # (written just now?)
        return RunState(state="alive")

    async def harvest(self, run: AgentRun, into: tuple[str, str] | None = None) -> str | None:
        return None  # its commits are on the local branch already

    async def logs(self, run: AgentRun, offset: int, limit: int = 1 << 20) -> bytes:
        return await asyncio.to_thread(_read_from, run.log, offset, limit) if run.log else b""

    async def stop(self, run: AgentRun, grace: float, worktree: str | None = None) -> dict[str, Any]:
        return await agents.stop_run(run.pid, run.exit_file, grace, since=run.started_at, worktree=worktree)

    async def release(self, run: AgentRun) -> None:
        return None  # the worktree is the session's (removed by its end), not the executor's

    async def reconcile(self, runs: list[AgentRun]) -> list[AgentRun]:
        # Nothing to reconnect: runners outlive the sidecar and their exit files are read by
        # `poll`; the bound sockets are listened on again by the service (restore_channels).
        return [r for r in runs if (await self.poll(r)).state == "alive"]


LOCAL = Local()
