"""The k8s executor's contract (issue 16 point 4) against an in-memory Kubernetes API (kmock)
with a fake kubelet that runs each Job's container as a real process here (tests/kube_util.py):
the Job and Secret it creates, a 403 as config_error naming what is missing, a code bundle in
and commits home through the pod's exec stream, the agent's `para` reaching the sidecar's bound
socket through the pod, an evicted pod as `lost` with its reason and the harvested commits kept,
cancel as a foreground delete with the Secret gone, and a restarted sidecar finding its Jobs by
their labels. The real data plane (kr8s' exec and port-forward) runs only against a real
cluster: PARA_K8S_E2E=1 with a kubeconfig (test_real_cluster).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
from para_rpc import config
from para_rpc.errors import Code, ParaError
from para_rpc.executors import LaunchSpec
from para_rpc.executors.k8s import K8s, sidecar_id
from para_rpc.model import AgentRun

from agents_util import agent_env, agent_scripts, api, dispatch, out, step_profile, wait_file  # noqa: F401
from conftest import IDENTITY, make_repo, rev, run_para, shutdown_sidecar, start_sidecar, wait_until
from kube_util import Cluster, Front, Kubelet, KubeThread, LocalPodChannel, kubeconfig

NS = "agents"


class Kube:
    def __init__(self, cluster: Cluster, kubelet: Kubelet, cfg: Path, root: str) -> None:
        self.cluster, self.kubelet, self.cfg, self.root = cluster, kubelet, cfg, root

    def entry(self, **over: Any) -> dict[str, Any]:
        return config._k8s_executor("kube", {"kind": "k8s", "namespace": NS, "image": "example.org/para:1",
                                             "kubeconfig": str(self.cfg), "root": self.root,
                                             "python": "python3", "start_timeout": 20, **over})

    def executor(self, **over: Any) -> K8s:
        return K8s("kube", self.entry(**over), channel=LocalPodChannel(self.kubelet))

    def objects(self, plural: str) -> dict[str, dict[str, Any]]:
        return {name: json.loads(json.dumps(obj.raw)) for (res, ns, name), obj in self.cluster.objects.items()
                if res.plural == plural and ns == NS and not obj.deleted}

    def requests(self, method: str, path_part: str) -> list[Any]:
        return [r for r in self.cluster if str(r.method).endswith(method) and path_part in str(r.url)]


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[Kube]:
    cluster = Cluster()
    cluster.forbidden = set()
    root = tempfile.mkdtemp(prefix="pk-")  # (short: the session socket's path must fit sun_path)
    async with cluster, kmock.Server(cluster):
        cluster["get /version/"] << {"major": "1", "minor": "31", "gitVersion": "v1.31.0-kmock"}
        for served in ("v1/pods", "v1/secrets", "batch/v1/jobs"):
            cluster.resources[served] = {"namespaced": True}
        kubelet = Kubelet(str(cluster.url), NS, tmp_path / "pods")
        kubelet.start()
        try:
            yield Kube(cluster, kubelet, kubeconfig(tmp_path / "kubeconfig", str(cluster.url), NS), root)
        finally:
            await kubelet.stop()
            shutil.rmtree(root, ignore_errors=True)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def spec_for(repo: Path, session: str, argv: list[str], tmp: Path, token: str = "tok-123") -> LaunchSpec:
    git(repo, "branch", "-f", f"para/{session}", "main")
    prompt = tmp / f"{session}.prompt"
    prompt.write_text("do the task\n")
    return LaunchSpec(session=session, worktree=str(tmp / "local-wt"), argv=argv,
                      env={"PARA_TOKEN": token, "HOME": "/nowhere"}, log=str(tmp / f"{session}.log"),
                      prompt_file=str(prompt), repo_root=str(repo), branch=f"para/{session}")


# The agent: commits one file, leaves one dirty file, says what it sees of its environment, then
# waits to be stopped (or exits at once with `quick`).
AGENT = r"""
import json, os, subprocess, sys, time
open("work.txt", "w").write("agent work\n")
subprocess.run(["git", "add", "work.txt"], check=True)
subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "agent commit"], check=True)
open("dirty.txt", "w").write("not committed\n")
json.dump({k: os.environ.get(k) for k in ("API_KEY", "PARA_TOKEN", "PARA_SOCKET", "PARA_SESSION")},
          open(os.path.join(os.environ["HOME"], "seen.json"), "w"))
