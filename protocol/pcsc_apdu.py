"""PC/SC Part 3 storage-card APDUs for MIFARE Classic, as ACR122U-class readers speak them.

Both ends use this module: the terminal's pyscard driver builds the commands and reads
the answers; the simulated vpcd reader parses the commands and builds the answers. One
definition keeps them from drifting apart, and the byte-order trap lives in one place:
**value APDUs carry the amount most significant byte first**, while the MIFARE value
block on the card (and the PN532) is little-endian.

Answers end in a status word: ``90 00`` success, ``63 00`` the card refused (wrong key,
access bits, no authentication), ``6A 81`` not supported, ``67 00`` wrong length.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

CLA = 0xFF
INS_GET_DATA = 0xCA
INS_LOAD_KEY = 0x82
INS_GENERAL_AUTHENTICATE = 0x86
INS_AUTHENTICATE_OBSOLETE = 0x88
INS_READ_BINARY = 0xB0
INS_UPDATE_BINARY = 0xD6
INS_VALUE = 0xD7
INS_READ_VALUE = 0xB1

SW_OK = b"\x90\x00"
SW_FAILED = b"\x63\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_NOT_SUPPORTED = b"\x6a\x81"
SW_WRONG_P1P2 = b"\x6b\x00"
SW_CLA_NOT_SUPPORTED = b"\x6e\x00"

KEY_TYPE_A = 0x60
KEY_TYPE_B = 0x61
KEY_SLOTS = 2  # ACR122U: two volatile key slots, 00 and 01
BLOCK = 16
#: "Multiple Blocks Mode" (ACR1252U, ACR1255U-J1, ACM1252U, ...): one READ/UPDATE BINARY
#: covers up to three consecutive data blocks of a 1K sector. The ACR122U takes 16 bytes.
MULTI_BLOCK_MAX = 3 * BLOCK

#: The ATR a PC/SC Part 3 reader reports for a MIFARE Classic 1K (PC/SC Part 3, 3.1.3.2.3).
ATR_MIFARE_CLASSIC_1K = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")


class ApduError(ValueError):
    """Bytes that are not a well-formed storage-card APDU (the answer names the reason)."""

    def __init__(self, reason: str, status: bytes) -> None:
        super().__init__(reason)
        self.status = status


class ValueOp(enum.IntEnum):
    """The VB_OP byte of ``FF D7``."""

    STORE = 0x00
    INCREMENT = 0x01
    DECREMENT = 0x02
    RESTORE = 0x03


# --- commands, as dataclasses the simulator dispatches on ----------------------------


@dataclass(frozen=True)
class GetUid:
    pass


@dataclass(frozen=True)
class GetAts:
    pass


@dataclass(frozen=True)
class LoadKey:
    slot: int
    key: bytes


@dataclass(frozen=True)
class Authenticate:
    block: int
    key_type: int  # 0x60 (A) or 0x61 (B)
    slot: int


@dataclass(frozen=True)
class ReadBinary:
    block: int
    length: int


@dataclass(frozen=True)
class UpdateBinary:
    block: int
    data: bytes


@dataclass(frozen=True)
class ValueOperation:
    """Store/increment/decrement ``block`` by ``amount`` and transfer it back to ``block``."""

    block: int
    op: ValueOp
    amount: int


@dataclass(frozen=True)
class RestoreValue:
    """Copy the value in ``source`` to ``target`` (same sector)."""

    source: int
    target: int


@dataclass(frozen=True)
class ReadValue:
    block: int


Command = (GetUid | GetAts | LoadKey | Authenticate | ReadBinary | UpdateBinary
           | ValueOperation | RestoreValue | ReadValue)


# --- build (terminal side) ----------------------------------------------------------


def _block(block: int) -> int:
    if not 0 <= block <= 0xFF:
        raise ValueError(f"block {block} out of range")
    return block


def get_uid() -> bytes:
    return bytes([CLA, INS_GET_DATA, 0x00, 0x00, 0x00])


def load_key(slot: int, key: bytes) -> bytes:
    if len(key) != 6:
        raise ValueError("a MIFARE key is 6 bytes")
    if not 0 <= slot < KEY_SLOTS:
        raise ValueError(f"key slot {slot} out of range 0..{KEY_SLOTS - 1}")
    return bytes([CLA, INS_LOAD_KEY, 0x00, slot, 0x06]) + key


def authenticate(block: int, key_type: int, slot: int) -> bytes:
    if key_type not in (KEY_TYPE_A, KEY_TYPE_B):
        raise ValueError("key type is 0x60 (A) or 0x61 (B)")
    return bytes([CLA, INS_GENERAL_AUTHENTICATE, 0x00, 0x00, 0x05,
                  0x01, 0x00, _block(block), key_type, slot])


def _length(length: int) -> int:
    if length <= 0 or length % BLOCK or length > MULTI_BLOCK_MAX:
        raise ValueError(f"MIFARE Classic blocks come in 16 bytes, at most "
                         f"{MULTI_BLOCK_MAX // BLOCK} at a time (got {length} bytes)")
    return length


def read_binary(block: int, length: int = BLOCK) -> bytes:
    """READ BINARY of one block, or of ``length // 16`` consecutive blocks (multi-block)."""
    return bytes([CLA, INS_READ_BINARY, 0x00, _block(block), _length(length)])


