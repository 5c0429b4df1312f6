"""Configuration: defaults < user file < project file < PARA_* environment < flags.

The user file is `$PARA_CONFIG`, else `$XDG_CONFIG_HOME/para/config.json`, else
`~/.config/para/config.json`. The project file is `.para/config.json` in the
main worktree; it is the one file under `.para/` that may be committed. Every
key can be overridden by an environment variable named `PARA_` + the key in
upper case with dots as underscores (`finish.squash` -> `PARA_FINISH_SQUASH`);
the CLI forwards those variables with each request, so the value in the shell
that runs `para` wins, not the one the sidecar was started with.

Custom launcher profiles (`agents`) add up across the two files, profile by profile,
so a project that adds one keeps the user's own. The values of `GATED_KEYS` make para run
something: from the project file they are used only once the user approved that file
(trust.py); the user file and the environment are the user's own.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from para_rpc.errors import Code, ParaError
from para_rpc.names import validate_branch_name
from para_rpc.runtime import read_regular

MAX_BYTES = 1 << 20  # a config file larger than this is refused, not read


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError("expected a number")
        n = int(v)
        if not lo <= n <= hi:
            raise ValueError(f"expected a number from {lo} to {hi}")
        return n
    return conv


def _opt_branch(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return validate_branch_name(str(v), "base branch")


def _choice(*options: str) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return str(v)
    return conv


def loads(text: str) -> Any:
    """json.loads where a value nested deeper than Python's recursion limit is a ValueError
    like any other bad JSON, not an internal RecursionError (RB11: `config set` of 3000 `[`)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _profiles(v: Any) -> dict[str, dict[str, Any]]:
    """Custom launcher profiles: {name: {command: [...], headless: [...], skip_permissions: [...]}}."""
    if isinstance(v, str):  # from the environment (PARA_AGENTS) or `config set`
        v = loads(v)
    if not isinstance(v, dict):
        raise ValueError("expected an object of profiles")
    out = {}
    for name, prof in v.items():
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"invalid profile name {name!r}")
        if not isinstance(prof, dict) or set(prof) - {"command", "headless", "skip_permissions", "resume"}:
            raise ValueError(f"profile {name}: expected keys command, headless, skip_permissions, resume")
        for key in ("command", "headless", "skip_permissions", "resume"):
            argv = prof.get(key, [] if key == "skip_permissions" else None)
            if argv is None and key in ("headless", "resume"):
                continue
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or (
                    key != "skip_permissions" and not argv):
                raise ValueError(f"profile {name}: {key} must be a non-empty list of strings"
                                 if key != "skip_permissions" else f"profile {name}: {key} must be a list of strings")
        out[name] = prof
    return out


def _json_text(v: Any) -> Any:
    """A list or mapping given as text (an environment variable, `config set`) is JSON."""
    if isinstance(v, str):
        try:
            return loads(v)
        except ValueError:
            raise ValueError("expected JSON (a list of strings, never a shell string: para runs "
                             "argv without a shell)") from None
    return v


def _argv(v: Any) -> list[str]:
    """A command as argv; empty = none. A shell string is refused, not split: these run
    without a shell, and guessing how a string splits is how quoting bugs become commands."""
    v = _json_text(v)
    if not isinstance(v, list) or not all(isinstance(a, str) and a and "\0" not in a for a in v):
        raise ValueError("expected a list of non-empty strings (argv, run without a shell)")
    return list(v)


def _repo_relative(v: Any, what: str, globs: bool) -> list[str]:
    """Paths (or globs) inside the main checkout: never absolute, never through `..`,
    never into git's own directory; a repository's config must not reach outside it."""
    v = _json_text(v)
    if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
        raise ValueError(f"expected a list of {what}")
    out = []
    for item in v:
        parts = item.replace("\\", "/").split("/")
        if (not item or any(ord(c) < 32 or c == "\x7f" for c in item) or item.startswith(("/", "~"))
                or ".." in parts or any(x in (".git", ".para") for x in parts)
                or all(x in ("", ".") for x in parts)):
            raise ValueError(f"{item!r}: expected a path relative to the main checkout, inside it "
                             "(no leading / or ~, no .., no .git or .para, no control characters)")
        if not globs and any(c in item for c in "*?["):
            raise ValueError(f"{item!r}: a linked path is a plain path, not a glob")
        # One spelling per path ("./deps/" is "deps"): excludes and the integrate guard match it.
        out.append("/".join(x for x in parts if x not in ("", ".")))
    return out


