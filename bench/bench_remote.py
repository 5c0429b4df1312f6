#!/usr/bin/env python3
"""Benchmark: agents on an SSH host against the same agents on this machine (issue 16, T9).

    python bench/bench_remote.py [--quick] [--smoke]

Everything runs in a private environment (fresh HOME, PARA_CONFIG, a 0700 PARA_RUNTIME_DIR
under /tmp, no global/system git config, a fixed git identity, TMUX unset) with its own
sidecar, and a real OpenSSH server on a loopback port (tests/sshd.py: Debian's sshd as this
user, temporary keys; the "host" is this machine, so the worker's work competes with the
sidecar for the same 2 CPUs, which makes the SSH figures pessimistic).

1. Dispatch and landing. In identical repositories (300 tracked files), 20 scripted agents
   (para_rpc.scripted_agent, the real `para` CLI) each write one file of their own, wait for
   a go signal, then `para integrate`. Dispatched one after another as `para/dispatch`
   requests on one connection, with the executor `local` and then `h1` (the SSH host):
     dispatch  from the first request until all 20 answered (worktree made on the host, the
               bound socket forwarded, the runner started)
     landed    from the go signal until all 20 integrations are on main (each harvested,
               queued, squash-merged by the sidecar, the host's worktree released)
   With the sidecar's CPU seconds (its own, from /proc) in each, and the SSH logins sshd
   accepted (one connection serves every session). Ratios are SSH / local from the same run;
   `extra ms/session` is what the host adds to each session.

2. Harvest cost. 20 agents parked on the host, each with one uncommitted file. The sidecar's
   CPU over a window with the sweep off (`harvest_interval` 86400: only the runs' polls) and
   over a window with the sweep as fast as it goes (`harvest_interval` 1: every poll of a run
   harvests it), divided by the harvests counted (`harvested` events): the sidecar's CPU per
   session-harvest. Against raw git from the same run: `git fetch` over ssh of a branch with
   one new commit, from a clone of the repository (the ssh client's and git's CPU, and the wall).

--quick: one repeat; --smoke: 2 agents, 6 s windows, nothing written.
Results: a table on stdout and bench/results/remote.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (ROOT, SMOKE_HELP, Sidecar, byte_compile_para, git, isolate, machine, make_repo, proc_cpu,
                     results_path, write_results)

sys.path.insert(0, str(ROOT / "tests"))
import sshd  # (tests/sshd.py: no pytest in it)

RESULTS = results_path("remote")
AGENTS = 20
REPEATS = 3
FILES = 300
WINDOW = 20.0          # seconds of each harvest window
FETCH_RUNS = 5
LAND_TIMEOUT = 900.0
PRELOAD_AFTER = 12.0   # seconds after its start when the sidecar has loaded everything it defers

TASK = """Write note {i}.

```file:notes/n{i:02d}.txt
note {i} from {where}
```

```agent
status wrote note {i}
wait-for {go}
```

When done: para integrate "add note {i} ({where})"
"""

PARKED = """Leave note {i} uncommitted and wait.

```file:parked/p{i:02d}.txt
parked {i}
```

```agent
wait-for {stop}
```
"""


def configure(config: Path, host: sshd.SshHost, **over: Any) -> None:
    config.write_text(json.dumps({"executors": {"h1": host.entry(**over)}}))


def logins(host: sshd.SshHost) -> int:
    return host.log.read_text(errors="replace").count("Accepted publickey") if host.log.exists() else 0


def fresh_copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return Path(os.path.realpath(dest))


def all_events(conn: Any, repo: Path, after: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = conn.request("para/events", {"cwd": str(repo), "after": after, "limit": 1000})["events"]
        out += page
        if len(page) < 1000:
            return out
        after = page[-1]["id"]


def events(conn: Any, repo: Path, kind: str, after: int = 0) -> list[dict[str, Any]]:
    return [e for e in all_events(conn, repo, after) if e["kind"] == kind]


class Seen:
    """The events of one kind seen so far, read on from the last one each time (asking for all
    of them ten times a second would cost the sidecar what is being measured)."""

    def __init__(self, conn: Any, repo: Path, kind: str) -> None:
        self.conn, self.repo, self.kind, self.after, self.found = conn, repo, kind, 0, []

    def __call__(self) -> list[dict[str, Any]]:
        new = all_events(self.conn, self.repo, self.after)
        if new:
            self.after = new[-1]["id"]
        self.found += [e for e in new if e["kind"] == self.kind]
        return self.found


def last_event(conn: Any, repo: Path) -> int:
    return max((e["id"] for e in all_events(conn, repo)), default=0)


def wait_for(what: str, check, timeout: float, conn: Any = None, repo: Path | None = None) -> None:
    """Until check(); on timeout, exit saying what the sessions that were not done hold."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            stuck = ""
            if conn is not None:
                rows = conn.request("para/list", {"cwd": str(repo), "all": True})["sessions"]
                stuck = "; ".join(f"{s['name']} {s['status']}: {' '.join(s.get('notes') or [])[:300]}"
                                  for s in rows if s["status"] != "integrated")
            raise SystemExit(f"timed out waiting for {what}" + (f" ({stuck})" if stuck else ""))
        time.sleep(0.1)


