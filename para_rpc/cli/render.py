"""Every human rendering of a result, one named function each (stdlib only; rich is imported
by the one table that uses it, when it is drawn).

A renderer takes the result object a command received (exactly what `--json` prints) and
writes the readable summary to stdout. The typer commands (`app.py`) and the fast path
(`fast.py`) use the same functions, so both print the same bytes.
"""

from __future__ import annotations

import os
import sys

from para_rpc import wire
from para_rpc.display import age, list_mark, remote, remote_where

TYPE_CHECKING = False  # (typing is not imported at run time: every `para` command starts sooner)
if TYPE_CHECKING:
    from typing import IO, Any

# C0 controls but tab, DEL and C1: what a terminal acts on (CSI, OSC 52 clipboard, title, \r), each
# with its visible escape. (A table for str.translate, not a regex: `re` costs every `para` process
# ~5 ms to import.)
_CONTROL = {c: "\\n" if c == 10 else "\\r" if c == 13 else f"\\x{c:02x}"
            for c in (*range(0x09), *range(0x0a, 0x20), *range(0x7f, 0xa0))}


def safe(text: object) -> str:
    """Text that did not come from para itself (an agent's status, commit subjects, notes,
    messages, paths), made harmless for a terminal: each control character but tab is shown
    as a visible escape (`\\x1b`, `\\n`) instead of being acted on or breaking the line."""
    return str(text).translate(_CONTROL)


def emit(*values: object, file: IO[str] | None = None) -> None:
    """print() for the human renderers: the lines para composes keep their line breaks, and
    no control character within a line reaches the terminal, whatever field it came from."""
    print(*("\n".join(safe(line) for line in str(v).split("\n")) for v in values), file=file)


def print_session(r: dict[str, Any], headline: str | None = None) -> None:
    if headline:
        emit(headline)
    # A cancelled session's branch is its archive (its old name no longer exists).
    archived = r.get("status") == "cancelled" and r.get("archived_branch")
    rows = [("state", r["state"]), ("branch", r["archived_branch"] if archived else r["branch"]), ("worktree", r["worktree"] if r.get("worktree_exists") else f"{r['worktree']} (absent)"),
            ("base", f"{r['base_branch']} @ {r['base_commit'][:10]}")]
    if r.get("worktree_exists") and r.get("status") == "active" and r.get("head_branch") != r["branch"]:
        rows.append(("HEAD", f"{r.get('head_branch') or 'detached'} in the worktree, not {r['branch']}"))
    if r.get("archived_branch") and not archived:
        rows.append(("archived as", r["archived_branch"]))
    if r.get("queue_position"):
        rows.append(("agent", f"queued, position {r['queue_position']} (agent.max_running)"))
    if remote(r.get("agent")):
        rows.append(("agent", remote_where(r["agent"])))
    unread = sum(1 for m in r.get("messages") or [] if not m.get("read_at"))
    if unread:
        rows.append(("messages", f"{unread} unread by the agent"))
    if r.get("ports"):
        rows.append(("ports", " ".join(str(p) for p in r["ports"])))
    if r.get("ahead") is not None:
        rows.append(("commits", str(r["ahead"])))
    if r.get("diffstat"):
        rows.append(("changes", r["diffstat"]))
    if r.get("saved"):
        s = r["saved"]
        if isinstance(s, dict):
            rows.append(("saved work", f"{str(s.get('commit'))[:10]} on {s.get('branch') or s.get('ref')}"))
        else:  # a ref (an older sidecar's abort)
            rows.append(("saved work", str(s)))
    for b in r.get("backups") or []:
        rows.append(backup_row(b))
    for note in r.get("notes", []):
        rows.append(("note", note))
    for k, v in rows:
        emit(f"  {k:<12} {safe(v)}")
    for c in r.get("commits", [])[:10]:
        emit(f"    {c['sha'][:10]} {safe(c['subject'])}")


