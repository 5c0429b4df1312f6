"""`para/trust`: show, approve or revoke the commands of a repository's project file
(trust.py holds the gate and the user's trust file). Served by the sidecar, the one
process that reads the trust file for every operation; never an MCP tool, since an AI
client must not approve its own commands."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from para_rpc import trust
from para_rpc.errors import Code, ParaError
from para_rpc.params import TrustParams
from para_rpc.service.core import Repo, ServiceCore


class Trusting(ServiceCore):
    """The trust gate's one operation."""

    async def trust(self, p: TrustParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        if p.action == "approve":
            trust.forbid_agent("approving the commands of .para/config.json",
                               f"the user reviews them with `para trust` in {repo.root} and approves them with "
                               "`para trust --approve <sha256>`")
            self._outside_worktrees(repo, p.cwd)
            return trust.approve(repo.common_dir, repo.root, p.sha256)
        if p.action == "revoke":
            return trust.revoke(repo.common_dir, repo.root)
        return {**trust.review(repo.common_dir, repo.root), "action": "shown"}

    @staticmethod
    def _outside_worktrees(repo: Repo, cwd: str) -> None:
        """Approving is done from the main checkout, whose file it is: never from a session's
        worktree (where an agent works), whatever the client says its directory is."""
        peer = trust.PEER_PID.get()
        dirs = [cwd]
        if peer:
            with contextlib.suppress(OSError):
                dirs.append(os.readlink(f"/proc/{peer}/cwd"))
        for s in repo.store.all():
            if s.worktree and s.status.value in ("active", "integrating", "conflicted"):
                wt = os.path.realpath(s.worktree)
                for d in dirs:
                    real = os.path.realpath(d)
                    if real == wt or real.startswith(wt + os.sep):
                        raise ParaError(Code.forbidden, f"approving from inside the worktree of session {s.name!r} "
                                        f"is refused (agents work there); run `para trust --approve` in {repo.root}",
                                        session=s.name)
