"""The application state a card carries, decoded from its memory, and why an operation
on it may be refused.

This is what card operations reason about: the purse in fen, visits left per count
product, a time pass, the last use (for daily limits and anti-passback), and the card's
transaction counter, which rises by one on every write so HQ can spot a card image that
was rolled back or cloned. Dates are whole days since 2000-01-01 in the venue's local
time (``day 0`` = 2000-01-01), so the card never needs a time zone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: The card format this build reads and writes (header byte 2).
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CardState:
    card_id: str
    purse_fen: int = 0
    visits: dict[str, int] = field(default_factory=dict)
    counter: int = 0
    blocked: bool = False
    # --- header (written when the card is issued) ---
    chain_id: int = 0
    card_product: str = ""
    issued_day: int = 0
    expiry_day: int = 0  # last valid day; 0 = never expires
    format_version: int = FORMAT_VERSION
    # --- purse and time pass ---
    account_open: bool = False
    recalled: bool = False
    pass_product: str = ""
    pass_from_day: int = 0
    pass_to_day: int = 0  # inclusive
    # --- last use, for daily limits and anti-passback ---
    last_use_day: int = 0
    last_use_minute: int = 0  # minute of that day, 0..1439
    uses_today: int = 0  # entries on last_use_day, 0..15
    last_gate_group: int = 0  # 0..15

    def visits_of(self, product: str) -> int:
        return self.visits.get(product, 0)

    @property
    def total_visits(self) -> int:
        return sum(self.visits.values())


class RefusalReason(enum.Enum):
    """Why a card operation was refused; each is something a member or clerk can act on."""

    NOT_ONECARD = "not a OneCard card (blank or another application)"
    UNKNOWN_FORMAT = "unknown card format version"
    WRONG_CHAIN = "card belongs to another chain"
    TAMPERED = "card data fails its MAC (edited or copied from another card)"
    DAMAGED = "no valid copy of the card state"
    NOT_ISSUED = "card not issued"
    ALREADY_ISSUED = "card already issued"
    RECALLED = "card recalled"
    BLOCKED = "card blocked"
    DENYLISTED = "card on the denylist (reported lost or stolen)"
    EXPIRED = "card or pass expired"
    NOT_YET_VALID = "pass not valid yet"
    EXHAUSTED = "no visits left"
    DAILY_LIMIT = "daily limit reached"
    ANTI_PASSBACK = "already entered here a moment ago (anti-passback)"
    INSUFFICIENT_BALANCE = "insufficient balance"
    LIMIT = "would exceed what the card can hold"
    BAD_AMOUNT = "amount must be a positive whole number of fen"
    UNKNOWN_PRODUCT = "unknown product"
    NOT_ALLOWED = "this card product does not allow it"
    ACCOUNT_NOT_OPEN = "stored-value account not opened"
    ACCOUNT_ALREADY_OPEN = "stored-value account already opened"
    NO_FREE_SLOT = "card holds no more count products"
    NOT_REFUNDABLE = "not a debit of this card that can be refunded"


@dataclass(frozen=True)
class Refusal:
    """A refused operation: the reason (for code) and a detail (for people)."""

    reason: RefusalReason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value
