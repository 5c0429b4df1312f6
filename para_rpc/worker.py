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
prompt, runner.pid, own-files.json, lock), `sock/<h>.sock` the session's socket, bound by the sidecar's SSH connection.

Ops (the contract is docs/architecture.md "Executors"):
- check -> {para, protocol, python, git}
- refs {root, repo} -> {refs}; receive {root, repo, refs, payload} -> {refs}
- prepare {root, repo, session, branch, commit, files, checkpoint?} -> {worktree, run_dir,
  prompt_file, socket, home, restored}; the files are para's: never part of a commit or
  checkpoint; a checkpoint (made on `commit`) comes back as uncommitted changes in a new worktree
- start {.., argv, env, prompt, inherit} -> {pid, log, exit_file, started_at} (inherit: names taken
  from the worker's own environment, a pod's Secret)
- poll -> {state: alive|exited|lost|none, pid, exit_code, ended_at}
- logs {.., offset, limit} -> {size, payload}; stop {.., grace} -> {pids, left_running}
- snapshot {.., branch, have} -> {head, branch_tip, checkpoint, dirty, payload}
- commit {.., message} -> {head, committed}; merge {.., target, payload} -> {head, conflicted}
- release {.., branch} -> {}

Locks: a cache's `para-worker.lock` for what changes its refs or worktrees (receive, prepare,
release); a session's `run/.../lock` for ops on that session alone (start, snapshot, commit,
merge, release), taken first. This module frames and dispatches and holds the cache-side ops;
worker_place checks requests and knows the layout, worker_run runs the agent, worker_proc finds
its processes, worker_git holds every git step.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from para_rpc import PROTOCOL_VERSION, __version__, worker_git
from para_rpc.errors import Code, ParaError
from para_rpc.names import validate_branch_name
from para_rpc.worker_place import (
    SHA_RE,
    Place,
    Reply,
    bad,
    check_sha,
    field,
    locate,
    locked,
    mkdir,
    own_files,
    read_payload,
    refname,
    session_locked,
)
from para_rpc.worker_run import (
    is_running,
    op_logs,
    op_poll,
    op_poll_many,
    op_start,
    op_stop,
    runner_of,
)

MAX_LINE = 64 << 20          # the request line (prompt and files travel in it)


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
    place = locate(req, session=False)
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
        with locked(place.cache):
            _into(place.cache, bundle, wanted)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def op_receive(req: dict[str, Any], stdin: IO[bytes]) -> Reply:
    place = locate(req, session=False)
    wanted = field(req, "refs", dict)
    wanted = {refname(r): check_sha(s, f"the commit of {r}") for r, s in wanted.items()}
    repos = place.cache.parent
    made = [p for p in (repos, *repos.parents) if not p.exists()]
    try:
        mkdir(repos)
        # read before taking the lock: a slow upload holds up no other session
        bundle = read_payload(req, stdin, place.cache if place.cache.is_dir() else repos)
        try:
            if bundle.parent == place.cache:
                with locked(place.cache):
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
        raise bad(f"file path {rel!r:.80} is empty or holds a NUL or backslash")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or any(p in ("..", ".") for p in rel.split("/")) or \
            any(p.lower() == ".git" for p in parts):
        raise bad(f"file path {rel!r:.80} must stay inside the worktree (relative, no '..', not under .git)")
    return wt / rel


