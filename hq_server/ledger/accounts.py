"""The chart of accounts: what each account is, and how its name is made and read.

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



def check_balanced(entries: list[Entry]) -> None:
    per_asset: dict[str, int] = defaultdict(int)
    for e in entries:
        per_asset[e.asset] += e.amount
    bad = {asset: total for asset, total in per_asset.items() if total}
    if bad:
        raise UnbalancedPosting(f"entries do not balance: {bad}")
