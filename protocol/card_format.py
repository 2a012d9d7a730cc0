"""OneCard's application on a MIFARE Classic 1K card: layout, MACs, two-copy state.

Pure code over bytes: encode a :class:`~protocol.card_state.CardState` into blocks,
decode blocks back, and say which blocks to write, in which order, so that pulling
the card away at any write leaves either the old or the new state. Byte tables and
the reasoning are in ``docs/card-format.md``.

What the MAC catches: an edited block, or a dump copied onto a card with another UID.
What it cannot catch on the card alone: a clone with the same UID ("magic" cards) or
an older dump written back; HQ sees those by the card counter.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from protocol.card_state import FORMAT_VERSION, CardState, Refusal, RefusalReason
from protocol.keys import ChainKeys, aes_cmac, trailer

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


# --- the OneCard application ------------------------------------------------------
#
# Sector 1 holds the header (written when the card is issued); sectors 2 and 3 each
# hold one copy of the changing state. A writer puts the new state into the copy that
# is not the newest, then mirrors it into the other one; a reader takes the valid copy
# with the higher counter. See docs/card-format.md for the byte tables.

HEADER_SECTOR = 1
COPY_SECTORS = (2, 3)
APP_SECTORS = (HEADER_SECTOR, *COPY_SECTORS)
HEADER_BLOCKS = (4, 5, 6)
COPY_BLOCKS = ((8, 9, 10), (12, 13, 14))
DATA_BLOCKS = (*HEADER_BLOCKS, *COPY_BLOCKS[0], *COPY_BLOCKS[1])
MAGIC = b"OC"
MAC_SIZE = 8
MAX_SLOTS = 3
MAX_CARD_ID = 16
PURSE_MAX = 2**31 - 1

_HEADER = struct.Struct(">2sBBIHH4s")  # magic, version, card product, chain, issued, expiry
_STATE = struct.Struct(">IBBHHHHB")  # counter, flags, pass, from, to, last day, minute, nibbles
_SLOT = struct.Struct(">BH")
_CARD_ID = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}$")  # protocol.ids, as bytes

FLAG_BLOCKED = 0x01
FLAG_ACCOUNT_OPEN = 0x02
FLAG_RECALLED = 0x04
_KNOWN_FLAGS = FLAG_BLOCKED | FLAG_ACCOUNT_OPEN | FLAG_RECALLED


class ProductCodes(Protocol):
    """Maps product names to the one-byte codes on the card (a products.Catalogue)."""

    def code_of(self, name: str) -> int: ...

    def name_of(self, code: int) -> str: ...


class CardFormatError(ValueError):
    """Card memory that cannot be read as (or written into) our application."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def refusal(self) -> Refusal:
        return Refusal(self.reason, self.detail)


@dataclass(frozen=True)
class CardRead:
    """What a reader found on the card: the newest valid state and where it lives."""

    state: CardState
    uid: bytes
    header: dict[int, bytes]
    newest_slot: int
    slot_counters: tuple[int | None, int | None]  # None: that copy is not valid

    @property
    def both_copies_current(self) -> bool:
        return self.slot_counters[0] == self.slot_counters[1] == self.state.counter


def _mac(mac_key: bytes, domain: bytes, *parts: bytes) -> bytes:
    return aes_cmac(mac_key, domain + b"".join(parts))[:MAC_SIZE]


def _err(reason: RefusalReason, detail: str) -> CardFormatError:
    return CardFormatError(reason, detail)


