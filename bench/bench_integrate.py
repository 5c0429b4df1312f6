#!/usr/bin/env python3
"""Benchmark: N sessions with disjoint changes integrating concurrently through the
sidecar, against the same N squash merges done with raw git in sequence.

    python bench/bench_integrate.py [--quick] [--smoke] [--sessions N] [--repeats R] [--profile]

Everything runs in a private environment (fresh HOME, PARA_CONFIG, a 0700
PARA_RUNTIME_DIR under /tmp, no global/system git config, a fixed git identity)
with its own sidecar, started here and stopped at the end.

Each repeat builds identical repositories (same files, same N sessions started
through the sidecar, each session with two commits touching only its own files,
`main` checked out and clean in the main checkout) and times, on a fresh copy each:

  para-cli   N `para integrate MSG --session sNN --json` processes launched at once
  para-rpc   N threads, each with its own para_rpc.client connection (opened and
             greeted before the clock starts), sending `para/integrate` at once
  git-porcelain  in sequence, in the main checkout, per branch:
             git merge --squash + git commit + git worktree remove + git branch -D
  git-plumbing   in sequence, per branch: git merge-tree --write-tree + commit-tree +
             update-ref (compare-and-swap) + read-tree -m -u in the main checkout +
             worktree remove + branch -D  (what para does, minus its bookkeeping)

Both baselines reach the same end state as para: `main` advanced by N squash
commits, the main checkout updated and clean, the session worktrees and branches
gone. The reported ratio is para's wall time over the faster baseline (the
stricter comparison); both ratios are in the JSON. CPU time is reported too
(the CLI processes, the sidecar's own Python, the git processes it reaped; for
the baselines, the git processes): unlike wall time it barely moves when other
work shares the machine, so it is the figure to compare across runs. Per-integration latency is
the time from launching one request (or process) to its answer: with one queue
per target, it includes the wait behind the integrations ahead of it.

Also timed: `para conflicts --json` (CLI) and `para/conflicts` (RPC) for N
active sessions, each with uncommitted edits (two of them deliberately
overlapping, which the forecast must report and the rest must not).

--profile re-runs the RPC phase once with the sidecar under cProfile and with
git's trace2 timing every git process it spawns, and prints what dominates.
Results: a table on stdout and bench/results/integrate.json.
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
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from _common import PARA, ROOT, Sidecar, git, isolate, machine, make_repo, proc_cpu, results_path, write_results
from _common import SMOKE_HELP

RESULTS = results_path("integrate")
TARGET_RATIO = 1.5


# ---- CPU time ------------------------------------------------------------------

def children_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU seconds spent by this process's reaped children and, optionally, by the sidecar
    (itself and the git processes it reaped) between start() and stop()."""

    def __init__(self, sidecar_pid: int | None = None) -> None:
        self.pid = sidecar_pid

    def start(self) -> None:
        self.c0 = children_cpu()
        self.s0 = proc_cpu(self.pid) if self.pid else (0.0, 0.0)

    def stop(self) -> dict[str, float]:
        s1 = proc_cpu(self.pid) if self.pid else (0.0, 0.0)
        d = {"clients": children_cpu() - self.c0, "sidecar_python": s1[0] - self.s0[0],
             "sidecar_git": s1[1] - self.s0[1]}
        d["total"] = sum(d.values())
        return d


# ---- fixtures ------------------------------------------------------------------

def repo_with_sessions(path: Path, sc: Sidecar, n: int, files: int) -> Path:
    """make_repo() with n sessions s00.. started in it through the sidecar."""
    path = make_repo(path, files)
    with sc.connect() as conn:
        for i in range(n):
            conn.request("para/start", {"cwd": str(path), "name": f"s{i:02d}"})
    return path


def build_repo(path: Path, sc: Sidecar, n: int, files: int) -> Path:
    """A repository with `files` tracked files and n sessions started through the sidecar,
    each holding two commits that touch only its own files."""
    path = repo_with_sessions(path, sc, n, files)
    for i in range(n):
        wt = path / ".para" / "worktrees" / f"s{i:02d}"
        own = wt / "src" / f"pkg{i % 10}" / f"mod{i:04d}.py"
        own.write_text(own.read_text() + f"\ndef added_by_s{i:02d}():\n    return {i}\n")
        git("commit", "-q", "-am", f"s{i:02d}: extend mod{i:04d}", cwd=wt)
        (wt / "features").mkdir(exist_ok=True)
        (wt / "features" / f"s{i:02d}.txt").write_text(f"feature of session {i}\n")
        git("add", "-A", cwd=wt)
        git("commit", "-q", "-m", f"s{i:02d}: add its feature file", cwd=wt)
    return path


