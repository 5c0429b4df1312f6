"""Agent control: stop, restart, follow-up messages, opening a worktree, and the run queue.

`agent.max_running` caps the agents that run at once in a repository, and an executor's own
`max_running` the agents running on it (in every repository this sidecar serves: a host's
capacity is the host's). A launch beyond either is kept on the session (`Session.queued`, persisted with it, so a sidecar restart keeps the queue)
and started, oldest first, when the agent poll finds a free slot (an agent exited, was stopped,
or its session was cancelled or integrated). Counting and launching happen under one lock per
repository, so two dispatches can never both take the last slot. Lock order: the queue lock,
then a session's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from typing import TYPE_CHECKING, Any

from para_rpc import (
    PROTOCOL_VERSION,
    __version__,
    agents,
    config,
    git,
    runtime,
)
from para_rpc.errors import Code, ParaError
from para_rpc.executors import k8s, ssh
from para_rpc.model import (
    AgentRun,
    Message,
    QueuedLaunch,
    Sandbox,
    Session,
    Status,
    now,
    queue_position,
    to_builtins,
)
from para_rpc.params import (
    ExecutorsParams,
    MessagesParams,
    OpenParams,
    RestartParams,
    SendParams,
    StopParams,
)
from para_rpc.service.core import Repo, ServiceCore, check_text, log
from para_rpc.service.remote import remote

MESSAGE_MAX = 20_000  # characters of one follow-up
TALKING = (Status.active, Status.conflicted, Status.integrating)


def _running(run: AgentRun | None) -> bool:
    return run is not None and run.exit_code is None and not run.lost


def _follow_up_section(texts: list[str]) -> str:
    return "\n\n## Follow-up from the user\n\n" + "\n\n".join(t.strip() for t in texts) + "\n"


class Control(ServiceCore):
    """stop, restart, send, messages, open, and the queue of `agent.max_running`."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Dispatching, Sessions)
        async def _launch(self, repo: Repo, s: Session, profile: str, mode: str, argv: list[str], skip: bool,
                          cfg: dict[str, Any], box: Sandbox | None = None, executor: str = "local") -> AgentRun: ...
        async def _check_agents(self, repo: Repo, only: str | None = None) -> None: ...
        @staticmethod
        def _where_paths(s: Session, prompt_file: str, executor: str) -> dict[str, str]: ...
        async def _settle_agent(self, repo: Repo, sid: int | None, exit_file: str) -> None: ...
        async def _record_stop(self, repo: Repo, sid: int | None, name: str, exit_file: str | None, reason: str,
                               result: dict[str, Any]) -> None: ...
        async def _show(self, repo: Repo, s: Session, cwd: str) -> dict[str, Any]: ...
        def _checked_git_dir(self, repo: Repo, s: Session) -> str: ...
        def _known(self, repo: Repo, s: Session, cwd: str, *, worktree: bool,
                   ahead: int | None = None) -> dict[str, Any]: ...

    # ---- the queue -------------------------------------------------------------------------

    def _queue_lock(self, repo: Repo) -> asyncio.Lock:
        locks: dict[str, asyncio.Lock] = self.__dict__.setdefault("_queue_locks", {})
        return locks.setdefault(repo.common_dir, asyncio.Lock())

    @staticmethod
    def _running_count(repo: Repo) -> int:
        # every status: an integrated session's agent may still be on its way out
        return sum(1 for s in repo.store.all() if _running(s.agent))

    def _executor_full(self, repo: Repo, executor: str, cfg: dict[str, Any]) -> int:
        """The executor's `max_running` when that many agents run on it already, else 0."""
        if executor == "local":
            return 0
        cap = int((config.usable(cfg["executors"]).get(executor) or {}).get("max_running") or 0)
        if not cap:
            return 0
        running = sum(1 for r in self.repos.values() for s in r.store.all()
                      if _running(s.agent) and s.agent is not None and s.agent.executor == executor)
        return cap if running >= cap else 0

    @staticmethod
    def _queued(repo: Repo) -> list[Session]:
        live = repo.store.live()
        waiting = [s for s in live if s.queued is not None and s.status is Status.active]
        return sorted(waiting, key=lambda s: queue_position(live, s) or 0)

    async def _launch_or_queue(self, repo: Repo, s: Session, profile: str, mode: str, argv: list[str], skip: bool,
                               cfg: dict[str, Any], reason: str = "dispatch", box: Sandbox | None = None,
                               executor: str = "local") -> None:
        """Launch the agent now (sets `s.agent`), or queue it (sets `s.queued`) when
        `agent.max_running` agents run already or others wait before it. Saves `s`."""
        cap = cfg["agent.max_running"]
        limited = executor != "local" and (config.usable(cfg["executors"]).get(executor) or {}).get("max_running")
        if not cap and not limited and not self._queued(repo):
            s.agent, s.queued = await self._launch(repo, s, profile, mode, argv, skip, cfg, box, executor), None
            repo.store.save(s)
            return
        async with self._queue_lock(repo):
            full = self._executor_full(repo, executor, cfg)
            if (cap and self._running_count(repo) >= cap) or full or any(q.id != s.id for q in self._queued(repo)):
                s.queued = QueuedLaunch(profile=profile, mode=mode, argv=argv, skip_permissions=skip, reason=reason,
                                        sandbox=box, executor=executor)
                repo.store.save(s)
                self.emit(repo, "agent_queued", s.name, position=queue_position(repo.store.live(), s), reason=reason,
                          max_running=cap, **({"executor": executor, "executor_max_running": full} if full else {}))
                return
            s.agent, s.queued = await self._launch(repo, s, profile, mode, argv, skip, cfg, box, executor), None
            repo.store.save(s)

    async def _drain_queue(self, repo: Repo) -> None:
        """Start queued launches, oldest first, while slots are free (from the agent poll)."""
        if not self._queued(repo):
            return
        try:
            cfg = repo.config({})
        except ParaError as e:
            log.warning("the queue of %s waits: %s", repo.root, e.message)
            return
        cap = cfg["agent.max_running"]
        async with self._queue_lock(repo):
            for q in self._queued(repo):
                if cap and self._running_count(repo) >= cap:
                    return
                if q.queued is not None and self._executor_full(repo, q.queued.executor, cfg):
                    continue  # (its host is full; a launch elsewhere behind it may start)
                async with repo.session_lock(q.name):
                    s = repo.store.get(q.name)
                    if s is None or s.id != q.id or s.queued is None or s.status is not Status.active:
                        continue  # cancelled or stopped meanwhile
                    launch = s.queued
                    try:
                        s.agent = await self._launch(repo, s, launch.profile, launch.mode, launch.argv,
                                                     launch.skip_permissions, cfg, launch.sandbox, launch.executor)
                    except ParaError as e:
                        s.queued = None
                        s.notes.append(f"its queued agent could not start: {e.message}")
                        repo.store.save(s)
                        self.emit(repo, "queue_failed", s.name, error=e.message, code=e.code.name)
                        continue
                    s.queued = None
                    repo.store.save(s)
                    waited = round(time.time() - launch.queued_at, 3)
                    self.emit(repo, "dispatched", s.name, profile=launch.profile, mode=s.agent.mode,
                              pid=s.agent.pid, task=s.task, plan=s.plan, from_queue=True, waited=waited)

    # ---- stop --------------------------------------------------------------------------------

    async def stop(self, p: StopParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        async with self._locked(repo, p.session, p.cwd) as s:
            if s.queued is not None:
                s.queued = None
                repo.store.save(s)
                self.emit(repo, "dequeued", s.name)
                return {"session": s.name, "stopped": False, "dequeued": True,
                        "message": f"the agent of {s.name} was waiting for a slot and will not start "
                                   f"(`para restart {s.name}` queues it again)"}
            run = s.agent
            if run is None:
                return {"session": s.name, "stopped": False,
                        "message": f"session {s.name} has no agent (it was started with `para start`)"}
            on_host = remote(run) and _running(run) and (await self._executor(repo, run.executor).poll(run)).state \
                == "alive"
            if not on_host and (not _running(run) or not (agents.is_runner(run.pid, run.exit_file) or
                                                          (run.mode == "editor" and agents.pid_alive(run.pid)))):
                ended = ("was stopped" if run.stopped_at else "vanished" if run.lost
                         else f"exited with status {run.exit_code}" if run.exit_code is not None else "has ended")
                return {"session": s.name, "stopped": False,
                        "message": f"the agent of {s.name} is not running (it {ended}); nothing to stop"}
            if run.mode == "editor":
                self.ports.notify_editors("stop_terminal", {"session": s.name, "pid": run.pid})
            result = await self._executor(repo, run.executor).stop(run, cfg["agent.stop_grace"], worktree=s.worktree)
            if run.mode == "tmux" and run.window:
                await agents.close_tmux_window(run.window)
            run.stopped_at = now()
            repo.store.save(s)
            sid, exit_file = s.id, run.exit_file
        if exit_file:
            await self._record_stop(repo, sid, s.name, exit_file, "stopped by the user (`para stop`)", result)
            await self._check_agents(repo, only=s.name)  # the runner wrote its exit: the slot is free now
            await self._mark_gone(repo, s.name, p.cwd)
        self._spawn(self._drain_queue(repo))
        return {"session": s.name, "stopped": True, "signals": result["signals"], "pids": result["pids"],
                "left_running": result["left_running"],
                "message": f"stopped the agent of {s.name}; the session and its work stay "
                           f"(`para restart {s.name}` relaunches it)"}

    async def _mark_gone(self, repo: Repo, name: str, cwd: str) -> None:
        """A run whose runner is gone without an exit file (killed while it started, before it
        could record one) is lost now, not after the poll's grace: its slot is free."""
        await self._check_agents(repo, only=name)
        async with repo.session_lock(name):
            s = repo.store.get(name)
            run = s.agent if s is not None else None
            if s is None or run is None or not _running(run) or agents.is_runner(run.pid, run.exit_file) \
                    or (run.mode == "editor" and agents.pid_alive(run.pid)) or remote(run):
                return  # (a remote run's end is its host's to say: the poll asks it)
            run.lost, run.ended_at = True, now()
            repo.store.save(s)
        self.emit(repo, "agent_exited", name, exit_code=None, lost=True, status=s.status.value)
        await self._advance_plans(repo)
        await self._check_agents(repo, only=name)  # (its follow-ups: settling)

    # ---- restart -----------------------------------------------------------------------------

    async def restart(self, p: RestartParams, executor: str | None = None) -> dict[str, Any]:
        """Relaunch the session's agent; on `executor` (checked by the caller: `para resume
        --executor`) instead of where it ran, then with the whole task (its conversation, if
        its profile resumes one, stayed where it ran)."""
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        follow = None
        if p.prompt is not None:
            follow = check_text(p.prompt, "the follow-up", MESSAGE_MAX)
        s = self._find(repo, p.session, p.cwd)
        self._require(s, Status.active, "restart")
        if s.queued is not None:
            raise ParaError(Code.wrong_state, f"the agent of {s.name} is already queued (position "
                            f"{queue_position(repo.store.live(), s)}); it starts when a slot frees",
                            session=s.name)
        if s.agent is None:
            raise ParaError(Code.wrong_state, f"session {s.name} has no agent to restart (it was started with "
                            "`para start`); use `para dispatch` for a new session", session=s.name)
        if s.agent.sandbox is not None:
            self._checked_git_dir(repo, s)  # refused before anything is stopped or started
        if _running(s.agent):
            if not p.stop:
                raise ParaError(Code.wrong_state, f"the agent of {s.name} is still running; `para stop {s.name}` "
                                f"first, or `para restart --stop {s.name}`", session=s.name)
            await self.stop(StopParams(cwd=p.cwd, env=p.env, session=s.name))
            await self._check_agents(repo, only=s.name)
            s = self._find(repo, s.name, p.cwd)
            await self._mark_gone(repo, s.name, p.cwd)
            s = self._find(repo, s.name, p.cwd)
            if s.agent is not None and _running(s.agent):
                raise ParaError(Code.wrong_state, f"the agent of {s.name} could not be stopped", session=s.name)
        old = s.agent
        if old is not None and old.exit_file and not old.settled:
            await self._settle_agent(repo, s.id, old.exit_file)  # before its run record is replaced
        if old is None:  # (checked above; a restart of a session that never had an agent)
            raise ParaError(Code.wrong_state, f"session {s.name} has no agent to restart", session=s.name)
        prof = agents.profile(old.profile, cfg["agents"])
        where = executor or old.executor
        mode = old.mode if where == "local" else "headless"  # (on another host: headless only)
        resume = bool(prof.resume) and mode == "headless" and where == old.executor
        argv_t = prof.argv(mode, old.skip_permissions, resume=resume)
        if where == "local":
            agents.require_binary(argv_t, prof.name)  # (a remote agent's program is on its host)
        prompts = os.path.join(repo.root, ".para", "prompts")
        prompt_file = os.path.join(prompts, f"{s.name}.md")
        original = os.path.join(prompts, f"{s.name}.task.md")
        queue = self._queue_lock(repo) if cfg["agent.max_running"] or self._queued(repo) or \
            where != "local" else contextlib.nullcontext()
        async with queue, repo.session_lock(s.name):
            s = self._refind(repo, s, p.cwd)
            if s.queued is not None or _running(s.agent):
                raise ParaError(Code.wrong_state, f"the agent of {s.name} was started meanwhile", session=s.name)
            if old.sandbox is not None:
                self._checked_git_dir(repo, s)  # again now that it is stopped: a check after launching is too late
            unread = [m for m in s.messages if m.read_at is None]
            texts = [m.text for m in unread] + ([follow] if follow else [])
            if not os.path.exists(original) and os.path.exists(prompt_file):
                os.replace(prompt_file, original)  # the task as dispatched, kept for every restart
            task = runtime_read(original)
            if resume:
                prompt = (_follow_up_section(texts) if texts else "Continue with the task.\n").lstrip("\n")
            else:
                prompt = task + (_follow_up_section(texts) if texts else "")
            agents.check_prompt_fits(argv_t, prompt, prof.name)
            runtime.write_private(prompt_file, prompt)
            argv = agents.render(argv_t, {"prompt": prompt, "session": s.name,
                                          **self._where_paths(s, prompt_file, where)})
            at = now()
            for m in unread:
                m.read_at, m.read_by = at, "restart"
            previous = {"exit_code": old.exit_code, "stopped": old.stopped_at is not None, "lost": old.lost}
            await self._launch_unlocked(repo, s, prof.name, mode, argv, old.skip_permissions, cfg, old.sandbox,
                                        where)
        self.emit(repo, "restarted", s.name, profile=prof.name, resume=resume, follow_up=follow is not None,
                  messages=[m.id for m in unread], queued=s.queued is not None, previous=previous,
                  pid=s.agent.pid if s.agent and s.queued is None else None)
        try:
            result = await self._show(repo, s, p.cwd)
        except ParaError as e:
            # The agent runs now (its worktree may already be changed under the show): reporting
            # a failure would tell the user the restart did not happen.
            log.warning("restarted %s but could not show it: %s", s.name, e.message)
            result = self._known(repo, s, p.cwd, worktree=True)
        result["prompt_file"] = prompt_file
        return result

    async def _launch_unlocked(self, repo: Repo, s: Session, profile: str, mode: str, argv: list[str], skip: bool,
                               cfg: dict[str, Any], box: Sandbox | None = None, executor: str = "local") -> None:
        """`_launch_or_queue` for a caller that holds the queue lock already (restart)."""
        cap = cfg["agent.max_running"]
        full = self._executor_full(repo, executor, cfg)
        if (cap and self._running_count(repo) >= cap) or full or any(q.id != s.id for q in self._queued(repo)):
            s.queued = QueuedLaunch(profile=profile, mode=mode, argv=argv, skip_permissions=skip, reason="restart",
                                    sandbox=box, executor=executor)
            repo.store.save(s)
            self.emit(repo, "agent_queued", s.name, position=queue_position(repo.store.live(), s), reason="restart",
                      max_running=cap, **({"executor": executor, "executor_max_running": full} if full else {}))
            return
        s.agent, s.queued = await self._launch(repo, s, profile, mode, argv, skip, cfg, box, executor), None
        repo.store.save(s)

    # ---- executors ---------------------------------------------------------------------------

    async def list_executors(self, p: ExecutorsParams) -> dict[str, Any]:
        """`local` and the configured `executors`; with `check`, one of them connected to and its
        host's git, python and para checked (a failure is the error, nothing runs there)."""
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        table = config.usable(cfg["executors"])  # (project-file executors wait for `para trust`)
        found: list[dict[str, Any]] = [{"name": "local", "kind": "local"}]
        for name, e in sorted(table.items()):
            # (a k8s entry's "host" is its context and namespace; it has no user)
            host = e["host"] if e["kind"] == "ssh" else f"{e['context'] or 'current context'}/{e['namespace']}"
            found.append({"name": name, "kind": e["kind"], "host": host, "port": e["port"],
                          "user": e.get("user") or None, "root": e["root"], "env_passthrough": e["env_passthrough"],
                          "max_running": e["max_running"]})
        result: dict[str, Any] = {"executors": found}
        if p.check is not None:
            if p.check == "local":
                result["checked"] = {"name": "local", "para": __version__, "protocol": PROTOCOL_VERSION,
                                     "python": platform.python_version(), "git": await git.out(repo.root, "--version")}
            elif p.check not in table:
                raise ParaError(Code.not_found, f"no executor named {p.check!r} (configured: "
                                f"{', '.join(['local', *sorted(table)])})", executor=p.check)
            else:
                entry = table[p.check]
                got = await (k8s.executor(p.check, entry).check() if entry["kind"] == "k8s"
                             else ssh.check(p.check, entry))
                result["checked"] = {"name": p.check, **got}
        return result

    # ---- follow-up messages ------------------------------------------------------------------

    async def send(self, p: SendParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        text = check_text(p.message, "the message", MESSAGE_MAX)
        async with self._locked(repo, p.session, p.cwd) as s:
            if s.status not in TALKING:
                raise ParaError(Code.wrong_state, f"session {s.name!r} is {s.status.value}; messages are for "
                                "sessions at work", session=s.name, status=s.status.value)
            if len(s.messages) >= 1000:
                raise ParaError(Code.invalid_input, f"session {s.name} holds 1000 messages already", session=s.name)
            m = Message(id=len(s.messages) + 1, text=text)
            s.messages.append(m)
            repo.store.save(s)
            running = _running(s.agent) or s.queued is not None
            unread = sum(1 for x in s.messages if x.read_at is None)
        self.emit(repo, "message", s.name, id=m.id, running=running)
        return {"session": s.name, "id": m.id, "delivery": "running" if running else "kept", "unread": unread}

    async def messages(self, p: MessagesParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        s = self._find(repo, p.session, p.cwd, history=True)
        if p.all:
            return {"session": s.name, "messages": [_plain(m) for m in s.messages]}
        deadline = time.monotonic() + max(0.0, min(float(p.wait), 3600.0))
        while True:
            tick = repo.tick
            taken = await self._take_messages(repo, s.name, "messages")
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return {"session": s.name, "messages": taken}
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(tick.wait(), remaining)

    async def _take_messages(self, repo: Repo, name: str, by: str) -> list[dict[str, Any]]:
        """The unread messages of a session, marked read (by `by`)."""
        async with repo.session_lock(name):
            s = repo.store.get(name)
            if s is None:
                return []
            unread = [m for m in s.messages if m.read_at is None]
            if not unread:
                return []
            at = now()
            for m in unread:
                m.read_at, m.read_by = at, by
            repo.store.save(s)
        self.emit(repo, "messages_read", name, ids=[m.id for m in unread], by=by)
        return [_plain(m) for m in unread]

    # ---- open --------------------------------------------------------------------------------

    async def open(self, p: OpenParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        s = self._find(repo, p.session, p.cwd)
        if s.status not in (Status.active, Status.conflicted) or not os.path.isdir(s.worktree):
            raise ParaError(Code.wrong_state, f"session {s.name} has no worktree to open ({s.status.value}"
                            + ("" if os.path.isdir(s.worktree) else f"; `para resume {s.name}` recreates it") + ")",
                            session=s.name)
        base = {"session": s.name, "worktree": s.worktree}
        if p.editor is None:
            asked = self.ports.notify_editors("open", {**base, "repo": repo.root})
            if asked:
                return {**base, "via": "editor", "editors": asked}
        # The front end runs it, in the user's terminal and with the user's PATH (nvim needs the
        # terminal; the sidecar has none). Without --editor it picks the first one installed.
        return {**base, "via": "argv", "argv": [p.editor, s.worktree] if p.editor else None}


def _plain(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = to_builtins(m)
    return out


def runtime_read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ParaError(Code.not_found, f"the task of this session ({path}) cannot be read: {e.strerror}",
                        path=path) from None
