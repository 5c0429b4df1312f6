"""A Kubernetes for the k8s executor's tests, on one machine without a cluster (issue 16 point 4).

- `Cluster`: kmock's in-memory Kubernetes API over HTTP, plus what a real API server does that
  the contract depends on: a uid on every created object, RBAC refusals (403 Status, nothing
  stored) for the verbs a test forbids, and `GET /version/` (kr8s asks with the slash).
- `Kubelet`: an asyncio task that does what the Job controller and a kubelet would: for each
  Job, once its Secret exists, a Pod object (labels `job-name` + the template's) and a real
  process running the container's argv on this machine (the image's python = this venv's),
  with the Secret's values as its environment; the pod's status patched Running, Failed when
  the process dies or when a test evicts it (its processes killed, its worktree gone, as the
  pod's disk would be). A deleted Job's pod is killed and deleted.
- `LocalPodChannel`: the data plane kmock does not serve (exec and port-forward are websockets):
  exec runs argv in the "pod" (its environment and directory), connect opens the hold
  process's port. The hold process listens on port 0 here (several pods share one machine) and
  says its port in its hold file; the kubelet replaces `--port N` by `--port 0` for that alone.

Nothing here reads the executor's code: the tests see only the API objects and the processes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import kmock
from kmock._internal import enums

VERBS = {enums.action.CREATE: "create", enums.action.DELETE: "delete", enums.action.UPDATE: "patch",
         enums.action.LIST: "list", enums.action.WATCH: "watch", enums.action.FETCH: "get"}


class Cluster(kmock.KubernetesEmulator):
    forbidden: set[tuple[str, str]]

    async def _handle(self, request: Any) -> Any:
        res = request.resource
        if res is not None and res.plural:
            verb = VERBS.get(request.action, "")
            if (verb, res.plural) in getattr(self, "forbidden", set()):
                group = f' in API group "{res.group}"' if res.group else ""
                return await self._render_error(kmock.KubernetesError(
                    status=403, reason="Forbidden",
                    message=f'{res.plural}{"." + res.group if res.group else ""} is forbidden: User "tester" cannot '
                            f'{verb} resource "{res.plural}"{group} in the namespace "{request.namespace}"'))
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                if res.plural.endswith("accessreviews"):  # (answered, never stored: kmock keys what it stores by name)
                    meta.setdefault("name", meta["uid"])
                meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).isoformat())
        return await super()._handle(request)


def kubeconfig(path: Path, url: str, namespace: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "contexts": [{"name": "test", "context": {"cluster": "kmock", "user": "tester", "namespace": namespace}}],
        "users": [{"name": "tester", "user": {"token": "not-a-secret"}}]}))
    return path


class Pod:
    def __init__(self, name: str, job: str, args: list[str], env: dict[str, str], home: Path) -> None:
        self.name, self.job, self.args, self.env, self.home = name, job, args, env, home
        self.proc: asyncio.subprocess.Process | None = None

    def arg(self, flag: str) -> str:
        return self.args[self.args.index(flag) + 1]

    @property
    def root(self) -> Path:
        return Path(self.arg("--root"))

    def port(self) -> int:
        """The hold process's real port (its hold file, matched by its pid)."""
        for f in (self.root / "hold").glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                got = json.loads(f.read_text())
                if self.proc is not None and got.get("pid") == self.proc.pid:
                    return int(got["port"])
        raise ConnectionRefusedError(f"pod {self.name}: its hold process does not listen yet")

    def kill(self) -> None:
        """Every process of the pod: the hold process and what exec started (the runner and the
        agent detach into sessions of their own; a container's end takes them all)."""
        run = str(self.root / "run" / self.arg("--repo") / self.arg("--session"))
        groups = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if run.encode() in (proc / "cmdline").read_bytes():
                    groups.add(os.getpgid(int(proc.name)))
        if self.proc is not None and self.proc.returncode is None:
            groups.add(self.proc.pid)
        for g in groups:
            with contextlib.suppress(OSError):
                os.killpg(g, signal.SIGKILL)


