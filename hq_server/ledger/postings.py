"""From a verified record to the balanced ledger entries it posts (plain code).

The accounts are those of the chart (:mod:`hq_server.ledger.accounts`). Purse, visits
and points accounts never go below zero (the database refuses it); see
:func:`postings_for` for where a shortfall goes instead.
"""

from __future__ import annotations

from collections import defaultdict

from hq_server.ledger.accounts import (
    CNY,
    POINTS,
    Entry,
    account_rule,
    check_balanced,
    suspense_account,
    unbacked_account,
    visit_asset,
)
from protocol.record import Operation, TransactionRecord


def postings_for(r: TransactionRecord, available: dict[str, int] | None = None) -> list[Entry]:
    """The balanced entries that ``r`` posts. Zero-value lines are left out.

    ``available`` maps a card's purse, visit and points accounts to what HQ holds on them
    (credits minus debits; missing means 0). When given, a record that takes more than
    that (a clone spending value already spent, a card loaded with value HQ never saw
    sold) posts the covered part to the card's account and the rest to its ``unbacked``
    account, so the ledger stays balanced and no card account goes below zero; the
    reconciliation turns the same fact into an anomaly. ``available`` is updated.
    """
    lines = _raw_postings(r)
    if available is not None:
        lines = _within_floors(r.card_id, lines, available)
    check_balanced(lines)
    return lines


def suspense_postings(r: TransactionRecord) -> list[Entry]:
    """The entries of a record that broke a business rule: what it claims, held apart.

    Every line the record would post to the card goes to ``suspense:<device>:card`` and
    every line to a store goes to ``suspense:<device>:store`` (per asset), so the ledger
    keeps the claim, balanced, while no card or store balance moves."""
    lines: dict[tuple[str, str], int] = defaultdict(int)
    for e in _raw_postings(r):
        side = "card" if e.account.startswith("card:") else "store"
        lines[(suspense_account(r.device_id, side, e.asset), e.asset)] += e.amount
    out = [Entry(account, asset, amount) for (account, asset), amount in lines.items() if amount]
    check_balanced(out)
    return out


def _within_floors(card_id: str, lines: list[Entry], available: dict[str, int]) -> list[Entry]:
    out: list[Entry] = []
    prefix = f"card:{card_id}:"
    for e in lines:
        if not e.account.startswith(prefix) or not account_rule(e.account).credit_floor:
            out.append(e)
            continue
        have = available.get(e.account, 0)
        if e.amount > have:  # a debit beyond the balance HQ holds
            if have:
                out.append(Entry(e.account, e.asset, have))
            out.append(Entry(unbacked_account(card_id, e.asset), e.asset, e.amount - have))
            available[e.account] = 0
        else:
            out.append(e)
            available[e.account] = have - e.amount
    return out


def _raw_postings(r: TransactionRecord) -> list[Entry]:
    card = f"card:{r.card_id}"
    store = f"store:{r.store}"
    product = r.product or "general"
    purse_delta = r.purse_after - r.purse_before
    visits_delta = r.visits_after - r.visits_before
    lines: list[Entry] = []

    def add(account: str, asset: str, amount: int) -> None:
        if amount:
            lines.append(Entry(account, asset, amount))

    op = r.operation
    if op in (Operation.RECHARGE, Operation.OPEN_ACCOUNT):
        add(f"{store}:cash", CNY, r.cash_fen)
        add(f"{store}:bonus_given", CNY, r.bonus_fen)
        add(f"{card}:purse", CNY, -purse_delta)
    elif op in (Operation.DEBIT, Operation.REFUND, Operation.RECALL, Operation.SELL_PASS):
        # The purse moves by purse_delta; cash (paid in > 0, paid out < 0) moves beside
        # it; the difference is the store's revenue (negative for refunds).
        add(f"{card}:purse", CNY, -purse_delta)
        add(f"{store}:cash", CNY, r.cash_fen)
        add(f"{store}:revenue:{product}", CNY, purse_delta - r.cash_fen)
    elif op == Operation.ADD_VISITS:
        add(f"{store}:cash", CNY, r.cash_fen)
        add(f"{card}:purse", CNY, -purse_delta)
        add(f"{store}:revenue:{product}", CNY, purse_delta - r.cash_fen)
    if visits_delta and r.product:
        asset = visit_asset(r.product)
        add(f"{card}:visits:{r.product}", asset, -visits_delta)
        side = "visits_sold" if visits_delta > 0 else "visits_used"
        add(f"{store}:{side}:{r.product}", asset, visits_delta)
    if r.points_delta:
        add(f"{card}:points", POINTS, -r.points_delta)
        add(f"{store}:points_issued", POINTS, r.points_delta)
    return lines