def backup_row(b: dict[str, Any]) -> tuple[str, str]:
    """One thing the worktree held that was saved before it went, or that had nothing to save."""
    if b["what"] == "head":
        return ("saved HEAD", f"{b['commit'][:10]} ({b.get('head_branch') or 'detached'}) as {b['ref']}")
    if b.get("refs"):
        prefix = os.path.commonpath(list(b["refs"])) if len(b["refs"]) > 1 else next(iter(b["refs"]))
        return (f"saved {b['what']}", f"{b['path']} under {prefix}")
    return ("not saved", f"{b['what']} repository {b['path']}: "
            + (f"nothing its remote {b['remote']} lacks" if b.get("remote") else "it had no commits and no files"))


# ---- session lifecycle ---------------------------------------------------------------

def print_started(r: dict[str, Any]) -> None:
    print_session(r, f"Started session {r['name']}")


def print_shown(r: dict[str, Any]) -> None:
    print_session(r, f"Session {r['name']}")


def print_finished(r: dict[str, Any]) -> None:
    print_session(r, f"Finished session {r['name']}: branch {r['branch']} is ready for review")


def print_cancelled(r: dict[str, Any]) -> None:
    if not r.get("archived_branch") and r.get("pending_op") is None and not r.get("branch_exists"):
        # a start stopped in its setup: rolled back, nothing to recover
        emit(f"Cancelled session {r['name']} while it was starting: nothing is left of it")
        return
    print_session(r, f"Cancelled session {r['name']}; `para recover {r['name']}` brings it back")


def print_recovered(r: dict[str, Any]) -> None:
    print_session(r, f"Recovered session {r['name']}")


def print_resumed(r: dict[str, Any]) -> None:
    # The path alone on stdout, so `cd "$(para resume NAME)"` works.
    emit(f"session {r['name']}{': worktree recreated' if r['recreated'] else ''}", file=sys.stderr)
    for w in r.get("warnings") or []:
        emit(f"warning: {w}", file=sys.stderr)
    emit(r["worktree"])


def print_aborted(r: dict[str, Any]) -> None:
    print_session(r, f"Aborted the integration of {r['name']}; restored {str(r['restored'])[:10]}")


def print_list(r: dict[str, Any]) -> None:
    sessions = r["sessions"]
    if not sessions:
        emit("No sessions. Start one with `para start`.")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    ports = any(s.get("ports") for s in sessions)
    for col in ("", "session", "state", "branch", "age", *(("ports",) if ports else ())):
        table.add_column(col)
    for s in sessions:
        branch = s["branch"] + (f" (HEAD: {s.get('head_branch') or 'detached'})" if s["state"] == "off-branch" else "")
        agent = s.get("agent") or {}
        state = s["state"] + (f" {list_mark(agent)}" if remote(agent) else "")
        cells = ("*" if s["current"] else "", s["name"], state, branch, age(s["created_at"]),
                 *((" ".join(str(p) for p in s.get("ports") or []),) if ports else ()))
        table.add_row(*(Text(safe(c)) for c in cells))  # Text: a `[` in a branch name is not markup
    Console().print(table)
    for s in sessions:
        for line in agent_warnings(s):
            emit(f"! {s['name']}: {safe(line)}")


def list_names(r: dict[str, Any]) -> list[str]:
    """`para list --quiet --json`: the names alone, as a JSON array."""
    return [s["name"] for s in r["sessions"]]


def print_names(r: dict[str, Any]) -> None:
    """`para list --quiet`: one name a line, nothing else (for scripts: an empty list prints nothing)."""
    for name in list_names(r):
        emit(name)


