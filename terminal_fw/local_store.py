"""The runtime's own local store: one SQLite file beside the outbox, and the disk alarm.

SQLite's transactions are what keep the store whole when the disk fills up or the power
goes: a write that does not fit fails and is rolled back, the file keeps its last
committed state. What the runtime adds is the *alarm*: a full disk is turned into
:class:`StorageFull`, the terminal refuses value-changing taps (it could not record
them) instead of serving them unrecorded, and the heartbeat tells HQ. A reserve of free
space is kept for the records already promised, so the alarm goes off before SQLite
ever reports the disk full.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Below this much free space the terminal stops taking value (records could not be kept).
DEFAULT_RESERVE_BYTES = 16 * 1024 * 1024


class StorageFull(RuntimeError):
    """The local store cannot take another write: the disk (or the store's quota) is full."""


def is_storage_full(exc: BaseException) -> bool:
    """True for SQLite's and the OS's ways of saying "no space left"."""
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "full" in text or "no space" in text
    return isinstance(exc, OSError) and exc.errno == 28  # ENOSPC


def disk_free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


class LocalStore:
    """A small SQLite database (WAL, synchronous=FULL) shared by the runtime's parts."""

    def __init__(self, path: Path | str, *, max_pages: int | None = None) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        if max_pages is not None:  # a quota, so tests can fill the store like a disk
            self.conn.execute(f"PRAGMA max_page_count={int(max_pages)}")
        self.lock = threading.RLock()
        self.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        with self.lock:
            try:
                return self.conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if is_storage_full(exc):
                    raise StorageFull(f"local store {self.path.name}: {exc}") from exc
                raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable write; a full disk rolls it back and raises StorageFull."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                if self.conn.in_transaction:  # SQLite may have rolled back already (full)
                    self.conn.execute("ROLLBACK")
                if is_storage_full(exc) and not isinstance(exc, StorageFull):
                    raise StorageFull(f"local store {self.path.name}: {exc}") from exc
                raise

    def get(self, key: str, default: Any = None) -> Any:
        row = self.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def put(self, key: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def close(self) -> None:
        with self.lock:
            self.conn.close()
