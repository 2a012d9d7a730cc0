"""The gate's visit and a checkout, the same test cases on both reader paths.

PC/SC: pyscard → pcscd → vpcd → simulated reader → chip model. PN532: pyserial → pty →
emulated PN532 → chip model. The gate is the deployed path,
:class:`terminal_fw.tap.TapRunner` (``tests/card_tx.py``). A card torn away at
every write of a visit must leave a valid card, and the card, the outbox and the intent
journal must agree once the member taps again: one visit taken, one record, nothing left
unsettled.
"""

from __future__ import annotations

import pytest

from protocol.card_ops import CheckoutLine, debit, take_visit
from protocol.card_state import RefusalReason
from protocol.record import Operation
from simulators.mifare_classic import MifareClassic1K
from simulators.pn532_emulator import Pn532Emulator
from terminal_fw.card_memory import CardMemory, WriteStatus
from terminal_fw.tap import Status, TapRunner
from tests import pcsc_fixtures
from tests.card_tx import make_runner, personalise, tap
from tests.card_world import CATALOGUE, KEYS, T0, ctx
from tests.reader_paths import PcscPath, Pn532Path

pcscd = pcsc_fixtures.pcscd
vpcd_pair = pcsc_fixtures.vpcd_pair
UID = bytes.fromhex("C0FFEE01")


@pytest.fixture(params=["pcsc", "pn532"])
def path(request):
    if request.param == "pcsc":
        entry, _ = request.getfixturevalue("vpcd_pair")
        p = PcscPath(entry)
        yield p
        p.close()
    else:
        emulator = Pn532Emulator(pcsc_fixtures_free_field()).start()
        p = Pn532Path(emulator)
        yield p
        p.close()
        emulator.stop()


def pcsc_fixtures_free_field():
    from simulators.card_field import CardField

    return CardField("pn532")


def member_card(purse_fen: int = 100_000, swims: int = 1) -> MifareClassic1K:
    """An issued gold card with money and ``swims`` ten-visit swim packages."""
    card = MifareClassic1K.blank(UID)
    personalise(card, "M00042", opening_fen=purse_fen, visits=(("swim", 1),) * swims)
    card.enter_field()
    return card


def card_state(card: MifareClassic1K):
    card.enter_field()
    return CardMemory(card, KEYS, CATALOGUE).read().state


def hourly_clock():
    """Every reading an hour after the last: no anti-passback between taps."""
    clock = iter(range(10_000))
    return lambda: T0 / 1000 + next(clock) * 3600


@pytest.fixture
def gate(tmp_path) -> TapRunner:
    return make_runner(tmp_path, clock=hourly_clock())


def test_visit_opens_the_gate_and_records_it(path, gate):
    card = member_card()
    result = tap(gate, path.tap(card))
    path.take_away()
    assert result.ok, result.reason
    assert card_state(card).visits == {"swim": 9}
    records = gate.outbox.records()
    assert [r.record.operation for r in records] == [Operation.TAKE_VISIT]
    assert records[0].record.visits_after == 9
    assert result.records == tuple(records)
    assert gate.journal.counts() == {Status.DONE.value: 1}


def test_checkout_from_the_purse(path, gate):
    card = member_card(purse_fen=50_000)
    before = card_state(card).purse_fen  # 50 000 plus the recharge bonus
    link = path.tap(card)
    result = gate.run(link, debit, [CheckoutLine("food", 10_000, 2)])
    path.take_away()
    assert result.ok, result.reason
    assert card_state(card).purse_fen == before - 17_600  # gold pays 88% for food
    records = gate.outbox.records()
    assert tuple(records) == result.records, "the records signed are the ones committed"
    assert records[0].record.purse_after == before - 17_600
    assert gate.journal.counts() == {Status.DONE.value: 1}, "nothing to serve: done at once"


def test_refused_card_keeps_the_gate_shut(path, gate):
    card = member_card(swims=0)
    result = tap(gate, path.tap(card))
    path.take_away()
    assert not result.ok and not result.retry
    assert result.refusal is not None and result.refusal.reason is RefusalReason.EXHAUSTED
    assert gate.outbox.records() == []
    assert gate.journal.counts() == {}, "refused before any write: no intent"


def _writes_per_visit(folder) -> tuple[int, int]:
    """EEPROM writes of one visit on the gate's path: (the commit's, all of them)."""
    card = member_card()
    app = CardMemory(card, KEYS, CATALOGUE)
    read = app.read(for_write=True)
    done = take_visit(read.state, catalogue=CATALOGUE, ctx=ctx(T0 + 3_600_000))
    before = card.writes
    assert app.write(read, done.state, mirror=False) is WriteStatus.WRITTEN
    commit = card.writes - before
    card = member_card()
    before = card.writes
    assert tap(make_runner(folder, clock=hourly_clock()), card).ok
    total = card.writes - before
    assert 0 < commit < total, (commit, total)
    return commit, total


@pytest.mark.parametrize("mode", ["before", "after", "garbage"])
def test_card_torn_at_every_write_of_a_visit(path, gate, mode, tmp_path):
    """Pull the card at write n (each n in turn). The card stays valid and always agrees
    with the outbox (visits taken == records made); the gate opens only once the visit
    is on the card and recorded; after at most one more tap the member is in, charged
    exactly once, and the intent journal holds nothing unsettled."""
    commit_last, writes = _writes_per_visit(tmp_path / "count")
    for n in range(1, writes + 1):
        card = member_card()
        start = len(gate.outbox.records())
        card.tear_at_write(n, mode, seed=n)
        result = tap(gate, path.tap(card))
        path.take_away()
        made = len(gate.outbox.records()) - start
        visits = card_state(card).visits["swim"]  # raises if the card were left invalid
        # (9, 0): the commit's last write landed but its answer was lost; the intent stays
        # open and is recorded when the card is read again at the next tap
        assert (visits, made) in ((10, 0), (9, 1), (9, 0)), f"write {n} ({mode})"
        assert result.ok == (made == 1), f"write {n} ({mode}): {result}"
        assert result.retry == (not result.ok), f"write {n} ({mode}): {result}"
        unsettled = gate.journal.unresolved(UID)
        # only a tear at the commit's last block leaves the outcome to the next tap
        assert len(unsettled) == (n == commit_last), f"write {n} ({mode}): {unsettled}"
        assert all(i.status is Status.OPEN for i in unsettled), f"write {n} ({mode})"
        if not result.ok:
            again = tap(gate, path.tap(card))
            path.take_away()
            assert again.ok, f"write {n} ({mode}): {again.reason}"
            # served for the torn tap when the visit had landed on the card: no new charge
            assert again.free == (visits == 9), f"write {n} ({mode}): {again}"
        new = gate.outbox.records()[start:]
        assert card_state(card).visits == {"swim": 9}, f"write {n} ({mode})"
        assert len(new) == 1 and new[0].record.visits_after == 9, f"write {n} ({mode})"
        assert not gate.journal.unresolved(UID), f"write {n} ({mode})"