def agent_line(agent: dict[str, Any] | None) -> str:
    if not agent:
        return "-"
    where = f"log {agent['log']}" if agent.get("log") else f"tmux {agent['window']}" if agent.get("window") \
        else agent.get("mode") or ""
    if agent.get("exit_code") is not None:
        state = f"exited {agent['exit_code']}"
    elif agent.get("stopped_at"):
        state = "stopped"
    elif agent.get("lost"):
        state = "lost"
    else:
        state = f"pid {agent.get('pid')}"
    if remote(agent):
        state += f", {remote_where(agent)}"
    return f"{agent.get('profile')} ({agent.get('mode')}), {state}" + (f", {where}" if where != agent.get("mode") else "")


def print_list_verbose(r: dict[str, Any]) -> None:
    """`para list --verbose`: every session as a block: ports, agent, base, worktree, last event."""
    sessions = r["sessions"]
    if not sessions:
        emit("No sessions. Start one with `para start`.")
        return
    for i, s in enumerate(sessions):
        if i:
            emit()
        emit(safe(f"{'*' if s['current'] else ' '} {s['name']}  {s['state']}  {s['branch']}  ({age(s['created_at'])} old)"))
        ev = s.get("last_event")
        rows = [("worktree", s["worktree"] if s.get("worktree_exists") else f"{s['worktree']} (absent)"),
                ("base", f"{s['base_branch']} @ {s['base_commit'][:10]}"),
                ("agent", agent_line(s.get("agent"))),
                ("ports", " ".join(str(p) for p in s.get("ports") or []) or "-"),
                ("last event", f"{ev['kind']} {age(ev['ts'])} ago (#{ev['id']})" if ev else "-")]
        if s.get("archived_branch"):
            rows.insert(1, ("archived as", s["archived_branch"]))
        for k, v in rows:
            emit(f"    {k:<11} {safe(v)}")
    for s in sessions:
        for line in agent_warnings(s):
            emit(f"! {s['name']}: {safe(line)}")


def agent_warnings(s: dict[str, Any]) -> list[str]:
    """What `list` flags under its table: files changed outside an agent's worktree, agent
    processes that could not be stopped."""
    out = []
    changes = s.get("outside_changes") or []
    mine = [c for c in changes if c["agent"] == s["name"]]
    if mine:
        out.append(f"while its agent ran, {len(mine)} file(s) changed outside its worktree: "
                   + ", ".join(f"{c['path']} ({c['location'] if not c['session'] else 'session ' + c['session']})"
                               for c in mine[:5]) + (", ..." if len(mine) > 5 else "") + f" (`para show {s['name']}`)")
    for agent in sorted({c["agent"] for c in changes} - {s["name"]}):
        theirs = [c["path"] for c in changes if c["agent"] == agent]
        out.append(f"changed here while the agent of {agent} ran: {', '.join(theirs[:5])}"
                   + (", ..." if len(theirs) > 5 else ""))
    left = [p for stop in ((s.get("agent") or {}).get("stops") or []) for p in stop.get("left_running", [])]
    if left:
        out.append(f"agent processes still running, could not be stopped: {', '.join(map(str, left))}")
    return out


def print_clean(r: dict[str, Any]) -> None:
    verb = "would" if r["dry_run"] else "did"
    if not r["actions"]:
        emit("Nothing to clean.")
    for a in r["actions"]:
        target = a.get("branch") or a.get("session") or a.get("ref") or ", ".join(a.get("paths", []))
        emit(f"{verb} {a['kind'].replace('_', ' ')}: {target} ({a['reason']})")
    for k in r["kept"]:
        emit(f"kept {k.get('branch') or k.get('ref')}: {k['why_kept']}")


def print_adopt(r: dict[str, Any]) -> None:
    if not (r["adopted"] or r["left"]):
        emit(f"Nothing to adopt: no new Para sessions in {r['state_dir']}."
             + (f" Already para's: {', '.join(r['already'])}." if r["already"] else ""))
    for a in r["adopted"]:
        where = a["worktree"] or a["archived_branch"] or a["branch"]
        emit(f"adopted {a['session']}: {a['status']} (Para: {a['para_status']}), {where}")
    for x in r["left"]:
        emit(f"left {x['session']} ({x['file']}): {x['why']}")


