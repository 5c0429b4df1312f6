"""Session environments: what a new worktree gets before any agent works in it (files copied
from the main checkout, paths linked to it, ports, the `session.setup` hook) and what runs
before it is removed (`session.teardown`). The doing is in workspace.py; this decides when,
with what, and what a failure means.

A setup runs outside the repository lock (it may take minutes) but inside the session's
own lock, with the start still journaled (`Op(kind="start", data={"preparing": ...})`): a
sidecar killed meanwhile finds the journal at its next start, stops what the setup left
running and undoes the start (repair.py), so there is never a half-created session.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from typing import TYPE_CHECKING, Any

from para_rpc import agents, config, git, workspace
from para_rpc.errors import Code, ParaError
from para_rpc.model import Session, Status
from para_rpc.service.core import Repo, ServiceCore, log

# Statuses in which a session keeps its worktree, and so its ports.
PORT_HOLDERS = (Status.active, Status.conflicted, Status.integrating)
PROGRESS_LINES = 200  # setup output lines sent as events; the log has all of them


def setup_log(repo: Repo, name: str) -> str:
    return os.path.join(repo.root, ".para", "logs", f"{name}.setup.log")


def teardown_log(repo: Repo, name: str) -> str:
    return os.path.join(repo.root, ".para", "logs", f"{name}.teardown.log")


def _port_range(cfg: dict[str, Any]) -> range:
    first, last = (int(x) for x in cfg["session.port_range"].split("-"))
    return range(first, last + 1)


class Environment(ServiceCore):
    """Setup, teardown, copied and linked files, ports."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Hooks)
        def _hook_started(self, repo: Repo, s: Session, kind: str, pid: int) -> None: ...
        def _hook_ended(self, s: Session, kind: str, pid: int | None) -> str | None: ...

    def _env_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The environment keys a start uses, the trust gate's refusal raised before anything
        changes (a project file's setup, copy, link or env the user has not approved)."""
        return {k: config.usable(cfg[k]) for k in ("session.setup", "session.copy", "session.link", "session.env")}

    def session_env(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> dict[str, str]:
        """The variables setup, teardown and agents get: who they work for, and where."""
        try:
            extra = dict(config.usable(cfg["session.env"]))
        except ParaError:
            extra = {}  # (a start refused it already; an older session's agent just goes without)
        return {**extra, "PARA_SESSION": s.name, "PARA_WORKTREE": s.worktree, "PARA_REPO": repo.root,
                "PARA_BASE": s.base_branch, "PARA_PORT": str(s.ports[0]) if s.ports else "",
                "PARA_PORTS": " ".join(str(p) for p in s.ports)}

    def _hook_env(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> dict[str, str]:
        env = agents.agent_env(s.name, s.worktree, self.socket)
        env.update(self.session_env(repo, s, cfg))
        return env

    def _allocate_ports(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> None:
        """`session.ports` ports for `s`: the lowest of the range that no session holding a
        worktree has (persisted with it, so a restarted sidecar knows them) and that nothing
        listens on now. The caller holds the repository lock (no two starts pick one port)."""
        n = cfg["session.ports"]
        if n == 0:
            return
        # Every repository this sidecar serves (one per user): two projects' dev servers clash
        # on a port just the same. (No await from here on: no other start can interleave.)
        taken = {p for r in self.repos.values() for x in r.store.live()
                 if x.status in PORT_HOLDERS and not (r is repo and x.id == s.id) for p in x.ports}
        got: list[int] = []
        for port in _port_range(cfg):
            if port not in taken and workspace.port_free(port):
                got.append(port)
                if len(got) == n:
                    s.ports = got
                    return
        raise ParaError(Code.config_error, f"no {n} free port(s) left in session.port_range "
                        f"{cfg['session.port_range']} ({len(taken)} held by live sessions, the rest in use); "
                        "widen the range or end sessions", port_range=cfg["session.port_range"])

    async def _prepare(self, repo: Repo, s: Session, cfg: dict[str, Any], env_cfg: dict[str, Any],
                       keep_on_failure: bool) -> list[str]:
        """Copy, link, exclude, then run the setup in the new worktree (journaled as the
        start's `preparing` phase). Returns warnings; a failed setup raises `setup_failed`
        unless `keep_on_failure`, then it is a warning and the session stays."""
        op = s.op
        if op is not None:
            op.data["preparing"] = True
            repo.store.save(s)
        # Off the event loop: a big file or a big tree to glob must not stall every client.
        copied, w1 = await asyncio.to_thread(workspace.copy_files, repo.root, s.worktree, env_cfg["session.copy"])
        linked, w2 = await asyncio.to_thread(workspace.link_paths, repo.root, s.worktree, env_cfg["session.link"])
        warnings = w1 + w2
        if copied or linked:
            workspace.exclude(await git.git_path(s.worktree, "info/exclude"), copied + linked)
        argv = env_cfg["session.setup"]
        if not argv:
            return warnings
        path = setup_log(repo, s.name)
        sent = 0

        pids: list[int] = []

        def started(pid: int) -> None:
            pids.append(pid)
            self._hook_started(repo, s, "setup", pid)  # journaled: a crash repair stops what is left of it

        def line(text: str) -> None:
            nonlocal sent
            sent += 1
            if sent <= PROGRESS_LINES:
                self.emit(repo, "setup_output", s.name, line=text)

        self.emit(repo, "setup_started", s.name, argv=argv, log=path)
        try:
            run = await workspace.run_hook(argv, s.worktree, self._hook_env(repo, s, cfg), path,
                                           cfg["session.setup_timeout"], started, line)
        finally:
            stopped = self._hook_ended(s, "setup", pids[0] if pids else None)
        ok = run.exit_code == 0 and stopped is None
        self.emit(repo, "setup_finished", s.name, ok=ok, exit_code=run.exit_code, timed_out=run.timed_out, log=path)
        if ok:
            return warnings
        if stopped is not None:  # (--keep-on-failure or not: no one is left to want the session)
            raise ParaError(Code.setup_failed, f"session.setup ({shlex.join(argv)}) was stopped (pid {pids[0]}): "
                            f"{stopped}; the session {s.name!r} was rolled back (worktree and branch removed). "
                            f"Its output is in {path}", session=s.name, log=path, exit_code=run.exit_code,
                            timed_out=False, stopped=stopped, pid=pids[0])
        why = (f"timed out after {cfg['session.setup_timeout']} seconds (session.setup_timeout)" if run.timed_out
               else run.error or f"exited with status {run.exit_code}")
        if keep_on_failure:
            kept = (f"session.setup ({shlex.join(argv)}) {why}; the session was kept (--keep-on-failure); "
                    f"its output is in {path}")
            return [*warnings, kept]
        raise ParaError(Code.setup_failed, f"session.setup ({shlex.join(argv)}) {why} in {s.worktree}; "
                        f"the session {s.name!r} was rolled back (worktree and branch removed). Its output is "
                        f"in {path}; `--keep-on-failure` keeps the session to look into it",
                        session=s.name, log=path, exit_code=run.exit_code, timed_out=run.timed_out)

    async def _teardown(self, repo: Repo, s: Session, cfg: dict[str, Any] | None = None) -> list[str]:
        """Run `session.teardown` in the worktree about to be removed and release the session's
        ports. Never raises: what went wrong is returned as warnings (and logged), since a
        teardown must not keep anyone's work from being saved or a worktree from going."""
        warnings: list[str] = []
        try:
            cfg = cfg if cfg is not None else repo.config({})
            argv = config.usable(cfg["session.teardown"])
        except ParaError as e:
            argv = []
            warnings.append(f"session.teardown was not run: {e.message}")
        d = s.op.data if s.op is not None else {}
        if argv and os.path.isdir(s.worktree) and cfg is not None and not d.get("teardown_done"):
            path = teardown_log(repo, s.name)
            pids: list[int] = []

            def started(pid: int) -> None:
                pids.append(pid)
                self._hook_started(repo, s, "teardown", pid)  # journaled: see repair.py

            try:
                run = await workspace.run_hook(argv, s.worktree, self._hook_env(repo, s, cfg), path,
                                               cfg["session.teardown_timeout"], started)
            except (OSError, ParaError) as e:
                run = workspace.HookRun(None, error=str(e))
            finally:
                self._hook_ended(s, "teardown", pids[0] if pids else None)
            if s.op is not None:
                # Done once: a repair of this operation does not run it again.
                s.op.data["teardown_done"] = True
                repo.store.save(s)
            if run.exit_code != 0:
                why = (f"timed out after {cfg['session.teardown_timeout']} seconds" if run.timed_out
                       else run.error or f"exited with status {run.exit_code}")
                warnings.append(f"session.teardown ({shlex.join(argv)}) {why}; the worktree was removed "
                                f"anyway; its output is in {path}")
            self.emit(repo, "teardown_finished", s.name, ok=run.exit_code == 0, exit_code=run.exit_code, log=path)
        for w in warnings:
            log.warning("%s: %s", s.name, w)
        s.ports = []
        self._pending_teardown.setdefault(s.name, []).extend(warnings)
        return warnings

    def _teardown_warnings(self, s: Session) -> list[str]:
        """The warnings of the teardown an operation ran (for its result), once."""
        return self._pending_teardown.pop(s.name, [])

    async def _refuse_linked(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> None:
        """A session whose branch (or index: integrate commits it) tracks a `session.link` path
        would land a symlink to the main checkout, or the dependencies themselves, on the
        target: refused before anything changes."""
        try:
            paths = config.usable(cfg["session.link"])
        except ParaError:
            return  # links were only ever made once approved
        if not paths:
            return
        tracked: set[str] = set()
        if await git.resolve(repo.root, f"refs/heads/{s.branch}"):
            tracked.update(await git.tracked_in(repo.root, f"refs/heads/{s.branch}", paths))
        if os.path.isdir(s.worktree):
            tracked.update(await git.indexed(s.worktree, paths))
        found = [p for p in paths if any(f == p or f.startswith(p + "/") for f in tracked)]
        if found:
            raise ParaError(Code.wrong_state, f"session {s.name!r} commits {', '.join(found)}, a path para links "
                            "to the main checkout (session.link); remove it from the branch "
                            f"(`git rm -r --cached {found[0]}` in the worktree, then commit) and integrate again",
                            session=s.name, paths=found)
