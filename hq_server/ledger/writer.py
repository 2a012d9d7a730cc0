"""The ledger's one writer: every transaction HQ posts goes through :func:`write_transactions`.

Ingest's batches (one transaction per record), reversals and settlement all describe
what they post as :class:`LedgerTransaction` values and hand them here: the
transactions and their entries are inserted in bulk, accounts are created on first use,
and the accounts' running totals are added, guarded by the database's floor constraint
(a purse, visits or points account never goes below zero). Nothing in the ledger is
ever updated or deleted (database triggers refuse it): a correction is a reversal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import Executable

from hq_server.clock import system_clock
from hq_server.db.bulk import bulk_execute, copy_rows, dialect_insert
from hq_server.db.tables import ledger_accounts, ledger_entries, ledger_transactions
from hq_server.ledger.accounts import Entry, account_rule, check_balanced


@dataclass(frozen=True)
class LedgerTransaction:
    """One balanced transaction to post: its id, what it is, and its entries.

    ``device_id`` and ``seq`` name the record behind it (a record's own transaction, or
    the reversal of one); ``reverses`` the transaction a reversal negates.
    """

    txn_id: str
    kind: str
    store: str
    entries: list[Entry]
    device_id: str | None = None
    seq: int | None = None
    card_id: str | None = None
    reverses: str | None = None
    memo: str | None = None


@dataclass(frozen=True)
class Written:
    """What :func:`write_transactions` did: the totals still to add, accounts it created."""

    totals: AccountTotals
    created: set[str]


def write_transactions(conn: Connection, txns: list[LedgerTransaction], now_ms: int, *,
                       known: set[str] | frozenset[str] = frozenset()) -> Written:
    """Insert ``txns`` and their entries, creating the accounts they need.

    The accounts' running totals are *not* added yet: the caller does that with
    :func:`add_to_accounts` as late as it can in its transaction (those rows, a store's
    cash, are the ones every writer needs). ``known`` names accounts the caller knows
    exist, to save the work of creating them.
    """
    entries = [e for t in txns for e in t.entries]
    totals = account_totals(entries)
    created = create_accounts(conn, totals, known)
    ordered = sorted(txns, key=lambda t: t.txn_id)  # the lock order of concurrent writers
    copy_rows(conn, ledger_transactions, [
        {"txn_id": t.txn_id, "device_id": t.device_id, "seq": t.seq, "kind": t.kind,
         "store": t.store, "card_id": t.card_id, "posted_at_ms": now_ms,
         "reverses": t.reverses, "memo": t.memo} for t in ordered])
    copy_rows(conn, ledger_entries, [
        {"txn_id": t.txn_id, "account": e.account, "asset": e.asset, "amount": e.amount}
        for t in txns for e in t.entries])
    return Written(totals, created)


def post(conn: Connection, txns: list[LedgerTransaction], now_ms: int) -> None:
    """Write ``txns`` and add them to the accounts, in the caller's transaction."""
    add_to_accounts(conn, write_transactions(conn, txns, now_ms).totals)


def _account_create(conn: Connection) -> Executable:
    ins = dialect_insert(conn)(ledger_accounts).values(
        {c: bindparam(c) for c in ("account", "asset", "kind", "credit_floor")})
    return ins.on_conflict_do_nothing(index_elements=[ledger_accounts.c.account])


def _account_add() -> Executable:
    a = ledger_accounts.c
    return (update(ledger_accounts).where(a.account == bindparam("b_account"))
            .values(debits=a.debits + bindparam("b_debits"),
                    credits=a.credits + bindparam("b_credits")))


AccountTotals = dict[str, tuple[str, int, int]]  # account → (asset, debits, credits)


def account_totals(entries: Iterable[Entry]) -> AccountTotals:
    """What ``entries`` add to each account, refusing an account in two assets."""
    totals: dict[str, list] = {}
    for e in entries:
        row = totals.get(e.account)
        if row is None:
            row = totals[e.account] = [e.asset, 0, 0]
        elif row[0] != e.asset:
            raise ValueError(f"account {e.account} would hold two assets: {row[0]}, {e.asset}")
        if e.amount > 0:
            row[1] += e.amount
        else:
            row[2] -= e.amount
    return {acct: (a, d, c) for acct, (a, d, c) in totals.items()}


