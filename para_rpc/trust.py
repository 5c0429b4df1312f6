"""The trust gate: commands from a repository's own `.para/config.json` run only after the
user approved that exact content.

Whoever lands a commit (an agent, the authors of a cloned repository) can write the project
file, and its gated values (`config.GATED_KEYS`: the integration check, launcher profiles,
the default agent, the worktrees directory) would make para run things as the user, outside
any sandbox, on every integration or dispatch. So before any operation sees the
configuration, `settle` puts in place of each gated value the project file set the error that
using it raises, unless the user approved the file: `para trust` shows the exact commands and
settings with the SHA-256 of the file's content, and `para trust --approve <sha256>` records
the repository (its common git dir, resolved) and that digest (only if the file still has
it: what is approved is what the user saw) in the user's trust file (`$XDG_DATA_HOME/para/trust.json`, else
`~/.local/share/para/trust.json`; 0600, written atomically). A changed file needs approval
again. The user file and the PARA_* variables are the user's own and always trusted.
The sidecar reads and writes the trust file, so the sidecar's environment decides where it is.

A project profile never takes a built-in profile's name (claude, codex, ...): approved or
not, using such a name is a config_error, so `--agent claude` always means claude (or the
user's own `claude` profile).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import re
import shlex
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from para_rpc import agents, config
from para_rpc.errors import Code, ParaError

LISTING_LIMIT = 1500  # characters of commands quoted in an error message (data has them all)

# The pid of the process at the other end of the connection a request came on (SO_PEERCRED),
# set by the transport for the connection's task; None when unknown (MCP over HTTP).
PEER_PID: contextvars.ContextVar[int | None] = contextvars.ContextVar("para_peer_pid", default=None)


def forbid_agent(what: str, hint: str = "") -> None:
    """Refuse `what` when the client is an agent of a session (agents.agent_caller): approving
    commands, or changing the settings that decide what runs, is the user's decision, and an
    agent (perhaps sandboxed) would otherwise have the sidecar run things for it as the user."""
    who = agents.agent_caller(PEER_PID.get())
    if who:
        raise ParaError(Code.forbidden, f"{what} is the user's decision, and this request comes from {who}; "
                        + (hint or "ask the user to do it from their own shell"), caller=who)


def forbid_agent_env(env: Mapping[str, str]) -> None:
    """An agent's request may not bring its own value of a gated key (PARA_AGENTS,
    PARA_INTEGRATE_CHECK='' to skip the user's check, ...): the sidecar's own environment,
    which the agent inherited, is the user's."""
    changed = sorted(n for n, k in config.ENV_NAMES.items()
                     if k in config.GATED_KEYS and n in env and env[n] != os.environ.get(n))
    if changed:
        forbid_agent(f"setting {', '.join(changed)} for a request",
                     "these settings decide what para runs; an agent uses the ones the user gave the sidecar")


def store_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_DATA_HOME")
    if not base or not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "para" / "trust.json"


def _key(common_dir: str) -> str:
    return os.path.realpath(common_dir)


def _load(path: Path) -> dict[str, dict[str, Any]]:
    """The approvals by repository ({} when there is no trust file yet)."""
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ParaError(Code.config_error, f"cannot read the trust file {path} ({e}); move it away "
                        "(every project file then needs approval again)", file=str(path)) from None
    repos = tree.get("repos") if isinstance(tree, dict) else None
    if not isinstance(repos, dict) or not all(isinstance(r, dict) for r in repos.values()):
        raise ParaError(Code.config_error, f"the trust file {path} is not what para writes; move it away "
                        "(every project file then needs approval again)", file=str(path))
    return repos


