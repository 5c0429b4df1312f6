#!/usr/bin/env python3
"""Benchmark: dispatching agents, and what the sidecar costs while agents report.

    python bench/bench_agents.py [--quick] [--smoke]

Everything runs in a private environment (fresh HOME, PARA_CONFIG, a 0700
PARA_RUNTIME_DIR under /tmp, no global/system git config, a fixed git identity,
TMUX unset) with its own sidecar, started here and stopped at the end.

1. Dispatch. In identical repositories (300 tracked files), 10 headless sessions
   whose agent is a custom profile running `true`, dispatched one after another:
     para-cli   10 `para dispatch sNN -p TASK --agent noop --mode headless --json` processes
     para-rpc   10 `para/dispatch` requests on one open connection (an editor, an MCP host)
   against the same 10 worktrees made with raw git in the same run:
     git        10 `git worktree add -q -b para/gNN .para/worktrees/gNN main`
   Each variant runs REPEATS times on a fresh copy; medians are compared. A dispatch
   does more than git: session row, prompt file, instruction file, the agent runner
   started; the ratio says what that costs.

2. Load. 10 headless agents (a tiny Python program) each run `para status "step i"
   --todos i/15` once a second for 15 s, the way a real agent reports. Measured: the
   sidecar's CPU seconds (utime+stime of its own process from /proc/<pid>/stat; the
   children it reaped, cutime+cstime, are listed apart: git commands, and here also
   the agent runners with everything the agents ran), its RSS (VmRSS, sampled every
   0.25 s), the same sidecar idle for 5 s beforehand, and each `para status` call's
   latency as the agents saw it. The machine's load average is recorded with the
   results: on a busy machine every figure is inflated.

--quick (a smoke run, to see that it works): one repeat of the dispatch phase, 5 s of load
after 2 s idle. Its figures do not compare with a full run's: for one, the sidecar's deferred
MCP preload can then fall into the idle window.
Results: a table on stdout and bench/results/agents.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (PARA, PYTHON, Sidecar, git, isolate, machine, make_repo, proc_cpu, results_path, rss_mb,
                     write_results)
from _common import SMOKE_HELP

RESULTS = results_path("agents")
SESSIONS = 10
REPEATS = 3
FILES = 300
LOAD_SECONDS = 15
IDLE_SECONDS = 5

# The load phase's agent: report once a second, record how long each report took.
REPORTER = r"""
import json, os, shutil, subprocess, sys, time
para = shutil.which("para") or sys.executable
argv = [para] if para != sys.executable else [sys.executable, "-m", "para_rpc"]
out, n = sys.argv[1], int(sys.argv[2])
lat, fails = [], 0
start = time.monotonic()
for i in range(1, n + 1):
    t = time.monotonic()
    rc = subprocess.run([*argv, "status", f"step {i}", "--todos", f"{i}/{n}"], stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    lat.append(time.monotonic() - t)
    fails += rc != 0
    time.sleep(max(0.0, start + i - time.monotonic()))
with open(out, "w") as f:
    json.dump({"latencies": lat, "failures": fails}, f)
"""


# ---- helpers -----------------------------------------------------------------

def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         env={**os.environ, **(env or {})})
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({res.returncode}): {res.stdout}{res.stderr}")
    return res


class Sampler(threading.Thread):
    """RSS of one process every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples = pid, interval, []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append(rss_mb(self.pid))
            self.stopped.wait(self.interval)

    def stop(self) -> list[float]:
        self.stopped.set()
        self.join()
        return self.samples


# ---- fixtures ------------------------------------------------------------------

def fresh_copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    return Path(os.path.realpath(dest))


# ---- phase 1: dispatch -----------------------------------------------------------

NOOP = json.dumps({"noop": {"command": ["true"]}})


def dispatch_cli(repo: Path) -> float:
    env = {"PARA_AGENTS": NOOP}
    t = time.perf_counter()
    for i in range(SESSIONS):
        run([*PARA, "dispatch", f"s{i:02d}", "-p", f"Task number {i}", "--agent", "noop", "--mode", "headless",
             "--json"], repo, env)
    return time.perf_counter() - t


def dispatch_rpc(repo: Path, sc: Sidecar) -> float:
    with sc.connect() as conn:
        conn.request("para/list", {"cwd": str(repo)})  # the repository is open before the clock starts
        t = time.perf_counter()
        for i in range(SESSIONS):
            conn.request("para/dispatch", {"cwd": str(repo), "env": {"PARA_AGENTS": NOOP}, "name": f"s{i:02d}",
                                           "prompt": f"Task number {i}", "agent": "noop", "mode": "headless"})
        return time.perf_counter() - t


def raw_git(repo: Path) -> float:
    t = time.perf_counter()
    for i in range(SESSIONS):
        git("worktree", "add", "-q", "-b", f"para/g{i:02d}", str(repo / ".para" / "worktrees" / f"g{i:02d}"),
            "main", cwd=repo)
    return time.perf_counter() - t


def check_dispatched(repo: Path, sc: Sidecar) -> None:
    with sc.connect() as conn:
        sessions = conn.request("para/list", {"cwd": str(repo)})["sessions"]
    if len(sessions) != SESSIONS or not all(s["worktree_exists"] and s["branch_exists"] for s in sessions):
        raise SystemExit(f"dispatch left {len(sessions)} sessions in {repo}")


def phase_dispatch(work: Path, template: Path, sc: Sidecar) -> dict[str, Any]:
    walls: dict[str, list[float]] = {"para-cli": [], "para-rpc": [], "git": []}
    for r in range(REPEATS):
        for variant in walls:  # interleaved, so drift affects every variant alike
            repo = fresh_copy(template, work / f"d-{variant}-{r}")
            if variant == "para-cli":
                walls[variant].append(dispatch_cli(repo))
                check_dispatched(repo, sc)
            elif variant == "para-rpc":
                walls[variant].append(dispatch_rpc(repo, sc))
                check_dispatched(repo, sc)
            else:
                walls[variant].append(raw_git(repo))
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {"walls": walls, "median": med,
            "per_session_ms": {k: 1000 * v / SESSIONS for k, v in med.items()},
            "ratio_cli_vs_git": med["para-cli"] / med["git"], "ratio_rpc_vs_git": med["para-rpc"] / med["git"]}


# ---- phase 2: load -------------------------------------------------------------------

def phase_load(work: Path, template: Path, sc: Sidecar) -> dict[str, Any]:
    repo = fresh_copy(template, work / "load")
    outdir = work / "load-out"
    outdir.mkdir()
    profile = {"reporter": {"command": [PYTHON, "-c", REPORTER, str(outdir / "{session}.json"),
                                        str(LOAD_SECONDS)]}}
    with sc.connect() as conn:
        conn.request("para/list", {"cwd": str(repo)})  # open the repository (its poller starts)
        time.sleep(1)
        cpu0 = proc_cpu(sc.pid)
        sampler = Sampler(sc.pid)
        sampler.start()
        time.sleep(IDLE_SECONDS)
        idle_rss = sampler.stop()
        cpu1 = proc_cpu(sc.pid)

        sampler = Sampler(sc.pid)
        sampler.start()
        t0 = time.perf_counter()
        for i in range(SESSIONS):
            conn.request("para/dispatch", {"cwd": str(repo), "env": {"PARA_AGENTS": json.dumps(profile)},
                                           "name": f"a{i:02d}", "prompt": "report every second",
                                           "agent": "reporter", "mode": "headless"})
        deadline = time.monotonic() + LOAD_SECONDS + 60
        while len(list(outdir.glob("*.json"))) < SESSIONS:
            if time.monotonic() > deadline:
                raise SystemExit("the reporting agents did not finish")
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        cpu2 = proc_cpu(sc.pid)
        load_rss = sampler.stop()
        events = conn.request("para/events", {"cwd": str(repo), "limit": 1000})["events"]
    reports = [json.loads(p.read_text()) for p in sorted(outdir.glob("*.json"))]
    lat = sorted(x for r in reports for x in r["latencies"])
    statuses = sum(1 for e in events if e["kind"] == "status")
    return {
        "agents": SESSIONS, "seconds_per_agent": LOAD_SECONDS, "wall": wall,
        "idle": {"seconds": IDLE_SECONDS, "cpu_s": cpu1[0] - cpu0[0], "children_cpu_s": cpu1[1] - cpu0[1],
                 "rss_mb_max": max(idle_rss)},
        "load": {"cpu_s": cpu2[0] - cpu1[0], "children_cpu_s": cpu2[1] - cpu1[1],
                 "cpu_percent_of_one_core": 100 * (cpu2[0] - cpu1[0]) / wall,
                 "rss_mb_start": load_rss[0], "rss_mb_max": max(load_rss), "rss_mb_mean": statistics.mean(load_rss),
                 "rss_mb_end": load_rss[-1]},
        "status_reports": {"sent": len(lat), "recorded": statuses, "failed": sum(r["failures"] for r in reports),
                           "latency_ms_p50": 1000 * lat[len(lat) // 2],
                           "latency_ms_p95": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.95))],
                           "latency_ms_max": 1000 * lat[-1]},
        "sidecar_cpu_ms_per_report": 1000 * (cpu2[0] - cpu1[0]) / max(1, statuses),
    }