class Kubelet:
    def __init__(self, url: str, namespace: str, workdir: Path) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=10)
        self.ns, self.workdir = namespace, workdir
        self.pods: dict[str, Pod] = {}   # job -> its pod
        self.task: asyncio.Task[None] | None = None

    def python(self, argv0: str) -> str:
        return sys.executable if argv0 in ("python", "python3") else argv0

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.http.request(method, path, **kw)
        return r.json() if r.status_code < 400 else None

    async def _patch_pod(self, pod: Pod, status: dict[str, Any]) -> None:
        await self.http.patch(f"/api/v1/namespaces/{self.ns}/pods/{pod.name}", json={"status": status})

    async def _start(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        spec = job["spec"]["template"]["spec"]
        c = spec["containers"][0]
        env: dict[str, str] = {}
        for ref in c.get("envFrom") or []:
            secret = await self._json("GET", f"/api/v1/namespaces/{self.ns}/secrets/{ref['secretRef']['name']}")
            if secret is None:
                return  # (CreateContainerConfigError: tried again on the next round)
            env.update({k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()})
        pod = Pod(f"{name}-{uuid.uuid4().hex[:5]}", name, list(c["args"]), env, self.workdir / name)
        self.pods[name] = pod
        tags = {**job["spec"]["template"]["metadata"]["labels"], "job-name": name,
                "batch.kubernetes.io/job-name": name}
        await self.http.post(f"/api/v1/namespaces/{self.ns}/pods", json={
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": self.ns, "labels": tags,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                              "uid": job["metadata"].get("uid")}]},
            "spec": spec, "status": {"phase": "Pending"}})
        args = list(pod.args)
        args[args.index("--port") + 1] = "0"  # (several pods on one machine: the hold file says the port)
        pod.home.mkdir(parents=True, exist_ok=True)
        pod.root.mkdir(parents=True, exist_ok=True)  # (the emptyDir volume)
        pod.env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", "HOME": str(pod.home), **env}
        pod.proc = await asyncio.create_subprocess_exec(
            self.python(c["command"][0]), *c["command"][1:], *args, env=pod.env, cwd=pod.home,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True)
        for _ in range(100):
            with contextlib.suppress(ConnectionRefusedError):
                pod.port()
                break
            await asyncio.sleep(0.05)
        await self._patch_pod(pod, {"phase": "Running", "containerStatuses": [
            {"name": "worker", "ready": True, "state": {"running": {}}}]})

    async def _round(self) -> None:
        jobs = (await self._json("GET", f"/apis/batch/v1/namespaces/{self.ns}/jobs") or {}).get("items") or []
        names = {j["metadata"]["name"] for j in jobs}
        for job in jobs:
            if job["metadata"]["name"] not in self.pods:
                await self._start(job)
        for name, pod in list(self.pods.items()):
            if name not in names:  # the Job was deleted: its pod goes (foreground: before the Job, here after)
                pod.kill()
                await self.http.delete(f"/api/v1/namespaces/{self.ns}/pods/{pod.name}")
                del self.pods[name]
            elif pod.proc is not None and pod.proc.returncode is not None and not getattr(pod, "ended", False):
                pod.ended = True  # type: ignore[attr-defined]
                await self._patch_pod(pod, {"phase": "Failed", "containerStatuses": [
                    {"name": "worker", "ready": False,
                     "state": {"terminated": {"reason": "Error", "exitCode": pod.proc.returncode}}}]})

    async def run(self) -> None:
        while True:
            try:
                await self._round()
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for pod in self.pods.values():
            pod.kill()
        await self.http.aclose()

    async def evict(self, job: str, message: str = "The node was low on resource: memory.") -> Pod:
        """What a node under pressure does: the pod's processes killed, its disk gone, its status
        Failed with reason Evicted."""
        pod = self.pods[job]
        pod.ended = True  # type: ignore[attr-defined]
        pod.kill()
        for part in ("wt", "run"):
            shutil.rmtree(pod.root / part / pod.arg("--repo") / pod.arg("--session"), ignore_errors=True)
        await self._patch_pod(pod, {"phase": "Failed", "reason": "Evicted", "message": message})
        return pod

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods.values() if p.name == name)


