"""The application state a card carries, decoded from its memory.

This is what card operations reason about: the purse in fen, visits left per count
product, and the card's transaction counter (which rises by one on every write, so HQ
can spot a card image that was rolled back or cloned).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CardState:
    card_id: str
    purse_fen: int = 0
    visits: dict[str, int] = field(default_factory=dict)
    counter: int = 0
    blocked: bool = False

    def visits_of(self, product: str) -> int:
        return self.visits.get(product, 0)
