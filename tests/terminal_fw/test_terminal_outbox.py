"""The terminal's identity and durable outbox."""

from __future__ import annotations

import os
import stat

import pytest

from protocol.record import GENESIS_HASH, Operation, TransactionRecord, decode_wire
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.card_memory import CardMemory
from terminal_fw.identity import load_or_create
from terminal_fw.outbox import Outbox
from tests.card_tx import make_runner, personalise, tap
from tests.card_world import CATALOGUE, KEYS, UID


def visit_content(device_id: str = "gate-01") -> TransactionRecord:
    return TransactionRecord(
        device_id=device_id, seq=1, prev_hash=GENESIS_HASH, device_time_ms=1000,
        card_id="M1", operation=Operation.TAKE_VISIT, store="s1", product="swim",
        visits_before=3, visits_after=2, card_counter=1,
    )


def test_identity_is_created_once_with_private_modes(tmp_path):
    secrets = tmp_path / "secrets"
    first = load_or_create(secrets, "gate-01", "s1")
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
    for f in secrets.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    again = load_or_create(secrets, "gate-01", "s1")
    assert again.public_key_hex == first.public_key_hex
    with pytest.raises(ValueError, match="identity of 'gate-01'"):
        load_or_create(secrets, "gate-02", "s1")
    with pytest.raises(ValueError):
        load_or_create(tmp_path / "x", "bad id!", "s1")


def test_outbox_chains_records_and_survives_reopen(tmp_path):
    ident = load_or_create(tmp_path / "k", "gate-01", "s1")
    box = Outbox(tmp_path / "t.db")
    signed = [box.append(visit_content(), ident.signing_key) for _ in range(3)]
    assert [s.record.seq for s in signed] == [1, 2, 3]
    assert signed[0].record.prev_hash == GENESIS_HASH
    assert signed[1].record.prev_hash == signed[0].record_hash
    assert signed[2].record.prev_hash == signed[1].record_hash
    box.close()

    reopened = Outbox(tmp_path / "t.db")  # as after a power cut: all of it is there
    assert [decode_wire(p.wire).record.seq for p in reopened.pending()] == [1, 2, 3]
    nxt = reopened.append(visit_content(), ident.signing_key)
    assert nxt.record.seq == 4 and nxt.record.prev_hash == signed[2].record_hash


def test_only_acknowledged_records_leave_and_the_chain_continues(tmp_path):
    ident = load_or_create(tmp_path / "k", "gate-01", "s1")
    box = Outbox(tmp_path / "t.db")
    for _ in range(5):
        box.append(visit_content(), ident.signing_key)
    assert box.acknowledge(3) == 3
    assert [p.seq for p in box.pending()] == [4, 5]
    assert box.acknowledge(99) == 2, "an ack beyond what we made covers only what we made"
    assert box.acked_through == 5 and box.backlog() == 0
    assert box.acknowledge(2) == 0 and box.acked_through == 5, "acks never move backwards"
    last = box.append(visit_content(), ident.signing_key)
    assert last.record.seq == 6


def swims(card: MifareClassic1K) -> int:
    return CardMemory(card, KEYS, CATALOGUE).read().state.visits_of("swim")


def test_gate_opens_only_with_a_committed_record(tmp_path):
    gate = make_runner(tmp_path)
    box = gate.outbox
    card = personalise(MifareClassic1K.blank(UID), visits=(("swim", 1),))
    first = tap(gate, card)
    assert first.ok and box.get(first.records[0].record.seq) == first.records[0].wire
    assert first.records[0].record.visits_before == 10 and first.records[0].record.visits_after == 9
    for _ in range(9):
        assert tap(gate, card).ok
    refused = tap(gate, card)
    assert not refused.ok and "no visits" in refused.reason
    assert box.backlog() == 10 and swims(card) == 0


def test_torn_card_write_makes_no_record_and_takes_no_visit(tmp_path):
    gate = make_runner(tmp_path)
    box = gate.outbox
    card = personalise(MifareClassic1K.blank(UID), visits=(("swim", 1),))
    card.tear_at_write(1, "before")
    assert tap(gate, card).retry
    card.enter_field()
    assert swims(card) == 10 and box.backlog() == 0
