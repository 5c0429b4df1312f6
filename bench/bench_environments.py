#!/usr/bin/env python3
"""Benchmark of session environments: what `session.setup` and `session.ports` add to a start.

    python bench/bench_environments.py [--quick] [--smoke] [--rounds N] [--sessions M] [--files F]

Run it with the virtualenv's python. Private environment and sidecar as in the other
benchmarks (bench/_common.py); one scratch repository of F tracked files (default 300).

  (a) `para/start` + `para/cancel {discard: true}` over one RPC connection, N rounds (default
      20), three variants per round in an order rotated every round: without a setup; with a
      setup that does nothing (`session.setup = ["true"]`, given per request as
      PARA_SESSION_SETUP); and raw `git worktree add -b` + `git worktree remove` +
      `git branch -D`. Reported: the medians and the ratios setup/no-setup and each vs git.
  (b) M sessions (default 100) started one after the other with `session.ports = 1` (every
      start probes ports and checks the live sessions' ones), against M starts without ports
      and M raw `git worktree add`s; then all removed. Reported: per-start medians and ratios.

The ratios are what to read (the same run, alternated): absolute times move with the load of
a shared machine. Results: a table on stdout, everything in bench/results/environments.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, SMOKE_HELP, Sidecar, git, isolate, machine, make_repo, results_path, write_results

RESULTS = results_path("environments")
NOOP_SETUP = {"PARA_SESSION_SETUP": json.dumps(["true"])}


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def phase_setup(conn: Any, repo: Path, rounds: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"no-setup": [], "noop-setup": [], "git": []}
    wt = repo.parent / "raw-wt"

    def para(name: str, env: dict[str, str]) -> None:
        conn.request("para/start", {"cwd": str(repo), "name": name, "env": env})
        conn.request("para/cancel", {"cwd": str(repo), "session": name, "discard": True})

    def raw(name: str) -> None:
        git("worktree", "add", "-q", "-b", f"raw/{name}", str(wt / name), "main", cwd=repo)
        git("worktree", "remove", "--force", str(wt / name), cwd=repo)
        git("branch", "-q", "-D", f"raw/{name}", cwd=repo)

    variants = ["no-setup", "noop-setup", "git"]
    for r in range(rounds):
        order = variants[r % 3:] + variants[:r % 3]
        for v in order:
            name = f"{v.replace('-', '')}{r}"
            if v == "git":
                times[v].append(timed(lambda: raw(name)))
            else:
                times[v].append(timed(lambda: para(name, NOOP_SETUP if v == "noop-setup" else {})))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"times": times, "median": med,
            "ratios": {"noop-setup / no-setup": med["noop-setup"] / med["no-setup"],
                       "no-setup / git": med["no-setup"] / med["git"],
                       "noop-setup / git": med["noop-setup"] / med["git"]}}


def phase_ports(conn: Any, work: Path, files: int, n: int) -> dict[str, Any]:
    """M starts with ports, M without (each in its own repository, so each sees only its own
    live sessions), M raw worktree adds; per-start times."""
    per: dict[str, list[float]] = {}
    for kind in ("ports", "no-ports", "git"):
        repo = make_repo(work / f"ports-{kind}", files)
        env = {"PARA_SESSION_PORTS": "1"} if kind == "ports" else {}
        times = []
        for i in range(n):
            if kind == "git":
                times.append(timed(lambda: git("worktree", "add", "-q", "-b", f"raw/s{i}",
                                               str(work / f"raw-{kind}" / f"s{i}"), "main", cwd=repo)))
            else:
                times.append(timed(lambda: conn.request("para/start", {"cwd": str(repo), "name": f"s{i}",
                                                                       "env": env})))
        per[kind] = times
        if kind == "ports":
            listed = conn.request("para/list", {"cwd": str(repo)})["sessions"]
            ports = [p for s in listed for p in s["ports"]]
            if len(ports) != n or len(set(ports)) != n:
                raise SystemExit(f"port allocation is wrong: {len(ports)} ports, {len(set(ports))} distinct")
        if kind != "git":
            for i in range(n):
                conn.request("para/cancel", {"cwd": str(repo), "session": f"s{i}", "discard": True})
    med = {k: statistics.median(v) for k, v in per.items()}
    total = {k: sum(v) for k, v in per.items()}
    return {"per_start": per, "median": med, "total": total,
            "ratios": {"ports / no-ports": med["ports"] / med["no-ports"], "ports / git": med["ports"] / med["git"],
                       "no-ports / git": med["no-ports"] / med["git"]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and sessions")
    ap.add_argument("--rounds", type=int, default=None, help="start+cancel rounds (default 20, 6 with --quick)")
    ap.add_argument("--sessions", type=int, default=100, help="sessions for the port phase")
    ap.add_argument("--files", type=int, default=300, help="tracked files in the repository")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if args.smoke:
        args.quick, args.rounds, args.sessions, args.files = True, 3, 3, 10
    rounds = args.rounds or (6 if args.quick else 20)
    work = Path(tempfile.mkdtemp(prefix="para-bench-env-"))
    runtime = isolate(work)
    sys.path.insert(0, str(ROOT))
    sc = Sidecar(runtime)
    out: dict[str, Any] = {"rounds": rounds, "sessions": args.sessions, "files": args.files, "machine": machine()}
    try:
        repo = make_repo(work / "repo", args.files)
        with sc.connect() as conn:
            conn.request("para/start", {"cwd": str(repo), "name": "warmup", "env": NOOP_SETUP})
            conn.request("para/cancel", {"cwd": str(repo), "session": "warmup", "discard": True})
            out["setup"] = phase_setup(conn, repo, rounds)
            out["ports"] = phase_ports(conn, work, args.files, args.sessions)
    finally:
        sc.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not args.smoke:
        write_results(RESULTS, out)

    s, p = out["setup"], out["ports"]
    print(f"\nstart + cancel, {rounds} rounds, {args.files} files, {out['machine']['git']}")
    for k, v in s["median"].items():
        print(f"  {k:<12} median {v * 1000:8.1f} ms")
    for k, v in s["ratios"].items():
        print(f"  {k:<22} {v:.2f}x")
    print(f"start of {args.sessions} sessions one after the other (per start)")
    for k, v in p["median"].items():
        print(f"  {k:<12} median {v * 1000:8.1f} ms   total {p['total'][k]:.2f} s")
    for k, v in p["ratios"].items():
        print(f"  {k:<22} {v:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