def _save(path: Path, repos: dict[str, dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)  # (a leftover temporary file keeps its mode through O_TRUNC)
        json.dump({"version": 1, "repos": repos}, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Read-modify-write of the trust file, one process at a time (two sidecars may run)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def approved(common_dir: str, digest: str | None) -> bool:
    record = _load(store_path()).get(_key(common_dir))
    return digest is not None and record is not None and record.get("sha256") == digest


# ---- what the project file would run ---------------------------------------------------

def _argv(command: Any) -> list[str]:
    if isinstance(command, list):
        return [str(a) for a in command]
    try:
        return shlex.split(command)  # as the check runs it: split like a shell would, run without one
    except ValueError:
        return [command]


def commands(view: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The commands of a project file's gated keys (`view`: {key: value}) as they would
    run, one entry per argv (per key, and per profile and its command/headless/
    skip_permissions parts), and the profiles refused whatever the approval."""
    found: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for key in sorted(view):
        if key not in config.COMMAND_KEYS:
            continue
        if key != "agents":
            found.append({"key": key, "argv": _argv(view[key])})
            continue
        for name, prof in sorted(view[key].items()):
            if name in agents.BUILTIN:
                refused.append({"key": f"agents.{name}", "profile": name,
                                "reason": f"a project file cannot redefine the built-in profile {name!r}"})
                continue
            for part in ("command", "headless", "skip_permissions"):
                if prof.get(part):
                    found.append({"key": f"agents.{name}.{part}", "profile": name, "argv": list(prof[part])})
    return found, refused


def settings(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The gated values of a project file that are not commands (`agent.default`, ...):
    {key, value, why} each, shown and approved with the commands."""
    return [{"key": k, "value": v, "why": config.GATED_KEYS[k]}
            for k, v in sorted(view.items()) if k not in config.COMMAND_KEYS]


def _listing(cmds: list[dict[str, Any]], sets: list[dict[str, Any]] | None = None) -> str:
    text = "; ".join([f"{c['key']}: {shlex.join(c['argv'])}" for c in cmds]
                     + [f"{s['key']} = {json.dumps(s['value'])}" for s in sets or []])
    return text if len(text) <= LISTING_LIMIT else text[:LISTING_LIMIT] + " …"


def _project_view(eff: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str, str]:
    """The command values in effect that the project file set ({key: value}), the file, its digest."""
    view: dict[str, Any] = {}
    file = digest = ""
    for key, e in eff.items():
        if "sha256" not in e or not e["value"]:
            continue
        file, digest = e["source"].split(":", 1)[1], e["sha256"]
        if key == "agents":
            view[key] = {n: p for n, p in e["value"].items() if e["profiles"].get(n) == e["source"]}
        else:
            view[key] = e["value"]
    return view, file, digest


def _untrusted(what: str, file: str, cmds: list[dict[str, Any]], sets: list[dict[str, Any]],
               digest: str) -> ParaError:
    root = str(Path(file).parent.parent)
    return ParaError(Code.untrusted,
                     f"{what} comes from {file}, whose commands you have not approved ({_listing(cmds, sets)}). "
                     f"Review them by running `para trust` in {root} yourself, then approve exactly that content "
                     "with `para trust --approve <sha256>` (an agent cannot approve them)",
                     file=file, repo=root, sha256=digest, commands=cmds, settings=sets)


def _shadowing(file: str, name: str) -> ParaError:
    return ParaError(Code.config_error,
                     f"{file}: agents.{name}: a project file cannot redefine the built-in agent profile "
                     f"{name!r}; rename that profile there (for example to {name}-project) and pass the new "
                     "name with --agent", file=file, key=f"agents.{name}")


def settle(common_dir: str, eff: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The configuration values operations act on (`config.effective` → {key: value}).
    Each command the project file set stands there as the ParaError that using it raises
    (`config.usable`, `agents.profile`) unless the user approved that content; a project
    profile with a built-in name always does. So an unapproved command cannot run even
    through a code path that forgot to ask."""
    values = {k: e["value"] for k, e in eff.items()}
    view, file, digest = _project_view(eff)
    if not view:
        return values
    cmds, _ = commands(view)
    sets = settings(view)
    broken = None
    try:
        ok = bool(cmds or sets) and approved(common_dir, digest)
    except ParaError as e:  # an unreadable trust file: only what needs these commands fails, saying so
        ok, broken = False, e
    for key, value in view.items():
        if key == "agents":
            profiles = dict(values["agents"])
            for name in value:
                if name in agents.BUILTIN:
                    profiles[name] = _shadowing(file, name)
                elif not ok:
                    profiles[name] = broken or _untrusted(f"agent profile {name!r}", file, cmds, sets, digest)
            values["agents"] = profiles
        elif not ok:
            values[key] = broken or _untrusted(f"`{key}`", file, cmds, sets, digest)
    return values


def annotate(common_dir: str, eff: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`config show`/`get`: each command value the project file set gets `trusted`
    (its content is approved), and `agents` lists the `refused` profiles with why."""
    view, _, digest = _project_view(eff)
    if view:
        try:
            ok = approved(common_dir, digest)
        except ParaError:  # an unreadable trust file approves nothing (`para trust` says why)
            ok = False
        for key in view:
            eff[key]["trusted"] = ok
        _, refused = commands(view)
        if refused:
            eff["agents"]["refused"] = {r["profile"]: r["reason"] for r in refused}
    return eff


# ---- para trust -----------------------------------------------------------------------------

def review(common_dir: str, root: str) -> dict[str, Any]:
    """The project file's commands as they would run, its other gated settings, what is
    refused whatever the approval, and what is approved for this repository (the file is
    read once: what is shown is what the digest covers)."""
    path = config.project_config_path(root)
    flat, digest = config.read_layer(path, root)
    view = {k: v for k, v in flat.items() if k in config.GATED_KEYS and v}
    cmds, refused = commands(view)
    sets = settings(view)
    store = store_path()
    record = _load(store).get(_key(common_dir))
    return {"repo": root, "file": str(path), "exists": digest is not None, "sha256": digest,
            "commands": cmds, "settings": sets, "refused": refused,
            "approved": bool(cmds or sets) and record is not None and record.get("sha256") == digest,
            "approval": record, "store": str(store)}


def approve(common_dir: str, root: str, expect: str | None) -> dict[str, Any]:
    """Approve the project file's content, only if its digest is `expect`: the digest `para
    trust` showed with the commands, so what is approved is what the user saw."""
    if not isinstance(expect, str) or not re.fullmatch(r"[0-9a-f]{64}", expect):
        raise ParaError(Code.invalid_input, "approving needs the sha256 that `para trust` shows with the commands "
                        "(64 hex digits): run `para trust`, review them, then `para trust --approve <sha256>`")
    store = store_path()
    with _locked(store):
        result = review(common_dir, root)
        if expect != result["sha256"]:
            raise ParaError(Code.wrong_state, f"{result['file']} is not the content you reviewed: its sha256 is now "
                            f"{result['sha256']}, not {expect}; nothing was approved. Review it again with "
                            "`para trust`", file=result["file"], sha256=result["sha256"], expected=expect)
        if not result["commands"] and not result["settings"]:
            return {**result, "action": "nothing_to_approve"}
        if result["approved"]:
            return {**result, "action": "already_approved"}
        repos = _load(store)
        record = {"file": result["file"], "sha256": result["sha256"], "approved_at": time.time(),
                  "commands": result["commands"], "settings": result["settings"]}
        repos[_key(common_dir)] = record
        _save(store, repos)
    return {**result, "approved": True, "approval": record, "action": "approved"}


def revoke(common_dir: str, root: str) -> dict[str, Any]:
    store = store_path()
    with _locked(store):
        repos = _load(store)
        record = repos.pop(_key(common_dir), None)
        if record is not None:
            _save(store, repos)
        result = review(common_dir, root)
    return {**result, "action": "revoked" if record is not None else "nothing_to_revoke"}