class LocalPodChannel:
    """exec and port-forward into the kubelet's local "pods"."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.execs: list[tuple[str, list[str], bytes]] = []

    async def exec(self, pod: str, argv: list[str], stdin: bytes, timeout: float) -> tuple[bytes, bytes, int | None]:
        p = self.kubelet.pod(pod)
        if p.proc is None or p.proc.returncode is not None:
            raise ConnectionError(f"container not running in pod {pod}")
        self.execs.append((pod, list(argv), stdin))
        proc = await asyncio.create_subprocess_exec(
            self.kubelet.python(argv[0]), *argv[1:], env=p.env, cwd=p.home, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        return out, err, proc.returncode

    async def connect(self, pod: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        p = self.kubelet.pod(pod)
        if port != int(p.arg("--port")):  # (the port the Job says its container serves, nothing else)
            raise ConnectionRefusedError(f"pod {pod} serves no port {port}")
        return await asyncio.open_connection("127.0.0.1", p.port())

    async def forget(self, pod: str) -> None:
        return None


# ---- the data plane over the API server's websockets, for the real KubeChannel ----------------

EXEC_V5 = "v5.channel.k8s.io"


class Front:
    """An API server's front door: `pods/<pod>/exec` and `pods/<pod>/portforward` websockets
    (the v5 exec channels, the port-forward channels with their port-number preamble) served
    from the kubelet's local pods, everything else passed to kmock. The sidecar's real
    KubeChannel speaks to this exactly as to a cluster."""

    def __init__(self, upstream: str, channel: LocalPodChannel) -> None:
        self.upstream, self.channel = upstream.rstrip("/"), channel
        self.url = ""
        self._runner: Any = None
        self._http: Any = None

    async def start(self) -> str:
        import aiohttp
        from aiohttp import web

        self._http = aiohttp.ClientSession()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        await self._http.close()
        await self._runner.cleanup()

    async def handle(self, request: Any) -> Any:
        import re

        from aiohttp import web

        m = re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/([^/]+)/(exec|portforward)", request.path)
        if m and request.headers.get("Upgrade", "").lower() == "websocket":
            return await (self.exec if m[2] == "exec" else self.forward)(request, m[1])
        body = await request.read()
        async with self._http.request(request.method, self.upstream + request.path_qs, data=body or None,
                                      headers={"Content-Type": request.headers.get("Content-Type",
                                                                                   "application/json")}) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")

    async def exec(self, request: Any, pod: str) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(protocols=(EXEC_V5,))
        await ws.prepare(request)
        argv = request.query.getall("command")
        stdin = bytearray()
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or msg.data[:1] == b"\xff":
                break
            if msg.data[:1] == b"\x00":
                stdin += msg.data[1:]
        try:
            out, err, rc = await self.channel.exec(pod, argv, bytes(stdin), 120)
        except Exception as e:  # noqa: BLE001 (what the API server says when the container is gone)
            await ws.send_bytes(b"\x03" + json.dumps({"status": "Failure", "message": str(e)}).encode())
            await ws.close()
            return ws
        for channel, data in ((1, out), (2, err)):
            for at in range(0, len(data), 1 << 16):
                await ws.send_bytes(bytes([channel]) + data[at:at + (1 << 16)])
        status = {"metadata": {}, "status": "Success"} if rc == 0 else {
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: exit status {rc}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]}}
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws

    async def forward(self, request: Any, pod: str) -> Any:
        from aiohttp import WSMsgType, web

        port = int(request.query["ports"])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        preamble = port.to_bytes(2, "little")
        await ws.send_bytes(b"\x00" + preamble)
        await ws.send_bytes(b"\x01" + preamble)
        try:
            reader, writer = await self.channel.connect(pod, port)
        except Exception as e:  # noqa: BLE001 (the error channel, as the API server does)
            await ws.send_bytes(b"\x01" + str(e).encode())
            await ws.close()
            return ws

        async def up() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    break
                if msg.data[:1] == b"\x00":
                    writer.write(msg.data[1:])
                    await writer.drain()
            writer.close()

        async def down() -> None:
            while chunk := await reader.read(1 << 16):
                await ws.send_bytes(b"\x00" + chunk)
            await ws.close()

        await asyncio.gather(up(), down(), return_exceptions=True)
        return ws


class KubeThread:
    """The whole fake cluster (kmock, the kubelet, the front door) on an event loop of its own,
    for tests whose sidecar is another process: `url` and `kubeconfig` are what it is given."""

    def __init__(self, workdir: Path, namespace: str) -> None:
        import threading

        self.workdir, self.ns = workdir, namespace
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 (said by start())
            self.error = e
            self.ready.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.cluster = Cluster()
        self.cluster.forbidden = set()
        async with self.cluster, kmock.Server(self.cluster):
            self.cluster["get /version/"] << {"major": "1", "minor": "31", "gitVersion": "v1.31.0-kmock"}
            for served in ("v1/pods", "v1/secrets", "batch/v1/jobs"):
                self.cluster.resources[served] = {"namespaced": True}
            self.kubelet = Kubelet(str(self.cluster.url), self.ns, self.workdir / "pods")
            self.kubelet.start()
            self.front = Front(str(self.cluster.url), LocalPodChannel(self.kubelet))
            url = await self.front.start()
            self.kubeconfig = kubeconfig(self.workdir / "kubeconfig", url, self.ns)
            self.ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.front.stop()
                await self.kubelet.stop()

    def start(self) -> KubeThread:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def run(self, coro: Any, timeout: float = 30) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def objects(self, plural: str) -> dict[str, dict[str, Any]]:
        async def read() -> dict[str, dict[str, Any]]:
            return {name: json.loads(json.dumps(obj.raw)) for (res, ns, name), obj in self.cluster.objects.items()
                    if res.plural == plural and ns == self.ns and not obj.deleted}
        return self.run(read())

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
