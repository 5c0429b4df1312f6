#!/usr/bin/env python3
"""Benchmark: MCP through `para mcp` (the stdio bridge an AI client launches).

    python bench/bench_mcp.py [--quick] [--smoke] [--sessions N] [--calls C] [--starts S]

Everything runs in a private environment (fresh HOME, PARA_CONFIG, a 0700
PARA_RUNTIME_DIR under /tmp, no global/system git config, a fixed identity)
with its own sidecar, stopped at the end.

Measured, with the SDK's own `mcp.Client` launching `para mcp` as a subprocess:

  round trip   `tools/call para_list` with N sessions (default 100), C calls on
               one connection: median and p90. Baselines in the same run: the
               same `para/list` over the sidecar's JSON-RPC socket (stdlib client),
               and `git worktree list --porcelain` as a process. `para_config_show`
               against `para/config` isolates the transport's own cost (list runs
               git in every worktree).
  warm start   spawning `para mcp` until the session is usable (initialize done
               and the first tool call answered) with the sidecar already running
  cold start   the same with no sidecar running: `para mcp` starts one, which
               loads the MCP SDK before it can answer

Results: a table on stdout and bench/results/mcp.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import PARA, isolate, machine, make_repo, results_path, write_results
from _common import SMOKE_HELP

RESULTS = results_path("mcp")


def sidecar_pid(runtime: Path) -> int | None:
    try:
        return int((runtime / "sidecar.sock.lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_sidecar(runtime: Path) -> None:
    """Ask the running sidecar to stop and wait until it has (by its pid)."""
    from para_rpc.client import Connection
    pid = sidecar_pid(runtime)
    try:
        with Connection.open(runtime / "sidecar.sock", timeout=30) as conn:
            conn.request("para/shutdown", {})
    except OSError:
        pass
    deadline = time.monotonic() + 60
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.02)
    else:
        if pid:
            os.kill(pid, signal.SIGKILL)


def start_sidecar(runtime: Path) -> None:
    from para_rpc.client import wait_for_sidecar, spawn_sidecar
    wait_for_sidecar(spawn_sidecar()).close()


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else [xs[0]] * 9
    return {"n": len(xs), "median_ms": statistics.median(xs) * 1000, "p90_ms": q[8] * 1000,
            "min_ms": xs[0] * 1000, "max_ms": xs[-1] * 1000}


async def mcp_round_trips(repo: Path, calls: int, n: int, tool: str = "para_list") -> list[float]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    params = StdioServerParameters(command=PARA[0], args=[*PARA[1:], "mcp"], env=dict(os.environ), cwd=str(repo))
    out = []
    async with Client(params) as c:
        for i in range(calls + 5):
            t = time.perf_counter()
            r = await c.call_tool(tool, {})
            dt = time.perf_counter() - t
            if r.is_error or (tool == "para_list" and len(r.structured_content["sessions"]) != n):
                raise SystemExit(f"{tool} answered wrongly: {r.content[0].text[:300]}")
            if i >= 5:  # warm-up
                out.append(dt)
    return out


def rpc_round_trips(repo: Path, calls: int, n: int, method: str = "para/list") -> list[float]:
    from para_rpc.client import connect
    out = []
    with connect() as conn:
        for i in range(calls + 5):
            t = time.perf_counter()
            r = conn.request(method, {"cwd": str(repo)})
            dt = time.perf_counter() - t
            assert method != "para/list" or len(r["sessions"]) == n
            if i >= 5:
                out.append(dt)
    return out


def git_round_trips(repo: Path, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=repo, capture_output=True, check=True)
        out.append(time.perf_counter() - t)
    return out


async def time_to_usable(repo: Path) -> tuple[float, float]:
    """Spawn `para mcp` (as an MCP client does), initialize, answer one tool call
    (para_list); returns (time to initialized, time to the first answer)."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    params = StdioServerParameters(command=PARA[0], args=[*PARA[1:], "mcp"], env=dict(os.environ), cwd=str(repo))
    t = time.perf_counter()
    async with Client(params) as c:
        ready = time.perf_counter() - t
        r = await c.call_tool("para_list", {})
        dt = time.perf_counter() - t
        if r.is_error:
            raise SystemExit(f"para_list failed: {r.content[0].text[:300]}")
    return ready, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke)")
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--calls", type=int, default=None, help="round trips per measurement (default 200)")
    ap.add_argument("--starts", type=int, default=None, help="warm/cold starts (default 15/5)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.quick, args.sessions, args.calls, args.starts = True, 2, 3, 1
    calls = args.calls or (30 if args.quick else 200)
    warm_n, cold_n = (args.starts, args.starts) if args.starts else ((3, 2) if args.quick else (15, 5))

    work = Path(tempfile.mkdtemp(prefix="para-bench-mcp-"))
    runtime = isolate(work, PARA_SIDECAR_IDLE_TIMEOUT="0")
    repo = make_repo(work / "repo", 0, message="initial")
    try:
        start_sidecar(runtime)
        from para_rpc.client import connect
        with connect() as conn:
            for i in range(args.sessions):
                conn.request("para/start", {"cwd": str(repo), "name": f"s{i:03d}"})
        print(f"{args.sessions} sessions started; measuring {calls} round trips each", file=sys.stderr)
        mcp_rt = asyncio.run(mcp_round_trips(repo, calls, args.sessions))
        rpc_rt = rpc_round_trips(repo, calls, args.sessions)
        git_rt = git_round_trips(repo, min(calls, 50))
        mcp_cfg = asyncio.run(mcp_round_trips(repo, calls, args.sessions, "para_config_show"))
        rpc_cfg = rpc_round_trips(repo, calls, args.sessions, "para/config")
        warm = [asyncio.run(time_to_usable(repo)) for _ in range(warm_n)]
        cold = []
        for _ in range(cold_n):
            stop_sidecar(runtime)
            cold.append(asyncio.run(time_to_usable(repo)))
    finally:
        stop_sidecar(runtime)

    results: dict[str, Any] = {
        "machine": machine(),
        "sessions": args.sessions,
        "round_trip": {"mcp_para_list": stats(mcp_rt), "jsonrpc_para_list": stats(rpc_rt),
                       "git_worktree_list": stats(git_rt), "mcp_para_config_show": stats(mcp_cfg),
                       "jsonrpc_para_config": stats(rpc_cfg)},
        "time_to_usable": {"warm_sidecar": stats([b for _, b in warm]), "cold_no_sidecar": stats([b for _, b in cold]),
                           "warm_initialized": stats([a for a, _ in warm]),
                           "cold_initialized": stats([a for a, _ in cold])},
    }
    rt = results["round_trip"]
    results["ratios"] = {
        "mcp_over_jsonrpc_median": rt["mcp_para_list"]["median_ms"] / rt["jsonrpc_para_list"]["median_ms"],
        "mcp_over_jsonrpc_config_median": rt["mcp_para_config_show"]["median_ms"] / rt["jsonrpc_para_config"]["median_ms"],
        "mcp_over_git_worktree_list_median": rt["mcp_para_list"]["median_ms"] / rt["git_worktree_list"]["median_ms"],
    }
    if not args.smoke:
        write_results(RESULTS, results)
    print(f"\nMCP through `para mcp`, {args.sessions} sessions ({platform.python_version()}, "
          f"{os.cpu_count()} cpus)\n")
    print(f"{'measurement':<44} {'median ms':>10} {'p90 ms':>10} {'n':>5}")
    rows = [("tools/call para_list (MCP via para mcp)", rt["mcp_para_list"]),
            ("para/list (JSON-RPC, stdlib client)", rt["jsonrpc_para_list"]),
            ("git worktree list --porcelain (process)", rt["git_worktree_list"]),
            ("tools/call para_config_show (MCP)", rt["mcp_para_config_show"]),
            ("para/config (JSON-RPC)", rt["jsonrpc_para_config"]),
            ("spawn -> initialized, warm sidecar", results["time_to_usable"]["warm_initialized"]),
            ("spawn -> first para_list answered, warm", results["time_to_usable"]["warm_sidecar"]),
            ("spawn -> initialized, cold (starts sidecar)", results["time_to_usable"]["cold_initialized"]),
            ("spawn -> first para_list answered, cold", results["time_to_usable"]["cold_no_sidecar"])]
    for label, s in rows:
        print(f"{label:<44} {s['median_ms']:>10.1f} {s['p90_ms']:>10.1f} {s['n']:>5}")
    print(f"\nMCP / JSON-RPC (median): para_list {results['ratios']['mcp_over_jsonrpc_median']:.2f}x, "
          f"config {results['ratios']['mcp_over_jsonrpc_config_median']:.2f}x")
    print(f"results written to {RESULTS}" if not args.smoke else "smoke run: no results written")


if __name__ == "__main__":
    main()