# ---- main ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    global REPEATS, LOAD_SECONDS, IDLE_SECONDS, SESSIONS, FILES
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one dispatch repeat, 5 s of load, 2 s idle")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if args.quick or args.smoke:
        REPEATS, LOAD_SECONDS, IDLE_SECONDS = 1, 5, 2
    if args.smoke:
        SESSIONS, FILES, LOAD_SECONDS, IDLE_SECONDS = 2, 10, 2, 1
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="para-bench-agents-"))
    runtime = isolate(work, unset=("PARA_", "GIT_", "TMUX"))
    sc = None
    try:
        template = make_repo(work / "template", FILES)
        sc = Sidecar(runtime)
        dispatch = phase_dispatch(work, template, sc)
        load = phase_load(work, template, sc)
    finally:
        if sc is not None:
            sc.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
    result = {
        "sessions": SESSIONS, "files": FILES, "repeats": REPEATS,
        "machine": machine(loadavg_before=load_before, loadavg_after=os.getloadavg()),
        "dispatch": dispatch, "load": load,
    }
    if not args.smoke:
        write_results(RESULTS, result)

    d, ld = dispatch, load
    print(f"Dispatch of {SESSIONS} headless sessions ({FILES} files), median of {REPEATS}:")
    print(f"  {'variant':<10} {'total s':>8} {'per session ms':>15} {'vs git':>7}")
    for k in ("git", "para-rpc", "para-cli"):
        print(f"  {k:<10} {d['median'][k]:>8.3f} {d['per_session_ms'][k]:>15.1f} "
              f"{d['median'][k] / d['median']['git']:>6.2f}x")
    print(f"\nSidecar while {SESSIONS} agents report `para status` every second for {LOAD_SECONDS} s "
          f"(wall {ld['wall']:.1f} s):")
    print(f"  {'':<28} {'idle':>10} {'10 agents':>10}")
    print(f"  {'seconds measured':<28} {ld['idle']['seconds']:>10.1f} {ld['wall']:>10.1f}")
    print(f"  {'sidecar CPU s':<28} {ld['idle']['cpu_s']:>10.2f} {ld['load']['cpu_s']:>10.2f}")
    print(f"  {'  of it % of one core':<28} {100 * ld['idle']['cpu_s'] / ld['idle']['seconds']:>10.1f} "
          f"{ld['load']['cpu_percent_of_one_core']:>10.1f}")
    print(f"  {'children CPU s (git, agents)':<28} {ld['idle']['children_cpu_s']:>10.2f} "
          f"{ld['load']['children_cpu_s']:>10.2f}")
    print(f"  {'RSS MB max':<28} {ld['idle']['rss_mb_max']:>10.1f} {ld['load']['rss_mb_max']:>10.1f}")
    sr = ld["status_reports"]
    print(f"  status reports: {sr['sent']} sent, {sr['recorded']} recorded, {sr['failed']} failed; "
          f"latency p50 {sr['latency_ms_p50']:.0f} ms, p95 {sr['latency_ms_p95']:.0f} ms, "
          f"max {sr['latency_ms_max']:.0f} ms; sidecar CPU per report {ld['sidecar_cpu_ms_per_report']:.1f} ms")
    print(f"\nload average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)")
    print(f"wrote {RESULTS}" if not args.smoke else "smoke run: no results written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