# ---- phase 1: dispatch and landing ---------------------------------------------------

def one_run(work: Path, template: Path, sc: Sidecar, executor: str, tag: str, host: sshd.SshHost) -> dict[str, Any]:
    repo = fresh_copy(template, work / f"r-{tag}")
    go = work / f"go-{tag}"
    base = git("rev-parse", "main", cwd=repo)
    with sc.connect() as conn:
        conn.request("para/list", {"cwd": str(repo)})  # the repository is open before the clock starts
        accepted0, cpu0 = logins(host), proc_cpu(sc.pid)
        t0 = time.perf_counter()
        for i in range(AGENTS):
            conn.request("para/dispatch", {"cwd": str(repo), "name": f"n{i:02d}", "agent": "scripted",
                                           "mode": "headless", "executor": executor,
                                           "prompt": TASK.format(i=i, where=executor, go=go)})
        dispatch = time.perf_counter() - t0
        cpu1 = proc_cpu(sc.pid)
        # Every agent has written its file and reported before the go: landing starts level.
        statuses = Seen(conn, repo, "status")
        wait_for("the agents to report", lambda: len({e["session"] for e in statuses()}) >= AGENTS,
                 LAND_TIMEOUT)
        integrated = Seen(conn, repo, "integrated")
        integrated()  # (read up to now: the landing's polls read only what is new)
        cpu2 = proc_cpu(sc.pid)
        t1 = time.perf_counter()
        go.touch()
        wait_for(f"{AGENTS} integrations ({executor})",
                 lambda: len(integrated()) >= AGENTS, LAND_TIMEOUT, conn, repo)
        landed = time.perf_counter() - t1
        cpu3 = proc_cpu(sc.pid)
        accepted = logins(host) - accepted0
        sessions = conn.request("para/list", {"cwd": str(repo), "all": True})["sessions"]
    on_main = git("rev-list", "--count", f"{base}..main", cwd=repo)
    notes = git("ls-tree", "--name-only", "main", "notes/", cwd=repo).split()
    if int(on_main) != AGENTS or len(notes) != AGENTS:
        raise SystemExit(f"{executor}: {on_main} commits and {len(notes)} notes landed on main, not {AGENTS}")
    if any(s["status"] != "integrated" for s in sessions):
        raise SystemExit(f"{executor}: not all sessions integrated: {[(s['name'], s['status']) for s in sessions]}")
    return {"dispatch_s": dispatch, "landed_s": landed, "dispatch_cpu_s": cpu1[0] - cpu0[0],
            "landed_cpu_s": cpu3[0] - cpu2[0], "ssh_logins": accepted}


def phase_land(work: Path, template: Path, sc: Sidecar, host: sshd.SshHost) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "h1": []}
    for r in range(REPEATS):
        for executor, done in runs.items():  # interleaved, so drift affects both alike
            done.append(one_run(work, template, sc, executor, f"{executor}-{r}", host))
    med = {ex: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for ex, rs in runs.items()}
    loc, ssh = med["local"], med["h1"]
    return {"runs": runs, "median": med,
            "ratio_dispatch": ssh["dispatch_s"] / loc["dispatch_s"],
            "ratio_landed": ssh["landed_s"] / loc["landed_s"],
            "extra_ms_per_session_dispatch": 1000 * (ssh["dispatch_s"] - loc["dispatch_s"]) / AGENTS,
            "extra_ms_per_session_landed": 1000 * (ssh["landed_s"] - loc["landed_s"]) / AGENTS,
            "ssh_logins_max": max(x["ssh_logins"] for x in runs["h1"])}


