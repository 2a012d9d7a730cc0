"""How every tier talks to a MIFARE Classic card: the link interface and its failures.

Layers, as in nfcpy: transport (pcscd, a tty) → reader chip (PC/SC Part 3, PN532) →
card kind (MIFARE Classic, UID-only) → card application (our format). The card
application only ever sees :class:`MifareClassicLink`; every driver provides one, and
so does the simulator's in-process card model, so the same card code runs over all. It lives in ``protocol`` because the terminal's
drivers and the simulators' card model must agree on it and may not import each other.

Failures a caller can act on each have their own type. A card that leaves the field in
the middle of an operation is always :class:`CardRemoved`, whatever the driver: the
card layer's tear handling expects exactly that.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable


class ReaderError(IOError):
    """Base of every reader/card I/O failure."""


class CardRemoved(ReaderError):
    """The card left the field during an operation; a write may or may not have landed."""


class SectorAuthFailed(ReaderError):
    """The card refused the sector key (wrong key, or key type not allowed)."""


class AccessDenied(ReaderError):
    """The access bits forbid this operation with the key in use (e.g. write with key A)."""


class ReaderUnavailable(ReaderError):
    """The reader itself is gone (unplugged, daemon down) or not answering."""


class KeyType(enum.IntEnum):
    """MIFARE Classic key types, numbered as the authentication command codes."""

    A = 0x60
    B = 0x61


@runtime_checkable
class MifareClassicLink(Protocol):
    """An open conversation with one MIFARE Classic card.

    Blocks are numbered 0..63 (1K). A block must be in a sector authenticated with
    :meth:`authenticate` before it is read or written. Value operations follow the chip:
    ``increment``/``decrement``/``restore`` load the internal register, ``transfer``
    writes it to a block.
    """

    def uid(self) -> bytes: ...

    def authenticate(self, block: int, key_type: KeyType, key: bytes) -> None: ...

    def read_block(self, block: int) -> bytes: ...

    def write_block(self, block: int, data: bytes) -> None: ...

    def increment(self, block: int, amount: int) -> None: ...

    def decrement(self, block: int, amount: int) -> None: ...

    def restore(self, block: int) -> None: ...

    def transfer(self, block: int) -> None: ...
