"""The quarantine is capped per device (count, bytes, rate) and says what it dropped.

Hole 8 of issue #11: twenty 60 KB junk messages from one terminal became 1.2 MB of
quarantine, with no device named; a terminal sending junk for a day filled the disk.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select

from hq_server.db.tables import quarantine, quarantine_budget
from hq_server.ingest.batch import Ingest
from hq_server.ingest.quarantine import QUARANTINE_WIRE_KEPT, QuarantineLimits
from hq_server.ledger.check import check_ledger
from hq_server.reports.figures import ingest_figures
from protocol.topics import records_topic
from tests.hq_records import STORES, Card, Till, recharge, store_engine


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def junk(n: int, size: int = 60_000) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def held(engine, device_id: str) -> tuple[int, int, list[int]]:
    q = quarantine.c
    with engine.connect() as conn:
        rows = conn.execute(select(q.id, func.length(q.wire)).where(q.device_id == device_id)
                            .order_by(q.id)).all()
    return len(rows), sum(int(n) for _, n in rows), [i for i, _ in rows]


def budget(engine, device_id: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(quarantine_budget).where(
            quarantine_budget.c.device_id == device_id)).mappings().one())


def test_twenty_large_junk_messages_stay_within_the_device_caps(engine):
    Till("thief-1", "S1").register(engine)
    limits = QuarantineLimits(max_rows=5, max_bytes=3 * QUARANTINE_WIRE_KEPT, max_per_minute=100)
    ingest = Ingest(engine, quarantine_limits=limits)
    topic = records_topic("thief-1")
    for part in range(4):
        ingest.process([(topic, b) for b in junk(5)])
        count, size, _ = held(engine, "thief-1")
        assert count <= 3 and size <= limits.max_bytes, f"after batch {part}"
    count, size, _ = held(engine, "thief-1")
    assert (count, size) == (3, 3 * QUARANTINE_WIRE_KEPT)
    b = budget(engine, "thief-1")
    assert b["dropped_rows"] == 17
    assert b["dropped_bytes"] == 17 * QUARANTINE_WIRE_KEPT
    assert ingest_figures(engine)["quarantine_dropped"] == 17
    assert check_ledger(engine).figures["quarantine_dropped"] == 17


def test_with_default_limits_junk_is_cut_to_what_a_record_can_be(engine):
    Till("thief-1", "S1").register(engine)
    Ingest(engine).process([(records_topic("thief-1"), b) for b in junk(20)])
    count, size, _ = held(engine, "thief-1")
    assert count == 20
    assert size == 20 * QUARANTINE_WIRE_KEPT < 20 * 60_000 // 7


def test_the_oldest_rows_go_first(engine):
    Till("thief-1", "S1").register(engine)
    ingest = Ingest(engine, quarantine_limits=QuarantineLimits(max_rows=4, max_per_minute=100))
    topic = records_topic("thief-1")
    ingest.process([(topic, b) for b in junk(3, 200)])
    _, _, first = held(engine, "thief-1")
    newest = junk(3, 200)
    ingest.process([(topic, b) for b in newest])
    count, _, ids = held(engine, "thief-1")
    assert count == 4
    assert ids[0] == first[-1] and min(ids) > first[1]
    with engine.connect() as conn:
        kept = {bytes(w) for (w,) in conn.execute(select(quarantine.c.wire))}
    assert set(newest) <= kept


def test_the_rate_limit_stores_at_most_so_many_a_minute(engine):
    Till("thief-1", "S1").register(engine)
    ingest = Ingest(engine, quarantine_limits=QuarantineLimits(max_per_minute=10))
    ingest.process([(records_topic("thief-1"), b) for b in junk(25, 100)])
    assert held(engine, "thief-1")[0] == 10
    assert budget(engine, "thief-1")["dropped_rows"] == 15


def test_one_devices_junk_never_drops_another_devices_evidence(engine):
    Till("thief-1", "S1").register(engine)
    honest = Till("gate-1", "S1").register(engine)
    ingest = Ingest(engine, quarantine_limits=QuarantineLimits(max_rows=3, max_per_minute=100))
    # gate-1's one refused record: signed by gate-1 but claiming it is someone else's.
    card = Card("C1")
    forged = recharge(honest, card, 100)
    ingest.process([(records_topic("gate-1"), b"not a record")])
    ingest.process([(records_topic("thief-1"), b) for b in junk(10, 100)]
                   + [(records_topic("thief-1"), forged.wire)])
    assert held(engine, "gate-1")[0] == 1
    # The forged copy on thief-1's topic counts against thief-1, not gate-1.
    assert held(engine, "thief-1")[0] == 3
    assert budget(engine, "thief-1")["dropped_rows"] == 8
