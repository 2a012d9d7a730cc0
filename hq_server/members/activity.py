"""What the ledger says about a member: visits, total and average spend, last visit, and
their last transactions — always derived from the ledger, never stored beside it.

Given the member's card ids (:mod:`hq_server.members.card_link`), read the ledger's
transactions of those cards (indexed by card, migration 0008):

* a **visit** (到店消费) is a transaction of kind ``take_visit``, ``uid_visit`` or
  ``debit`` that was not reversed and did not go to suspense (a record that broke a
  business rule moved no value);
* **spend** is what the stores recognised as revenue from the card (the purse and cash
  paid at checkouts, visit packages and time passes), net of refunds and reversals, in
  fen; **average spend** is spend over visits, rounded down to the fen;
* **last visit** is the device time of the newest visit's record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from hq_server.db.tables import ledger_entries, ledger_transactions, records

VISIT_KINDS = ("take_visit", "uid_visit", "debit")


@dataclass(frozen=True)
class Activity:
    visits: int
    spend_fen: int
    average_spend_fen: int
    last_visit_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"visits": self.visits, "spend_fen": self.spend_fen,
                "average_spend_fen": self.average_spend_fen,
                "last_visit_ms": self.last_visit_ms}


NO_ACTIVITY = Activity(0, 0, 0, None)


def activity_of_cards(conn: Connection, card_ids: Sequence[str]) -> Activity:
    """Visits, spend and last visit of the cards ``card_ids`` (one member's)."""
    if not card_ids:
        return NO_ACTIVITY
    t, e = ledger_transactions.c, ledger_entries.c
    reversal = ledger_transactions.alias("reversal")
    cards = list(card_ids)
    visit = and_(t.card_id.in_(cards), t.kind.in_(VISIT_KINDS),
                 func.coalesce(t.memo, "").notlike("suspense:%"),
                 ~select(reversal.c.txn_id).where(reversal.c.reverses == t.txn_id).exists())
    visits = int(conn.execute(select(func.count()).select_from(ledger_transactions)
                              .where(visit)).scalar_one())
    last = conn.execute(
        select(func.max(records.c.device_time_ms))
        .select_from(ledger_transactions.join(
            records, and_(records.c.device_id == t.device_id, records.c.seq == t.seq)))
        .where(visit)).scalar()
    revenue = conn.execute(
        select(func.coalesce(func.sum(e.amount), 0))
        .select_from(ledger_entries.join(ledger_transactions, e.txn_id == t.txn_id))
        .where(t.card_id.in_(cards), e.asset == "CNY",
               e.account.like("store:%:revenue:%"))).scalar_one()
    spend = -int(revenue)
    return Activity(visits, spend, spend // visits if visits else 0,
                    None if last is None else int(last))


def last_transactions(conn: Connection, card_ids: Sequence[str],
                      limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` ledger transactions of the cards, newest first, each with what
    it did to the card's purse (``purse_fen``, + loaded, − spent) and the revenue the
    store recognised (``spend_fen``)."""
    if not card_ids:
        return []
    t, e = ledger_transactions.c, ledger_entries.c
    rows = conn.execute(select(t.txn_id, t.kind, t.store, t.card_id, t.posted_at_ms, t.memo)
                        .where(t.card_id.in_(list(card_ids)))
                        .order_by(t.posted_at_ms.desc(), t.txn_id.desc())
                        .limit(limit)).mappings().all()
    if not rows:
        return []
    by_txn: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_txn[r["txn_id"]] = {"txn_id": r["txn_id"], "kind": r["kind"], "store_id": r["store"],
                               "card_id": r["card_id"], "posted_at_ms": int(r["posted_at_ms"]),
                               "suspense": (r["memo"] or "").startswith("suspense:"),
                               "purse_fen": 0, "spend_fen": 0}
    for txn, account, asset, amount in conn.execute(
            select(e.txn_id, e.account, e.asset, e.amount).where(e.txn_id.in_(list(by_txn)))):
        row = by_txn[txn]
        if asset != "CNY":
            continue
        if account == f"card:{row['card_id']}:purse":
            row["purse_fen"] -= int(amount)
        elif account.startswith("store:") and ":revenue:" in account:
            row["spend_fen"] -= int(amount)
    return list(by_txn.values())