def _port_range(v: Any) -> str:
    m = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", v) if isinstance(v, str) else None
    if m is None or not 1024 <= int(m.group(1)) <= int(m.group(2)) <= 65535:
        raise ValueError("expected a range FIRST-LAST of ports, 1024 <= FIRST <= LAST <= 65535")
    return f"{int(m.group(1))}-{int(m.group(2))}"


def _env_map(v: Any) -> dict[str, str]:
    v = _json_text(v)
    if not isinstance(v, dict):
        raise ValueError("expected an object of NAME: value strings")
    for k, val in v.items():
        if not isinstance(k, str) or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) is None or k.startswith("PARA_"):
            raise ValueError(f"{k!r}: expected a variable name (letters, digits, _), not one starting with PARA_")
        if not isinstance(val, str) or "\0" in val:
            raise ValueError(f"{k}: expected a string value")
    return dict(v)


_EXECUTOR_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}")
_EXECUTOR_FIELDS = {"kind", "host", "port", "user", "identity_file", "known_hosts", "root", "python",
                    "env_passthrough", "max_running", "harvest_interval", "lost_after"}
_K8S_FIELDS = {"kind", "namespace", "image", "context", "kubeconfig", "resources", "deadline", "ttl", "root",
               "python", "port", "start_timeout", "env_passthrough", "max_running", "harvest_interval"}
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?([eE][0-9]+|[mkMGTPE]|[KMGTPE]i)?")
_RESOURCE_NAME = re.compile(r"[a-z0-9]([a-z0-9./-]{0,61}[a-z0-9])?")


def _executor_name(v: Any) -> str:
    if not isinstance(v, str) or not _EXECUTOR_NAME.fullmatch(v):
        raise ValueError("expected `local` or an executor name (1-32 of a-z 0-9 _ -)")
    return v


