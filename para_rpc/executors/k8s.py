"""The `k8s` executor: one Kubernetes Job per session (issue 16 point 4).

The pod runs `python -m para_rpc.worker_hold` (worker_hold.py), which only keeps it up and
carries the session's bound channel; everything else is the SSH executor's worker protocol
(ssh.py, worker.py) unchanged, carried over the pod's exec stream instead of an SSH exec channel:
the code goes in as a bundle, the worktree and the detached runner are made by the same worker
ops, commits come home by the same harvest. The sidecar always dials: API calls, exec and
port-forward all go from here to the API server, never from the pod to this machine.

What the Job holds (job_manifest): argv arrays (no `sh -c`: nothing is ever parsed by a shell),
`backoffLimit: 0` (a retried pod would start from an empty disk, the uzi #224 failure),
`activeDeadlineSeconds`, `ttlSecondsAfterFinished`, the configured resources, no service account
token, labels `para/sidecar`, `para/repo`, `para/session` (a restarted sidecar finds its Jobs by
them), and `envFrom` a per-session Secret owned by the Job: the `env_passthrough` values travel
there, never in argv, a request or a file on the worker. The session token cannot: the service
mints it after the placement is prepared, when the container's environment is fixed, so it goes
in the start request on the exec stream's stdin (as over SSH).

The transport is a small seam, PodChannel (exec with stdin; a connection to a port of the pod),
so the contract tests run on an in-memory API server with a local double of the data plane
(tests/kube_util.py); KubeChannel is the real one (kr8s: exec over v5.channel.k8s.io, which
carries stdin, so Kubernetes >= 1.30, and port-forward).

kr8s comes with `para_rpc[k8s]` and is imported only when a k8s executor is used.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import socket as socketlib
import time
from typing import Any, Protocol

from para_rpc.errors import Code, ParaError
from para_rpc.executors import EditorLauncher, LaunchSpec, RunState, Started
from para_rpc.executors.ssh import CALL_TIMEOUT, Ssh
from para_rpc.model import AgentRun

log = logging.getLogger("para.k8s")

ACK = b"\x02"         # worker_hold's CLAIM answered: this end is joined to the session's socket
SPARES = 2            # connections kept open to the pod's hold process for the agent's next `para` calls
POD_POLL = 1.0        # seconds between looks at a pod that is starting
LOST_SETTLE = 2.0     # seconds a run found lost waits for its pod's status to say why
LOST_PHASES = ("Failed", "Unknown")
_LABEL_VALUE = re.compile(r"[^a-z0-9.-]+")
# The pod a worker request goes to, for the requests that name no session (prepare's refs and
# receive): per task, so two sessions prepared at once never swap pods.
_POD: contextvars.ContextVar[str] = contextvars.ContextVar("para_k8s_pod", default="")


class PodChannel(Protocol):
    """The data plane of one namespace: what the API server's exec and port-forward give."""

    async def exec(self, pod: str, argv: list[str], stdin: bytes, timeout: float) -> tuple[bytes, bytes, int | None]:
        """Run argv in the pod's container with `stdin`: (stdout, stderr, exit status)."""
        ...

    async def connect(self, pod: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection to `port` on the pod's loopback."""
        ...

    async def forget(self, pod: str) -> None:
        """The pod is gone: drop what was kept for it."""
        ...


# ---- names and the manifest ----------------------------------------------------------------

def label_value(text: str, limit: int = 63) -> str:
    """A label value (63 of [a-z0-9.-], alphanumeric at both ends) naming `text`; a digest
    keeps two names that clean up alike apart."""
    clean = _LABEL_VALUE.sub("-", text.lower()).strip("-.")
    if clean == text and len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[: limit - 9].strip('-.')}-{digest}".strip("-.")


def sidecar_id() -> str:
    """This sidecar's label: the machine and user it runs as (a restarted sidecar is the same)."""
    return hashlib.sha256(f"{socketlib.gethostname()}:{os.getuid()}".encode()).hexdigest()[:16]


def job_name(session: str, rid: str, stamp: float) -> str:
    digest = hashlib.sha256(f"{rid}/{session}/{stamp}".encode()).hexdigest()[:10]
    return f"para-{label_value(session, 40)}-{digest}".replace("--", "-")


