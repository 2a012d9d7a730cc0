"""The intent journal: the durable list of card writes in flight.

An intent is written before the block that makes a card's new state count, and holds
both card states and the records to sign. It lives in table ``intents`` of the
outbox's file, so a tap's records and its intent's status change in one transaction
(:meth:`terminal_fw.tap.runner.TapRunner`'s commit). What an unfinished intent comes to
is decided by :mod:`terminal_fw.tap.settle`; this module only stores it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from protocol.card_ops import Done
from protocol.card_state import CardState
from protocol.record import TransactionRecord, decode_body
from terminal_fw.local_store import LocalStore
from terminal_fw.outbox import Outbox


class Status(enum.Enum):
    OPEN = "open"  # intent durable; whether the card holds the new state is unknown
    WRITTEN = "written"  # the card holds the new state; records not yet committed
    COMMITTED = "committed"  # records in the outbox; the member not yet served
    DONE = "done"
    ABANDONED = "abandoned"  # the card kept its old state: nothing happened
    REPORTED = "reported"  # sent to HQ as unconfirmed
    REPORTED_NOT_LANDED = "reported, not landed"  # ... and the card turned out unchanged


UNRESOLVED = (Status.OPEN, Status.WRITTEN, Status.COMMITTED, Status.REPORTED)


_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(CardState))


def state_json(state: CardState | None) -> str:
    """A card state as the journal stores it."""
    # fields by hand: dataclasses.asdict deep-copies and costs 3x as much, on the tap's path
    fields = {name: getattr(state, name) for name in _STATE_FIELDS} if state is not None else None
    return json.dumps(fields, sort_keys=True)


def state_of(text: str) -> CardState | None:
    data = json.loads(text)
    return CardState(**data) if data is not None else None


@dataclass(frozen=True)
class Intent:
    id: str
    uid: bytes
    operation: str
    serve: bool
    seq_before: int
    before: CardState | None  # None: a blank card being issued
    after: CardState
    records: tuple[TransactionRecord, ...]
    status: Status
    created_ms: int


class IntentJournal:
    """The durable list of card writes in flight: table ``intents`` beside the outbox.

    ``store`` is the terminal's :class:`~terminal_fw.outbox.Outbox` (anything with its
    ``execute`` and ``transaction`` works): keeping intents in the outbox's file lets a
    tap's records and its intent's status change in one transaction.
    """

    def __init__(self, store: Outbox, *, clock: Callable[[], float] = time.time,
                 new_id: Callable[[], str] = lambda: secrets.token_hex(8)) -> None:
        self.store = store
        self.clock = clock
        #: a new intent's id: random in production; the deterministic simulator draws
        #: it from its seed, so a replayed seed names every intent the same
        self.new_id = new_id
        self.store.execute(
            "CREATE TABLE IF NOT EXISTS intents (id TEXT PRIMARY KEY, uid TEXT NOT NULL,"
            " operation TEXT NOT NULL, serve INTEGER NOT NULL, seq_before INTEGER NOT NULL,"
            " before TEXT NOT NULL, after TEXT NOT NULL, records TEXT NOT NULL,"
            " status TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL)")
        self.store.execute("CREATE INDEX IF NOT EXISTS ix_intents_uid ON intents (uid, status)")

    def adopt(self, legacy: LocalStore) -> int:
        """Move the intents an older terminal kept in its runtime store into this journal
        (once, at start). Returns how many came over."""
        if not legacy.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'intents'").fetchone():
            return 0
        rows = legacy.execute("SELECT * FROM intents").fetchall()
        with self.store.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             rows)
        legacy.execute("DROP TABLE intents")
        return len(rows)

    def prepare(self, uid: bytes, operation: str, before: CardState | None, done: Done, *,
                serve: bool, seq_before: int) -> tuple[Intent, tuple]:
        """A new intent and its row, encoded; :meth:`insert` writes them durably (on another
        thread if need be: it then holds the interpreter only for the SQL)."""
        now = int(self.clock() * 1000)
        intent = Intent(self.new_id(), uid, operation, serve, seq_before, before,
                        done.state, done.records, Status.OPEN, now)
        row = (intent.id, uid.hex(), operation, int(serve), seq_before, state_json(before),
               state_json(done.state), json.dumps([r.encode().hex() for r in done.records]),
               Status.OPEN.value, now, now)
        return intent, row

    def insert(self, intent: Intent, row: tuple) -> Intent:
        with self.store.transaction() as conn:
            conn.execute("INSERT INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return intent

    def set_status(self, intent: Intent, status: Status, *, durable: bool = True,
                   conn: sqlite3.Connection | None = None) -> Intent:
        """Record the intent's new status: in the caller's open transaction ``conn``, or
        in its own (``durable=False``: not waited for, recovery can work it out again)."""
        sql = "UPDATE intents SET status = ?, updated_ms = ? WHERE id = ?"
        params = (status.value, int(self.clock() * 1000), intent.id)
        if conn is not None:
            conn.execute(sql, params)
        else:
            with self.store.transaction(durable=durable) as own:
                own.execute(sql, params)
        return replace(intent, status=status)

    def _rows(self, where: str, params: tuple) -> list[Intent]:
        rows = self.store.execute(
            "SELECT id, uid, operation, serve, seq_before, before, after, records, status, "
            f"created_ms FROM intents WHERE {where} ORDER BY created_ms", params).fetchall()
        return [Intent(r[0], bytes.fromhex(r[1]), r[2], bool(r[3]), r[4], state_of(r[5]),
                       state_of(r[6]),  # type: ignore[arg-type]
                       tuple(decode_body(bytes.fromhex(h)) for h in json.loads(r[7])),
                       Status(r[8]), r[9]) for r in rows]

    def unresolved(self, uid: bytes | None = None) -> list[Intent]:
        marks = ",".join("?" for _ in UNRESOLVED)
        values = tuple(s.value for s in UNRESOLVED)
        if uid is None:
            return self._rows(f"status IN ({marks})", values)
        return self._rows(f"uid = ? AND status IN ({marks})", (uid.hex(), *values))

    def get(self, intent_id: str) -> Intent | None:
        found = self._rows("id = ?", (intent_id,))
        return found[0] if found else None

    def counts(self) -> dict[str, int]:
        rows = self.store.execute("SELECT status, COUNT(*) FROM intents GROUP BY status")
        return {status: n for status, n in rows}

    def prune(self, older_than_ms: int) -> None:
        """Forget settled intents (kept a while for diagnostics)."""
        self.store.execute("DELETE FROM intents WHERE status IN (?, ?, ?) AND updated_ms < ?",
                           (Status.DONE.value, Status.ABANDONED.value,
                            Status.REPORTED_NOT_LANDED.value, older_than_ms))
