"""The card link interface that every reader driver provides (defined in protocol.mifare)."""

from protocol.mifare import (
    AccessDenied,
    AuthenticationFailed,
    CardRemoved,
    KeyType,
    MifareClassicLink,
    ReaderError,
    ReaderUnavailable,
)

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "CardRemoved",
    "KeyType",
    "MifareClassicLink",
    "ReaderError",
    "ReaderUnavailable",
]
