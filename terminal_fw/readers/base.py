"""The card link interface that every reader driver provides (defined in protocol.mifare)."""

from protocol.mifare import (
    AccessDenied,
    CardRemoved,
    KeyType,
    MifareClassicLink,
    ReaderError,
    ReaderUnavailable,
    SectorAuthFailed,
)

__all__ = [
    "AccessDenied",
    "SectorAuthFailed",
    "CardRemoved",
    "KeyType",
    "MifareClassicLink",
    "ReaderError",
    "ReaderUnavailable",
]
