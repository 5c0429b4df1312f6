"""The service: the single owner of session state, and every operation on it.

Transports call `Service.<verb>(params)` and get plain data back; they never
touch git or the store. Each repository gets a `Repo` with its store, a lock
for structural git operations (worktree add/remove, branch create/rename/
delete: concurrent `git worktree add` on one repository is racy) and one lock
per session. Multi-step operations record an `Op` on the session before their
first step and clear it after the last; every step is written to be safe to
run again, so `_repair` simply re-runs (or, for a start, undoes) whatever a
crashed sidecar left half done.

The operations are grouped by concern, one module each (core, sessions, integration,
dispatching, control, repair, trusting, environment, adopting, channel, hooking, remote); `Service` puts them together as
the one object transports call.
"""
from para_rpc.service.adopting import Adopting
from para_rpc.service.channel import Channels
from para_rpc.service.control import Control
from para_rpc.service.core import Repo, ServiceCore
from para_rpc.service.dispatching import Dispatching
from para_rpc.service.environment import Environment
from para_rpc.service.hooking import Hooks
from para_rpc.service.integration import Integration
from para_rpc.service.remote import Remote
from para_rpc.service.repair import Repair
from para_rpc.service.sessions import Sessions
from para_rpc.service.trusting import Trusting


class Service(Sessions, Integration, Control, Dispatching, Repair, Trusting, Environment, Adopting, Channels,
              Hooks, Remote, ServiceCore):
    """The single owner of session state: every `para/<verb>` is one of its coroutines."""


__all__ = ["Repo", "Service"]
