"""The batch classification of ingest, without a database: duplicates, chain links,
what to post (hq_server.ingest.classify)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hq_server.ingest.classify import StoredRecord, classify
from protocol.record import GENESIS_HASH, Operation, Reason, SignedRecord, TransactionRecord

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def chain(n: int, device: str = "gate-01", start: int = 1, prev: bytes = GENESIS_HASH,
          visits: int = 50) -> list[SignedRecord]:
    out = []
    for seq in range(start, start + n):
        s = TransactionRecord(
            device_id=device, seq=seq, prev_hash=prev, device_time_ms=1_795_000_000_000 + seq,
            card_id="M00001", operation=Operation.TAKE_VISIT, store="store-01", product="swim",
            visits_before=visits, visits_after=visits - 1, card_counter=seq).sign(KEY)
        out.append(s)
        prev, visits = s.record_hash, visits - 1
    return out


def stored(*signed: SignedRecord, status: str = "posted") -> dict:
    return {(s.record.device_id, s.record.seq): StoredRecord(s.record_hash, s.record.prev_hash,
                                                             status) for s in signed}


def test_a_chain_in_one_batch_is_posted_whatever_its_order():
    records = chain(3)
    batch = classify(list(reversed(records)), {})
    assert [s.record.seq for s in batch.to_post] == [1, 2, 3]
    assert batch.duplicates == 0 and not batch.rejected
    assert batch.devices == {"gate-01"}


def test_a_record_already_stored_is_a_duplicate_and_nothing_to_store():
    records = chain(2)
    batch = classify(records, stored(records[0]))
    assert batch.duplicates == 1
    assert list(batch.fresh) == [("gate-01", 2)] and batch.status[("gate-01", 2)] == "posted"


def test_the_same_record_twice_in_one_batch_is_stored_once():
    records = chain(1)
    batch = classify(records * 2, {})
    assert batch.duplicates == 1 and len(batch.to_post) == 1


def test_other_content_under_a_stored_sequence_is_a_conflicting_duplicate():
    original, forged = chain(1)[0], chain(1, visits=99)[0]
    batch = classify([forged], stored(original))
    assert not batch.fresh
    assert [r.error.reason for r in batch.rejected] == [Reason.CONFLICTING_DUPLICATE]
    assert batch.rejected[0].device_id == "gate-01" and batch.rejected[0].seq == 1


def test_a_record_off_its_chain_is_stored_as_evidence_not_posted():
    first = chain(1)[0]
    stray = chain(1, start=2, prev=b"\x01" * 32)[0]
    batch = classify([stray], stored(first))
    assert batch.status[("gate-01", 2)] == "quarantined" and not batch.to_post
    assert [r.error.reason for r in batch.rejected] == [Reason.BROKEN_CHAIN]


def test_a_record_is_checked_against_its_stored_successor():
    one, two = chain(2)
    other_one = chain(1, visits=7)[0]
    batch = classify([other_one], stored(two))
    assert [r.error.reason for r in batch.rejected] == [Reason.BROKEN_CHAIN]
    assert batch.status[("gate-01", 1)] == "quarantined"
    assert classify([one], stored(two)).status[("gate-01", 1)] == "posted"


def test_a_quarantined_predecessor_vouches_for_nothing_like_a_gap():
    # Its hash is not taken as the chain's: the record is judged as after a gap (and
    # verify-ledger reports a posted record whose predecessor is quarantined).
    one, two = chain(2)
    stray_two = chain(1, start=2, prev=b"\x03" * 32)[0]
    assert classify([two], stored(one, status="quarantined")).status[("gate-01", 2)] == "posted"
    assert classify([stray_two], stored(one, status="quarantined")).to_post == [stray_two]


def test_a_gap_does_not_stop_a_record_being_posted():
    records = chain(3)
    batch = classify([records[2]], {})  # #1 and #2 are still on their way
    assert [s.record.seq for s in batch.to_post] == [3]


def test_losing_a_race_turns_a_fresh_record_into_a_duplicate_or_a_conflict():
    records = chain(2)
    batch = classify(records, {})
    batch.lost_race(("gate-01", 1), records[0].record_hash)
    assert batch.duplicates == 1 and list(batch.fresh) == [("gate-01", 2)]
    batch.lost_race(("gate-01", 2), b"\x02" * 32)
    assert not batch.fresh
    assert [r.error.reason for r in batch.rejected] == [Reason.CONFLICTING_DUPLICATE]


def test_records_to_store_come_in_key_order():
    a = chain(2, device="gate-02")
    b = chain(2, device="gate-01")
    batch = classify([a[1], b[1], a[0], b[0]], {})
    assert list(batch.fresh) == sorted(batch.fresh)
