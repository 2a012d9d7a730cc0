"""The terminal's durable outbox: signed records waiting for HQ's acknowledgement.

A record is appended in one SQLite transaction that also advances the device's chain
head (sequence number and hash of the last record), with ``synchronous=FULL`` so the
commit has reached the disk before :meth:`Outbox.append` returns. A record leaves the
outbox only through :meth:`Outbox.acknowledge`, i.e. after HQ said it has committed it.

The same file holds the intent journal (:mod:`terminal_fw.intent`): a tap's records and
the intent that produced them change in one transaction, so neither can be on disk
without the other. :meth:`Outbox.transaction` is that transaction; ``durable=False``
skips the wait for the disk where losing the write to a power cut is harmless (status
marks that recovery can work out again), and the next durable commit carries it along.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.record import GENESIS_HASH, SignedRecord, TransactionRecord, decode_wire


@dataclass(frozen=True)
class Pending:
    seq: int
    wire: bytes
    created_ms: int
    sent_count: int


class Outbox:
    """Append-only queue of signed records plus the device's chain head."""

    def __init__(self, path: Path | str) -> None:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        if "outbox" not in self.db.table_names():
            self.db["outbox"].create(
                {"seq": int, "wire": bytes, "created_ms": int, "sent_count": int},
                pk="seq",
            )
        if "chain" not in self.db.table_names():
            self.db["chain"].create(
                {"id": int, "last_seq": int, "last_hash": bytes, "acked_through": int}, pk="id"
            )
            self.db["chain"].insert(
                {"id": 1, "last_seq": 0, "last_hash": GENESIS_HASH, "acked_through": 0}
            )

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic write. ``durable`` (the default) returns only once it is on disk."""
        with self._lock:
            conn = self.db.conn
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # a full disk makes SQLite roll back by itself
                        conn.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        """A statement on its own (reads, and writes that need no transaction)."""
        with self._lock:
            return self.db.conn.execute(sql, params)

    def append(self, content: TransactionRecord, key: Ed25519PrivateKey) -> SignedRecord:
        """Give ``content`` the next sequence number, sign it and commit it durably."""
        with self.transaction() as conn:
            return self.append_in(conn, content, key)

    def append_in(self, conn: sqlite3.Connection, content: TransactionRecord,
                  key: Ed25519PrivateKey) -> SignedRecord:
        """:meth:`append` inside a :meth:`transaction` the caller holds open."""
        last_seq, last_hash = conn.execute(
            "SELECT last_seq, last_hash FROM chain WHERE id = 1"
        ).fetchone()
        record = replace(content, seq=last_seq + 1, prev_hash=bytes(last_hash))
        signed = record.sign(key)
        conn.execute(
            "INSERT INTO outbox (seq, wire, created_ms, sent_count) VALUES (?, ?, ?, 0)",
            (record.seq, signed.wire, int(time.time() * 1000)),
        )
        conn.execute(
            "UPDATE chain SET last_seq = ?, last_hash = ? WHERE id = 1",
            (record.seq, signed.record_hash),
        )
        return signed

    def pending(self, limit: int = 500, after_seq: int = 0) -> list[Pending]:
        """Unacknowledged records in sequence order."""
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT seq, wire, created_ms, sent_count FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [Pending(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def get(self, seq: int) -> bytes | None:
        with self._lock:
            row = self.db.conn.execute("SELECT wire FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return bytes(row[0]) if row else None

    def mark_sent(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock:
            self.db.conn.executemany(
                "UPDATE outbox SET sent_count = sent_count + 1 WHERE seq = ?", [(s,) for s in seqs]
            )

    def acknowledge(self, through: int) -> int:
        """HQ committed every record up to ``through``: drop them. Returns how many went."""
        with self.transaction() as conn:
            (last_seq,) = conn.execute("SELECT last_seq FROM chain WHERE id = 1").fetchone()
            through = min(through, last_seq)  # never trust an ack beyond what we made
            cur = conn.execute("DELETE FROM outbox WHERE seq <= ?", (through,))
            conn.execute(
                "UPDATE chain SET acked_through = MAX(acked_through, ?) WHERE id = 1",
                (through,),
            )
        return cur.rowcount

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self.db.conn.execute("SELECT last_seq FROM chain WHERE id = 1").fetchone()[0]

    @property
    def acked_through(self) -> int:
        with self._lock:
            return self.db.conn.execute(
                "SELECT acked_through FROM chain WHERE id = 1"
            ).fetchone()[0]

    def backlog(self) -> int:
        with self._lock:
            return self.db.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def oldest_pending_ms(self) -> int | None:
        with self._lock:
            row = self.db.conn.execute("SELECT MIN(created_ms) FROM outbox").fetchone()
        return row[0]

    def records(self) -> list[SignedRecord]:
        """Decode every pending record (diagnostics and tests)."""
        return [decode_wire(p.wire) for p in self.pending(limit=1_000_000)]

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