def encode_header(state: CardState, uid: bytes, mac_key: bytes, codes: ProductCodes) -> dict[int, bytes]:
    """Blocks 4, 5, 6: header, card number, header MAC."""
    cid = state.card_id.encode("ascii", errors="replace")
    if not _CARD_ID.match(cid):
        raise _err(RefusalReason.NOT_ALLOWED, "card number must be 1..16 of A-Z a-z 0-9 _ . : -")
    if not 0 < state.chain_id < 2**32:
        raise _err(RefusalReason.WRONG_CHAIN, "chain id must be 1..2^32-1")
    for name, day in (("issued_day", state.issued_day), ("expiry_day", state.expiry_day)):
        if not 0 <= day <= 0xFFFF:
            raise _err(RefusalReason.LIMIT, f"{name} {day} outside 0..65535")
    product = codes.code_of(state.card_product) if state.card_product else 0
    b4 = _HEADER.pack(MAGIC, FORMAT_VERSION, product, state.chain_id, state.issued_day,
                      state.expiry_day, bytes(4))
    b5 = cid.ljust(16, b"\x00")
    b6 = _mac(mac_key, b"OCH1", uid, b4, b5, bytes(8)) + bytes(8)
    return {4: b4, 5: b5, 6: b6}


def _state_bytes(state: CardState, codes: ProductCodes) -> bytes:
    def need(ok: bool, detail: str) -> None:
        if not ok:
            raise _err(RefusalReason.LIMIT, detail)

    need(0 <= state.counter < 2**32, "card counter outside 0..2^32-1")
    need(0 <= state.purse_fen <= PURSE_MAX, "purse outside 0..2^31-1 fen")
    need(len(state.visits) <= MAX_SLOTS, f"a card holds at most {MAX_SLOTS} count products")
    need(all(0 <= v <= 0xFFFF for v in state.visits.values()), "visits outside 0..65535")
    need(0 <= state.uses_today <= 15 and 0 <= state.last_gate_group <= 15, "uses/gate group 0..15")
    need(0 <= state.last_use_minute < 1440, "minute of day outside 0..1439")
    days = (state.pass_from_day, state.pass_to_day, state.last_use_day)
    need(all(0 <= d <= 0xFFFF for d in days), "day outside 0..65535")
    flags = ((FLAG_BLOCKED if state.blocked else 0) | (FLAG_ACCOUNT_OPEN if state.account_open else 0)
             | (FLAG_RECALLED if state.recalled else 0))
    pass_code = codes.code_of(state.pass_product) if state.pass_product else 0
    pass_from, pass_to = (state.pass_from_day, state.pass_to_day) if pass_code else (0, 0)
    rec = _STATE.pack(state.counter, flags, pass_code, pass_from, pass_to, state.last_use_day,
                      state.last_use_minute, (state.uses_today << 4) | state.last_gate_group)
    slots = [(codes.code_of(name), count) for name, count in state.visits.items()]
    slots += [(0, 0)] * (MAX_SLOTS - len(slots))
    return rec + b"".join(_SLOT.pack(c, n) for c, n in slots)


def encode_copy(
    state: CardState, slot: int, uid: bytes, mac_key: bytes, header: dict[int, bytes],
    codes: ProductCodes,
) -> dict[int, bytes]:
    """The three blocks of state copy ``slot`` (0 or 1): purse value block, record, MAC."""
    value_block_no, b1, b2 = COPY_BLOCKS[slot]
    rec = _state_bytes(state, codes)  # checks the ranges, the purse's among them
    value = encode_value_block(state.purse_fen, value_block_no)
    mac = _mac(mac_key, b"OCS1", uid, header[4], header[5], header[6][:8], value, rec)
    body = rec + mac
    return {value_block_no: value, b1: body[:16], b2: body[16:]}


def encode_application(state: CardState, uid: bytes, keys: ChainKeys, codes: ProductCodes) -> dict[int, bytes]:
    """All nine data blocks of the application, both copies holding ``state``."""
    mac_key = keys.mac_key(uid)
    header = encode_header(state, uid, mac_key, codes)
    blocks = dict(header)
    for slot in (0, 1):
        blocks.update(encode_copy(state, slot, uid, mac_key, header, codes))
    return blocks


