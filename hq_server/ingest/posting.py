"""Posting a batch: each record one balanced transaction, through the ledger's writer.

A record that broke a business rule posts what it claims to suspense
(:func:`hq_server.ledger.postings.suspense_postings`); any other posts its entries within
what HQ holds on the card (:func:`hq_server.ledger.postings.postings_for`), the rest to
the card's ``unbacked`` accounts. The accounts' totals are added last by the caller.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from hq_server.db.bulk import chunks
from hq_server.db.tables import ledger_accounts
from hq_server.ingest.judge import Judge
from hq_server.ledger.accounts import Entry, txn_id
from hq_server.ledger.postings import postings_for, suspense_postings
from hq_server.ledger.writer import LedgerTransaction, Written, write_transactions
from protocol.record import SignedRecord, TransactionRecord


def floor_accounts(r: TransactionRecord) -> tuple[str, ...]:
    """The card's accounts a record may take from (they never go below zero)."""
    card = f"card:{r.card_id}"
    if r.product:
        return (f"{card}:purse", f"{card}:points", f"{card}:visits:{r.product}")
    return (f"{card}:purse", f"{card}:points")


def held_on(conn: Connection, accounts: list[str]) -> dict[str, int]:
    """What HQ holds on each account (credits minus debits); absent ones are left out."""
    if conn.dialect.name == "postgresql":
        found = conn.exec_driver_sql(
            "SELECT account, debits, credits FROM ledger_accounts "
            "WHERE account = ANY(%(a)s::text[])", {"a": accounts}).all()
    else:
        found = [row for chunk in chunks(accounts, 900) for row in conn.execute(
            select(ledger_accounts.c.account, ledger_accounts.c.debits,
                   ledger_accounts.c.credits).where(ledger_accounts.c.account.in_(chunk)))]
    return {account: int(credits) - int(debits) for account, debits, credits in found}


def ledger_transactions_of(signed: list[SignedRecord], judge: Judge,
                           available: dict[str, int]) -> list[LedgerTransaction]:
    """The transactions of a batch's records, judged in the order each card made them
    (so a shortfall lands on the record that really overdrew it). ``available`` is
    what HQ holds on the cards' floor accounts; it is updated."""
    ordered = sorted(signed, key=lambda s: (s.record.card_id, s.record.card_counter,
                                            s.record.device_id, s.record.seq))
    txns: list[LedgerTransaction] = []
    for s in ordered:
        r = s.record
        broken = judge.check(r, available)
        if broken:
            # Stored and acknowledged (signed evidence), but its value goes to
            # suspense, never into the card's or the store's balance.
            entries: list[Entry] = suspense_postings(r)
            memo: str | None = "suspense: " + ", ".join(sorted({b.rule for b in broken}))
        else:
            entries = postings_for(r, available)
            memo = None
        txns.append(LedgerTransaction(
            txn_id(r.device_id, r.seq), r.operation.name.lower(), r.store, entries,
            device_id=r.device_id, seq=r.seq, card_id=r.card_id, memo=memo))
    return txns


def post_records(conn: Connection, signed: list[SignedRecord], judge: Judge, now_ms: int, *,
                 known: set[str] | frozenset[str] = frozenset()) -> Written:
    """Post each record as one balanced transaction, within the card accounts' floors.

    Returns what the writer did; the caller adds :attr:`Written.totals` to the accounts
    last (those rows are shared by every writer). ``known``: accounts known to exist."""
    if not signed:
        return Written({}, set())
    available = held_on(conn, sorted({a for s in signed for a in floor_accounts(s.record)}))
    known_now = set(known).union(available)
    txns = ledger_transactions_of(signed, judge, available)
    written = write_transactions(conn, txns, now_ms, known=known_now)
    judge.store(conn)
    return written
