"""The ledger on both stores: postings, exactly-once, floors, reversals, the full check."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from hq_server.db.tables import ledger_accounts, ledger_entries, ledger_transactions
from hq_server.ingest.batch import Ingest, ingest_all
from hq_server.ledger.check import check_ledger
from hq_server.ledger.writer import LedgerError, reverse_transaction
from hq_server.reports.figures import account_balance, ingest_figures
from onecard.cli import main
from tests.hq_records import (
    STORES,
    Card,
    Till,
    add_visits,
    debit,
    recharge,
    store_engine,
    take_visit,
    url_of,
)

CNY = "CNY"


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def purse(engine, card: str) -> int:
    """What HQ holds on a card's purse (a liability: credits minus debits)."""
    return -account_balance(engine, f"card:{card}:purse", CNY)


def test_every_operation_posts_one_balanced_transaction_per_asset(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    msgs = [till.message(s) for s in (
        recharge(till, card, 10_000, bonus=1_000),
        debit(till, card, 2_500, product="lunch", cash=0),
        add_visits(till, card, "swim", 10, price=30_000),
        take_visit(till, card, "swim"),
    )]
    result = ingest_all(engine, msgs)
    assert result.posted == 4 and not result.rejected
    assert purse(engine, "M1") == 8_500
    assert -account_balance(engine, "card:M1:visits:swim", "visit:swim") == 9
    assert account_balance(engine, "store:store-a:cash", CNY) == 40_000
    assert account_balance(engine, "store:store-a:bonus_given", CNY) == 1_000
    assert account_balance(engine, "store:store-a:revenue:lunch", CNY) == -2_500
    assert account_balance(engine, "store:store-a:revenue:swim", CNY) == -30_000
    check = check_ledger(engine)
    assert check.balanced, check.problems
    assert set(check.asset_totals) == {CNY, "visit:swim"}
    with engine.connect() as conn:
        ids = sorted(t for (t,) in conn.execute(select(ledger_transactions.c.txn_id)))
        mixed = conn.execute(text(
            "SELECT txn_id FROM ledger_entries GROUP BY txn_id, account HAVING COUNT(DISTINCT asset) > 1"
        )).all()
    assert ids == ["pos-01#1", "pos-01#2", "pos-01#3", "pos-01#4"]
    assert mixed == []


def test_a_record_delivered_many_times_is_posted_once(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    msgs = [till.message(recharge(till, card, 500)) for _ in range(5)]
    ingest = Ingest(engine)
    first = ingest.process(msgs + msgs[:2])  # duplicates inside one batch too
    again = ingest.process(msgs)  # and a whole resend after the ack was lost
    assert (first.posted, first.duplicates) == (5, 2)
    assert (again.posted, again.duplicates) == (0, 5)
    assert again.acks["pos-01"].through == 5
    assert purse(engine, "M1") == 2_500
    assert ingest_figures(engine)["duplicates_rejected"] == 7
    assert check_ledger(engine).balanced


def test_out_of_order_arrival_acks_only_the_contiguous_committed_prefix(engine):
    till = Till("gate-01", "store-a").register(engine)
    card = Card("M1")
    signed = [recharge(till, card, 100) for _ in range(6)]
    ingest = Ingest(engine)
    r = ingest.process([till.message(signed[i]) for i in (5, 2, 0)])  # #6, #3, #1
    assert r.posted == 3
    assert r.acks["gate-01"].through == 1
    assert r.acks["gate-01"].missing == (2, 4, 5)
    r = ingest.process([till.message(signed[1]), till.message(signed[4])])
    assert r.acks["gate-01"].through == 3 and r.acks["gate-01"].missing == (4,)
    r = ingest.process([till.message(signed[3])])
    assert r.acks["gate-01"].through == 6 and r.acks["gate-01"].missing == ()
    assert purse(engine, "M1") == 600
    assert check_ledger(engine).balanced


def test_records_that_fail_verification_are_quarantined_and_never_posted(engine):
    till = Till("gate-01", "store-a").register(engine)
    stranger = Till("gate-99", "store-a")  # never registered
    revoked = Till("gate-02", "store-a").register(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE devices SET status = 'revoked' WHERE device_id = 'gate-02'"))
    card = Card("M1")
    good = recharge(till, card, 100)
    forged_key = Till("gate-01", "store-a", seq=1, head=good.record_hash)
    forged = recharge(forged_key, card.copy(), 1_000_000)  # right chain, wrong key
    off_chain = Till("gate-01", "store-a", key=till.key, seq=2, head=b"\x01" * 32)
    broken = recharge(off_chain, card.copy(), 100)  # #3 that does not follow #2
    conflicting = Till("gate-01", "store-a", key=till.key, seq=0)
    messages = [
        till.message(good),
        forged_key.message(forged),
        stranger.message(recharge(stranger, Card("M2"), 100)),
        revoked.message(recharge(revoked, Card("M3"), 100)),
        (till.message(good)[0], b"not a record at all"),
        till.message(recharge(till, card, 100)),  # #2, fine
        till.message(broken),
        conflicting.message(recharge(conflicting, Card("M1"), 999)),  # another #1
    ]
    result = Ingest(engine).process(messages)
    assert result.posted == 2
    assert dict(result.rejected) == {
        "bad_signature": 1, "unknown_device": 1, "revoked_device": 1, "malformed": 1,
        "broken_chain": 1, "conflicting_duplicate": 1}
    assert purse(engine, "M1") == 200
    assert check_ledger(engine).balanced
    figures = ingest_figures(engine)
    assert figures["quarantined"] == 6 and figures["records_ledgered"] == 2


def test_a_card_cannot_spend_more_than_the_ledger_holds_the_rest_is_unbacked(engine):
    """A cloned purse spends the same 80 fen twice: the second spend is not backed."""
    till_a = Till("pos-a", "store-a").register(engine)
    till_b = Till("pos-b", "store-b").register(engine)
    card = Card("M1")
    load = recharge(till_a, card, 100)
    clone = card.copy()
    spend_a = debit(till_a, card, 80)
    spend_b = debit(till_b, clone, 80)
    ingest_all(engine, [till_a.message(load), till_a.message(spend_a), till_b.message(spend_b)])
    assert purse(engine, "M1") == 0  # never below zero
    assert account_balance(engine, "card:M1:unbacked", CNY) == 60
    check = check_ledger(engine)
    assert check.balanced, check.problems


def test_the_database_refuses_a_purse_below_zero_and_an_entry_in_the_wrong_asset(engine):
    till = Till("pos-01", "store-a").register(engine)
    ingest_all(engine, [till.message(recharge(till, Card("M1"), 100))])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(update(ledger_accounts).where(ledger_accounts.c.account == "card:M1:purse")
                     .values(debits=ledger_accounts.c.debits + 101))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(ledger_transactions).values(
            txn_id="x", kind="test", store="store-a", posted_at_ms=1))
        conn.execute(insert(ledger_entries).values(
            txn_id="x", account="card:M1:purse", asset="points", amount=5))
    assert purse(engine, "M1") == 100
    assert check_ledger(engine).balanced


def test_a_correction_is_a_reversal_posted_once(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    msgs = [till.message(recharge(till, card, 1_000)), till.message(recharge(till, card, 500))]
    ingest_all(engine, msgs)
    rev = reverse_transaction(engine, "pos-01#2", "cashier keyed 5 yuan twice", "op-li")
    assert rev == "rev:pos-01#2"
    assert purse(engine, "M1") == 1_000
    assert account_balance(engine, "store:store-a:cash", CNY) == 1_000
    with pytest.raises(LedgerError, match="already reversed"):
        reverse_transaction(engine, "pos-01#2", "again", "op-li")
    with pytest.raises(LedgerError, match="itself a reversal"):
        reverse_transaction(engine, rev, "undo", "op-li")
    with pytest.raises(LedgerError, match="no ledger transaction"):
        reverse_transaction(engine, "pos-01#9", "typo", "op-li")
    with pytest.raises(LedgerError, match="reason"):
        reverse_transaction(engine, "pos-01#1", " ", "op-li")
    check = check_ledger(engine)
    assert check.balanced, check.problems
    assert check.figures["transactions"] == 3


def test_a_reversal_that_would_take_spent_value_is_refused(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    ingest_all(engine, [till.message(recharge(till, card, 1_000)),
                        till.message(debit(till, card, 900))])
    with pytest.raises(LedgerError, match="holds only 100"):
        reverse_transaction(engine, "pos-01#1", "refund the top-up", "op-li")
    assert purse(engine, "M1") == 100
    assert check_ledger(engine).figures["transactions"] == 2


def _tamper(engine, sql: str) -> None:
    """Edit the ledger behind the database's back (triggers off), as an attacker would."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE ledger_entries DISABLE TRIGGER USER"))
            conn.execute(text(sql))
            conn.execute(text("ALTER TABLE ledger_entries ENABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER ledger_entries_no_update"))
            conn.execute(text(sql))


def test_verify_ledger_recomputes_everything_and_names_what_is_wrong(engine):
    db_url = url_of(engine)
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    ingest_all(engine, [till.message(recharge(till, card, 1_000)),
                        till.message(debit(till, card, 300))])
    runner = CliRunner()
    ok = runner.invoke(main, ["hq", "verify-ledger", "--db", db_url])
    assert ok.exit_code == 0, ok.output
    assert "ledger balanced" in ok.output
    _tamper(engine, "UPDATE ledger_entries SET amount = amount + 7 WHERE account = 'card:M1:purse' "
                    "AND txn_id = 'pos-01#2'")
    check = check_ledger(engine)
    assert not check.balanced
    assert any("pos-01#2 does not balance" in p for p in check.problems)
    assert any("account card:M1:purse" in p for p in check.problems)
    bad = runner.invoke(main, ["hq", "verify-ledger", "--db", db_url])
    assert bad.exit_code != 0
    assert "does not balance" in bad.output


def test_the_ledger_refuses_updates_and_deletes(engine):
    till = Till("pos-01", "store-a").register(engine)
    ingest_all(engine, [till.message(recharge(till, Card("M1"), 100))])
    for sql in ("DELETE FROM ledger_transactions", "UPDATE ledger_entries SET amount = 0"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    assert purse(engine, "M1") == 100


def test_a_refused_record_sent_again_is_kept_once_as_evidence(engine):
    stranger = Till("gate-99", "store-a")  # never registered: never acked, so it resends
    message = stranger.message(recharge(stranger, Card("M1"), 100))
    ingest = Ingest(engine)
    for _ in range(3):
        assert dict(ingest.process([message]).rejected) == {"unknown_device": 1}
    assert ingest_figures(engine)["quarantined"] == 1


def test_verify_ledger_can_audit_every_signature_and_the_chains(engine):
    till = Till("pos-01", "store-a").register(engine)
    card = Card("M1")
    ingest_all(engine, [till.message(recharge(till, card, 100)) for _ in range(3)])
    assert check_ledger(engine, signatures=True).balanced
    with engine.begin() as conn:  # someone edits a stored record's bytes
        wire = bytes(conn.execute(text("SELECT wire FROM records WHERE seq = 2")).scalar_one())
        at = 2 + 1 + 7 + 8 + 32 + 7  # last byte of the device time: still decodes
        forged = wire[:at] + bytes([wire[at] ^ 1]) + wire[at + 1:]
        conn.execute(text("UPDATE records SET wire = :w, prev_hash = :p WHERE seq = 2"),
                     {"w": forged, "p": b"\x00" * 32})
    plain = check_ledger(engine)
    assert any("pos-01#2 does not follow pos-01#1" in p for p in plain.problems)
    audit = check_ledger(engine, signatures=True)
    assert any("pos-01#2" in p and "signature" in p for p in audit.problems), audit.problems
    out = CliRunner().invoke(main, ["hq", "verify-ledger", "--db", url_of(engine), "--signatures"])
    assert out.exit_code != 0 and "signature" in out.output