def update_binary(block: int, data: bytes) -> bytes:
    """UPDATE BINARY of one block, or of consecutive blocks (multi-block, 32 or 48 bytes)."""
    return bytes([CLA, INS_UPDATE_BINARY, 0x00, _block(block), _length(len(data))]) + data


def value_operation(block: int, op: ValueOp, amount: int) -> bytes:
    """``FF D7`` with the amount MSB first (ACS order), unlike the little-endian card."""
    if op is ValueOp.RESTORE:
        raise ValueError("use restore_value() for the restore/copy form")
    if not -(2**31) <= amount < 2**31:
        raise ValueError("value amount out of 32-bit range")
    return (bytes([CLA, INS_VALUE, 0x00, _block(block), 0x05, op])
            + amount.to_bytes(4, "big", signed=True))


def restore_value(source: int, target: int) -> bytes:
    return bytes([CLA, INS_VALUE, 0x00, _block(source), 0x02, ValueOp.RESTORE, _block(target)])


def read_value(block: int) -> bytes:
    return bytes([CLA, INS_READ_VALUE, 0x00, _block(block), 0x04])


def split_response(response: bytes) -> tuple[bytes, bytes]:
    """Split an answer into (data, status word)."""
    if len(response) < 2:
        raise ApduError("answer shorter than a status word", SW_WRONG_LENGTH)
    return response[:-2], response[-2:]


def decode_value(data: bytes) -> int:
    """The 4 data bytes of a ``FF B1`` answer (MSB first, signed)."""
    if len(data) != 4:
        raise ApduError(f"a value answer is 4 bytes, got {len(data)}", SW_WRONG_LENGTH)
    return int.from_bytes(data, "big", signed=True)


def encode_value(value: int) -> bytes:
    return value.to_bytes(4, "big", signed=True)


# --- parse (reader side) ------------------------------------------------------------


def parse_command(apdu: bytes) -> Command:
    """Parse one storage-card APDU; raise :class:`ApduError` with the status to answer."""
    if len(apdu) < 4:
        raise ApduError("APDU shorter than its header", SW_WRONG_LENGTH)
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    body = apdu[4:]
    if cla != CLA:
        raise ApduError(f"class {cla:02X} not supported", SW_CLA_NOT_SUPPORTED)

    def lc_data(expected: int | None = None) -> bytes:
        if not body:
            raise ApduError("missing Lc", SW_WRONG_LENGTH)
        lc = body[0]
        data = body[1:1 + lc]
        if len(data) != lc or (expected is not None and lc != expected):
            raise ApduError("Lc does not match the data", SW_WRONG_LENGTH)
        return data

    if ins == INS_GET_DATA:
        if p1 == 0x00:
            return GetUid()
        if p1 == 0x01:
            return GetAts()
        raise ApduError("GET DATA P1 must be 00 or 01", SW_WRONG_P1P2)
    if ins == INS_LOAD_KEY:
        data = lc_data(6)
        if p2 >= KEY_SLOTS:
            raise ApduError(f"key slot {p2} does not exist", SW_WRONG_P1P2)
        return LoadKey(p2, data)
    if ins == INS_GENERAL_AUTHENTICATE:
        data = lc_data(5)
        if data[0] != 0x01:
            raise ApduError("authenticate data version must be 01", SW_WRONG_P1P2)
        return Authenticate(block=(data[1] << 8 | data[2]) & 0xFF, key_type=data[3], slot=data[4])
    if ins == INS_AUTHENTICATE_OBSOLETE:
        if len(body) < 2:
            raise ApduError("authenticate (obsolete) needs key type and slot", SW_WRONG_LENGTH)
        return Authenticate(block=p2, key_type=body[0], slot=body[1])
    if ins == INS_READ_BINARY:
        le = body[0] if body else 0x10
        return ReadBinary(block=p2, length=le or 0x10)
    if ins == INS_UPDATE_BINARY:
        data = lc_data()
        if not data or len(data) % BLOCK or len(data) > MULTI_BLOCK_MAX:
            raise ApduError("update binary takes 16, 32 or 48 bytes", SW_WRONG_LENGTH)
        return UpdateBinary(block=p2, data=data)
    if ins == INS_VALUE:
        data = lc_data()
        if len(data) == 5 and data[0] in (ValueOp.STORE, ValueOp.INCREMENT, ValueOp.DECREMENT):
            return ValueOperation(p2, ValueOp(data[0]), int.from_bytes(data[1:], "big", signed=True))
        if len(data) == 2 and data[0] == ValueOp.RESTORE:
            return RestoreValue(p2, data[1])
        raise ApduError("value operation must be 5 bytes (store/inc/dec) or 2 (restore)",
                        SW_WRONG_LENGTH)
    if ins == INS_READ_VALUE:
        return ReadValue(p2)
    raise ApduError(f"instruction {ins:02X} not supported", SW_NOT_SUPPORTED)
