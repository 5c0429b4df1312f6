"""The git steps of the worker (worker.py): its bare per-repo cache and the session worktrees.

Stdlib only, like the worker. Every git runs from an argv list with hooks and fsmonitor off and
without the caller's GIT_* environment, so neither a repository's files nor what an agent put in
the cache's configuration makes the worker run a command it did not choose. Optional locks are
off too: no read of a worktree may refresh the agent's index behind its back (the checkpoint
works on a private copy of it for the same reason).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from para_rpc.errors import Code, ParaError

SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]
# para's own commits (checkpoints) carry a fixed identity: a worker host need not configure one
PARA_IDENTITY = {"GIT_AUTHOR_NAME": "para", "GIT_AUTHOR_EMAIL": "para@localhost",
                 "GIT_COMMITTER_NAME": "para", "GIT_COMMITTER_EMAIL": "para@localhost"}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    env.update(extra or {})
    return env


def git(args: list[str], *, cwd: Path | None = None, git_dir: Path | None = None,
        env: dict[str, str] | None = None, data: bytes | None = None,
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    argv = ["git", *SAFE, *(["--git-dir", str(git_dir)] if git_dir else []), *args]
    out = subprocess.run(argv, cwd=cwd, env=_env(env), input=b"" if data is None else data,
                         capture_output=True, check=False)
    if check and out.returncode != 0:
        why = out.stderr.decode(errors="replace").strip().splitlines()
        raise ParaError(Code.git_failed, f"git {args[0]} failed on the worker: {why[-1] if why else out.returncode}")
    return out


def text(args: list[str], *, cwd: Path | None = None, git_dir: Path | None = None,
         env: dict[str, str] | None = None) -> str:
    return git(args, cwd=cwd, git_dir=git_dir, env=env).stdout.decode().strip()


def refs(cache: Path) -> dict[str, str]:
    out = text(["for-each-ref", "--format=%(objectname) %(refname)"], git_dir=cache)
    return {name: sha for sha, _, name in (line.partition(" ") for line in out.splitlines())}


def existing(cache: Path, shas: list[str]) -> list[str]:
    """The commits among `shas` that the cache has."""
    if not shas:
        return []
    out = git(["cat-file", "--batch-check=%(objectname) %(objecttype)"], git_dir=cache,
              data="".join(f"{s}\n" for s in shas).encode()).stdout.decode()
    return [line.split()[0] for line in out.splitlines() if line.endswith(" commit")]


def init_cache(cache: Path) -> None:
    git(["init", "--bare", "-q", str(cache)])


def exclude(cache: Path, paths: list[str]) -> None:
    """Keep para's own files in a worktree (the agent's instructions) out of its agent's
    `git add -A`: anchored lines in the cache's info/exclude, which every worktree of it reads
    (the sidecar does the same in the user's repository)."""
    path = cache / "info" / "exclude"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    have = set(text.splitlines())
    missing = [line for line in ("/" + re.sub(r"([*?[\\!#])", r"\\\1", p) for p in paths) if line not in have]
    if missing:
        tmp = path.with_name(f".exclude.{os.getpid()}.tmp")
        tmp.write_text(text + ("" if not text or text.endswith("\n") else "\n") + "\n".join(missing) + "\n")
        os.replace(tmp, path)


def unbundle(cache: Path, bundle: Path) -> None:
    """Add the bundle's objects to the cache (no ref moves); refuse a bundle that is not one or
    whose prerequisites the cache lacks."""
    verify = git(["bundle", "verify", "-q", str(bundle)], git_dir=cache, check=False)
    if verify.returncode != 0:
        why = verify.stderr.decode(errors="replace").strip().splitlines()
        raise ParaError(Code.invalid_input, f"the payload is not a bundle this cache can take: "
                        f"{why[-1] if why else 'git bundle verify failed'}")
    git(["bundle", "unbundle", str(bundle)], git_dir=cache)


def set_refs(cache: Path, wanted: dict[str, str]) -> None:
    """Point every ref at its commit in one transaction; none moves unless all commits exist."""
    missing = sorted(set(wanted.values()) - set(existing(cache, sorted(set(wanted.values())))))
    if missing:
        raise ParaError(Code.not_found, f"the cache has no commit {missing[0]}: send it in the bundle")
    out = text(["worktree", "list", "--porcelain"], git_dir=cache)
    busy = sorted(set(wanted) & {line[len("branch "):] for line in out.splitlines() if line.startswith("branch ")})
    if busy:  # moving it would change the files under a working agent
        raise ParaError(Code.wrong_state, f"{busy[0]} is checked out in a session's worktree on this worker; "
                        "it moves only by that session's own work")
    if wanted:
        git(["update-ref", "--stdin"], git_dir=cache,
            data="".join(f"update {r} {s}\n" for r, s in wanted.items()).encode())


def worktree_branch(cache: Path, wt: Path) -> str | None:
    """The branch checked out in the registered worktree `wt` ("" when detached), None if `wt`
    is not a worktree of the cache."""
    out = text(["worktree", "list", "--porcelain"], git_dir=cache)
    for block in out.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0] == f"worktree {wt}":
            return next((line[len("branch refs/heads/"):] for line in lines
                         if line.startswith("branch refs/heads/")), "")
    return None


