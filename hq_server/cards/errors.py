"""The card registry's refusals, apart so the API's error table can name them without cycles."""

from __future__ import annotations


class CardError(ValueError):
    """A card change that cannot be made, with the reason in words (HTTP 422)."""


class CardNotFound(LookupError):
    """HQ knows no such card (HTTP 404, exactly like a card out of the operator's scope)."""
