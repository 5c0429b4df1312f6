#!/usr/bin/env python3
"""Benchmark of the foundation: what a session costs next to the raw git it wraps.

    python bench/bench_foundation.py [--quick] [--smoke] [--rounds N] [--sessions M] [--runs K] [--files F] [--profile]

Run it with the virtualenv's python (the one whose bin/ holds `para`). Everything
happens in a private environment (fresh HOME, PARA_CONFIG, a 0700
PARA_RUNTIME_DIR under /tmp, no global/system git config, a fixed identity)
with a sidecar started here and stopped at the end; the scratch directory is
removed unless --keep. One temporary repository (F tracked files) serves every
phase:

  (a) start + cancel, N rounds (default 20). Each round runs three variants, in
      an order rotated every round so none always runs on a warmer cache:
        para-cli  `para start NAME --json` then `para cancel NAME --discard --json`
                  (two processes, as a user or an agent runs them)
        para-rpc  `para/start` + `para/cancel {discard: true}` on one open
                  para_rpc.client connection (the service cost alone, no CLI start-up)
        git       `git worktree add -b raw/NAME PATH main` + `git worktree remove PATH`
                  + `git branch -D raw/NAME`
      para's cancel archives the branch (a rename) instead of deleting it; the
      `branch -D` makes the raw side remove its branch too, like for like.
  (b) `para list --json` (CLI) with M live sessions (default 100) against
      `git worktree list --porcelain`, K runs each (default 15), alternating; the
      RPC `para/list` is timed too.
  (c) the wall time of `para list --json` against `python -c pass` (both with this
      python), K runs each, alternating, before the M sessions exist.
  (d) the sidecar's resident memory (VmRSS, and the peak VmHWM, from
      /proc/<pid>/status): just started; idle once settled (after the deferred MCP
      preload, no repository opened); with the repository open; and with M sessions.

Targets: start+cancel within 1.5x raw git; `para list --json` under 150 ms median
(judged with M sessions); sidecar RSS under 120 MB with M sessions.

--profile afterwards runs start+cancel pairs, then para/list with M sessions, on a
second sidecar under cProfile and with git's trace2 event log, and prints where the
time goes: the git processes spawned per operation (by subcommand, with their time)
and para_rpc's functions by cumulative time. The load average before and after is
recorded: on a shared machine, absolute times move with it, the alternated ratios less.
Results: a table on stdout, everything in bench/results/foundation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from _common import (PARA, PARA_SCRIPT, PYTHON, ROOT, Sidecar, git_processes, isolate, machine, make_repo,
                     private_runtime, results_path, rss, write_results)
from _common import SMOKE_HELP

RESULTS = results_path("foundation")
TARGETS = {"start_cancel_ratio": 1.5, "list_wall_ms": 150.0, "rss_mb": 120.0}


# ---- memory --------------------------------------------------------------------

def settled_rss(pid: int, started: float) -> dict[str, float]:
    """The idle sidecar's memory once it has settled: after its deferred start-up work (the
    MCP front end is preloaded PRELOAD_AFTER seconds after start) and stable for a second."""
    try:
        from para_rpc.server.mcp_host import PRELOAD_AFTER as delay
    except ImportError:
        delay = 0.0
    time.sleep(max(0.0, started + delay + 1.0 - time.monotonic()))
    last = rss(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss(pid)
        if abs(now["VmRSS"] - last["VmRSS"]) < 0.5:
            return now
        last = now
    return last


# ---- timing helpers ------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def run(argv: list[str], cwd: Path) -> str:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}) in {cwd}: {res.stdout} {res.stderr}")
    return res.stdout


def summary(xs: list[float]) -> dict[str, Any]:
    s = sorted(xs)
    return {"median": statistics.median(s), "mean": statistics.fmean(s), "min": s[0], "max": s[-1],
            "p90": s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))], "n": len(s), "samples": xs}


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


# ---- (a) start + cancel ----------------------------------------------------------

def start_cancel_cli(repo: Path, name: str) -> tuple[float, float]:
    t_start, out = timed(lambda: run([*PARA, "start", name, "--json"], repo))
    if json.loads(out)["status"] != "active":
        raise SystemExit(f"para start {name}: {out}")
    t_cancel, out = timed(lambda: run([*PARA, "cancel", name, "--discard", "--json"], repo))
    if json.loads(out)["status"] != "cancelled":
        raise SystemExit(f"para cancel {name}: {out}")
    return t_start, t_cancel


def start_cancel_rpc(conn, repo: Path, name: str) -> tuple[float, float]:
    t_start, r = timed(lambda: conn.request("para/start", {"cwd": str(repo), "name": name}))
    if r["status"] != "active":
        raise SystemExit(f"para/start {name}: {r}")
    t_cancel, r = timed(lambda: conn.request("para/cancel", {"cwd": str(repo), "session": name, "discard": True}))
    if r["status"] != "cancelled":
        raise SystemExit(f"para/cancel {name}: {r}")
    return t_start, t_cancel


def start_cancel_git(repo: Path, raw_dir: Path, name: str) -> tuple[float, float]:
    path = raw_dir / name
    t_start, _ = timed(lambda: run(["git", "worktree", "add", "--quiet", "-b", f"raw/{name}", str(path), "main"],
                                   repo))
    t_cancel, _ = timed(lambda: (run(["git", "worktree", "remove", str(path)], repo),
                                 run(["git", "branch", "-D", f"raw/{name}"], repo)))
    return t_start, t_cancel


def phase_start_cancel(repo: Path, sc: Sidecar, raw_dir: Path, rounds: int, label: str) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {k: {"start": [], "cancel": [], "pair": []}
                                                  for k in ("para-cli", "para-rpc", "git")}
    variants = list(samples)
    with sc.connect() as conn:
        for r in range(rounds):
            order = variants[r % 3:] + variants[:r % 3]
            for kind in order:
                name = f"{label}{kind[-3:].replace('-', '')}{r:03d}"
                if kind == "para-cli":
                    ts, tc = start_cancel_cli(repo, name)
                elif kind == "para-rpc":
                    ts, tc = start_cancel_rpc(conn, repo, name)
                else:
                    ts, tc = start_cancel_git(repo, raw_dir, name)
                samples[kind]["start"].append(ts)
                samples[kind]["cancel"].append(tc)
                samples[kind]["pair"].append(ts + tc)
            print(f"  (a) round {r + 1}/{rounds}: " + ", ".join(
                f"{k} {ms(samples[k]['pair'][-1])}" for k in variants), file=sys.stderr, flush=True)
    return {k: {part: summary(v) for part, v in parts.items()} for k, parts in samples.items()}


# ---- (b), (c) list -----------------------------------------------------------------

def alternate(runs: int, a: Callable[[], Any], b: Callable[[], Any]) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for i in range(runs):
        for which in ((a, b) if i % 2 == 0 else (b, a)):
            t, _ = timed(which)
            (ta if which is a else tb).append(t)
    return ta, tb


def para_list_cli(repo: Path, expect: int) -> None:
    r = json.loads(run([*PARA, "list", "--json"], repo))
    if len(r["sessions"]) != expect:
        raise SystemExit(f"para list --json: {len(r['sessions'])} sessions, expected {expect}")


# ---- profile ---------------------------------------------------------------------------

def _top_functions(prof: Path, n: int = 15) -> list[dict[str, Any]]:
    """para_rpc's own functions by cumulative time (the event loop and imports left out)."""
    stats = pstats.Stats(str(prof))
    rows = []
    for (fname, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "/para_rpc/" in fname:
            rows.append({"cum": ct, "own": tt, "calls": nc, "where": f"{Path(fname).name}:{line}({func})"})
    rows.sort(key=lambda r: -r["cum"])
    return rows[:n]


def profile(work: Path, files: int, pairs: int, sessions: int, lists: int) -> dict[str, Any]:
    """Where the time goes, on a sidecar of its own run under cProfile and with git's
    trace2 event log: `pairs` start+cancel pairs, then `lists` para/list calls with
    `sessions` live sessions."""
    runtime = private_runtime("pbp")
    prof, trace = work / "sidecar.prof", work / "trace2.json"
    repo = make_repo(work / "profile-repo", files)
    sc = Sidecar(runtime, profile_to=prof, trace_to=trace)
    out: dict[str, Any] = {"pairs": pairs, "sessions": sessions, "lists": lists}
    try:
        with sc.connect() as conn:
            start_cancel_rpc(conn, repo, "warmup")
            trace.write_text("")
            t0 = time.perf_counter()
            for i in range(pairs):
                start_cancel_rpc(conn, repo, f"prof{i:03d}")
            out["start_cancel_per_pair"] = (time.perf_counter() - t0) / pairs
            out["start_cancel_git"] = git_processes(trace, pairs)
            for i in range(sessions):
                conn.request("para/start", {"cwd": str(repo), "name": f"pl{i:03d}"})
            trace.write_text("")
            t0 = time.perf_counter()
            for _ in range(lists):
                conn.request("para/list", {"cwd": str(repo)})
            out["list_per_call"] = (time.perf_counter() - t0) / lists
            out["list_git"] = git_processes(trace, lists)
    finally:
        sc.stop()
        shutil.rmtree(runtime, ignore_errors=True)
    out["top_functions"] = _top_functions(prof)
    return out


# ---- main ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, sessions and runs")
    ap.add_argument("--rounds", type=int, default=None, help="start+cancel rounds (default 20, 5 with --quick)")
    ap.add_argument("--sessions", type=int, default=None, help="live sessions for (b) and (d) (default 100, "
                    "30 with --quick)")
    ap.add_argument("--runs", type=int, default=None, help="runs per side in (b) and (c) (default 15, 5 with --quick)")
    ap.add_argument("--files", type=int, default=300, help="tracked files in the repository")
    ap.add_argument("--profile", action="store_true", help="also profile start+cancel (see the docstring)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if args.smoke:
        args.quick, args.rounds, args.sessions, args.runs, args.files = True, 1, 2, 2, 10
    rounds = args.rounds or (5 if args.quick else 20)
    sessions = args.sessions or (30 if args.quick else 100)
    runs = args.runs or (5 if args.quick else 15)
    if not PARA_SCRIPT.exists():
        print(f"note: no `para` next to {PYTHON}; using `python -m para_rpc`", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="para-bench-foundation-"))
    runtime = isolate(work, prefix="pbf")
    sys.path.insert(0, str(ROOT))
    out: dict[str, Any] = {
        "config": {"rounds": rounds, "sessions": sessions, "runs": runs, "files": args.files, "quick": args.quick},
        "machine": machine(python_executable=PYTHON, loadavg_before=os.getloadavg()),
        "targets": TARGETS}
    sc = None
    try:
        sc = Sidecar(runtime)
        started = time.monotonic()
        with sc.connect():
            pass
        time.sleep(0.5)
        out["rss_start"] = rss(sc.proc.pid)
        repo = make_repo(work / "repo", args.files)
        out["rss_idle"] = settled_rss(sc.proc.pid, started)
        raw_dir = work / "raw-worktrees"
        raw_dir.mkdir()

        # Warm up every path once (imports, page cache, the repository opened by the sidecar).
        with sc.connect() as conn:
            start_cancel_rpc(conn, repo, "warmrpc")
        start_cancel_cli(repo, "warmcli")
        start_cancel_git(repo, raw_dir, "warmgit")
        out["rss_repo_open"] = rss(sc.proc.pid)

        # (c) before the sessions exist: CLI floor against the interpreter's own start-up.
        expect_live = 0
        tl, tp = alternate(runs, lambda: para_list_cli(repo, expect_live), lambda: run([PYTHON, "-c", "pass"], repo))
        out["list_vs_python"] = {"para_list_json": summary(tl), "python_c_pass": summary(tp),
                                 "ratio": statistics.median(tl) / statistics.median(tp)}
        print(f"  (c) para list --json {ms(statistics.median(tl))}, python -c pass {ms(statistics.median(tp))}",
              file=sys.stderr, flush=True)

        # (a) start + cancel.
        sc_res = phase_start_cancel(repo, sc, raw_dir, rounds, "b")
        out["start_cancel"] = sc_res
        out["start_cancel_ratios"] = {
            k: {part: sc_res[k][part]["median"] / sc_res["git"][part]["median"] for part in ("start", "cancel", "pair")}
            for k in ("para-cli", "para-rpc")}
        # Each round ran all three variants back to back, so the ratio within a round
        # cancels most of the machine's load drift: its median is the headline figure.
        out["start_cancel_paired_ratio"] = {
            k: statistics.median(a / b for a, b in zip(sc_res[k]["pair"]["samples"], sc_res["git"]["pair"]["samples"]))
            for k in ("para-cli", "para-rpc")}
        out["start_cancel_cli_overhead_per_call"] = (
            (sc_res["para-cli"]["pair"]["median"] - sc_res["para-rpc"]["pair"]["median"]) / 2)

        # (b) M live sessions.
        with sc.connect() as conn:
            for i in range(sessions):
                conn.request("para/start", {"cwd": str(repo), "name": f"l{i:03d}"})
        expect_live = sessions
        tl, tg = alternate(runs, lambda: para_list_cli(repo, expect_live),
                           lambda: run(["git", "worktree", "list", "--porcelain"], repo))
        with sc.connect() as conn:
            trpc = [timed(lambda: conn.request("para/list", {"cwd": str(repo)}))[0] for _ in range(runs)]
        out["list_sessions"] = {"para_list_json": summary(tl), "git_worktree_list": summary(tg),
                                "para_list_rpc": summary(trpc),
                                "ratio_cli": statistics.median(tl) / statistics.median(tg),
                                "ratio_rpc": statistics.median(trpc) / statistics.median(tg)}
        print(f"  (b) {sessions} sessions: para list --json {ms(statistics.median(tl))}, "
              f"para/list {ms(statistics.median(trpc))}, git worktree list {ms(statistics.median(tg))}",
              file=sys.stderr, flush=True)

        # (d) memory with M sessions (after the list runs above).
        out["rss_sessions"] = rss(sc.proc.pid)
        if args.profile:
            print("  profiling start+cancel ...", file=sys.stderr, flush=True)
            out["profile"] = profile(work, args.files, max(5, rounds // 2), sessions, max(3, runs // 3))
    finally:
        if sc is not None:
            sc.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        if args.keep:
            print(f"scratch directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    out["machine"]["loadavg_after"] = os.getloadavg()
    if not args.smoke:
        write_results(RESULTS, out)
    report(out, written=not args.smoke)
    return 0


def report(out: dict[str, Any], written: bool = True) -> None:
    cfg, sc, ls, lp = out["config"], out["start_cancel"], out["list_sessions"], out["list_vs_python"]
    t = out["targets"]

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"\npara foundation benchmark: {cfg['files']} tracked files, {cfg['rounds']} start+cancel rounds, "
          f"{cfg['sessions']} sessions, {cfg['runs']} runs per list measurement; "
          f"{out['machine']['cpus']} CPU(s), Python {out['machine']['python']}, {out['machine']['git']}, "
          f"load average {out['machine']['loadavg_before'][0]:.1f} before, {out['machine']['loadavg_after'][0]:.1f} after")
    print("\n(a) start + cancel, medians (ratio: median over rounds of para's pair / git's pair in the same round)")
    print(f"  {'':<12}{'start':>11}{'cancel':>11}{'pair':>11}{'ratio':>9}{'of medians':>12}"
          f"   target <= {t['start_cancel_ratio']}x")
    for k in ("para-cli", "para-rpc", "git"):
        of_medians = sc[k]["pair"]["median"] / sc["git"]["pair"]["median"]
        paired = out["start_cancel_paired_ratio"].get(k, 1.0)
        mark = "" if k == "git" else verdict(paired <= t["start_cancel_ratio"])
        print(f"  {k:<12}{ms(sc[k]['start']['median']):>11}{ms(sc[k]['cancel']['median']):>11}"
              f"{ms(sc[k]['pair']['median']):>11}{paired:>8.2f}x{of_medians:>11.2f}x   {mark}")
    print(f"  CLI start-up and round trip per call (CLI - RPC, halved): "
          f"{ms(out['start_cancel_cli_overhead_per_call'])}")
    print(f"\n(b) {cfg['sessions']} live sessions, medians")
    print(f"  para list --json (CLI)        {ms(ls['para_list_json']['median']):>10}   "
          f"{ls['ratio_cli']:.2f}x git   target < {t['list_wall_ms']:.0f} ms: "
          f"{verdict(ls['para_list_json']['median'] * 1000 < t['list_wall_ms'])}")
    print(f"  para/list (RPC)               {ms(ls['para_list_rpc']['median']):>10}   {ls['ratio_rpc']:.2f}x git")
    print(f"  git worktree list --porcelain {ms(ls['git_worktree_list']['median']):>10}")
    print("\n(c) CLI wall time, no live sessions, medians")
    print(f"  para list --json              {ms(lp['para_list_json']['median']):>10}   "
          f"{lp['ratio']:.2f}x python   target < {t['list_wall_ms']:.0f} ms: "
          f"{verdict(lp['para_list_json']['median'] * 1000 < t['list_wall_ms'])}")
    print(f"  python -c pass                {ms(lp['python_c_pass']['median']):>10}")
    print("\n(d) sidecar memory")
    for label, key in (("just started", "rss_start"), ("idle, settled", "rss_idle"),
                       ("repository open", "rss_repo_open"), (f"{cfg['sessions']} sessions", "rss_sessions")):
        r = out[key]
        extra = (f"   target < {t['rss_mb']:.0f} MB: {verdict(r['VmRSS'] < t['rss_mb'])}"
                 if key == "rss_sessions" else "")
        print(f"  {label:<20} VmRSS {r['VmRSS']:6.1f} MB   VmHWM {r['VmHWM']:6.1f} MB{extra}")
    if "profile" in out:
        p = out["profile"]
        print("\nprofile (a sidecar under cProfile, git's trace2 log; git times are each process's own wall time)")
        for label, key, per in (("start+cancel pair", "start_cancel_git", "start_cancel_per_pair"),
                                (f"para/list, {p['sessions']} sessions", "list_git", "list_per_call")):
            g = p[key]
            print(f"  {label}: {ms(p[per])} per call, {g['count']:.1f} git processes, "
                  f"{ms(g['seconds'])} of git process time")
            for cmd, c in list(g["by_command"].items())[:8]:
                print(f"    git {cmd:<14} {c['count']:6.1f} x {ms(c['seconds']):>10}")
        print("  para_rpc functions by cumulative time (whole profiled run):")
        for row in p["top_functions"][:12]:
            print(f"    {row['cum']:7.3f}s cum {row['own']:7.3f}s own {row['calls']:6d} calls  {row['where']}")
    print(f"\nwritten: {RESULTS}" if written else "\nsmoke run: no results written")


if __name__ == "__main__":
    sys.exit(main())
