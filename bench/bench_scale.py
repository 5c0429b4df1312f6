#!/usr/bin/env python3
"""Benchmark: para at a hundred sessions, row by row against issue 15's targets.

    python bench/bench_scale.py [--quick] [--smoke] [--sessions N]

Every row is a ratio taken in this run against raw git (or against a floor made of raw git
and bare Python start-ups), printed with the target and pass/miss:

  1 start+cancel --json, small repo    / (raw git pair + 2 x `python -I -S -c pass`)   <= 1.2x
  2 start+cancel --json, 5,000 files    / raw git pair                                   <= 1.1x
  3 start+cancel, human output          / the floor of row 1                             <= 1.3x
  4 para list --json, N dirty sessions  / the same at 0 sessions (and < 100 ms)          <= 1.2x
  5 MCP para_list, N sessions, one stdio session: median (< 10 ms), and / mcp-server-git's
    git_status on the same repository through the same SDK client                        <= 2x
    (with the server's side alone: the same call as raw JSON lines, no SDK client; and one
    `git status` process. mcp-server-git runs from a private venv the bench makes once,
    under ~/.cache/para-bench/; without it the row says "not measured", and --smoke uses
    it only if it is already there)
  6 para conflicts, disjoint sessions at 10 and N: @N < 1 s, @N / @10                    <= 12x
  7 20 concurrent `para integrate` (CLI) / raw sequential merge --squash + commit +
    worktree remove + branch -D                                                          <= 1.5x
  8 first call with no sidecar (autostart), absolute                                     < 300 ms
  9 para/hello p99 while 20 integrations run (rounds of their own, not row 7's)         < 50 ms

Raw and para steps alternate round by round (medians; ratios of medians), so load shifts
hit both sides. Every session in rows 4-6 has an uncommitted edit (rows 4 and 5: "dirty").
Everything runs in a private environment with a sidecar of its own. Results: the table on
stdout and bench/results/scale.json (not with --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from _common import (PARA, PYTHON, SMOKE_HELP, Sidecar, as_installed, byte_compile_para, git, git_processes, isolate,
                     machine, make_repo, private_runtime, proc_cpu, results_path, write_results)


def t(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sh(argv: list[str], cwd: Path) -> str:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}) in {cwd}:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


# ---- rows 1-3: start + cancel ------------------------------------------------------------

def start_cancel_rounds(repo: Path, rounds: int, modes: tuple[str, ...] = ("json",)) -> dict[str, dict[str, float]]:
    """Start+cancel against raw git and two bare Python start-ups, per output mode ("json",
    "human"); the modes alternate round by round, so what loads the machine meanwhile (the
    writeback of an earlier phase, say) hits each alike."""
    wt_dir = repo.parent / f"{repo.name}-raw"
    wt_dir.mkdir(exist_ok=True)
    times: dict[str, dict[str, list[float]]] = {m: {"para": [], "raw": [], "bare": [], "status": []} for m in modes}
    for r in range(rounds):
        for mode in modes:
            js = ["--json"] if mode == "json" else []
            name = f"r{r}{mode[0]}"
            got = times[mode]
            got["para"].append(t(lambda: (sh([*PARA, "start", name, *js], repo),
                                          sh([*PARA, "cancel", "--discard", name, *js], repo))))
            add = t(lambda: sh(["git", "worktree", "add", "-q", "-b", f"raw/{name}", str(wt_dir / name)], repo))
            # (Not part of the raw pair: the status cancel must read before it removes anything.)
            got["status"].append(t(lambda: sh(["git", "-C", str(wt_dir / name), "status", "--porcelain=v1", "-z",
                                               "--untracked-files=all", "--ignored=matching"], repo)))
            got["raw"].append(add + t(lambda: (
                sh(["git", "worktree", "remove", "--force", str(wt_dir / name)], repo),
                sh(["git", "branch", "-q", "-D", f"raw/{name}"], repo))))
            got["bare"].append(t(lambda: (sh([PYTHON, "-I", "-S", "-c", "pass"], repo),
                                          sh([PYTHON, "-I", "-S", "-c", "pass"], repo))))
    return {m: {"para": med(v["para"]), "raw": med(v["raw"]), "python_pair": med(v["bare"]), "status": med(v["status"]),
                "floor": med(v["raw"]) + med(v["bare"])} for m, v in times.items()}


def para_git_raw(repo: Path, rounds: int) -> tuple[float, int]:
    """(median seconds, processes) of the git work one `para start` + `para cancel --discard`
    does, run here as raw git one command after the other (what the trace of `git_work` lists:
    the worktree (the base and whether its branch exists are read from git's files); then the
    worktree's status with its ignored directories (its gitlinks come from its index file, its
    registration, the free archive name and the tip from git's files), the removal, the
    archive): para's git with nothing of para around it."""
    wt_dir = repo.parent / f"{repo.name}-pararaw"
    wt_dir.mkdir(exist_ok=True)
    times, count = [], 0
    for r in range(rounds):
        name, wt = f"p{r}", str(wt_dir / f"p{r}")
        steps = [["worktree", "add", "--quiet", "-b", f"para/{name}", wt, "main"],
                 ["-C", wt, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching"],
                 ["worktree", "remove", "--force", wt],
                 ["branch", "-m", f"para/{name}", f"para/archived/{name}"]]
        count = len(steps)
        times.append(t(lambda: [sh(["git", *step], repo) for step in steps]))
    return med(times), count


# ---- rows 4-6: many dirty sessions -------------------------------------------------------

def dirty_sessions(repo: Path, sc: Sidecar, n: int, start: int = 0) -> None:
    """Sessions s<i> each with an uncommitted edit of its own file (disjoint)."""
    with sc.connect() as conn:
        for i in range(start, n):
            conn.request("para/start", {"cwd": str(repo), "name": f"s{i:03d}"})
            (repo / ".para" / "worktrees" / f"s{i:03d}" / f"own-{i:03d}.txt").write_text(f"work of {i}\n")


def list_times(repo: Path, runs: int, expect: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        text = sh([*PARA, "list", "--json"], repo)
        out.append(time.perf_counter() - start)  # (reading the answer is the caller's time, not para's)
        got = json.loads(text)
        if len(got["sessions"]) != expect or (expect and not all(s["dirty"] for s in got["sessions"])):
            raise SystemExit(f"para list answered wrongly: {len(got['sessions'])} sessions, expected {expect} dirty")
    return out


MCP_GIT_VERSION = "2026.10.19"
# Resolved at import, before isolate() points HOME at the run's private directory: the venv
# outlives the run (one pip install per machine and version, not per run).
MCP_GIT_VENV = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "para-bench"
                / f"mcp-server-git-venv-{MCP_GIT_VERSION}")
_PIP_ENV = dict(os.environ)  # (pip's own configuration: indexes, certificates, proxies)


def mcp_git_server(install: bool) -> tuple[Path | None, str]:
    """(bin/mcp-server-git of the private venv, "") or (None, why it is not there). The venv
    is made by `pip install mcp-server-git==<version>` in a directory of its own (it pins its
    own pydantic etc.; nothing of it goes near para's environment). pip writes absolute paths
    into the venv's scripts, so it is built where it stays; a marker written once pip
    succeeded is what makes it count as installed (a half-made one is made again)."""
    exe, done = MCP_GIT_VENV / "bin" / "mcp-server-git", MCP_GIT_VENV / ".installed"
    MCP_GIT_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(MCP_GIT_VENV.parent / ".lock", "w") as lock:  # (two benches at once: one installs)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and exe.exists():
            return exe, ""
        if not install:
            return None, f"mcp-server-git not installed ({MCP_GIT_VENV}); --smoke spends no pip install on it"
        print(f"  (installing mcp-server-git=={MCP_GIT_VERSION} into {MCP_GIT_VENV}, once)", flush=True)
        shutil.rmtree(MCP_GIT_VENV, ignore_errors=True)
        steps = [[sys.executable, "-m", "venv", str(MCP_GIT_VENV)],
                 [str(MCP_GIT_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                  f"mcp-server-git=={MCP_GIT_VERSION}"]]
        for argv in steps:
            try:
                res = subprocess.run(argv, env=_PIP_ENV, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                     timeout=900)
            except (OSError, subprocess.TimeoutExpired) as e:
                res = subprocess.CompletedProcess(argv, -1, "", str(e))
            if res.returncode != 0 or (argv is steps[-1] and not exe.exists()):
                shutil.rmtree(MCP_GIT_VENV, ignore_errors=True)
                last = (res.stderr.strip() or res.stdout.strip() or "no bin/mcp-server-git").splitlines()[-1]
                return None, f"installing mcp-server-git=={MCP_GIT_VERSION} failed: {last[:200]}"
        done.write_text(f"mcp-server-git=={MCP_GIT_VERSION}\n")
        return exe, ""


async def mcp_list_times(repo: Path, calls: int, expect: int,
                         git_server: Path | None = None) -> tuple[list[float], list[float]]:
    """para_list through the SDK's `mcp.Client` on one stdio session with `para mcp`; with
    `git_server`, mcp-server-git's git_status on the same repository through the same client
    code, call for call in alternation (para, git, para, git, ...). (para times, git times)."""
    from contextlib import AsyncExitStack

    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    params = StdioServerParameters(command=PARA[0], args=[*PARA[1:], "mcp"], env=dict(os.environ), cwd=str(repo))
    para_out: list[float] = []
    git_out: list[float] = []
    async with AsyncExitStack() as stack:
        c = await stack.enter_async_context(Client(params))
        g = None
        if git_server is not None:
            g = await stack.enter_async_context(Client(StdioServerParameters(
                command=str(git_server), args=["--repository", str(repo)], env=dict(os.environ), cwd=str(repo))))
        for i in range(calls + 3):
            start = time.perf_counter()
            r = await c.call_tool("para_list", {})
            dt = time.perf_counter() - start
            if r.is_error or len((r.structured_content or {}).get("sessions", [])) != expect:
                raise SystemExit(f"para_list answered wrongly: {r.content[0].text[:300] if r.content else r}")
            if i >= 3:
                para_out.append(dt)
            if g is None:
                continue
            start = time.perf_counter()
            r = await g.call_tool("git_status", {"repo_path": str(repo)})
            dt = time.perf_counter() - start
            text = r.content[0].text if r.content and hasattr(r.content[0], "text") else ""
            if r.is_error or "branch" not in text.lower():
                raise SystemExit(f"mcp-server-git git_status answered wrongly: {text[:300] or r}")
            if i >= 3:
                git_out.append(dt)
    return para_out, git_out


def mcp_raw_list_times(repo: Path, calls: int, expect: int) -> list[float]:
    """The same `tools/call para_list` written as JSON lines to `para mcp` and its answer read
    back, without an SDK client: the server's side (bridge, sidecar, result encoding) alone.
    The SDK's client then validates each structured result against the tool's output schema
    (jsonschema), which is what the rest of row 5a is."""
    proc = subprocess.Popen([*PARA, "mcp"], cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None

    def ask(msg: dict[str, Any]) -> dict[str, Any]:
        proc.stdin.write((json.dumps(msg) + "\n").encode())
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())
    out = []
    try:
        ask({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        for i in range(1, calls + 4):
            start = time.perf_counter()
            got = ask({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                       "params": {"name": "para_list", "arguments": {}}})
            dt = time.perf_counter() - start
            sessions = ((got.get("result") or {}).get("structuredContent") or {}).get("sessions")
            if sessions is None or len(sessions) != expect:
                raise SystemExit(f"para_list (raw JSON) answered wrongly: {str(got)[:300]}")
            if i > 3:
                out.append(dt)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    return out


def conflicts_times(repo: Path, runs: int) -> tuple[float, list[float]]:
    """(the first call, the calls after it): with nothing changing, what a person sees when
    they ask again; the first call is reported too."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        got = json.loads(sh([*PARA, "conflicts", "--json"], repo))
        times.append(time.perf_counter() - start)
        if got["pairs"]:
            raise SystemExit(f"disjoint sessions reported as colliding: {got['pairs'][:3]}")
    return times[0], times[1:]


# ---- rows 7 and 9: concurrent integrations -----------------------------------------------

def integrate_repo(path: Path, sc: Sidecar, n: int) -> Path:
    path = make_repo(path, 50)
    with sc.connect() as conn:
        for i in range(n):
            conn.request("para/start", {"cwd": str(path), "name": f"i{i:02d}"})
            wt = path / ".para" / "worktrees" / f"i{i:02d}"
            (wt / f"feature-{i:02d}.txt").write_text(f"feature {i}\n")
            git("add", "-A", cwd=wt)
            git("commit", "-q", "-m", f"i{i:02d}: feature", cwd=wt)
    return path


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the `para` and `git` processes it ran)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def integrate_all_cli(repo: Path, n: int, hello_to: Path | None = None, sidecar_pid: int | None = None,
                      cpu: dict[str, float] | None = None) -> tuple[float, list[float]]:
    """Wall time of n `para integrate` processes launched at once; with `hello_to`, the
    para/hello latencies measured on one connection meanwhile; into `cpu`, the CPU seconds
    the `para` processes, the sidecar (`sidecar_pid`) and its git processes spent."""
    cpu = {} if cpu is None else cpu
    from para_rpc.client import Connection, hello
    lat: list[float] = []
    stop = threading.Event()

    def pinger() -> None:
        assert hello_to is not None
        with Connection.open(hello_to, timeout=60) as conn:
            hello(conn)
            while not stop.is_set():
                start = time.perf_counter()
                conn.request("para/hello", {})
                lat.append(time.perf_counter() - start)
                time.sleep(0.005)
    th = threading.Thread(target=pinger) if hello_to else None
    if th:
        th.start()
    cpu.clear()
    cpu["cli"] = -children_cpu()
    if sidecar_pid:
        own, kids = proc_cpu(sidecar_pid)
        cpu["sidecar"], cpu["git"] = -own, -kids
    start = time.perf_counter()
    procs = [subprocess.Popen([*PARA, "integrate", f"i{i:02d}: integrate", "--session", f"i{i:02d}", "--json"],
                              cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
             for i in range(n)]
    for i, p in enumerate(procs):
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"para integrate i{i:02d} failed: {out.decode()} {err.decode()}")
    wall = time.perf_counter() - start
    cpu["cli"] += children_cpu()  # (the `para` processes, reaped above)
    if sidecar_pid:
        own, kids = proc_cpu(sidecar_pid)  # (its git processes are its reaped children)
        cpu["sidecar"] += own
        cpu["git"] += kids
    stop.set()
    if th:
        th.join()
    return wall, lat


def target_moves(repo: Path) -> int:
    """How many times para moved main in `repo` (integrations that waited in the queue
    together land with one move: its reflog entry names them all)."""
    log = git("reflog", "show", "--format=%gs", "main", cwd=repo).splitlines()
    return len([line for line in log if line.startswith("para: integrate ")])


def integrate_all_raw(repo: Path, n: int, cpu: dict[str, float] | None = None) -> float:
    """Wall time of the same n integrations done with raw git, one after the other; into
    `cpu`, the CPU seconds of those git processes."""
    before = children_cpu()
    start = time.perf_counter()
    for i in range(n):
        git("merge", "--squash", "-q", f"para/i{i:02d}", cwd=repo)
        git("commit", "-q", "-m", f"i{i:02d}: integrate", cwd=repo)
        git("worktree", "remove", "--force", str(repo / ".para" / "worktrees" / f"i{i:02d}"), cwd=repo)
        git("branch", "-q", "-D", f"para/i{i:02d}", cwd=repo)
    wall = time.perf_counter() - start
    if cpu is not None:
        cpu["raw"] = children_cpu() - before
    return wall


# ---- where the time of rows 1, 3 and 7 goes ------------------------------------------------

def git_work(work: Path, rounds: int) -> dict[str, Any]:
    """The git processes para runs for one start+cancel and one integration (of committed
    work), and their time by git's own clock: a sidecar of its own with git's trace2 event
    log (which slows git a little; only counts and git's time are read from it). Also, in
    this run: a `para` call with nothing to do (`para list --json`, no sessions), as the cost
    of a `para` process, and a bare `python -c pass` with the same site-packages."""
    runtime = private_runtime("pt")
    trace = work / "trace2.json"
    repo = make_repo(work / "traced", 10)
    sc = Sidecar(runtime, trace_to=trace, python=PYTHON)
    env = dict(os.environ, PARA_RUNTIME_DIR=str(runtime))
    out: dict[str, Any] = {}
    try:
        def para(*argv: str) -> str:
            res = subprocess.run([*PARA, *argv], cwd=repo, env=env, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL)
            if res.returncode != 0:
                raise SystemExit(f"para {' '.join(argv)} failed: {res.stdout} {res.stderr}")
            return res.stdout
        para("list", "--json")
        idle = []
        for _ in range(max(rounds, 5)):
            idle.append(t(lambda: para("list", "--json")))
        out["para_call"] = med(idle)
        out["python_site"] = med([t(lambda: sh([PYTHON, "-c", "pass"], repo)) for _ in range(max(rounds, 5))])
        trace.write_text("")
        for r in range(rounds):
            para("start", f"t{r}", "--json")
            para("cancel", "--discard", f"t{r}", "--json")
        out["start_cancel"] = git_processes(trace, rounds)
        for r in range(rounds):
            para("start", f"c{r}", "--json")
            wt = repo / ".para" / "worktrees" / f"c{r}"
            (wt / f"c{r}.txt").write_text("work\n")
            git("add", "-A", cwd=wt)
            git("commit", "-q", "-m", f"c{r}: work", cwd=wt)
        trace.write_text("")
        for r in range(rounds):
            para("integrate", f"c{r} lands", "--session", f"c{r}", "--json")
        out["integrate"] = git_processes(trace, rounds)
        out["para_git_raw"] = para_git_raw(make_repo(work / "pararaw", 10), max(rounds, 5))
    finally:
        sc.stop()
        shutil.rmtree(runtime, ignore_errors=True)
    return out


def explain(sc_small: dict[str, float], cpus: list[dict[str, float]], n: int, raw_wall: float,
            g: dict[str, Any]) -> list[str]:
    """Rows 1 and 7 taken apart (see the README's benchmark section): what para's time is made
    of, and its floors: for rows 1 and 3, raw git's own pair, the status cancel reads before it
    removes anything, and two `para` calls that do nothing; for row 7, the CPU of its `para`
    processes and git processes if the sidecar's cost nothing."""
    call, sc_git = g["para_call"], g["start_cancel"]
    own_git, own_count = g["para_git_raw"]
    # para's floor: the raw git pair itself (the same three git commands: no check, no save, a
    # deleted branch), the one status that keeps a cancel from destroying uncommitted work (raw
    # `worktree remove --force` reads none), plus two `para` calls that do nothing: what any
    # CLI-to-sidecar para that loses nothing costs.
    own_floor = 2 * call + sc_small["raw"] + sc_small["status"]
    lines = [
        f"row 1: start+cancel {ms(sc_small['para'])}; a `para` call with nothing to do {ms(call)} "
        f"(`python -c pass` alone {ms(g['python_site'])}, `python -I -S -c pass` {ms(sc_small['python_pair'] / 2)})",
        f"       its {own_count} git processes, one after the other as raw git: {ms(own_git)} (para runs three at "
        "once; the trace lists " + ", ".join(f"{k} {v['count']:g}x" for k, v in sc_git["by_command"].items()) + ")",
        f"       para's floor, the raw git pair ({ms(sc_small['raw'])}), the status cancel reads first "
        f"({ms(sc_small['status'])}) and 2 `para` calls that do nothing: {ms(own_floor)} = "
        f"{own_floor / sc_small['floor']:.2f}x the row's floor (targets: row 1 1.2x, row 3 1.3x)"]
    if round(sc_git["count"]) != own_count:
        lines.append(f"       (note: para ran {sc_git['count']:.0f} git processes per start+cancel in the trace, "
                     f"para_git_raw replays {own_count}: update para_git_raw)")
    if cpus:
        per = {k: med([c[k] for c in cpus]) / n for k in cpus[0]}
        ig = g["integrate"]
        cores = os.cpu_count() or 1
        need = (per["cli"] + per["git"]) * n / cores
        lines += [
            f"row 7: CPU per integration: its `para` process {ms(per['cli'])}, the sidecar {ms(per['sidecar'])}, "
            f"its git {ms(per['git'])} ({ig['count']:.0f} processes: "
            + ", ".join(f"{k} {v['count']:g}x" for k, v in list(ig["by_command"].items())[:8]) + ", ...)",
            f"       raw git: {ms(per['raw'])} CPU in 4 processes",
            f"       on {cores} CPUs the {n} `para` processes and their git alone need {ms(need)} of wall time "
            f"(if the sidecar's own work cost nothing): {need / raw_wall:.2f}x raw (target 1.5x)" if raw_wall else ""]
    return [line for line in lines if line]


# ---- row 8: autostart ----------------------------------------------------------------------

def cold_and_warm(work: Path, runs: int) -> tuple[list[float], list[float]]:
    """`para list --json` with no sidecar running (it autostarts one), then the next call
    (each in a repository of its own: one repository is served by one sidecar at a time)."""
    cold, warm = [], []
    for r in range(runs):
        repo = make_repo(work / f"cold{r}", 10)
        runtime = Path(tempfile.mkdtemp(prefix="pc", dir="/tmp"))
        os.chmod(runtime, 0o700)
        env = dict(os.environ, PARA_RUNTIME_DIR=str(runtime))
        for out in (cold, warm):
            start = time.perf_counter()
            res = subprocess.run([*PARA, "list", "--json"], cwd=repo, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"para list with no sidecar failed ({res.returncode}): {res.stdout} {res.stderr}")
            out.append(time.perf_counter() - start)
        subprocess.run([*PARA, "sidecar", "stop"], cwd=repo, env=env, capture_output=True)
        shutil.rmtree(runtime, ignore_errors=True)
    return cold, warm


# ---- the table -------------------------------------------------------------------------------

def row(rows: list[dict[str, Any]], key: str, what: str, value: float, target: float, unit: str = "x",
        detail: str = "") -> None:
    ok = value <= target if unit == "x" else value < target
    shown = f"{value:.2f}x" if unit == "x" else ms(value)
    goal = f"<= {target:g}x" if unit == "x" else f"< {ms(target)}"
    rows.append({"row": key, "what": what, "value": value, "unit": unit, "target": target, "pass": ok,
                 "detail": detail})
    print(f"  {key:<3} {what:<58} {shown:>10}  target {goal:<10} {'pass' if ok else 'MISS'}   {detail}", flush=True)


def not_measured(rows: list[dict[str, Any]], key: str, what: str, why: str) -> None:
    """A row that could not be measured in this run: said so, neither pass nor miss."""
    rows.append({"row": key, "what": what, "value": None, "unit": None, "target": None, "pass": None, "detail": why})
    print(f"  {key:<3} {what:<58} {'-':>10}  {'':<17} NOT MEASURED   {why}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and 30 sessions instead of 100")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--sessions", type=int, help="sessions for rows 4-6 (default 100, 30 with --quick)")
    a = ap.parse_args(argv)
    quick = a.quick or a.smoke
    n = a.sessions or (5 if a.smoke else 30 if quick else 100)
    rounds = 1 if a.smoke else 5 if quick else 15
    runs = 1 if a.smoke else 5 if quick else 15
    integrations = 3 if a.smoke else 20
    work = Path(tempfile.mkdtemp(prefix="para-bench-scale-"))
    global PARA, PYTHON
    PARA, PYTHON, layout = as_installed(work)
    runtime = isolate(work, prefix="ps")
    sc = Sidecar(runtime, python=PYTHON)
    rows: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    try:
        byte_compile_para()
        print(f"para at scale: {n} sessions, {rounds} rounds, {runs} runs "
              f"(load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {layout}, "
              "byte-compiled)\n", flush=True)
        small = make_repo(work / "small", 10)
        big = make_repo(work / "big", 10 if a.smoke else 5000)
        # (Rows 1 and 3 alternate, before the 5,000-file rounds: their worktrees' writeback and
        # deletion would load the machine during whichever ran after them.)
        both = start_cancel_rounds(small, rounds, ("json", "human"))
        sc_small, sc_human = both["json"], both["human"]
        sc_big = start_cancel_rounds(big, rounds)["json"]
        figures.update(start_cancel_small=sc_small, start_cancel_big=sc_big, start_cancel_human=sc_human)
        row(rows, "1", "start+cancel --json, small repo / floor", sc_small["para"] / sc_small["floor"], 1.2,
            detail=f"para {ms(sc_small['para'])}, git {ms(sc_small['raw'])}, 2 python {ms(sc_small['python_pair'])}")
        row(rows, "2", f"start+cancel --json, {5000 if not a.smoke else 10} files / raw git",
            sc_big["para"] / sc_big["raw"], 1.1, detail=f"para {ms(sc_big['para'])}, git {ms(sc_big['raw'])}")
        row(rows, "3", "start+cancel, human output / floor", sc_human["para"] / sc_human["floor"], 1.3,
            detail=f"para {ms(sc_human['para'])}")

        empty = make_repo(work / "empty", 10)
        many = make_repo(work / "many", 10)
        dirty_sessions(many, sc, n)
        list_times(many, 1, n)  # (the first list watches the worktrees)
        l0, ln = [], []
        for _ in range(runs):
            l0 += list_times(empty, 1, 0)
            ln += list_times(many, 1, n)
        figures["list"] = {"at_0": med(l0), "at_n": med(ln)}
        row(rows, "4", f"para list --json, {n} dirty / 0 sessions", med(ln) / med(l0), 1.2,
            detail=f"{ms(med(ln))} vs {ms(med(l0))} (target also < 100 ms: "
                   f"{'pass' if med(ln) < 0.1 else 'MISS'})")

        mcp_git, why = mcp_git_server(install=not a.smoke)
        mcp, mcp_git_t = asyncio.run(mcp_list_times(many, 3 if a.smoke else 30, n, mcp_git))
        raw_mcp = mcp_raw_list_times(many, 3 if a.smoke else 30, n)
        st = [t(lambda: sh(["git", "status", "--porcelain"], many)) for _ in range(max(3, runs))]
        figures["mcp_list"] = {"median": med(mcp), "server_median": med(raw_mcp), "git_status": med(st),
                               "mcp_server_git": {"version": MCP_GIT_VERSION, "git_status": med(mcp_git_t)}
                               if mcp_git_t else {"version": MCP_GIT_VERSION, "not_measured": why}}
        row(rows, "5a", f"MCP para_list, {n} sessions, median", med(mcp), 0.010, unit="s",
            detail=f"server side {ms(med(raw_mcp))} (raw JSON to `para mcp`); the rest is the SDK client, mostly its "
                   "jsonschema validation of the result")
        others = (f"one `git status` process {ms(med(st))} (para_list {med(mcp) / med(st):.2f}x); server side "
                  f"alone {ms(med(raw_mcp))}")
        what = "MCP para_list / mcp-server-git git_status, same client"
        if mcp_git_t:
            row(rows, "5b", what, med(mcp) / med(mcp_git_t), 2.0,
                detail=f"git_status {ms(med(mcp_git_t))} (mcp-server-git {MCP_GIT_VERSION}); {others}")
        else:
            not_measured(rows, "5b", what, f"{why}; {others}")

        ten = make_repo(work / "ten", 10)
        dirty_sessions(ten, sc, 10)
        first10, c10 = conflicts_times(ten, runs)
        firstn, cn = conflicts_times(many, runs)
        figures["conflicts"] = {"at_10": med(c10), "at_n": med(cn), "first_at_10": first10, "first_at_n": firstn}
        row(rows, "6a", f"para conflicts, {n} disjoint sessions (asked again)", med(cn), 1.0, unit="s",
            detail=f"first call {ms(firstn)}")
        row(rows, "6b", f"para conflicts @{n} / @10", med(cn) / med(c10), 12.0,
            detail=f"@10 {ms(med(c10))} (first {ms(first10)})")

        walls_para, walls_raw, hellos = [], [], []
        cpus: list[dict[str, float]] = []
        moves: list[int] = []
        # Row 9's rounds are rounds of their own: its client asking para/hello every 5 ms loads
        # the sidecar and this machine's CPUs, which row 7's raw side does not have to share.
        for r in range(1 if a.smoke else 3 if quick else 5):
            repo_p = integrate_repo(work / f"ip{r}", sc, integrations)
            repo_r = integrate_repo(work / f"ir{r}", sc, integrations)
            cpu: dict[str, float] = {}
            wall, _ = integrate_all_cli(repo_p, integrations, sidecar_pid=sc.pid, cpu=cpu)
            walls_para.append(wall)
            moves.append(target_moves(repo_p))
            walls_raw.append(integrate_all_raw(repo_r, integrations, cpu))
            cpus.append(cpu)
        for r in range(1 if a.smoke else 2 if quick else 3):
            hellos += integrate_all_cli(integrate_repo(work / f"ih{r}", sc, integrations), integrations,
                                        hello_to=sc.socket)[1]
        p99 = statistics.quantiles(hellos, n=100)[98] if len(hellos) >= 2 else max(hellos, default=0.0)
        figures["integrate"] = {"para": med(walls_para), "raw": med(walls_raw), "hello_p99": p99,
                                "hello_samples": len(hellos), "target_moves": moves}
        row(rows, "7", f"{integrations} concurrent para integrate / raw sequential", med(walls_para) / med(walls_raw),
            1.5, detail=f"para {ms(med(walls_para))}, git {ms(med(walls_raw))}; main moved "
                        f"{statistics.median(moves):g} times for {integrations} (those waiting land together)")

        cold, warm = cold_and_warm(work, 1 if a.smoke else 3 if quick else 7)
        figures["autostart"] = {"cold": med(cold), "warm": med(warm)}
        row(rows, "8", "first call with no sidecar (autostart)", med(cold), 0.300, unit="s",
            detail=f"next call {ms(med(warm))}")
        row(rows, "9", f"para/hello p99 while {integrations} integrations run", p99, 0.050, unit="s",
            detail=f"{len(hellos)} samples, median {ms(med(hellos)) if hellos else '-'}")

        g = git_work(work, 1 if a.smoke else 3 if quick else 5)
        figures["where"] = {"git": g, "integrate_cpu": cpus}
        print("\nWhere the time goes (this run):")
        for line in explain(sc_small, cpus, integrations, med(walls_raw), g):
            print(f"  {line}")
    finally:
        sc.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)
    missed = [r["row"] for r in rows if r["pass"] is False]
    unmeasured = [r["row"] for r in rows if r["pass"] is None]
    print(f"\n{len(rows) - len(missed) - len(unmeasured)} of {len(rows)} rows meet their target"
          + (f"; missed: {', '.join(missed)}" if missed else "")
          + (f"; not measured: {', '.join(unmeasured)}" if unmeasured else ""))
    if not a.smoke:
        write_results(results_path("scale"), {"machine": machine(load=os.getloadavg()), "sessions": n,
                                              "rows": rows, "figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