def _decode_header(blocks: Mapping[int, bytes], uid: bytes, keys: ChainKeys, mac_key: bytes,
                   codes: ProductCodes) -> dict[str, object]:
    b4, b5, b6 = blocks[4], blocks[5], blocks[6]
    magic, version, product, chain, issued, expiry, reserved = _HEADER.unpack(b4)
    if magic != MAGIC:
        what = "a blank card" if not any(b4 + b5 + b6) else "no OneCard header"
        raise _err(RefusalReason.NOT_ONECARD, what)
    if version != FORMAT_VERSION:
        raise _err(RefusalReason.UNKNOWN_FORMAT,
                   f"card format {version}, this terminal reads {FORMAT_VERSION}")
    if chain != keys.chain_id:
        raise _err(RefusalReason.WRONG_CHAIN, f"card of chain {chain}, terminal of chain {keys.chain_id}")
    if b6[:8] != _mac(mac_key, b"OCH1", uid, b4, b5, b6[8:]) or any(reserved) or any(b6[8:]):
        raise _err(RefusalReason.TAMPERED, "header MAC does not verify for this card's UID")
    cid = b5.rstrip(b"\x00")
    if not _CARD_ID.match(cid) or any(b5[len(cid):]):
        raise _err(RefusalReason.TAMPERED, "card number is malformed")
    return {
        "card_id": cid.decode("ascii"), "chain_id": chain, "issued_day": issued,
        "expiry_day": expiry, "card_product": codes.name_of(product) if product else "",
        "format_version": version,
    }


def _decode_copy(blocks: Mapping[int, bytes], slot: int, uid: bytes, mac_key: bytes,
                 codes: ProductCodes) -> dict[str, object] | None:
    """The fields of copy ``slot``, or None when any check fails."""
    value_block_no, b1, b2 = COPY_BLOCKS[slot]
    value = blocks[value_block_no]
    decoded = decode_value_block(value)
    if decoded is None or decoded[1] != value_block_no or not 0 <= decoded[0] <= PURSE_MAX:
        return None
    body = blocks[b1] + blocks[b2]
    rec, mac = body[:24], body[24:]
    expected = _mac(mac_key, b"OCS1", uid, blocks[4], blocks[5], blocks[6][:8], value, rec)
    if mac != expected:
        return None
    (counter, flags, pass_code, pass_from, pass_to, last_day, minute, nibbles) = _STATE.unpack(rec[:15])
    if flags & ~_KNOWN_FLAGS or minute >= 1440 or (not pass_code and (pass_from or pass_to)):
        return None
    visits: dict[str, int] = {}
    for i in range(MAX_SLOTS):
        code, count = _SLOT.unpack(rec[15 + 3 * i : 18 + 3 * i])
        if code == 0:
            if count:
                return None
            continue
        name = codes.name_of(code)
        if name in visits:
            return None
        visits[name] = count
    return {
        "purse_fen": decoded[0], "counter": counter, "blocked": bool(flags & FLAG_BLOCKED),
        "account_open": bool(flags & FLAG_ACCOUNT_OPEN), "recalled": bool(flags & FLAG_RECALLED),
        "pass_product": codes.name_of(pass_code) if pass_code else "",
        "pass_from_day": pass_from, "pass_to_day": pass_to, "last_use_day": last_day,
        "last_use_minute": minute, "uses_today": nibbles >> 4, "last_gate_group": nibbles & 0xF,
        "visits": visits,
    }


