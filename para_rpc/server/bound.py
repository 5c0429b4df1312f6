"""The gate of a session-bound connection (see service/channel.py for the sockets themselves).

A sandboxed agent's `para` reaches the sidecar on a socket of its own session. Every message
on such a connection passes `Gate.admit` first, in the message loop of server/rpc.py, before
pygls or the service see it: this is the one place that decides what a confined agent may do.

- nothing but `para/hello` carrying the session's token (compared in constant time) until one did;
- then only `BOUND_METHODS`, each about the bound session: `session` forced to it, `cwd` to the
  repository's main checkout, `env` overrides dropped, `all`/`sessions` pinned to the session,
  and a `target` or `branch` of the agent's own refused (its work lands where it was sent);
- everything else (dispatch, other sessions, config, clean, trust, shutdown, subscribe, LSP
  requests, editor commands) is refused with `forbidden` and never runs;
- and what it answers tells nothing of the rest (`Gate.answer`, red team RA10): `para/hello`
  names only the bound repository, `para/wait` returns only the bound session's events (the
  others' carry their worktrees and task texts).
"""

from __future__ import annotations

import hmac
from typing import Any

from para_rpc.errors import Code, ParaError
from para_rpc.model import Binding
from para_rpc.service.channel import token_digest

# Method -> what is forced in its params besides session/cwd/env: reads of the session, its
# progress reports, and the verbs that land or pause its own work.
BOUND_METHODS: dict[str, dict[str, Any]] = {
    "para/status": {"all": False},
    "para/report": {},
    "para/show": {},
    "para/diff": {},
    "para/finish": {"branch": None},      # (a rename could take any branch name)
    "para/integrate": {"target": None},   # the session's own target
    "para/continue": {},
    "para/abort": {},
    "para/wait": {},                      # its `sessions` become the bound one
    "para/messages": {},                  # (.para-agent.md tells the agent to read them so)
}
# Notifications a client may send on a bound connection (anything else is dropped).
BOUND_NOTIFICATIONS = frozenset({"exit", "$/cancelRequest"})


class Gate:
    """One bound connection's admission: `admit` returns the params to run the method with,
    or raises `forbidden`."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.authenticated = False

    def _refuse(self, why: str) -> ParaError:
        return ParaError(Code.forbidden, f"{why} (this is the session-bound socket of session "
                         f"{self.binding.session!r}: it serves only that session's "
                         f"{', '.join(m.split('/', 1)[1] for m in BOUND_METHODS)})",
                         session=self.binding.session)

    def answer(self, method: str, result: Any) -> Any:
        """The result of an admitted request as the bound connection gets it."""
        if not isinstance(result, dict):
            return result
        if method == "para/hello":
            return {**result, "repos": [self.binding.root]}
        if method == "para/wait":
            return {**result, "events": [e for e in result.get("events", [])
                                         if isinstance(e, dict) and e.get("session") == self.binding.session]}
        return result

    def admit(self, method: str, params: Any) -> Any:
        if method == "para/hello":
            token = params.get("token") if isinstance(params, dict) else None
            given = token_digest(token) if isinstance(token, str) else ""
            if not hmac.compare_digest(given.encode(), self.binding.token_sha256.encode()):
                raise self._refuse("para/hello must carry this session's token (PARA_TOKEN)")
            self.authenticated = True
            return params
        if not self.authenticated:
            raise self._refuse(f"{method} before para/hello with the session's token")
        forced = BOUND_METHODS.get(method)
        if forced is None:
            raise self._refuse(f"{method} is not allowed here")
        out = dict(params) if isinstance(params, dict) else {}
        for key in ("target", "branch"):  # an explicit ask is refused, not silently ignored
            if key in forced and out.get(key) is not None:
                raise self._refuse(f"{method.split('/', 1)[1]} with a {key} of its own ({out[key]!r}): "
                                   "an agent's work goes where its session was started for")
        out.update(forced)
        out["cwd"] = self.binding.root
        out["env"] = {}
        if method == "para/wait":
            out["sessions"] = [self.binding.session]
        else:
            out["session"] = self.binding.session
        return out
