"""Income by store (门店营收): what each store took in over a day or a period, from the ledger.

Per store: cash taken (现金收入: every fen paid in at its counters, less cash paid out),
recharges (充值: cash taken for top-ups and account openings, and the bonus given with
them) and revenue by product (营业收入: what was sold, paid from purses or cash, less
refunds). Read-only, from posted ledger entries; records that broke a business rule sit in
suspense and count nowhere. A record counts on the day its terminal made it (device
time, in the chain's local time), so an offline till's sales land on the day they
happened whenever they arrive; a reversal counts when it was posted.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine

from hq_server.db.tables import ledger_entries, ledger_transactions, records, stores
from hq_server.ledger.accounts import CNY
from hq_server.operators.access import Actor, Level, authorise, scope_filter

#: The chain's local time (China Standard Time), as terminals keep it.
DEFAULT_UTC_OFFSET_MINUTES = 480
MAX_PERIOD_DAYS = 366


class ReportError(ValueError):
    """A report that cannot be made as asked (HTTP 422)."""


@dataclass
class StoreIncome:
    store: str
    cash_taken_fen: int = 0
    recharges_fen: int = 0
    bonus_given_fen: int = 0
    revenue_fen: int = 0
    revenue_by_product: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "cash_taken_fen": self.cash_taken_fen,
                "recharges_fen": self.recharges_fen, "bonus_given_fen": self.bonus_given_fen,
                "revenue_fen": self.revenue_fen,
                "revenue_by_product": dict(sorted(self.revenue_by_product.items()))}


def day_bounds(day: dt.date, utc_offset_minutes: int = DEFAULT_UTC_OFFSET_MINUTES
               ) -> tuple[int, int]:
    """A local day as [start, end) in epoch milliseconds."""
    tz = dt.timezone(dt.timedelta(minutes=utc_offset_minutes))
    start = dt.datetime.combine(day, dt.time(), tz)
    return int(start.timestamp() * 1000), int((start + dt.timedelta(days=1)).timestamp() * 1000)


def period_bounds(first: dt.date, last: dt.date,
                  utc_offset_minutes: int = DEFAULT_UTC_OFFSET_MINUTES) -> tuple[int, int]:
    """Days ``first`` to ``last`` (both included) as [start, end) in epoch milliseconds."""
    if last < first:
        raise ReportError("the period ends before it starts")
    if (last - first).days >= MAX_PERIOD_DAYS:
        raise ReportError(f"a period spans at most {MAX_PERIOD_DAYS} days")
    return day_bounds(first, utc_offset_minutes)[0], day_bounds(last, utc_offset_minutes)[1]


def fold_income(rows: list[tuple[str, str, str, int]]) -> dict[str, StoreIncome]:
    """Per store, from (store, account, transaction kind, summed amount) rows (plain code).

    Amounts are signed as the ledger keeps them: a debit (cash in) positive, a credit
    (revenue) negative."""
    out: dict[str, StoreIncome] = {}
    for store, account, kind, amount in rows:
        parts = account.split(":")
        if len(parts) < 3 or parts[0] != "store" or parts[1] != store:
            continue
        income = out.setdefault(store, StoreIncome(store))
        what = parts[2]
        if what == "cash":
            income.cash_taken_fen += amount
            if kind in ("recharge", "open_account"):
                income.recharges_fen += amount
        elif what == "bonus_given":
            income.bonus_given_fen += amount
        elif what == "revenue" and len(parts) >= 4:
            product = ":".join(parts[3:])
            income.revenue_by_product[product] = income.revenue_by_product.get(product, 0) - amount
            income.revenue_fen -= amount
    for income in out.values():
        income.revenue_by_product = {p: v for p, v in income.revenue_by_product.items() if v}
    return out


def income_by_store(engine: Engine, actor: Actor, start_ms: int, end_ms: int, *,
                    store: str | None = None) -> list[StoreIncome]:
    """Income of each store in the operator's scope for [start_ms, end_ms)."""
    authorise(actor, "reports.read")
    if end_ms <= start_ms:
        raise ReportError("the period ends before it starts")
    t, e, r = ledger_transactions.c, ledger_entries.c, records.c
    when = func.coalesce(r.device_time_ms, t.posted_at_ms)
    q = (select(t.store, e.account, t.kind, func.sum(e.amount))
         .select_from(ledger_entries.join(ledger_transactions, e.txn_id == t.txn_id)
                      .outerjoin(records, and_(r.device_id == t.device_id, r.seq == t.seq)))
         .where(e.asset == CNY, e.account.like("store:%"), t.kind != "settlement",
                when >= start_ms, when < end_ms)
         .group_by(t.store, e.account, t.kind))
    level, ident = scope_filter(actor)
    if level is Level.STORE:
        q = q.where(t.store == ident)
    elif level is Level.REGION:
        q = q.where(t.store.in_(select(stores.c.store_id).where(stores.c.region_id == ident)))
    if store is not None:
        q = q.where(t.store == store)
    with engine.connect() as conn:
        rows = [(s, a, k, int(n)) for s, a, k, n in conn.execute(q)]
    folded = fold_income(rows)
    return [folded[s] for s in sorted(folded)]


def income_totals(incomes: list[StoreIncome]) -> dict[str, Any]:
    """The chain's (or the scope's) totals over the stores listed."""
    by_product: dict[str, int] = defaultdict(int)
    for i in incomes:
        for p, v in i.revenue_by_product.items():
            by_product[p] += v
    return {"cash_taken_fen": sum(i.cash_taken_fen for i in incomes),
            "recharges_fen": sum(i.recharges_fen for i in incomes),
            "bonus_given_fen": sum(i.bonus_given_fen for i in incomes),
            "revenue_fen": sum(i.revenue_fen for i in incomes),
            "revenue_by_product": dict(sorted(by_product.items()))}
