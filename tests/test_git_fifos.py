"""A FIFO where an agent can write and git reads (red team rt2): git opens the files it reads
without O_NONBLOCK, so one FIFO held a git process, the repository's lock and every client
with it, forever. Para clears what holds no data (a FIFO among the refs), refuses with a clear
error where git's own files are at stake (HEAD, index), and stops any git process that runs
past PARA_GIT_TIMEOUT (here 5 s) with an error that says why. Nothing is ever half done."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import git, run_para, shutdown_sidecar, start_sidecar
from para_rpc.errors import Code

# case -> (the FIFO's path, from the repository; `<wt>` is the session's worktree), and what
# the first cancel does: "cancelled" (the FIFO held nothing and went), or the error code.
FIFOS: dict[str, tuple[str, str]] = {
    "its git dir's HEAD": (".git/worktrees/s/HEAD", Code.wrong_state.name),
    "its git dir's index": (".git/worktrees/s/index", Code.wrong_state.name),
    "another session's branch": (".git/refs/heads/para/zzz", "cancelled"),
    "a .gitignore in its worktree": ("<wt>/.gitignore", Code.git_failed.name),
}


@pytest.mark.parametrize("case", list(FIFOS))
def test_a_fifo_where_git_reads_never_hangs_a_client_and_leaves_nothing_half_done(
        case: str, repo: Path, runtime_dir: Path) -> None:
    sc = start_sidecar(runtime_dir, "--idle-timeout", "0", env=dict(os.environ, PARA_GIT_TIMEOUT="5"))
    try:
        run_para("start", "s", cwd=repo)
        wt = repo / ".para" / "worktrees" / "s"
        (wt / "work.txt").write_text("work\n")
        where, first = FIFOS[case]
        fifo = Path(where.replace("<wt>", str(wt))) if where.startswith("<wt>") else repo / where
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
        # Another client is answered meanwhile (what it says may be an error, never a hang).
        run_para("list", "--json", cwd=repo, check=False)
        out = run_para("cancel", "s", "--json", cwd=repo, check=False)
        if first == "cancelled":
            r = json.loads(out.stdout)
            assert r["status"] == "cancelled", out.stdout
        else:
            err = json.loads(out.stdout)["error"]
            assert err["code"] == first, err
            assert "FIFO" in err["message"], err["message"]
            fifo.unlink()
            if fifo.name == "HEAD":
                fifo.write_text("ref: refs/heads/para/s\n")
            # Refused before anything was removed: no operation pending, the work in place.
            s = next(x for x in json.loads(run_para("list", "--json", cwd=repo).stdout)["sessions"]
                     if x["name"] == "s")
            assert s["pending_op"] is None and (wt / "work.txt").read_text() == "work\n", s
            r = json.loads(run_para("cancel", "s", "--json", cwd=repo).stdout)
        assert git("show", f"{r['archived_branch']}:work.txt", cwd=repo) == "work"
    finally:
        shutdown_sidecar(sc)