# ---- integration -----------------------------------------------------------------------

def print_integration(r: dict[str, Any]) -> None:
    rec = r.get("integration") or {}
    if r.get("status") == "integrated":
        what = "already contained in" if rec.get("noop") else "landed on"
        emit(f"Integrated session {r['name']}: {what} {rec.get('target')} at {str(rec.get('commit'))[:10]} "
             f"({rec.get('strategy')})")
        if rec.get("leftover"):
            emit(f"  changes made after integration started were saved to {rec['leftover']}")
        if rec.get("config_changed"):
            emit(f"  this changed .para/config.json on {rec.get('target')}: commands in it run only once you "
                 "approve them (`para trust`, then `para trust --approve <sha256>`)")
        for b in rec.get("backups") or []:
            emit("  {:<12} {}".format(*backup_row(b)))
    else:
        print_session(r, f"Session {r['name']}")


def print_prediction(r: dict[str, Any]) -> None:
    if r.get("error"):
        emit(f"would fail: {r['error']}")
    elif r["clean"]:
        emit(f"{r['session']} would integrate cleanly into {r['target']} ({r['strategy']}, "
             f"{len(r['commits'])} commit(s){', uncommitted work included' if r['includes_uncommitted'] else ''})")
        if r.get("diffstat"):
            emit(r["diffstat"])
    else:
        emit(f"{r['session']} would conflict with {r['target']} in:")
        for f in r["conflicts"]:
            emit(f"  {safe(f)} lines {', '.join(f'{a}-{b}' for a, b in r['hunks'].get(f, []))}")


def print_conflicts(r: dict[str, Any]) -> None:
    if r["clean"]:
        names = ", ".join(s["session"] for s in r["sessions"])
        emit(f"No conflicts among {len(r['sessions'])} session(s)" + (f": {names}." if names else "."))
    for s in r["sessions"]:
        if not s["clean"]:
            emit(f"{s['session']} x {s['target']}: "
                 + ("unrelated histories: it cannot land there" if s.get("unrelated") else ", ".join(map(safe, s["files"]))))
    for pair in r["pairs"]:
        emit(f"{pair['a']} x {pair['b']}: {', '.join(map(safe, pair['files']))}")
    for pair in r.get("unrelated", []):
        emit(f"{pair['a']} x {pair['b']}: unrelated histories (not compared)")


# ---- agents ----------------------------------------------------------------------------

def print_dispatched(r: dict[str, Any]) -> None:
    if "failed" in r:  # several tasks
        for s in r["sessions"]:
            print_session(s, f"Dispatched session {s['name']}")
        for f in r["failed"]:
            emit(safe(f"Not dispatched: {f['task']}: {f['error']} ({f['code']})"))
    elif "name" not in r:
        plan = r["plan"]
        emit(f"Plan {plan['id']}: {len(plan['steps'])} step(s)")
        for st in plan["steps"]:
            emit(f"  step {st['number']}: " + ", ".join(t["name"] for t in st["tasks"]))
        emit("Later steps start when every earlier task is integrated; watch with `para monitor`.")
    else:
        print_session(r, f"Dispatched session {r['name']}")


def print_wait(r: dict[str, Any]) -> None:
    if r["timed_out"]:
        emit("No change before the timeout.")
    for name in r["changed"]:
        s = r["sessions"].get(name)
        agent = f", agent exited {s['agent_exit_code']}" if s and s["agent_exit_code"] is not None else ""
        emit(f"{name}: {s['status'] if s else 'gone'}{agent}")
    emit(f"last event: {r['last_event']} (`para wait --after {r['last_event']}` continues from here)")


def print_report(r: dict[str, Any]) -> None:
    rep = r.get("report") or {}
    todos = f", todos {rep['todos_done']}/{rep['todos_total']}" if rep.get("todos_total") else ""
    tests = f", tests {rep['tests']}" if rep.get("tests") else ""
    blocked = f", BLOCKED: {rep['blocked']}" if rep.get("blocked") else ""
    emit(safe(f"Reported for session {r['session']}: {rep.get('task', '')}{tests}{todos}{blocked}"))
    print_messages(r)


