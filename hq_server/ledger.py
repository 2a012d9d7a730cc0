"""Reading the ledger: balances, the balance check, and summary figures."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from hq_server.schema import counters, ledger_entries, quarantine, records


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
