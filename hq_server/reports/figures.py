"""The figures operators look at: ingest counts, open anomalies, balances, the fleet.

Read-only: a report never changes what it reports on.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from hq_server.db.tables import anomalies, counters, ledger_entries, quarantine, records
from hq_server.ingest.quarantine import quarantine_dropped


def account_balance(engine: Engine, account: str, asset: str) -> int:
    """Sum of entries (debit positive). A liability such as a purse shows as negative."""
    with engine.connect() as conn:
        total = conn.execute(select(func.coalesce(func.sum(ledger_entries.c.amount), 0)).where(
            (ledger_entries.c.account == account) & (ledger_entries.c.asset == asset))).scalar_one()
    return int(total)



def ingest_figures(engine: Engine) -> dict[str, int]:
    """Counts an operator watches: records stored and posted, quarantined and dropped
    (``quarantine_dropped``: refused messages not kept because their device was over its
    quarantine limits), duplicates."""
    with engine.connect() as conn:
        ledgered = conn.execute(select(func.count()).select_from(records)
                                .where(records.c.status == "posted")).scalar_one()
        stored = conn.execute(select(func.count()).select_from(records)).scalar_one()
        quarantined = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
        dup = conn.execute(select(counters.c.value).where(
            counters.c.name == "duplicates_rejected")).scalar()
        dropped = quarantine_dropped(conn)
    return {"records_ledgered": int(ledgered), "records_stored": int(stored),
            "quarantined": int(quarantined), "quarantine_dropped": dropped,
            "duplicates_rejected": int(dup or 0)}


def anomaly_counts(engine: Engine) -> dict[str, int]:
    a = anomalies.c
    with engine.connect() as conn:
        return {k: int(n) for k, n in conn.execute(
            select(a.kind, func.count()).where(a.status == "open").group_by(a.kind))}
