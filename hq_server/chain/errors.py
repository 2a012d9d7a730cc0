"""The chain's refusals, apart so the API's error table can name them without cycles."""

from __future__ import annotations


class ChainError(ValueError):
    """A region or store change that cannot be made, with the reason in words (HTTP 422)."""


class ChainNotFound(LookupError):
    """No such region or store (HTTP 404, exactly like one out of the operator's scope)."""
