"""Errors as an agent reads them: `<code>: <message>`, what to do next, and the data."""

import json
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from para_rpc.errors import Code, ParaError

_HINTS = {
    Code.not_found: "Call para_list (all=true for history) to see the sessions.",
    Code.not_a_repository: "Pass repo=<absolute path of a git working tree>.",
    Code.wrong_state: "para_status shows where the session is.",
    Code.dirty: "Commit, stash or move those changes, then retry.",
    Code.busy: "Another para sidecar serves this repository; stop it or use the same PARA_SOCKET.",
    Code.untrusted: "These commands come from the repository's .para/config.json and run only once the user "
                    "approved them. Do not try to approve them yourself: show the user the commands and ask them "
                    "to review them with `para trust` and approve them with `para trust --approve <sha256>` in the "
                    "repository. Operations that do not need them keep working.",
    Code.forbidden: "Only the user may approve or change what para runs. Do not work around it: tell the user "
                    "what you needed and let them decide.",
}


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    """The error's data without the bulky parts (hunks, check output)."""
    out = {}
    for k, v in data.items():
        if k in ("hunks",):
            continue
        if isinstance(v, str) and len(v) > 2000:
            v = v[-2000:]
        out[k] = v
    return out


def tool_error(e: ParaError) -> ToolError:
    """A ParaError as the text an agent reads: `<code>: <message>`, what to do, the data."""
    text = f"{e.code.name}: {e.message}"
    if e.code is Code.conflict:
        name, wt = e.data.get("session", "<session>"), e.data.get("worktree", "its worktree")
        text += (f"\nWhat to do: the agent of session {name!r} normally resolves the conflicts in its worktree "
                 f"({wt}) and runs `para continue` itself. If no agent is working there, edit the files "
                 f"listed above in that worktree (remove the conflict markers, keep what both sides need), "
                 f"then call para_continue(session={name!r}); para_abort(session={name!r}) gives the "
                 "integration up. The target branch has not moved.")
    elif e.code in _HINTS:
        text += "\nWhat to do: " + _HINTS[e.code]
    if e.data:
        text += "\n" + json.dumps(_compact(e.data), default=str)
    return ToolError(text)
