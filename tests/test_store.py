"""The store hands out sessions as the database holds them, whoever wrote it.

`live` and `all` keep the rows they last read (a `list` at a hundred sessions spent a third of
its time reading the same rows again) and read them again once a session was written through
the store, or anything was committed by another connection: another process, a tool, a test.
Every caller gets sessions decoded afresh, so changing one changes nothing kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from para_rpc.model import Session, Status
from para_rpc.store import Store


def _session(name: str) -> Session:
    return Session(name=name, branch=f"para/{name}", worktree=f"/w/{name}", base_branch="main", base_commit="0" * 40)


def _other_connection(path: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql, args)


def _edit_doc(path: Path, name: str, **changes: object) -> None:
    with sqlite3.connect(path) as db:
        (doc,) = db.execute("SELECT doc FROM sessions WHERE name = ?", (name,)).fetchone()
        s = msgspec.json.decode(doc)
        s.update(changes)
        db.execute("UPDATE sessions SET doc = ?, status = ? WHERE name = ?",
                   (msgspec.json.encode(s), s["status"], name))


Change = Callable[[Store, Path], None]
# Each: a change after `a` and `b` were saved and listed, and the names `live` then holds.
CHANGES: dict[str, tuple[Change, list[str]]] = {
    "saved through the store": (lambda st, p: st.save(_session("c")), ["a", "b", "c"]),
    "deleted through the store": (lambda st, p: st.delete(st.get("a")), ["b"]),
    "ended through the store": (lambda st, p: st.save(msgspec.structs.replace(st.get("a"), status=Status.integrated)),
                                ["b"]),
    "inserted by another connection": (
        lambda st, p: _other_connection(p, "INSERT INTO sessions(name, status, doc) VALUES (?, ?, ?)", "c", "active",
                                        msgspec.json.encode(_session("c"))), ["a", "b", "c"]),
    "deleted by another connection": (lambda st, p: _other_connection(p, "DELETE FROM sessions WHERE name = 'b'"),
                                      ["a"]),
    "rewritten by another connection": (lambda st, p: _edit_doc(p, "a", status="integrated"), ["b"]),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=list(CHANGES))
def test_the_next_read_sees_every_change(tmp_path: Path, change: tuple[Change, list[str]]) -> None:
    path = tmp_path / "para.db"
    st = Store(path)
    for name in ("a", "b"):
        st.save(_session(name))
    assert [s.name for s in st.live()] == [s.name for s in st.live()] == ["a", "b"]  # (kept now)
    changed, expected = change
    changed(st, path)
    assert [s.name for s in st.live()] == expected
    assert [s.name for s in st.all() if s.status is not Status.integrated] == expected


def test_a_note_added_by_another_connection_is_read_and_a_kept_row_is_never_shared(tmp_path: Path) -> None:
    path = tmp_path / "para.db"
    st = Store(path)
    st.save(_session("a"))
    first = st.live()[0]
    first.notes.append("changed by a caller, never saved")
    assert st.live()[0].notes == []  # (decoded afresh for each caller)
    _edit_doc(path, "a", notes=["from elsewhere"])
    assert st.live()[0].notes == ["from elsewhere"]


def test_the_version_moves_with_every_write_and_only_then(tmp_path: Path) -> None:
    path = tmp_path / "para.db"
    st = Store(path)
    v = st.version()
    assert st.version() == v
    s = st.save(_session("a"))
    assert st.version() != v
    v = st.version()
    st.append_event("note", "a", {})  # (the event log is no session)
    st.live()
    assert st.version() == v
    _edit_doc(path, "a", task="elsewhere")
    assert st.version() != v
    v = st.version()
    st.delete(s)
    assert st.version() != v
