"""OneCard's application on a MIFARE Classic 1K card: layout, MACs, two-copy state.

(The full layout is added below; the value-block format comes first because the
simulator's chip model checks it too.)
"""

from __future__ import annotations

import struct

# --- MIFARE value blocks ---------------------------------------------------------


def encode_value_block(value: int, address: int) -> bytes:
    """A MIFARE value block: value, ~value, value (each 4 bytes, little-endian, signed),
    then address, ~address, address, ~address.

    Byte-order trap: the card stores values little-endian (and PN532 commands carry them
    little-endian), but ACS PC/SC value APDUs (``FF D7`` / ``FF B1``) carry them MSB first.
    """
    if not -(2**31) <= value < 2**31:
        raise ValueError("a value block holds a signed 32-bit value")
    if not 0 <= address <= 255:
        raise ValueError("the address byte is 0..255")
    v = struct.pack("<i", value)
    inv = bytes(b ^ 0xFF for b in v)
    a = address & 0xFF
    return v + inv + v + bytes([a, a ^ 0xFF, a, a ^ 0xFF])


def decode_value_block(block: bytes) -> tuple[int, int] | None:
    """(value, address) of a well-formed value block, or None when its checks fail."""
    if len(block) != 16:
        return None
    v, inv, v2 = block[0:4], block[4:8], block[8:12]
    a = block[12:16]
    if v != v2 or any((x ^ y) != 0xFF for x, y in zip(v, inv, strict=True)):
        return None
    if a[0] != a[2] or a[1] != a[3] or (a[0] ^ a[1]) != 0xFF:
        return None
    return struct.unpack("<i", v)[0], a[0]
