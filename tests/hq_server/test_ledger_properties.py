"""Property tests: whatever the operations, batching, order and duplication, the ledger
balances, posts each record once and never lets a card account go below zero.

Each example is a fleet of real signed records (tills and a cloned card) delivered in a
random order, in random batches, with random duplicates, to a fresh database.
"""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, text

from hq_server.db.engine import open_engine
from hq_server.db.tables import ledger_accounts, ledger_transactions, records
from hq_server.ingest.batch import Ingest
from hq_server.ledger.check import check_ledger
from tests.conftest import postgres_url, require
from tests.hq_records import Card, Till, add_visits, debit, recharge, take_visit

op = st.tuples(st.sampled_from(["recharge", "debit", "sell", "visit"]),
               st.integers(0, 2),  # which till
               st.integers(0, 2),  # which card (2 is a clone of card 0)
               st.integers(1, 5_000))


def build(ops: list[tuple[str, int, int, int]]) -> tuple[list[Till], list[tuple[str, bytes]]]:
    tills = [Till(f"t{i}", f"store-{i % 2}") for i in range(3)]
    c0 = Card("C0")
    cards = [c0, Card("C1"), None]
    out = []
    for kind, t, c, amount in ops:
        if c == 2 and cards[2] is None:
            cards[2] = c0.copy()  # cloned now: both copies go on separately
        card = cards[c] or c0
        till = tills[t]
        if kind == "recharge":
            s = recharge(till, card, amount)
        elif kind == "debit":
            if card.purse == 0:
                continue
            s = debit(till, card, min(amount, card.purse))
        elif kind == "sell":
            s = add_visits(till, card, "swim", amount % 5 + 1, amount)
        else:
            if card.visits.get("swim", 0) == 0:
                continue
            s = take_visit(till, card, "swim")
        out.append(till.message(s))
    return tills, out


def deliver(engine, msgs: list[tuple[str, bytes]], rng: random.Random) -> None:
    extra = [rng.choice(msgs) for _ in range(len(msgs) // 3)] if msgs else []
    stream = msgs + extra
    rng.shuffle(stream)
    ingest = Ingest(engine)
    while stream:
        n = rng.randint(1, 25)
        ingest.process(stream[:n])
        stream = stream[n:]
    ingest.process(msgs)  # everything once more, as after lost acks


def check_invariants(engine, msgs) -> None:
    check = check_ledger(engine)
    assert check.balanced, check.problems
    distinct = {m[1] for m in msgs}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(records)).scalar_one() == len(distinct)
        assert conn.execute(select(func.count()).select_from(ledger_transactions)).scalar_one() == len(distinct)
        below = conn.execute(select(ledger_accounts.c.account).where(
            ledger_accounts.c.credit_floor & (ledger_accounts.c.debits > ledger_accounts.c.credits))).all()
        assert below == []
        acked = conn.execute(text("SELECT device_id, contiguous_through, highest_seen FROM devices")).all()
    for _device, through, highest in acked:
        assert through == highest  # everything arrived in the end: no gap left


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(op, max_size=30), st.randoms(use_true_random=False))
def test_sqlite_ledger_invariants(tmp_path_factory, ops, rng):
    url = f"sqlite:///{tmp_path_factory.mktemp('prop') / 'hq.db'}"
    engine = open_engine(url)
    tills, msgs = build(ops)
    for till in tills:
        till.register(engine)
    deliver(engine, msgs, rng)
    check_invariants(engine, msgs)
    engine.dispose()


@pytest.fixture(scope="module")
def pg_base():
    url = postgres_url()
    require(url is not None, "PostgreSQL at 127.0.0.1:5432")
    return url


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(op, max_size=25), st.randoms(use_true_random=False))
def test_postgresql_ledger_invariants(pg_base, ops, rng):
    schema = f"p_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        engine = open_engine(f"{pg_base}?options=-csearch_path%3D{schema}")
        tills, msgs = build(ops)
        for till in tills:
            till.register(engine)
        deliver(engine, msgs, rng)
        check_invariants(engine, msgs)
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