def create_accounts(conn: Connection, totals: AccountTotals,
                    known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Create the accounts of ``totals`` that do not exist yet, with zero totals.

    ``known`` names accounts the caller knows exist (accounts are never deleted), to
    save the work. Returns the names it tried to create. Takes no lock on an existing
    account, so it can come early in a transaction.
    """
    created = sorted(acct for acct in totals if acct not in known)
    rows = [{"account": acct, "asset": totals[acct][0], "kind": account_rule(acct).kind,
             "credit_floor": account_rule(acct).credit_floor} for acct in created]
    if conn.dialect.name == "postgresql":
        if rows:
            conn.exec_driver_sql(
                "INSERT INTO ledger_accounts (account, asset, kind, credit_floor) "
                "SELECT * FROM unnest(%(a)s::text[], %(s)s::text[], %(k)s::text[], "
                "%(f)s::boolean[]) ON CONFLICT (account) DO NOTHING",
                {"a": [r["account"] for r in rows], "s": [r["asset"] for r in rows],
                 "k": [r["kind"] for r in rows], "f": [r["credit_floor"] for r in rows]})
    else:
        bulk_execute(conn, "account_create", lambda: _account_create(conn), rows)
    return set(created)


def add_to_accounts(conn: Connection, totals: AccountTotals) -> None:
    """Add to the accounts' running totals (they must exist).

    The database refuses it (and so the whole transaction) if an account would go below
    its floor. Rows are locked in account order, so concurrent PostgreSQL writers never
    deadlock; callers do this late in their transaction, as these rows (a store's cash)
    are the ones every writer needs.
    """
    accounts = sorted(totals)
    if not accounts:
        return
    if conn.dialect.name == "postgresql":
        # NO KEY UPDATE, as the UPDATE itself takes: plain FOR UPDATE would also wait for
        # the key-share locks that other writers' ledger entries hold on these accounts
        # (foreign key), which deadlocks two workers.
        conn.exec_driver_sql("SELECT account FROM ledger_accounts WHERE account = "
                             "ANY(%(a)s::text[]) ORDER BY account FOR NO KEY UPDATE",
                             {"a": accounts})
        conn.exec_driver_sql(
            "UPDATE ledger_accounts AS a SET debits = a.debits + v.d, credits = a.credits + v.c "
            "FROM unnest(%(accounts)s::text[], %(debits)s::bigint[], %(credits)s::bigint[]) "
            "AS v(account, d, c) WHERE a.account = v.account",
            {"accounts": accounts, "debits": [totals[x][1] for x in accounts],
             "credits": [totals[x][2] for x in accounts]})
        return
    bulk_execute(conn, "account_add", _account_add, [
        {"b_account": acct, "b_debits": totals[acct][1], "b_credits": totals[acct][2]}
        for acct in accounts])


class LedgerError(ValueError):
    """A ledger operation that cannot be done, with the reason in words."""


def reverse_transaction(engine: Engine, original: str, reason: str, operator: str,
                        now_ms: int | None = None) -> str:
    """Post the exact negation of transaction ``original``: the only way to correct it.

    Its id is ``rev:<original>`` and the database allows one reversal per transaction.
    Refused, changing nothing, when the original does not exist, is itself a reversal,
    was already reversed, or when taking its value back would leave a card's purse,
    visits or points below zero (the value has been spent since).
    """
    if not reason.strip() or not operator.strip():
        raise LedgerError("a reversal needs a reason and the operator who asks for it")
    rev_id = f"rev:{original}"
    now_ms = system_clock() if now_ms is None else now_ms
    t = ledger_transactions.c
    try:
        with engine.begin() as conn:
            row = conn.execute(select(ledger_transactions).where(t.txn_id == original)).mappings().first()
            if row is None:
                raise LedgerError(f"no ledger transaction {original!r}")
            if row["reverses"] is not None:
                raise LedgerError(f"{original} is itself a reversal; post a new transaction instead")
            if conn.execute(select(t.txn_id).where(t.reverses == original)).first():
                raise LedgerError(f"{original} was already reversed")
            entries = [Entry(acct, asset, -amount) for acct, asset, amount in conn.execute(
                select(ledger_entries.c.account, ledger_entries.c.asset, ledger_entries.c.amount)
                .where(ledger_entries.c.txn_id == original).order_by(ledger_entries.c.id))]
            for entry in entries:
                if entry.amount > 0 and account_rule(entry.account).credit_floor:
                    d, c = conn.execute(select(ledger_accounts.c.debits, ledger_accounts.c.credits)
                                        .where(ledger_accounts.c.account == entry.account)).one()
                    if c - d < entry.amount:
                        raise LedgerError(
                            f"reversing {original} would take {entry.amount} {entry.asset} from "
                            f"{entry.account}, which holds only {c - d}")
            post(conn, [LedgerTransaction(
                rev_id, "reversal", row["store"], entries, device_id=row["device_id"],
                seq=row["seq"], card_id=row["card_id"], reverses=original,
                memo=json.dumps({"reason": reason, "operator": operator}, ensure_ascii=False))],
                now_ms)
    except IntegrityError as exc:  # a concurrent reversal or spend got there first
        raise LedgerError(f"reversal of {original} refused by the database: {exc.orig}") from None
    return rev_id


def post_transaction(engine: Engine, txn: str, kind: str, store: str, entries: list[Entry],
                     memo: dict[str, Any], now_ms: int | None = None) -> bool:
    """Post a balanced HQ-side transaction (settlement) once; False if ``txn`` exists."""
    check_balanced(entries)
    now_ms = system_clock() if now_ms is None else now_ms
    with engine.begin() as conn:
        if conn.execute(select(ledger_transactions.c.txn_id)
                        .where(ledger_transactions.c.txn_id == txn)).first():
            return False
        post(conn, [LedgerTransaction(txn, kind, store, entries,
                                      memo=json.dumps(memo, sort_keys=True, ensure_ascii=False))],
             now_ms)
    return True
