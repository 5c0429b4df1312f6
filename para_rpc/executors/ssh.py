"""The `ssh` executor's connection: the sidecar dials the host (the host never needs a route
or a credential back), with strict host keys (the configured known_hosts file only: no trust
on first use) and no agent forwarding, and talks to para on the host through one constant
command, `<python> -m para_rpc.worker`, with the request as JSON on its stdin (worker.py).

asyncssh comes with `para_rpc[ssh]` and is imported only when an SSH executor is used."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from para_rpc import PROTOCOL_VERSION, __version__, git
from para_rpc.errors import Code, ParaError
from para_rpc.executors import (
    REMOTE_PROMPT_FILE,
    REMOTE_WORKTREE,
    EditorLauncher,
    LaunchSpec,
    RunState,
    Started,
)
from para_rpc.model import AgentRun

CONNECT_TIMEOUT = 20.0
CALL_TIMEOUT = 120.0
# A partition does not reset a connection: it hangs. Keepalives end a dead one (after about
# interval x count seconds), and every request has a bound, so nothing waits on it for ever.
KEEPALIVE_INTERVAL = 10.0
KEEPALIVE_COUNT = 3
# A worker's answer is a line of JSON and a payload: at most this (a log pull asks 1 MiB), but a
# snapshot's, whose bundle is the agent's work (None: no cap).
ANSWER_MAX = 64 << 20
ANSWER_CAP: dict[str, int | None] = {"snapshot": None}
POLL_TIMEOUT = 10.0   # a poll (and its dial) at most; a run counts as lost only after `lost_after`
POLL_TIMEOUT_MIN = 5.0  # a busy host (or this busy machine) may take seconds: slow is not unreachable
LOST_AFTER = 60       # the entry's default (config.py)


def worker_command(entry: dict[str, Any]) -> str:
    """The one remote command line: the configured python (the user's own setting, quoted) and
    a fixed module. Requests never go into it."""
    return shlex.join([entry["python"], "-m", "para_rpc.worker"])


def _where(name: str, entry: dict[str, Any]) -> str:
    user = f"{entry['user']}@" if entry["user"] else ""
    return f"executor {name} ({user}{entry['host']}:{entry['port']})"


async def connect(name: str, entry: dict[str, Any], timeout: float = CONNECT_TIMEOUT) -> Any:
    try:
        import asyncssh
    except ImportError:
        raise ParaError(Code.config_error, f"{_where(name, entry)} needs asyncssh: "
                        "pip install 'para_rpc[ssh]'", executor=name) from None
    asyncssh.set_log_level(logging.WARNING)  # (its INFO is a line per channel: the sidecar log's, not ours)
    known = os.path.expanduser(entry["known_hosts"])
    if not os.path.isfile(known):
        raise ParaError(Code.config_error, f"{_where(name, entry)}: its known_hosts file {known} does not exist "
                        "(para never trusts a host key on first use)", executor=name)
    options: dict[str, Any] = {"port": entry["port"], "known_hosts": known, "agent_forwarding": False,
                               "connect_timeout": timeout, "keepalive_interval": KEEPALIVE_INTERVAL,
                               "keepalive_count_max": KEEPALIVE_COUNT, "config": []}
    if entry["user"]:
        options["username"] = entry["user"]
    if entry["identity_file"]:
        options["client_keys"] = [os.path.expanduser(entry["identity_file"])]
    try:
        return await asyncssh.connect(entry["host"], **options)
    except asyncssh.HostKeyNotVerifiable as e:
        raise ParaError(Code.config_error, f"{_where(name, entry)}: its host key is not the one in {known} "
                        f"({e.reason}); nothing was run there. If the host was really re-keyed, check the new "
                        "fingerprint and replace its line in that file", executor=name) from None
    except asyncssh.PermissionDenied as e:
        raise ParaError(Code.config_error, f"{_where(name, entry)} refused the login: {e.reason}",
                        executor=name) from None
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise ParaError(Code.config_error, f"cannot connect to {_where(name, entry)}: {str(e) or type(e).__name__}",
                        executor=name, unreachable=True) from None


async def call(conn: Any, name: str, entry: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """One worker request on `conn`: its JSON answer, or config_error saying what the host lacks."""
    import asyncssh

    try:
        proc = await conn.run(worker_command(entry), input=json.dumps(request), check=False,
                              timeout=CALL_TIMEOUT)
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise ParaError(Code.config_error, f"{_where(name, entry)}: the worker did not answer: {e}",
                        executor=name) from None
    out = str(proc.stdout or "")
    try:
        answer = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "error" in answer:
        why = answer["error"] if isinstance(answer, dict) else str(proc.stderr or out or "").strip()[-500:]
        raise ParaError(Code.config_error, f"{_where(name, entry)}: `{worker_command(entry)}` failed "
                        f"(exit {proc.exit_status}): {why or 'no output'}. The host needs python3 >= 3.11 "
                        "with para installed (pip install para_rpc) and git", executor=name)
    return answer


async def check(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Connect, ask the worker its versions: {"para", "protocol", "python", "git"}; a para of
    another version is version_mismatch, a host without git config_error."""
    conn = await connect(name, entry)
    try:
        got = await call(conn, name, entry, {"op": "check"})
    finally:
        conn.close()
    if got.get("para") != __version__ or got.get("protocol") != PROTOCOL_VERSION:
        raise ParaError(Code.version_mismatch, f"{_where(name, entry)} has para {got.get('para')} (protocol "
                        f"{got.get('protocol')}); this sidecar is {__version__} (protocol {PROTOCOL_VERSION}): "
                        "install the same version there", executor=name, worker=got)
    if not got.get("git"):
        raise ParaError(Code.config_error, f"{_where(name, entry)} has no git on PATH", executor=name)
    return {k: got.get(k) for k in ("para", "protocol", "python", "git")}


# ---- the executor --------------------------------------------------------------------------

# Exec channels open at once on one connection: OpenSSH refuses sessions beyond MaxSessions
# (10 by default), and the forwarded sockets of the agents need none.
MAX_CHANNELS = 8
_REPO_ID = re.compile(r"[^a-z0-9._-]+")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # (what a worker's answer may name: a commit, by its id)


def repo_id(root: str) -> str:
    """The worker's name for a local repository: readable, and unique per repository path."""
    top = os.path.basename(os.path.realpath(root)) or "repo"
    slug = _REPO_ID.sub("-", top.lower()).strip("-.")[:40] or "repo"
    digest = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


class Ssh:
    """Agents on an SSH host. One connection per executor, dialled on first use and reused by
    every session placed there; the worker does the work on the host (worker.py), one short
    exec per request."""

    remember_refs = True  # one cache per host and repository, kept between dispatches

    def __init__(self, name: str, entry: dict[str, Any]) -> None:
        self.name = name
        self.entry = entry
        self._conn: Any = None
        self._dialing = asyncio.Lock()
        self._channels = asyncio.Semaphore(MAX_CHANNELS)
        self._listeners: dict[str, Any] = {}   # remote socket path -> its forwarding
        self._binds: dict[str, str] = {}       # remote socket path -> the local bound socket it serves
        self._host_refs: dict[str, dict[str, Any]] = {}  # repo id -> its cache's refs, as the host last said
        self._polls: list[tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = []  # this round's
        self._poll_tasks: set[asyncio.Task[None]] = set()

    def where(self) -> str:
        return _where(self.name, self.entry)

    def lost_after(self) -> float:
        return float(self.entry.get("lost_after") or LOST_AFTER)

    def host(self) -> str:
        """Where its agents run, for the placement and stop records."""
        return str(self.entry["host"])

    async def connection(self, timeout: float = CONNECT_TIMEOUT) -> Any:
        async with self._dialing:
            if self._conn is None or self._conn.is_closed():
                self._listeners.clear()  # (they died with the connection)
                self._host_refs.clear()  # (the host may have been wiped meanwhile: asked again)
                conn = await connect(self.name, self.entry, timeout)
                self._conn = conn
                # A host that answers again after a cut (keepalives ended the old connection):
                # its agents' sockets are served again, so their `para` works as before.
                for remote, socket in list(self._binds.items()):
                    try:
                        await self._forward(conn, remote, socket)
                    except ParaError as e:
                        logging.getLogger("para_rpc").warning("%s", e.message)
            return self._conn

    async def _forward(self, conn: Any, remote: str, socket: str) -> None:
        import asyncssh

        try:
            try:
                self._listeners[remote] = await conn.forward_remote_path(remote, socket)
            except asyncssh.ChannelListenError:
                # A socket file left by a connection that died (a sidecar killed, a network cut):
                # sshd does not replace it. It is ours, in our 0700 directory under root.
                async with conn.start_sftp_client() as sftp:
                    await sftp.remove(remote)
                self._listeners[remote] = await conn.forward_remote_path(remote, socket)
        except (OSError, asyncssh.Error) as e:
            raise ParaError(Code.config_error, f"{self.where()}: cannot serve the session's socket {remote} "
                            f"there: {e}", executor=self.name) from None

    async def request(self, op: str, payload: bytes = b"", *, timeout: float | None = None,
                      **fields: Any) -> tuple[dict[str, Any], bytes]:
        """One worker request: (its answer, the bytes that followed it). A worker error is a
        ParaError with the worker's code; a host that cannot be reached, config_error with
        `unreachable` in its data. `timeout` bounds the whole request, its dial included."""
        head = json.dumps({"op": op, **fields, **({"payload": len(payload)} if payload else {})}).encode()
        if timeout is None:
            out, err, status = await self._exec(op, head + b"\n" + payload)
        else:
            try:
                out, err, status = await asyncio.wait_for(self._exec(op, head + b"\n" + payload), timeout)
            except TimeoutError:
                raise ParaError(Code.config_error, f"{self.where()}: no answer to {op} within {timeout:g} s",
                                executor=self.name, unreachable=True) from None
        line, _, rest = out.partition(b"\n")
        try:
            answer = json.loads(line) if line.strip() else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            why = err.decode("utf-8", "replace").strip()[-500:] or "no answer"
            raise ParaError(Code.config_error, f"{self.where()}: `{worker_command(self.entry)}` failed on {op} "
                            f"(exit {status}): {why}. The host needs python3 >= 3.11 with para "
                            "installed (the same version) and git", executor=self.name)
        if "error" in answer:
            code = Code.__members__.get(str(answer.get("code")), Code.config_error)
            raise ParaError(code, f"{self.where()}: {answer['error']}", executor=self.name, op=op)
        size = answer.get("payload") or 0
        if not isinstance(size, int) or size < 0 or len(rest) < size:
            raise ParaError(Code.config_error, f"{self.where()}: the worker's answer to {op} was cut short "
                            f"({len(rest)} of {size} bytes)", executor=self.name)
        return answer, rest[:size]

    async def _exec(self, op: str, data: bytes) -> tuple[bytes, bytes, int | None]:
        """The transport: the worker command run once with `data` on its stdin; (stdout,
        stderr, exit status). Another executor carrying the same requests overrides this
        (k8s.py: the pod's exec stream)."""
        import asyncssh

        conn = await self.connection()
        try:
            async with self._channels:
                proc = await conn.create_process(worker_command(self.entry), encoding=None)
                try:
                    proc.stdin.write(data)
                    proc.stdin.write_eof()
                    reading = asyncio.gather(_read_at_most(proc.stdout, ANSWER_CAP.get(op, ANSWER_MAX)),
                                             _read_at_most(proc.stderr, ANSWER_MAX))
                    # (cut short by a timeout, it ends with the cancellation: seen here, not logged as lost)
                    reading.add_done_callback(lambda f: f.cancelled() or f.exception())
                    out, err = await asyncio.wait_for(reading, CALL_TIMEOUT)
                    await proc.wait()
                finally:
                    proc.close()
        except ParaError as e:  # (an answer past its cap)
            raise ParaError(Code.config_error, f"{self.where()}: {op}: {e.message}", executor=self.name) from None
        except (OSError, asyncssh.Error, TimeoutError) as e:
            raise ParaError(Code.config_error, f"{self.where()}: the worker did not answer {op}: "
                            f"{str(e) or type(e).__name__}", executor=self.name, unreachable=True) from None
        return bytes(out), bytes(err), proc.exit_status

    def _remember_refs(self, rid: str, answer: dict[str, Any]) -> None:
        refs = answer.get("refs")
        if self.remember_refs and isinstance(refs, dict):
            self._host_refs[rid] = refs

    def _session(self, run: AgentRun) -> dict[str, Any]:
        p = run.placement
        return {"root": self.entry["root"], "repo": p["repo"], "session": p["session"]}

    # -- placing an agent

    async def _receive_tip(self, spec: LaunchSpec, rid: str, tip: str) -> list[str]:
        """The session's tip into the host's cache, as a bundle of what it lacks; the commits of
        the cache this repository has. What the cache has is taken from its last answer (one
        request fewer per dispatch) and asked again when that was stale (the bundle then needs
        commits the cache lacks, and the worker refuses it)."""
        known = self._host_refs.get(rid) if self.remember_refs else None
        remembered = known is not None
        while True:
            if known is None:
                got, _ = await self.request("refs", root=self.entry["root"], repo=rid)
                known = dict(got.get("refs") or {})
            have = await git.commits_present(spec.repo_root, [v for v in known.values() if isinstance(v, str)])
            bundle = b"" if tip in have else await git.bundle(spec.repo_root, f"refs/heads/{spec.branch}",
                                                               exclude=have)
            try:
                got, _ = await self.request("receive", bundle, root=self.entry["root"], repo=rid,
                                            refs={f"refs/para/base/{spec.session}": tip})
            except ParaError as e:
                if remembered and e.code is Code.invalid_input:
                    known, remembered = None, False
                    continue
                raise
            self._remember_refs(rid, got)
            return have

    async def prepare(self, spec: LaunchSpec) -> dict[str, Any]:
        """Code in (the branch's objects the worker's cache lacks, as a bundle), then the
        session's worktree there at the branch's tip."""
        rid = repo_id(spec.repo_root)
        root = self.entry["root"]
        tip = await git.out(spec.repo_root, "rev-parse", "--verify", f"refs/heads/{spec.branch}^{{commit}}")
        have = await self._receive_tip(spec, rid, tip)
        checkpoint = await git.resolve(spec.repo_root, spec.checkpoint) if spec.checkpoint else None
        if checkpoint:
            # (the checkpoint's own objects, on top of the tip the first bundle sent)
            extra = await git.bundle(spec.repo_root, spec.checkpoint, exclude=[*have, tip])
            got, _ = await self.request("receive", extra, root=root, repo=rid,
                                        refs={f"refs/para/restore/{spec.session}": checkpoint})
            self._remember_refs(rid, got)
        restore: dict[str, Any] = {"checkpoint": checkpoint} if checkpoint else {}
        got, _ = await self.request("prepare", root=root, repo=rid, session=spec.session, branch=spec.branch,
                                    commit=tip, files=spec.files, **restore)
        return {"host": self.host(), "repo": rid, "session": spec.session, "branch": spec.branch,
                "local": spec.repo_root, "base": tip, "worktree": got["worktree"], "run_dir": got.get("run_dir"),
                "prompt_file": got["prompt_file"], "socket": got["socket"], "home": got.get("home"),
                **({"restored": checkpoint} if got.get("restored") else {})}

    def _env(self, run: AgentRun, spec: LaunchSpec) -> dict[str, str]:
        """The agent's whole environment on the host: para's variables, PATH with the worker's
        python first, HOME, and of the sidecar's own environment only the names the user
        allowed (`env_passthrough`): nothing else of this machine travels."""
        p = run.placement
        python = self.entry["python"]
        path = "/usr/local/bin:/usr/bin:/bin"
        if os.path.isabs(python):
            path = os.path.dirname(python) + ":" + path
        env = {"PARA_SESSION": spec.session, "PARA_WORKTREE": p["worktree"], "PARA_SOCKET": p["socket"],
               "PARA_TOKEN": spec.env.get("PARA_TOKEN", ""), "PATH": path}
        home = p.get("home") or _home_of(p["worktree"], self.entry["root"], spec.session, p["repo"])
        if home:
            env["HOME"] = home
        for name in self.entry["env_passthrough"]:
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _argv(self, run: AgentRun, argv: list[str]) -> list[str]:
        p = run.placement
        out = [a.replace(REMOTE_WORKTREE, p["worktree"]).replace(REMOTE_PROMPT_FILE, p["prompt_file"])
               for a in argv]
        if out and out[0] == sys.executable:
            out[0] = self.entry["python"]  # (the scripted profile: the host's python, with para)
        return out

    async def start(self, run: AgentRun, spec: LaunchSpec, editor: EditorLauncher | None) -> Started:
        prompt = await asyncio.to_thread(Path(spec.prompt_file).read_text, encoding="utf-8")
        got, _ = await self.request("start", **self._session(run), argv=self._argv(run, spec.argv),
                                    env=self._env(run, spec), prompt=prompt)
        run.pid = got.get("pid")
        run.log = spec.log  # the host's log, mirrored here by each harvest (`para logs` reads it)
        run.placement = {**run.placement, "log": got.get("log"), "exit_file": got.get("exit_file")}
        return Started(run=run)

    async def bind(self, run: AgentRun, socket: str) -> str:
        """The agent's `para` reaches the local bound socket through a unix socket on the host,
        forwarded over this executor's connection (the host never dials back)."""
        remote = run.placement["socket"]
        old = self._listeners.pop(remote, None)
        if old is not None:
            old.close()
        self._binds[remote] = socket  # (served again on every new connection)
        conn = await self.connection()
        if remote not in self._listeners:  # (a new connection forwarded it already)
            await self._forward(conn, remote, socket)
        return str(remote)

    def unbind(self, run: AgentRun) -> None:
        self._binds.pop(run.placement.get("socket", ""), None)
        listener = self._listeners.pop(run.placement.get("socket", ""), None)
        if listener is not None:
            listener.close()

    async def poll(self, run: AgentRun) -> RunState:
        """The run's state on its host. A host that does not answer (within POLL_TIMEOUT, or
        a third of `lost_after` when that is shorter, but at least POLL_TIMEOUT_MIN) is not an
        ended run: `alive` with the reason in `unreachable`; the service decides when that has
        lasted long enough. Polls asked at once (the service asks for all its runs together) go
        to the host as one request: one exec per round, however many agents run there."""
        waiting: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._polls.append((self._session(run), waiting))
        if len(self._polls) == 1:
            task = asyncio.get_running_loop().create_task(self._poll_round())
            self._poll_tasks.add(task)
            task.add_done_callback(self._poll_tasks.discard)
        try:
            got = await waiting
        except ParaError as e:
            return RunState(state="alive", unreachable=e.message)
        return self._run_state(got)

    async def _poll_round(self) -> None:
        await asyncio.sleep(0)  # (the polls of this round, scheduled with the first, join it)
        batch, self._polls = self._polls, []
        try:
            got, _ = await self.request("poll_many", root=self.entry["root"],
                                        sessions=[{"repo": s["repo"], "session": s["session"]} for s, _ in batch],
                                        timeout=max(POLL_TIMEOUT_MIN, min(POLL_TIMEOUT, self.lost_after() / 3)))
            states = got.get("states")
            if not isinstance(states, list) or len(states) != len(batch):
                raise ParaError(Code.config_error, f"{self.where()}: the worker answered poll_many with "
                                f"{'no list' if not isinstance(states, list) else len(states)} states for "
                                f"{len(batch)} sessions", executor=self.name)
        except ParaError as e:
            for _, waiting in batch:
                if not waiting.done():
                    waiting.set_exception(e)
            return
        for (_, waiting), state in zip(batch, states, strict=True):
            if waiting.done():
                continue
            if isinstance(state, dict) and "error" not in state:
                waiting.set_result(state)
            else:
                why = state.get("error") if isinstance(state, dict) else "not an object"
                waiting.set_exception(ParaError(Code.config_error, f"{self.where()}: {why}", executor=self.name))

    @staticmethod
    def _run_state(got: dict[str, Any]) -> RunState:
        state = got.get("state")
        if state == "exited":
            return RunState(state="exited", exit_code=got.get("exit_code"), ended_at=got.get("ended_at"))
        if state in ("lost", "none"):
            return RunState(state="lost", ended_at=got.get("ended_at") or time.time())
        return RunState(state="alive")

    async def harvest(self, run: AgentRun, into: tuple[str, str] | None = None) -> str | None:
        """Bring the session's commits and uncommitted work home: the worker's snapshot as a
        bundle of what this repository lacks, into refs/para/remote/<name> and
        refs/para/checkpoint/<name>. Moving the session's branch is the caller's (CAS).
        `into`: (tip ref, checkpoint ref) to put them in instead, the placement untouched (the
        work of an old placement, which must not pass for the session's)."""
        p = run.placement
        have = [sha for sha in (run.harvested_commit, p.get("base")) if sha]
        got, bundle = await self.request("snapshot", **self._session(run), branch=p["branch"], have=have)
        # The host's answer is input: a ref name ("refs/heads/main"), an option ("-d") or a
        # commit this repository already had for another reason would otherwise go to
        # update-ref and move the session's branch to it (taking the agent's work off it).
        head, tip, checkpoint = (self._answer_sha(got, key) for key in ("head", "branch_tip", "checkpoint"))
        if bundle:
            await git.unbundle(p["local"], bundle)
        for key, sha in (("head", head), ("branch_tip", tip), ("checkpoint", checkpoint)):
            if sha and not await git.has_commit(p["local"], sha):
                raise ParaError(Code.config_error, f"{self.where()}: its snapshot names {key} {sha}, a commit "
                                "neither its bundle nor this repository holds; nothing was harvested",
                                executor=self.name)
        if checkpoint and await git.resolve(p["local"], f"{checkpoint}^1") != head:
            raise ParaError(Code.config_error, f"{self.where()}: its snapshot's checkpoint {checkpoint} was not "
                            f"made on its head {head}; nothing was harvested", executor=self.name)
        if into is not None:  # (work left on a host the session moved away from: kept apart)
            for ref, sha in zip(into, (tip, checkpoint), strict=True):
                if sha:
                    await git.update_ref(p["local"], ref, sha, message="para: work left on a host")
            return str(tip) if tip else None
        name = p["session"]
        if tip:
            await git.update_ref(p["local"], f"refs/para/remote/{name}", tip, message="para harvest")
        if checkpoint:
            await git.update_ref(p["local"], f"refs/para/checkpoint/{name}", checkpoint, message="para harvest")
        else:
            await git.run(p["local"], "update-ref", "-d", f"refs/para/checkpoint/{name}", check=False)
        run.placement = {**p, "head": got.get("head"), "checkpoint": checkpoint}
        return str(tip) if tip else None

    def _answer_sha(self, got: dict[str, Any], key: str) -> str | None:
        value = got.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not _SHA.fullmatch(value):
            raise ParaError(Code.config_error, f"{self.where()}: its snapshot names {key} {value!r:.80}, not a "
                            "commit sha; nothing was harvested", executor=self.name)
        return value

    async def logs(self, run: AgentRun, offset: int, limit: int = 1 << 20) -> bytes:
        _, data = await self.request("logs", **self._session(run), offset=offset, limit=limit)
        if len(data) > limit:  # (appended to the local log as it is: a host may not grow it at will)
            raise ParaError(Code.config_error, f"{self.where()}: the worker sent {len(data)} bytes of log for "
                            f"at most {limit} asked; refused", executor=self.name)
        return data

    async def stop(self, run: AgentRun, grace: float, worktree: str | None = None) -> dict[str, Any]:
        got, _ = await self.request("stop", **self._session(run), grace=grace)
        return {"pgid": run.pid, "group": True, "pids": list(got.get("pids") or []), "signals": ["TERM"],
                "left_running": list(got.get("left_running") or []), "host": self.host()}

    async def commit(self, run: AgentRun, message: str) -> dict[str, Any]:
        got, _ = await self.request("commit", **self._session(run), message=message)
        return got

    async def merge(self, run: AgentRun, target: str, bundle: bytes) -> dict[str, Any]:
        got, _ = await self.request("merge", bundle, **self._session(run), target=target)
        return got

    async def release(self, run: AgentRun) -> None:
        self.unbind(run)
        if run.placement:
            await self.request("release", **self._session(run), branch=run.placement["branch"])

    async def reconcile(self, runs: list[AgentRun]) -> list[AgentRun]:
        alive = []
        for run in runs:
            if (await self.poll(run)).state == "alive":
                alive.append(run)
        return alive


async def _read_at_most(stream: Any, cap: int | None) -> bytes:
    """A worker's output, refused past `cap` bytes: a host's answer must not fill this
    machine's memory (a snapshot's bundle has no cap here: it is the agent's work)."""
    if cap is None:
        return bytes(await stream.read())
    got = bytearray()
    while chunk := await stream.read(1 << 20):
        got += chunk
        if len(got) > cap:
            raise ParaError(Code.config_error, f"the worker's answer is longer than {cap} bytes; refused")
    return bytes(got)


def _home_of(worktree: str, root: str, session: str, rid: str) -> str | None:
    """HOME on the host, from the worktree's absolute path when root is relative to it."""
    if os.path.isabs(root):
        return None
    rel = root.removeprefix("~/")
    tail = "/" + "/".join(x for x in (rel.strip("/"), "wt", rid, session) if x)
    return worktree[: -len(tail)] if worktree.endswith(tail) and len(worktree) > len(tail) else None


_EXECUTORS: dict[str, Ssh] = {}


def executor(name: str, entry: dict[str, Any]) -> Ssh:
    """The one Ssh object of an entry (a changed entry gets a new one; the old connection
    closes when its last user is done with it)."""
    ex = _EXECUTORS.get(name)
    if ex is None or ex.entry != entry:
        ex = _EXECUTORS[name] = Ssh(name, entry)
    return ex