def _executors(v: Any) -> dict[str, dict[str, Any]]:
    """{NAME: {"kind": "ssh", "host", "port", "user", "identity_file", "known_hosts", "root",
    "python", "env_passthrough", "max_running"}}: each entry checked whole, defaults filled in."""
    v = _json_text(v)
    if not isinstance(v, dict):
        raise ValueError("expected an object of NAME: executor")
    out: dict[str, dict[str, Any]] = {}
    for name, e in v.items():
        if not isinstance(name, str) or not _EXECUTOR_NAME.fullmatch(name) or name == "local":
            raise ValueError(f"{name!r}: an executor name is 1-32 of a-z 0-9 _ - (and not `local`)")
        if not isinstance(e, dict):
            raise ValueError(f"{name}: expected an object")
        if e.get("kind") == "k8s":
            out[name] = _k8s_executor(name, e)
            continue
        unknown = sorted(set(e) - _EXECUTOR_FIELDS)
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {', '.join(unknown)}")
        if e.get("kind") != "ssh":
            raise ValueError(f"{name}: kind must be \"ssh\" or \"k8s\"")
        host = e.get("host")
        if not isinstance(host, str) or not _HOST.fullmatch(host) or host.startswith("-"):
            raise ValueError(f"{name}: host must be a host name or address")
        port = e.get("port", 22)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"{name}: port must be 1-65535")
        strings = {}
        for key, default in (("user", ""), ("identity_file", ""), ("known_hosts", ""),
                             ("root", ".cache/para"), ("python", "python3")):
            val = e.get(key, default)
            if not isinstance(val, str) or "\0" in val or "\n" in val:
                raise ValueError(f"{name}: {key} must be a string")
            strings[key] = val
        if not strings["root"].startswith(("/", "~")):
            # Relative to the login's home (as SSH's own paths are): the worker takes only an
            # absolute root or one under `~`, and refused the default `.cache/para` outright.
            strings["root"] = "~/" + strings["root"]
        if not strings["known_hosts"]:
            # Strict host keys: no trust on first use, so the file that holds the host's key is named.
            raise ValueError(f"{name}: known_hosts is required (a file with the host's key: "
                             f"ssh-keyscan -p {port} {host} >> FILE, after checking the fingerprint)")
        passthrough = e.get("env_passthrough", [])
        if not isinstance(passthrough, list) or not all(
                isinstance(x, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", x) for x in passthrough):
            raise ValueError(f"{name}: env_passthrough must be a list of variable names")
        cap = e.get("max_running", 0)
        if not isinstance(cap, int) or isinstance(cap, bool) or not 0 <= cap <= 1000:
            raise ValueError(f"{name}: max_running must be 0-1000")
        every = e.get("harvest_interval", 30)
        if not isinstance(every, int) or isinstance(every, bool) or not 1 <= every <= 86400:
            raise ValueError(f"{name}: harvest_interval must be 1-86400 (seconds)")
        # How long its host may stay unreachable before an agent there counts as lost (its
        # session keeps everything harvested; `para resume --executor` continues elsewhere).
        lost_after = e.get("lost_after", 60)
        if not isinstance(lost_after, int) or isinstance(lost_after, bool) or not 1 <= lost_after <= 86400:
            raise ValueError(f"{name}: lost_after must be 1-86400 (seconds)")
        out[name] = {"kind": "ssh", "host": host, "port": port, **strings, "env_passthrough": passthrough,
                     "max_running": cap, "harvest_interval": every, "lost_after": lost_after}
    return out


def _int_field(name: str, e: dict[str, Any], key: str, default: int, low: int, high: int, unit: str = "") -> int:
    val = e.get(key, default)
    if not isinstance(val, int) or isinstance(val, bool) or not low <= val <= high:
        raise ValueError(f"{name}: {key} must be {low}-{high}{unit}")
    return val


def _resources(name: str, v: Any) -> dict[str, dict[str, str]]:
    """A container's {"requests": {...}, "limits": {...}} of Kubernetes quantities."""
    if not isinstance(v, dict) or set(v) - {"requests", "limits"}:
        raise ValueError(f"{name}: resources must be an object with \"requests\" and/or \"limits\"")
    out: dict[str, dict[str, str]] = {}
    for part, table in v.items():
        if not isinstance(table, dict) or not all(
                isinstance(k, str) and _RESOURCE_NAME.fullmatch(k) and isinstance(q, str) and _QUANTITY.fullmatch(q)
                for k, q in table.items()):
            raise ValueError(f"{name}: resources.{part} must map resource names to quantities "
                             "(e.g. {\"cpu\": \"2\", \"memory\": \"4Gi\"})")
        out[part] = dict(table)
    return out


def _k8s_executor(name: str, e: dict[str, Any]) -> dict[str, Any]:
    """{"kind": "k8s", "namespace", "image", "context", "kubeconfig", "resources", "deadline",
    "ttl", "root", "python", "port", "start_timeout", "env_passthrough", "max_running",
    "harvest_interval"}: one Job per session in `namespace`, from `image` (executors/k8s.py)."""
    unknown = sorted(set(e) - _K8S_FIELDS)
    if unknown:
        raise ValueError(f"{name}: unknown field(s) {', '.join(unknown)} (a k8s executor has "
                         f"{', '.join(sorted(_K8S_FIELDS))})")
    namespace = e.get("namespace", "default")
    if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace):
        raise ValueError(f"{name}: namespace must be a Kubernetes namespace name (a DNS label)")
    image = e.get("image")
    if not isinstance(image, str) or not _IMAGE.fullmatch(image):
        raise ValueError(f"{name}: image is required: the container image with python3 >= 3.11, git and this "
                         "para installed (see README, Executors)")
    strings = {}
    for key, default in (("context", ""), ("kubeconfig", ""), ("root", "/para"), ("python", "python3")):
        val = e.get(key, default)
        if not isinstance(val, str) or "\0" in val or "\n" in val:
            raise ValueError(f"{name}: {key} must be a string")
        strings[key] = val
    if not os.path.isabs(strings["root"]):
        raise ValueError(f"{name}: root must be an absolute path in the pod (default /para)")
    passthrough = e.get("env_passthrough", [])
    if not isinstance(passthrough, list) or not all(
            isinstance(x, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", x) and not x.startswith("PARA_")
            for x in passthrough):
        raise ValueError(f"{name}: env_passthrough must be a list of variable names (not PARA_*)")
    return {"kind": "k8s", "namespace": namespace, "image": image, **strings,
            "resources": _resources(name, e.get("resources", {})),
            "deadline": _int_field(name, e, "deadline", 86400, 60, 30 * 86400, " (seconds)"),
            "ttl": _int_field(name, e, "ttl", 600, 0, 7 * 86400, " (seconds)"),
            "port": _int_field(name, e, "port", 7787, 1, 65535),
            "start_timeout": _int_field(name, e, "start_timeout", 300, 5, 3600, " (seconds)"),
            "env_passthrough": passthrough,
            "max_running": _int_field(name, e, "max_running", 0, 0, 1000),
            "harvest_interval": _int_field(name, e, "harvest_interval", 30, 1, 86400, " (seconds)")}


# key -> (default, converter, description)
KEYS: dict[str, tuple[Any, Callable[[Any], Any], str]] = {
    "base_branch": (None, _opt_branch,
                    "branch new sessions fork from (default: origin/HEAD, else main, else master)"),
    "branch_prefix": ("para", lambda v: validate_branch_name(str(v), "branch prefix"),
                      "namespace of session branches"),
    "worktrees_dir": ("", str, ("where session worktrees go (empty = <main checkout>/.para/worktrees; a relative "
                                "path is taken from the main checkout; outside it, or under .para/)")),
    "finish.squash": (True, _bool, "`para finish` squashes the session into one commit"),
    "integrate.strategy": ("squash", _choice("squash", "merge", "rebase", "ff"),
                           "default integration strategy"),
    "integrate.keep_branch": (False, _bool, "keep the session branch after integration"),
    "integrate.check": ("", str, ("command run on the merged result before the target moves "
                                  "(split like a shell would, run without one); empty = no check")),
    "integrate.check_timeout": (900, _int_range(1, 86400), "seconds the check may run"),
    "agent.default": ("claude", str, "launcher profile `para dispatch` uses without --agent"),
    "agent.mode": ("auto", _choice("auto", "headless", "tmux", "editor"),
                   "where agents run: auto = an editor if one is connected, else tmux inside tmux, else headless"),
    "agent.workflow": ("integrate", _choice("integrate", "finish", "none"),
                       "the command the prompt's footer tells the agent to finish with"),
    "agent.stale_after": (600, _int_range(10, 7 * 86400), "seconds without activity before a session counts as stale"),
    "agent.editor_timeout": (5, _int_range(1, 120), "seconds to wait for an editor to start an agent terminal"),
    "agent.stop_grace": (10, _int_range(1, 3600), ("seconds an agent may still run after its session was "
                                                   "integrated or finished before it is stopped, and between "
                                                   "SIGTERM and SIGKILL")),
    "agent.max_running": (0, _int_range(0, 1000), ("agents that may run at once in a repository (0 = no cap); "
                                                   "dispatches beyond it are queued and start in order")),
    "agent.sandbox": ("", _choice("", "bwrap"), ("confine dispatched agents: \"bwrap\" = bubblewrap, the filesystem "
                                                 "read-only but the worktree, a session-bound socket (see README, "
                                                 "Sandbox); empty = not confined")),
    "agent.network": (True, _bool, "a sandboxed agent keeps the network (false = its own empty network namespace)"),
    "agent.bwrap": ("", str, ("the bwrap binary of the sandbox (empty = the one of `para_rpc[sandbox]`, else bwrap "
                              "on PATH)")),
    "agents": ({}, _profiles, "custom launcher profiles (see README)"),
    "agent.executor": ("local", _executor_name, ("where `para dispatch` runs agents without --executor: `local` or the "
                                                "name of one of `executors`")),
    "executors": ({}, _executors, ("machines agents can run on, by name ({NAME: {\"kind\": \"ssh\", \"host\", "
                                   "\"known_hosts\", ...}}; see README, Executors)")),
    "clean.archive_days": (30, _int_range(0, 3650),
                           "`para clean` removes archived branches older than this (if integrated)"),
    # At least a day: a backup `clean --force` just made (of a branch it deleted) must never
    # go in the next `clean` (red team RB1).
    "clean.backup_days": (30, _int_range(1, 3650),
                          "`para clean` removes refs/para/backup/* older than this (at least 1)"),
    "session.setup": ([], _argv, ("argv run in each new worktree (after session.copy/link, before any agent); "
                                  "a failure fails start/dispatch (error setup_failed); [] = none")),
    "session.setup_timeout": (600, _int_range(1, 86400), "seconds session.setup may run"),
    "session.teardown": ([], _argv, ("argv run in a worktree before para removes it (finish, cancel, integrate); "
                                     "a failure is reported in warnings, never blocks; [] = none")),
    "session.teardown_timeout": (60, _int_range(1, 86400), "seconds session.teardown may run"),
    "session.copy": ([], lambda v: _repo_relative(v, "globs", True),
                     "globs of files copied from the main checkout into each new worktree (e.g. \".env*\")"),
    "session.link": ([], lambda v: _repo_relative(v, "paths", False),
                     "paths symlinked from each new worktree to the main checkout's (e.g. node_modules)"),
    "session.ports": (0, _int_range(0, 64), "ports reserved per session (PARA_PORT, PARA_PORTS); 0 = none"),
    "session.port_range": ("20000-29999", _port_range, "where session.ports come from (FIRST-LAST)"),
    "session.env": ({}, _env_map, "extra environment for setup, teardown and agents ({NAME: value})"),
    "sidecar.idle_timeout": (1800, _int_range(0, 7 * 86400),
                             "seconds without clients or work before the sidecar exits (0 = never)"),
}


# The trust gate's one declaration. Keys whose values make para run something, choose what
# it runs, or make it write outside the repository: set by the project file, they take effect
# only after the user approved that exact file (trust.py), and an agent can change none of
# them (trust.forbid_agent). A key added later that runs something (say `session.setup`) is
# declared here and is gated by that alone.
GATED_KEYS: dict[str, str] = {
    "integrate.check": "a command run on every integration",
    "agents": "agent launcher commands",
    "agent.default": "which agent program `para dispatch` runs when no --agent is given",
    "worktrees_dir": "where session worktrees are checked out: files written outside the repository",
    "agent.sandbox": "whether agents are confined: a project file could turn off the sandbox the user chose",
    "agent.network": "whether a sandboxed agent has the network: a project file could turn it back on",
    "agent.bwrap": "the program that confines agents (it runs with the user's rights)",
    "session.setup": "a command run in every new worktree",
    "session.teardown": "a command run before a worktree is removed",
    "session.env": "environment variables of setup, teardown and agents (PATH, LD_PRELOAD...)",
    "session.copy": "files of the main checkout copied into every worktree (where agents read them)",
    "session.link": "paths of the main checkout every worktree links to (agents write through them)",
    "executors": "hosts agents run on, with your SSH keys: what runs there is yours to choose",
    "agent.executor": "which host dispatched agents run on (your code goes there)",
}
# Of those, the ones whose values are argv (shown as commands; the others as settings).
COMMAND_KEYS = frozenset({"integrate.check", "agents", "session.setup", "session.teardown"})
# Every other key, with why its value cannot make para run anything. A new key goes in one of
# the two (tests/test_trust_boundary.py fails until it does).
INERT_KEYS: dict[str, str] = {
    "base_branch": "a branch name (validated) sessions fork from",
    "branch_prefix": "a branch name prefix (validated)",
    "finish.squash": "a boolean",
    "integrate.strategy": "one of four fixed strategies",
    "integrate.keep_branch": "a boolean",
    "integrate.check_timeout": "a number of seconds",
    "agent.mode": "one of four fixed modes; the program is chosen by the profile",
    "agent.workflow": "one of three fixed footers",
    "agent.stale_after": "a number of seconds",
    "agent.editor_timeout": "a number of seconds",
    "agent.stop_grace": "a number of seconds",
    "agent.max_running": "a number of agents",
    "clean.archive_days": "a number of days",
    "clean.backup_days": "a number of days",
    "sidecar.idle_timeout": "a number of seconds",
    "session.setup_timeout": "a number of seconds",
    "session.teardown_timeout": "a number of seconds",
    "session.ports": "a number of ports",
    "session.port_range": "a range of two port numbers",
}


def usable(value: Any) -> Any:
    """A configured value an operation is about to use. Where the trust gate withheld a
    command (trust.settle put the error in its place), that error is raised."""
    if isinstance(value, ParaError):
        raise value
    return value


def env_name(key: str) -> str:
    return "PARA_" + key.upper().replace(".", "_")


ENV_NAMES = {env_name(k): k for k in KEYS}


def user_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("PARA_CONFIG"):
        return Path(environ["PARA_CONFIG"])
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "para" / "config.json"


PROJECT_FILE = ".para/config.json"  # in the main worktree; committed with the repository


def project_config_path(main_root: str | Path) -> Path:
    return Path(main_root) / PROJECT_FILE


def check_key(key: str) -> str:
    if key not in KEYS:
        raise ParaError(Code.invalid_input, f"unknown config key {key!r}",
                        known=sorted(KEYS))
    return key


def convert(key: str, value: Any, source: str) -> Any:
    try:
        return KEYS[check_key(key)][1](value)
    except ParaError as e:
        raise ParaError(Code.config_error, f"{source}: {key}: {e.message}") from None
    except (ValueError, TypeError) as e:
        raise ParaError(Code.config_error, f"{source}: {key}: {e}") from None


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in ("agents", "session.env", "executors"):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def read_file(path: Path, within: str | Path | None = None) -> dict[str, Any]:
    """The flat, validated keys of one config file ({} when it does not exist)."""
    return read_layer(path, within)[0]


def read_layer(path: Path, within: str | Path | None = None) -> tuple[dict[str, Any], str | None]:
    """The flat, validated keys of one config file and the SHA-256 of the very bytes they
    were read from (what an approval records); ({}, None) when it does not exist. A project
    file is read `within` its repository (runtime.read_regular: no symlink out of it, no FIFO
    or device, at most MAX_BYTES); the user file may be a symlink (dotfile managers)."""
    data = read_regular(path, what="config file", code=Code.config_error, limit=MAX_BYTES, within=within)
    if data is None:
        return {}, None
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParaError(Code.config_error, f"{path} is not UTF-8 text") from None
    try:
        tree = loads(raw) if raw.strip() else {}
    except ValueError as e:
        raise ParaError(Code.config_error, f"{path} is not valid JSON: {e}") from None
    if not isinstance(tree, dict):
        raise ParaError(Code.config_error, f"{path} must hold a JSON object")
    flat = from_para(_flatten(tree))
    for key in flat:
        if key not in KEYS:
            raise ParaError(Code.config_error, f"{path}: unknown key {key!r}")
    import hashlib  # (not on the CLI's start-up path: config.py is imported by every para process)

    return {k: convert(k, v, str(path)) for k, v in flat.items()}, hashlib.sha256(data).hexdigest()


# Para (the tool para replaces) keeps its settings in the same files: ~/.config/para/config.json
# and .para/config.json. Its keys are read where para has the same setting and otherwise left
# alone (never an error, never removed: Para may still be in use next to para).
_PARA_SAME = {"git.branch_prefix": "branch_prefix", "git.default_integration_strategy": "integrate.strategy",
              "session.auto_cleanup_days": "clean.archive_days", "directories.subtrees_dir": "worktrees_dir"}
_PARA_ONLY = ("ide.", "directories.", "git.", "docker.", "session.default_name_format",
              "session.preserve_on_finish", "sandbox", "setup_script")


def from_para(flat: dict[str, Any]) -> dict[str, Any]:
    """`flat` with Para's keys read as para's (where para has the setting) or dropped."""
    out = {k: v for k, v in flat.items() if not (k in _PARA_SAME or k.startswith(_PARA_ONLY) and k not in KEYS)}
    for theirs, ours in _PARA_SAME.items():
        value = flat.get(theirs)
        if value is None or ours in flat:  # (para's own key wins; Para's null means "off")
            continue
        out[ours] = value.lower() if isinstance(value, str) and ours == "integrate.strategy" else value
    return out


def effective(main_root: str | Path | None, env: Mapping[str, str] | None = None,
              user_path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every key with its value and the layer it came from. Command keys set by the project
    file also carry `sha256`, the digest of the content they were read from; `agents`
    from the files carries `profiles`, the source of each profile."""
    out = {k: {"value": d, "source": "default"} for k, (d, _, _) in KEYS.items()}
    layers: list[tuple[str, Path, str | Path | None]] = [("user", user_path or user_config_path(), None)]
    if main_root is not None:
        layers.append(("project", project_config_path(main_root), main_root))
    for source, path, within in layers:
        flat, digest = read_layer(path, within)
        for k, v in flat.items():
            entry: dict[str, Any] = {"value": v, "source": f"{source}:{path}"}
            if k == "agents":  # profiles add up: a project that adds one keeps the user's own
                entry["value"] = {**out[k]["value"], **v}
                entry["profiles"] = {**out[k].get("profiles", {}), **{name: entry["source"] for name in v}}
            if source == "project" and k in GATED_KEYS:
                entry["sha256"] = digest
            out[k] = entry
    for name, v in (env or {}).items():
        if name in ENV_NAMES:
            k = ENV_NAMES[name]
            out[k] = {"value": convert(k, v, name), "source": f"env:{name}"}
    return out


def values(main_root: str | Path | None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The raw values, project-file commands included: operations use `Repo.config`,
    which withholds the ones the user has not approved (trust.settle)."""
    return {k: v["value"] for k, v in effective(main_root, env).items()}


def remove_key(path: Path, key: str, within: str | Path | None = None) -> bool:
    """Remove one key from a config file, atomically (parents it leaves empty go too);
    False when the file did not set it (then nothing is written)."""
    check_key(key)
    data = read_regular(path, what="config file", code=Code.config_error, limit=MAX_BYTES, within=within)
    try:
        tree = loads(data.decode("utf-8")) if data and data.strip() else {}
    except ValueError as e:  # bad JSON, bad UTF-8, too deep
        raise ParaError(Code.config_error, f"{path} is not valid JSON: {e}") from None
    if not isinstance(tree, dict):
        raise ParaError(Code.config_error, f"{path} must hold a JSON object")
    *parents, leaf = key.split(".")
    chain = [tree]
    for p in parents:
        node = chain[-1].get(p)
        if not isinstance(node, dict):
            return False
        chain.append(node)
    if leaf not in chain[-1]:
        return False
    del chain[-1][leaf]
    for parent, name in zip(reversed(chain[:-1]), reversed(parents)):
        if parent[name]:
            break
        del parent[name]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(tree, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return True


def write_key(path: Path, key: str, value: Any, within: str | Path | None = None) -> Any:
    """Set one key in a config file (created if missing), atomically; returns the stored value.
    (`within`: a project file's repository, as for read_layer.)"""
    check_key(key)
    if isinstance(value, str):
        try:
            value = loads(value)  # "true", "30", "null" arrive as text from the CLI
        except json.JSONDecodeError:
            pass  # plain text: a string value
        except ValueError as e:
            raise ParaError(Code.config_error, f"value: {key}: {e}") from None
    stored = convert(key, value, "value")
    data = read_regular(path, what="config file", code=Code.config_error, limit=MAX_BYTES, within=within)
    try:
        tree = loads(data.decode("utf-8")) if data and data.strip() else {}
    except ValueError as e:  # bad JSON, bad UTF-8, too deep
        raise ParaError(Code.config_error, f"{path} is not valid JSON: {e}") from None
    node = tree
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ParaError(Code.config_error, f"{path}: {p} is not an object")
    node[leaf] = stored
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(tree, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return stored
