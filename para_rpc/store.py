"""The per-repository SQLite store: `.para/para.db` in the main worktree.

Sessions are stored as msgspec JSON documents keyed by row id, with the name
and status as columns for lookups. A session's `op` field is the journal of a
multi-step operation in flight; the service repairs every row that still has
one when it opens the store after a crash. The event log is append-only.
The schema version lives in `PRAGMA user_version`; MIGRATIONS[i] takes a
database from version i to i + 1.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from para_rpc.errors import Code, ParaError
from para_rpc.model import HISTORY, Plan, Session, Status, now

MIGRATIONS = [
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        doc BLOB NOT NULL
    );
    CREATE INDEX sessions_name ON sessions(name);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        session TEXT,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE plans (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        state TEXT NOT NULL,
        doc BLOB NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _private_file(path: Path, create: bool = True) -> None:
    """Make `path` 0600 (creating it empty if asked): under a umask of 022 sqlite would
    create it 0644, and an existing one made by an older para may be 0644 too."""
    try:
        if create:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def _unusable(path: Path, e: sqlite3.DatabaseError) -> ParaError:
    """A clear error for a database sqlite cannot use; what to do depends on why."""
    broken = getattr(e, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT")
    if broken or not isinstance(e, sqlite3.OperationalError):  # (operational: locked, no permission, ...)
        return ParaError(Code.config_error,
                         f"{path} is not a usable para database ({e}). Move it away, for example "
                         f"`mv {path} {path}.broken`: para creates a new one at the next command (no sidecar "
                         "restart needed), and sessions whose worktrees or branches still exist can be taken up "
                         "again with `para resume NAME`", path=str(path))
    return ParaError(Code.config_error, f"cannot open the para database {path}: {e}", path=str(path))


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Session).decode
_decode_plan = msgspec.json.Decoder(Plan).decode
_LIVE = tuple(s.value for s in Status if s not in HISTORY)


# The database and its -wal/-shm files hold every session's task text: private to the user.
FILE_MODE = 0o600


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            _private_file(path)  # sqlite gives the -wal and -shm files it creates the same mode
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as e:
            raise _unusable(path, e) from None
        self.db = db
        # The rows `live` and `all` last read, by query, with what they were read under: a
        # `list` at a hundred sessions spent a third of its time fetching the same rows again.
        self._writes = 0  # (sessions written through this connection; counted after each write)
        self._rows: dict[str, tuple[tuple[int, int], list[tuple[int, bytes]]]] = {}
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            for suffix in ("-wal", "-shm"):
                _private_file(Path(f"{path}{suffix}"), create=False)
        except sqlite3.DatabaseError as e:
            self.close()
            raise _unusable(path, e) from None
        except BaseException:
            self.close()
            raise

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ParaError(Code.config_error,
                            f"{self.path} was written by a newer para (database schema {version}; this para "
                            f"knows up to {SCHEMA_VERSION}): upgrade para (and restart the sidecar with "
                            "`para sidecar restart`), or move the file away to start with an empty one",
                            path=str(self.path), schema=version, supported=SCHEMA_VERSION)
        for i in range(version, SCHEMA_VERSION):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version={i + 1}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.db.close()

    # ---- sessions ----------------------------------------------------------

    def version(self) -> tuple[int, int]:
        """What every read of the sessions depends on: it moves with each session written
        through this connection and each commit of another connection to the database."""
        return self._writes, self.db.execute("PRAGMA data_version").fetchone()[0]

    def _rows_of(self, q: str, args: tuple[str, ...] = ()) -> list[tuple[int, bytes]]:
        """The rows of `q`, read again only after a session was written through this connection
        or another connection committed anything (`PRAGMA data_version`: another process, a
        test's own connection). Decoded afresh by each caller, who may change what it gets."""
        key = self.version()
        hit = self._rows.get(q)
        if hit is not None and hit[0] == key:
            return hit[1]
        rows = self.db.execute(q, args).fetchall()
        self._rows[q] = (key, rows)
        return rows

    def _load(self, rows: Iterable[tuple[int, bytes]]) -> list[Session]:
        result = []
        for rid, doc in rows:
            s = _decode(doc)
            s.id = rid
            result.append(s)
        return result

    def live(self) -> list[Session]:
        """Sessions whose names are taken (everything but history), oldest first."""
        q = f"SELECT id, doc FROM sessions WHERE status IN ({','.join('?' * len(_LIVE))}) ORDER BY id"
        return self._load(self._rows_of(q, _LIVE))

    def all(self) -> list[Session]:
        return self._load(self._rows_of("SELECT id, doc FROM sessions ORDER BY id"))

    def get(self, name: str) -> Session | None:
        q = f"SELECT id, doc FROM sessions WHERE name = ? AND status IN ({','.join('?' * len(_LIVE))})"
        found = self._load(self.db.execute(q, (name, *_LIVE)))
        return found[0] if found else None

    def save(self, s: Session) -> Session:
        s.updated_at = now()
        doc = _encode(s)
        try:
            if s.id is None:
                cur = self.db.execute("INSERT INTO sessions(name, status, doc) VALUES (?, ?, ?)",
                                      (s.name, s.status.value, doc))
                s.id = cur.lastrowid
            else:
                self.db.execute("UPDATE sessions SET name = ?, status = ?, doc = ? WHERE id = ?",
                                (s.name, s.status.value, doc, s.id))
        finally:  # (after the write, failed or not: rows read meanwhile are read again next time)
            self._writes += 1
        return s

    def delete(self, s: Session) -> None:
        if s.id is not None:
            try:
                self.db.execute("DELETE FROM sessions WHERE id = ?", (s.id,))
            finally:
                self._writes += 1

    def by_id(self, rid: int) -> Session | None:
        found = self._load(self.db.execute("SELECT id, doc FROM sessions WHERE id = ?", (rid,)))
        return found[0] if found else None

    # ---- plans -------------------------------------------------------------

    def plans(self, state: str | None = None) -> list[Plan]:
        q = "SELECT id, doc FROM plans"
        args: tuple[str, ...] = ()
        if state is not None:
            q, args = q + " WHERE state = ?", (state,)
        result = []
        for rid, doc in self.db.execute(q + " ORDER BY id", args):
            plan = _decode_plan(doc)
            plan.id = rid
            result.append(plan)
        return result

    def save_plan(self, plan: Plan) -> Plan:
        plan.updated_at = now()
        doc = _encode(plan)
        if plan.id is None:
            plan.id = self.db.execute("INSERT INTO plans(state, doc) VALUES (?, ?)", (plan.state, doc)).lastrowid
        else:
            self.db.execute("UPDATE plans SET state = ?, doc = ? WHERE id = ?", (plan.state, doc, plan.id))
        return plan

    # ---- events ------------------------------------------------------------

    def append_event(self, kind: str, session: str | None, data: dict[str, Any]) -> dict[str, Any]:
        ts = now()
        cur = self.db.execute("INSERT INTO events(ts, session, kind, data) VALUES (?, ?, ?, ?)",
                              (ts, session, kind, json.dumps(data)))
        return {"id": cur.lastrowid, "ts": ts, "session": session, "kind": kind, "data": data}

    def last_event_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def last_events(self, sessions: list[str]) -> dict[str, dict[str, Any]]:
        """The newest event of each named session (`para list --verbose`)."""
        if not sessions:
            return {}
        q = (f"SELECT id, ts, session, kind, data FROM events WHERE id IN (SELECT MAX(id) FROM events "
             f"WHERE session IN ({','.join('?' * len(sessions))}) GROUP BY session)")
        return {s: {"id": i, "ts": ts, "session": s, "kind": k, "data": json.loads(d)}
                for i, ts, s, k, d in self.db.execute(q, sessions)}

    def events(self, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id, ts, session, kind, data FROM events WHERE id > ? "
                               "ORDER BY id LIMIT ?", (after, limit))
        return [{"id": i, "ts": ts, "session": s, "kind": k, "data": json.loads(d)}
                for i, ts, s, k, d in rows]
