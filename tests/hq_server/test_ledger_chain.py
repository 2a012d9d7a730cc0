"""verify-ledger reports posted records whose predecessor is missing or quarantined.

Hole 7 of issue #11: the chain check compared a posted record only with a *posted*
predecessor, so a record following a quarantined one (or one HQ never got) passed as a
sound chain while the ledger said "balanced".
"""

from __future__ import annotations

import pytest

from hq_server.ingest.batch import Ingest
from hq_server.ledger.check import check_ledger
from tests.hq_records import STORES, Card, Till, recharge, store_engine


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def test_a_posted_record_after_a_quarantined_one_is_reported(engine):
    till = Till("gate-1", "S1").register(engine)
    card = Card("C1")
    till.head = b"\x01" * 32  # record #1 does not start the chain: it is quarantined
    first = recharge(till, card, 100)
    second = recharge(till, card, 100)  # follows #1 exactly
    result = Ingest(engine).process([till.message(first), till.message(second)])
    assert (result.posted, result.rejected) == (1, {"broken_chain": 1})

    check = check_ledger(engine)
    assert not check.balanced
    assert any("gate-1#2" in p and "gate-1#1" in p and "quarantined" in p
               for p in check.problems), check.problems


def test_a_posted_record_whose_predecessor_never_arrived_is_reported(engine):
    till = Till("gate-1", "S1").register(engine)
    card = Card("C1")
    recharge(till, card, 100)  # #1, lost on the way
    second = recharge(till, card, 50)
    assert Ingest(engine).process([till.message(second)]).posted == 1

    check = check_ledger(engine)
    assert not check.balanced
    assert any("gate-1#2" in p and "missing" in p for p in check.problems), check.problems


def test_a_whole_chain_is_clean(engine):
    till = Till("gate-1", "S1").register(engine)
    card = Card("C1")
    Ingest(engine).process([till.message(recharge(till, card, 10)) for _ in range(5)])
    assert check_ledger(engine).balanced