def verify_landed(repo: Path, base: str, n: int, what: str) -> None:
    """main advanced by exactly n single-parent commits, each with only its own session's files;
    the main checkout is clean at the tip; no session worktree or branch is left."""
    commits = git("rev-list", "--reverse", "--parents", f"{base}..main", cwd=repo).splitlines()
    problems = []
    if len(commits) != n:
        problems.append(f"{len(commits)} commits on main, expected {n}")
    seen = set()
    for line in commits:
        sha, *parents = line.split()
        if len(parents) != 1:
            problems.append(f"{sha[:10]} has {len(parents)} parents")
        changed = git("diff-tree", "--no-commit-id", "--name-only", "-r", sha, cwd=repo).split()
        owners = {p.rsplit("/", 1)[-1].split(".")[0] for p in changed if p.startswith("features/")}
        if len(owners) != 1 or len(changed) != 2:
            problems.append(f"{sha[:10]} changes {changed}")
        seen |= owners
    if len(seen) != n:
        problems.append(f"{len(seen)} distinct sessions landed, expected {n}")
    if git("status", "--porcelain", "--untracked-files=all", cwd=repo):
        problems.append("the main checkout is not clean")
    if git("rev-parse", "HEAD", cwd=repo) != git("rev-parse", "main", cwd=repo):
        problems.append("the main checkout is not at main's tip")
    if len(git("worktree", "list", "--porcelain", cwd=repo).split("\n\n")) != 1:
        problems.append("session worktrees remain")
    if git("for-each-ref", "refs/heads/para/", cwd=repo):
        problems.append("session branches remain")
    if problems:
        raise SystemExit(f"{what}: wrong result: " + "; ".join(problems))


# ---- the timed phases ----------------------------------------------------------------

