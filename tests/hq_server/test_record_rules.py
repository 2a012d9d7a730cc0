"""Property tests of the business rules HQ checks on records (hq_server.ingest.record_rules),
pure and through ingest: whatever mix of honest and hostile records arrives, the ledger
balances, rejected records leave card and store balances alone, and accepted records
post nothing to suspense."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select, text

from hq_server.catalogue.versions import set_catalogue
from hq_server.db.engine import open_engine
from hq_server.db.tables import ledger_entries, ledger_transactions, rule_breaks
from hq_server.ingest.batch import Ingest
from hq_server.ingest.record_rules import (
    ROLE_OPERATIONS,
    CardFacts,
    DeviceFacts,
    RulesConfig,
    check_record,
)
from hq_server.ledger.check import check_ledger
from protocol.products import BonusTier, CardProduct, Catalogue, CountProduct
from protocol.record import GENESIS_HASH, Operation, TransactionRecord
from tests.conftest import postgres_url, require
from tests.hq_records import Card, Till, add_visits, debit, recharge

CATALOGUE = Catalogue(
    card_products=(CardProduct(1, "member", stored_value=True, count_products=("swim",)),),
    count_products=(CountProduct(10, "swim", 3_000, 10),),
    bonus_tiers=(BonusTier(10_000, 1_000),),
)
HANDHELD = DeviceFacts("pos-01", "handheld", "store-a")


def record(op: Operation, **fields) -> TransactionRecord:
    return TransactionRecord(device_id="pos-01", seq=1, prev_hash=GENESIS_HASH,
                             device_time_ms=1, card_id="M1", operation=op, store="store-a",
                             **fields)


@given(st.integers(1, 100_000), st.integers(0, 1_000_000))
def test_a_recharge_with_its_tier_bonus_passes_and_any_more_bonus_breaks(paid, before):
    bonus = CATALOGUE.bonus_for(paid)
    honest = record(Operation.RECHARGE, purse_before=before, purse_after=before + paid + bonus,
                    cash_fen=paid, bonus_fen=bonus)
    assert check_record(honest, HANDHELD, CardFacts(), CATALOGUE) == []
    greedy = record(Operation.RECHARGE, purse_before=before,
                    purse_after=before + paid + bonus + 1, cash_fen=paid, bonus_fen=bonus + 1)
    assert "bonus_beyond_tiers" in {b.rule for b in check_record(greedy, HANDHELD, CardFacts(),
                                                                  CATALOGUE)}


@given(st.sampled_from(sorted(set(Operation) - {Operation.RECHARGE, Operation.OPEN_ACCOUNT,
                                                  Operation.REFUND})),
       st.integers(1, 10_000_000))
def test_the_purse_rises_only_where_something_pays_for_it(op, rise):
    r = record(op, purse_before=0, purse_after=rise)
    assert "purse_rise_not_paid" in {b.rule for b in check_record(r, HANDHELD, CardFacts(),
                                                                   CATALOGUE)}


@given(st.sampled_from(sorted(Operation)), st.sampled_from(sorted(ROLE_OPERATIONS)))
def test_an_operation_outside_the_role_always_breaks_a_rule(op, role):
    device = DeviceFacts("d", role, "store-a")
    rules = {b.rule for b in check_record(record(op), device, CardFacts(), CATALOGUE)}
    assert ("operation_not_for_role" in rules) == (op not in ROLE_OPERATIONS[role])


@given(st.integers(0, 50_000), st.integers(0, 50_000), st.integers(1, 50_000))
def test_refunds_never_exceed_debits(debited, refunded, value):
    card = CardFacts(debited_fen=debited + refunded, refunded_fen=refunded)
    r = record(Operation.REFUND, purse_before=0, purse_after=value)
    broken = {b.rule for b in check_record(r, HANDHELD, card, CATALOGUE)}
    assert ("refund_beyond_debits" in broken) == (value > debited)


def test_role_caps_are_configurable():
    r = record(Operation.RECHARGE, purse_before=0, purse_after=20_000, cash_fen=20_000)
    kiosk = DeviceFacts("k", "kiosk", "store-a")
    assert check_record(r, kiosk, CardFacts(), None) == []
    tight = RulesConfig(role_caps_fen={"kiosk": 10_000})
    assert [b.rule for b in check_record(r, kiosk, CardFacts(), None, tight)] == ["role_cap"]


# --- through ingest: honest and hostile records mixed ---------------------------------

hostile_kind = st.sampled_from(["bonus_only", "refund_nothing", "free_visits", "other_store",
                                "gate_recharge", "points_on_issue"])
step = st.one_of(
    st.tuples(st.just("recharge"), st.integers(0, 1), st.integers(1, 20_000)),
    st.tuples(st.just("debit"), st.integers(0, 1), st.integers(1, 20_000)),
    st.tuples(st.just("sell"), st.integers(0, 1), st.integers(1, 3)),
    st.tuples(hostile_kind, st.integers(0, 1), st.integers(1, 20_000)),
)


def build(steps):
    pos, gate = Till("pos-01", "store-a"), Till("gate-01", "store-a")
    cards = [Card("C0"), Card("C1")]
    honest: list[tuple[str, bytes]] = []
    hostile: list[tuple[str, bytes]] = []
    for kind, c, n in steps:
        card = cards[c]
        if kind == "recharge":
            honest.append(pos.message(recharge(pos, card, n, CATALOGUE.bonus_for(n))))
        elif kind == "debit" and card.purse:
            honest.append(pos.message(debit(pos, card, min(n, card.purse))))
        elif kind == "sell":
            honest.append(pos.message(add_visits(pos, card, "swim", 10 * n, 3_000 * n)))
        elif kind == "bonus_only":
            hostile.append(pos.message(recharge(pos, card.copy(), 0, n)))
        elif kind == "refund_nothing":
            hostile.append(pos.message(pos.sign(card.card_id, Operation.REFUND, purse_before=0,
                                                purse_after=10_000_000 + n)))
        elif kind == "free_visits":
            hostile.append(pos.message(add_visits(pos, card.copy(), "swim", n, 0)))
        elif kind == "other_store":
            liar = Till("pos-01", "store-z", key=pos.key, seq=pos.seq, head=pos.head)
            s = recharge(liar, card.copy(), n)
            pos.seq, pos.head = liar.seq, liar.head
            hostile.append(pos.message(s))
        elif kind == "gate_recharge":
            hostile.append(gate.message(recharge(gate, card.copy(), n)))
        elif kind == "points_on_issue":
            hostile.append(pos.message(pos.sign(card.card_id, Operation.ISSUE, points_delta=n)))
    return pos, gate, honest, hostile


def balances(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT account, asset, SUM(amount) FROM ledger_entries "
            "WHERE account LIKE 'card:%' OR account LIKE 'store:%' GROUP BY account, asset"))
        return {f"{a}/{s}": int(t) for a, s, t in rows if int(t)}


def check_mix(engine_factory, steps) -> None:
    pos, gate, honest, hostile = build(steps)
    # The same honest records alone, on a database of their own, are the reference.
    mixed, alone = engine_factory(), engine_factory()
    for engine in (mixed, alone):
        set_catalogue(engine, CATALOGUE, effective_at_ms=0)
        pos.register(engine)
        gate.register(engine, role="gate")
    Ingest(mixed, rules=RulesConfig(hold_device_after=None)).process(honest + hostile)
    Ingest(alone, rules=RulesConfig(hold_device_after=None)).process(honest)
    check = check_ledger(mixed)
    assert check.balanced, check.problems
    with mixed.connect() as conn:
        broken = {f"{d}#{q}" for d, q in conn.execute(
            select(rule_breaks.c.device_id, rule_breaks.c.seq))}
        suspense_txns = {t for (t,) in conn.execute(
            select(ledger_transactions.c.txn_id).join(
                ledger_entries, ledger_entries.c.txn_id == ledger_transactions.c.txn_id)
            .where(ledger_entries.c.account.like("suspense:%")))}
    assert suspense_txns <= broken  # accepted records post nothing to suspense
    assert len(broken) == len(hostile)  # every hostile record is caught, no honest one
    # Rejected records leave card and store balances exactly as the honest ones make them.
    assert balances(mixed) == balances(alone)
    mixed.dispose()
    alone.dispose()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, max_size=20))
def test_sqlite_hostile_records_never_move_card_or_store_balances(tmp_path_factory, steps):
    folder = tmp_path_factory.mktemp("rules")
    made = iter(range(2))
    check_mix(lambda: open_engine(f"sqlite:///{folder / f'hq{next(made)}.db'}"), steps)


@pytest.fixture(scope="module")
def pg_base():
    url = postgres_url()
    require(url is not None, "PostgreSQL at 127.0.0.1:5432")
    return url


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, max_size=15))
def test_postgresql_hostile_records_never_move_card_or_store_balances(pg_base, steps):
    admin = create_engine(pg_base)
    schemas: list[str] = []

    def make():
        schema = f"r_{uuid.uuid4().hex[:12]}"
        schemas.append(schema)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        return open_engine(f"{pg_base}?options=-csearch_path%3D{schema}")

    try:
        check_mix(make, steps)
    finally:
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