def decode_application(
    blocks: Mapping[int, bytes], uid: bytes, keys: ChainKeys, codes: ProductCodes
) -> CardRead:
    """Read our application from its nine data blocks; raise CardFormatError if we cannot.

    The header must verify (there is one copy of it, written only at issue). Of the two
    state copies, the valid one with the higher counter wins; an invalid copy (torn
    write, flipped bit) is ignored and is overwritten by the next write.
    """
    for b in DATA_BLOCKS:
        if len(blocks.get(b, b"")) != 16:
            raise _err(RefusalReason.DAMAGED, f"block {b} missing")
    mac_key = keys.mac_key(uid)
    header = _decode_header(blocks, uid, keys, mac_key, codes)
    copies = [_decode_copy(blocks, slot, uid, mac_key, codes) for slot in (0, 1)]
    counters = tuple(None if c is None else int(c["counter"]) for c in copies)  # type: ignore[call-overload]
    if copies[0] is None and copies[1] is None:
        raise _err(RefusalReason.DAMAGED, "neither state copy verifies (edited, torn or from another card)")
    newest = 0 if counters[1] is None or (counters[0] is not None and counters[0] >= counters[1]) else 1
    fields = {**header, **copies[newest]}  # type: ignore[dict-item]
    state = CardState(**fields)  # type: ignore[arg-type]
    return CardRead(state, bytes(uid), {b: bytes(blocks[b]) for b in HEADER_BLOCKS}, newest,
                    (counters[0], counters[1]))


def state_writes(
    read: CardRead, new_state: CardState, keys: ChainKeys, codes: ProductCodes
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """The block writes that move the card from ``read`` to ``new_state``, in order.

    Returns (commit, mirror): write ``commit`` first, into the copy that is *not* the
    newest; once its last block has landed the new state is on the card. ``mirror``
    then brings the other copy up to date, so a later bad block is repaired from it.
    A tear anywhere leaves the old state (during ``commit``) or the new one (after).
    """
    if new_state.counter <= read.state.counter:
        raise ValueError("a new card state must carry a higher counter")
    if (new_state.card_id, new_state.chain_id, new_state.card_product, new_state.issued_day,
            new_state.expiry_day) != (read.state.card_id, read.state.chain_id,
                                      read.state.card_product, read.state.issued_day,
                                      read.state.expiry_day):
        raise ValueError("the header changes only when a card is issued")
    mac_key = keys.mac_key(read.uid)
    target = 1 - read.newest_slot
    first = encode_copy(new_state, target, read.uid, mac_key, read.header, codes)
    second = encode_copy(new_state, read.newest_slot, read.uid, mac_key, read.header, codes)
    return sorted(first.items()), sorted(second.items())


# --- whole card images (dumps) ---------------------------------------------------


def uid_of_image(image: bytes) -> bytes:
    """The UID in block 0 of a 1K image: 4 bytes when byte 4 is their BCC, else 7."""
    if len(image) != 1024:
        raise _err(RefusalReason.DAMAGED, f"a 1K image is 1024 bytes, got {len(image)}")
    return image[0:4] if image[4] == image[0] ^ image[1] ^ image[2] ^ image[3] else image[0:7]


def image_blocks(image: bytes) -> dict[int, bytes]:
    return {b: bytes(image[b * 16 : b * 16 + 16]) for b in DATA_BLOCKS}


def read_image(image: bytes, keys: ChainKeys, codes: ProductCodes) -> CardRead:
    """Decode our application from a full 1024-byte card image."""
    return decode_application(image_blocks(image), uid_of_image(image), keys, codes)


def _put(image: bytearray, writes: Iterable[tuple[int, bytes]]) -> None:
    for b, data in writes:
        image[b * 16 : b * 16 + 16] = data


def write_image(image: bytes, new_state: CardState, keys: ChainKeys, codes: ProductCodes) -> bytes:
    """The image after writing ``new_state`` (both copies) over the state it holds."""
    read = read_image(image, keys, codes)
    commit, mirror = state_writes(read, new_state, keys, codes)
    out = bytearray(image)
    _put(out, commit)
    _put(out, mirror)
    return bytes(out)


def personalise_image(image: bytes, state: CardState, keys: ChainKeys, codes: ProductCodes) -> bytes:
    """The image of a card issued with ``state``: header, both copies, our sector trailers."""
    uid = uid_of_image(image)
    out = bytearray(image)
    _put(out, encode_application(state, uid, keys, codes).items())
    for sector in APP_SECTORS:
        _put(out, [(sector * 4 + 3, trailer(keys.key_a(uid, sector), keys.key_b(uid, sector)))])
    return bytes(out)
