"""From a verified record to the balanced ledger entries it posts (plain code).

Accounts are named by what they are in the business::

    card:<card>:purse                 stored value on the card (liability, fen)
    card:<card>:visits:<product>      visits owed on the card (liability, visits)
    card:<card>:points                the member's points on this card (liability, points)
    store:<store>:cash                money the store took in (asset, fen)
    store:<store>:revenue:<product>   sales recognised by the store (fen)
    store:<store>:bonus_given         bonus value granted on recharges (expense, fen)
    store:<store>:visits_sold:<p>     visits issued by the store (visits)
    store:<store>:visits_used:<p>     visits redeemed at the store (visits)
    store:<store>:points_issued       points granted by the store (points)

Amounts are signed: a debit is positive, a credit negative. Assets are kept apart
(``CNY`` in fen, ``visit:<product>``, ``points``): every posting balances per asset and
no entry mixes them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from protocol.record import Operation, TransactionRecord

CNY = "CNY"
POINTS = "points"


def visit_asset(product: str) -> str:
    return f"visit:{product}"


@dataclass(frozen=True)
class Entry:
    account: str
    asset: str
    amount: int


class UnbalancedPosting(AssertionError):
    """A posting whose entries do not sum to zero per asset: a bug, never posted."""


def txn_id(device_id: str, seq: int) -> str:
    return f"{device_id}#{seq}"


def postings_for(r: TransactionRecord) -> list[Entry]:
    """The balanced entries that ``r`` posts. Zero-value lines are left out."""
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
    elif op in (Operation.DEBIT, Operation.REFUND, Operation.RECALL):
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
    check_balanced(lines)
    return lines


def check_balanced(entries: list[Entry]) -> None:
    per_asset: dict[str, int] = defaultdict(int)
    for e in entries:
        per_asset[e.asset] += e.amount
    bad = {asset: total for asset, total in per_asset.items() if total}
    if bad:
        raise UnbalancedPosting(f"entries do not balance: {bad}")