if sys.argv[1:] != ["quick"]:
    time.sleep(600)
"""


def agent_argv(*extra: str) -> list[str]:
    return [sys.executable, "-c", AGENT, *extra]


def run_of(placement: dict[str, Any]) -> AgentRun:
    return AgentRun(profile="test", mode="headless", argv=[], exit_file="x", executor="kube", placement=placement)


async def wait_for(what: Any, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await what()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.2)


async def test_the_job_the_secret_and_a_run_through_the_pods_exec_stream(kube: Kube, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "s3cret-value")
    repo = make_repo(tmp_path / "repo")
    ex = kube.executor(env_passthrough=["API_KEY"], resources={"limits": {"cpu": "2", "memory": "4Gi"}},
                       deadline=7200, ttl=300)
    spec = spec_for(repo, "s1", agent_argv("quick"), tmp_path)
    placement = await ex.prepare(spec)

    jobs = kube.objects("jobs")
    assert list(jobs) == [placement["job"]]
    job = jobs[placement["job"]]
    tags = {"para/sidecar": sidecar_id(), "para/repo": placement["repo"], "para/session": "s1"}
    assert tags.items() <= job["metadata"]["labels"].items()
    js = job["spec"]
    assert (js["backoffLimit"], js["activeDeadlineSeconds"], js["ttlSecondsAfterFinished"]) == (0, 7200, 300)
    pod_spec = js["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False and pod_spec["restartPolicy"] == "Never"
    assert tags.items() <= js["template"]["metadata"]["labels"].items()
    (c,) = pod_spec["containers"]
    assert c["command"] == ["python3", "-m", "para_rpc.worker_hold"]  # argv arrays, no shell
    assert c["args"] == ["--root", kube.root, "--repo", placement["repo"], "--session", "s1", "--port", "7787"]
    assert c["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"}}
    assert c["envFrom"] == [{"secretRef": {"name": placement["secret"]}}]
    assert "env" not in c and "s3cret-value" not in json.dumps(job)  # the secret is in the Secret only
    secret = kube.objects("secrets")[placement["secret"]]
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", placement["job"], job["metadata"]["uid"])
    assert set(secret["data"]) == {"API_KEY"}

    run = run_of(placement)
    await ex.start(run, spec, None)
    await wait_for(lambda: _state(ex, run, "exited"))
    tip = await ex.harvest(run)
    assert tip and git(repo, "log", "-1", "--format=%s", tip) == "agent commit"
    assert git(repo, "rev-parse", "refs/para/remote/s1") == tip
    assert "dirty.txt" in git(repo, "ls-tree", "--name-only", "refs/para/checkpoint/s1")
    seen = json.loads((Path(kube.root) / "seen.json").read_text())  # (HOME is the root in the pod)
    # The passthrough value reached the agent from the pod's Secret, not from the request:
    assert seen["API_KEY"] == "s3cret-value" and seen["PARA_TOKEN"] == "tok-123"
    execs = ex.channel.execs  # type: ignore[attr-defined]
    assert all(argv == ["python3", "-m", "para_rpc.worker"] for _, argv, _ in execs)  # one constant command
    assert not any(b"s3cret-value" in stdin for _, _, stdin in execs)
    # Nor in any file under the worker's root (but what the agent itself wrote down).
    leaks = [f for f in Path(kube.root).rglob("*") if f.is_file() and f.name != "seen.json"
             and b"s3cret-value" in f.read_bytes()]
    assert leaks == []
    await ex.release(run)


async def _state(ex: K8s, run: AgentRun, want: str) -> bool:
    return (await ex.poll(run)).state == want


async def test_the_agents_para_reaches_the_bound_socket_through_the_pod(kube: Kube, tmp_path: Path) -> None:
    """The pod cannot dial this machine: the hold process's unix socket in the pod is carried
    over connections the sidecar opened, to the session's bound socket here."""
    repo = make_repo(tmp_path / "repo")
    ex = kube.executor()
    placement = await ex.prepare(spec_for(repo, "s2", agent_argv(), tmp_path))
    run = run_of(placement)
    bound = tempfile.mktemp(prefix="pk-bound-", dir="/tmp")
    heard: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        heard.append(line)
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=bound)
    try:
        assert await ex.bind(run, bound) == placement["socket"]
        client = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                  "s.sendall(b'hello from the pod\\n'); print(s.makefile('rb').readline().decode(), end='')")
        for _ in range(3):  # (more calls than spares: each is replaced)
            out, err, rc = await ex.channel.exec(placement["pod"], ["python3", "-c", client, placement["socket"]],
                                                 b"", 30)
            assert (rc, out) == (0, b"echo hello from the pod\n"), err
        assert heard == [b"hello from the pod\n"] * 3
    finally:
        ex.unbind(run)
        server.close()
        os.unlink(bound)
    await ex.release(run)


