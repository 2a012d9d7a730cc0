"""Inter-store settlement: derived from the ledger, netted, summing to zero."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hq_server.ingest.batch import ingest_all
from hq_server.ledger.check import check_ledger
from hq_server.ledger.writer import LedgerError
from hq_server.reports.figures import account_balance
from hq_server.settlement.rules import PurseMovement, match_movements, settlement_matrix
from hq_server.settlement.runs import period_matrix, post_settlement
from protocol.record import Operation
from tests.hq_records import STORES, Card, Till, debit, recharge, store_engine


def mv(card: str, store: str, amount: int, at: int) -> PurseMovement:
    return PurseMovement(card, store, amount, at, f"t{at:06d}")


def test_money_loaded_in_one_store_and_spent_in_another_is_owed_to_the_spender():
    lines = match_movements([
        mv("M1", "A", 100, 1), mv("M1", "B", -30, 2), mv("M1", "A", -20, 3),
        mv("M1", "C", 50, 4), mv("M1", "B", -70, 5),  # 50 left of A's lot, then 20 of C's
    ])
    m = settlement_matrix(lines, 0, 10)
    assert m.owes == {("A", "B"): 80, ("C", "B"): 20}
    assert m.net == {"A": -80, "B": 100, "C": -20}
    assert m.total() == 0 and sum(m.net.values()) == 0


def test_debts_both_ways_are_netted_and_periods_split_by_the_later_movement():
    lines = match_movements([
        mv("M1", "A", 100, 1), mv("M1", "B", -100, 5),  # A owes B 100, matched at 5
        mv("M2", "B", 60, 2), mv("M2", "A", -60, 12),  # B owes A 60, matched at 12
    ])
    first, second = settlement_matrix(lines, 0, 10), settlement_matrix(lines, 10, 20)
    assert first.owes == {("A", "B"): 100}
    assert second.owes == {("B", "A"): 60}
    assert settlement_matrix(lines, 0, 20).owes == {("A", "B"): 40}


def test_a_spend_posted_before_its_load_waits_for_it():
    lines = match_movements([mv("M1", "B", -50, 1), mv("M1", "A", 80, 2)])
    assert settlement_matrix(lines, 0, 10).owes == {("A", "B"): 50}


movement = st.tuples(st.sampled_from(["M1", "M2", "M3"]), st.sampled_from("ABCD"),
                     st.integers(-500, 500).filter(bool), st.integers(0, 100))


@settings(max_examples=300, deadline=None)
@given(st.lists(movement, max_size=40), st.integers(0, 100), st.integers(1, 100))
def test_any_matrix_sums_to_zero_and_never_owes_more_than_was_spent(moves, start, length):
    movements = [PurseMovement(c, s, a, t, f"t{i}") for i, (c, s, a, t) in enumerate(moves)]
    m = settlement_matrix(match_movements(movements), start, start + length)
    assert m.total() == 0
    assert sum(m.net.values()) == 0
    assert all(v > 0 for v in m.owes.values())
    assert not any((b, a) in m.owes for (a, b) in m.owes)  # netted: one direction per pair
    spent_elsewhere = sum(-a for _, _, a, _ in moves if a < 0)
    assert sum(m.owes.values()) <= spent_elsewhere


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def test_settlement_from_the_ledger_is_booked_once_and_keeps_the_ledger_balanced(engine):
    a = Till("pos-a", "store-a").register(engine)
    b = Till("pos-b", "store-b").register(engine)
    m1, m2 = Card("M1"), Card("M2")
    msgs = [a.message(recharge(a, m1, 10_000)), b.message(debit(b, m1, 3_000)),
            b.message(recharge(b, m2, 5_000)), a.message(debit(a, m2, 1_000)),
            b.message(debit(b, m2, 500))]
    ingest_all(engine, msgs)
    everything = (0, 2**62)
    matrix = period_matrix(engine, *everything)
    assert matrix.owes == {("store-a", "store-b"): 2_000}  # 3000 one way, 1000 the other
    assert matrix.total() == 0

    matrix, posted = post_settlement(engine, *everything)
    assert posted
    assert account_balance(engine, "store:store-a:settlement", "CNY") == -2_000
    assert account_balance(engine, "store:store-b:settlement", "CNY") == 2_000
    assert post_settlement(engine, *everything)[1] is False  # already booked
    with pytest.raises(LedgerError, match="overlaps"):
        post_settlement(engine, 5, 2**61)
    check = check_ledger(engine)
    assert check.balanced, check.problems


def test_a_refund_puts_the_value_back_where_it_was_spent(engine):
    a = Till("pos-a", "store-a").register(engine)
    b = Till("pos-b", "store-b").register(engine)
    m1 = Card("M1")
    ingest_all(engine, [a.message(recharge(a, m1, 1_000)), b.message(debit(b, m1, 1_000))])
    m1.counter += 1
    m1.purse = 1_000
    refund = b.sign("M1", Operation.REFUND, purse_before=0, purse_after=1_000,
                    card_counter=m1.counter, product="shop")
    ingest_all(engine, [b.message(refund)])
    # A owed B 1000 for the spend; the refund is a new lot from B, owed back to nobody
    # until it is spent again.
    assert period_matrix(engine, 0, 2**62).owes == {("store-a", "store-b"): 1_000}
    ingest_all(engine, [a.message(debit(a, m1, 1_000))])
    assert period_matrix(engine, 0, 2**62).owes == {}


def test_a_settlement_period_must_end_after_it_starts(engine):
    with pytest.raises(LedgerError, match="must end after"):
        period_matrix(engine, 10, 10)
