"""Money as integer fen (分), never float.

Every amount that crosses a tier boundary is an ``int`` number of fen. Parsing and
formatting go through decimal strings only, so a value like ``0.1 + 0.2`` can never
sneak into a purse.
"""

from __future__ import annotations

import re

#: The largest amount one record may carry (100 million yuan). Anything bigger is an
#: impossible amount for a venue card and is refused at the boundary.
MAX_FEN = 100_000_000_00

_YUAN = re.compile(r"^(-?)(\d{1,9})(?:\.(\d{1,2}))?$")


class AmountError(ValueError):
    """An amount that is not a whole number of fen within the allowed range."""


def fen_from_yuan(text: str) -> int:
    """Parse ``"12.34"`` (yuan, at most two decimals) into ``1234`` fen.

    Floats are refused outright: a float has already lost the exact value.
    """
    if not isinstance(text, str):
        raise AmountError(f"amount must be a decimal string, got {type(text).__name__}")
    match = _YUAN.match(text.strip())
    if not match:
        raise AmountError(f"not a yuan amount with at most two decimals: {text!r}")
    sign, whole, frac = match.groups()
    fen = int(whole) * 100 + int((frac or "0").ljust(2, "0"))
    fen = -fen if sign else fen
    check_fen(fen)
    return fen


def check_fen(value: object, *, allow_negative: bool = True) -> int:
    """Return ``value`` if it is an in-range integer fen amount, else raise AmountError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AmountError(f"amount must be an integer number of fen, got {value!r}")
    if abs(value) > MAX_FEN:
        raise AmountError(f"amount {value} fen is beyond the allowed maximum {MAX_FEN}")
    if value < 0 and not allow_negative:
        raise AmountError(f"amount {value} fen must not be negative")
    return value


def format_fen(fen: int) -> str:
    """Format fen as a yuan string with two decimals: ``1234`` → ``"12.34"``."""
    check_fen(fen)
    sign = "-" if fen < 0 else ""
    whole, frac = divmod(abs(fen), 100)
    return f"{sign}{whole}.{frac:02d}"