def print_messages(r: dict[str, Any]) -> None:
    """Follow-ups for the agent (`para send`), each in full."""
    for m in r.get("messages") or []:
        emit(f"Message {m['id']} from the user:")
        for line in m["text"].splitlines() or [""]:
            emit(f"  {line}")


def print_stopped(r: dict[str, Any]) -> None:
    emit(r["message"][:1].upper() + r["message"][1:])
    if r.get("left_running"):
        emit(f"  still running: pids {', '.join(map(str, r['left_running']))}")


def print_restarted(r: dict[str, Any]) -> None:
    queued = f" (queued, position {r['queue_position']})" if r.get("queue_position") else ""
    print_session(r, f"Restarted the agent of {r['name']}{queued}")


def print_sent(r: dict[str, Any]) -> None:
    how = ("its agent sees it with its next `para status` or `para messages`" if r["delivery"] == "running"
           else f"no agent runs: `para restart {r['session']}` gives it to the agent")
    emit(f"Message {r['id']} for {r['session']} kept; {how} ({r['unread']} unread)")


def status_line(s: dict[str, Any]) -> str:
    rep = s.get("report") or {}
    agent = s.get("agent") or {}
    todos = f"{rep['todos_done']}/{rep['todos_total']}" if rep.get("todos_total") else "-"
    parts = [f"{s['name']:<18}", f"{s['status']:<11}", f"agent {agent.get('state', '-'):<8}",
             f"tests {rep.get('tests', '-'):<8}", f"todos {todos:<6}"]
    if remote(agent):
        parts.insert(3, f"[{remote_where(agent)}]")
    if rep.get("blocked"):
        parts.append(f"BLOCKED: {rep['blocked']}")
    parts.append(rep.get("task") or s.get("task") or "")
    return safe(" ".join(parts))


def print_status(r: dict[str, Any]) -> None:
    for s in r["sessions"]:
        emit(status_line(s))
    if not r["sessions"]:
        emit("No sessions.")


# ---- config and trust -------------------------------------------------------------------

def print_config(r: dict[str, Any]) -> None:
    for k, v in r["values"].items():
        mark = {True: " (approved)", False: " (NOT APPROVED: `para trust`)"}.get(v.get("trusted"), "")
        mark += "".join(f" (agents.{n} refused: {why})" for n, why in v.get("refused", {}).items())
        emit(f"{k:<22} {wire.dumps(v['value']):<12} {v['source']}{mark}")


def print_config_value(r: dict[str, Any]) -> None:
    emit(wire.dumps(r["value"]))


def print_config_set(r: dict[str, Any]) -> None:
    emit(f"{r['key']} = {wire.dumps(r['value'])} in {r['path']}")


def print_config_reset(r: dict[str, Any]) -> None:
    where = r["source"] if r["source"] == "default" else r["source"].split(":", 1)[0] + " file" \
        if ":" in r["source"] and not r["source"].startswith("env:") else r["source"]
    if r["removed"]:
        emit(f"Removed {r['key']} from {r['path']}; now {wire.dumps(r['value'])} ({where})")
    else:
        emit(f"{r['key']} was not set in {r['path']}; nothing changed (it is {wire.dumps(r['value'])}, {where})")


def config_tree(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys as the nested object the config file holds."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def print_config_init(path: str, proposal: dict[str, Any], written: bool, print_only: bool,
                      asked: bool) -> None:
    """`para config init`'s outcome (what it found, unless the questions showed it already)."""
    values = proposal["values"]
    if not asked:
        emit("Agent CLIs on PATH: " + (", ".join(proposal["agents"]) or "none"))
        emit("Editors on PATH:    " + (", ".join(proposal["editors"]) or "none"))
    if not values:
        emit("No agent CLI (claude, codex, gemini, aider, opencode, cursor-agent) is on PATH: nothing to write. "
             "Install one, or add a profile with `para config set agents ...`.")
        return
    if print_only:
        emit(f"Would write to {path} (the rest of the file is kept):")
        emit(wire.dumps(config_tree(values), indent=2))
    elif written:
        emit(f"Wrote {', '.join(values)} to {path}")
    else:
        emit(f"Nothing written to {path}")