def _write_files(wt: Path, files: dict[Path, str]) -> None:
    """Write the files; a directory on the way that is a symlink (committed in the repository)
    would lead outside the worktree, so it is refused, as is a symlink as the file itself."""
    top = wt.resolve()
    for path, body in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise bad(f"cannot make the directory of {path.relative_to(wt)} in the worktree: {e.strerror}") from None
        if not path.parent.resolve().is_relative_to(top):
            raise bad(f"file path {path.relative_to(wt)} leads outside the worktree through a symlink")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        except OSError as e:  # a directory there, or a symlink as the file itself
            raise bad(f"cannot write {path.relative_to(wt)} in the worktree: {e.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)


def op_prepare(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = locate(req)
    branch = validate_branch_name(field(req, "branch", str))
    commit = check_sha(req.get("commit"), "'commit'")
    checkpoint = req.get("checkpoint")  # (a resumed session's uncommitted work, put back)
    checkpoint = check_sha(checkpoint, "'checkpoint'") if checkpoint is not None else None
    raw = field(req, "files", dict, {})
    files = {_relpath(rel, place.wt): body for rel, body in raw.items()}
    if not all(isinstance(b, str) for b in files.values()):
        raise bad("every file's content must be text")
    with locked(place.cache):
        on = worker_git.worktree_branch(place.cache, place.wt)
        made, new_branch = on is None, False
        if made:
            if place.wt.exists():
                raise ParaError(Code.already_exists, f"{place.wt} exists but is no worktree of the cache")
            mkdir(place.wt.parent)
            new_branch = worker_git.add_worktree(place.cache, place.wt, branch, commit)
        elif on and on != branch:
            raise ParaError(Code.wrong_state, f"the worktree {place.wt} is on branch {on}, not {branch}")
        else:
            # Kept from before: this session's own (a resume on the host it ran on: its work on top
            # of `commit`, maybe more than was harvested), or one an earlier session of the name
            # left here (its end released it elsewhere, or not at all), whose files are not this one's.
            head = worker_git.head_of(place.wt)
            if not worker_git.descends(place.cache, head, commit):
                raise ParaError(Code.wrong_state, f"the worktree {place.wt} on this worker is at {head or 'no commit'}, "
                                f"which does not hold {commit}: an earlier session of this name left it here; "
                                "release it (or remove it on the host) first")
        try:
            if made and checkpoint:  # (a worktree kept from before holds its own work already)
                worker_git.restore(place.cache, place.wt, checkpoint, commit)
            _write_files(place.wt, files)
            mkdir(place.run)
            own = sorted({*own_files(place), *(str(p.relative_to(place.wt)) for p in files)})
            (place.run / "own-files.json").write_text(json.dumps(own))
            worker_git.exclude(place.cache, own)
        except BaseException:
            if made:  # bad input changes nothing: the worktree (and a branch made for it) go again
                worker_git.remove_worktree(place.cache, place.wt)
                if new_branch:
                    worker_git.git(["branch", "-q", "-D", branch], git_dir=place.cache)
            raise
        mkdir(place.socket.parent)
    return {"worktree": str(place.wt), "run_dir": str(place.run), "prompt_file": str(place.run / "prompt"),
            "socket": str(place.socket), "home": os.path.expanduser("~"), "restored": bool(made and checkpoint)}, None


def op_snapshot(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = locate(req)
    branch = validate_branch_name(field(req, "branch", str))
    have = [check_sha(s, "every 'have'") for s in field(req, "have", list, [])]
    with session_locked(place):
        if worker_git.worktree_branch(place.cache, place.wt) is None:
            raise ParaError(Code.not_found, f"session {place.session} has no worktree on this worker")
        answer, args = worker_git.snapshot(place.cache, place.wt, mkdir(place.run), place.session, branch, have,
                                           own_files(place))
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
    place = locate(req)
    message = field(req, "message", str)
    if not message.strip() or "\0" in message:
        raise bad("'message' is empty or holds a NUL")
    with session_locked(place):
        return worker_git.commit(_worktree(place), message, own_files(place)), None


def op_merge(req: dict[str, Any], stdin: IO[bytes]) -> Reply:
    place = locate(req)
    target = field(req, "target", str)
    if not SHA_RE.fullmatch(target):
        refname(target)
    if not place.cache.is_dir():
        raise ParaError(Code.not_found, f"the worker has no cache for this repository ({place.cache})")
    bundle = read_payload(req, stdin, place.cache)  # before the lock, like receive
    try:
        with session_locked(place):
            wt = _worktree(place)
            if bundle.stat().st_size:
                worker_git.unbundle(place.cache, bundle)
            return worker_git.merge(place.cache, wt, place.session, target), None
    finally:
        bundle.unlink(missing_ok=True)


def op_release(req: dict[str, Any], _stdin: IO[bytes]) -> Reply:
    place = locate(req)
    branch = validate_branch_name(field(req, "branch", str))
    with session_locked(place) if place.run.is_dir() else contextlib.nullcontext():
        if is_running(place):  # (checked under the lock that start takes)
            raise ParaError(Code.wrong_state, f"session {place.session}'s agent is still running "
                            f"(runner pid {runner_of(place)[0]}): stop it first")
        if place.cache.is_dir():
            with locked(place.cache):
                worker_git.release(place.cache, place.wt, place.session, branch)
        elif place.wt.exists():
            shutil.rmtree(place.wt)
        shutil.rmtree(place.run, ignore_errors=True)
        place.socket.unlink(missing_ok=True)
    return {}, None


OPS: dict[str, Callable[[dict[str, Any], IO[bytes]], Reply]] = {
    "check": op_check, "refs": op_refs, "receive": op_receive, "prepare": op_prepare, "start": op_start,
    "poll": op_poll, "poll_many": op_poll_many, "logs": op_logs, "stop": op_stop, "snapshot": op_snapshot,
    "commit": op_commit,
    "merge": op_merge, "release": op_release,
}


def handle(stdin: IO[bytes]) -> Reply:
    line = stdin.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise bad(f"the request line is longer than {MAX_LINE} bytes")
    try:
        req = json.loads(line)
    except ValueError as e:
        raise bad(f"the request is not JSON: {e}") from None
    if not isinstance(req, dict):
        raise bad("the request must be a JSON object")
    op = req.get("op")
    if op not in OPS:
        raise bad(f"unknown op {op!r:.80}; this worker knows {', '.join(OPS)}")
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
