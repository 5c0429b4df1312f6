"""The README's recipe for getting work back from a backup ref, run as written (its sh block,
REF replaced) against a real backup made by `para cancel --force`: the documented commands must
bring back the commits and the uncommitted files exactly."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from conftest import commit_file, git, run_para

README = Path(__file__).resolve().parents[1] / "README.md"


def recipe() -> list[str]:
    section = README.read_text().split("### Backup refs, and restoring from them", 1)[1].split("\n#", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README's backup section has no sh block"
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_restores_a_snapshot_backup(sidecar: Any, repo: Path) -> None:
    run_para("start", "s", cwd=repo)
    wt = repo / ".para" / "worktrees" / "s"
    commit_file(wt, "a.txt", "a\n", "a")
    git("checkout", "-q", "--detach", cwd=wt)
    b = commit_file(wt, "b.txt", "b\n", "b")
    (wt / "a.txt").write_text("a\ndirty\n")
    (wt / "c.txt").write_text("untracked\n")
    out = json.loads(run_para("cancel", "s", "--force", "--json", cwd=repo).stdout)
    ref = next(x["ref"] for x in out["backups"] if x["what"] == "head")
    assert ref.startswith("refs/para/backup/s/") and ref.endswith("-head")

    outputs = []
    for line in recipe():
        res = subprocess.run(["bash", "-c", line.replace("REF", ref)], cwd=repo, capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, (line, res.stderr)
        outputs.append(res.stdout)
    assert ref in outputs[0]                                    # listed
    assert "a.txt" in outputs[1] and "c.txt" in outputs[1]      # what it holds
    restored = repo.parent / "restored"
    assert git("rev-parse", "HEAD", cwd=restored) == b           # the commit the worktree was at
    assert git("symbolic-ref", "--short", "HEAD", cwd=restored) == "restored"
    assert (restored / "a.txt").read_text() == "a\ndirty\n" and (restored / "c.txt").read_text() == "untracked\n"
    assert git("diff", "--name-only", cwd=restored) == "a.txt"            # uncommitted again,
    assert git("diff", "--cached", "--name-only", cwd=restored) == ""     # not staged,
    assert git("ls-files", "--others", cwd=restored) == "c.txt"           # and c.txt untracked