def labels(rid: str, session: str) -> dict[str, str]:
    return {"para/sidecar": sidecar_id(), "para/repo": label_value(rid), "para/session": label_value(session),
            "app.kubernetes.io/managed-by": "para"}


def job_manifest(entry: dict[str, Any], *, job: str, secret: str, rid: str, session: str) -> dict[str, Any]:
    tags = labels(rid, session)
    container: dict[str, Any] = {
        "name": "worker",
        "image": entry["image"],
        # argv arrays: the kubelet executes them, no shell parses anything
        "command": [entry["python"], "-m", "para_rpc.worker_hold"],
        "args": ["--root", entry["root"], "--repo", rid, "--session", session, "--port", str(entry["port"])],
        "envFrom": [{"secretRef": {"name": secret}}],
        "volumeMounts": [{"name": "para", "mountPath": entry["root"]}],
    }
    if entry["resources"]:
        container["resources"] = entry["resources"]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job, "namespace": entry["namespace"], "labels": tags},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": entry["deadline"],
            "ttlSecondsAfterFinished": entry["ttl"],
            "template": {
                "metadata": {"labels": tags},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                    "volumes": [{"name": "para", "emptyDir": {}}],
                },
            },
        },
    }


def secret_manifest(entry: dict[str, Any], *, secret: str, rid: str, session: str, job: str, uid: str,
                    values: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret, "namespace": entry["namespace"], "labels": labels(rid, session),
                     # deleted with its Job by the cluster's garbage collector (and by release, at once)
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": uid,
                                          "blockOwnerDeletion": True}]},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


# ---- the API -------------------------------------------------------------------------------

