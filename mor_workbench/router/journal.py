"""The session journal: every session this account opens, written down before the money moves.

One SQLite file per chain and account. A row is written before the openSession transaction is
sent and updated after each step, so a process that dies anywhere leaves enough behind for the
next start to find the session on chain and close it (or withdraw its stake on hold).

Each row names the process that wrote it. A live process holds an exclusive lock on a file of
its own beside the journal (the OS drops it when the process dies, however it dies), so the
next start settles only what dead processes left, never the sessions of a notebook still
running with the same account.

The journal names the account's sessions, providers and stakes: its folder is 0700 and its
files (the database and SQLite's -wal and -shm beside it) 0600, tightened on open when an
older version left them wider.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path

from mor_workbench._private_files import private_dir, private_file
from mor_workbench.router import states

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; every other owner counts as gone
    fcntl = None  # type: ignore[assignment]

__all__ = ["JournalEntry", "SessionJournal", "journal_path"]

UNFINISHED = tuple(str(s) for s in states.UNFINISHED)  # the states that may still hold MOR
STATES = tuple(str(s) for s in states.SessionState)

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
    updated_at REAL NOT NULL,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS sessions_state ON sessions(state);
"""


def journal_path(directory: Path, chain_id: int, diamond: str, account: str) -> Path:
    """The journal file of one account on one deployment: keyed by chain id *and* the
    marketplace's Diamond address, since a fork, a testnet redeploy or a second sandbox shares
    a chain id but not its sessions."""
    return directory / f"{chain_id}-{diamond}-{account}.sqlite3"


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
    tx_hash: str | None = None  # openSession hashes, comma-separated, journaled before sending
    ends_at: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    owner: str | None = None  # the process that wrote it (see the module docstring)


_COLUMNS = [f.name for f in fields(JournalEntry)]
_PROCESS = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # this process, as journal rows name it
_held: dict[Path, object] = {}  # owner-lock files this process holds open, by directory


def _hold_owner_lock(directory: Path) -> None:
    """Lock this process's owner file in `directory` for as long as the process lives, and
    remove the files of owners that have died (a process killed before its exit handler)."""
    if fcntl is None or directory in _held:
        return
    private_dir(directory)
    # locked under a temporary name, then renamed: a file under its final name is always held
    # (a sweep in another process can never take a file between its creation and its lock)
    pending = directory / f"{_PROCESS}.pending"
    handle = pending.open("w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    pending.rename(directory / f"{_PROCESS}.lock")
    if not _held:
        atexit.register(_release_owner_locks)
    _held[directory] = handle
    for path in directory.glob("*.lock"):
        _alive(path.stem, directory)  # removes the file when its owner is gone


def _release_owner_locks() -> None:
    """At exit: remove this process's owner files (the OS drops the locks themselves)."""
    for directory, handle in list(_held.items()):
        (directory / f"{_PROCESS}.lock").unlink(missing_ok=True)
        handle.close()  # type: ignore[attr-defined]
    _held.clear()


def _alive(owner: str | None, directory: Path) -> bool:
    """Whether the process `owner` still runs (its lock file is locked); a dead owner's file
    is removed."""
    if owner == _PROCESS:
        return True
    if owner is None or fcntl is None:
        return False
    path = directory / f"{owner}.lock"
    try:
        handle = path.open("r+")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        path.unlink(missing_ok=True)
        return False


class SessionJournal:
    """A durable record of this account's sessions on one chain."""

    def __init__(self, path: Path) -> None:
        private_dir(path.parent)  # tightens the -wal and -shm files an older version left
        private_file(path)  # SQLite creates the -wal and -shm files with the database's mode
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a row must survive a crash right after
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
        if "owner" not in columns:  # a journal from before rows named their process
            self._db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")
        self._owners = path.parent / "owners"
        _hold_owner_lock(self._owners)

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
        """Insert a new entry (stamping its times) and return what was stored; its state then
        moves only by `transition`."""
        if entry.state not in STATES:
            raise ValueError(f"unknown journal state {entry.state!r}")
        now = time.time()
        stored = replace(entry, created_at=entry.created_at or now, updated_at=now, owner=_PROCESS)
        with self._transaction() as db:
            if self._read(db, entry.approval_hash) is not None:
                raise ValueError(f"journal entry {entry.approval_hash} exists: update it")
            self._write(db, stored)
        return stored

    def update(self, approval_hash: str, **changes: object) -> JournalEntry:
        """Change some fields of an existing entry, never its state (see `transition`)."""
        if "state" in changes:
            raise ValueError("a session's state moves only by journal.transition(hash, event)")
        return self._change(approval_hash, None, changes)

    def transition(
        self, approval_hash: str, event: states.SessionEvent | str, **changes: object
    ) -> JournalEntry:
        """Apply `event` to the entry's state by the table in `states` (with `changes` to its
        other fields) in one transaction; `IllegalTransition` when its life does not go there."""
        return self._change(approval_hash, states.SessionEvent(event), changes)

    def _change(
        self,
        approval_hash: str,
        event: states.SessionEvent | None,
        changes: dict[str, object],
    ) -> JournalEntry:
        with self._transaction() as db:
            current = self._read(db, approval_hash)
            if current is None:
                raise KeyError(f"no journal entry {approval_hash}")
            if event is not None:
                changes = {**changes, "state": str(states.advance(current.state, event))}
            stored = replace(current, **changes, updated_at=time.time(), owner=_PROCESS)
            self._write(db, stored)
        return stored

    def _read(self, db: sqlite3.Connection, approval_hash: str) -> JournalEntry | None:
        row = db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE approval_hash = ?",
            (approval_hash,),
        ).fetchone()
        return self._entry(row) if row else None

    @staticmethod
    def _write(db: sqlite3.Connection, entry: JournalEntry) -> None:
        values = [getattr(entry, c) for c in _COLUMNS]
        db.execute(
            f"INSERT OR REPLACE INTO sessions ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
            [int(v) if isinstance(v, bool) else v for v in values],
        )

    def get(self, approval_hash: str) -> JournalEntry | None:
        return self._read(self._db, approval_hash)

    def by_session(self, session_id: str) -> JournalEntry | None:
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return self._entry(row) if row else None

    def unfinished(self, *, orphaned: bool = False) -> list[JournalEntry]:
        """Entries whose session may still hold this account's MOR, oldest first; with
        `orphaned`, only those whose process has died (what a new start may settle)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE state IN "
            f"({', '.join('?' for _ in UNFINISHED)}) ORDER BY created_at",
            UNFINISHED,
        ).fetchall()
        entries = [self._entry(r) for r in rows]
        if orphaned:
            entries = [e for e in entries if not _alive(e.owner, self._owners)]
        return entries

    def closed_since(self, since: float) -> list[JournalEntry]:
        """Entries marked closed at or after `since` (Unix seconds), oldest first: what a
        chain rollback (a reorg, a sandbox restored from an older state) may have reopened."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE state = 'closed' "
            "AND session_id IS NOT NULL AND updated_at >= ? ORDER BY created_at",
            (since,),
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
