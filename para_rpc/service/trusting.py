"""`para/trust`: show, approve or revoke the commands of a repository's project file
(trust.py holds the gate and the user's trust file). Served by the sidecar, the one
process that reads the trust file for every operation; never an MCP tool, since an AI
client must not approve its own commands."""

from __future__ import annotations

from typing import Any

from para_rpc import trust
from para_rpc.params import TrustParams
from para_rpc.service.core import ServiceCore


class Trusting(ServiceCore):
    """The trust gate's one operation."""

    async def trust(self, p: TrustParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        if p.action == "approve":
            return trust.approve(repo.common_dir, repo.root, p.sha256)
        if p.action == "revoke":
            return trust.revoke(repo.common_dir, repo.root)
        return {**trust.review(repo.common_dir, repo.root), "action": "shown"}
