"""Agents as the service runs them: dispatch, following agent processes, status reports
and evidence, waiting for changes, diffs, and plans of numbered task files
(agents.py holds profiles, prompts and launchers)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from para_rpc import agents, config, executors, git, runtime, sandbox, watch
from para_rpc.errors import Code, ParaError
from para_rpc.model import (
    AgentRun,
    Plan,
    PlanStep,
    PlanTask,
    Report,
    Sandbox,
    Session,
    Status,
    now,
    queue_position,
    to_builtins,
)
from para_rpc.names import validate_session_name
from para_rpc.params import (
    MAX_ITEMS,
    DiffParams,
    DispatchParams,
    RepoParams,
    ReportParams,
    StartParams,
    StatusParams,
    WaitParams,
)
from para_rpc.service.core import (
    AGENT_POLL_SECONDS,
    STATUS_CONCURRENCY,
    Repo,
    check_text,
    log,
)
from para_rpc.service.remote import LEFT, Remote, leave_placement, remote

LOST_STOP_RETRY = 30.0  # seconds between tries to stop a lost agent whose session ended (its host may be back)
STATUS_MAX = 500  # characters of a status report's text or blocked reason: one line in `list`


def _made(repo: Repo, name: str) -> Session:
    """The session this call has just started (it cannot be gone: its start held the locks)."""
    s = repo.store.get(name)
    if s is None:
        raise ParaError(Code.internal, f"session {name} vanished right after it was started", session=name)
    return s


def _mtime(path: str | None) -> float:
    try:
        return os.stat(path).st_mtime if path else 0.0
    except OSError:
        return 0.0


def _worktree_gitdir(worktree: str) -> str | None:
    """The private git dir of a linked worktree, read from its `.git` file (no git process,
    and no wait on a FIFO there: `git.dotgit`)."""
    return watch.gitdir_of(worktree, git.dotgit(worktree))


# ---- what changed outside an agent's worktree ----------------------------------------------
# Para cannot sandbox an agent, but it can notice: the `git status` of the main checkout and of
# the other live worktrees (each entry with its size and mtime, so a file changed again is seen
# too) and .git/config and .git/hooks are recorded when an agent starts and compared when it ends.

# Event kinds that are an agent's progress chatter: reported, but not a change `wait` ends on.
QUIET_KINDS = frozenset({"status"})
OUTSIDE_LIMIT = 200  # entries kept per comparison; the count says when there were more
# What a place's entry looked like: [status, size, mtime_ns] (a file in a worktree) or
# ["", size, sha256 / link target] (the git directory); stored as JSON lists.
Fingerprint = list[Any]
_STATUS_WORDS = {"??": "untracked", "A": "added", "M": "modified", "D": "deleted", "T": "type changed",
                 "U": "conflicted", "": "changed back"}


def _outside_file(exit_file: str) -> str:
    return exit_file[: -len(".exit")] + ".outside.json" if exit_file.endswith(".exit") else exit_file + ".outside"


def _fingerprints(root: str, entries: dict[str, str]) -> dict[str, Fingerprint]:
    out: dict[str, Fingerprint] = {}
    for path, xy in entries.items():
        try:
            st = os.lstat(os.path.join(root, path))
            out[path] = [xy, st.st_size, st.st_mtime_ns]
        except OSError:
            out[path] = [xy, -1, 0]
    return out


def _git_dir_fingerprints(common_dir: str) -> dict[str, Fingerprint]:
    """Files in the shared git directory that make git run code or change how it behaves.
    By content: git rewrites its config file (same content, new mtime) when it deletes a branch."""
    names = ["config"]
    try:
        names += [f"hooks/{e.name}" for e in os.scandir(os.path.join(common_dir, "hooks"))]
    except OSError:
        pass
    out: dict[str, Fingerprint] = {}
    for name in names:
        path = os.path.join(common_dir, name)
        try:
            if os.path.islink(path) or not os.path.isfile(path):
                out[name] = ["", -1, os.readlink(path) if os.path.islink(path) else "not a file"]
                continue
            with open(path, "rb") as f:
                data = f.read(1 << 20)
            out[name] = ["", os.path.getsize(path), hashlib.sha256(data).hexdigest()]
        except OSError:
            pass
    return out


def _write_private_json(path: str, data: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _changed(before: dict[str, Fingerprint], after: dict[str, Fingerprint]) -> list[tuple[str, str, str]]:
    """(path, status now, status before) for every entry that appeared, went or changed."""
    out = []
    for path in sorted(set(before) | set(after)):
        b, a = before.get(path), after.get(path)
        if b != a:
            out.append((path, a[0] if a else "", b[0] if b else ""))
    return out


def _describe(change: dict[str, Any]) -> str:
    xy = change["status"].strip()
    word = _STATUS_WORDS.get(xy if xy == "??" else xy[:1], xy) if xy else _STATUS_WORDS[""]
    if xy and xy == change["was"].strip():
        word += ", changed again"
    return f"{change['path']} ({word})"


def _summary(changes: list[dict[str, Any]], limit: int = 10) -> str:
    """`main checkout: pwned.txt (untracked), b.txt (modified); session other: x (untracked)`."""
    groups: dict[str, list[str]] = {}
    for c in changes[:limit]:
        where = f"session {c['session']}" if c["session"] else c["location"]
        groups.setdefault(where, []).append(_describe(c))
    text = "; ".join(f"{where}: {', '.join(items)}" for where, items in groups.items())
    return text + (f"; and {len(changes) - limit} more" if len(changes) > limit else "")


class Dispatching(Remote):
    """Agent operations."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Sessions, Integration)
        async def start(self, p: StartParams) -> dict[str, Any]: ...
        def _known(self, repo: Repo, s: Session, cwd: str, *, worktree: bool, ahead: int | None = None) -> dict[str, Any]: ...
        async def _undo_start(self, repo: Repo, s: Session, keep: bool = True) -> str | None: ...
        async def _session_commit(self, s: Session) -> tuple[str | None, bool]: ...
        async def _launch_or_queue(self, repo: Repo, s: Session, profile: str, mode: str, argv: list[str],
                                   skip: bool, cfg: dict[str, Any], reason: str = "dispatch",
                                   box: Sandbox | None = None, executor: str = "local") -> None: ...
        async def _drain_queue(self, repo: Repo) -> None: ...
        async def _take_messages(self, repo: Repo, name: str, by: str) -> list[dict[str, Any]]: ...
        async def _sandboxed(self, repo: Repo, s: Session, run: AgentRun, box: Sandbox, argv: list[str],
                             env: dict[str, str], cfg: dict[str, Any]) -> list[str]: ...
        def _close_channel(self, s: Session) -> None: ...
        async def _bind_agent(self, repo: Repo, s: Session, run: AgentRun, env: dict[str, str]) -> None: ...
        def _hook_env(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> dict[str, str]: ...
        def _own_env(self, repo: Repo, s: Session, cfg: dict[str, Any], env: dict[str, str]) -> dict[str, str]: ...

    async def dispatch(self, p: DispatchParams) -> dict[str, Any]:
        if p.tasks:
            return await self._dispatch_batch(p)
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        given = [x for x in (p.prompt, p.file) if x is not None] + ([p.files] if p.files else [])
        if len(given) != 1:
            raise ParaError(Code.invalid_input, "give exactly one of: a prompt, a task file, or a list of task files")
        prof = agents.profile(p.agent or config.usable(cfg["agent.default"]), cfg["agents"])
        executor = self._executor_for(p, cfg)
        mode = "headless" if executor != "local" else self._choose_mode(p.mode or cfg["agent.mode"], p.in_tmux)
        argv = prof.argv(mode, p.skip_permissions)
        if executor == "local":
            agents.require_binary(argv, prof.name)  # (a remote agent's program is on its host)
        box = await self._sandbox_for(p, cfg)
        if box is not None and executor != "local":
            raise ParaError(Code.invalid_input, f"the sandbox confines agents on this machine; executor {executor} "
                            "runs it on another host: drop --sandbox (or set agent.sandbox = \"\")",
                            executor=executor)
        if p.files or (p.file is not None and os.path.isdir(os.path.join(p.cwd, p.file))):
            return await self._dispatch_plan(repo, cfg, p, prof, mode, box, executor)
        if p.prompt is not None:
            task, source = p.prompt, "prompt"
            if not task.strip():
                raise ParaError(Code.invalid_input, "the prompt is empty")
        else:
            path = agents.find_task_file(repo.root, p.cwd, p.file)
            task, source = agents.read_task(path, repo.root), str(path)
        name = p.name
        if name is None and p.file is not None:
            name = agents.task_name(Path(source))
            if name is not None and repo.store.get(name) is not None:
                name = None  # taken: a friendly name instead
        return await self._dispatch_one(repo, cfg, name=name, task=task, source=source, prof=prof, mode=mode,
                                        skip=p.skip_permissions, base=p.base, cwd=p.cwd, env=p.env, box=box,
                                        keep_on_failure=p.keep_on_failure, executor=executor)

    @staticmethod
    def _executor_for(p: DispatchParams, cfg: dict[str, Any]) -> str:
        """Where this dispatch runs its agents, checked before anything is created: `local`,
        or an executor of config `executors` (from a project file only once it is trusted)."""
        name = p.executor or config.usable(cfg["agent.executor"])
        if name == "local":
            return name
        table = config.usable(cfg["executors"])
        if name not in table:
            raise ParaError(Code.not_found, f"no executor named {name!r} (configured: "
                            f"{', '.join(['local', *sorted(table)])}; see `para executor list`)", executor=name)
        if p.mode not in (None, "auto", "headless"):
            raise ParaError(Code.invalid_input, f"an agent on executor {name} runs headless (its output in `para "
                            f"logs`); --mode {p.mode} is for agents on this machine", executor=name)
        return name

    @staticmethod
    async def _sandbox_for(p: DispatchParams, cfg: dict[str, Any]) -> Sandbox | None:
        """Whether this dispatch confines its agents, checked before anything is created: a
        sandbox that cannot be made is a config_error, never an agent run without one."""
        wanted = p.sandbox if p.sandbox is not None else config.usable(cfg["agent.sandbox"]) == "bwrap"
        if not wanted:
            if p.network is False:
                raise ParaError(Code.invalid_input, "--no-network confines a sandboxed agent; add --sandbox "
                                "(or set agent.sandbox = \"bwrap\")")
            return None
        await sandbox.probe(sandbox.find_bwrap(config.usable(cfg["agent.bwrap"])))
        return Sandbox(network=p.network if p.network is not None else bool(config.usable(cfg["agent.network"])))

    async def _dispatch_batch(self, p: DispatchParams) -> dict[str, Any]:
        """Several independent tasks in one call: each starts (or fails) on its own, in order;
        the result lists the sessions started and the tasks that failed, with why. Nothing
        started at all is an error (the first failure's code, every failure in its data)."""
        mixed = [k for k, v in (("name", p.name), ("prompt", p.prompt), ("file", p.file), ("files", p.files)) if v]
        if mixed:
            raise ParaError(Code.invalid_input, f"tasks replaces {', '.join(mixed)}: give each task its own "
                            "prompt or file (and name) inside tasks")
        started: list[dict[str, Any]] = []
        plans: list[dict[str, Any]] = []  # a task whose file is a directory of task files runs as a plan
        failed: list[dict[str, Any]] = []
        first: ParaError | None = None
        for i, t in enumerate(p.tasks):
            label = t.name or t.file or f"#{i + 1}"
            try:
                if (t.prompt is None) == (t.file is None):
                    raise ParaError(Code.invalid_input, "give the task a prompt or a file (one of them)")
                one = msgspec.structs.replace(p, tasks=[], name=t.name, prompt=t.prompt, file=t.file)
                r = await self.dispatch(one)
                if "plan" in r and "name" not in r:
                    plans.append(r["plan"])
                else:
                    started.append(r)
            except ParaError as e:
                first = first or e
                failed.append({"task": label, "code": e.code.name, "error": e.message})
        if not started and not plans and first is not None:
            raise ParaError(first.code, "nothing was dispatched: " + "; ".join(
                f"{f['task']}: {f['error']}" for f in failed), failed=failed)
        return {"sessions": started, "plans": plans, "failed": failed}

    def _choose_mode(self, mode: str, in_tmux: bool) -> str:
        if mode != "auto":
            return mode
        if self.ports.editor_available():
            return "editor"
        if in_tmux and shutil.which("tmux"):
            return "tmux"
        return "headless"

    async def _dispatch_one(self, repo: Repo, cfg: dict[str, Any], *, name: str | None, task: str, source: str,
                            prof: agents.Profile, mode: str, skip: bool, base: str | None, cwd: str,
                            env: dict[str, str], plan: int | None = None, box: Sandbox | None = None,
                            keep_on_failure: bool = False, executor: str = "local") -> dict[str, Any]:
        prompt = agents.compose_prompt(task, cfg["agent.workflow"])
        argv_t = prof.argv(mode, skip)
        agents.check_prompt_fits(argv_t, prompt, prof.name)
        info = await self.start(StartParams(cwd=cwd, env=env, name=name, base=base, keep_on_failure=keep_on_failure))
        s = _made(repo, info["name"])
        try:
            prompt_file = os.path.join(repo.root, ".para", "prompts", f"{s.name}.md")
            os.makedirs(os.path.dirname(prompt_file), mode=0o700, exist_ok=True)
            runtime.write_private(prompt_file, prompt)
            runtime.write_private(os.path.join(s.worktree, agents.INSTRUCTION_FILE),
                                  agents.instruction_text(s.name, cfg["agent.workflow"]))
            argv = agents.render(argv_t, {"prompt": prompt, "session": s.name,
                                          **self._where_paths(s, prompt_file, executor)})
            s.task = source if source != "prompt" else prompt.strip().splitlines()[0][:200]
            s.plan = plan
            await self._launch_or_queue(repo, s, prof.name, mode, argv, skip, cfg, box=box,
                                        executor=executor)  # (control.py)
        except BaseException:
            async with repo.lock:
                await self._undo_start(repo, s)
            raise
        repo.store.save(s)
        if s.agent is not None:
            self.emit(repo, "dispatched", s.name, profile=prof.name, mode=s.agent.mode, pid=s.agent.pid,
                      task=s.task, plan=plan)
        result = self._known(repo, s, cwd, worktree=True, ahead=0)
        result["prompt_file"] = prompt_file
        return result

    @staticmethod
    def _where_paths(s: Session, prompt_file: str, executor: str) -> dict[str, str]:
        """The values of {worktree} and {prompt_file}: this machine's paths, or placeholders
        an executor on another host fills with its own (it knows them once it prepared)."""
        if executor == "local":
            return {"worktree": s.worktree, "prompt_file": prompt_file}
        return {"worktree": executors.REMOTE_WORKTREE, "prompt_file": executors.REMOTE_PROMPT_FILE}

    async def _launch(self, repo: Repo, s: Session, profile: str, mode: str, argv: list[str], skip: bool,
                      cfg: dict[str, Any], box: Sandbox | None = None, executor: str = "local") -> AgentRun:
        runs = os.path.join(repo.root, ".para", "runs")
        os.makedirs(runs, exist_ok=True)
        exit_file = os.path.join(runs, f"{s.name}.{int(time.time() * 1000)}.exit")
        await self._record_outside_state(repo, s, exit_file)
        env = self._hook_env(repo, s, cfg)  # PARA_PORT, PARA_REPO, session.env ..., para on PATH
        run = AgentRun(profile=profile, mode=mode, argv=argv, exit_file=exit_file, skip_permissions=skip,
                       executor=executor)
        if executor != "local":
            # On another host: its worktree made there first (the socket is forwarded to a path in it).
            spec = self._spec(repo, s, argv, env, cfg)
            if s.agent is not None and (s.agent.lost or s.agent.executor != executor):
                # Resumed from a lost host or from elsewhere: the uncommitted work the local
                # worktree holds (a lost run's last checkpoint, mirrored) goes along.
                spec.checkpoint = await self._local_checkpoint(repo, s)
            run.placement = await self._executor(repo, executor).prepare(spec)
        try:
            # Sandboxed or not, the agent reaches the sidecar only on its session's bound socket:
            # the sidecar's own socket would let it act on any session or change the config.
            if box is None:
                await self._bind_agent(repo, s, run, env)
                # Only to start the sidecar again after a crash (client.connect); it runs as the
                # user anyway. A sandboxed agent cannot see this socket and is not told it.
                if executor == "local":
                    env["PARA_SIDECAR_SOCKET"] = self.socket
            else:
                argv = await self._sandboxed(repo, s, run, box, argv, env, cfg)
            try:
                return await self._start_agent(repo, s, run, argv, env, cfg)
            except BaseException:
                self._close_channel(msgspec.structs.replace(s, agent=run))
                raise
        except BaseException:
            if run.placement:  # (what prepare made on the host goes with the session this undoes)
                await self._release_failed_placement(repo, s.name, run)
            raise

    async def _release_failed_placement(self, repo: Repo, name: str, run: AgentRun) -> None:
        """Best effort, bounded: an agent the host started after all (its answer lost) is
        stopped first; a host that does not answer keeps them (the error said why the
        dispatch failed; a later prepare of the name refuses what it finds)."""
        ex = self._executor(repo, run.executor)
        try:
            await asyncio.wait_for(ex.stop(run, 0.0), 30.0)
            await asyncio.wait_for(ex.release(run), 30.0)
        except (ParaError, TimeoutError) as e:
            log.info("the placement of %s on executor %s not released: %s", name, run.executor,
                     getattr(e, "message", "no answer"))

    def _spec(self, repo: Repo, s: Session, argv: list[str], env: dict[str, str],
              cfg: dict[str, Any]) -> executors.LaunchSpec:
        files = {}  # (for an agent on another host: written there, kept out of its commits by the worker)
        with contextlib.suppress(OSError):
            files[agents.INSTRUCTION_FILE] = git.read_regular(os.path.join(s.worktree, agents.INSTRUCTION_FILE))
        return executors.LaunchSpec(
            session=s.name, worktree=s.worktree, argv=argv, env=env, keep=sorted(self._own_env(repo, s, cfg, env)),
            log=os.path.join(repo.root, ".para", "logs", f"{s.name}.log"),
            prompt_file=os.path.join(repo.root, ".para", "prompts", f"{s.name}.md"),
            editor_timeout=cfg["agent.editor_timeout"], repo_root=repo.root, branch=s.branch, files=files)

    async def _start_agent(self, repo: Repo, s: Session, run: AgentRun, argv: list[str],
                           env: dict[str, str], cfg: dict[str, Any]) -> AgentRun:
        spec = self._spec(repo, s, argv, env, cfg)
        started = await self._executor(repo, run.executor).start(run, spec, self.ports.run_in_editor)
        if started.note:
            s.notes.append(started.note)
        if started.wait is not None:
            self._spawn(self._reap(repo, s.name, started.wait))
        return started.run

    async def _reap(self, repo: Repo, name: str, wait: Callable[[], Awaitable[int]]) -> None:
        await wait()
        await self._check_agents(repo, only=name)

    def agents_running(self) -> bool:
        """Whether an agent this sidecar follows is still at work (keeps an idle sidecar alive,
        so agent exits and plan steps are noticed when they happen)."""
        return any(s.agent is not None and s.agent.exit_code is None and not s.agent.lost
                   for repo in self.repos.values() for s in repo.store.live())

    async def _poll_agents(self, repo: Repo) -> None:
        """Notice agents that ended (exit file written) or vanished. No git is run here.
        First, once per repository opened: plans a crash left stuck."""
        try:
            await self._repair_plans(repo)
        except Exception:  # noqa: BLE001 logged; the poll below must run whatever the repair hit
            log.exception("plan repair failed")
        while True:
            await asyncio.sleep(AGENT_POLL_SECONDS)
            try:
                await self._check_agents(repo)
                await self._drain_queue(repo)  # a slot freed (exit, stop, cancel, integrate): start the next
            except Exception:  # noqa: BLE001 logged; one bad poll must not end the polling
                log.exception("agent poll failed")

    async def _check_agents(self, repo: Repo, only: str | None = None) -> None:
        everything = repo.store.all()
        if only is None:
            self._fetch_left_soon(repo, everything)
        sessions = [s for s in everything  # integrated sessions too: their agent exits after landing
                    if s.agent is not None and s.agent.exit_code is None and not s.agent.lost
                    and not (only and s.name != only)]
        # Agents on other hosts are asked all at once (each poll is an exec there, harvests too).
        on_hosts = {s.name: self._remote_poll(repo, s) for s in sessions if remote(s.agent)}
        answers = dict(zip(on_hosts, await asyncio.gather(*on_hosts.values(), return_exceptions=True), strict=True))
        for s in sessions:
            run = s.agent
            assert run is not None
            if remote(run):
                polled = answers[s.name]  # (it harvested when it ended)
                if isinstance(polled, BaseException):
                    log.warning("the agent of %s could not be polled: %s", s.name, getattr(polled, "message", polled))
                    continue
                if polled is None or polled.state == "alive":
                    continue
                state = polled
            else:
                state = await self._executor(repo, run.executor).poll(run)
            if state.state == "alive":
                continue
            # Recorded on the session as it is now (no await from reading it to saving it): the
            # copy read before the polls may be older than an integrate or cancel that ended it.
            now_ = repo.store.by_id(s.id) if s.id is not None else None
            if now_ is None or now_.agent is None or now_.agent.exit_file != run.exit_file \
                    or now_.agent.exit_code is not None or now_.agent.lost:
                continue
            s, run = now_, now_.agent
            run.exit_code, run.ended_at, run.lost = state.exit_code, state.ended_at, state.state == "lost"
            if state.reason:  # (what the executor knows of a loss: a pod's eviction message)
                s.notes.append(f"its agent was lost: {state.reason}")
            repo.store.save(s)
            self.emit(repo, "agent_exited", s.name, exit_code=run.exit_code, lost=run.lost, status=s.status.value,
                      **({"reason": state.reason} if state.reason else {}))
            await self._advance_plans(repo)
        self._follow_up_agents(repo)

    # ---- stopping agents whose session ended, and what they left behind ----------------------

    def _agent_job(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a background task, once per key in this sidecar's life (the next
        sidecar tries again what this one could not finish)."""
        jobs: dict[str, asyncio.Task[None]] = self.__dict__.setdefault("_agent_jobs", {})
        if key in jobs:
            coro.close()
            return
        jobs[key] = asyncio.get_running_loop().create_task(coro)

    def _agent_session_ended(self, repo: Repo, s: Session, forgotten: bool = False) -> None:
        """Called once a session ended and its work was saved (cancelled, integrated, finished,
        forgotten by clean): its agent has nothing left to do there. A cancelled or forgotten
        session's agent is stopped now. An integrated or finished one gets `agent.stop_grace`
        seconds to exit by itself: the agent that ran `para integrate` is waiting for that answer,
        and stopping it first would make it see a failure."""
        run = s.agent
        if forgotten or s.status in (Status.integrated, Status.cancelled):
            self._close_channel(s)  # (an agent still at work there finishes its request on it)
        if remote(run) and s.status in (Status.integrated, Status.cancelled, Status.review):
            assert run is not None
            later = s.status is not Status.cancelled and not forgotten
            self._agent_job(f"release:{run.exit_file}", self._end_placement(
                repo, s.name, run, repo.config({})["agent.stop_grace"] if later else 0.0))
            return
        if run is None or run.exit_code is not None or run.lost or not run.pid or not run.exit_file:
            return
        grace = repo.config({})["agent.stop_grace"]
        later = s.status in (Status.integrated, Status.review) and not forgotten
        reason = "its session was forgotten by clean" if forgotten else f"its session was {s.status.value}"
        self._agent_job(f"stop:{run.exit_file}",
                        self._stop_agent(repo, s.id, s.name, run, grace if later else 0.0, reason,
                                         worktree=s.worktree))

    def _follow_up_agents(self, repo: Repo) -> None:
        """From the agent poll (no git, no waiting): settle agents that ended, and stop the
        agents of sessions that ended while no sidecar was there to do it (a crash, a restart)."""
        grace = None
        for s in repo.store.all():
            run = s.agent
            if run is None or not run.exit_file:
                continue
            if run.exit_code is not None or run.lost:
                if not run.settled:
                    self._agent_job(f"settle:{run.exit_file}", self._settle_agent(repo, s.id, run.exit_file))
                if run.lost and run.placement and run.executor != "local" and not run.stops and \
                        s.status in (Status.cancelled, Status.integrated):
                    self._agent_job(f"stop-lost:{run.exit_file}", self._stop_lost(repo, s.id, s.name, run))
            elif s.status in (Status.cancelled, Status.integrated, Status.review) and not run.stops:
                grace = repo.config({})["agent.stop_grace"] if grace is None else grace
                delay = 0.0 if s.status is Status.cancelled else max(0.0, s.updated_at + grace - time.time())
                self._agent_job(f"stop:{run.exit_file}",
                                self._stop_agent(repo, s.id, s.name, run, delay, f"its session was {s.status.value}",
                                                 worktree=s.worktree))

    async def _stop_lost(self, repo: Repo, sid: int | None, name: str, run: AgentRun) -> None:
        """A lost run's host is only silent: its agent may still work there (a partition, a dead
        sshd). Once its session ended, the agent is stopped when the host answers again (tried
        again every LOST_STOP_RETRY seconds while this sidecar runs; once per start after). Its
        worktree there may hold work never harvested: on an SSH host it becomes a placement
        left behind (remote.LEFT), whose work is saved in backup refs before the host is freed."""
        tried: dict[str, float] = self.__dict__.setdefault("_lost_stop_tried", {})
        key = str(run.exit_file)
        if tried.get(key, -LOST_STOP_RETRY) + LOST_STOP_RETRY > time.monotonic():
            return
        tried[key] = time.monotonic()
        try:
            result = await asyncio.wait_for(self._executor(repo, run.executor).stop(run, 0.0), 60.0)
        except (ParaError, TimeoutError) as e:
            log.info("the lost agent of %s on executor %s not stopped yet: %s", name, run.executor,
                     getattr(e, "message", "no answer"))
            return
        tried[key] = float("inf")  # (done for this sidecar's life)
        await self._record_stop(repo, sid, name, run.exit_file, "its session ended while its host was lost",
                                result)
        # What its worktree there holds beyond the last harvest is saved in backup refs and the
        # host freed, as for a placement a resume left behind (an SSH host keeps its disk).
        kind = (config.usable(repo.config({})["executors"]).get(run.executor) or {}).get("kind")
        s = repo.store.by_id(sid) if sid is not None and kind == "ssh" else None
        if s is not None and not any((e.get("run") or {}).get("exit_file") == run.exit_file
                                     for e in s.extra.get(LEFT) or []):
            leave_placement(s, run, "")
            repo.store.save(s)

    async def _stop_agent(self, repo: Repo, sid: int | None, name: str, run: AgentRun, delay: float,
                          reason: str, worktree: str | None = None) -> None:
        try:
            if remote(run):
                return  # (its placement's end stops it on its host: _end_placement)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and agents.is_runner(run.pid, run.exit_file):
                await asyncio.sleep(0.1)
            if not agents.is_runner(run.pid, run.exit_file):
                return  # it ended by itself: settling after its exit stops what it left behind
            grace = repo.config({})["agent.stop_grace"]
            result = await self._executor(repo, run.executor).stop(run, grace, worktree=worktree)
            await self._record_stop(repo, sid, name, run.exit_file, reason, result)
        except Exception:  # noqa: BLE001 a background job: logged, the next sidecar tries again
            log.exception("stopping the agent of %s failed", name)

    async def _record_stop(self, repo: Repo, sid: int | None, name: str, exit_file: str | None, reason: str,
                           result: dict[str, Any]) -> None:
        if not result["pids"]:
            return
        entry = {"at": now(), "reason": reason, **result}
        async with repo.session_lock(name):
            s = repo.store.by_id(sid) if sid is not None else None
            if s is not None and s.agent is not None and s.agent.exit_file == exit_file:
                s.agent.stops.append(entry)
                if result["left_running"]:
                    s.notes.append(f"processes of its agent still run and could not be stopped "
                                   f"(pids {', '.join(map(str, result['left_running']))})")
                repo.store.save(s)
        self.emit(repo, "agent_stopped", name, **entry)

    async def _settle_agent(self, repo: Repo, sid: int | None, exit_file: str) -> None:
        """After an agent's runner ended: stop what it left running in its process group
        (daemons it forked), then compare what changed outside its worktree while it ran."""
        try:
            stopping = self.__dict__.get("_agent_jobs", {}).get(f"stop:{exit_file}")
            if stopping is not None and not stopping.done():
                await asyncio.wait([stopping])
            s = repo.store.by_id(sid) if sid is not None else None
            if s is None or s.agent is None or s.agent.exit_file != exit_file or s.agent.settled:
                return
            run = s.agent
            grace = repo.config({})["agent.stop_grace"]
            # (a run lost with its host: nothing there can be asked, nothing here was its to change)
            away = run.executor != "local" and run.lost
            if not away:
                result = await self._executor(repo, run.executor).stop(run, grace, worktree=s.worktree)
                await self._record_stop(repo, sid, s.name, exit_file, "the agent exited; these are processes it "
                                        "left running", result)
            changes, skipped = await self._compare_outside(repo, s, run) if not remote(run) and not away else ([], {})
            async with repo.session_lock(s.name):
                s = repo.store.by_id(sid) if sid is not None else None
                if s is None or s.agent is None or s.agent.exit_file != exit_file:
                    return
                s.agent.settled = True
                if changes:
                    s.outside_changes.extend(changes[:OUTSIDE_LIMIT])
                    s.notes.append(f"while its agent ran, {len(changes)} file(s) changed outside its worktree "
                                   f"(by the agent or by someone else): {_summary(changes)}")
                repo.store.save(s)
            for other, theirs in self._by_session(changes[:OUTSIDE_LIMIT]).items():
                o = repo.store.get(other)
                if o is not None:
                    o.outside_changes.extend(theirs)
                    o.notes.append(f"while the agent of {s.name} ran, files changed in this worktree: "
                                   f"{_summary(theirs)}; check them before integrating")
                    repo.store.save(o)
            if changes:
                self.emit(repo, "outside_changes", s.name, count=len(changes), changes=changes[:OUTSIDE_LIMIT],
                          not_compared=skipped)
        except Exception:  # noqa: BLE001 a background job: logged, the next sidecar tries again
            log.exception("settling the agent run %s failed", exit_file)

    @staticmethod
    def _by_session(changes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for c in changes:
            if c["session"]:
                out.setdefault(c["session"], []).append(c)
        return out

    async def _outside_state(self, repo: Repo, own: Session) -> dict[str, Any]:
        """The main checkout, the other live worktrees and the git directory, as `_changed` compares them."""
        places = {"main checkout": repo.root}
        for s in repo.store.live():
            if s.id != own.id and s.status in (Status.active, Status.conflicted, Status.integrating):
                places[f"session {s.name}"] = s.worktree
        sem = asyncio.Semaphore(STATUS_CONCURRENCY)

        async def one(path: str) -> dict[str, Fingerprint] | None:
            if not os.path.isdir(path):
                return None
            async with sem:
                try:
                    entries = await git.status_entries(path)
                except ParaError:
                    return None
            return await asyncio.to_thread(_fingerprints, path, entries)

        async def main_checkout() -> dict[str, Fingerprint] | None:
            # An integration into the checkout's branch moves the branch, then the checkout's files:
            # read between the two, the checkout looks as if someone deleted what landed. The
            # target's lock keeps the reading out of that moment.
            branch = await git.symbolic_ref(repo.root, "HEAD")
            async with repo.target_lock(branch) if branch else contextlib.nullcontext():
                return await one(repo.root)

        found = await asyncio.gather(*(main_checkout() if p == repo.root else one(p) for p in places.values()))
        state = {key: {"path": path, "files": files}
                 for (key, path), files in zip(places.items(), found) if files is not None}
        state["git directory"] = {"path": repo.common_dir,
                                  "files": await asyncio.to_thread(_git_dir_fingerprints, repo.common_dir)}
        return state

    async def _record_outside_state(self, repo: Repo, s: Session, exit_file: str) -> None:
        """Before an agent starts: what the places outside its worktree look like."""
        try:
            state = await self._outside_state(repo, s)
            await asyncio.to_thread(_write_private_json, _outside_file(exit_file), state)
        except Exception:  # noqa: BLE001 never a reason not to start the agent; it is only not compared then
            log.exception("could not record the state outside %s", s.worktree)

    async def _compare_outside(self, repo: Repo, s: Session,
                               run: AgentRun) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """What changed outside the agent's worktree since it started. A worktree whose own agent
        ran meanwhile is not compared: its changes are that agent's."""
        if run.exit_file is None:  # only runs with an exit file are settled
            return [], {}
        path = _outside_file(run.exit_file)
        try:
            before = await asyncio.to_thread(lambda: json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            return [], {}
        after = await self._outside_state(repo, s)
        start, end = run.started_at, run.ended_at or time.time()
        busy = {}
        # Every session, not only the live ones: one that ended since `after` was read (integrated
        # meanwhile) was changed by its own agent all the same.
        for o in repo.store.all():
            r = o.agent
            if o.id != s.id and r is not None and r.started_at < end and (r.ended_at or time.time()) > start:
                busy[f"session {o.name}"] = "its own agent ran meanwhile"
        changes = []
        for key, was in before.items():
            now_ = after.get(key)
            if key in busy or now_ is None or now_["path"] != was["path"]:
                continue
            session = key[len("session "):] if key.startswith("session ") else None
            for p, status, prev in _changed(was["files"], now_["files"]):
                changes.append({"agent": s.name, "location": "session" if session else key, "session": session,
                                "path": p, "status": status, "was": prev})
        return changes, {k[len("session "):]: v for k, v in busy.items() if k in before}

    async def report(self, p: ReportParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        s = self._find(repo, p.session, p.cwd)
        task = check_text(p.task, "the status text", STATUS_MAX)
        blocked = check_text(p.blocked, "the blocked reason", STATUS_MAX) if p.blocked and p.blocked.strip() else None
        done = total = None
        if p.todos is not None:
            m = re.fullmatch(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*", p.todos)
            if not m or int(m.group(1)) > int(m.group(2)):
                raise ParaError(Code.invalid_input, f"--todos must look like DONE/TOTAL with DONE <= TOTAL, "
                                f"got {p.todos!r}")
            done, total = int(m.group(1)), int(m.group(2))
        if s.status not in (Status.active, Status.conflicted, Status.integrating):
            raise ParaError(Code.wrong_state, f"session {s.name!r} is {s.status.value}; status reports are for "
                            "sessions at work", session=s.name)
        prev = s.report
        s.report = Report(task=task, tests=p.tests or (prev.tests if prev else "unknown"),
                          todos_done=done if done is not None else (prev.todos_done if prev else None),
                          todos_total=total if total is not None else (prev.todos_total if prev else None),
                          blocked=blocked)
        repo.store.save(s)
        self.emit(repo, "status", s.name, **to_builtins(s.report))
        if remote(s.agent):
            self._harvest_soon(repo, s.name)  # (its status says it did something: bring it home)
        result: dict[str, Any] = {"session": s.name, "report": to_builtins(s.report)}
        messages = await self._take_messages(repo, s.name, "status")  # the agent's status channel
        if messages:
            result["messages"] = messages
        return result

    async def status(self, p: StatusParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        cfg = repo.config(p.env)
        if p.session is not None or (not p.all and self._session_at(repo, os.path.realpath(p.cwd))):
            sessions = [self._find(repo, p.session, p.cwd, history=True)]
        else:
            sessions = [s for s in repo.store.live() if s.status is not Status.cancelled]
        evidence = await asyncio.gather(*(self._evidence(repo, s, cfg) for s in sessions))
        return {"repo": repo.root, "sessions": evidence,
                "plans": [to_builtins(pl) for pl in repo.store.plans() if pl.state == "running"]}

    async def _evidence(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> dict[str, Any]:
        """What the agent says (its report) next to what the sidecar sees for itself."""
        run = s.agent
        agent = None
        activity = [s.created_at, s.updated_at]
        if run is not None:
            alive = run.exit_code is None and not run.lost and (remote(run) or agents.pid_alive(run.pid))
            state = ("running" if alive else "stopped" if run.stopped_at else "lost" if run.lost
                     else "exited" if run.exit_code == 0
                     else "failed" if run.exit_code is not None else "unknown")
            agent = {"profile": run.profile, "mode": run.mode, "pid": run.pid, "state": state,
                     "exit_code": run.exit_code, "started_at": run.started_at, "ended_at": run.ended_at,
                     "log": run.log, "window": run.window, "stops": run.stops, "executor": run.executor,
                     "harvested_commit": run.harvested_commit, "harvested_at": run.harvested_at,
                     **({"host": run.placement["host"]} if run.placement.get("host") else {})}
            activity += [run.started_at, run.ended_at or 0, _mtime(run.log)]
        if s.report:
            activity.append(s.report.updated_at)
        ahead, diffstat = None, None
        if os.path.isdir(s.worktree):
            gitdir = _worktree_gitdir(s.worktree)
            if gitdir:
                activity += [_mtime(os.path.join(gitdir, "index")), _mtime(os.path.join(gitdir, "logs", "HEAD"))]
            try:
                ahead = await git.count(s.worktree, f"{s.base_commit}..HEAD")
                diffstat = await git.out(s.worktree, "diff", "--shortstat", s.base_commit)
            except ParaError:
                pass
        last = max(a for a in activity if a)
        return {"name": s.name, "status": s.status.value, "task": s.task,
                "report": to_builtins(s.report) if s.report else None, "agent": agent, "ahead": ahead,
                "diffstat": diffstat, "last_activity": last,
                "stale": s.status is Status.active and time.time() - last > cfg["agent.stale_after"],
                "plan": s.plan, "integration": s.integration,
                "queue_position": queue_position(repo.store.live(), s) if s.queued else None,
                "unread_messages": sum(1 for m in s.messages if m.read_at is None)}

    async def wait(self, p: WaitParams) -> dict[str, Any]:
        """Block until one of the named sessions (all live ones if none named) changes: its
        status or its agent's end, or any event about it but a progress report, since
        `after_event` (else since now), or until `timeout` seconds pass. Returns the events
        seen and `last_event`, the cursor for the next wait."""
        repo = await self.repo(p.cwd)
        timeout = max(0.0, min(float(p.timeout), 3600.0))
        for name in p.sessions:
            validate_session_name(name)
        names = set(p.sessions)

        def state(s: Session) -> tuple[str, int | None, bool | None]:
            return s.status.value, s.agent.exit_code if s.agent else None, s.agent.lost if s.agent else None

        def snapshot() -> dict[str, tuple[str, int | None, bool | None] | None]:
            rows = {s.name: s for s in repo.store.all()}
            watched = p.sessions or [s.name for s in repo.store.live()]
            return {n: (state(rows[n]) if n in rows else None) for n in watched}

        def relevant(ev: dict[str, Any]) -> bool:
            return (ev["kind"] not in QUIET_KINDS and ev["session"] is not None
                    and (not names or ev["session"] in names))

        unknown = [n for n in p.sessions if n not in {s.name for s in repo.store.all()}]
        if unknown:
            raise ParaError(Code.not_found, f"no session named {', '.join(unknown)}", sessions=unknown)
        cursor = p.after_event if p.after_event is not None else repo.store.last_event_id()
        before = snapshot()
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        while True:
            tick = repo.tick  # before reading: an event emitted after the read sets this one
            while True:
                batch = repo.store.events(events[-1]["id"] if events else cursor, 1000)
                events += batch
                if len(batch) < 1000:
                    break
            after = snapshot()
            changed = sorted({n for n in after if after[n] != before.get(n)}
                             | {e["session"] for e in events if relevant(e)})
            remaining = deadline - time.monotonic()
            if changed or remaining <= 0:
                break
            try:
                await asyncio.wait_for(tick.wait(), remaining)
            except TimeoutError:
                pass
        rows = {s.name: s for s in repo.store.all()}
        return {"changed": changed, "timed_out": not changed,
                "sessions": {n: {"status": rows[n].status.value,
                                 "agent_exit_code": state(rows[n])[1],
                                 "integration": rows[n].integration} for n in before if n in rows},
                "events": events, "last_event": events[-1]["id"] if events else cursor}

    async def diff(self, p: DiffParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        s = self._find(repo, p.session, p.cwd, history=True)
        tip, dirty = await self._session_commit(s)
        tip = tip or await git.resolve(repo.root, f"refs/heads/{s.branch}") or s.head_commit
        if tip is None:
            raise ParaError(Code.not_found, f"session {s.name!r} has no commits to show", session=s.name)
        fork = await git.merge_base(repo.root, s.base_commit, tip) or s.base_commit
        stat = await git.out(repo.root, "diff", "--stat", fork, tip)
        result = {"session": s.name, "base": fork, "commit": tip, "includes_uncommitted": dirty, "stat": stat}
        if not p.stat_only:
            patch = (await git.run(repo.root, "diff", fork, tip)).out
            limit = max(1000, min(p.max_bytes, 5_000_000))
            result["truncated"] = len(patch) > limit
            result["patch"] = patch[:limit]
        return result

    async def plans(self, p: RepoParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        return {"plans": [to_builtins(pl) for pl in repo.store.plans()]}

    async def _dispatch_plan(self, repo: Repo, cfg: dict[str, Any], p: DispatchParams, prof: agents.Profile,
                             mode: str, box: Sandbox | None = None, executor: str = "local") -> dict[str, Any]:
        if p.name is not None:
            raise ParaError(Code.invalid_input, "a plan names its sessions after its task files; drop the name")
        if p.files:
            entries = []
            for f in p.files:
                path = agents.find_task_file(repo.root, p.cwd, f)
                m = agents.TASK_RE.fullmatch(path.name)
                if not m:
                    raise ParaError(Code.invalid_input, f"{path.name} is not named TASK_<n>_<slug>.md")
                entries.append((int(m.group(1)), m.group(2), path))
            entries.sort(key=lambda t: (t[0], t[1]))
            source = ", ".join(str(e[2]) for e in entries)
        else:
            directory = agents.find_task_file(repo.root, p.cwd, p.file)
            # Each entry is checked too: a TASK file may be a symlink pointing out of the repository.
            entries = [(n, slug, agents.find_task_file(repo.root, p.cwd, str(path)))
                       for n, slug, path in agents.plan_files(directory)]
            source = str(directory)
        if len(entries) > MAX_ITEMS:
            raise ParaError(Code.invalid_input, f"a plan may have at most {MAX_ITEMS} tasks; {source} has "
                            f"{len(entries)}: split it into several plans", tasks=len(entries), limit=MAX_ITEMS)
        names: set[str] = set()
        steps: list[PlanStep] = []
        for number, _, path in entries:
            # Read once, now: later steps run this text, not what the file holds when they start
            # (the plan as shown and started is what runs; a swapped file changes nothing).
            text = agents.read_task(path, repo.root)
            name = agents.task_name(path) or "task"
            base_name, n = name, 2
            while name in names or repo.store.get(name) is not None:
                name, n = f"{base_name}-{n}", n + 1
            validate_session_name(name)
            names.add(name)
            if not steps or steps[-1].number != number:
                steps.append(PlanStep(number=number, tasks=[]))
            steps[-1].tasks.append(PlanTask(file=str(path), name=name, text=text))
        async with repo.plan_lock:  # (so _repair_plans never takes this step for an interrupted one)
            plan = repo.store.save_plan(Plan(source=source, steps=steps, agent=prof.name, mode=mode,
                                             profile={"command": prof.command, "headless": prof.headless,
                                                      "skip_permissions": prof.skip_permissions},
                                             workflow=cfg["agent.workflow"],
                                             skip_permissions=p.skip_permissions, base=p.base, sandbox=box,
                                             executor=executor))
            self.emit(repo, "plan_started", None, plan=plan.id, steps=[[t.name for t in st.tasks] for st in steps])
            try:
                await self._start_step(repo, plan, p.cwd, p.env)
            except ParaError as e:
                plan.state, plan.reason = "failed", e.message
                repo.store.save_plan(plan)
                self.emit(repo, "plan_failed", None, plan=plan.id, reason=e.message)
                raise
        return {"plan": to_builtins(plan)}

    async def _start_step(self, repo: Repo, plan: Plan, cwd: str, env: dict[str, str]) -> None:
        cfg = {**repo.config(env), "agent.workflow": plan.workflow}
        # The profile was resolved when the plan was made (the caller's PARA_AGENTS is gone by
        # now); but a project profile whose file is no longer approved (changed, revoked) stops it.
        config.usable(cfg["agents"].get(plan.agent))
        prof = (agents.Profile(plan.agent, **plan.profile) if plan.profile
                else agents.profile(plan.agent, cfg["agents"]))
        step = plan.steps[plan.current]
        started = []
        for t in step.tasks:
            if t.session_id is not None:
                continue  # started before a crash interrupted this step (see _repair_plans)
            text = t.text if t.text is not None else agents.read_task(Path(t.file), repo.root)
            result = await self._dispatch_one(repo, cfg, name=t.name, task=text,
                                              source=t.file, prof=prof, mode=plan.mode,
                                              skip=plan.skip_permissions, base=plan.base, cwd=cwd, env=env,
                                              plan=plan.id, box=plan.sandbox, executor=plan.executor)
            t.session_id, t.state = _made(repo, result["name"]).id, "running"
            repo.store.save_plan(plan)
            started.append(t.name)
        self.emit(repo, "plan_step", None, plan=plan.id, step=step.number, sessions=started)

    async def _repair_plans(self, repo: Repo) -> None:
        """A sidecar killed while a plan step was starting leaves tasks with no session (the
        repair of the interrupted start removed the half-made one), and the plan would wait for
        them forever. Start what is missing, or fail the plan saying why."""
        async with repo.plan_lock:
            for plan in repo.store.plans("running"):
                if plan.current >= len(plan.steps):
                    continue
                step = plan.steps[plan.current]
                missing = [t for t in step.tasks
                           if t.session_id is None or repo.store.by_id(t.session_id) is None]
                if not missing:
                    continue
                reason = None
                for t in missing:
                    if t.session_id is not None:
                        reason = f"the session of task {t.name} no longer exists"
                    elif repo.store.get(t.name) is not None:
                        # Made by the interrupted dispatch, but its agent may never have started.
                        reason = (f"the start of task {t.name} was interrupted by a crash; its session "
                                  f"{t.name} is kept (dispatch the task to it again, or cancel it)")
                    if reason:
                        break
                if reason is None:
                    self.emit(repo, "plan_repaired", None, plan=plan.id, step=step.number,
                              sessions=[t.name for t in missing])
                    try:
                        await self._start_step(repo, plan, repo.root, {})
                        continue
                    except Exception as e:  # noqa: BLE001 whatever stopped it is the plan's failure reason
                        reason = f"could not start {', '.join(t.name for t in missing)} after a crash: " + (
                            e.message if isinstance(e, ParaError) else str(e))
                plan.state, plan.reason = "failed", reason
                for t in missing:
                    if t.session_id is None or repo.store.by_id(t.session_id) is None:
                        t.state = "failed"
                repo.store.save_plan(plan)
                self.emit(repo, "plan_failed", None, plan=plan.id, step=step.number, reason=reason)
        await self._advance_plans(repo)

    async def _advance_plans(self, repo: Repo) -> None:
        """Move every running plan along: next step when the current one is integrated,
        failed when one of its sessions cannot land anymore."""
        async with repo.plan_lock:
            for plan in repo.store.plans("running"):
                step = plan.steps[plan.current]
                failed = None
                for t in step.tasks:
                    s = repo.store.by_id(t.session_id) if t.session_id else None
                    if s is None:
                        continue
                    if s.status is Status.integrated:
                        t.state = "integrated"
                    elif s.status is Status.cancelled:
                        t.state, failed = "failed", f"session {s.name} was cancelled"
                    elif s.agent and (s.agent.lost or s.agent.exit_code is not None) and \
                            s.status in (Status.active, Status.review):
                        t.state = "failed"
                        failed = (f"the agent of {s.name} exited with status {s.agent.exit_code} "
                                  "without integrating" if not s.agent.lost else f"the agent of {s.name} vanished")
                if failed:
                    plan.state, plan.reason = "failed", failed
                    repo.store.save_plan(plan)
                    self.emit(repo, "plan_failed", None, plan=plan.id, step=step.number, reason=failed)
                    continue
                if all(t.state == "integrated" for t in step.tasks):
                    plan.current += 1
                    if plan.current == len(plan.steps):
                        plan.state = "done"
                        repo.store.save_plan(plan)
                        self.emit(repo, "plan_done", None, plan=plan.id)
                        continue
                    repo.store.save_plan(plan)
                    try:
                        await self._start_step(repo, plan, repo.root, {})
                    except ParaError as e:
                        plan.state, plan.reason = "failed", e.message
                        self.emit(repo, "plan_failed", None, plan=plan.id, reason=e.message)
                repo.store.save_plan(plan)
