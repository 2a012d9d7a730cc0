"""A small chain for card tests: its keys, its catalogue, a clock and a terminal."""

from __future__ import annotations

from dataclasses import replace

from protocol.card_ops import TerminalContext
from protocol.keys import ChainKeys
from protocol.products import BonusTier, CardProduct, Catalogue, CountProduct, PassProduct

CHAIN = 7
KEYS = ChainKeys(
    CHAIN,
    read_master=bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
    write_master=bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0"),
    mac_master=bytes.fromhex("A1A2A3A4A5A6A7A8A9AAABACADAEAFB0"),
)
UID = bytes.fromhex("11223344")
#: 2024-06-01 10:00 in Beijing (UTC+8), as ms since the Unix epoch
T0 = 1_717_207_200_000
MINUTE = 60_000
DAY = 1440 * MINUTE

CATALOGUE = Catalogue(
    card_products=(
        CardProduct(1, "gold", stored_value=True, discounts={"food": 88, "spa": 80},
                    count_products=("swim", "gym", "sauna", "yoga"), passes=("month", "year"),
                    valid_years=3),
        CardProduct(2, "swim10", count_products=("swim",), daily_limit=2),
        CardProduct(3, "annual", included_pass="year"),
        CardProduct(4, "guest", free_per_day=2),
        CardProduct(5, "gift", stored_value=True),
    ),
    count_products=(
        CountProduct(10, "swim", 40000, 10),
        CountProduct(11, "gym", 30000, 12),
        CountProduct(12, "sauna", 20000, 5),
        CountProduct(13, "yoga", 50000, 8),
    ),
    passes=(PassProduct(20, "month", 30000, "month"), PassProduct(21, "year", 300000, "year")),
    bonus_tiers=(BonusTier(50000, 2500), BonusTier(100000, 10000)),
    anti_passback_minutes={1: 10},
)


def ctx(now_ms: int = T0, **changes) -> TerminalContext:
    base = TerminalContext(device_id="gate-01", store="store-01", chain_id=CHAIN, now_ms=now_ms,
                           operator="op1")
    return replace(base, **changes)
