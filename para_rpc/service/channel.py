"""Session-bound channels: the only way an agent (sandboxed or not, on any executor) reaches
the sidecar.

The sidecar's own socket serves every method of every session to whoever connects as the
user. An agent given that socket could dispatch agents, act on other sessions, or
`para config set integrate.check ...` and have the unconfined sidecar run it. So every
agent gets instead a socket of its own session (`<sidecar socket dir>/bound/<random>/sock`,
in a 0700 directory, the socket 0600) and a token (32 random bytes, in its environment as
PARA_TOKEN; only its SHA-256 is stored). What may be asked on it (that session's reads,
reports, finish/integrate/continue/abort/wait, nothing else, and only after the token) is
decided in one place, the transport's gate (server/bound.py), before anything runs.

The registry (`<bound>/<random>.json`, next to the directory the agent sees) lets a restarted
sidecar bind the sockets of live sessions again at the same paths, which the agents hold in
their environment; a session that ended loses its socket and its registry entry.

The executor makes that socket reachable where the agent runs (`Executor.bind`: the same
path locally; on another machine a forwarded one), so every executor shares this Gate.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import msgspec

from para_rpc import git, runtime, sandbox
from para_rpc.errors import Code, ParaError
from para_rpc.model import AgentRun, Binding, Sandbox, Session, Status
from para_rpc.service.core import Repo, ServiceCore, log


def _created_git_dir(common_dir: str, worktree: str) -> str | None:
    """For a session recorded before para kept its git dir: the one entry of
    `<common>/worktrees/` whose `gitdir` file names this worktree (more than one: none)."""
    found = []
    target = os.path.realpath(os.path.join(worktree, ".git"))
    for entry in Path(common_dir, "worktrees").glob("*/gitdir"):
        with contextlib.suppress(OSError):
            if os.path.realpath(entry.read_text().strip()) == target:
                found.append(str(entry.parent))
    return found[0] if len(found) == 1 else None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Channels(ServiceCore):
    """Opening, closing and restoring the session-bound sockets (the transport listens on
    them through `Ports.bind_channel`)."""

    def _bound_root(self) -> Path:
        return Path(self.socket).parent / "bound"

    async def _open_channel(self, repo: Repo, s: Session) -> tuple[str, str]:
        """A new socket and token for session `s`: (socket path, token)."""
        root = runtime.ensure_private_dir(self._bound_root())
        ident = secrets.token_hex(8)
        directory = runtime.ensure_private_dir(root / ident)
        token = secrets.token_urlsafe(32)
        binding = Binding(socket=str(directory / "sock"), root=repo.root, session=s.name,
                          token_sha256=token_digest(token))
        runtime.write_private(root / f"{ident}.json", msgspec.json.encode(binding).decode())
        try:
            await self.ports.bind_channel(binding)
        except BaseException:
            self._remove_channel(binding.socket)
            raise
        return binding.socket, token

    async def _sandboxed(self, repo: Repo, s: Session, run: AgentRun, box: Sandbox, argv: list[str],
                         env: dict[str, str], cfg: dict[str, Any]) -> list[str]:
        """The agent's argv under bubblewrap, with its session-bound socket in `env` (and on
        `run`, so the socket goes when the session ends)."""
        bwrap = sandbox.find_bwrap(cfg["agent.bwrap"])
        await sandbox.probe(bwrap)
        common = os.path.realpath(repo.common_dir)
        git_dir = self._checked_git_dir(repo, s)
        # Its git writes objects into a directory of its own; the common store stays read-only.
        objects = git.open_object_dir(common, s.name)
        writable = sandbox.writable_git_paths(git_dir, common, s.branch)
        await self._bind_agent(repo, s, run, env)
        run.sandbox = box
        socket = run.channel or ""
        home = os.path.expanduser("~")
        package = os.path.dirname(os.path.dirname(os.path.abspath(sandbox.__file__)))
        return sandbox.argv(
            bwrap, argv, worktree=s.worktree, writable=writable, pinned=sandbox.pinned_git_files(git_dir),
            objects=(objects, os.path.join(common, "objects")),
            readable=[repo.root, repo.common_dir, home, sys.prefix, sys.base_prefix,
                      os.path.dirname(os.path.realpath(sys.executable)), package],
            runtime_dir=os.path.dirname(self.socket), channel_dir=os.path.dirname(socket), network=box.network,
            env=env)

    async def _bind_agent(self, repo: Repo, s: Session, run: AgentRun, env: dict[str, str]) -> None:
        """A new bound socket and token for the run about to start, in `env` (PARA_SOCKET as
        the agent's executor makes it reachable, PARA_TOKEN) and on `run` (so the socket goes
        when the session ends)."""
        if s.agent is not None and s.agent.channel:
            self._close_channel(s)  # a relaunch: a new token, the old one dies with its socket
        socket, token = await self._open_channel(repo, s)
        run.channel = socket
        try:
            path = await self._executor(repo, run.executor).bind(run, socket)
        except BaseException:
            self._close_channel(msgspec.structs.replace(s, agent=run))
            raise
        env.update(PARA_SOCKET=path, PARA_TOKEN=token)

    def _checked_git_dir(self, repo: Repo, s: Session) -> str:
        """The git dir a sandbox of `s` may write: the one git made with the worktree (never
        the one the worktree's `.git` file names now: the agent can rewrite that file to name
        any directory, e.g. the user's home), directly under the common dir's `worktrees/`,
        and still the one the worktree uses. Anything else refuses the launch before anything
        starts."""
        common = os.path.realpath(repo.common_dir)
        if s.git_dir is None:
            s.git_dir = _created_git_dir(common, s.worktree)
            if s.git_dir is not None:
                git.pin(s.worktree, s.git_dir, common)
                repo.store.save(s)
        git_dir = s.git_dir
        if git_dir is None or os.path.dirname(git_dir) != os.path.join(common, "worktrees"):
            raise ParaError(Code.wrong_state, f"cannot tell which git directory para made for {s.worktree}; the "
                            "agent was not started sandboxed. Recreate the session's worktree (`para cancel` "
                            "keeps its branch) before launching it again", session=s.name)
        if not git.names_git_dir(s.worktree, git_dir):
            raise ParaError(Code.wrong_state, f"{s.worktree}/.git no longer names the git directory para made "
                            f"for it ({git_dir}): something in the worktree rewrote it, so its agent was not "
                            "started. Restore it with `git worktree repair` from the main checkout after "
                            "checking what changed", session=s.name, git_dir=git_dir)
        return git_dir

    def _remove_channel(self, socket: str) -> None:
        directory = Path(socket).parent
        if directory.parent != self._bound_root():
            return  # not one of ours: never remove what a record merely names
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory.parent / f"{directory.name}.json")
        shutil.rmtree(directory, ignore_errors=True)

    def _close_channel(self, s: Session) -> None:
        """The session ended: its socket goes (connections already open finish their request)."""
        run = s.agent
        if run is None or not run.channel:
            return
        self.ports.unbind_channel(run.channel)
        self._remove_channel(run.channel)
        run.channel = None

    async def restore_channels(self) -> int:
        """At sidecar start: listen again on the bound sockets of live sessions; forget the
        entries of sessions that ended meanwhile. Returns how many were bound."""
        root = self._bound_root()
        if not root.is_dir():
            return 0
        bound = 0
        for entry in sorted(root.glob("*.json")):
            try:
                binding = msgspec.json.decode(entry.read_bytes(), type=Binding)
                repo = await self.repo(binding.root)
                s = repo.store.get(binding.session)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError, ParaError) as e:
                log.warning("bound socket %s not restored: %s", entry, getattr(e, "message", e))
                continue  # (a repository that is away now may come back: its entry stays)
            if (s is None or s.status in (Status.integrated, Status.cancelled) or s.agent is None
                    or s.agent.channel != binding.socket):
                self._remove_channel(binding.socket)
                continue
            try:
                await self.ports.bind_channel(binding)
                bound += 1
            except (OSError, ParaError) as e:
                log.warning("bound socket %s not restored: %s", binding.socket, getattr(e, "message", e))
                continue
            if s.agent.executor != "local" and s.agent.placement:
                # Its host's forwarding died with the last sidecar's connection: dialled again
                # in the background (a host that is away must not hold up this start).
                self._spawn(self._rebind_remote(repo, s.name, binding.socket))
        return bound

    async def _rebind_remote(self, repo: Repo, name: str, socket: str) -> None:
        try:
            s = repo.store.get(name)
            if s is None or s.agent is None or s.agent.channel != socket:
                return
            await self._executor(repo, s.agent.executor).bind(s.agent, socket)
            log.info("%s: its socket is served on executor %s again", name, s.agent.executor)
        except Exception:  # noqa: BLE001 logged; the agent's `para` fails until a later start re-binds
            log.exception("re-binding the socket of %s on its host failed", name)
