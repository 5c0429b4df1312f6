"""Where an agent runs and when its work last came home, in words: the one wording that
`para status`/`show`/`list`, `para monitor` and the MCP tools' text all use (issue 16).

Vocabulary level (stdlib only) so the CLI and the sidecar's MCP front end share it. Each
function takes an agent as a result carries it: `SessionDetail.agent` (an AgentRun: its
`placement` has the host) or `Evidence.agent` (AgentEvidence: `host`, `state`).
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    from typing import Any


def age(ts: float) -> str:
    d = max(0, int(time.time() - ts))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if d >= n:
            return f"{d // n}{unit}"
    return f"{d}s"


def remote(agent: dict[str, Any] | None) -> bool:
    """An agent placed on another machine by an executor (not `local`)."""
    return bool(agent) and (agent or {}).get("executor", "local") != "local"


def runs_on(agent: dict[str, Any]) -> str:
    """`runs on h1 (build1.lan)`: the executor's name and its host. A run that ended (exited,
    lost, stopped) `ran` there; an old sidecar's result without the host gives the name alone."""
    host = agent.get("host") or (agent.get("placement") or {}).get("host")
    ended = agent.get("state") not in (None, "running") or agent.get("exit_code") is not None \
        or agent.get("lost") or agent.get("stopped_at")
    return f"{'ran' if ended else 'runs'} on {agent.get('executor')}" + (f" ({host})" if host else "")


def harvest(agent: dict[str, Any]) -> str:
    """`last harvest 12s ago (3f2a9c1d0e)`: when its commits were last brought home, and the
    tip brought; `never harvested` before the first (its work so far exists on the host only)."""
    at = agent.get("harvested_at")
    if not at:
        return "never harvested"
    sha = agent.get("harvested_commit")
    return f"last harvest {age(at)} ago" + (f" ({sha[:10]})" if sha else "")


def list_mark(agent: dict[str, Any]) -> str:
    """`para list`'s compact mark of an agent on another host (a local one has none): `@h1`,
    `lost` when its host no longer answers for it, and the age of its last harvest, or `never
    harvested` while its work exists on the host only."""
    at = agent.get("harvested_at")
    return (f"@{agent.get('executor')} (" + ("lost, " if agent.get("lost") else "")
            + (f"harvest {age(at)} ago" if at else "never harvested") + ")")


def remote_where(agent: dict[str, Any]) -> str:
    """Where an agent on another host runs and when its work was last brought home."""
    return f"{runs_on(agent)}, {harvest(agent)}"


