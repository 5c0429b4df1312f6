"""A repository Para used becomes para's on first contact: each of Para's session state files
(`.para/state/<name>.state`: JSON with name, branch, worktree_path, created_at and status
Active|Finished|Cancelled) becomes a session with its worktree, branch or archive and its
creation time. `para/adopt` runs the same again and says what was adopted and what was left,
and why. Nothing of Para's is changed or deleted: its state files stay where they are, and a
state file is read again only for a name para has never had a session of."""

from __future__ import annotations

import datetime
import logging
import os
from typing import TYPE_CHECKING, Any

import msgspec

from para_rpc import git, runtime
from para_rpc.errors import Code, ParaError
from para_rpc.model import Session, Status
from para_rpc.names import validate_branch_name, validate_session_name
from para_rpc.params import RepoParams
from para_rpc.service.core import Repo, ServiceCore

log = logging.getLogger("para.service")

STATE_LIMIT = 64 * 1024   # a Para state file is a few hundred bytes
MAX_STATE_FILES = 1000


class ParaState(msgspec.Struct):
    """The fields of a Para state file that para takes over (others are ignored)."""
    name: str
    branch: str
    worktree_path: str
    status: str
    created_at: str | None = None


class Adopting(ServiceCore):
    """Para's sessions, taken over."""

    if TYPE_CHECKING:  # what it calls on the other parts of Service (Sessions)
        async def _adopt(self, repo: Repo, name: str, branch: str, tip: str, worktree: str | None,
                         cfg: dict[str, Any], note: str) -> Session: ...
        async def _adopt_archive(self, repo: Repo, name: str, archive: str, cfg: dict[str, Any], note: str,
                                 save: bool = True) -> Session: ...

    async def adopt(self, p: RepoParams) -> dict[str, Any]:
        repo = await self.repo(p.cwd)
        return await self._adopt_para(repo, repo.config(p.env))

    async def _adopt_para_on_open(self, repo: Repo) -> None:
        """First contact: adopt what Para left; a failure leaves the repository usable (and
        `para adopt` reports it)."""
        if not os.path.isdir(_state_dir(repo)):
            return
        try:
            report = await self._adopt_para(repo, repo.config({}))
        except ParaError as e:
            log.warning("adopting Para's sessions of %s failed: %s", repo.root, e.message)
            return
        if report["adopted"] or report["left"]:
            log.info("%s: adopted %d of Para's sessions, left %d", repo.root, len(report["adopted"]),
                     len(report["left"]))

    async def _adopt_para(self, repo: Repo, cfg: dict[str, Any]) -> dict[str, Any]:
        state_dir = _state_dir(repo)
        adopted: list[dict[str, Any]] = []
        left: list[dict[str, Any]] = []
        known: list[str] = []
        files = sorted(f for f in os.listdir(state_dir) if f.endswith(".state")) if os.path.isdir(state_dir) else []
        for f in files[:MAX_STATE_FILES]:
            path = os.path.join(state_dir, f)
            try:
                st = _read_state(path, within=state_dir)
            except ParaError as e:
                left.append({"file": path, "session": f[:-len(".state")], "why": e.message})
                continue
            async with repo.session_lock(st.name):
                if any(x.name == st.name for x in repo.store.all()):
                    known.append(st.name)
                    continue
                try:
                    s = await self._adopt_para_session(repo, st, path, cfg)
                except ParaError as e:
                    left.append({"file": path, "session": st.name, "why": e.message})
                    continue
            adopted.append({"session": s.name, "status": s.status.value, "para_status": st.status,
                            "branch": s.branch, "archived_branch": s.archived_branch,
                            "worktree": s.worktree if s.status is Status.active else None, "file": path})
        for f in files[MAX_STATE_FILES:]:
            left.append({"file": os.path.join(state_dir, f), "session": f[:-len(".state")],
                         "why": f"more than {MAX_STATE_FILES} state files: run `para adopt` again"})
        return {"state_dir": state_dir, "adopted": adopted, "already": known, "left": left}

    async def _adopt_para_session(self, repo: Repo, st: ParaState, path: str, cfg: dict[str, Any]) -> Session:
        note = f"adopted from Para's state file {path} (Para's status: {st.status})"
        heads = await git.refs(repo.root, "refs/heads/")
        owner = next((x.name for x in repo.store.live() if st.branch in (x.branch, x.archived_branch)), None)
        if owner is not None:
            raise ParaError(Code.already_exists, f"its branch {st.branch} belongs to para's session {owner!r}")
        if st.branch != f"{cfg['branch_prefix']}/{st.name}":
            # Only a branch para itself would use for that name: a state file naming `main` or
            # `develop` would otherwise have cancel rename it away.
            raise ParaError(Code.invalid_input, f"its branch {st.branch} is not {cfg['branch_prefix']}/{st.name}, "
                            "the session branch para would use (branch_prefix)")
        wts = await self._worktree_state(repo)
        base = (await self._base(repo, None, cfg))[0]
        main_branch = next((w.branch for w in wts.values() if w.path == repo.root), None)
        if st.branch in (base, main_branch):
            # A session is never the main checkout or the branch work lands on: cancelling
            # it would commit the user's uncommitted work there.
            raise ParaError(Code.wrong_state, f"its branch {st.branch} is the base branch or the main checkout's")
        if st.status == "Cancelled":
            prefix = cfg["branch_prefix"]
            archives = sorted(r[len("refs/heads/"):] for r in heads
                              if r.startswith(f"refs/heads/{prefix}/archived/") and r.endswith("/" + st.name))
            if not archives:
                raise ParaError(Code.not_found, f"cancelled by Para, and no archived branch "
                                f"{prefix}/archived/*/{st.name} is left to recover it from")
            s = await self._adopt_archive(repo, st.name, archives[-1], cfg, note)
        else:
            tip = heads.get(f"refs/heads/{st.branch}", (None, 0))[0]
            if tip is None:
                raise ParaError(Code.not_found, f"its branch {st.branch} no longer exists")
            wt = wts.get(os.path.realpath(st.worktree_path))
            if wt is None or wt.prunable or wt.branch != st.branch or wt.path == repo.root:
                wt = next((w for w in wts.values() if w.branch == st.branch and not w.prunable
                           and w.path != repo.root), None)
            s = await self._adopt(repo, st.name, st.branch, tip, wt.path if wt else None, cfg, note)
        s.extra["para_state"] = path
        s.created_at = _parse_time(st.created_at) or s.created_at
        repo.store.save(s)
        return s


def _state_dir(repo: Repo) -> str:
    return os.path.join(repo.root, ".para", "state")


def _read_state(path: str, within: str) -> ParaState:
    data = runtime.read_regular(path, what="Para's state file", code=Code.invalid_input, limit=STATE_LIMIT,
                                within=within)
    try:
        st = msgspec.json.decode(data or b"", type=ParaState)
    except msgspec.DecodeError as e:
        raise ParaError(Code.invalid_input, f"not a Para state file: {e}") from None
    validate_session_name(st.name)
    validate_branch_name(st.branch)
    if os.path.basename(path) != f"{st.name}.state":
        raise ParaError(Code.invalid_input, f"names session {st.name!r}, not the one its file name says")
    if st.status not in ("Active", "Finished", "Cancelled"):
        raise ParaError(Code.invalid_input, f"unknown Para status {st.status!r}")
    return st


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        t = datetime.datetime.fromisoformat(text)  # (Python 3.11 reads a trailing Z as UTC)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return t.timestamp()
