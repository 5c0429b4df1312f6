"""`python -m para_rpc.worker`: para's side on an executor's host (issue 16).

The sidecar runs this one constant command over SSH and writes the request on its stdin: SSH
hands a command line to the remote user's shell, so nothing that comes from a user or an agent
(argv, environment, prompt, token) may ever be part of it. Stdlib only, so any host with python3,
git and para installed serves.

Framing (both ways): one line of JSON, then, when it has `"payload": N`, exactly N raw bytes (a
git bundle, or log bytes). An error is {"error": "<sentence>", "code": "<para error code>"} with
exit status 2, and nothing on stdout is ever a traceback.

Layout under the request's `root` (directories 0700): `repos/<repo>.git` the bare cache,
`wt/<repo>/<session>` the worktree, `run/<repo>/<session>/` the run (exit.json, agent.log,
prompt, runner.pid), `sock/<h>.sock` the session's socket, bound by the sidecar's SSH connection.

Ops (the contract is docs/architecture.md "Executors"):
- check -> {para, protocol, python, git}
- refs {root, repo} -> {refs}; receive {root, repo, refs, payload} -> {refs}
- prepare {root, repo, session, branch, commit, files} -> {worktree, run_dir, prompt_file, socket}
- start {.., argv, env, prompt} -> {pid, log, exit_file, started_at}
- poll -> {state: alive|exited|lost|none, pid, exit_code, ended_at}
- logs {.., offset, limit} -> {size, payload}; stop {.., grace} -> {pids, left_running}
- snapshot {.., branch, have} -> {head, branch_tip, checkpoint, dirty, payload}
- commit {.., message} -> {head, committed}; merge {.., target, payload} -> {head, conflicted}
- release {.., branch} -> {}
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from para_rpc import PROTOCOL_VERSION, __version__, worker_git, worker_proc
from para_rpc.errors import Code, ParaError
from para_rpc.names import validate_branch_name, validate_session_name

MAX_LINE = 64 << 20          # the request line (prompt and files travel in it)
MAX_SOCKET_PATH = 100        # sun_path holds 108 bytes; keep a margin
LOG_LIMIT = 1 << 20
LOG_CAP = 16 << 20           # however much is asked for, one answer holds at most this
_REPO_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

Reply = tuple[dict[str, Any], "bytes | Path | None"]  # the answer and its payload (a Path is sent, then removed)


def _bad(message: str) -> ParaError:
    return ParaError(Code.invalid_input, message)


def _field(req: dict[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    value = req.get(key, default)
    if value is ...:
        raise _bad(f"the request has no {key!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"{key!r} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _sha(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
        raise _bad(f"{what} must be a full commit id (40 or 64 lowercase hex digits), not {value!r:.80}")
    return value


def _refname(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("refs/") or value.count("/") < 2:
        raise _bad(f"ref {value!r:.80} must be a full ref name (refs/...)")
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


def _place(req: dict[str, Any], session: bool = True) -> Place:
    raw = _field(req, "root", str)
    if not raw or "\0" in raw:
        raise _bad("'root' is empty or holds a NUL")
    root = Path(os.path.expanduser(raw))
    if not root.is_absolute() or ".." in root.parts:
        raise _bad(f"root {raw!r} must be an absolute path (or start with ~) without '..'")
    repo = _field(req, "repo", str)
    if not _REPO_RE.fullmatch(repo) or ".." in repo:
        raise _bad(f"invalid repo id {repo!r:.80}: use [a-z0-9][a-z0-9._-]{{0,63}} without '..'")
    name = validate_session_name(_field(req, "session", str)) if session else "x"
    place = Place(root, repo, name)
    if len(os.fsencode(place.socket)) > MAX_SOCKET_PATH:
        raise _bad(f"root {raw!r} is too long: the session socket {place.socket} would be "
                   f"{len(os.fsencode(place.socket))} bytes, over the {MAX_SOCKET_PATH}-byte limit of a unix "
                   "socket path; configure a shorter executor root")
    return place


def _mkdir(path: Path) -> Path:
    """Make `path` and its missing parents 0700 (the umask cannot widen what we ask)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=0o700)
        os.chmod(p, 0o700)
    return path


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Several sessions' requests on one cache arrive at once: one at a time changes it."""
    if not cache.is_dir():
        raise ParaError(Code.not_found, f"the worker has no cache for this repository yet ({cache}): receive first")
    with open(cache / "para-worker.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _read_payload(req: dict[str, Any], stdin: IO[bytes], into: Path) -> Path:
    """Copy exactly the announced payload into a new temp file in `into`; short is refused."""
    size = _field(req, "payload", int, 0)
    if size < 0:
        raise _bad("'payload' must not be negative")
    fd, name = tempfile.mkstemp(prefix="payload-", suffix=".bundle", dir=into)
    path, got = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as f:
            while got < size and (chunk := stdin.read(min(size - got, 1 << 20))):
                f.write(chunk)
                got += len(chunk)
        if got < size:
            raise _bad(f"the payload ended after {got} bytes; the request said {size}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


# ---- ops -----------------------------------------------------------------------------------


def op_check(_req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True, timeout=30, check=False)
        got = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        got = None
    return {"para": __version__, "protocol": PROTOCOL_VERSION, "python": platform.python_version(),
            "git": got}, None


def op_refs(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req, session=False)
    return {"refs": worker_git.refs(place.cache) if place.cache.is_dir() else {}}, None


def _into(cache: Path, bundle: Path, wanted: dict[str, str]) -> None:
    if bundle.stat().st_size:
        worker_git.unbundle(cache, bundle)
    worker_git.set_refs(cache, wanted)


def _first_receive(place: Place, bundle: Path, wanted: dict[str, str]) -> None:
    """Build the cache beside its place and rename it in when complete: a bad bundle or a
    missing commit leaves no half-made cache behind."""
    new = Path(tempfile.mkdtemp(prefix=f".{place.repo}.new-", dir=place.cache.parent))
    try:
        worker_git.init_cache(new)
        _into(new, bundle, wanted)
        os.rename(new, place.cache)
    except OSError:
        if not place.cache.is_dir():
            raise
        shutil.rmtree(new)  # another receive made the cache meanwhile: add to that one
        with _locked(place.cache):
            _into(place.cache, bundle, wanted)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def op_receive(req: dict[str, Any], stdin: IO[bytes]) -> Reply:
    place = _place(req, session=False)
    wanted = _field(req, "refs", dict)
    wanted = {_refname(r): _sha(s, f"the commit of {r}") for r, s in wanted.items()}
    repos = place.cache.parent
    made = [p for p in (repos, *repos.parents) if not p.exists()]
    try:
        _mkdir(repos)
        # read before taking the lock: a slow upload holds up no other session
        bundle = _read_payload(req, stdin, place.cache if place.cache.is_dir() else repos)
        try:
            if bundle.parent == place.cache:
                with _locked(place.cache):
                    _into(place.cache, bundle, wanted)
            else:
                _first_receive(place, bundle, wanted)
        finally:
            bundle.unlink(missing_ok=True)
    except BaseException:
        for p in made:  # (child first) bad input leaves no directory behind either
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    return {"refs": worker_git.refs(place.cache)}, None


def _relpath(rel: object, wt: Path) -> Path:
    if not isinstance(rel, str) or not rel or "\0" in rel or "\\" in rel:
        raise _bad(f"file path {rel!r:.80} is empty or holds a NUL or backslash")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or any(p in ("..", ".") for p in rel.split("/")) or \
            any(p.lower() == ".git" for p in parts):
        raise _bad(f"file path {rel!r:.80} must stay inside the worktree (relative, no '..', not under .git)")
    return wt / rel


def _write_files(wt: Path, files: dict[Path, str]) -> None:
    """Write the files; a directory on the way that is a symlink (committed in the repository)
    would lead outside the worktree, so it is refused, as is a symlink as the file itself."""
    top = wt.resolve()
    for path, body in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _bad(f"cannot make the directory of {path.relative_to(wt)} in the worktree: {e.strerror}") from None
        if not path.parent.resolve().is_relative_to(top):
            raise _bad(f"file path {path.relative_to(wt)} leads outside the worktree through a symlink")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        except OSError as e:  # a directory there, or a symlink as the file itself
            raise _bad(f"cannot write {path.relative_to(wt)} in the worktree: {e.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)


def op_prepare(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req)
    branch = validate_branch_name(_field(req, "branch", str))
    commit = _sha(req.get("commit"), "'commit'")
    raw = _field(req, "files", dict, {})
    files = {_relpath(rel, place.wt): body for rel, body in raw.items()}
    if not all(isinstance(b, str) for b in files.values()):
        raise _bad("every file's content must be text")
    with _locked(place.cache):
        on = worker_git.worktree_branch(place.cache, place.wt)
        made, new_branch = on is None, False
        if made:
            if place.wt.exists():
                raise ParaError(Code.already_exists, f"{place.wt} exists but is no worktree of the cache")
            _mkdir(place.wt.parent)
            new_branch = worker_git.add_worktree(place.cache, place.wt, branch, commit)
        elif on and on != branch:
            raise ParaError(Code.wrong_state, f"the worktree {place.wt} is on branch {on}, not {branch}")
        try:
            _write_files(place.wt, files)
            _mkdir(place.run)
            own = sorted({*_own(place), *(str(p.relative_to(place.wt)) for p in files)})
            (place.run / "own-files.json").write_text(json.dumps(own))
        except BaseException:
            if made:  # bad input changes nothing: the worktree (and a branch made for it) go again
                worker_git.remove_worktree(place.cache, place.wt)
                if new_branch:
                    worker_git.git(["branch", "-q", "-D", branch], git_dir=place.cache)
            raise
        _mkdir(place.socket.parent)
    return {"worktree": str(place.wt), "run_dir": str(place.run), "prompt_file": str(place.run / "prompt"),
            "socket": str(place.socket), "home": os.path.expanduser("~")}, None


def _own(place: Place) -> list[str]:
    """The files prepare wrote into the worktree: para's, not the agent's work."""
    try:
        got = json.loads((place.run / "own-files.json").read_text())
    except (OSError, ValueError):
        return []
    return [f for f in got if isinstance(f, str)] if isinstance(got, list) else []


def _runner(place: Place) -> tuple[int | None, int | None]:
    """The recorded runner: (pid, start ticks), (None, None) if it never started."""
    try:
        got = json.loads((place.run / "runner.pid").read_text())
        return int(got["pid"]), got.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _exit(place: Place) -> dict[str, Any] | None:
    try:
        got = json.loads((place.run / "exit.json").read_text())
    except (OSError, ValueError):
        return None
    return got if isinstance(got, dict) else None


def _running(place: Place) -> bool:
    pid, start = _runner(place)
    return pid is not None and _exit(place) is None and worker_proc.alive(pid, start)


def op_start(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req)
    argv = _field(req, "argv", list)
    if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise _bad("'argv' must be a non-empty list of strings without NUL")
    env = _field(req, "env", dict)
    if not all(isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
               for k, v in env.items()):
        raise _bad("'env' must map names (no '=' or NUL) to strings without NUL")
    prompt = _field(req, "prompt", str, "")
    with _locked(place.cache):
        if not place.wt.is_dir() or not place.run.is_dir():
            raise ParaError(Code.not_found, f"session {place.session} is not prepared on this worker")
        if _running(place):
            raise ParaError(Code.wrong_state, f"session {place.session} already has a running agent "
                            f"(runner pid {_runner(place)[0]})")
        run = place.run
        (run / "exit.json").unlink(missing_ok=True)
        (run / "prompt").unlink(missing_ok=True)
        fd = os.open(run / "prompt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(prompt)
        exit_file, log = run / "exit.json", run / "agent.log"
        with open(log, "ab") as err:  # the runner's own complaints land in the log, not in SSH's pipe
            proc = subprocess.Popen(
                [sys.executable, "-m", "para_rpc.agent_runner", "--exit-file", str(exit_file), "--log", str(log),
                 "--stdin", str(run / "prompt"), "--", *argv],
                cwd=place.wt, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        started = time.time()
        proc.returncode = 0  # detached on purpose: this worker exits now, the runner stays
        tmp = run / "runner.pid.tmp"
        tmp.write_text(json.dumps({"pid": proc.pid, "start": worker_proc.start_ticks(proc.pid),
                                   "started_at": started}))
        os.replace(tmp, run / "runner.pid")
    return {"pid": proc.pid, "log": str(log), "exit_file": str(exit_file), "started_at": started}, None


def op_poll(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req)
    pid, start = _runner(place)
    answer: dict[str, Any] = {"state": "none", "pid": pid, "exit_code": None, "ended_at": None}
    if pid is None:
        return answer, None
    # the exit file is read again after the pid is found gone: the runner writes it, then exits
    done = _exit(place) or (None if worker_proc.alive(pid, start) else _exit(place))
    if done is not None:
        answer.update(state="exited", exit_code=done.get("exit_code"), ended_at=done.get("ended_at"))
    else:
        answer["state"] = "alive" if worker_proc.alive(pid, start) else "lost"
    return answer, None


def op_logs(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req)
    offset = _field(req, "offset", int, 0)
    limit = _field(req, "limit", int, LOG_LIMIT)
    if offset < 0 or limit < 0:
        raise _bad("'offset' and 'limit' must not be negative")
    try:
        with open(place.run / "agent.log", "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            data = f.read(min(limit, LOG_CAP, max(size - offset, 0)))
    except FileNotFoundError:
        size, data = 0, b""
    return {"size": size, "payload": len(data)}, data


def op_stop(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req)
    grace = req.get("grace", 10.0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= 3600:
        raise _bad("'grace' must be between 0 and 3600 seconds")
    pid, start = _runner(place)
    pids, left = worker_proc.stop(pid, start, str(place.run / "exit.json"), float(grace))
    return {"pids": pids, "left_running": left}, None


def op_snapshot(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req)
    branch = validate_branch_name(_field(req, "branch", str))
    have = [_sha(s, "every 'have'") for s in _field(req, "have", list, [])]
    with _locked(place.cache):
        if worker_git.worktree_branch(place.cache, place.wt) is None:
            raise ParaError(Code.not_found, f"session {place.session} has no worktree on this worker")
        answer, args = worker_git.snapshot(place.cache, place.wt, _mkdir(place.run), place.session, branch, have,
                                           _own(place))
        if not args:
            return {**answer, "payload": 0}, None
        fd, name = tempfile.mkstemp(prefix="snapshot-", suffix=".bundle", dir=place.cache)
        os.close(fd)
        try:
            worker_git.create_bundle(place.cache, Path(name), args)
        except BaseException:
            os.unlink(name)
            raise
    return {**answer, "payload": os.path.getsize(name)}, Path(name)


def _worktree(place: Place) -> Path:
    if worker_git.worktree_branch(place.cache, place.wt) is None:
        raise ParaError(Code.not_found, f"session {place.session} has no worktree on this worker")
    return place.wt


def op_commit(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req)
    message = _field(req, "message", str)
    if not message.strip() or "\0" in message:
        raise _bad("'message' is empty or holds a NUL")
    with _locked(place.cache):
        return worker_git.commit(_worktree(place), message, _own(place)), None


def op_merge(req: dict[str, Any], stdin: IO[bytes]) -> Reply:
    place = _place(req)
    target = _field(req, "target", str)
    if not _SHA_RE.fullmatch(target):
        _refname(target)
    if not place.cache.is_dir():
        raise ParaError(Code.not_found, f"the worker has no cache for this repository ({place.cache})")
    bundle = _read_payload(req, stdin, place.cache)  # before the lock, like receive
    try:
        with _locked(place.cache):
            wt = _worktree(place)
            if bundle.stat().st_size:
                worker_git.unbundle(place.cache, bundle)
            return worker_git.merge(place.cache, wt, place.session, target), None
    finally:
        bundle.unlink(missing_ok=True)


def op_release(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = _place(req)
    branch = validate_branch_name(_field(req, "branch", str))
    if _running(place):
        raise ParaError(Code.wrong_state, f"session {place.session}'s agent is still running "
                        f"(runner pid {_runner(place)[0]}): stop it first")
    if place.cache.is_dir():
        with _locked(place.cache):
            worker_git.release(place.cache, place.wt, place.session, branch)
    elif place.wt.exists():
        shutil.rmtree(place.wt)
    shutil.rmtree(place.run, ignore_errors=True)
    place.socket.unlink(missing_ok=True)
    return {}, None


OPS: dict[str, Callable[[dict[str, Any], IO[bytes]], Reply]] = {
    "check": op_check, "refs": op_refs, "receive": op_receive, "prepare": op_prepare, "start": op_start,
    "poll": op_poll, "logs": op_logs, "stop": op_stop, "snapshot": op_snapshot, "commit": op_commit,
    "merge": op_merge, "release": op_release,
}


def handle(stdin: IO[bytes]) -> Reply:
    line = stdin.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise _bad(f"the request line is longer than {MAX_LINE} bytes")
    try:
        req = json.loads(line)
    except ValueError as e:
        raise _bad(f"the request is not JSON: {e}") from None
    if not isinstance(req, dict):
        raise _bad("the request must be a JSON object")
    op = req.get("op")
    if op not in OPS:
        raise _bad(f"unknown op {op!r:.80}; this worker knows {', '.join(OPS)}")
    return OPS[op](req, stdin)


def main() -> int:
    out = sys.stdout.buffer
    try:
        answer, payload = handle(sys.stdin.buffer)
    except ParaError as e:
        answer, payload = {"error": e.message, "code": e.code.name}, None
    except Exception as e:  # noqa: BLE001  (a bug: say so in one line, the traceback goes to stderr only)
        traceback.print_exc()
        answer, payload = {"error": f"internal error in the worker: {type(e).__name__}: {e}",
                           "code": Code.internal.name}, None
    out.write(json.dumps(answer).encode() + b"\n")
    if isinstance(payload, Path):
        try:
            with open(payload, "rb") as f:
                shutil.copyfileobj(f, out)
        finally:
            payload.unlink(missing_ok=True)
    elif payload:
        out.write(payload)
    out.flush()
    return 2 if "error" in answer else 0


if __name__ == "__main__":
    sys.exit(main())
