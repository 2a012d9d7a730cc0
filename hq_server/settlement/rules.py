"""Inter-store settlement (跨店结算): who owes whom for stored value spent elsewhere.

A member tops up in store A (A takes the cash) and spends in store B (B delivers the
goods or the swim). For that value A owes B. The ledger knows every movement of every
purse and the store where it happened; settlement matches, per card and in posting
order, each amount spent against the value loaded before it, first in first out:

* value loaded (a recharge, bonus included, a refund back onto the card) at store S
  becomes a *lot* owned by S;
* value spent at store T takes from the oldest lots; for each part taken from a lot of
  store S ≠ T, S owes T that amount.

(If posting order ever shows a spend before its load, the spend waits for the next
lot.) A matched amount belongs to the period in which the later of its two movements
was posted, so a period, once closed, never changes. The matrix of a period is
antisymmetric (what A owes B is what B is owed by A), so it sums to zero, and so do the
stores' net positions. :func:`hq_server.settlement.runs.post_settlement` books a period's net amounts to the
stores' ``settlement`` accounts as one balanced ledger transaction.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from hq_server.ledger.accounts import CNY, Entry

HQ_STORE = "hq"


@dataclass(frozen=True)
class PurseMovement:
    """Value put on (amount > 0) or taken from (amount < 0) a card's purse at a store."""

    card_id: str
    store: str
    amount: int
    posted_at_ms: int
    txn_id: str


@dataclass(frozen=True)
class SettlementLine:
    """``owes`` owes ``owed`` ``amount`` fen, matched at ``at_ms``."""

    owes: str
    owed: str
    amount: int
    at_ms: int
    card_id: str


def match_movements(movements: Iterable[PurseMovement]) -> list[SettlementLine]:
    """FIFO-match every card's spending against the value loaded before it."""
    per_card: dict[str, list[PurseMovement]] = defaultdict(list)
    for m in movements:
        per_card[m.card_id].append(m)
    lines: list[SettlementLine] = []
    for card_id, moves in per_card.items():
        moves.sort(key=lambda m: (m.posted_at_ms, m.txn_id))
        lots: deque[list] = deque()  # [store, remaining, at_ms]
        waiting: deque[list] = deque()  # spends not yet covered: [store, remaining, at_ms]
        for m in moves:
            if m.amount > 0:
                left = m.amount
                while left and waiting:
                    spend = waiting[0]
                    take = min(left, spend[1])
                    if m.store != spend[0]:
                        lines.append(SettlementLine(m.store, spend[0], take, m.posted_at_ms, card_id))
                    spend[1] -= take
                    left -= take
                    if not spend[1]:
                        waiting.popleft()
                if left:
                    lots.append([m.store, left, m.posted_at_ms])
            elif m.amount < 0:
                left = -m.amount
                while left and lots:
                    lot = lots[0]
                    take = min(left, lot[1])
                    if lot[0] != m.store:
                        lines.append(SettlementLine(lot[0], m.store, take, m.posted_at_ms, card_id))
                    lot[1] -= take
                    left -= take
                    if not lot[1]:
                        lots.popleft()
                if left:
                    waiting.append([m.store, left, m.posted_at_ms])
    return lines


@dataclass
class SettlementMatrix:
    """Net amounts between stores for one period, in fen.

    ``owes[(a, b)] > 0`` means a owes b that much (after netting b's debt to a);
    ``net[s]`` is what store s is owed in total (negative: what it owes).
    """

    start_ms: int
    end_ms: int
    owes: dict[tuple[str, str], int] = field(default_factory=dict)
    net: dict[str, int] = field(default_factory=dict)

    @property
    def stores(self) -> list[str]:
        return sorted(self.net)

    def signed(self, a: str, b: str) -> int:
        """What a owes b (negative: what b owes a)."""
        return self.owes.get((a, b), 0) - self.owes.get((b, a), 0)

    def total(self) -> int:
        """Sum over the whole signed matrix: always 0 for a consistent matrix."""
        return sum(self.signed(a, b) for a in self.stores for b in self.stores)


def settlement_matrix(lines: Iterable[SettlementLine], start_ms: int, end_ms: int) -> SettlementMatrix:
    """Net the lines matched in ``[start_ms, end_ms)`` into a store-by-store matrix."""
    gross: dict[tuple[str, str], int] = defaultdict(int)
    for line in lines:
        if start_ms <= line.at_ms < end_ms:
            gross[(line.owes, line.owed)] += line.amount
    matrix = SettlementMatrix(start_ms, end_ms)
    stores = sorted({s for pair in gross for s in pair})
    for s in stores:
        matrix.net[s] = 0
    for i, a in enumerate(stores):
        for b in stores[i + 1:]:
            d = gross.get((a, b), 0) - gross.get((b, a), 0)
            if d > 0:
                matrix.owes[(a, b)] = d
            elif d < 0:
                matrix.owes[(b, a)] = -d
    for (a, b), amount in matrix.owes.items():
        matrix.net[a] -= amount
        matrix.net[b] += amount
    return matrix


def settlement_entries(matrix: SettlementMatrix) -> list[Entry]:
    entries: list[Entry] = []
    for (a, b), amount in sorted(matrix.owes.items()):
        entries.append(Entry(f"store:{a}:settlement", CNY, -amount))  # a's debt to others
        entries.append(Entry(f"store:{b}:settlement", CNY, amount))  # b's claim on others
    return entries
