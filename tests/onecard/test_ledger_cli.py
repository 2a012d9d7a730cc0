"""The operator's HQ ledger commands, on a ledger made of real signed records."""

from __future__ import annotations

from click.testing import CliRunner

from hq_server.db.engine import open_engine
from hq_server.ingest.batch import ingest_all
from onecard.cli import main
from tests.cli_login import sign_in_cli
from tests.hq_records import Card, Till, debit, recharge


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_reconcile_anomalies_reverse_settle_and_denylist_from_the_command_line(sqlite_url,
                                                                              monkeypatch):
    engine = open_engine(sqlite_url)
    sign_in_cli(sqlite_url, monkeypatch, username="li")
    a = Till("pos-a", "store-a").register(engine)
    b = Till("pos-b", "store-b").register(engine)
    card = Card("M1")
    clone_b = Till("pos-c", "store-b").register(engine)
    load = recharge(a, card, 10_000)
    copy = card.copy()
    ingest_all(engine, [a.message(load), b.message(debit(b, card, 4_000)),
                        clone_b.message(debit(clone_b, copy, 4_000))])
    db = ["--db", sqlite_url]

    out = run("hq", "reconcile", *db, "--auto-denylist-clones")
    assert out.exit_code == 0, out.output
    assert "NEW high   clone" in out.output
    listed = run("hq", "anomalies", *db)
    assert "clone" in listed.output and "1 open" in listed.output
    assert '"evidence"' in run("hq", "anomalies", *db, "--json").output
    assert "M1" in run("hq", "denylist", "show", *db).output

    settled = run("hq", "settlement", *db, "--from", "0", "--to", "2100-01-01")
    assert settled.exit_code == 0, settled.output
    assert "store-a owes store-b 80.00" in settled.output
    assert "matrix sums to 0" in settled.output
    assert "booked" in run("hq", "settlement", *db, "--from", "0", "--to", "2100-01-01", "--post").output

    refused = run("hq", "reverse", "pos-a#1", *db, "--reason", "wrong card")
    assert refused.exit_code != 0 and "holds only" in refused.output
    assert run("hq", "reverse", "pos-b#1", *db, "--reason", "returned").exit_code == 0
    assert "ledger balanced" in run("hq", "verify-ledger", *db).output

    assert run("hq", "denylist", "remove", "M1", *db, "--reason", "card replaced").exit_code == 0
    assert "version 2, 0 cards" in run("hq", "denylist", "show", *db).output
    bad = run("hq", "denylist", "add", "bad card!", *db, "--reason", "x")
    assert bad.exit_code != 0 and "not a card id" in bad.output
    assert "pos-a" in run("hq", "fleet", *db).output
