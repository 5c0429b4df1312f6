"""Errors as an agent reads them: `<code>: <message>`, what to do next, and the data; the same
as structured content `{code, name, message, data}` for clients that read fields, not text."""

import json
from typing import Any

from mcp.types import CallToolResult, TextContent

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


def _hint(e: ParaError) -> str | None:
    """What to do next, with the real names of this error filled in."""
    d = e.data
    if e.code is Code.conflict:
        name = d.get("session")
        wt = d.get("worktree") or "its worktree"
        who = f"session {name!r}" if name else "the session"
        cont = f"para_continue(session={name!r})" if name else "para_continue with that session's name"
        abort = f"para_abort(session={name!r})" if name else "para_abort"
        if "target" not in d:  # para_continue refused: the resolution is not complete yet
            return (f"the conflicts of {who} are not resolved yet. Its agent normally finishes that in its worktree "
                    f"({wt}) and runs `para continue` itself; if no agent is working there, edit or stage the "
                    f"paths listed above in that worktree, then call {cont} again ({abort} gives the "
                    "integration up). The target branch has not moved.")
        return (f"the agent of {who} normally resolves the conflicts in its worktree ({wt}) and runs "
                f"`para continue` itself. If no agent is working there, edit the files listed above in that "
                f"worktree (remove the conflict markers, keep what both sides need), then call {cont}; {abort} "
                "gives the integration up. The target branch has not moved.")
    if e.code is Code.not_found and d.get("binary"):
        prof = d.get("profile")
        return (f"the agent program {d['binary']!r}" + (f" of profile {prof!r}" if prof else "")
                + " is not installed here (not on PATH). Install it, or pick another profile: pass agent=<profile> "
                "to para_dispatch (`--agent` on the CLI), or make one the default with "
                "para_config_set(key=\"agent.default\", value=\"<profile>\"); the profiles are listed by "
                "para_config_show (key `agents`) and `para config get agents`.")
    return _HINTS.get(e.code)


def error_text(e: ParaError) -> str:
    """`<code>: <message>`, what to do, and the data as JSON (the text an agent reads)."""
    text = f"{e.code.name}: {e.message}"
    hint = _hint(e)
    if hint:
        text += "\nWhat to do: " + hint
    if e.data:
        text += "\n" + json.dumps(_compact(e.data), default=str)
    return text


def error_result(e: ParaError) -> CallToolResult:
    """A ParaError as a tool result: `isError`, the text above, and the same as fields."""
    structured = {"code": e.code.rpc, "name": e.code.name, "message": e.message,
                  "data": json.loads(json.dumps(_compact(e.data), default=str))}
    return CallToolResult(content=[TextContent(type="text", text=error_text(e))], structured_content=structured,
                          is_error=True)