def print_executors(r: dict[str, Any]) -> None:
    checked = r.get("checked")
    if checked:
        emit(f"{checked['name']}: ok (para {checked['para']}, protocol {checked['protocol']}, "
             f"python {checked.get('python')}, {checked.get('git')})")
        return
    for e in r["executors"]:
        if e["kind"] == "local":
            emit("local  (this machine)")
            continue
        user = f"{e['user']}@" if e.get("user") else ""
        emit(f"{e['name']}  {e['kind']} {user}{e['host']}:{e['port']}  root {e['root']}"
             + (f"  max_running {e['max_running']}" if e.get("max_running") else ""))


def print_config_paths(r: dict[str, Any]) -> None:
    for k, v in r["paths"].items():
        emit(f"{k}: {v}")


def print_trust(r: dict[str, Any]) -> None:
    import shlex  # (only here: it imports `re`, which no other renderer needs)

    action, file, repo = r["action"], r["file"], r["repo"]
    settings = r.get("settings") or []
    gated = bool(r["commands"] or settings)
    if action == "nothing_to_approve":
        emit(f"Nothing to approve: {file} " + ("defines no commands." if r["exists"] else "does not exist."))
    elif action == "nothing_to_revoke":
        emit(f"Nothing to revoke: no approval is recorded for {repo}.")
    elif action == "revoked":
        emit(f"Revoked the approval of the commands of {file}; they do not run until approved again.")
    elif action == "approved":
        emit(f"Approved the commands of {file} for {repo}:")
    elif r["approved"]:
        emit(f"Approved: the commands of {file}:")
    elif gated:
        emit(f"Not approved: the commands of {file} do not run until you approve them (in {repo}):")
    else:
        emit(f"{file} " + ("defines no commands." if r["exists"] else "does not exist."))
    for c in r["commands"]:
        emit(f"  {c['key']:<28} {shlex.join(c['argv'])}")
    for s in settings:
        emit(f"  {s['key']:<28} = {wire.dumps(s['value'])}  ({s['why']})")
    for c in r["refused"]:
        emit(f"  {c['key']:<28} refused: {c['reason']}; rename it")
    if r["approved"]:
        emit(f"Recorded as sha256 {r['sha256']} in {r['store']}; a change to the file needs approval "
             "again, `para trust --revoke` withdraws it.")
    elif gated:
        if r["approval"]:
            emit(f"(An earlier content, sha256 {str(r['approval'].get('sha256'))[:16]}…, was approved; "
                 "the file changed since.)")
        emit(f"This content has sha256 {r['sha256']}. If you read all of the above and want it to run as you, "
             f"approve exactly this content with:\n  para trust --approve {r['sha256']}")


# ---- sidecar and MCP setup ------------------------------------------------------------------

def print_sidecar_status(info: dict[str, Any] | None, socket: str) -> None:
    if info:
        emit(f"sidecar {info['version']} running, pid {info['pid']}, socket {socket}")
        for r in info["repos"]:
            emit(f"  serving {r}")
    else:
        emit(f"no sidecar running on {socket}")


def print_mcp_init(results: list[dict[str, Any]]) -> None:
    for r in results:
        emit(f"{r['path']}: para server {r['action']} ({r['entry']['command']} {' '.join(r['entry']['args'])})")
        if r["tracked"]:
            emit("  note: this file is tracked by git; it now holds this machine's path of para")
        elif r["excluded"]:
            emit("  kept out of commits through .git/info/exclude")
