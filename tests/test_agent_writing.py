"""An agent still writing into its worktree while its session is saved and removed (S2 item 4).

A real scripted agent forks a writer that appends numbered lines to `log.txt` in its worktree
as fast as it can, and after each successful append records the number in a mirror file
outside the repository. cancel, and the integrate the agent runs on its own session, must
freeze the agent's processes (SIGSTOP) for the save-and-remove step: every number the mirror
has must be in what para saved. Before, the writer kept going between the save and the
removal, and what it wrote there was deleted with the worktree. The caller itself (the agent's
own `para integrate`) is never frozen: it gets its answer.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents_util import Api, agent_env, agent_scripts, api, dispatch, out, wait_file  # noqa: F401
from conftest import git, pid_alive, run_para, wait_until


@pytest.fixture
def writers(out: Path) -> Iterator[Path]:
    yield out
    for f in out.glob("*.pid"):  # a failing test leaves nothing running
        pid = int(f.read_text().strip() or 0)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def writer_task(out: Path, name: str, finish: bool) -> str:
    loop = (f"i=0; while :; do i=$((i+1)); echo $i >> log.txt && echo $i >> {out}/{name}.mirror; done")
    text = (f"Write forever.\n\n```agent\n"
            f"run sh -c '({loop}) & echo $! > {out}/{name}.tmp && mv {out}/{name}.tmp {out}/{name}.pid'\n"
            f"run sh -c 'while [ ! -s {out}/{name}.mirror ] || [ $(wc -l < {out}/{name}.mirror) -lt 200 ]; "
            f"do sleep 0.01; done'\n")
    if not finish:
        text += f"wait-for {out}/gate\n"
    text += "```\n\n"
    if finish:
        text += f'When done: para integrate "{name} lands"\n'
    return text


def lines(text: str | None) -> set[int]:
    return {int(x) for x in (text or "").split()}


def show(repo: Path, spec: str) -> str | None:
    import subprocess
    res = subprocess.run(["git", "show", spec], cwd=repo, capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else None


def test_cancel_freezes_a_writing_agent_so_nothing_it_wrote_is_lost(api: Api, repo: Path, writers: Path) -> None:
    dispatch(repo, "wr", "-p", writer_task(writers, "wr", finish=False), "--agent", "scripted",
             "--mode", "headless")
    writer = int(wait_file(writers / "wr.pid").read_text().strip())
    wait_until(lambda: len(lines((writers / "wr.mirror").read_text())) >= 200, what="the writer to run")
    result = json.loads(run_para("cancel", "wr", "--json", cwd=repo).stdout)
    wait_until(lambda: not pid_alive(writer), what="the writer to be stopped")
    saved = lines(show(repo, f"{result['archived_branch']}:log.txt"))
    mirror = lines((writers / "wr.mirror").read_text())
    lost = sorted(mirror - saved)
    assert not lost, f"{len(lost)} line(s) written during the cancel were lost, first {lost[:5]}"
    assert any("were paused while the worktree was saved and removed, and stay paused until the agent is stopped" in w and str(writer) in w
               for w in result["warnings"]), result["warnings"]


def test_an_agent_integrating_itself_gets_its_answer_and_its_writer_loses_nothing(api: Api, repo: Path,
                                                                                  writers: Path) -> None:
    run_para("config", "set", "agent.stop_grace", "2", cwd=repo)
    dispatch(repo, "wi", "-p", writer_task(writers, "wi", finish=True), "--agent", "scripted",
             "--mode", "headless")
    writer = int(wait_file(writers / "wi.pid").read_text().strip())
    exited = api.wait_event("agent_exited", "wi")["data"]
    assert (exited["exit_code"], exited["status"]) == (0, "integrated")  # its own integrate was answered
    wait_until(lambda: not pid_alive(writer), what="the writer to be stopped")
    rec = api.sessions().get("wi") or json.loads(run_para("show", "wi", "--json", cwd=repo).stdout)
    landed = lines(show(repo, "main:log.txt"))
    leftover = rec["integration"].get("leftover")
    kept = landed | lines(show(repo, f"{leftover}:log.txt") if leftover else "")
    mirror = lines((writers / "wi.mirror").read_text())
    lost = sorted(mirror - kept)
    assert not lost, f"{len(lost)} line(s) written during the integration were lost, first {lost[:5]}"


def test_a_cancel_that_fails_after_the_worktree_went_lets_the_agent_run_again(api: Api, repo: Path,
                                                                             writers: Path) -> None:
    """Found by our red team: a branch named `para/archived` made the archive rename fail after
    the worktree was removed; the agent's processes stayed SIGSTOPped for good (no stop follows
    a failed operation). Now they are continued. (A `para/archived` branch no longer fails a
    cancel, rt13 RA8: a worktree whose HEAD names `main` refuses it, while frozen.)"""
    dispatch(repo, "wf", "-p", writer_task(writers, "wf", finish=False), "--agent", "scripted",
             "--mode", "headless")
    writer = int(wait_file(writers / "wf.pid").read_text().strip())
    wait_until(lambda: len(lines((writers / "wf.mirror").read_text())) >= 200, what="the writer to run")
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=repo / ".para" / "worktrees" / "wf")
    proc = run_para("cancel", "wf", "--json", cwd=repo, check=False)
    assert proc.returncode != 0, proc.stdout
    state = Path(f"/proc/{writer}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert state != "T", "the agent's writer is still frozen after the cancel failed"