def add_worktree(cache: Path, wt: Path, branch: str, commit: str) -> bool:
    """Check out `commit` in a new worktree on `branch`; whether the branch was made for it."""
    if not existing(cache, [commit]):
        raise ParaError(Code.not_found, f"the cache has no commit {commit}: receive it first")
    tip = git(["rev-parse", "--verify", "-q", f"refs/heads/{branch}"], git_dir=cache, check=False)
    have = tip.stdout.decode().strip()
    if tip.returncode != 0:
        git(["worktree", "add", "-q", "-b", branch, str(wt), commit], git_dir=cache)
        return True
    if have == commit:
        git(["worktree", "add", "-q", str(wt), branch], git_dir=cache)
        return False
    raise ParaError(Code.wrong_state, f"branch {branch} already exists in the worker's cache at {have}, "
                    f"not {commit}: release the session there first")


def head_of(wt: Path) -> str | None:
    got = git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=wt, check=False)
    return got.stdout.decode().strip() or None if got.returncode == 0 else None


def descends(cache: Path, head: str | None, commit: str) -> bool:
    """Whether `head` is `commit` or has it in its history."""
    return head is not None and git(["merge-base", "--is-ancestor", commit, head], git_dir=cache,
                                    check=False).returncode == 0


def restore(cache: Path, wt: Path, checkpoint: str, commit: str) -> None:
    """The uncommitted work a checkpoint holds, back as uncommitted changes in the new worktree
    `wt` at `commit` (the checkpoint's parent): files from the checkpoint, index at `commit`."""
    if not existing(cache, [checkpoint]):
        raise ParaError(Code.not_found, f"the cache has no checkpoint {checkpoint}: receive it first")
    parent = git(["rev-parse", "--verify", "-q", f"{checkpoint}^1"], git_dir=cache, check=False)
    if parent.stdout.decode().strip() != commit:
        raise ParaError(Code.invalid_input, f"checkpoint {checkpoint} was not made on {commit}")
    git(["read-tree", "-u", "--reset", checkpoint], cwd=wt)
    git(["read-tree", "--reset", commit], cwd=wt)


def remove_worktree(cache: Path, wt: Path) -> None:
    if worktree_branch(cache, wt) is not None:
        git(["worktree", "remove", "--force", "--force", str(wt)], git_dir=cache, check=False)
    if wt.exists():
        shutil.rmtree(wt)
    git(["worktree", "prune"], git_dir=cache)


def _identity(wt: Path) -> dict[str, str]:
    """The worker's own git identity, or para's when it has none (a bare host still commits)."""
    got = git(["config", "user.email"], cwd=wt, check=False)
    return {} if got.returncode == 0 and got.stdout.strip() else PARA_IDENTITY


def stage_all(wt: Path, own: list[str], env: dict[str, str] | None = None) -> None:
    """Stage everything but ignored files and the files para wrote (`own`: they are para's, like
    git.OWN_FILES locally, and never part of the agent's commits or checkpoints)."""
    git(["add", "-A"], cwd=wt, env=env)
    if own:
        git(["reset", "-q", "--", *own], cwd=wt, env=env, check=False)


def _tree_of_worktree(wt: Path, index: Path, own: list[str]) -> str:
    """The tree of everything in `wt` (tracked and untracked, not ignored), built in the private
    `index` from a copy of the agent's: only changed files are hashed again, theirs is untouched."""
    agent_index = Path(text(["rev-parse", "--git-path", "index"], cwd=wt))
    agent_index = agent_index if agent_index.is_absolute() else wt / agent_index
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        shutil.copyfile(agent_index, index)
    except FileNotFoundError:
        git(["read-tree", "HEAD"], cwd=wt, env=env)
    stage_all(wt, own, env)
    return text(["write-tree"], cwd=wt, env=env)


