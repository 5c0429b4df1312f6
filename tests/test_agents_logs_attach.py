"""`para logs` and `para attach` on a session that never had an agent (issue 9 point 14).

A session made with `para start` has no agent: both commands say so (`not_found`, exit 3),
naming the session and how agents are started, instead of talking about a terminal or tmux.
Without a name they use the session the current directory is in; outside any session worktree,
with several sessions, they ask for a name (`invalid_input`, exit 2).
"""

from __future__ import annotations

import pytest

from para_rpc.errors import Code

pytestmark = pytest.mark.usefixtures("sidecar")
SHARED_SIDECAR = True

NO_AGENT = "para: session plain has no agent: it was started with `para start`, not `para dispatch`\n"


@pytest.mark.parametrize("command", ["logs", "attach"])
@pytest.mark.parametrize("where", ["named from the main checkout", "inside its worktree"])
def test_a_session_without_an_agent_says_so(command, where, repo, para):
    para("start", "plain")
    para("start", "another")
    wt = repo / ".para" / "worktrees" / "plain"
    args, cwd = ((command, "plain"), repo) if where.startswith("named") else ((command,), wt)
    res = para(*args, cwd=cwd, check=False)
    assert (res.returncode, res.stdout, res.stderr) == (Code.not_found.exit, "", NO_AGENT)


@pytest.mark.parametrize("command", ["logs", "attach"])
def test_without_a_name_outside_a_worktree_a_name_is_needed(command, repo, para):
    para("start", "one")
    para("start", "two")
    res = para(command, check=False)
    assert res.returncode == Code.invalid_input.exit
    assert res.stderr == f"para: {repo} is not inside a session worktree; name the session\n"
