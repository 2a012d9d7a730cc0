"""From a verified record to the balanced ledger entries it posts (plain code).

Accounts are named by what they are in the business, ``<family>:<owner>:<kind>`` and a
product for per-product accounts; ids never contain ``:`` (:mod:`protocol.ids`), so a
name is taken apart by splitting it (:func:`parse_account`), and two different accounts
never share a name::

    card:<card>:purse                 stored value on the card (liability, fen)
    card:<card>:visits:<product>      visits owed on the card (liability, visits)
    card:<card>:points                the member's points on this card (liability, points)
    store:<store>:cash                money the store took in (asset, fen)
    store:<store>:revenue:<product>   sales recognised by the store (fen)
    store:<store>:bonus_given         bonus value granted on recharges (expense, fen)
    store:<store>:visits_sold:<p>     visits issued by the store (visits)
    store:<store>:visits_used:<p>     visits redeemed at the store (visits)
    store:<store>:points_issued       points granted by the store (points)

    card:<card>:unbacked              value the card spent beyond what HQ held for it
                                      (clone, forged top-up): a receivable, fen
    card:<card>:unbacked_visits:<p>   the same for visits
    card:<card>:unbacked_points       the same for points
    store:<store>:settlement          what the store owes (credit) or is owed (debit)
                                      by other stores, from settlement runs (fen)

    suspense:<device>:card            what a record that broke a business rule said the
    suspense:<device>:card_points     card (resp. the store) gained or gave, fen, points
    suspense:<device>:card_visits:<p> and visits; never part of a card's or a store's
    suspense:<device>:store[...]      balance (see record_rules); the same kinds for store

Purse, visits and points accounts never go below zero (the database refuses it); see
:func:`postings_for` for where a shortfall goes instead.

Amounts are signed: a debit is positive, a credit negative. Assets are kept apart
(``CNY`` in fen, ``visit:<product>``, ``points``): every posting balances per asset and
no entry mixes them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from protocol.ids import is_id, is_product_name
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


class UnknownAccount(ValueError):
    """An account name outside the chart of accounts: a bug, never posted."""


@dataclass(frozen=True)
class AccountRule:
    """What an account is: its kind, and whether its balance must stay a credit (>= 0)."""

    kind: str  # liability / asset / revenue / expense / settlement / memo
    credit_floor: bool


@dataclass(frozen=True)
class AccountName:
    """An account name taken apart: ``<family>:<owner>:<kind>[:<product>]``.

    Ids never contain ``:`` (protocol.ids), so the parts are found by splitting, never
    by looking at suffixes: a product named ``unbacked`` or a card named like another
    card's account cannot change what an account is.
    """

    family: str  # card / store
    owner: str  # the card id or store id
    kind: str  # purse, visits, cash, revenue, ... (see the chart below)
    product: str = ""  # for per-product accounts

    def __str__(self) -> str:
        return ":".join([self.family, self.owner, self.kind, *([self.product] if self.product
                                                                else [])])


#: The chart of accounts: (family, kind) → (rule, whether the name ends with a product).
CHART: dict[tuple[str, str], tuple[AccountRule, bool]] = {
    ("card", "purse"): (AccountRule("liability", True), False),
    ("card", "points"): (AccountRule("liability", True), False),
    ("card", "visits"): (AccountRule("liability", True), True),
    ("card", "unbacked"): (AccountRule("asset", False), False),
    ("card", "unbacked_points"): (AccountRule("asset", False), False),
    ("card", "unbacked_visits"): (AccountRule("asset", False), True),
    ("store", "cash"): (AccountRule("asset", False), False),
    ("store", "bonus_given"): (AccountRule("expense", False), False),
    ("store", "points_issued"): (AccountRule("expense", False), False),
    ("store", "settlement"): (AccountRule("settlement", False), False),
    ("store", "revenue"): (AccountRule("revenue", False), True),
    ("store", "visits_sold"): (AccountRule("memo", False), True),
    ("store", "visits_used"): (AccountRule("memo", False), True),
    # What a record that broke a business rule claimed, held apart per device.
    ("suspense", "card"): (AccountRule("suspense", False), False),
    ("suspense", "card_points"): (AccountRule("suspense", False), False),
    ("suspense", "card_visits"): (AccountRule("suspense", False), True),
    ("suspense", "store"): (AccountRule("suspense", False), False),
    ("suspense", "store_points"): (AccountRule("suspense", False), False),
    ("suspense", "store_visits"): (AccountRule("suspense", False), True),
}


def account_name(family: str, owner: str, kind: str, product: str = "") -> str:
    """The name of an account; UnknownAccount if the parts do not make one."""
    name = AccountName(family, owner, kind, product)
    parse_account(str(name))  # the one place that says what a valid name is
    return str(name)


def parse_account(account: str) -> AccountName:
    """Take an account name apart; UnknownAccount if it is not in the chart."""
    parts = account.split(":") if isinstance(account, str) else []
    if len(parts) in (3, 4):
        family, owner, kind, *rest = parts
        entry = CHART.get((family, kind))
        product = rest[0] if rest else ""
        product_ok = is_product_name(product) if entry and entry[1] else not rest
        if entry and is_id(owner) and product_ok:
            return AccountName(family, owner, kind, product)
    raise UnknownAccount(f"no such account in the chart of accounts: {account!r}")


def account_rule(account: str) -> AccountRule:
    """What an account is, from its parsed name (see the module docstring)."""
    name = parse_account(account)
    return CHART[(name.family, name.kind)][0]


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


def suspense_account(device_id: str, side: str, asset: str) -> str:
    """Where a rule-breaking record's claim for the card or the store is kept."""
    if asset == CNY:
        return account_name("suspense", device_id, side)
    if asset == POINTS:
        return account_name("suspense", device_id, f"{side}_points")
    return account_name("suspense", device_id, f"{side}_visits", asset.removeprefix("visit:"))


def unbacked_account(card_id: str, asset: str) -> str:
    """Where value a card spent beyond what HQ held for it is recorded."""
    if asset == CNY:
        return f"card:{card_id}:unbacked"
    if asset == POINTS:
        return f"card:{card_id}:unbacked_points"
    return f"card:{card_id}:unbacked_visits:{asset.removeprefix('visit:')}"


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


def check_balanced(entries: list[Entry]) -> None:
    per_asset: dict[str, int] = defaultdict(int)
    for e in entries:
        per_asset[e.asset] += e.amount
    bad = {asset: total for asset, total in per_asset.items() if total}
    if bad:
        raise UnbalancedPosting(f"entries do not balance: {bad}")