def snapshot(cache: Path, wt: Path, run_dir: Path, session: str, branch: str,
             have: list[str], own: list[str]) -> tuple[dict[str, object], list[str]]:
    """Record HEAD and a checkpoint of uncommitted work as refs in the cache. Returns the answer
    and the bundle arguments (refs minus the commits the other side has), [] when nothing is new."""
    head = text(["rev-parse", "--verify", "HEAD^{commit}"], cwd=wt)
    tip_out = git(["rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}"], cwd=wt, check=False)
    tip = tip_out.stdout.decode().strip() if tip_out.returncode == 0 else None
    index = run_dir / "checkpoint.index"
    try:
        tree = _tree_of_worktree(wt, index, own)
    finally:
        index.unlink(missing_ok=True)
    dirty = tree != text(["rev-parse", "HEAD^{tree}"], cwd=wt)
    head_ref, cp_ref = f"refs/para/head/{session}", f"refs/para/checkpoint/{session}"
    checkpoint = None
    if dirty:
        # the same work again keeps its checkpoint: an unchanged dirty worktree brings nothing new
        last = git(["log", "-1", "--format=%H %T %P", cp_ref, "--"], git_dir=cache, check=False).stdout.decode().split()
        if last[1:] == [tree, head]:
            checkpoint = last[0]
        else:
            checkpoint = text(["commit-tree", tree, "-p", head, "-m", f"para checkpoint {session}"],
                              cwd=wt, env=PARA_IDENTITY)
            git(["update-ref", cp_ref, checkpoint], git_dir=cache)
    else:
        git(["update-ref", "-d", cp_ref], git_dir=cache)
    git(["update-ref", head_ref, head], git_dir=cache)
    wanted = [r for r in (f"refs/heads/{branch}" if tip else None, head_ref, cp_ref if dirty else None) if r]
    known = existing(cache, sorted(set(have)))
    new = text(["rev-list", "--count", *wanted, *(f"^{s}" for s in known)], git_dir=cache)
    answer: dict[str, object] = {"head": head, "branch_tip": tip, "checkpoint": checkpoint, "dirty": dirty}
    return answer, ([*wanted, *(f"^{s}" for s in known)] if int(new) else [])


def create_bundle(cache: Path, dest: Path, args: list[str]) -> None:
    git(["bundle", "create", "-q", str(dest), *args], git_dir=cache)


def commit(wt: Path, message: str, own: list[str]) -> dict[str, object]:
    stage_all(wt, own)
    staged = git(["diff", "--cached", "--quiet"], cwd=wt, check=False).returncode != 0
    if staged:
        git(["commit", "-q", "--no-verify", "-m", message], cwd=wt, env=_identity(wt))
    return {"head": text(["rev-parse", "HEAD"], cwd=wt), "committed": staged}


def merge(cache: Path, wt: Path, session: str, target: str) -> dict[str, object]:
    """Merge `target` into the worktree where the agent is; a conflict leaves its markers there."""
    got = git(["rev-parse", "--verify", "-q", f"{target}^{{commit}}"], git_dir=cache, check=False)
    if got.returncode != 0:
        raise ParaError(Code.not_found, f"the worker's cache has no commit {target}: send it in the bundle")
    sha = got.stdout.decode().strip()
    git(["update-ref", f"refs/para/target/{session}", sha], git_dir=cache)  # kept from gc until release
    out = git(["merge", "--no-edit", sha], cwd=wt, env=_identity(wt), check=False)
    conflicted = [p for p in git(["diff", "--name-only", "-z", "--diff-filter=U"], cwd=wt)
                  .stdout.decode(errors="surrogateescape").split("\0") if p]
    if out.returncode != 0 and not conflicted:
        why = (out.stderr or out.stdout).decode(errors="replace").strip().splitlines()
        raise ParaError(Code.git_failed, f"git merge failed on the worker: {why[-1] if why else out.returncode}")
    return {"head": text(["rev-parse", "HEAD"], cwd=wt), "conflicted": conflicted}


def release(cache: Path, wt: Path, session: str, branch: str) -> None:
    remove_worktree(cache, wt)
    git(["branch", "-q", "-D", branch], git_dir=cache, check=False)  # (already gone is fine)
    # (base: where the sidecar's receive put the session's start)
    for ref in (f"refs/para/{kind}/{session}" for kind in ("checkpoint", "head", "target", "base", "restore")):
        git(["update-ref", "-d", ref], git_dir=cache, check=False)
