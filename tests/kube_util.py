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
