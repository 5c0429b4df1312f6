"""The worker's requests and places (worker.py): checking a request's fields, the layout of a
session under the executor's root, its locks, and reading a payload. Stdlib only.

Nothing from a request becomes a path before it is checked here: repo ids and session names
cannot hold `..`, `/` or NUL, the root is absolute, and the session's socket path must fit a
unix socket address.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from para_rpc.errors import Code, ParaError
from para_rpc.names import validate_branch_name, validate_session_name

MAX_SOCKET_PATH = 100        # sun_path holds 108 bytes; keep a margin
REPO_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

Reply = tuple[dict[str, Any], "bytes | Path | None"]  # the answer and its payload (a Path is sent, then removed)


def bad(message: str) -> ParaError:
    return ParaError(Code.invalid_input, message)


def field(req: dict[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    value = req.get(key, default)
    if value is ...:
        raise bad(f"the request has no {key!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad(f"{key!r} must be {kind.__name__}, not {type(value).__name__}")
    return value


def check_sha(value: object, what: str) -> str:
    if not isinstance(value, str) or not SHA_RE.fullmatch(value):
        raise bad(f"{what} must be a full commit id (40 or 64 lowercase hex digits), not {value!r:.80}")
    return value


def refname(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("refs/") or value.count("/") < 2:
        raise bad(f"ref {value!r:.80} must be a full ref name (refs/...)")
    validate_branch_name(value[len("refs/"):], "ref name")
    return value


class Place(NamedTuple):  # (not a dataclass: `dataclasses` pulls in `inspect`, a slower start on every call)
    root: Path
    repo: str
    session: str

    @property
    def cache(self) -> Path:
        return self.root / "repos" / f"{self.repo}.git"

    @property
    def wt(self) -> Path:
        return self.root / "wt" / self.repo / self.session

    @property
    def run(self) -> Path:
        return self.root / "run" / self.repo / self.session

    @property
    def socket(self) -> Path:
        h = hashlib.sha256(f"{self.repo}/{self.session}".encode()).hexdigest()[:16]
        return self.root / "sock" / f"{h}.sock"


def locate(req: dict[str, Any], session: bool = True) -> Place:
    raw = field(req, "root", str)
    if not raw or "\0" in raw:
        raise bad("'root' is empty or holds a NUL")
    root = Path(os.path.expanduser(raw))
    if not root.is_absolute() or ".." in root.parts:
        raise bad(f"root {raw!r} must be an absolute path (or start with ~) without '..'")
    repo = field(req, "repo", str)
    if not REPO_RE.fullmatch(repo) or ".." in repo:
        raise bad(f"invalid repo id {repo!r:.80}: use [a-z0-9][a-z0-9._-]{{0,63}} without '..'")
    name = validate_session_name(field(req, "session", str)) if session else "x"
    place = Place(root, repo, name)
    if len(os.fsencode(place.socket)) > MAX_SOCKET_PATH:
        raise bad(f"root {raw!r} is too long: the session socket {place.socket} would be "
                   f"{len(os.fsencode(place.socket))} bytes, over the {MAX_SOCKET_PATH}-byte limit of a unix "
                   "socket path; configure a shorter executor root")
    return place


def mkdir(path: Path) -> Path:
    """Make `path` and its missing parents 0700 (the umask cannot widen what we ask)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=0o700)
        os.chmod(p, 0o700)
    return path


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """Several sessions' requests on one cache arrive at once: one at a time changes it."""
    if not cache.is_dir():
        raise ParaError(Code.not_found, f"the worker has no cache for this repository yet ({cache}): receive first")
    with open(cache / "para-worker.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def session_locked(place: Place) -> Iterator[None]:
    """One op at a time on one session (a harvest sweep and an agent's exit can meet) without
    holding up the cache's other sessions: their worktrees, indexes and refs are their own.
    Taken before the cache's lock, never after it; it lives in the run directory that prepare
    makes, so asking about an unknown session leaves nothing behind."""
    if not place.run.is_dir():
        raise ParaError(Code.not_found, f"session {place.session} is not prepared on this worker")
    with open(place.run / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def read_payload(req: dict[str, Any], stdin: IO[bytes], into: Path) -> Path:
    """Copy exactly the announced payload into a new temp file in `into`; short is refused."""
    size = field(req, "payload", int, 0)
    if size < 0:
        raise bad("'payload' must not be negative")
    fd, name = tempfile.mkstemp(prefix="payload-", suffix=".bundle", dir=into)
    path, got = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as f:
            while got < size and (chunk := stdin.read(min(size - got, 1 << 20))):
                f.write(chunk)
                got += len(chunk)
        if got < size:
            raise bad(f"the payload ended after {got} bytes; the request said {size}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def own_files(place: Place) -> list[str]:
    """The files prepare wrote into the worktree: para's, not the agent's work."""
    try:
        got = json.loads((place.run / "own-files.json").read_text())
    except (OSError, ValueError):
        return []
    return [f for f in got if isinstance(f, str)] if isinstance(got, list) else []
