"""Holes 4 and 5 of issue #11, as an attacker sends them: a registered, signing terminal
posts records that create value no legitimate operation explains, or books its sales to
another store. HQ stores each record (signed evidence) but its value goes to suspense,
never into a card's or a store's balance, with an anomaly naming the rule and the device.

Every test runs on SQLite and PostgreSQL through the real ingest path.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hq_server.catalogue.versions import set_catalogue
from hq_server.db.tables import devices, records
from hq_server.ingest.batch import ingest_all
from hq_server.ingest.device_holds import release_device
from hq_server.ledger.accounts import CNY, POINTS, visit_asset
from hq_server.ledger.check import check_ledger
from hq_server.reconciliation.runs import open_anomalies, reconcile_due
from hq_server.reports.figures import account_balance
from protocol.products import BonusTier, CardProduct, Catalogue, CountProduct, PassProduct
from protocol.record import Operation
from tests.hq_records import STORES, Card, Till, add_visits, debit, recharge, store_engine

CATALOGUE = Catalogue(
    card_products=(CardProduct(1, "member", stored_value=True, count_products=("swim",),
                               passes=("month",)),),
    count_products=(CountProduct(10, "swim", 30_000, 10),),
    passes=(PassProduct(20, "month", 50_000, "month"),),
    bonus_tiers=(BonusTier(100_000, 10_000),),
)


@pytest.fixture(params=STORES)
def engine(request):
    engine = store_engine(request)
    set_catalogue(engine, CATALOGUE, effective_at_ms=0)
    yield engine
    engine.dispose()


def purse(engine, card_id: str) -> int:
    return -account_balance(engine, f"card:{card_id}:purse", CNY)


def visits(engine, card_id: str, product: str) -> int:
    return -account_balance(engine, f"card:{card_id}:visits:{product}", visit_asset(product))


def store_cash(engine, store: str) -> int:
    return account_balance(engine, f"store:{store}:cash", CNY)


def rule_anomalies(engine) -> list[dict]:
    return [a for a in open_anomalies(engine) if a["kind"] == "rule_broken"]


def assert_in_suspense(engine, device_id: str, rule: str) -> None:
    found = rule_anomalies(engine)
    assert any(a["evidence"]["device"] == device_id and rule in a["evidence"]["rules"]
               for a in found), found
    check = check_ledger(engine)
    assert check.balanced, check.problems


def test_add_visits_that_also_raises_the_purse_posts_nothing_to_the_card(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    s = till.sign("M1", Operation.ADD_VISITS, product="swim", visits_before=0, visits_after=10,
                  cash_fen=30_000, purse_before=0, purse_after=500_000, card_counter=1)
    result = ingest_all(engine, [till.message(s)])
    assert result.posted == 1  # stored and acknowledged: it is evidence
    assert purse(engine, card.card_id) == 0
    assert visits(engine, "M1", "swim") == 0
    assert store_cash(engine, "store-a") == 0
    assert_in_suspense(engine, "pos-01", "purse_rise_not_paid")


def test_refund_with_no_earlier_debit_is_refused(engine):
    till = Till("pos-01", "store-a").register(engine)
    s = till.sign("M1", Operation.REFUND, purse_before=0, purse_after=80_000, card_counter=1,
                  extra={"reverses": "pos-01#99"})
    ingest_all(engine, [till.message(s)])
    assert purse(engine, "M1") == 0
    assert_in_suspense(engine, "pos-01", "refund_beyond_debits")


def test_refund_is_honoured_up_to_the_debit_and_not_beyond(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    msgs = [till.message(recharge(till, card, 10_000)),
            till.message(debit(till, card, 4_000))]
    card.counter += 1
    ok = till.sign("M1", Operation.REFUND, purse_before=6_000, purse_after=10_000,
                   card_counter=card.counter)
    card.counter += 1
    again = till.sign("M1", Operation.REFUND, purse_before=10_000, purse_after=14_000,
                      card_counter=card.counter)
    ingest_all(engine, [*msgs, till.message(ok), till.message(again)])
    assert purse(engine, "M1") == 10_000  # the first refund counts, the second does not
    assert_in_suspense(engine, "pos-01", "refund_beyond_debits")
    assert len(rule_anomalies(engine)) == 1


def test_recall_of_an_empty_card_pays_no_cash(engine):
    till = Till("pos-01", "store-a").register(engine)
    s = till.sign("M1", Operation.RECALL, purse_before=200_000, purse_after=0,
                  cash_fen=-200_000, card_counter=7)
    ingest_all(engine, [till.message(s)])
    assert store_cash(engine, "store-a") == 0
    assert account_balance(engine, "card:M1:unbacked", CNY) == 0
    assert_in_suspense(engine, "pos-01", "recall_beyond_holdings")


def test_a_recharge_paid_entirely_as_bonus_is_refused(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    ingest_all(engine, [till.message(recharge(till, card, 0, bonus=500_000))])
    assert purse(engine, "M1") == 0
    assert account_balance(engine, "store:store-a:bonus_given", CNY) == 0
    assert_in_suspense(engine, "pos-01", "bonus_beyond_tiers")


def test_an_honest_recharge_with_its_tier_bonus_is_posted(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    ingest_all(engine, [till.message(recharge(till, card, 100_000, bonus=10_000))])
    assert purse(engine, "M1") == 110_000
    assert rule_anomalies(engine) == []


def test_a_million_visits_for_nothing_are_refused(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    ingest_all(engine, [till.message(add_visits(till, card, "swim", 1_000_000, 0))])
    assert visits(engine, "M1", "swim") == 0
    assert_in_suspense(engine, "pos-01", "price_not_catalogue")


def test_visits_at_the_catalogue_price_are_posted(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    ingest_all(engine, [till.message(add_visits(till, card, "swim", 20, 60_000))])
    assert visits(engine, "M1", "swim") == 20
    assert rule_anomalies(engine) == []


def test_points_granted_on_issue_are_refused(engine):
    till = Till("pos-01", "store-a").register(engine)
    s = till.sign("M1", Operation.ISSUE, product="member", points_delta=1_000_000,
                  card_counter=1)
    ingest_all(engine, [till.message(s)])
    assert account_balance(engine, "card:M1:points", POINTS) == 0
    assert_in_suspense(engine, "pos-01", "points_not_granted")


def test_a_gate_that_recharges_is_refused_and_held(engine):
    gate = Till("gate-01", "store-a").register(engine, role="gate")
    card = Card("M1")
    ingest_all(engine, [gate.message(recharge(gate, card, 10_000))])
    assert purse(engine, "M1") == 0 and store_cash(engine, "store-a") == 0
    assert_in_suspense(engine, "gate-01", "operation_not_for_role")
    with engine.connect() as conn:
        status = conn.execute(select(devices.c.status).where(
            devices.c.device_id == "gate-01")).scalar_one()
    assert status == "held"
    # Its next record is held back (not acknowledged) until an operator releases it.
    later = gate.message(gate.sign("M1", Operation.TAKE_VISIT, product="swim", card_counter=2))
    held = ingest_all(engine, [later])
    assert held.posted == 0 and held.rejected["held_device"] == 1
    release_device(engine, "gate-01", operator="alice", reason="terminal replaced")
    again = ingest_all(engine, [later])
    assert again.posted == 1 and again.acks["gate-01"].through == 2


def test_a_recharge_booked_to_another_store_is_refused(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    liar = Till("pos-01", "store-b", key=till.key)  # same device, claims store-b
    s = recharge(liar, card, 10_000)
    ingest_all(engine, [till.message(s)])
    assert store_cash(engine, "store-b") == 0 and store_cash(engine, "store-a") == 0
    assert purse(engine, "M1") == 0
    assert_in_suspense(engine, "pos-01", "store_not_registered")


def test_a_recharge_booked_to_a_store_that_does_not_exist_is_refused(engine):
    till = Till("pos-01", "store-a").register(engine)
    liar = Till("pos-01", "no-such-store", key=till.key)
    ingest_all(engine, [till.message(recharge(liar, Card("M1"), 10_000))])
    assert store_cash(engine, "no-such-store") == 0
    assert_in_suspense(engine, "pos-01", "store_not_registered")


def test_unexplained_value_on_a_card_shows_up_in_reconciliation(engine):
    """A forged top-up sent as a record: the value is in suspense, and once the card is
    used, reconciliation flags the value the card carries as a forged top-up."""
    till = Till("pos-01", "store-a").register(engine)
    other = Till("pos-02", "store-a").register(engine)
    card = Card("M1")
    forged = recharge(till, card, 0, bonus=500_000)
    spend = debit(other, card, 100_000)
    ingest_all(engine, [till.message(forged), other.message(spend)])
    reconcile_due(engine)
    kinds = {a["kind"] for a in open_anomalies(engine, "M1")}
    assert {"rule_broken", "forged_topup"} <= kinds
    with engine.connect() as conn:
        assert conn.execute(select(records.c.status).where(
            records.c.device_id == "pos-01")).scalar_one() == "posted"
    assert check_ledger(engine).balanced


def test_catalogue_and_rules_from_the_command_line(sqlite_url, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from hq_server.db.engine import open_engine
    from onecard.cli import main
    from tests.cli_login import sign_in_cli

    sign_in_cli(sqlite_url, monkeypatch, username="alice")

    def run(*args):
        return CliRunner().invoke(main, list(args))

    db = ["--db", sqlite_url]
    assert "no catalogue" in run("hq", "catalogue", "show", *db).output
    bad = tmp_path / "bad.json"
    bad.write_text('{"count_products": [{"code": 0, "name": "x", "price_fen": 1, "visits": 1}]}')
    refused = run("hq", "catalogue", "set", *db, str(bad))
    assert refused.exit_code == 1 and "code must be 1..255" in refused.output
    good = tmp_path / "catalogue.json"
    good.write_text(json.dumps({"catalogue": CATALOGUE.to_dict()}))
    stored = run("hq", "catalogue", "set", *db, str(good), "--effective", "0")
    assert stored.exit_code == 0, stored.output
    assert "swim: 10 visits for 30000 fen" in run("hq", "catalogue", "show", *db).output

    engine = open_engine(sqlite_url)
    gate = Till("gate-01", "store-a").register(engine, role="gate")
    ingest_all(engine, [gate.message(recharge(gate, Card("M1"), 10_000))])
    listed = run("hq", "rules", "breaks", *db)
    assert "gate-01#1" in listed.output and "operation_not_for_role" in listed.output
    assert "held devices: gate-01" in listed.output
    released = run("hq", "rules", "release", *db, "gate-01", "--reason", "checked")
    assert released.exit_code == 0 and "released" in released.output
    assert run("hq", "rules", "release", *db, "gate-01", "--reason", "again").exit_code == 1