def run_cli(repo: Path, sc: Sidecar, n: int) -> dict[str, Any]:
    procs, started, ended = [], {}, {}
    meter = CpuMeter(sc.proc.pid)
    meter.start()
    lock = threading.Lock()

    def waiter(i: int, p: subprocess.Popen) -> None:
        p.wait()
        with lock:
            ended[i] = time.perf_counter()

    threads = []
    t0 = time.perf_counter()
    for i in range(n):
        started[i] = time.perf_counter()
        p = subprocess.Popen([*PARA, "integrate", f"s{i:02d}: integrate", "--session", f"s{i:02d}", "--json"],
                             cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        procs.append(p)
        t = threading.Thread(target=waiter, args=(i, p))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    wall = max(ended.values()) - t0
    cpu = meter.stop()
    for i, p in enumerate(procs):
        out, err = p.communicate()
        if p.returncode != 0 or json.loads(out)["status"] != "integrated":
            raise SystemExit(f"para integrate s{i:02d} failed ({p.returncode}): {out.decode()} {err.decode()}")
    return {"wall": wall, "cpu": cpu, "latencies": [ended[i] - started[i] for i in range(n)]}


def run_rpc(repo: Path, sc: Sidecar, n: int) -> dict[str, Any]:
    conns = [sc.connect() for _ in range(n)]
    barrier = threading.Barrier(n + 1)
    lat: dict[int, float] = {}
    errors: list[str] = []

    def one(i: int) -> None:
        barrier.wait()
        t = time.perf_counter()
        try:
            r = conns[i].request("para/integrate", {"cwd": str(repo), "session": f"s{i:02d}",
                                                    "message": f"s{i:02d}: integrate"})
            if r["status"] != "integrated":
                errors.append(f"s{i:02d}: {r['status']}")
        except Exception as e:  # reported below
            errors.append(f"s{i:02d}: {e!r}")
        lat[i] = time.perf_counter() - t

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    meter = CpuMeter(sc.proc.pid)
    meter.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = meter.stop()
    for c in conns:
        c.close()
    if errors:
        raise SystemExit("para/integrate failed: " + "; ".join(errors))
    return {"wall": wall, "cpu": cpu, "latencies": [lat[i] for i in range(n)]}


def run_git_sequence(repo: Path, n: int, land: Callable[[int], None]) -> dict[str, Any]:
    """The raw-git baselines: in sequence, `land(i)` puts session i's branch on main, then its
    worktree and branch are removed; each integration timed on its own."""
    lat = []
    meter = CpuMeter()
    meter.start()
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        land(i)
        git("worktree", "remove", "--force", str(repo / ".para" / "worktrees" / f"s{i:02d}"), cwd=repo)
        git("branch", "-q", "-D", f"para/s{i:02d}", cwd=repo)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {"wall": wall, "cpu": meter.stop(), "latencies": lat}


def run_git_porcelain(repo: Path, n: int) -> dict[str, Any]:
    def land(i: int) -> None:
        git("merge", "--squash", "-q", f"para/s{i:02d}", cwd=repo)
        git("commit", "-q", "-m", f"s{i:02d}: integrate", cwd=repo)

    return run_git_sequence(repo, n, land)


def run_git_plumbing(repo: Path, n: int) -> dict[str, Any]:
    def land(i: int) -> None:
        old = git("rev-parse", "refs/heads/main", cwd=repo)
        tree = git("merge-tree", "--write-tree", "--name-only", "--no-messages", old, f"para/s{i:02d}",
                   cwd=repo).splitlines()[0]
        new = git("commit-tree", tree, "-p", old, cwd=repo, input=f"s{i:02d}: integrate\n")
        git("update-ref", "-m", "bench", "refs/heads/main", new, old, cwd=repo)
        git("read-tree", "-m", "-u", old, new, cwd=repo)

    return run_git_sequence(repo, n, land)


def build_conflicts_repo(path: Path, sc: Sidecar, n: int, files: int) -> Path:
    """n sessions, each with uncommitted edits to its own files; s00 and s01 also both
    edit README.md's first line (the one collision the forecast must find)."""
    path = repo_with_sessions(path, sc, n, files)
    for i in range(n):
        wt = path / ".para" / "worktrees" / f"s{i:02d}"
        own = wt / "src" / f"pkg{i % 10}" / f"mod{i:04d}.py"
        own.write_text(own.read_text() + f"\ndef wip_{i}():\n    pass\n")
        (wt / f"notes-s{i:02d}.txt").write_text("untracked work in progress\n")
        if i < 2:
            (wt / "README.md").write_text(f"# bench, as session {i} sees it\n")
    return path


def run_conflicts(repo: Path, sc: Sidecar, n: int, runs: int) -> dict[str, Any]:
    def check(r: dict[str, Any], what: str) -> None:
        pairs = [(p["a"], p["b"], p["files"]) for p in r["pairs"]]
        if pairs != [("s00", "s01", ["README.md"])] or len(r["sessions"]) != n \
                or not all(s["includes_uncommitted"] for s in r["sessions"]):
            raise SystemExit(f"{what}: unexpected forecast: pairs={pairs}, {len(r['sessions'])} sessions")

    cli, rpc = [], []
    for _ in range(runs):
        t = time.perf_counter()
        res = subprocess.run([*PARA, "conflicts", "--json"], cwd=repo, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        cli.append(time.perf_counter() - t)
        check(json.loads(res.stdout), "para conflicts --json")
    with sc.connect() as conn:
        for _ in range(runs):
            t = time.perf_counter()
            r = conn.request("para/conflicts", {"cwd": str(repo)})
            rpc.append(time.perf_counter() - t)
            check(r, "para/conflicts")
    if git("status", "--porcelain", "--untracked-files=all", cwd=repo):
        raise SystemExit("para conflicts dirtied the main checkout")
    return {"cli": cli, "rpc": rpc, "pairs_checked": n * (n - 1) // 2}


def cli_floor(repo: Path, runs: int = 5) -> float:
    """The cost of one CLI round trip that does no git work (`para version` has no
    round trip, so use `para config path`): what every CLI integration pays on top."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([*PARA, "config", "path", "--json"], cwd=repo, capture_output=True, check=True,
                       stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---- profiling ---------------------------------------------------------------------

def _subcommand(argv: list[str]) -> str:
    """`git -c k=v rev-parse --verify X` -> `rev-parse`."""
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "-c" else 1
    return argv[i] if i < len(argv) else "?"


def profile(work: Path, runtime: Path, n: int, files: int) -> dict[str, Any]:
    """One RPC phase with the sidecar under cProfile and every git process timed by trace2."""
    import pstats

    prof = work / "sidecar.prof"
    trace = work / "git-trace2.json"
    sc = Sidecar(runtime)
    try:
        repo = build_repo(work / "profile-repo", sc, n, files)
        base = git("rev-parse", "main", cwd=repo)
    finally:
        sc.stop()
    # Trace only the timed phase: restart the sidecar with trace2 on.
    sc = Sidecar(runtime, profile_to=prof, trace_to=trace)
    try:
        res = run_rpc(repo, sc, n)
    finally:
        sc.stop()
    verify_landed(repo, base, n, "profile run")

    per_cmd: dict[str, list[float]] = defaultdict(list)
    starts: dict[str, str] = {}
    for line in trace.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event") == "start":
            starts[ev["sid"]] = _subcommand(ev.get("argv", []))
        elif ev.get("event") == "exit" and ev["sid"] in starts and "/" not in ev["sid"]:
            per_cmd[starts[ev["sid"]]].append(ev.get("t_abs", 0.0))
    top_git = sorted(((k, len(v), sum(v)) for k, v in per_cmd.items()), key=lambda x: -x[2])
    total_git = sum(x[2] for x in top_git)
    calls = sum(x[1] for x in top_git)

    stats = pstats.Stats(str(prof))
    stats.sort_stats("tottime")
    own = sorted(((f"{Path(f).name}:{ln}({fn})", st[2], st[3]) for (f, ln, fn), st in stats.stats.items()),
                 key=lambda x: -x[1])[:15]
    return {"rpc_wall": res["wall"], "git_processes": calls, "git_processes_per_integration": calls / n,
            "git_seconds": total_git, "git_seconds_per_integration": total_git / n,
            "git_by_command": [{"command": k, "count": c, "seconds": round(s, 4)} for k, c, s in top_git[:20]],
            "sidecar_python_top_tottime": [{"function": f, "tottime": round(t, 4), "cumtime": round(c, 4)}
                                           for f, t, c in own]}


# ---- main --------------------------------------------------------------------------

def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, max(0, int(round(0.9 * len(xs))) - 1))]
    return {"median": statistics.median(xs), "p90": p90, "min": xs[0], "max": xs[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, fewer conflict-forecast runs")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--files", type=int, default=300, help="tracked files in each repository")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--profile", action="store_true", help="also profile one RPC phase (see the docstring)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if args.smoke:
        args.quick, args.sessions, args.files, args.repeats = True, 2, 10, 1
    n = args.sessions
    repeats = args.repeats or (1 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="para-bench-"))
    runtime = isolate(work)
    sys.path.insert(0, str(ROOT))
    out: dict[str, Any] = {"sessions": n, "files": args.files, "repeats": repeats, "machine": machine()}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("para-cli", "para-rpc", "git-porcelain",
                                                               "git-plumbing")}
    sc = Sidecar(runtime)
    try:
        # Warm up: the sidecar's first integration imports and opens things once.
        warm = build_repo(work / "warmup", sc, 1, 10)
        with sc.connect() as conn:
            conn.request("para/integrate", {"cwd": str(warm), "session": "s00", "message": "warm up"})
        for r in range(repeats):
            order = ["para-cli", "para-rpc", "git-porcelain", "git-plumbing"]
            if r % 2:
                order.reverse()  # alternate so neither side always runs on a warmer cache
            for kind in order:
                repo = build_repo(work / f"r{r}-{kind}", sc, n, args.files)
                base = git("rev-parse", "main", cwd=repo)
                if kind == "para-cli":
                    res = run_cli(repo, sc, n)
                elif kind == "para-rpc":
                    res = run_rpc(repo, sc, n)
                elif kind == "git-porcelain":
                    res = run_git_porcelain(repo, n)
                else:
                    res = run_git_plumbing(repo, n)
                verify_landed(repo, base, n, kind)
                runs[kind].append(res)
                print(f"  repeat {r + 1}/{repeats} {kind:<14} {res['wall']:.3f}s", file=sys.stderr, flush=True)
        floor_repo = work / "r0-para-cli"
        out["cli_round_trip_floor"] = cli_floor(floor_repo)
        crepo = build_conflicts_repo(work / "conflicts", sc, n, args.files)
        out["conflicts"] = run_conflicts(crepo, sc, n, 1 if args.smoke else 3 if args.quick else 7)
    finally:
        sc.stop()

    phases = {}
    for kind, rs in runs.items():
        walls = [x["wall"] for x in rs]
        lats = [latency for x in rs for latency in x["latencies"]]
        cpu = {k: statistics.median(x["cpu"][k] for x in rs) for k in rs[0]["cpu"]}
        phases[kind] = {"wall_median": statistics.median(walls), "walls": walls,
                        "cpu_median": cpu, "per_integration": summary(lats)}
    baseline = min(phases["git-porcelain"]["wall_median"], phases["git-plumbing"]["wall_median"])
    cpu_baseline = min(phases["git-porcelain"]["cpu_median"]["total"],
                       phases["git-plumbing"]["cpu_median"]["total"])
    ratios = {f"{p} / {b}": phases[p]["wall_median"] / phases[b]["wall_median"]
              for p in ("para-cli", "para-rpc") for b in ("git-porcelain", "git-plumbing")}
    out["phases"] = phases
    out["ratios"] = ratios
    out["ratio_vs_faster_baseline"] = {p: phases[p]["wall_median"] / baseline for p in ("para-cli", "para-rpc")}
    out["cpu_ratio_vs_cheaper_baseline"] = {p: phases[p]["cpu_median"]["total"] / cpu_baseline
                                            for p in ("para-cli", "para-rpc")}
    out["target_ratio"] = TARGET_RATIO
    if args.profile:
        print("  profiling one RPC phase ...", file=sys.stderr, flush=True)
        out["profile"] = profile(work, runtime, n, args.files)

    if not args.smoke:
        write_results(RESULTS, out)

    print(f"\n{n} sessions, disjoint changes, {args.files} tracked files, {repeats} repeat(s), "
          f"{os.cpu_count()} CPU(s), {out['machine']['git']}")
    print(f"{'phase':<15}{'wall':>9}{'x git':>7}{'CPU':>9}{'x git':>7}{'(clients/sidecar py/git)':>27}"
          f"{'latency median':>16}{'p90':>8}")
    for kind, ph in phases.items():
        pi, cpu = ph["per_integration"], ph["cpu_median"]
        split = f"{cpu['clients']:.2f}/{cpu['sidecar_python']:.2f}/{cpu['sidecar_git']:.2f}"
        print(f"{kind:<15}{ph['wall_median']:>8.3f}s{ph['wall_median'] / baseline:>6.2f}x"
              f"{cpu['total']:>8.2f}s{cpu['total'] / cpu_baseline:>6.2f}x{split:>27}"
              f"{pi['median']:>15.3f}s{pi['p90']:>7.3f}s")
    print("(wall and CPU: medians over the repeats; CPU = seconds of CPU used by the CLI processes, the "
          "sidecar's Python and the git processes; for raw git, by git; latency: per integration)")
    c = out["conflicts"]
    print(f"para conflicts --json ({n} sessions with uncommitted edits, {c['pairs_checked']} pairs): "
          f"CLI median {statistics.median(c['cli']):.3f}s, RPC median {statistics.median(c['rpc']):.3f}s")
    print(f"CLI round trip with no git work (para config path): {out['cli_round_trip_floor']:.3f}s")
    for p, r in out["ratio_vs_faster_baseline"].items():
        verdict = "within" if r <= TARGET_RATIO else "MISSES"
        print(f"{p}: {r:.2f}x the faster raw-git baseline in wall time ({verdict} the {TARGET_RATIO}x target), "
              f"{out['cpu_ratio_vs_cheaper_baseline'][p]:.2f}x its CPU time")
    if "profile" in out:
        pr = out["profile"]
        print(f"\nprofile: {pr['git_processes_per_integration']:.1f} git processes and "
              f"{pr['git_seconds_per_integration'] * 1000:.1f} ms of git time per integration "
              f"(RPC wall {pr['rpc_wall']:.3f}s under the profiler)")
        for g in pr["git_by_command"][:12]:
            print(f"  git {g['command']:<40}{g['count']:>5} x  {g['seconds']:.3f}s")
        print("sidecar Python, top by own time:")
        for f in pr["sidecar_python_top_tottime"][:10]:
            print(f"  {f['function']:<60}{f['tottime']:>8.3f}s")
    print(f"\nwrote {RESULTS}" if not args.smoke else "\nsmoke run: no results written")
    if args.keep:
        print(f"scratch kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(runtime, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