async def test_a_403_is_config_error_naming_the_verb_and_nothing_is_left(kube: Kube, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    kube.cluster.forbidden = {("create", "jobs")}
    ex = kube.executor()
    with pytest.raises(ParaError) as e:
        await ex.prepare(spec_for(repo, "s3", agent_argv(), tmp_path))
    assert e.value.code is Code.config_error
    assert "refused to create jobs" in e.value.message and "`create` on `batch/jobs`" in e.value.message
    assert not kube.requests("POST", "/secrets") and not kube.kubelet.pods
    # Refused the Secret instead: the Job made just before is deleted again.
    kube.cluster.forbidden = {("create", "secrets")}
    with pytest.raises(ParaError) as e:
        await ex.prepare(spec_for(repo, "s3", agent_argv(), tmp_path))
    assert e.value.code is Code.config_error and "create secrets" in e.value.message
    assert kube.objects("jobs") == {} and kube.requests("DELETE", "/jobs/")


async def test_an_evicted_pod_is_lost_with_its_reason_and_harvested_commits_stay(kube: Kube, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    ex = kube.executor()
    spec = spec_for(repo, "s4", agent_argv(), tmp_path)
    run = run_of(await ex.prepare(spec))
    await ex.start(run, spec, None)
    await ex.bind(run, str(tmp_path / "bound.sock"))  # (spares kept open to the pod until it is gone)
    assert ex._pumps
    wt = Path(run.placement["worktree"])
    await wait_for(lambda: _has_commit(wt))
    tip = await ex.harvest(run)
    assert tip and git(repo, "log", "-1", "--format=%s", tip) == "agent commit"
    await kube.kubelet.evict(run.placement["job"])
    state = await ex.poll(run)
    assert state.state == "lost", state
    assert state.reason and "Evicted" in state.reason and "low on resource: memory" in state.reason
    assert not ex._pumps  # (no spares kept open to a pod that is gone)
    assert not wt.exists()  # the pod's disk is gone with it...
    assert git(repo, "rev-parse", "refs/para/remote/s4") == tip  # ...what was harvested is here
    with pytest.raises(ParaError):
        await ex.harvest(run)
    await ex.release(run)


async def _has_commit(wt: Path) -> bool:
    proc = await asyncio.create_subprocess_exec("git", "log", "-1", "--format=%s", cwd=wt,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return out.strip() == b"agent commit"


async def test_cancel_stops_harvests_then_deletes_the_job_in_the_foreground(kube: Kube, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    ex = kube.executor()
    spec = spec_for(repo, "s5", agent_argv(), tmp_path)
    run = run_of(await ex.prepare(spec))
    await ex.start(run, spec, None)
    await wait_for(lambda: _has_commit(Path(run.placement["worktree"])))
    stopped = await ex.stop(run, 0.0)
    assert stopped["pids"] and not stopped["left_running"]
    assert await ex.harvest(run)
    job, secret, pod = run.placement["job"], run.placement["secret"], run.placement["pod"]
    proc = kube.kubelet.pod(pod).proc
    await ex.release(run)
    (delete,) = kube.requests("DELETE", f"/jobs/{job}")
    assert delete.data["propagationPolicy"] == "Foreground"
    assert secret not in kube.objects("secrets") and job not in kube.objects("jobs")
    assert proc is not None
    await asyncio.wait_for(proc.wait(), 10)  # its pod went with it
    await wait_for(lambda: _no_pod(kube, pod))


async def _no_pod(kube: Kube, pod: str) -> bool:
    return pod not in kube.objects("pods")


async def test_a_restarted_sidecar_finds_its_jobs_by_their_labels(kube: Kube, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    first = kube.executor()
    spec = spec_for(repo, "s6", agent_argv(), tmp_path)
    run = run_of(await first.prepare(spec))
    await first.start(run, spec, None)
    recorded = run_of(dict(run.placement))  # what the store kept
    later = kube.executor()  # a new sidecar: nothing in memory
    assert [r.placement["job"] for r in await later.reconcile([recorded])] == [run.placement["job"]]
    assert [j["metadata"]["name"] for j in await later.jobs()] == [run.placement["job"]]
    # The Job deleted behind its back: no longer alive, and poll says why.
    await later.api.call("DELETE", "jobs", run.placement["job"])
    await wait_for(lambda: _no_pod(kube, run.placement["pod"]))
    assert await later.reconcile([recorded]) == []
    state = await later.poll(recorded)
    assert state.state == "lost" and state.reason and "Job was deleted" in state.reason
    await later.release(recorded)


async def test_the_real_data_plane_over_the_api_servers_websockets(kube: Kube, tmp_path: Path) -> None:
    """KubeChannel itself (no double): exec over v5.channel.k8s.io with stdin and the exit
    status from the Status on channel 3, and the bound channel over port-forward websockets,
    here through an API server front that serves both from the fake kubelet's pods."""
    front = Front(str(kube.cluster.url), LocalPodChannel(kube.kubelet))
    url = await front.start()
    try:
        entry = kube.entry(kubeconfig=str(kubeconfig(tmp_path / "front.kubeconfig", url, NS)))
        ex = K8s("kube", entry)  # (its own KubeChannel)
        repo = make_repo(tmp_path / "repo")
        spec = spec_for(repo, "s7", agent_argv("quick"), tmp_path)
        run = run_of(await ex.prepare(spec))  # refs, receive (a bundle on stdin), prepare: all over exec
        out, err, rc = await ex.channel.exec(run.placement["pod"], ["python3", "-c", "import sys; sys.exit(3)"], b"", 30)
        assert rc == 3, err
        bound = tempfile.mktemp(prefix="pk-bound-", dir="/tmp")

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"echo " + await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(answer, path=bound)
        try:
            await ex.bind(run, bound)
            client = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                      "s.sendall(b'over the forward\\n'); print(s.makefile('rb').readline().decode(), end='')")
            out, err, rc = await ex.channel.exec(run.placement["pod"], ["python3", "-c", client, run.placement["socket"]],
                                                 b"", 30)
            assert (rc, out) == (0, b"echo over the forward\n"), err
        finally:
            ex.unbind(run)
            server.close()
            os.unlink(bound)
        await ex.start(run, spec, None)
        await wait_for(lambda: _state(ex, run, "exited"))
        tip = await ex.harvest(run)
        assert tip and git(repo, "log", "-1", "--format=%s", tip) == "agent commit"
        await ex.release(run)
        assert kube.objects("jobs") == {}
    finally:
        await front.stop()


def test_config_validates_k8s_executors() -> None:
    ok = config._executors({"kube": {"kind": "k8s", "image": "reg/para:1"}})["kube"]
    assert (ok["namespace"], ok["root"], ok["deadline"], ok["port"]) == ("default", "/para", 86400, 7787)
    for bad, why in (({"kind": "k8s"}, "image is required"),
                     ({"kind": "k8s", "image": "i", "host": "x"}, "unknown field(s) host"),
                     ({"kind": "k8s", "image": "i", "namespace": "Bad_NS"}, "namespace"),
                     ({"kind": "k8s", "image": "i", "resources": {"limits": {"cpu": "two"}}}, "resources.limits"),
                     ({"kind": "k8s", "image": "i", "root": "para"}, "absolute"),
                     ({"kind": "k8s", "image": "i", "env_passthrough": ["PARA_TOKEN"]}, "env_passthrough"),
                     ({"kind": "k8s", "image": "i; rm -rf /"}, "image")):
        with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
            config._executors({"kube": bad})


@pytest.mark.skipif(os.environ.get("PARA_K8S_E2E") != "1",
                    reason="opt-in: set PARA_K8S_E2E=1 and KUBECONFIG (and PARA_K8S_IMAGE, an image with this para, "
                           "python3 and git) to run against a real cluster; no cluster can run on the CI machines")
async def test_real_cluster(tmp_path: Path) -> None:
    """The real data plane: kr8s' exec (v5.channel.k8s.io) and port-forward, on the user's cluster."""
    image = os.environ.get("PARA_K8S_IMAGE")
    if not image or not os.environ.get("KUBECONFIG"):
        pytest.fail("PARA_K8S_E2E=1 needs KUBECONFIG and PARA_K8S_IMAGE", pytrace=False)
    entry = config._k8s_executor("real", {"kind": "k8s", "image": image, "kubeconfig": os.environ["KUBECONFIG"],
                                          "namespace": os.environ.get("PARA_K8S_NAMESPACE", "default")})
    ex = K8s("real", entry)
    assert (await ex.check())["para"]
    repo = make_repo(tmp_path / "repo")
    spec = spec_for(repo, "e2e", ["python3", "-c", AGENT, "quick"], tmp_path)
    run = run_of(await ex.prepare(spec))
    try:
        await ex.start(run, spec, None)
        await wait_for(lambda: _state(ex, run, "exited"), 120)
        tip = await ex.harvest(run)
        assert tip and git(repo, "log", "-1", "--format=%s", tip) == "agent commit"
    finally:
        await ex.release(run)


async def test_check_reaches_the_api_and_names_a_missing_permission(kube: Kube) -> None:
    got = await kube.executor().check()
    assert got["git"] == "Kubernetes v1.31.0-kmock"
    kube.cluster.forbidden = {("list", "jobs")}
    with pytest.raises(ParaError) as e:
        await kube.executor().check()
    assert e.value.code is Code.config_error and "`list` on `batch/jobs`" in e.value.message
    # The account may list Jobs but RBAC denies it Secrets: said before anything is created.
    kube.cluster.forbidden = set()
    kube.cluster["post /apis/authorization.k8s.io/v1/selfsubjectaccessreviews"] << (
        lambda req: {"status": {"allowed": req.data["spec"]["resourceAttributes"]["resource"] != "secrets"}})
    with pytest.raises(ParaError) as e:
        await kube.executor().check()
    assert "may not create secrets, delete secrets in namespace agents" in e.value.message, e.value.message
    assert not kube.requests("POST", "/jobs")


# ---- through the real CLI and sidecar (another process: the cluster runs on a thread) --------

@pytest.fixture
def kube_thread(tmp_path: Path) -> Iterator[KubeThread]:
    kt = KubeThread(tmp_path / "kube", NS).start()
    root = tempfile.mkdtemp(prefix="pk-")
    kt.root = root  # type: ignore[attr-defined]
    try:
        yield kt
    finally:
        kt.stop()
        shutil.rmtree(root, ignore_errors=True)


def configure_kube(kt: KubeThread, **over: Any) -> None:
    entry = {"kind": "k8s", "namespace": NS, "image": "example.org/para:1", "kubeconfig": str(kt.kubeconfig),
             "root": kt.root, "python": sys.executable, "start_timeout": 30,  # type: ignore[attr-defined]
             "env_passthrough": list(IDENTITY), **over}
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"executors": {"kube": entry}}))


def job_of(kt: KubeThread, session: str) -> dict[str, Any]:
    (job,) = [j for j in kt.objects("jobs").values() if j["metadata"]["labels"]["para/session"] == session]
    return job


@pytest.mark.usefixtures("sidecar")
def test_dispatch_to_a_job_lands_on_local_main_through_the_queue(api: Any, repo: Path, out: Path,
                                                                 kube_thread: KubeThread) -> None:
    """The sidecar (another process, with the real KubeChannel) creates the Job, the agent runs
    in the pod's worktree, its `para status` and `para integrate` come out through the
    port-forward, its commit lands on local main through the queue; then the Job and its
    Secret are deleted."""
    kt = kube_thread
    configure_kube(kt)
    prof = step_profile(f"env:{out}/env.json", "status:writing hello", "write:hello.txt=hello\n",
                        "integrate:Add hello")
    base = rev(repo, "main")
    r, _ = dispatch(repo, "hello", "-p", "Add a hello file", "--agent", "w", "--executor", "kube",
                    profiles={"w": prof})
    assert r["name"] == "hello" and r["status"] == "active"
    api.wait_event("integrated", "hello", timeout=90)
    seen = json.loads((out / "env.json").read_text())
    root = Path(kt.root)  # type: ignore[attr-defined]
    assert Path(seen["cwd"]).is_relative_to(root / "wt") and seen["env"]["PARA_SESSION"] == "hello"
    assert Path(seen["env"]["PARA_SOCKET"]).is_relative_to(root / "sock")
    assert api.wait_event("status", "hello")["data"]["task"] == "writing hello"
    assert git(repo, "show", "main:hello.txt") == "hello"
    assert git(repo, "log", "-1", "--format=%s", "main") == "Add hello"
    assert git(repo, "rev-parse", "main~1") == base
    assert api.call("para/show", session="hello")["agent"]["executor"] == "kube"
    wait_until(lambda: not kt.objects("jobs") and not kt.objects("secrets"), 60, "the Job and Secret to go")


@pytest.mark.usefixtures("sidecar")
def test_an_evicted_pod_makes_the_run_lost_with_the_reason_and_keeps_its_commits(
        api: Any, repo: Path, out: Path, kube_thread: KubeThread) -> None:
    kt = kube_thread
    configure_kube(kt)
    prof = step_profile("write:a.txt=one\n", "commit:first", "status:committed", f"touch:{out}/ready",
                        f"wait:{out}/never")
    dispatch(repo, "evicted", "-p", "work then hang", "--agent", "w", "--executor", "kube", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    harvested = api.wait_event("harvested", "evicted", timeout=60)
    wait_until(lambda: git(repo, "log", "-1", "--format=%s", "para/evicted") == "first", 60,
               "the commit to be harvested", interval=0.2)
    assert harvested
    job = job_of(kt, "evicted")["metadata"]["name"]
    kt.run(kt.kubelet.evict(job))
    ev = api.wait_event("agent_exited", "evicted", timeout=60)
    assert ev["data"]["lost"] is True and "Evicted" in ev["data"]["reason"], ev
    assert "low on resource: memory" in ev["data"]["reason"]
    assert git(repo, "show", "para/evicted:a.txt") == "one"  # the harvested commit stays
    show = api.call("para/show", session="evicted")
    assert show["status"] == "active" and any("Evicted" in n for n in show["notes"]), show["notes"]


@pytest.mark.usefixtures("sidecar")
def test_cancel_deletes_the_job_in_the_foreground_and_its_secret(
        api: Any, repo: Path, out: Path, kube_thread: KubeThread) -> None:
    kt = kube_thread
    configure_kube(kt)
    prof = step_profile("write:a.txt=one\n", "commit:first", "write:dirty.txt=wip\n", f"touch:{out}/ready",
                        f"wait:{out}/never")
    dispatch(repo, "gone", "-p", "work then hang", "--agent", "w", "--executor", "kube", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    job = job_of(kt, "gone")["metadata"]["name"]
    secret = f"{job}-env"
    assert secret in kt.objects("secrets")
    r = json.loads(run_para("cancel", "gone", "--json", cwd=repo).stdout)
    archive = r["archived_branch"]
    assert git(repo, "log", "-1", "--format=%s", f"{archive}~1") == "first"  # stopped, harvested, archived
    assert git(repo, "show", f"{archive}:dirty.txt") == "wip"
    wait_until(lambda: job not in kt.objects("jobs") and secret not in kt.objects("secrets"), 60,
               "the Job and its Secret to go")
    deletes = kt.run(_requests(kt, "DELETE", f"/jobs/{job}"))
    assert deletes and all(d["propagationPolicy"] == "Foreground" for d in deletes), deletes


async def _requests(kt: KubeThread, method: str, part: str) -> list[Any]:
    return [r.data for r in kt.cluster if str(r.method).endswith(method) and part in str(r.url)]


def test_a_sidecar_killed_mid_run_serves_the_pod_again_and_records_the_exit(
        api: Any, repo: Path, out: Path, kube_thread: KubeThread, sidecar: Any, runtime_dir: Path) -> None:
    """kill -9 of the sidecar while the agent works in its pod: the pod keeps running; the
    next sidecar (a new executor object, only the stored placement) opens new spares to the
    pod, so the agent's next `para status` arrives, and records its exit."""
    kt = kube_thread
    configure_kube(kt)
    prof = step_profile(f"touch:{out}/ready", f"wait:{out}/go", "status:after the restart", "exit:3")
    dispatch(repo, "k9", "-p", "outlive the sidecar", "--agent", "w", "--executor", "kube", profiles={"w": prof})
    wait_file(out / "ready", timeout=60)
    sidecar.proc.kill()
    sidecar.proc.wait(timeout=15)
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0")
    try:
        wait_until(lambda: "k9: its socket is served on executor kube again" in sc.log_tail(200), 60,
                   "the new sidecar to serve the agent's socket in its pod")
        (out / "go").touch()
        status = api.wait_event("status", "k9", timeout=60)
        assert status["data"]["task"] == "after the restart"
        assert api.wait_agent("k9", timeout=60)["agent"]["exit_code"] == 3
        assert job_of(kt, "k9")  # (the Job stays until the session ends)
    finally:
        shutdown_sidecar(sc)


@pytest.mark.usefixtures("sidecar")
def test_executor_list_and_check_through_the_cli(repo: Path, kube_thread: KubeThread) -> None:
    kt = kube_thread
    configure_kube(kt, context="", max_running=5)
    listed = json.loads(run_para("executor", "list", "--json", cwd=repo).stdout)
    kube = listed["executors"][1]
    assert (kube["name"], kube["kind"], kube["host"], kube["port"], kube["max_running"]) == \
        ("kube", "k8s", f"current context/{NS}", 7787, 5)
    checked = json.loads(run_para("executor", "check", "kube", "--json", cwd=repo).stdout)["checked"]
    assert checked["name"] == "kube" and checked["git"] == "Kubernetes v1.31.0-kmock"
    kt.cluster.forbidden = {("list", "jobs")}
    proc = run_para("executor", "check", "kube", "--json", cwd=repo, check=False)
    assert proc.returncode == Code.config_error.exit and "`list` on `batch/jobs`" in proc.stdout, proc.stdout
