"""The method table: every `para/<verb>` the sidecar serves, declared once.

`Method(params, result, attr, mutates)`: the params Struct the request is converted into
(params.py), the Struct(s) its result decodes into (results.py; a method whose result has
several shapes lists them all), the `Service` coroutine that runs it, and whether it changes
state (the sidecar counts those as work in flight and waits for them before it exits). The
transports register exactly these methods (plus their connection-level ones in
`params.TRANSPORT_METHODS`), docs/protocol.md documents exactly these, and the tests check
that the real answers decode into the declared results.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from para_rpc import params as P
from para_rpc import results as R
from para_rpc.model import DomainEvent


@dataclass(frozen=True)
class Method:
    params: type[P.Base]
    result: type[msgspec.Struct] | tuple[type[msgspec.Struct], ...]
    attr: str
    mutates: bool

    def result_types(self) -> tuple[type[msgspec.Struct], ...]:
        """Every shape the result can take (one for most methods)."""
        return self.result if isinstance(self.result, tuple) else (self.result,)


METHODS: dict[str, Method] = {
    "para/hello": Method(P.HelloParams, R.HelloResult, "hello", False),
    "para/start": Method(P.StartParams, R.SessionDetail, "start", True),
    "para/list": Method(P.ListParams, R.ListResult, "list_sessions", False),
    "para/show": Method(P.SessionParams, R.SessionDetail, "show", False),
    "para/finish": Method(P.FinishParams, R.SessionDetail, "finish", True),
    "para/integrate": Method(P.IntegrateParams, (R.IntegrateResult, R.IntegrateDryRun), "integrate", True),
    "para/continue": Method(P.ContinueParams, R.IntegrateResult, "continue_", True),
    "para/abort": Method(P.SessionParams, R.SessionDetail, "abort", True),
    "para/conflicts": Method(P.ConflictsParams, R.ConflictsResult, "conflicts", False),
    "para/cancel": Method(P.CancelParams, R.SessionDetail, "cancel", True),
    "para/dispatch": Method(P.DispatchParams, (R.SessionDetail, R.PlanResult, R.DispatchBatch), "dispatch", True),
    "para/report": Method(P.ReportParams, R.ReportResult, "report", True),
    "para/status": Method(P.StatusParams, R.StatusResult, "status", False),
    "para/wait": Method(P.WaitParams, R.WaitResult, "wait", False),
    "para/diff": Method(P.DiffParams, R.DiffResult, "diff", False),
    "para/plans": Method(P.RepoParams, R.PlansResult, "plans", False),
    "para/executors": Method(P.ExecutorsParams, R.ExecutorsResult, "list_executors", False),
    "para/recover": Method(P.ReopenParams, R.SessionDetail, "recover", True),
    "para/resume": Method(P.ResumeParams, R.SessionDetail, "resume", True),
    "para/clean": Method(P.CleanParams, R.CleanResult, "clean", True),
    "para/config": Method(P.ConfigParams, (R.ConfigShow, R.ConfigValue, R.ConfigSet, R.ConfigReset, R.ConfigPaths), "config", True),
    "para/events": Method(P.EventsParams, R.EventsResult, "events", False),
    "para/trust": Method(P.TrustParams, R.TrustResult, "trust", True),
    "para/stop": Method(P.StopParams, R.StopResult, "stop", True),
    "para/restart": Method(P.RestartParams, R.SessionDetail, "restart", True),
    "para/send": Method(P.SendParams, R.SendResult, "send", True),
    "para/messages": Method(P.MessagesParams, R.MessagesResult, "messages", True),
    "para/open": Method(P.OpenParams, R.OpenResult, "open", False),
    "para/adopt": Method(P.RepoParams, R.AdoptResult, "adopt", True),
}

# method -> (params struct, Service attribute): the view older code reads.
SERVICE_METHODS: dict[str, tuple[type[P.Base], str]] = {m: (x.params, x.attr) for m, x in METHODS.items()}

# The rest of the wire, for the generated bindings (para_rpc/gen.py): the requests the
# transport answers itself (params, result), the notifications (payload) and the sidecar's
# requests to editors (params, the editor's answer).
TRANSPORT: dict[str, tuple[type[P.Base], type[msgspec.Struct]]] = {
    "para/subscribe": (P.SubscribeParams, R.SubscribeResult),
    "para/unsubscribe": (P.EmptyParams, R.SubscribeResult),
    "para/shutdown": (P.EmptyParams, R.ShutdownResult),
}
NOTIFICATIONS: dict[str, type[msgspec.Struct]] = {
    "para/sessionsChanged": R.SessionsChanged,
    "para/event": DomainEvent,
    # To editors only (connections subscribed with editor=true):
    "para/openWorktree": R.OpenWorktreeParams,
    "para/stopTerminal": R.StopTerminalParams,
}
SERVER_REQUESTS: dict[str, tuple[type[msgspec.Struct], type[msgspec.Struct]]] = {
    "para/runInTerminal": (R.RunInTerminalParams, R.RunInTerminalResult),
}
