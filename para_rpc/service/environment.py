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
import contextlib
import os
import shlex
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from para_rpc import agents, config, git, workspace
from para_rpc.errors import Code, ParaError
from para_rpc.model import Op, Session, Status
from para_rpc.service.core import Repo, ServiceCore, _utc_stamp, log
from para_rpc.service.ports import PROGRESS

# Statuses in which a session keeps its worktree, and so its ports.
PORT_HOLDERS = (Status.active, Status.conflicted, Status.integrating)
PROGRESS_LINES = 200  # setup output lines sent as events; the log has all of them


def setup_log(repo: Repo, name: str) -> str:
    return os.path.join(repo.root, ".para", "logs", f"{name}.setup.log")


def teardown_log(repo: Repo, name: str) -> str:
    return os.path.join(repo.root, ".para", "logs", f"{name}.teardown.log")


def fresh_log(path: str) -> str:
    """`path` emptied for a new hook run, the previous run's log kept as `<path>.1` (a start
    of a name used before must not show, or grow on, the old session's output)."""
    if os.path.lexists(path):
        os.replace(path, path + ".1")
    return path


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
        """The whole environment of a hook or an agent: the sidecar's, then the session's
        (`session.env`, PARA_*), then para's bindir first on PATH again: a `session.env` PATH
        replaces the inherited one, but agents and hooks are told to run `para`."""
        env = agents.agent_env(s.name, s.worktree, self.socket)
        own = self.session_env(repo, s, cfg)
        env.update(own)
        if "PATH" in own:
            env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + own["PATH"]
        return env

    def _own_env(self, repo: Repo, s: Session, cfg: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
        """What of `env` para sets for the session (PARA_*, PATH, `session.env`): all a tmux
        window or an editor terminal, which start from their own environment, must be given."""
        keys = set(self.session_env(repo, s, cfg)) | {"PATH"}
        return {k: v for k, v in env.items() if k in keys or k.startswith("PARA_")}

    def _allocate_ports(self, repo: Repo, s: Session, cfg: dict[str, Any]) -> None:
        """`session.ports` ports for `s`: the lowest of the range that no session holding a
        worktree has (persisted with it, so a restarted sidecar knows them) and that nothing
        listens on now. The caller holds the repository lock (no two starts pick one port)."""
        n = cfg["session.ports"]
        if n == 0:
            s.ports = []
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
                       keep_on_failure: bool, undone: str = "worktree and branch removed") -> list[str]:
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
            workspace.exclude(await git.git_path(s.worktree, "info/exclude"), copied + linked, str(s.id))
        # What is the session's own at its excluded paths (a finish warns about anything else there).
        own = s.extra.setdefault("environment", {})
        for key, got in (("copied", copied), ("linked", linked)):
            own[key] = sorted(set(own.get(key, [])) | set(got))
        repo.store.save(s)
        argv = env_cfg["session.setup"]
        if not argv:
            return warnings
        path = fresh_log(setup_log(repo, s.name))
        sent = 0

        pids: list[int] = []

        def started(pid: int) -> None:
            pids.append(pid)
            self._hook_started(repo, s, "setup", pid)  # journaled: a crash repair stops what is left of it

        progress = PROGRESS.get()

        def line(text: str) -> None:
            nonlocal sent
            sent += 1
            if sent <= PROGRESS_LINES:
                self.emit(repo, "setup_output", s.name, line=text)
                if progress is not None:
                    progress(text)
            elif sent == PROGRESS_LINES + 1 and progress is not None:
                progress(f"(more output in {path})")

        self.emit(repo, "setup_started", s.name, argv=argv, log=path)
        if progress is not None:
            progress(f"session.setup of {s.name}: {shlex.join(argv)}")
        try:
            run = await workspace.run_hook(argv, s.worktree, self._hook_env(repo, s, cfg), path,
                                           cfg["session.setup_timeout"], started, line)
        finally:
            stopped = self._hook_ended(s, "setup", pids[0] if pids else None)
        ok = run.exit_code == 0 and stopped is None
        if progress is not None:
            progress(f"session.setup of {s.name}: " + ("done" if ok else "failed") + f" (log: {path})")
        self.emit(repo, "setup_finished", s.name, ok=ok, exit_code=run.exit_code, timed_out=run.timed_out, log=path)
        broke = await self._setup_broke(repo, s) if ok else None
        if ok and broke is None:
            return warnings
        if stopped is not None:  # (--keep-on-failure or not: no one is left to want the session)
            raise ParaError(Code.setup_failed, f"session.setup ({shlex.join(argv)}) was stopped (pid {pids[0]}): "
                            f"{stopped}; the session {s.name!r} was rolled back ({undone}). "
                            f"Its output is in {path}", session=s.name, log=path, exit_code=run.exit_code,
                            timed_out=False, stopped=stopped, pid=pids[0])
        why = broke or (f"timed out after {cfg['session.setup_timeout']} seconds (session.setup_timeout)"
                        if run.timed_out else run.error or f"exited with status {run.exit_code}")
        if broke is not None and not os.path.isdir(s.worktree):
            keep_on_failure = False  # nothing left to keep
        if keep_on_failure:
            kept = (f"session.setup ({shlex.join(argv)}) {why}; the session was kept (--keep-on-failure); "
                    f"its output is in {path}")
            return [*warnings, kept]
        raise ParaError(Code.setup_failed, f"session.setup ({shlex.join(argv)}) {why} in {s.worktree}; "
                        f"the session {s.name!r} was rolled back ({undone}). Its output is "
                        f"in {path}; `--keep-on-failure` keeps the session to look into it",
                        session=s.name, log=path, exit_code=run.exit_code, timed_out=run.timed_out)

    async def _prepare_reopened(self, repo: Repo, s: Session, cfg: dict[str, Any], env_cfg: dict[str, Any],
                                keep_on_failure: bool, kind: str, before: Status, ports: list[int],
                                archive: str | None) -> list[str]:
        """resume/recover gave `s` its worktree again: it gets what a start gives one (copies,
        links, excludes, ports, the setup), journaled like a start's preparing phase. A failed
        setup puts the session back as it was (`before`, its `ports`, the branch archived again
        as `archive` for a recover), the worktree removed again after anything in it was saved
        under a backup ref, unless `keep_on_failure`."""
        s.op = Op(kind=kind)
        repo.store.save(s)
        undone = (f"the worktree removed again, the branch archived again as {archive}, the session cancelled"
                  if archive else f"the worktree removed again, the session {before.value} as before")
        try:
            warnings = await self._prepare(repo, s, cfg, env_cfg, keep_on_failure, undone)
        except BaseException:
            await self._undo_reopen(repo, s, before, ports, archive)
            raise
        s.op = None
        repo.store.save(s)
        return warnings

    async def _undo_reopen(self, repo: Repo, s: Session, before: Status, ports: list[int],
                           archive: str | None) -> None:
        wt = (await self._worktree_state(repo)).get(os.path.realpath(s.worktree))
        if wt is not None and not wt.prunable and os.path.isdir(s.worktree) and await git.status(s.worktree):
            # Only the setup wrote there yet, but nothing a worktree holds goes unsaved.
            snap = await git.snapshot(s.worktree, f"para: the worktree of {s.name} as a failed session.setup left it")
            ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-setup-failed", snap)
            s.notes.append(f"what the failed session.setup left in the worktree was saved under {ref}")
        async with repo.lock:
            if wt is not None and os.path.isdir(s.worktree):
                await git.remove_worktree(repo.root, s.worktree)
            await git.prune_worktrees(repo.root)
            if (archive and await git.branch_exists(repo.root, s.branch)
                    and not await git.branch_exists(repo.root, archive)):
                await git.rename_branch(repo.root, s.branch, archive)
                s.archived_branch = archive
        s.status, s.ports, s.op = before, ports, None
        repo.store.save(s)

    async def _setup_broke(self, repo: Repo, s: Session) -> str | None:
        """What a setup that exited 0 did to the session itself, or None: an agent started in a
        missing worktree, or on another branch, would work where no finish looks."""
        if not os.path.isdir(s.worktree):
            return f"exited with status 0 but removed the worktree {s.worktree}"
        wt = (await self._worktree_state(repo)).get(os.path.realpath(s.worktree))
        if wt is None or wt.prunable:
            return f"exited with status 0 but the worktree {s.worktree} is no longer registered with git"
        if wt.branch != s.branch:
            where = f"branch {wt.branch}" if wt.branch else f"a detached HEAD at {(wt.head or '')[:10]}"
            return f"exited with status 0 but moved HEAD off the session branch {s.branch} (to {where})"
        return None

    async def _teardown(self, repo: Repo, s: Session, cfg: dict[str, Any] | None = None) -> list[str]:
        """Run `session.teardown` in the worktree about to be removed (the session's ports are
        released where its status changes, also when it had no worktree left). Never raises: what went wrong is returned as warnings (and logged), since a
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
                fresh_log(path)
                async with self._thawed(repo, s):
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
        if os.path.isdir(s.worktree):
            try:
                warnings += await self._save_excluded(repo, s)
            except (OSError, ParaError) as e:
                warnings.append(f"files at the paths para excludes (session.copy/session.link) could not be "
                                f"checked or saved: {e}")
        for w in warnings:
            log.warning("%s: %s", s.name, w)
        self._pending_teardown.setdefault(s.name, []).extend(warnings)
        return warnings

    def _exclude_file(self, repo: Repo) -> str:
        return os.path.join(repo.common_dir, "info", "exclude")

    async def _save_excluded(self, repo: Repo, s: Session) -> list[str]:
        """Before the worktree goes: files at paths para's exclude lines hide (they are shared
        by every worktree) that are not this session's own copies or links, written by its
        agent or by hand, would be neither committed nor saved. Saved under a backup ref,
        with a warning."""
        paths = workspace.excluded_by_para(self._exclude_file(repo))
        own = s.extra.get("environment") or {}
        stray = await asyncio.to_thread(workspace.not_own, repo.root, s.worktree, paths,
                                        own.get("copied", []), own.get("linked", []))
        if stray:
            tracked = set(await git.indexed(s.worktree, stray))
            stray = [p for p in stray if p not in tracked]  # (a tracked file is committed as usual)
        if not stray:
            return []
        commit = await git.snapshot_paths(s.worktree, stray, f"para: files of {s.name} at paths para excludes")
        ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-excluded", commit)
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        one = len(stray) == 1
        return [(f"{shown} in the worktree {'is' if one else 'are'} at a path para excludes from git "
                 f"(session.copy/session.link of some session) but not a copy or link para made for this session, "
                 f"so no commit holds {'it' if one else 'them'}: saved under {ref}")]

    def _release(self, repo: Repo, s: Session) -> None:
        """A session that no longer has a worktree: its ports go, and so do the exclude lines
        no session with a worktree needs any more. (Called where its status changes, also
        when its worktree was gone before, so nothing depends on a teardown having run.)"""
        s.ports = []
        live = {str(x.id) for x in repo.store.live() if x.status in PORT_HOLDERS and x.id != s.id}
        try:
            workspace.unexclude(self._exclude_file(repo), live)
        except OSError as e:
            log.warning("%s: exclude lines not cleaned up: %s", s.name, e)

    @contextlib.asynccontextmanager
    async def _thawed(self, repo: Repo, s: Session) -> AsyncIterator[None]:
        """The agent processes `_agent_frozen` holds run again while the teardown runs (it is
        there to talk to and stop the servers the agent started: frozen, they would not answer
        until teardown_timeout), then are frozen again, with whatever they started meanwhile.
        The callers run the teardown before they save the worktree, so nothing written
        meanwhile is lost."""
        held = self._frozen_now.get(s.name)
        run = s.agent
        if held is None or not held[0] or run is None or not run.pid or not run.exit_file:
            yield
            return
        stopped, spare = held
        await asyncio.to_thread(agents.thaw_run, stopped)
        try:
            yield
        finally:
            stopped.update(await asyncio.to_thread(agents.freeze_run, run.pid, run.exit_file, run.started_at, spare))
            self._journal_frozen(repo, s, stopped)

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
