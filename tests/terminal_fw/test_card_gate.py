"""The gate takes visits from MIFARE Classic cards in our format, torn taps included.

The gate here is the deployed path, :class:`terminal_fw.tap.TapRunner` (see
``tests/card_tx.py``): a tap that may open the gate is a ``TapResult`` with ``ok``; a
card that left mid-write asks for another tap (``retry``) and its intent journal settles
the torn write when the card comes back.
"""

from __future__ import annotations

from protocol.card_state import RefusalReason
from protocol.record import Flag, Operation, decode_wire
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.card_memory import CardMemory
from terminal_fw.tap import Status
from tests.card_tx import make_runner, personalise, tap
from tests.card_world import CATALOGUE, KEYS, UID


def swim_card(visits_packages: int = 1) -> MifareClassic1K:
    card = MifareClassic1K.blank(UID)
    personalise(card, visits=(("swim", visits_packages),))
    return card


def test_gate_takes_visits_from_our_cards(tmp_path) -> None:
    tx = make_runner(tmp_path, offline=lambda: True)
    card = swim_card()
    d = tap(tx, card)
    assert d.ok and len(d.records) == 1 and not d.free
    r = d.records[0].record
    assert (r.operation, r.product, r.visits_before, r.visits_after) == \
        (Operation.TAKE_VISIT, "swim", 10, 9)
    assert r.flags == Flag.OFFLINE and tx.outbox.get(r.seq) == d.records[0].wire
    assert CardMemory(card, KEYS, CATALOGUE).read().state.visits == {"swim": 9}
    assert tx.journal.counts() == {Status.DONE.value: 1}, "served: the intent is settled"


def test_gate_refuses_with_the_reason_and_blocks_denylisted_cards(tmp_path) -> None:
    tx = make_runner(tmp_path, denylist=frozenset({"M00001"}))
    card = swim_card()
    d = tap(tx, card)
    assert not d.ok and not d.retry and RefusalReason.DENYLISTED.value in d.reason
    assert d.refusal is not None and d.refusal.reason is RefusalReason.DENYLISTED
    assert [s.record.operation for s in d.records] == [Operation.BLOCK]
    assert CardMemory(card, KEYS, CATALOGUE).read().state.blocked
    again = tap(tx, card)
    assert not again.ok and RefusalReason.DENYLISTED.value in again.reason
    assert again.records == ()
    blank = tap(tx, MifareClassic1K.blank(bytes.fromhex("01020304")))
    assert not blank.ok and RefusalReason.NOT_ONECARD.value in blank.reason
    assert [decode_wire(p.wire).record.operation for p in tx.outbox.pending()] == [Operation.BLOCK]
    assert not tx.journal.unresolved()


def test_a_tap_torn_at_the_commit_is_settled_on_the_next_tap(tmp_path) -> None:
    for mode, charged in (("after", True), ("before", False)):
        tx = make_runner(tmp_path / mode)
        card = swim_card()
        card.tear_at_write(3, mode)  # the last block of the commit
        d = tap(tx, card)
        assert not d.ok and d.retry and "tap again" in d.reason and tx.outbox.backlog() == 0
        [pending] = tx.journal.unresolved(UID)
        assert pending.status is Status.OPEN, "unknown until the card is read again"
        card.enter_field()
        d = tap(tx, card)
        assert d.ok and len(d.records) == 1, (mode, d)
        # landed: the member paid at the torn tap and is let in for it, not charged again
        assert d.free == charged, mode
        assert tx.outbox.backlog() == 1, "one visit recorded, whatever the tear did"
        assert CardMemory(card, KEYS, CATALOGUE).read().state.visits == {"swim": 9}
        assert d.records[0].record.visits_after == 9, (mode, charged)
        assert not tx.journal.unresolved(), mode
        settled = {Status.DONE.value: 1} if charged else \
            {Status.DONE.value: 1, Status.ABANDONED.value: 1}
        assert tx.journal.counts() == settled, mode


def test_a_tap_torn_before_the_commit_charges_nothing(tmp_path) -> None:
    tx = make_runner(tmp_path)
    card = swim_card()
    card.tear_at_write(1, "garbage")
    d = tap(tx, card)
    assert not d.ok and d.retry and tx.outbox.backlog() == 0
    assert not tx.journal.unresolved(), "the card kept its old state: nothing to settle"
    card.enter_field()
    assert CardMemory(card, KEYS, CATALOGUE).read().state.visits == {"swim": 10}
    again = tap(tx, card)
    assert again.ok and not again.free and tx.outbox.backlog() == 1
