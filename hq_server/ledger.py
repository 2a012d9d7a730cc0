"""Reading the ledger: balances, the balance check, and summary figures."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.expression import Executable

from hq_server.postings import Entry, account_rule
from hq_server.schema import counters, ledger_accounts, ledger_entries, quarantine, records


def dialect_insert(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


_BULK: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}


def bulk_execute(conn: Connection, name: str, make: Callable[[], Executable],
                 rows: list[dict[str, Any]]) -> None:
    """Run one statement for many rows straight through the driver's executemany.

    Ingest writes thousands of rows a second; SQLAlchemy's per-row parameter handling
    cost more than the database itself. The statement (whose parameters must all be
    ``bindparam``s named like the row keys) is compiled once per dialect and ``name``.
    """
    if not rows:
        return
    key = (conn.dialect.name, name)
    cached = _BULK.get(key)
    if cached is None:
        compiled = make().compile(dialect=conn.dialect)
        cached = _BULK[key] = (str(compiled), tuple(compiled.positiontup or ())
                               if compiled.positional else None)
    sql, order = cached
    params = [tuple(r[k] for k in order) for r in rows] if order is not None else rows
    conn.exec_driver_sql(sql, params)


def _account_upsert(conn: Connection) -> Executable:
    ins = dialect_insert(conn)(ledger_accounts).values(
        {c: bindparam(c) for c in ("account", "asset", "kind", "credit_floor", "debits", "credits")})
    return ins.on_conflict_do_update(
        index_elements=[ledger_accounts.c.account],
        set_={"debits": ledger_accounts.c.debits + ins.excluded.debits,
              "credits": ledger_accounts.c.credits + ins.excluded.credits},
    )


def apply_to_accounts(conn: Connection, entries: Iterable[Entry]) -> None:
    """Add ``entries`` to their accounts' running debit and credit totals.

    Creates accounts on first use. The database refuses the statement (and so the whole
    transaction) if an account would go below its floor or change asset. Accounts are
    written in name order so concurrent PostgreSQL writers take row locks in one order.
    """
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
    if not totals:
        return
    rows = []
    for account in sorted(totals):
        asset, debits, credits = totals[account]
        rule = account_rule(account)
        rows.append({"account": account, "asset": asset, "kind": rule.kind,
                     "credit_floor": rule.credit_floor, "debits": debits, "credits": credits})
    bulk_execute(conn, "account_upsert", lambda: _account_upsert(conn), rows)


@dataclass(frozen=True)
class LedgerCheck:
    balanced: bool
    unbalanced_transactions: list[tuple[str, str, int]]
    asset_totals: dict[str, int]


def check_ledger(engine: Engine) -> LedgerCheck:
    """Recompute from entries: every transaction balances per asset, and so does the whole."""
    with engine.connect() as conn:
        bad = [tuple(r) for r in conn.execute(
            select(ledger_entries.c.txn_id, ledger_entries.c.asset, func.sum(ledger_entries.c.amount))
            .group_by(ledger_entries.c.txn_id, ledger_entries.c.asset)
            .having(func.sum(ledger_entries.c.amount) != 0).limit(100))]
        totals = {asset: int(total) for asset, total in conn.execute(
            select(ledger_entries.c.asset, func.sum(ledger_entries.c.amount))
            .group_by(ledger_entries.c.asset))}
    balanced = not bad and all(v == 0 for v in totals.values())
    return LedgerCheck(balanced, bad, totals)


def account_balance(engine: Engine, account: str, asset: str) -> int:
    """Sum of entries (debit positive). A liability such as a purse shows as negative."""
    with engine.connect() as conn:
        total = conn.execute(select(func.coalesce(func.sum(ledger_entries.c.amount), 0)).where(
            (ledger_entries.c.account == account) & (ledger_entries.c.asset == asset))).scalar_one()
    return int(total)


def ingest_figures(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        ledgered = conn.execute(select(func.count()).select_from(records)
                                .where(records.c.status == "posted")).scalar_one()
        stored = conn.execute(select(func.count()).select_from(records)).scalar_one()
        quarantined = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
        dup = conn.execute(select(counters.c.value).where(
            counters.c.name == "duplicates_rejected")).scalar()
    return {"records_ledgered": int(ledgered), "records_stored": int(stored),
            "quarantined": int(quarantined), "duplicates_rejected": int(dup or 0)}
