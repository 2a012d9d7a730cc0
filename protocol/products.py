"""Card products and tariffs as data, so HQ can push them to terminals as JSON.

A chain sells *card products* (卡类型): what a card is. One card product may combine
several things — a stored-value purse (储值), member discounts by item category (折扣),
free tickets (N entries per day), count products (次卡) and an included time pass
(月卡/季卡/年卡). Count products and passes are products of their own, sold onto a card.

On the card every product is a one-byte code (1..255); the names are what records and
the ledger use. Codes come from this catalogue, so all products share one code space.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.ids import MAX_PRODUCT, describe, is_product_name
from protocol.money import MAX_FEN

_UNKNOWN = re.compile(r"^product#(\d{1,3})$")

#: Pass lengths as months (month, season, year, three years).
PASS_LENGTHS = {"month": 1, "season": 3, "year": 12, "3years": 36}


class CatalogueError(ValueError):
    """A catalogue that cannot be used (duplicate code, bad name, impossible price)."""


@dataclass(frozen=True)
class CountProduct:
    """Visits of one kind (e.g. ``swim``), sold in packages of ``visits``."""

    code: int
    name: str
    price_fen: int
    visits: int


@dataclass(frozen=True)
class PassProduct:
    """A time pass: entry on every day from its first to its last day."""

    code: int
    name: str
    price_fen: int
    length: str  # one of PASS_LENGTHS


@dataclass(frozen=True)
class BonusTier:
    """Top up at least ``min_paid_fen`` and get ``bonus_fen`` on top (充1000送100)."""

    min_paid_fen: int
    bonus_fen: int


@dataclass(frozen=True)
class CardProduct:
    """What a card is; any combination of purse, discount, free tickets, visits, pass."""

    code: int
    name: str
    stored_value: bool = False
    #: percent of the list price a member pays, per item category (e.g. {"food": 88})
    discounts: Mapping[str, int] = field(default_factory=dict)
    default_discount: int = 100
    free_per_day: int = 0  # free entries per day (免费票), 0..15
    daily_limit: int = 0  # entries per day at most, whatever pays for them; 0 = none
    count_products: tuple[str, ...] = ()  # count products that may be sold onto it
    passes: tuple[str, ...] = ()  # passes that may be sold (and renewed) onto it
    included_pass: str = ""  # a pass product started on the day the card is issued
    valid_years: int = 0  # card expiry after issue; 0 = never

    def pays_percent(self, category: str) -> int:
        return self.discounts.get(category, self.default_discount)


@dataclass(frozen=True)
class Catalogue:
    """Every product a chain sells, plus its top-up bonus tiers and gate rules."""

    card_products: tuple[CardProduct, ...] = ()
    count_products: tuple[CountProduct, ...] = ()
    passes: tuple[PassProduct, ...] = ()
    bonus_tiers: tuple[BonusTier, ...] = ()
    #: minutes a card may not re-enter through the same gate group (0 = no rule)
    anti_passback_minutes: Mapping[int, int] = field(default_factory=dict)
    #: the most a purse may hold; the card's value block is signed 32-bit
    purse_limit_fen: int = 2**31 - 1

    def __post_init__(self) -> None:
        codes: dict[int, str] = {}
        names: set[str] = set()
        for p in (*self.card_products, *self.count_products, *self.passes):
            if not isinstance(p.code, int) or not 1 <= p.code <= 255:
                raise CatalogueError(f"product {p.name!r}: code must be 1..255")
            if not is_product_name(p.name) or _UNKNOWN.match(p.name):
                raise CatalogueError(f"product name {p.name!r}: {describe(MAX_PRODUCT)}")
            if p.code in codes:
                raise CatalogueError(f"code {p.code} used by {codes[p.code]!r} and {p.name!r}")
            if p.name in names:
                raise CatalogueError(f"product name {p.name!r} used twice")
            codes[p.code] = p.name
            names.add(p.name)
        for p in (*self.count_products, *self.passes):
            if not isinstance(p.price_fen, int) or not 0 <= p.price_fen <= MAX_FEN:
                raise CatalogueError(f"product {p.name!r}: impossible price")
        for c in self.count_products:
            if not isinstance(c.visits, int) or not 1 <= c.visits <= 65535:
                raise CatalogueError(f"count product {c.name!r}: visits per package 1..65535")
        for ps in self.passes:
            if ps.length not in PASS_LENGTHS:
                raise CatalogueError(f"pass {ps.name!r}: length must be one of {sorted(PASS_LENGTHS)}")
        count_names = {c.name for c in self.count_products}
        pass_names = {ps.name for ps in self.passes}
        for cp in self.card_products:
            pcts = [cp.default_discount, *cp.discounts.values()]
            if any(not isinstance(v, int) or not 0 <= v <= 100 for v in pcts):
                raise CatalogueError(f"card product {cp.name!r}: discounts are 0..100 percent")
            if not 0 <= cp.free_per_day <= 15 or not 0 <= cp.daily_limit <= 15:
                raise CatalogueError(f"card product {cp.name!r}: daily figures are 0..15")
            if not set(cp.count_products) <= count_names:
                raise CatalogueError(f"card product {cp.name!r}: unknown count product")
            if not set(cp.passes) <= pass_names:
                raise CatalogueError(f"card product {cp.name!r}: unknown pass")
            if cp.included_pass and cp.included_pass not in pass_names:
                raise CatalogueError(f"card product {cp.name!r}: unknown pass {cp.included_pass!r}")
            if not 0 <= cp.valid_years <= 50:
                raise CatalogueError(f"card product {cp.name!r}: valid_years 0..50")
        for t in self.bonus_tiers:
            if not (0 < t.min_paid_fen <= MAX_FEN and 0 <= t.bonus_fen <= MAX_FEN):
                raise CatalogueError("bonus tiers need a positive threshold and a bonus >= 0")
        for group, minutes in self.anti_passback_minutes.items():
            if not 0 <= group <= 15 or not 0 <= minutes <= 24 * 60:
                raise CatalogueError("anti-passback: gate groups 0..15, window 0..1440 minutes")
        if not 0 < self.purse_limit_fen < 2**31:
            raise CatalogueError("purse limit must fit the card's signed 32-bit value block")

    # --- lookups ---------------------------------------------------------------------

    def card_product(self, name: str) -> CardProduct | None:
        return next((p for p in self.card_products if p.name == name), None)

    def count_product(self, name: str) -> CountProduct | None:
        return next((p for p in self.count_products if p.name == name), None)

    def pass_product(self, name: str) -> PassProduct | None:
        return next((p for p in self.passes if p.name == name), None)

    def code_of(self, name: str) -> int:
        """The one-byte card code of a product name (``product#N`` for codes we do not know)."""
        for p in (*self.card_products, *self.count_products, *self.passes):
            if p.name == name:
                return p.code
        m = _UNKNOWN.match(name)
        if m and 1 <= int(m.group(1)) <= 255:
            return int(m.group(1))
        raise KeyError(f"no product named {name!r} in the catalogue")

    def name_of(self, code: int) -> str:
        """The product name for a card code; ``product#N`` when this catalogue lacks it,
        so a terminal with an older catalogue still reads (and rewrites) the card."""
        for p in (*self.card_products, *self.count_products, *self.passes):
            if p.code == code:
                return p.name
        return f"product#{code}"

    def bonus_for(self, paid_fen: int) -> int:
        """The bonus of the highest tier that ``paid_fen`` reaches (0 if none)."""
        reached = [t for t in self.bonus_tiers if paid_fen >= t.min_paid_fen]
        return max(reached, key=lambda t: t.min_paid_fen).bonus_fen if reached else 0

    # --- JSON (pushed from HQ) ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "card_products": [
                {**cp.__dict__, "discounts": dict(cp.discounts),
                 "count_products": list(cp.count_products), "passes": list(cp.passes)}
                for cp in self.card_products
            ],
            "count_products": [dict(c.__dict__) for c in self.count_products],
            "passes": [dict(p.__dict__) for p in self.passes],
            "bonus_tiers": [dict(t.__dict__) for t in self.bonus_tiers],
            "anti_passback_minutes": {str(k): v for k, v in self.anti_passback_minutes.items()},
            "purse_limit_fen": self.purse_limit_fen,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalogue:
        """Build a catalogue from its JSON form; a bad catalogue raises CatalogueError."""
        try:
            return cls(
                card_products=tuple(
                    CardProduct(**{**cp, "discounts": dict(cp.get("discounts", {})),
                                   "count_products": tuple(cp.get("count_products", ())),
                                   "passes": tuple(cp.get("passes", ()))})
                    for cp in data.get("card_products", ())
                ),
                count_products=tuple(CountProduct(**c) for c in data.get("count_products", ())),
                passes=tuple(PassProduct(**p) for p in data.get("passes", ())),
                bonus_tiers=tuple(BonusTier(**t) for t in data.get("bonus_tiers", ())),
                anti_passback_minutes={
                    int(k): v for k, v in dict(data.get("anti_passback_minutes", {})).items()
                },
                purse_limit_fen=data.get("purse_limit_fen", 2**31 - 1),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, CatalogueError):
                raise
            raise CatalogueError(f"malformed catalogue: {exc}") from None


# --- calendar -------------------------------------------------------------------------

EPOCH_DAY = _dt.date(2000, 1, 1)


def day_number(date: _dt.date) -> int:
    """Days since 2000-01-01, as the card stores dates."""
    return (date - EPOCH_DAY).days


def date_of(day: int) -> _dt.date:
    return EPOCH_DAY + _dt.timedelta(days=day)


def add_months(day: int, months: int) -> int:
    """The day ``months`` calendar months after ``day`` (clamped to the month's end)."""
    d = date_of(day)
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    for dd in (d.day, 30, 29, 28):
        try:
            return day_number(_dt.date(year, month, dd))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def pass_last_day(first_day: int, length: str) -> int:
    """The last valid day of a pass of ``length`` starting on ``first_day``."""
    return add_months(first_day, PASS_LENGTHS[length]) - 1
