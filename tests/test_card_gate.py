"""The gate takes visits from MIFARE Classic cards in our format, torn taps included."""

from __future__ import annotations

from protocol.card_ops import add_visits, issue, open_account
from protocol.card_state import RefusalReason
from protocol.record import Flag, Operation, decode_wire
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.card_app import CardApp, CardService, WriteStatus
from terminal_fw.gate import Gate
from terminal_fw.identity import load_or_create
from terminal_fw.outbox import Outbox
from tests.card_world import CATALOGUE, KEYS, T0, UID, ctx
from tests.fleet import member_card


def swim_card(visits_packages: int = 1) -> MifareClassic1K:
    card = MifareClassic1K.blank(UID)
    svc = CardService(KEYS, CATALOGUE)
    for op, args in ((issue, ()), (open_account, (0,)), (add_visits, ("swim", visits_packages))):
        kwargs = {"card_id": "M00001", "card_product": "gold"} if op is issue else {}
        assert svc.run(card, op, *args, ctx=ctx(), **kwargs).status is WriteStatus.WRITTEN
    return card


def make_gate(tmp_path, denylist=frozenset(), **kw) -> tuple[Gate, Outbox]:
    ident = load_or_create(tmp_path / "k", "gate-01", "store-01")
    box = Outbox(tmp_path / "t.db")
    svc = CardService(KEYS, CATALOGUE, denylist=lambda: denylist)
    gate = Gate(ident, box, "swim", card_service=svc, clock=lambda: T0 / 1000, **kw)
    return gate, box


def test_gate_takes_visits_from_our_cards_and_still_serves_the_old_path(tmp_path) -> None:
    gate, box = make_gate(tmp_path, offline=lambda: True)
    card = swim_card()
    d = gate.tap(card)
    assert d.opened and d.record is not None
    r = d.record.record
    assert (r.operation, r.product, r.visits_before, r.visits_after) == \
        (Operation.TAKE_VISIT, "swim", 10, 9)
    assert r.flags == Flag.OFFLINE and box.get(r.seq) == d.record.wire
    assert CardApp(card, KEYS, CATALOGUE).read().state.visits == {"swim": 9}
    old = gate.tap(member_card(visits=1))  # the in-process CardAccess path is unchanged
    assert old.opened


def test_gate_refuses_with_the_reason_and_blocks_denylisted_cards(tmp_path) -> None:
    gate, box = make_gate(tmp_path, denylist=frozenset({"M00001"}))
    card = swim_card()
    d = gate.tap(card)
    assert not d.opened and RefusalReason.DENYLISTED.value in d.reason
    assert d.record is not None and d.record.record.operation is Operation.BLOCK
    assert CardApp(card, KEYS, CATALOGUE).read().state.blocked
    again = gate.tap(card)
    assert not again.opened and RefusalReason.DENYLISTED.value in again.reason
    blank = gate.tap(MifareClassic1K.blank(bytes.fromhex("01020304")))
    assert not blank.opened and RefusalReason.NOT_ONECARD.value in blank.reason
    assert [decode_wire(p.wire).record.operation for p in box.pending()] == [Operation.BLOCK]


def test_a_tap_torn_at_the_commit_is_settled_on_the_next_tap(tmp_path) -> None:
    for mode, charged in (("after", True), ("before", False)):
        gate, box = make_gate(tmp_path / mode)
        card = swim_card()
        card.tear_at_write(3, mode)  # the last block of the commit
        d = gate.tap(card)
        assert not d.opened and "tap again" in d.reason and box.backlog() == 0
        card.enter_field()
        d = gate.tap(card)
        assert d.opened and d.record is not None
        assert box.backlog() == 1, "one visit recorded, whatever the tear did"
        assert CardApp(card, KEYS, CATALOGUE).read().state.visits == {"swim": 9}
        assert d.record.record.visits_after == 9, (mode, charged)


def test_a_tap_torn_before_the_commit_charges_nothing(tmp_path) -> None:
    gate, box = make_gate(tmp_path)
    card = swim_card()
    card.tear_at_write(1, "garbage")
    d = gate.tap(card)
    assert not d.opened and box.backlog() == 0
    card.enter_field()
    assert CardApp(card, KEYS, CATALOGUE).read().state.visits == {"swim": 10}
    assert gate.tap(card).opened
