"""The integration engine: how a session's work lands on a target branch.

Nothing here switches or dirties anyone's checkout. The merged result is
computed with `git merge-tree --write-tree` (squash, merge) or, for rebase, in
the session's own worktree; the target then moves with a compare-and-swap
`update-ref`. A worktree that has the target checked out is brought along
with `read-tree -m -u old new` (what `checkout` does), which keeps its
uncommitted changes; if they touch files the integration changes, nothing
moves at all. Conflicts are materialized only in the session's worktree.
The service decides when to call what (queue, state, events); this module
only knows git.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import stat
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from para_rpc import git
from para_rpc.errors import Code, ParaError

STRATEGIES = ("squash", "merge", "rebase", "ff")
# One line of a conflict marker: `<<<<<<< ours`, `=======`, `>>>>>>> theirs`, `||||||| base`
# (CRLF files keep their `\r`).
_MARKER = re.compile(rb"(?:<{7}|={7}|>{7}|\|{7})(?: .*)?\r?")
CHECK_OUTPUT_LIMIT = 20_000
# Conflicted files are read from session worktrees, which agents write: only regular
# files (never through a symlink, never a FIFO or device), at most this many bytes.
READ_LIMIT = 16 * 1024 * 1024
log = logging.getLogger("para.integrate")


@dataclass
class Candidate:
    """What the target would become: `commit` when clean, else the conflicting paths."""

    clean: bool
    commit: str | None = None
    tree: str | None = None
    conflicts: list[str] = field(default_factory=list)
    hunks: dict[str, list[list[int]]] = field(default_factory=dict)


def marker_ranges(data: bytes) -> list[list[int]]:
    """1-based [start, end] line ranges of conflict blocks (<<<<<<< ... >>>>>>>)."""
    ranges, start = [], None
    for n, line in enumerate(data.split(b"\n"), 1):
        if line.startswith(b"<<<<<<<"):
            start = n
        elif line.startswith(b">>>>>>>") and start is not None:
            ranges.append([start, n])
            start = None
    return ranges


async def tree_hunks(root: str, tree: str, paths: list[str]) -> dict[str, list[list[int]]]:
    """Conflict block ranges of files inside a merge-tree result tree."""
    blobs = await asyncio.gather(*(git.show_blob(root, f"{tree}:{p}") for p in paths))
    return {p: marker_ranges(b) for p, b in zip(paths, blobs)}


def read_regular(wt: str, path: str, limit: int = READ_LIMIT) -> bytes | None:
    """The first `limit` bytes of `path` in the worktree if it is a regular file inside it;
    None for anything else (missing, a symlink, a FIFO, a device, a path through a symlinked
    directory). Blocking: call it from a worker thread."""
    full, top = os.path.join(wt, path), os.path.realpath(wt)
    parent = os.path.realpath(os.path.dirname(full))
    if parent != top and not parent.startswith(top + os.sep):
        return None
    try:
        if not stat.S_ISREG(os.lstat(full).st_mode):
            return None
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the lstat and the open
            return None
        return f.read(limit)


async def worktree_hunks(wt: str, paths: list[str]) -> dict[str, list[list[int]]]:
    """Conflict block ranges of the conflicted files in a worktree ([] where there are none to
    show: deleted, binary, a symlink, a submodule), read off the event loop."""
    def read() -> dict[str, list[list[int]]]:
        return {p: marker_ranges(read_regular(wt, p) or b"") for p in paths}
    return await asyncio.to_thread(read)


async def new_marker_files(wt: str, commit: str, paths: list[str]) -> list[str]:
    """Those of `paths` whose worktree file has more conflict blocks than its version in
    `commit`: what a merge or rebase stopped on its conflicts wrote there."""
    data = await asyncio.to_thread(lambda: {p: read_regular(wt, p) for p in paths})
    found = []
    for p in paths:
        here = len(marker_ranges(data[p] or b""))
        if here and here > len(marker_ranges(await git.show_blob(wt, f"{commit}:{p}"))):
            found.append(p)
    return found


async def remaining_markers(wt: str, paths: list[str], sides: list[str]) -> list[str]:
    """`path:line` of conflict markers still present in the given files. A marker-like line
    counts only when the file has more copies of it than either side of the merge has
    (`sides`: commits, or index stages like `:2`, whose version of the file is content), so a
    reStructuredText title underlined with `=======` is content, and a stray `=======` left
    from a conflict is not. Symlinks and other non-regular files are never read."""
    data = await asyncio.to_thread(lambda: {p: read_regular(wt, p) for p in paths})
    found = []
    for p in paths:
        lines = (data[p] or b"").split(b"\n")
        marks = [(n, line.rstrip(b"\r")) for n, line in enumerate(lines, 1) if _MARKER.fullmatch(line)]
        if not marks:
            continue
        here = Counter(line for _, line in marks)
        allowed: Counter[bytes] = Counter()
        for side in sides:
            blob = await git.show_blob(wt, f"{side}:{p}")
            allowed |= Counter(line.rstrip(b"\r") for line in blob.split(b"\n") if _MARKER.fullmatch(line))
        found += [f"{p}:{n}" for n, line in marks if here[line] > allowed[line]]
    return found


async def candidate(root: str, strategy: str, old: str, tip: str, message: str, sign: bool = False,
                    old_tree: str | None = None) -> Candidate:
    """The commit `target` (at `old`) would move to, computed without any checkout.
    For rebase this is a forecast only (a rebase replays commit by commit). With `sign`, a new
    commit is signed (`git.signs_commits`). `old_tree`, the tree of `old` when the caller has
    it, saves asking git whether `tip` is already in `old` when the merge says it cannot be."""
    if (old_tree is None or strategy in ("ff", "rebase")) and await git.is_ancestor(root, tip, old):
        return Candidate(True, old, old_tree or await git.tree_of(root, old))  # nothing new
    if strategy in ("ff", "rebase") and await git.is_ancestor(root, old, tip):
        return Candidate(True, tip, await git.tree_of(root, tip))
    if strategy == "ff":
        raise ParaError(Code.wrong_state, "the target has moved since the session forked, so it cannot be "
                        "fast-forwarded; use --strategy squash, merge or rebase")
    clean, tree, files = await git.merge_tree(root, old, tip)
    # (With `tip` in `old`, the merge is `old`'s tree: a merge with another tree has something new.)
    if clean and tree == old_tree and await git.is_ancestor(root, tip, old):
        return Candidate(True, old, old_tree)  # nothing new
    if not clean:
        return Candidate(False, tree=tree, conflicts=files, hunks=await tree_hunks(root, tree, files))
    if strategy == "rebase":
        return Candidate(True, None, tree)
    parents = [old] if strategy == "squash" else [old, tip]
    return Candidate(True, await git.commit_tree(root, tree, parents, message, sign=sign), tree)


async def merge_target_into(wt: str, old: str, message: str) -> list[str]:
    """Merge the target commit into the session worktree to stop on its conflicts
    there; returns the conflicted paths (empty if the merge went through)."""
    res = await git.run(wt, "merge", "--no-ff", "--no-commit", "-m", message, old, check=False)
    unmerged = await git.unmerged_paths(wt)
    if res.rc != 0 and not unmerged:
        await git.run(wt, "merge", "--abort", check=False)
        raise ParaError(Code.git_failed, f"git merge failed in {wt}: {res.err.strip() or res.out.strip()}")
    if not unmerged and await git.in_progress(wt) == "merge":
        await git.commit(wt, message)
    return unmerged


async def rebase_onto(wt: str, old: str) -> list[str]:
    """Rebase the session worktree onto the target; returns the conflicted paths of
    the commit it stopped at (empty when the rebase completed)."""
    res = await git.run(wt, "rebase", "--no-autostash", old, check=False)
    if res.rc == 0:
        return []
    unmerged = await git.unmerged_paths(wt)
    if not unmerged:
        await git.run(wt, "rebase", "--abort", check=False)
        raise ParaError(Code.git_failed, f"git rebase failed in {wt}: {res.err.strip() or res.out.strip()}")
    return unmerged


async def check_rebase_todo(wt: str, picks: Collection[str]) -> None:
    """What is left of a rebase para started is its picks of the session's commits (`picks`),
    nothing else: the todo list is in the worktree's git dir, which a sandboxed agent writes, and
    an `exec` line planted there would run in the sidecar, as the user (red team rt13 R1)."""
    path = await git.git_path(wt, "rebase-merge/git-rebase-todo")
    try:
        text = await asyncio.to_thread(git.read_regular, path, 1 << 22)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ParaError(Code.wrong_state, f"cannot read the rebase's todo list: {e}; `para abort` goes back",
                        path=path) from None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#") or words[0] in ("noop",):
            continue
        sha = words[1] if len(words) > 1 else ""
        ok = (words[0] in ("pick", "p", "drop", "d") and len(sha) >= 7
              and all(c in "0123456789abcdef" for c in sha) and any(c.startswith(sha) for c in picks))
        if not ok:
            raise ParaError(Code.wrong_state, f"the rebase's todo list ({path}) holds {line[:200]!r}, which para "
                            "did not write (only picks of the session's own commits): nothing was run. "
                            "`para abort` goes back to before the integration", path=path, line=line[:200])


async def continue_in(wt: str, kind: str, files: list[str], hunks: dict[str, list[list[int]]],
                      sides: list[str], force: bool = False, picks: Collection[str] = ()) -> list[str]:
    """Complete a stopped merge or rebase once the conflicts are resolved.
    Returns the paths of a new conflict (a rebase may stop again), else [].

    Nothing is taken as resolved that nobody resolved: a file whose conflict had text
    markers is resolved once they are gone; any other path git still lists as unmerged
    (binary, modify/delete, rename, file/directory, submodule: nothing to edit away) must
    have been staged by someone (`git add`/`git rm`), as `git commit` requires. `force`
    stages everything as it is instead. The merge commit runs the repository's commit
    hooks, as `git commit` would. A rebase continues only while its todo list picks `picks`
    (the session's commits) and nothing else (`check_rebase_todo`)."""
    if not force:
        markers = await remaining_markers(wt, files, sides)
        if markers:
            raise ParaError(Code.conflict, "conflict markers remain: " + ", ".join(markers[:20])
                            + f"; edit them away in {wt} (if those lines are meant to be there, "
                            "`para continue --force`)", markers=markers)
        unmerged = await git.unmerged_paths(wt)

        def not_edited() -> list[str]:
            return [p for p in unmerged if not (hunks.get(p) and read_regular(wt, p, 0) is not None)]
        unresolved = await asyncio.to_thread(not_edited)
        if unresolved:
            raise ParaError(Code.conflict, f"{len(unresolved)} conflicted path(s) were not resolved: "
                            + ", ".join(unresolved[:20]) + ". They have no conflict markers to edit "
                            "(binary, deleted, renamed, file/directory or submodule conflicts): in "
                            f"{wt}, choose a version and stage it (`git checkout --ours|--theirs PATH` then "
                            "`git add PATH`, or `git rm PATH`), then `para continue` again; "
                            "`para continue --force` stages everything as it is", files=unresolved)
    await git.stage_all(wt)
    left = await git.unmerged_paths(wt)
    if left:
        raise ParaError(Code.conflict, "unmerged paths remain: " + ", ".join(left), files=left)
    if kind == "merge":
        res = await git.run(wt, "commit", "--no-edit", "--quiet", check=False)
        if res.rc != 0:
            raise ParaError(Code.git_failed, f"git commit of the resolution failed in {wt}: "
                            f"{res.err.strip() or res.out.strip()}", stderr=res.err.strip())
        return []
    step = "--continue"
    while True:
        await check_rebase_todo(wt, picks)
        res = await git.run(wt, "rebase", step, check=False)
        if res.rc == 0:
            return []
        stopped = await git.unmerged_paths(wt)
        if stopped:
            return stopped
        if await git.in_progress(wt) != "rebase":
            raise ParaError(Code.git_failed, f"git rebase {step} failed: {res.err.strip()}")
        step = "--skip"  # the replayed commit became empty: its change is already in the target


async def abort_in(wt: str, restore: str) -> None:
    """Stop whatever is in progress in the worktree and put HEAD back at `restore`."""
    kind = await git.in_progress(wt)
    if kind:
        await git.run(wt, kind, "--abort", check=False)
    await git.run(wt, "reset", "--hard", "--quiet", restore)


async def holder_of(root: str, branch: str) -> git.Worktree | None:
    for w in await git.worktrees(root):
        if w.branch == branch and not w.prunable:
            return w
    return None


def main_checkout_on(common_dir: str, branch: str) -> bool | None:
    """Whether the main checkout's HEAD file names `branch` now (no git process); None when
    the file cannot say (git.symbolic_ref_file)."""
    try:
        return git.symbolic_ref_file(common_dir, "HEAD") == branch
    except LookupError:
        return None


def _holder_in(listed: list[git.Worktree], branch: str) -> str | None:
    return next((w.path for w in listed if w.branch == branch and not w.prunable), None)


def linked_checkout_on(wt: str, branch: str) -> bool | None:
    """main_checkout_on for a linked worktree: the HEAD file in the git directory its `.git`
    file names (no git process); None when the files cannot say."""
    try:
        text = git.read_regular(os.path.join(wt, ".git"), 8192)
        if not text.startswith("gitdir:"):
            return None
        return git.symbolic_ref_file(os.path.join(wt, text[len("gitdir:"):].strip()), "HEAD") == branch
    except (OSError, UnicodeDecodeError, LookupError):
        return None


async def check_target_checkout(root: str, branch: str, old: str, new: str,
                                listed: list[git.Worktree] | None = None,
                                common_dir: str | None = None,
                                dirty: dict[str, set[str]] | None = None) -> git.Worktree | None:
    """Refuse (changing nothing) when the worktree that has `branch` checked out holds
    uncommitted changes to files this integration changes. (`listed`: `git.worktrees(root)`
    read by the caller while it held the target's queue; `common_dir`: the repository's, which
    is the main worktree's git dir; `dirty`: {worktree: `git.dirty_paths` of it} the caller
    read while it held the queue too.)"""
    if listed is not None and common_dir is not None:
        held, main_path = _holder_in(listed, branch), os.path.realpath(root)
        on = main_checkout_on(common_dir, branch)
        if on is not None and on != (held == main_path) \
                or held is not None and held != main_path and linked_checkout_on(held, branch) is False:
            # A checkout switched branch (to or from `branch`) since `listed` and `dirty` were
            # read: both are read again, so the checkout read-tree brings along is on `branch`.
            listed = dirty = None
    if listed is None:
        w = await holder_of(root, branch)
    else:
        w = next((w for w in listed if w.branch == branch and not w.prunable), None)
    if w is None:
        return None
    main = common_dir is not None and w.path == os.path.realpath(root)
    busy = await git.in_progress(w.path, common_dir if main else None)
    if busy:
        raise ParaError(Code.dirty, f"{w.path} has {branch} checked out with a {busy} in progress; "
                        "finish or abort it first", worktree=w.path)
    changed = dirty[w.path] if dirty is not None and w.path in dirty else await git.dirty_paths(w.path)
    # (A clean checkout has nothing in the way: what the integration changes is not asked.)
    overlap = sorted(changed & await git.changed_paths(root, old, new)) if changed else []
    links = await git.changed_gitlinks(root, old, new) if overlap else {}
    if links:
        # read-tree moves a submodule's pointer in the index, never the submodule's own
        # checkout: one that sits elsewhere (moved by the user, or left behind) loses
        # nothing, so it is only in the way when the user staged a pointer change.
        index = await git.index_entries(w.path, [p for p in overlap if p in links])
        overlap = [p for p in overlap if p not in links or index.get(p) != links[p][0]]
    if overlap:
        raise ParaError(Code.dirty, f"{w.path} has uncommitted changes to files this integration changes: "
                        + ", ".join(overlap[:20]) + "; commit or stash them, then integrate again",
                        worktree=w.path, files=overlap)
    return w


@dataclass
class Advanced:
    """What advance_target did besides moving the target: whether the refs it was to keep
    were made with the move (else the caller makes them), and what `old..new` changes
    ({path: kind}, as git.changed_path_kinds) when it read that, else None."""
    kept: bool
    changes: dict[str, str] | None


async def advance_target(root: str, branch: str, old: str, new: str, message: str,
                         listed: list[git.Worktree] | None = None, common_dir: str | None = None,
                         dirty: dict[str, set[str]] | None = None,
                         keep: dict[str, str] | None = None) -> Advanced:
    """Move `branch` from `old` to `new` (compare-and-swap) and bring a checkout of it along
    (`listed`, `common_dir`, `dirty`: as for check_target_checkout). `keep` ({ref: commit},
    none there yet: the backups of what lands) is made in the same transaction as the move,
    one git process for all, and deleted again by an undo; when git refuses them (a name
    taken meanwhile, a lock), the target moves alone and `kept` says so."""
    holder = await check_target_checkout(root, branch, old, new, listed, common_dir, dirty)
    # (What the integration modifies, read while the target moves: for `deleted_meanwhile`.)
    kinds = asyncio.ensure_future(git.changed_path_kinds(root, old, new)) if holder is not None else None
    kept = bool(keep)
    try:
        try:
            await git.update_ref(root, f"refs/heads/{branch}", new, old, message, create=keep)
        except ParaError as e:
            if not keep or e.data.get("moved"):
                raise
            log.info("the backups %s were not made with the move of %s: %s", sorted(keep), branch,
                     e.data.get("stderr") or e.message)
            kept = False
            await git.update_ref(root, f"refs/heads/{branch}", new, old, message)
    except ParaError as e:
        if kinds is not None:
            kinds.cancel()
        if e.data.get("moved"):  # the compare-and-swap lost: someone moved the target meanwhile
            raise ParaError(Code.busy, f"{branch} moved while integrating (someone committed to it); "
                            "integrate again", detail=e.message) from None
        raise ParaError(Code.git_failed, f"git refused to move {branch}: {e.data.get('stderr') or e.message}; "
                        f"{branch} did not move", detail=e.message, branch=branch) from None
    made = keep if kept else None  # (an undo takes them back with the target)
    path = holder.path if holder is not None else None
    if common_dir is not None and (path is None or path == os.path.realpath(root)):
        # The main checkout's HEAD file once more, just before its files are brought along:
        # one that left `branch` since it was checked is not touched (read-tree would stage
        # the landed change in another branch's checkout), one that came to it is brought along.
        on = main_checkout_on(common_dir, branch)
        path = os.path.realpath(root) if on or (on is None and path is not None) else None
    elif path is not None and linked_checkout_on(path, branch) is False:
        path = None  # (the same for a linked worktree that has left `branch`)
    if path is None and kinds is not None:
        kinds.cancel()  # (no checkout to bring along after all)
    listed_changes = None
    if path is not None:
        try:
            changes = listed_changes = await (kinds or git.changed_path_kinds(root, old, new))
        except ParaError as e:  # (the target has moved: its checkout is brought along all the same)
            log.warning("could not list what %s..%s changes: %s", old, new, e.message)
            changes = {}
        gone = await deleted_meanwhile(path, changes)
        there = in_the_way(path, changes)
        if gone or there:
            await _undo(root, branch, old, new, made)
            said = [f"{p} (deleted)" for p in gone] + [f"{p} (untracked or ignored, where it adds one)" for p in there]
            raise ParaError(Code.dirty, f"{path} has uncommitted changes to files this integration changes: "
                            + ", ".join(said[:20]) + "; commit, move or stash them, "
                            f"then integrate again ({branch} did not move)", worktree=path, files=sorted(gone + there))
        res = await git.run(path, "read-tree", "-m", "-u", old, new, check=False)
        if res.rc != 0:
            await _undo(root, branch, old, new, made)
            # (Mostly the user's edits since the status was read, as the queue took it: named
            # as check_target_checkout names them, git's words kept as the detail.)
            overlap = sorted(await git.dirty_paths(path) & set(changes)) if changes else []
            if overlap:
                raise ParaError(Code.dirty, f"{path} has uncommitted changes to files this integration changes: "
                                + ", ".join(overlap[:20]) + f"; commit or stash them, then integrate again "
                                f"({branch} did not move)", worktree=path, files=overlap, detail=res.err.strip())
            raise ParaError(Code.dirty, f"could not update the checkout of {branch} at {path}: "
                            f"{res.err.strip()}; nothing was changed", worktree=path)
        await follow_submodules(root, path, old, new)
    return Advanced(kept, listed_changes)


async def _undo(root: str, branch: str, old: str, new: str, made: dict[str, str] | None) -> None:
    """`branch` back from `new` to `old`, with the backups made with its move (`made`); one
    of those moved or deleted meanwhile does not keep the target from going back."""
    try:
        await git.update_ref(root, f"refs/heads/{branch}", old, new, "para: undo integration", delete=made)
    except ParaError as e:
        if not made or e.data.get("moved"):
            raise
        log.warning("the backups %s were not deleted with the undo of %s: %s", sorted(made), branch,
                    e.data.get("stderr") or e.message)
        await git.update_ref(root, f"refs/heads/{branch}", old, new, "para: undo integration")


def in_the_way(wt: str, kinds: dict[str, str]) -> list[str]:
    """Files the integration adds (`kinds`: git.changed_path_kinds) where the checkout `wt`
    already has something git does not track: an ignored file (`*.log`, `.env`, `build/`) is
    not in `git status`, and read-tree overwrites it with what lands without a word (git
    counts ignored files expendable), or replaces an ignored directory, or a file standing
    where the added file's directory goes. (An untracked one read-tree would refuse: said
    here the same way.) No git process: an lstat or so per added file."""
    deleted = {p for p, k in kinds.items() if k == "D"}
    found = []
    for p, k in kinds.items():
        if k != "A":
            continue
        if os.path.lexists(os.path.join(wt, p)):
            found.append(p)
            continue
        parent = os.path.dirname(p)
        while parent:  # (a file or symlink where its directory goes, which the integration keeps)
            full = os.path.join(wt, parent)
            if os.path.islink(full) or os.path.lexists(full) and not os.path.isdir(full):
                if parent not in deleted:
                    found.append(p)
                break
            parent = os.path.dirname(parent)
    return sorted(found)


async def deleted_meanwhile(wt: str, kinds: dict[str, str]) -> list[str]:
    """Files the integration modifies (`kinds`: git.changed_path_kinds) that the checkout `wt`
    no longer has, though its index does: deleted by the user since its status was read.
    read-tree would write them back without a word (it refuses only a file that is there and
    differs), undoing the user's deletion. (Sparse-checkout entries and submodules are not
    there by design: not counted.) No git process unless some such file is missing."""
    missing = [p for p, k in kinds.items() if k in ("M", "T") and not os.path.lexists(os.path.join(wt, p))]
    if not missing:
        return []
    res = await git.run(wt, "ls-files", "-z", "-t", "-s", "--", *missing, env={"GIT_LITERAL_PATHSPECS": "1"},
                        check=False)
    if res.rc != 0:  # (the target has moved already: a failure here must not leave it so, unsaid)
        return sorted(missing)
    text = res.out
    # `H <mode> <object> <stage>\t<path>`: tracked, not skip-worktree (S), not a gitlink
    return sorted(e.split("\t", 1)[1] for e in text.split("\0")
                  if "\t" in e and e.startswith("H ") and not e[2:].startswith("160000"))


async def follow_submodules(root: str, wt: str, old: str, new: str) -> None:
    """After a checkout moved from `old` to `new`, move its initialised submodules whose
    pointer changed and that sat, clean, at the old pointer (read-tree does not recurse).
    Only what is already fetched is used; a submodule that cannot follow stays where it is
    (check_target_checkout then does not hold it against the user)."""
    if not os.path.exists(os.path.join(wt, ".gitmodules")):
        return  # no submodules (the common case): no git call
    follow = []
    for path, (was, now) in (await git.changed_gitlinks(root, old, new)).items():
        sub = os.path.join(wt, path)
        if was is None or now is None or not os.path.exists(os.path.join(sub, ".git")):
            continue
        try:
            if await git.out(sub, "rev-parse", "HEAD") == was and not await git.status(sub):
                follow.append(path)
        except ParaError:
            continue
    if follow:
        res = await git.submodule_update(wt, follow)
        if res.rc != 0:
            log.warning("submodules %s in %s did not follow: %s", follow, wt, res.err.strip())


async def sync_checkout_after_crash(root: str, branch: str, old: str, new: str) -> tuple[str, str] | None:
    """A crash between update-ref and read-tree leaves the checkout of the target with the
    old files in its index and tree while its HEAD is already `new`: its `git status` shows
    the landed work staged as reverted. Bring it along now, as advance_target would have
    (`read-tree -m -u old new` keeps unrelated staged and unstaged changes). If git
    refuses (the user's changes are in the way), leave it untouched and return
    (worktree, git's reason), for the caller to report."""
    w = await holder_of(root, branch)
    if w is None:
        return None
    behind = await git.index_differs(w.path, new) & await git.changed_paths(root, old, new)
    if not behind:
        return None  # already brought along
    kinds = await git.changed_path_kinds(root, old, new)
    said = [f"{p} (deleted)" for p in await deleted_meanwhile(w.path, kinds)] \
        + [f"{p} (untracked or ignored, where the landing adds one)" for p in in_the_way(w.path, kinds)]
    if said:  # (as advance_target: read-tree would overwrite them, or write back what the user deleted)
        return w.path, "in the way: " + ", ".join(said[:20])
    res = await git.run(w.path, "read-tree", "-m", "-u", old, new, check=False)
    if res.rc != 0:
        return w.path, res.err.strip() or res.out.strip()
    await follow_submodules(root, w.path, old, new)
    return None


async def run_check(root: str, scratch_dir: str, commit: str, command: str,
                    timeout: float) -> tuple[bool, int | None, str]:
    """Run the configured check command on `commit` in a scratch worktree."""
    argv = shlex.split(command)
    path = os.path.join(scratch_dir, uuid.uuid4().hex[:12])
    os.makedirs(scratch_dir, exist_ok=True)
    await git.run(root, "worktree", "add", "--detach", "--quiet", path, commit)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=path, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
            rc = proc.returncode
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            rc = None
        text = out.decode("utf-8", "replace")
        if len(text) > CHECK_OUTPUT_LIMIT:
            text = "…" + text[-CHECK_OUTPUT_LIMIT:]
        return rc == 0, rc, text
    except FileNotFoundError:
        return False, 127, f"check command not found: {argv[0]}"  # 127: a shell's "not found"; None means timed out
    finally:
        await git.run(root, "worktree", "remove", "--force", path, check=False)
