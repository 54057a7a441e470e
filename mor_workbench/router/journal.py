"""The session journal: every session this account opens, written down before the money moves.

One SQLite file per chain and account. A row is written before the openSession transaction is
sent and updated after each step, so a process that dies anywhere leaves enough behind for the
next start to find the session on chain and close it (or withdraw its stake on hold).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["JournalEntry", "SessionJournal"]

# opening: approval in hand, open transaction about to be / being sent
# open: on chain and usable; closing: close transaction being sent
# closed: closed on chain; abandoned: the open never happened (approval unused and expired)
UNFINISHED = ("opening", "open", "closing")
STATES = (*UNFINISHED, "closed", "abandoned")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    approval_hash TEXT PRIMARY KEY,
    session_id TEXT,
    state TEXT NOT NULL,
    model_id TEXT NOT NULL,
    bid_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    provider_pubkey TEXT NOT NULL,
    amount TEXT NOT NULL,
    direct_payment INTEGER NOT NULL,
    approval TEXT NOT NULL,
    approval_signature TEXT NOT NULL,
    tx_hash TEXT,
    ends_at INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state);
"""


@dataclass(frozen=True)
class JournalEntry:
    """One session as this account knows it; hex strings for bytes, decimal strings for wei."""

    approval_hash: str
    state: str
    model_id: str
    bid_id: str
    provider: str
    endpoint: str
    provider_pubkey: str
    amount: str
    direct_payment: bool
    approval: str
    approval_signature: str
    session_id: str | None = None
    tx_hash: str | None = None
    ends_at: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


_COLUMNS = [f.name for f in fields(JournalEntry)]


class SessionJournal:
    """A durable record of this account's sessions on one chain."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a row must survive a crash right after
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record(self, entry: JournalEntry) -> JournalEntry:
        """Insert or replace `entry` (stamping its times) and return what was stored."""
        if entry.state not in STATES:
            raise ValueError(f"unknown journal state {entry.state!r}")
        now = time.time()
        stored = replace(entry, created_at=entry.created_at or now, updated_at=now)
        values = [getattr(stored, c) for c in _COLUMNS]
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO sessions ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                [int(v) if isinstance(v, bool) else v for v in values],
            )
        return stored

    def update(self, approval_hash: str, **changes: object) -> JournalEntry:
        """Change some fields of an existing entry."""
        current = self.get(approval_hash)
        if current is None:
            raise KeyError(f"no journal entry {approval_hash}")
        return self.record(replace(current, **changes))

    def get(self, approval_hash: str) -> JournalEntry | None:
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE approval_hash = ?",
            (approval_hash,),
        ).fetchone()
        return self._entry(row) if row else None

    def by_session(self, session_id: str) -> JournalEntry | None:
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return self._entry(row) if row else None

    def unfinished(self) -> list[JournalEntry]:
        """Entries whose session may still hold this account's MOR, oldest first."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE state IN "
            f"({', '.join('?' for _ in UNFINISHED)}) ORDER BY created_at",
            UNFINISHED,
        ).fetchall()
        return [self._entry(r) for r in rows]

    def all(self) -> list[JournalEntry]:
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions ORDER BY created_at"
        ).fetchall()
        return [self._entry(r) for r in rows]

    @staticmethod
    def _entry(row: tuple) -> JournalEntry:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["direct_payment"] = bool(values["direct_payment"])
        return JournalEntry(**values)
