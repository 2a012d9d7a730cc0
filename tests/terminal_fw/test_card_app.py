"""Our card application over the simulator's chip, through the deployed path (the tap
runner on :class:`terminal_fw.card_memory.CardMemory`): keys and access bits enforced,
and torn writes at every step never create or lose value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.card_format import CardFormatError
from protocol.card_ops import (
    CheckoutLine,
    add_visits,
    debit,
    issue,
    read_balance,
    recall,
    recharge,
    refund,
    take_visit,
)
from protocol.card_state import RefusalReason
from protocol.keys import TRANSPORT_KEY, trailer
from protocol.mifare import AccessDenied, CardRemoved, KeyType, SectorAuthFailed
from protocol.record import Operation, check_consistency
from simulators.mifare_classic import MifareClassic1K
from terminal_fw.card_memory import CardMemory
from terminal_fw.tap import TapRunner
from tests.card_tx import make_runner, personalise
from tests.card_world import CATALOGUE, KEYS, MINUTE, T0, UID


def service(denylist: frozenset[str] = frozenset(), *, gate_group: int = 0,
            clock: list[int] | None = None) -> TapRunner:
    """A terminal's tap runner with its stores in memory; ``clock`` a one-item list
    holding the time in ms (T0 unless given)."""
    now = clock if clock is not None else [T0]
    return make_runner(None, denylist=denylist, gate_group=gate_group,
                       clock=lambda: now[0] / 1000, operator="op1")


def issued_card(purse: int = 0, uid: bytes = UID) -> MifareClassic1K:
    return personalise(MifareClassic1K.blank(uid), opening_fen=purse)  # type: ignore[return-value]


def test_issue_locks_the_sectors_with_diversified_keys() -> None:
    card = issued_card(5_000)
    with pytest.raises(SectorAuthFailed):
        card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    card.authenticate(8, KeyType.A, KEYS.key_a(UID, 2))
    assert card.read_block(8)[:4] == (5_000).to_bytes(4, "little")
    with pytest.raises(AccessDenied):
        card.write_block(8, bytes(16))  # key A only reads
    card.authenticate(8, KeyType.A, KEYS.key_a(UID, 2))
    with pytest.raises(AccessDenied):
        card.write_block(11, bytes(16))  # nor may it rewrite the trailer
    card.authenticate(8, KeyType.B, KEYS.key_b(UID, 2))
    card.write_block(9, card.read_block(9))
    read = CardMemory(card, KEYS.read_only(), CATALOGUE).read()  # a kiosk reads with key A only
    assert read.state.purse_fen == 5_000 and read.state.account_open


def test_operations_through_the_chip() -> None:
    card = issued_card(100_000)
    clock = [T0]
    svc = service(gate_group=1, clock=clock)
    r = svc.run(card, add_visits, "swim")
    assert r.ok and r.records[0].record.operation is Operation.ADD_VISITS
    r = svc.run(card, take_visit)
    assert r.ok and r.state is not None and r.state.visits == {"swim": 9}
    clock[0] = T0 + MINUTE
    r = svc.run(card, take_visit)
    assert not r.ok and not r.records and r.refusal is not None
    assert r.refusal.reason is RefusalReason.ANTI_PASSBACK
    r = svc.run(card, debit, [CheckoutLine("food", 10_000)])
    assert r.ok and r.state is not None and r.state.purse_fen == 110_000 - 8_800
    r = svc.run(card, refund, r.records[0].record)
    assert r.ok and r.state is not None and r.state.purse_fen == 110_000
    state = CardMemory(card, KEYS, CATALOGUE).read().state
    assert (state.purse_fen, state.visits, state.counter) == (110_000, {"swim": 9}, 6)


def test_denylisted_card_is_blocked_on_the_card_then_refused() -> None:
    card = issued_card(1_000)
    r = service(frozenset({"M00001"})).run(card, take_visit)
    assert not r.ok and r.refusal is not None
    assert r.refusal.reason is RefusalReason.DENYLISTED
    assert [x.record.operation for x in r.records] == [Operation.BLOCK]
    r = service().run(card, recharge, 100)  # even where the list is not known
    assert not r.ok and not r.records and r.refusal is not None
    assert r.refusal.reason is RefusalReason.BLOCKED


def test_recalled_card_is_issued_again() -> None:
    card = issued_card(1_000)
    svc = service()
    assert svc.run(card, recall).ok
    r = svc.run(card, issue, card_id="M00002", card_product="guest")
    assert r.ok
    state = CardMemory(card, KEYS, CATALOGUE).read().state
    assert (state.card_id, state.card_product, state.counter) == ("M00002", "guest", 4)


def test_other_cards_are_refused() -> None:
    blank = MifareClassic1K.blank(UID)
    r = service().run(blank, take_visit)
    assert r.refusal is not None and r.refusal.reason is RefusalReason.NOT_ONECARD
    # a dump written onto a magic card with another UID: the diversified keys do not open it
    dump = issued_card(40_000).to_mfd()
    clone = MifareClassic1K.blank(bytes.fromhex("0A0B0C0D"), magic=True)
    clone.authenticate(0, KeyType.A, TRANSPORT_KEY)
    for block in range(1, 64):
        if block % 4 == 0:
            clone.authenticate(block, KeyType.A, TRANSPORT_KEY)
        if block % 4 != 3:
            clone.write_block(block, dump[block * 16 : block * 16 + 16])
    r = service().run(clone, take_visit)
    assert r.refusal is not None and r.refusal.reason is RefusalReason.NOT_ONECARD
    # even with trailers holding the other UID's keys (both cards cracked), the MAC,
    # bound to the UID, refuses the copied data
    with pytest.raises(CardFormatError) as err:
        CardMemory(MifareClassic1K(bytes.fromhex("0A0B0C0D"), _moved(dump, "0A0B0C0D")),
                KEYS, CATALOGUE).read()
    assert err.value.reason is RefusalReason.TAMPERED
    # a same-UID clone reads fine: only HQ can see it, by the card counter
    same = MifareClassic1K.from_mfd(dump, magic=True)
    assert CardMemory(same, KEYS, CATALOGUE).read().state.purse_fen == 40_000


def _moved(dump: bytes, uid_hex: str) -> bytes:
    uid = bytes.fromhex(uid_hex)
    out = bytearray(uid + bytes([uid[0] ^ uid[1] ^ uid[2] ^ uid[3]]) + dump[5:])
    for sector in (1, 2, 3):
        t = (sector * 4 + 3) * 16
        out[t : t + 16] = trailer(KEYS.key_a(uid, sector), KEYS.key_b(uid, sector))
    return bytes(out)


@pytest.mark.parametrize("mode", ["before", "after", "garbage"])
def test_a_recharge_torn_at_each_write(mode: str) -> None:
    """Exhaustive: tear the n-th write of a recharge, for every n and every mode."""
    for n in range(1, 8):
        card = issued_card(1_000)
        svc = service()
        card.tear_at_write(n, mode, seed=n)  # type: ignore[arg-type]
        svc.run(card, recharge, 500)
        card.enter_field()
        svc.run(card, read_balance)  # the next tap settles what the tear left unknown
        assert not svc.journal.unresolved()
        state = CardMemory(card, KEYS, CATALOGUE).read().state
        landed = not (n < 3 or (n == 3 and mode != "after"))
        if landed:
            assert state.purse_fen == 1_500 and state.counter == 3
        else:
            assert state.purse_fen == 1_000 and state.counter == 2
        assert svc.outbox.backlog() == (1 if landed else 0), (n, mode)


OPS = st.one_of(
    st.tuples(st.just("recharge"), st.integers(1, 200_000)),
    st.tuples(st.just("debit"), st.integers(0, 60_000)),
    st.tuples(st.just("add_visits"), st.sampled_from(["swim", "gym"])),
    st.tuples(st.just("take_visit"), st.integers(0, 3)),
    st.tuples(st.just("refund"), st.just(0)),
)


@settings(max_examples=2500, deadline=None)
@given(
    ops=st.lists(OPS, min_size=1, max_size=6),
    tear_at=st.integers(1, 40),
    mode=st.sampled_from(["before", "after", "garbage"]),
    seed=st.integers(0, 2**16),
)
def test_torn_writes_never_create_or_lose_value(ops, tear_at, mode, seed) -> None:
    """Any sequence of operations, one tear at any write: the card always reads, and
    its purse and visits are exactly what the signed records say."""
    card = issued_card(10_000)
    clock = [T0]
    svc = service(clock=clock)
    state = CardMemory(card, KEYS, CATALOGUE).read().state
    purse, visits, counter = state.purse_fen, dict(state.visits), state.counter
    card.tear_at_write(tear_at, mode, seed=seed)
    last_debit = None
    for step, (name, arg) in enumerate([*ops, ("read_balance", 0)]):
        clock[0] = T0 + step * 20 * MINUTE
        try:
            if name == "recharge":
                result = svc.run(card, recharge, arg)
            elif name == "debit":
                result = svc.run(card, debit, [CheckoutLine("shop", arg)])
            elif name == "add_visits":
                result = svc.run(card, add_visits, arg)
            elif name == "take_visit":
                result = svc.run(card, take_visit)
            elif name == "read_balance":  # the last tap settles what a tear left unknown
                result = svc.run(card, read_balance)
            elif last_debit is not None:
                result = svc.run(card, refund, last_debit)
            else:
                continue
        except CardRemoved:  # left while being read: nothing happened
            card.enter_field()
            continue
        if not card.present:
            card.enter_field()
        for signed in result.records:
            record = signed.record
            check_consistency(record)
            assert record.card_counter > counter
            counter = record.card_counter
            purse += record.purse_after - record.purse_before
            if record.product:
                visits[record.product] = visits.get(record.product, 0) + \
                    record.visits_after - record.visits_before
            if record.operation is Operation.DEBIT:
                last_debit = record
            elif record.operation is Operation.REFUND:
                last_debit = None
        if svc.journal.unresolved():
            continue  # a write the tear left unknown: the card's next tap settles it
        on_card = CardMemory(card, KEYS, CATALOGUE).read().state
        assert on_card.purse_fen == purse
        assert on_card.counter == counter
        assert {k: v for k, v in on_card.visits.items() if v} == {k: v for k, v in visits.items() if v}
    assert not svc.journal.unresolved()
    assert svc.outbox.backlog() == len(svc.outbox.records())
    svc.close()


def test_a_card_that_refuses_the_write_is_not_charged() -> None:
    card = issued_card(1_000)
    for sector in (2, 3):  # make the state sectors read-only, even for key B
        card.authenticate(sector * 4, KeyType.B, KEYS.key_b(UID, sector))
        card.write_block(sector * 4 + 3, trailer(KEYS.key_a(UID, sector), KEYS.key_b(UID, sector),
                                                 (0b010, 0b010, 0b010, 0b011)))
    r = service().run(card, recharge, 500)
    assert not r.ok and r.retry and r.records == ()
    assert CardMemory(card, KEYS, CATALOGUE).read().state.purse_fen == 1_000