_VERBS = {"GET": "get", "POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}


class Api:
    """The few REST calls the executor makes, with Kubernetes' refusals turned into para's
    errors: 403 is config_error naming the verb and resource the account lacks."""

    def __init__(self, name: str, entry: dict[str, Any], where: str) -> None:
        self.name, self.entry, self.where = name, entry, where
        self._api: Any = None

    async def client(self) -> Any:
        if self._api is None:
            try:
                import kr8s.asyncio
            except ImportError:
                raise ParaError(Code.config_error, f"{self.where} needs kr8s: pip install 'para_rpc[k8s]'",
                                executor=self.name) from None
            kubeconfig = os.path.expanduser(self.entry["kubeconfig"]) if self.entry["kubeconfig"] else None
            try:
                self._api = await kr8s.asyncio.api(kubeconfig=kubeconfig, context=self.entry["context"] or None,
                                                   namespace=self.entry["namespace"])
            except Exception as e:  # noqa: BLE001 kr8s raises many kinds (config, TLS, HTTP): all mean "cannot use it"
                raise ParaError(Code.config_error, f"{self.where}: cannot use the Kubernetes API: "
                                f"{type(e).__name__}: {e}", executor=self.name) from None
        return self._api

    async def call(self, method: str, resource: str, name: str = "", *, missing_ok: bool = False,
                   **kwargs: Any) -> dict[str, Any] | None:
        """`resource` is "jobs", "pods" or "secrets" in the executor's namespace."""
        import httpx
        from kr8s import ServerError

        api = await self.client()
        version = "batch/v1" if resource == "jobs" else "v1"
        url = f"{resource}/{name}" if name else resource
        try:
            async with api.call_api(method, version=version, namespace=self.entry["namespace"], url=url,
                                    **kwargs) as response:
                got = response.json()
        except ServerError as e:
            status = e.response.status_code if e.response is not None else 0
            if status == 404 and missing_ok:
                return None
            verb = "list" if method == "GET" and not name else _VERBS.get(method, method.lower())
            group = "batch/" if resource == "jobs" else ""
            if status == 403:
                raise ParaError(Code.config_error, f"{self.where}: the Kubernetes API refused to {verb} {resource} "
                                f"in namespace {self.entry['namespace']} (403: {e}); the account of this context "
                                f"needs `{verb}` on `{group}{resource}` there (a Role and RoleBinding)",
                                executor=self.name, verb=verb, resource=resource) from None
            raise ParaError(Code.config_error, f"{self.where}: {verb} {resource}{'/' + name if name else ''} "
                            f"failed ({status}): {e}", executor=self.name, status=status) from None
        except (httpx.HTTPError, OSError) as e:
            raise ParaError(Code.config_error, f"{self.where}: cannot reach the Kubernetes API: "
                            f"{type(e).__name__}: {e}", executor=self.name) from None
        return got if isinstance(got, dict) else {}

    async def items(self, resource: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        """The objects whose labels hold `selector` (checked here too: a selector the server
        ignored must not make another session's object ours)."""
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        got = await self.call("GET", resource, params={"labelSelector": text}) or {}
        return [o for o in got.get("items") or [] if isinstance(o, dict)
                and all(((o.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())]


class KubeChannel:
    """The real data plane, over the API server's websockets (kr8s opens them with the
    kubeconfig's credentials). Both protocols are spoken here: kr8s 0.20's exec offers only
    v4.channel.k8s.io yet refuses stdin without v5 (its own test of it is an xfail), and its
    port-forward serves a TCP port on this machine that any local user could connect to,
    which would hand them the agent's calls (and its token): a socketpair has no address."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}

    async def _ws(self, pod: str, sub: str, params: dict[str, Any], protocols: tuple[str, ...] = ()) -> Any:
        api = await self.api.client()
        extra = {"subprotocols": list(protocols)} if protocols else {}
        return api.open_websocket(version="v1", url=f"pods/{pod}/{sub}", namespace=self.api.entry["namespace"],
                                  params=params, **extra)

    async def exec(self, pod: str, argv: list[str], stdin: bytes, timeout: float) -> tuple[bytes, bytes, int | None]:
        out, err = bytearray(), bytearray()
        params = {"command": argv, "container": "worker", "stdin": "true", "stdout": "true", "stderr": "true"}
        async with await self._ws(pod, "exec", params, (EXEC_V5,)) as ws:
            if ws.subprotocol != EXEC_V5:
                raise ParaError(Code.config_error, f"{self.api.where}: the API server's exec does not speak {EXEC_V5} "
                                f"(it chose {ws.subprotocol!r}), which carries stdin: Kubernetes >= 1.30 is needed",
                                executor=self.api.name)
            for at in range(0, len(stdin), WS_CHUNK):
                await ws.send_bytes(b"\x00" + stdin[at:at + WS_CHUNK])
            await ws.send_bytes(b"\xff\x00")  # (v5: stdin closed)
            while True:
                message = await ws.receive_bytes(timeout=timeout)
                channel, data = message[0], message[1:]
                if channel == 1:
                    out += data
                elif channel == 2:
                    err += data
                elif channel == 3:
                    return bytes(out), bytes(err), _exit_status(data, err)

    async def connect(self, pod: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the pod's `port` as a stream pair: one end of a socketpair, the
        other copied to and from a port-forward websocket."""
        mine, theirs = socketlib.socketpair()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(self._forward(pod, port, theirs, ready))
        self._tasks.setdefault(pod, set()).add(task)
        task.add_done_callback(self._tasks[pod].discard)
        try:
            await ready
        except BaseException:
            mine.close()
            raise
        return await asyncio.open_connection(sock=mine)

    async def _forward(self, pod: str, port: int, sock: socketlib.socket, ready: asyncio.Future[None]) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=sock)
            async with await self._ws(pod, "portforward", {"ports": str(port)}) as ws:
                ready.set_result(None)
                seen: set[int] = set()

                async def down() -> None:  # pod -> here; each channel's first frame is its port number
                    while True:
                        message = await ws.receive_bytes()
                        channel, data = message[0], message[1:]
                        if channel not in seen:
                            seen.add(channel)
                        elif channel == 0:
                            writer.write(data)
                            await writer.drain()
                        elif data:
                            raise ConnectionError(data.decode("utf-8", "replace"))

                async def up() -> None:
                    while chunk := await reader.read(WS_CHUNK):
                        await ws.send_bytes(b"\x00" + chunk)

                tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in tasks:
                        t.cancel()
                    writer.close()
        except Exception as e:  # noqa: BLE001 the forward failed or ended: the caller sees its connection close
            if not ready.done():
                ready.set_exception(ConnectionError(f"port-forward to {pod}:{port}: {type(e).__name__}: {e}"))
            sock.close()

    async def forget(self, pod: str) -> None:
        for task in self._tasks.pop(pod, set()):
            task.cancel()


EXEC_V5 = "v5.channel.k8s.io"
WS_CHUNK = 1 << 20


def _exit_status(status: bytes, err: bytearray) -> int | None:
    """Channel 3's Status: Success is 0; a failure names the exit code in details.causes."""
    try:
        got = json.loads(status)
    except ValueError:
        got = {}
    if got.get("status") == "Success":
        return 0
    for cause in (got.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(TypeError, ValueError):
                return int(cause.get("message"))
    err += f"\n{got.get('message') or status.decode('utf-8', 'replace')}".encode()
    return None


# ---- the executor --------------------------------------------------------------------------

class K8s(Ssh):
    """Agents in Kubernetes Jobs. The worker requests, harvest, logs, stop and merge are the
    SSH executor's (inherited); what differs is the transport (`_exec` over the pod's exec
    stream), the placement (a Job made by prepare, deleted by release), what poll knows
    (the pod's phase: a Failed/Evicted/Unknown pod is `lost` with its reason) and bind."""

    remember_refs = False  # each pod starts with an empty cache

    def __init__(self, name: str, entry: dict[str, Any], channel: PodChannel | None = None) -> None:
        super().__init__(name, entry)
        self.api = Api(name, entry, self.where())
        self.channel: PodChannel = channel or KubeChannel(self.api)
        self._pumps: dict[str, asyncio.Task[None]] = {}   # pod -> its bound channel's pump
        self._joins: set[asyncio.Task[None]] = set()      # agent connections being spliced
        self._pods: dict[str, str] = {}                    # "<repo>/<session>" -> its pod

    def where(self) -> str:
        ctx = self.entry["context"] or "the current context"
        return f"executor {self.name} (Kubernetes, {ctx}, namespace {self.entry['namespace']})"

    def host(self) -> str:
        return f"k8s:{self.entry['context'] or 'current'}/{self.entry['namespace']}"

    async def request(self, op: str, payload: bytes = b"", **fields: Any) -> tuple[dict[str, Any], bytes]:
        # The SSH executor's methods name the session in each request: that names the pod.
        pod = self._pods.get(f"{fields.get('repo')}/{fields.get('session')}") or _POD.get()
        token = _POD.set(pod)
        try:
            return await super().request(op, payload, **fields)
        finally:
            _POD.reset(token)

    async def _exec(self, op: str, data: bytes) -> tuple[bytes, bytes, int | None]:
        pod = _POD.get()
        if not pod:
            raise ParaError(Code.internal, f"{self.where()}: {op} without a pod to run it in")
        argv = [self.entry["python"], "-m", "para_rpc.worker"]
        try:
            async with self._channels:
                return await asyncio.wait_for(self.channel.exec(pod, argv, data, CALL_TIMEOUT), CALL_TIMEOUT + 5)
        except ParaError:
            raise
        except Exception as e:  # noqa: BLE001 the data plane's errors (websocket, HTTP, timeout): the pod did not answer
            raise ParaError(Code.config_error, f"{self.where()}: pod {pod} did not answer {op}: "
                            f"{type(e).__name__}: {e}", executor=self.name) from None

    def _remember(self, run: AgentRun) -> None:
        p = run.placement
        if p.get("pod") and p.get("session"):
            self._pods[f"{p['repo']}/{p['session']}"] = p["pod"]

    # -- placing an agent

    async def prepare(self, spec: LaunchSpec) -> dict[str, Any]:
        """A Job (and its Secret) for the session, its pod running; then the SSH executor's
        prepare over the pod's exec stream (code in, worktree made)."""
        from para_rpc.executors.ssh import repo_id

        rid = repo_id(spec.repo_root)
        job = job_name(spec.session, rid, time.time())
        secret = f"{job}-env"
        created = await self.api.call("POST", "jobs", json=job_manifest(self.entry, job=job, secret=secret, rid=rid,
                                                                          session=spec.session)) or {}
        try:
            uid = str((created.get("metadata") or {}).get("uid") or "")
            values = {n: os.environ[n] for n in self.entry["env_passthrough"] if n in os.environ}
            await self.api.call("POST", "secrets", json=secret_manifest(
                self.entry, secret=secret, rid=rid, session=spec.session, job=job, uid=uid, values=values))
            pod = await self._wait_running(job)
            token = _POD.set(pod)  # (refs and receive name no session)
            try:
                placement = await super().prepare(spec)
            finally:
                _POD.reset(token)
            self._pods[f"{rid}/{spec.session}"] = pod
        except BaseException:
            await self._delete(job, secret)  # nothing of a failed start stays in the cluster
            raise
        return {**placement, "job": job, "pod": pod, "secret": secret, "namespace": self.entry["namespace"]}

    async def _wait_running(self, job: str) -> str:
        deadline = time.monotonic() + self.entry["start_timeout"]
        why = "no pod yet"
        while time.monotonic() < deadline:
            pods = await self.api.items("pods", {"job-name": job})
            for pod in pods:
                name = str((pod.get("metadata") or {}).get("name") or "")
                status = pod.get("status") or {}
                phase = status.get("phase") or "Pending"
                if phase == "Running" and all(c.get("ready") for c in status.get("containerStatuses") or [{}]):
                    return name
                if phase in (*LOST_PHASES, "Succeeded"):
                    raise ParaError(Code.config_error, f"{self.where()}: pod {name} of Job {job} ended before it "
                                    f"served: {_reason(pod)}", executor=self.name, job=job)
                why = f"pod {name} is {phase}" + (f" ({_waiting(pod)})" if _waiting(pod) else "")
            await asyncio.sleep(POD_POLL)
        raise ParaError(Code.config_error, f"{self.where()}: the pod of Job {job} did not run within "
                        f"{self.entry['start_timeout']} s ({why}); check the image ({self.entry['image']}) and "
                        "the namespace's quota", executor=self.name, job=job)

    def _env(self, run: AgentRun, spec: LaunchSpec) -> dict[str, str]:
        """Para's variables only: the passthrough values are in the pod's environment already
        (its Secret) and are inherited by name (start), never sent."""
        env = super()._env(run, spec)  # (PATH: the configured python's directory first, as over SSH)
        for name in self.entry["env_passthrough"]:
            env.pop(name, None)
        env["HOME"] = self.entry["root"]  # (the pod's writable volume: the image's HOME may not be)
        return env

    async def start(self, run: AgentRun, spec: LaunchSpec, editor: EditorLauncher | None) -> Started:
        from pathlib import Path

        self._remember(run)
        prompt = await asyncio.to_thread(Path(spec.prompt_file).read_text, encoding="utf-8")
        got, _ = await self.request("start", **self._session(run), argv=self._argv(run, spec.argv),
                                    env=self._env(run, spec), prompt=prompt,
                                    inherit=list(self.entry["env_passthrough"]))
        run.pid = got.get("pid")
        run.log = spec.log
        run.placement = {**run.placement, "log": got.get("log"), "exit_file": got.get("exit_file")}
        return Started(run=run)

    # -- the bound channel

    async def bind(self, run: AgentRun, socket: str) -> str:
        """The agent's `para` connects to the session's unix socket in the pod (the hold
        process listens there); its connections come out here through spares this sidecar
        keeps open to the hold process's port (the pod cannot dial out to us)."""
        self._remember(run)
        pod = run.placement["pod"]
        old = self._pumps.pop(pod, None)
        if old is not None:
            old.cancel()
        self._pumps[pod] = asyncio.get_running_loop().create_task(self._pump(pod, socket))
        return str(run.placement["socket"])

    def unbind(self, run: AgentRun) -> None:
        task = self._pumps.pop(run.placement.get("pod", ""), None)
        if task is not None:
            task.cancel()

    async def _pump(self, pod: str, socket: str) -> None:
        async def spare() -> None:
            backoff = 0.2
            while True:
                try:
                    reader, writer = await self.channel.connect(pod, self.entry["port"])
                except Exception as e:  # noqa: BLE001 a pod not serving yet, or gone: tried again, slower
                    log.debug("%s: no connection to pod %s yet: %s", self.name, pod, e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                try:
                    claim = await reader.read(1)
                except OSError:
                    claim = b""
                if not claim:
                    writer.close()
                    await asyncio.sleep(backoff)
                    continue
                # (held until done: a task only the loop knows of can be collected mid-splice)
                joining = asyncio.get_running_loop().create_task(self._join(reader, writer, claim[1:], socket))
                self._joins.add(joining)
                joining.add_done_callback(self._joins.discard)

        tasks = [asyncio.get_running_loop().create_task(spare()) for _ in range(SPARES)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    @staticmethod
    async def _join(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rest: bytes, socket: str) -> None:
        try:
            local = await asyncio.open_unix_connection(socket)
        except OSError:
            writer.close()  # the session's socket is gone (it ended): the agent's call fails cleanly
            return
        try:
            writer.write(ACK)  # (worker_hold waits for it before it hands the agent's connection over)
            await writer.drain()
        except OSError:
            writer.close()
            local[1].close()
            return
        if rest:
            local[1].write(rest)
        await _splice((reader, writer), local)


    # -- following it

    async def _pod_state(self, run: AgentRun) -> RunState | None:
        """What the cluster says: None while the pod runs, `lost` with the reason when it is
        Failed (evicted, deadline), Unknown (its node unreachable) or gone."""
        p = run.placement
        pod = await self.api.call("GET", "pods", p["pod"], missing_ok=True)
        if pod is None:
            job = await self.api.call("GET", "jobs", p["job"], missing_ok=True)
            why = "its pod was deleted" if job is not None else "its Job was deleted"
            return RunState(state="lost", ended_at=time.time(), reason=f"{why} ({p['pod']})")
        phase = (pod.get("status") or {}).get("phase")
        if phase in LOST_PHASES or phase == "Succeeded":
            return RunState(state="lost", ended_at=time.time(), reason=f"pod {p['pod']} is {phase}: {_reason(pod)}")
        return None

    async def poll(self, run: AgentRun) -> RunState:
        self._remember(run)
        try:
            gone = await self._pod_state(run)
        except ParaError as e:
            return RunState(state="alive", unreachable=e.message)  # the API away is not the pod gone
        if gone is not None:
            # What the runner recorded wins over the pod's end (the agent may have exited first).
            said = await self._worker_poll(run)
            if said.state == "exited":
                return said
            self.unbind(run)  # (no spares kept open to a pod that is gone)
            if run.placement.get("pod"):
                await self.channel.forget(run.placement["pod"])
            return gone
        said = await self._worker_poll(run)
        if said.state == "lost":
            # The runner gone without an exit record: a pod being evicted or killed looks like
            # this for a moment before the kubelet says so; its reason is worth the wait.
            await asyncio.sleep(LOST_SETTLE)
            with contextlib.suppress(ParaError):
                gone = await self._pod_state(run)
                if gone is not None:
                    return gone
            return RunState(state="lost", ended_at=said.ended_at,
                            reason=f"its runner in pod {run.placement.get('pod')} ended without an exit record")
        return said

    async def _worker_poll(self, run: AgentRun) -> RunState:
        """The runner's state from the pod's worker: one request per run (each pod is a worker
        of its own, so the SSH executor's one-request-per-host round does not apply)."""
        try:
            got, _ = await self.request("poll", **self._session(run))
        except ParaError as e:
            return RunState(state="alive", unreachable=e.message)
        return self._run_state(got)

    async def harvest(self, run: AgentRun, into: tuple[str, str] | None = None) -> str | None:
        self._remember(run)
        return await super().harvest(run, into)

    async def logs(self, run: AgentRun, offset: int, limit: int = 1 << 20) -> bytes:
        self._remember(run)
        return await super().logs(run, offset, limit)

    async def stop(self, run: AgentRun, grace: float, worktree: str | None = None) -> dict[str, Any]:
        self._remember(run)
        if await self._pod_state(run) is not None:
            return {"pgid": run.pid, "group": True, "pids": [], "signals": [], "left_running": [], "host": self.host()}
        return await super().stop(run, grace, worktree)

    async def commit(self, run: AgentRun, message: str) -> dict[str, Any]:
        self._remember(run)
        return await super().commit(run, message)

    async def merge(self, run: AgentRun, target: str, bundle: bytes) -> dict[str, Any]:
        self._remember(run)
        return await super().merge(run, target, bundle)

    async def release(self, run: AgentRun) -> None:
        """The Job deleted with foreground propagation (its pod goes first) and its Secret at
        once (its owner reference would have the garbage collector do it, later)."""
        self.unbind(run)
        p = run.placement
        if p.get("pod"):
            await self.channel.forget(p["pod"])
            self._pods.pop(f"{p.get('repo')}/{p.get('session')}", None)
        if p.get("job"):
            await self._delete(p["job"], p.get("secret") or f"{p['job']}-env")

    async def _delete(self, job: str, secret: str) -> None:
        await self.api.call("DELETE", "jobs", job, missing_ok=True,
                            json={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground"})
        await self.api.call("DELETE", "secrets", secret, missing_ok=True)

    async def jobs(self, rid: str | None = None) -> list[dict[str, Any]]:
        """This sidecar's Jobs (of one repository), found by their labels."""
        selector = {"para/sidecar": sidecar_id()}
        if rid:
            selector["para/repo"] = label_value(rid)
        return await self.api.items("jobs", selector)

    async def reconcile(self, runs: list[AgentRun]) -> list[AgentRun]:
        """After a sidecar restart: this sidecar's Jobs listed by label; a run whose Job is
        there is followed again (its pod found by the Job's name), one whose Job is gone is
        not alive (poll says why)."""
        found = {str((j.get("metadata") or {}).get("name")) for j in await self.jobs()}
        alive = []
        for run in runs:
            job = run.placement.get("job")
            if job not in found:
                continue
            pods = await self.api.items("pods", {"job-name": str(job)})
            if pods:
                run.placement = {**run.placement, "pod": str((pods[0].get("metadata") or {}).get("name"))}
            if (await self.poll(run)).state == "alive":
                alive.append(run)
        return alive

    async def check(self) -> dict[str, Any]:
        """`para executor check`: the API reachable, the namespace there, and the verbs this
        executor uses allowed (SelfSubjectAccessReview, so nothing is created to find out)."""
        from para_rpc import PROTOCOL_VERSION, __version__

        api = await self.api.client()
        try:
            version = await api.version()
        except Exception as e:  # noqa: BLE001 any failure here means the API is not usable
            raise ParaError(Code.config_error, f"{self.where()}: cannot reach the Kubernetes API: "
                            f"{type(e).__name__}: {e}", executor=self.name) from None
        await self.api.call("GET", "jobs")  # the namespace's Jobs listed: reachable, and `list jobs` allowed
        missing = []
        for verb, resource, group in (("create", "jobs", "batch"), ("delete", "jobs", "batch"),
                                      ("list", "pods", ""), ("get", "pods", ""), ("create", "pods/exec", ""),
                                      ("create", "pods/portforward", ""), ("create", "secrets", ""),
                                      ("delete", "secrets", "")):
            res, _, sub = resource.partition("/")
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                      "spec": {"resourceAttributes": {"namespace": self.entry["namespace"], "verb": verb,
                                                      "group": group, "resource": res, "subresource": sub}}}
            try:
                async with api.call_api("POST", version="authorization.k8s.io/v1",
                                        url="selfsubjectaccessreviews", json=review) as response:
                    answer = response.json().get("status")
            except Exception:  # noqa: BLE001 no review API (an old or minimal server): the list above is the check
                break
            if not isinstance(answer, dict) or "allowed" not in answer:
                break  # (a server that stored the review instead of answering it: no RBAC to ask)
            allowed = bool(answer["allowed"])
            if not allowed:
                missing.append(f"{verb} {group + '/' if group else ''}{resource}")
        if missing:
            raise ParaError(Code.config_error, f"{self.where()}: the account of this context may not "
                            f"{', '.join(missing)} in namespace {self.entry['namespace']}", executor=self.name,
                            missing=missing)
        return {"para": __version__, "protocol": PROTOCOL_VERSION, "python": None,
                "git": f"Kubernetes {version.get('gitVersion', '?')}" if isinstance(version, dict) else None}


def _reason(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    parts = [str(x) for x in (status.get("reason"), status.get("message")) if x]
    for c in status.get("containerStatuses") or []:
        term = (c.get("state") or {}).get("terminated") or {}
        if term:
            parts.append(f"container {c.get('name')} {term.get('reason') or 'terminated'} "
                         f"(exit {term.get('exitCode')})")
    return "; ".join(parts) or "no reason given"


def _waiting(pod: dict[str, Any]) -> str:
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        wait = (c.get("state") or {}).get("waiting") or {}
        if wait:
            return f"{wait.get('reason')}: {wait.get('message') or ''}".strip(": ")
    return ""


_EXECUTORS: dict[str, K8s] = {}


def executor(name: str, entry: dict[str, Any]) -> K8s:
    ex = _EXECUTORS.get(name)
    if ex is None or ex.entry != entry:
        ex = _EXECUTORS[name] = K8s(name, entry)
    return ex


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Both ways until both sides are done (worker_hold's, on this side: the agent side's
    modules are not imported here)."""
    try:
        await asyncio.gather(_copy(a[0], b[1]), _copy(b[0], a[1]))
    finally:
        for w in (a[1], b[1]):
            w.close()
