"""Where a batch's rows go, on SQLite and on PostgreSQL: records, card touches, spend.

Each write is one statement for the whole batch (arrays on PostgreSQL, executemany on
SQLite), in key order so concurrent workers lock rows in one order and never deadlock.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from hq_server.db.bulk import bulk_execute, chunks, dialect_insert
from hq_server.db.tables import card_reconciliation, card_spend, counters, records
from hq_server.ingest.classify import Classification, Key, StoredRecord
from protocol.record import SignedRecord


def add_card_spend(conn: Connection, deltas: dict[str, list[int]]) -> None:
    """Add to the cards' debit and refund totals: rows made first, then one update, so
    the table's check sees the sums (a concurrent refund past the debits fails, and its
    batch is retried)."""
    cards = list(deltas)
    params = {"c": cards, "d": [deltas[c][0] for c in cards], "r": [deltas[c][1] for c in cards]}
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "INSERT INTO card_spend (card_id) SELECT * FROM unnest(%(c)s::text[]) "
            "ON CONFLICT (card_id) DO NOTHING", params)
        conn.exec_driver_sql(
            "UPDATE card_spend SET debited_fen = card_spend.debited_fen + d.debited, "
            "refunded_fen = card_spend.refunded_fen + d.refunded "
            "FROM unnest(%(c)s::text[], %(d)s::bigint[], %(r)s::bigint[]) "
            "AS d(card_id, debited, refunded) WHERE card_spend.card_id = d.card_id", params)
        return
    bulk_execute(conn, "card_spend_row", lambda: dialect_insert(conn)(card_spend).values(
        card_id=bindparam("card_id")).on_conflict_do_nothing(), [{"card_id": c} for c in cards])
    bulk_execute(conn, "card_spend_add", lambda: update(card_spend).where(
        card_spend.c.card_id == bindparam("card")).values(
        debited_fen=card_spend.c.debited_fen + bindparam("debited"),
        refunded_fen=card_spend.c.refunded_fen + bindparam("refunded")),
        [{"card": c, "debited": d, "refunded": f} for c, (d, f) in deltas.items()])


_RECORD_COLUMNS = ("device_id", "seq", "record_hash", "prev_hash", "wire", "card_id",
                   "operation", "card_counter", "device_time_ms", "received_at_ms", "status")


_RECORD_TYPES = ("text", "bigint", "bytea", "bytea", "bytea", "text", "integer", "bigint",
                 "bigint", "bigint", "text")


# One statement with one array per column: a few parameters to send and parse instead
# of one per value. Rows go in the order given (sorted), which is the lock order.
_PG_RECORDS_INSERT = (
    f"INSERT INTO records ({', '.join(_RECORD_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"%({c})s::{t}[]" for c, t in zip(_RECORD_COLUMNS, _RECORD_TYPES, strict=True))
    + ") ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq")


def _bulk_insert(table, *skip: str):
    return insert(table).values({c.name: bindparam(c.name) for c in table.columns
                                 if c.name not in skip})


def _stored_around(conn: Connection, verified: list[SignedRecord]
                   ) -> dict[tuple[str, int], tuple[bytes, bytes, str]]:
    """Rows already stored at, just before and just after each record's sequence."""
    per_device: dict[str, set[int]] = defaultdict(set)
    for s in verified:
        per_device[s.record.device_id].update((s.record.seq - 1, s.record.seq, s.record.seq + 1))
    stored: dict[tuple[str, int], tuple[bytes, bytes, str]] = {}
    cols = (records.c.seq, records.c.record_hash, records.c.prev_hash, records.c.status)
    for dev, seqs in per_device.items():
        lo, hi = min(seqs), max(seqs)
        where = records.c.device_id == dev
        if hi - lo < 4 * len(seqs):  # one range scan of the primary key
            queries = [select(*cols).where(where & records.c.seq.between(lo, hi))]
        else:
            queries = [select(*cols).where(where & records.c.seq.in_(part))
                       for part in chunks(sorted(seqs), 900)]
        for q in queries:
            for seq, h, p, status in conn.execute(q):
                if seq in seqs:
                    stored[(dev, seq)] = (bytes(h), bytes(p), status)
    return stored


def bump(conn: Connection, name: str, by: int) -> None:
    done = conn.execute(update(counters).where(counters.c.name == name)
                        .values(value=counters.c.value + by)).rowcount
    if not done:
        conn.execute(insert(counters).values(name=name, value=by))


def touch_cards(conn: Connection, per_card: Counter[str]) -> None:
    """Count new records per card: reconciliation looks at the cards touched since."""
    cards = sorted(per_card)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "INSERT INTO card_reconciliation (card_id, touched) "
            "SELECT * FROM unnest(%(cards)s::text[], %(counts)s::bigint[]) "
            "ON CONFLICT (card_id) DO UPDATE "
            "SET touched = card_reconciliation.touched + excluded.touched",
            {"cards": cards, "counts": [per_card[c] for c in cards]})
        return

    def make():
        ins = dialect_insert(conn)(card_reconciliation).values(
            card_id=bindparam("card_id"), touched=bindparam("touched"))
        return ins.on_conflict_do_update(
            index_elements=[card_reconciliation.c.card_id],
            set_={"touched": card_reconciliation.c.touched + ins.excluded.touched})

    bulk_execute(conn, "card_touch", make,
                 [{"card_id": c, "touched": n} for c, n in sorted(per_card.items())])


def stored_around(conn: Connection, verified: list[SignedRecord]) -> dict[Key, StoredRecord]:
    """Rows already stored at, just before and just after each record's sequence."""
    return {k: StoredRecord(h, p, status) for k, (h, p, status)
            in _stored_around(conn, verified).items()}


def insert_records(conn: Connection, batch: Classification, now_ms: int) -> None:
    """Store the batch's fresh records (posted or quarantined) in key order.

    SQLite: this transaction holds the write lock, what :func:`stored_around` read is all
    there is. PostgreSQL: another worker may be storing the same record right now; the
    database waits for it, and the record is then ours only if our insert took (see
    :meth:`Classification.lost_race`).
    """
    rows = [{"device_id": s.record.device_id, "seq": s.record.seq,
             "record_hash": s.record_hash, "prev_hash": s.record.prev_hash, "wire": s.wire,
             "card_id": s.record.card_id, "operation": int(s.record.operation),
             "card_counter": s.record.card_counter, "device_time_ms": s.record.device_time_ms,
             "received_at_ms": now_ms, "status": batch.status[k]} for k, s in batch.fresh.items()]
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        bulk_execute(conn, "records", lambda: _bulk_insert(records), rows)
        return
    taken = {(d, q) for d, q in conn.exec_driver_sql(_PG_RECORDS_INSERT, {
        c: [row[c] for row in rows] for c in _RECORD_COLUMNS})}
    for key in [k for k in batch.fresh if k not in taken]:
        held = conn.execute(select(records.c.record_hash).where(
            (records.c.device_id == key[0]) & (records.c.seq == key[1]))).scalar_one()
        batch.lost_race(key, bytes(held))