# ---- phase 2: harvest cost --------------------------------------------------------------

def window(conn: Any, repo: Path, sc: Sidecar, seconds: float) -> tuple[float, float, int]:
    """(sidecar CPU s, its children's CPU s, harvests) over `seconds`."""
    after = last_event(conn, repo)
    cpu0 = proc_cpu(sc.pid)
    time.sleep(seconds)
    cpu1 = proc_cpu(sc.pid)
    return cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], len(events(conn, repo, "harvested", after))


def raw_fetch(work: Path, template: Path, host: sshd.SshHost) -> dict[str, Any]:
    """`git fetch` over ssh of a branch with one new commit, FETCH_RUNS times: the ssh client's
    and git's CPU (this side) and the wall."""
    remote = fresh_copy(template, work / "fetch-remote")
    local = work / "fetch-local"
    git("clone", "-q", str(remote), str(local), cwd=work)
    ssh = (f"ssh -i {host.key} -p {host.port} -o UserKnownHostsFile={host.known_hosts} "
           "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ForwardAgent=no")
    env = {**os.environ, "GIT_SSH_COMMAND": ssh}
    walls, cpus = [], []
    for i in range(FETCH_RUNS):
        git("checkout", "-q", "-b", f"b{i}", "main", cwd=remote)
        (remote / f"fetched{i}.txt").write_text(f"{i}\n")
        git("add", "-A", cwd=remote)
        git("commit", "-q", "-m", f"one commit {i}", cwd=remote)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        res = subprocess.run(["git", "fetch", "-q", f"ssh://{host.user}@{host.host}/{remote}",
                              f"b{i}:refs/remotes/h/b{i}"], cwd=local, env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if res.returncode != 0:
            raise SystemExit(f"raw git fetch over ssh failed: {res.stderr.strip()}")
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {"runs": FETCH_RUNS, "wall_ms": 1000 * statistics.median(walls), "cpu_ms": 1000 * statistics.median(cpus)}


def phase_harvest(work: Path, template: Path, sc: Sidecar, host: sshd.SshHost, config: Path) -> dict[str, Any]:
    repo = fresh_copy(template, work / "harvest")
    stop = work / "stop-parked"
    configure(config, host, harvest_interval=86400)
    with sc.connect() as conn:
        conn.request("para/list", {"cwd": str(repo)})
        for i in range(AGENTS):
            conn.request("para/dispatch", {"cwd": str(repo), "name": f"p{i:02d}", "agent": "scripted",
                                           "mode": "headless", "executor": "h1",
                                           "prompt": PARKED.format(i=i, stop=stop)})
        # Parked: every agent's file written (its status report harvested it).
        wait_for("the parked agents' files", lambda: len(list((host.dir / "worker").glob("wt/*/*/parked/*.txt")))
                 >= AGENTS, LAND_TIMEOUT)
        # (the sidecar loads its LSP and MCP layers once, 10 s after it started: not in a window)
        time.sleep(max(2.0, sc.started + PRELOAD_AFTER - time.monotonic()))
        quiet = window(conn, repo, sc, WINDOW)
        configure(config, host, harvest_interval=1)
        busy = window(conn, repo, sc, WINDOW)
        configure(config, host, harvest_interval=86400)
        checkpoints = git("for-each-ref", "--format=%(refname)", "refs/para/checkpoint/", cwd=repo).split()
        for i in range(AGENTS):
            conn.request("para/cancel", {"cwd": str(repo), "session": f"p{i:02d}", "discard": True, "force": True})
        stop.touch()
    if busy[2] == 0:
        raise SystemExit("no harvest happened with harvest_interval 1")
    if len(checkpoints) != AGENTS:
        raise SystemExit(f"{len(checkpoints)} checkpoints of uncommitted work came home, not {AGENTS}")
    raw = raw_fetch(work, template, host)
    per = 1000 * (busy[0] - quiet[0]) / busy[2]
    per_all = 1000 * (busy[0] + busy[1] - quiet[0] - quiet[1]) / busy[2]
    return {"window_s": WINDOW, "quiet": {"cpu_s": quiet[0], "children_cpu_s": quiet[1], "harvests": quiet[2]},
            "busy": {"cpu_s": busy[0], "children_cpu_s": busy[1], "harvests": busy[2]},
            "harvests_per_s": busy[2] / WINDOW, "sidecar_cpu_ms_per_harvest": per,
            "with_git_children_cpu_ms_per_harvest": per_all, "raw_fetch": raw,
            "ratio_vs_raw_fetch_cpu": per_all / raw["cpu_ms"] if raw["cpu_ms"] else None}


# ---- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    global AGENTS, REPEATS, FILES, WINDOW, FETCH_RUNS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat of phase 1, 10 s harvest windows")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if args.quick or args.smoke:
        REPEATS, WINDOW = 1, 10.0
    if args.smoke:
        AGENTS, FILES, WINDOW, FETCH_RUNS = 2, 10, 6.0, 1  # (polls come every 2 s: 6 s holds harvests)
    byte_compile_para()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="para-bench-remote-"))
    runtime = isolate(work, unset=("PARA_", "GIT_", "TMUX"))
    config = Path(os.environ["PARA_CONFIG"])
    sc = proc = None
    try:
        (work / "sshd").mkdir()
        host, proc = sshd.start(work / "sshd")
        configure(config, host)
        template = make_repo(work / "template", FILES)
        sc = Sidecar(runtime)
        land = phase_land(work, template, sc, host)
        harvest = phase_harvest(work, template, sc, host, config)
    finally:
        if sc is not None:
            sc.stop()
        if proc is not None:
            sshd.stop(proc)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
    result = {"agents": AGENTS, "files": FILES, "repeats": REPEATS,
              "machine": machine(loadavg_before=load_before, loadavg_after=os.getloadavg()),
              "land": land, "harvest": harvest}
    if not args.smoke:
        write_results(RESULTS, result)

    m = land["median"]
    print(f"{AGENTS} scripted agents ({FILES} files), local vs one SSH host on loopback, median of {REPEATS}:")
    print(f"  {'':<26} {'local':>9} {'ssh':>9} {'ssh/local':>10} {'extra ms/session':>17}")
    for key, label in (("dispatch", "dispatch s"), ("landed", "go -> all landed s")):
        loc, ssh = m["local"][f"{key}_s"], m["h1"][f"{key}_s"]
        print(f"  {label:<26} {loc:>9.2f} {ssh:>9.2f} {ssh / loc:>9.2f}x {1000 * (ssh - loc) / AGENTS:>17.0f}")
    for key, label in (("dispatch_cpu_s", "  sidecar CPU s"), ("landed_cpu_s", "  sidecar CPU s (landing)")):
        print(f"  {label:<26} {m['local'][key]:>9.2f} {m['h1'][key]:>9.2f}")
    print(f"  ssh logins accepted per run of {AGENTS} sessions: {land['ssh_logins_max']} (one connection)")
    h, raw = harvest, harvest["raw_fetch"]
    print(f"\nHarvest of {AGENTS} parked agents with uncommitted work, {h['window_s']:.0f} s windows:")
    print(f"  sweep off: sidecar CPU {h['quiet']['cpu_s']:.2f} s ({h['quiet']['harvests']} harvests); "
          f"sweep every poll: {h['busy']['cpu_s']:.2f} s, {h['busy']['harvests']} harvests "
          f"({h['harvests_per_s']:.1f}/s)")
    print(f"  per session-harvest: sidecar {h['sidecar_cpu_ms_per_harvest']:.1f} ms CPU, "
          f"with its git children {h['with_git_children_cpu_ms_per_harvest']:.1f} ms")
    ratio = h["ratio_vs_raw_fetch_cpu"]
    print(f"  raw `git fetch` over ssh of one commit (median of {raw['runs']}): {raw['cpu_ms']:.1f} ms CPU here, "
          f"{raw['wall_ms']:.0f} ms wall -> harvest / raw fetch CPU "
          f"{f'{ratio:.2f}x' if ratio is not None else 'n/a'}")
    print(f"\nload average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)")
    print(f"wrote {RESULTS}" if not args.smoke else "smoke run: no results written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
