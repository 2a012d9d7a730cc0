"""Hostile records at ingest: one bad message is refused alone, the batch goes on.

A stolen terminal holds a valid key, so what it signs passes the signature check; what
it sends must still never stop ingest nor make HQ drop other devices' records.
"""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hq_server.db.tables import quarantine, records
from hq_server.ingest.batch import Ingest
from hq_server.ledger.check import check_ledger
from hq_server.reports.figures import ingest_figures
from protocol.record import Operation, TransactionRecord, decode_wire
from protocol.topics import records_topic
from tests.hq_records import STORES, Card, Till, recharge, store_engine


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def signed_with_extra(till: Till, extra_raw: bytes) -> bytes:
    """A record of ``till`` whose ``extra`` bytes are ``extra_raw``, validly signed."""
    till.seq += 1
    body = TransactionRecord(device_id=till.device_id, seq=till.seq, prev_hash=till.head,
                             device_time_ms=1_700_000_000_000, card_id="C1",
                             operation=Operation.TAKE_VISIT, store=till.store).encode()
    assert body.endswith(b"\x00\x00")  # an empty extra: its 2-byte length, then nothing
    body = body[:-2] + struct.pack(">H", len(extra_raw)) + extra_raw
    return body + till.key.sign(body)


def nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


def good_batch(tills: list[Till], per_till: int = 3) -> list[tuple[str, bytes]]:
    out = []
    for i, till in enumerate(tills):
        card = Card(f"G{i}")
        out += [till.message(recharge(till, card, 100)) for _ in range(per_till)]
    return out


def quarantined_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(quarantine)).mappings()]


def test_deeply_nested_extra_is_quarantined_alone_and_the_batch_is_posted(engine):
    """Hole 1: a signed record whose extra nests thousands deep used to raise
    RecursionError out of Ingest.prepare and drop every device's records."""
    thief = Till("thief-1", "S1").register(engine)
    honest = [Till(f"gate-{i}", "S1").register(engine) for i in range(3)]
    # 2000 levels fit the 4 KB that extra may take, and are twice Python's recursion limit.
    bomb = (records_topic(thief.device_id), signed_with_extra(thief, nested(2000)))
    good = good_batch(honest)
    batch = good[:4] + [bomb] + good[4:]

    result = Ingest(engine).process(batch)

    assert result.posted == len(good)
    assert result.rejected == {"malformed": 1}
    for till in honest:
        assert result.acks[till.device_id].through == 3
    rows = quarantined_rows(engine)
    assert [(r["device_id"], r["reason"]) for r in rows] == [("thief-1", "malformed")]
    assert "nest" in rows[0]["detail"]
    assert check_ledger(engine).balanced


def test_a_storm_of_bombs_never_stops_other_devices(engine):
    thief = Till("thief-1", "S1").register(engine)
    honest = Till("gate-1", "S1").register(engine)
    ingest = Ingest(engine)
    card = Card("G1")
    posted = 0
    for _ in range(10):
        bombs = [(records_topic(thief.device_id), signed_with_extra(thief, nested(3000)))
                 for _ in range(3)]
        posted += ingest.process(bombs + [honest.message(recharge(honest, card, 10))]).posted
    assert posted == 10
    assert ingest_figures(engine)["records_ledgered"] == 10


def test_the_largest_sequence_number_is_refused_at_the_decoder(engine):
    """Hole 6: seq = 2**63 - 1 passed the decoder and then failed in storage
    (OverflowError on seq + 1), taking the batch with it."""
    thief = Till("thief-1", "S1").register(engine)
    honest = Till("gate-1", "S1").register(engine)
    # Encoded by hand: the encoder itself refuses it.
    raw = (b"OC\x01" + bytes([7]) + b"thief-1" + struct.pack(">Q", 2**63 - 1) + bytes(32)
           + struct.pack(">q", 1) + b"\x02C1" + bytes([int(Operation.TAKE_VISIT)]) + b"\x00"
           + bytes(struct.calcsize(">qqiiqqqIH")) + b"\x02S1" + b"\x00" + b"\x00\x00")
    wire = raw + thief.key.sign(raw)
    good = good_batch([honest])
    result = Ingest(engine).process([(records_topic("thief-1"), wire), *good])
    assert result.posted == 3
    assert result.rejected == {"malformed": 1}
    assert [r["device_id"] for r in quarantined_rows(engine)] == ["thief-1"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_random_bytes_on_a_device_topic_never_block_good_records(sqlite_url, junk):
    from hq_server.db.engine import open_engine

    engine = open_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(records.delete())
    honest_id = f"gate-{uuid.uuid4().hex[:12]}"
    honest = Till(honest_id, "S1").register(engine)
    batch = [(records_topic("thief-1"), b) for b in junk] + good_batch([honest], 2)
    result = Ingest(engine).process(batch)
    assert result.posted == 2
    assert sum(result.rejected.values()) == len(junk)
    for row in quarantined_rows(engine):
        assert row["device_id"] == "thief-1"
    engine.dispose()


def test_an_undecodable_record_is_attributed_to_its_topics_device(engine):
    """Hole 8 (attribution): quarantine rows used to carry no device when the record
    could not be decoded, although the topic names the sender."""
    Till("thief-1", "S1").register(engine)
    Ingest(engine).process([(records_topic("thief-1"), b"\x00" * 100)])
    assert [r["device_id"] for r in quarantined_rows(engine)] == ["thief-1"]


def test_decode_of_the_bomb_is_a_clear_refusal():
    till = Till("thief-1", "S1")
    from protocol.record import Reason, RecordRejected

    with pytest.raises(RecordRejected) as info:
        decode_wire(signed_with_extra(till, nested(5000)))
    assert info.value.reason is Reason.MALFORMED
