"""An in-process MIFARE Classic 1K chip: memory, sector keys, access bits, value blocks.

It is the card behind every simulated reader (PC/SC via vpcd, PN532 on a pty) and the
card the tear-resistance tests pull out of the field at the worst moment. It behaves as
the NXP MF1S50 datasheet says, where our code could notice a difference:

* 16 sectors × 4 blocks; block 0 (UID, BCC, SAK, ATQA, maker data) is read-only unless
  the card is a UID-writable "magic" clone (``magic=True``).
* One sector is authenticated at a time, with key A or key B. A wrong key, or any
  refused operation (NAK), drops the authentication: the reader must authenticate again.
* Access bits are enforced for data blocks and sector trailers. Key A always reads back
  as zeros; key B reads back only where the access bits make it readable, and then it
  cannot be used as a key (every access after authenticating with it is refused).
  Writing a trailer writes only the parts the key may write and refuses when it may
  write none; access bits that fail their own check are refused rather than written
  (a real card would lock the sector for good).
* ``increment``/``decrement``/``restore`` need a well-formed value block and load the
  chip's transfer register; ``transfer`` writes it (value and the source's address byte).
* Tears: :meth:`tear_at_write` makes the n-th next EEPROM write (``write_block`` or
  ``transfer``) fail with :class:`~protocol.mifare.CardRemoved`, leaving the old bytes
  (``"before"``), the new bytes (``"after"``) or a corrupted mix (``"garbage"``). After a
  tear the card is out of the field until :meth:`enter_field`.

Refused operations raise :class:`~protocol.mifare.AccessDenied` (a real reader sees a
NAK / ``63 00`` for all of them), wrong keys :class:`~protocol.mifare.SectorAuthFailed`.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Literal

from protocol.card_format import decode_value_block, encode_value_block
from protocol.keys import TRANSPORT_ACCESS, TRANSPORT_KEY, decode_access_bits
from protocol.mifare import AccessDenied, CardRemoved, KeyType, SectorAuthFailed

BLOCKS = 64
BLOCK_SIZE = 16
SIZE = BLOCKS * BLOCK_SIZE
SAK = 0x08
MAKER_DATA = bytes.fromhex("6263646566676869")  # what NXP cards commonly carry after ATQA

TearMode = Literal["before", "after", "garbage"]

# Data block permissions per access condition C1C2C3: (read, write, increment,
# decrement/transfer/restore), each the key types allowed.
_DATA_RULES: dict[int, tuple[str, str, str, str]] = {
    0b000: ("AB", "AB", "AB", "AB"),
    0b010: ("AB", "", "", ""),
    0b100: ("AB", "B", "", ""),
    0b110: ("AB", "B", "B", "AB"),
    0b001: ("AB", "", "", "AB"),
    0b011: ("B", "B", "", ""),
    0b101: ("B", "", "", ""),
    0b111: ("", "", "", ""),
}
# Trailer permissions: (key A write, access bits read, access bits write, key B read,
# key B write). Key A is never readable.
_TRAILER_RULES: dict[int, tuple[str, str, str, str, str]] = {
    0b000: ("A", "A", "", "A", "A"),
    0b010: ("", "A", "", "A", ""),
    0b100: ("B", "AB", "", "", "B"),
    0b110: ("", "AB", "", "", ""),
    0b001: ("A", "A", "A", "A", "A"),
    0b011: ("B", "AB", "B", "", "B"),
    0b101: ("", "AB", "B", "", ""),
    0b111: ("", "AB", "", "", ""),
}


class _Uid(bytes):
    """The UID as bytes (``card.uid``) that can also be called (``card.uid()``), as
    :class:`~protocol.mifare.MifareClassicLink` asks; the call fails when the card is away."""

    _card: MifareClassic1K

    def __call__(self) -> bytes:
        with self._card._lock:
            self._card._need_field()
            return bytes(self)


class CardDumpError(ValueError):
    """A dump file that is not a MIFARE Classic 1K image (wrong size, unreadable)."""


def load_dump(path: Path) -> MifareClassic1K:
    """The card in the ``.mfd`` dump at ``path``; :class:`CardDumpError` when it is not one.

    The size is checked before reading, so pointing it at a huge file (or a device)
    costs nothing."""
    try:
        if not path.is_file():
            raise CardDumpError(f"{path}: not a file")
        size = path.stat().st_size
        if size != SIZE:
            raise CardDumpError(f"{path}: a MIFARE Classic 1K dump is {SIZE} bytes, "
                                f"this file is {size}")
        with path.open("rb") as f:
            data = f.read(SIZE + 1)
    except OSError as exc:
        raise CardDumpError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return MifareClassic1K.from_mfd(data)


def _bcc(uid4: bytes) -> int:
    return uid4[0] ^ uid4[1] ^ uid4[2] ^ uid4[3]


def sector_of(block: int) -> int:
    return block // 4


def is_trailer(block: int) -> bool:
    return block % 4 == 3


def manufacturer_block(uid: bytes) -> bytes:
    """Block 0 for a UID: 4-byte UID ‖ BCC ‖ SAK ‖ ATQA (LSB first) ‖ maker data, or
    7-byte UID ‖ SAK ‖ ATQA ‖ maker data."""
    if len(uid) == 4:
        return uid + bytes([_bcc(uid), SAK, 0x04, 0x00]) + MAKER_DATA
    if len(uid) == 7:
        return uid + bytes([SAK, 0x44, 0x00]) + MAKER_DATA[:6]
    raise ValueError("a MIFARE Classic UID is 4 or 7 bytes")


class MifareClassic1K:
    """One MIFARE Classic 1K card; implements :class:`protocol.mifare.MifareClassicLink`."""

    def __init__(self, uid: bytes, image: bytes | None = None, *, magic: bool = False) -> None:
        uid = bytes(uid)
        if image is None:
            image = self._blank_image(uid)
        if len(image) != SIZE:
            raise ValueError(f"a MIFARE Classic 1K image is {SIZE} bytes, got {len(image)}")
        self._lock = threading.RLock()
        self._mem = bytearray(image)
        self._uid = _Uid(uid)
        self._uid._card = self
        self.magic = magic
        self._present = True
        self._auth: tuple[int, KeyType] | None = None
        self._register: tuple[int, int] | None = None  # (value, address byte)
        self._tear: tuple[int, TearMode, int] | None = None
        self.writes = 0  # EEPROM writes that landed or were torn, for tests

    # --- construction --------------------------------------------------------------

    @staticmethod
    def _blank_image(uid: bytes) -> bytes:
        mem = bytearray(SIZE)
        mem[0:16] = manufacturer_block(uid)
        for sector in range(16):
            t = (sector * 4 + 3) * BLOCK_SIZE
            mem[t : t + 16] = TRANSPORT_KEY + TRANSPORT_ACCESS + TRANSPORT_KEY
        return bytes(mem)

    @classmethod
    def blank(cls, uid: bytes, *, magic: bool = False) -> MifareClassic1K:
        """A factory-fresh card: transport keys FFFFFFFFFFFF, access bits FF 07 80 69."""
        return cls(uid, None, magic=magic)

    @classmethod
    def from_mfd(cls, data: bytes, *, magic: bool = False) -> MifareClassic1K:
        """A card from a 1024-byte ``.mfd`` dump (the format nfc-mfclassic/mfoc write).

        The UID is read from block 0: 4 bytes when byte 4 is their BCC, else 7 bytes.
        """
        data = bytes(data)
        if len(data) != SIZE:
            raise CardDumpError(f"a MIFARE Classic 1K dump is {SIZE} bytes, got {len(data)}")
        uid = data[0:4] if data[4] == _bcc(data[0:4]) else data[0:7]
        return cls(uid, data, magic=magic)

    def to_mfd(self) -> bytes:
        """The raw 1024 bytes, keys included (as a dump made with every key known)."""
        with self._lock:
            return bytes(self._mem)

    # --- identity ------------------------------------------------------------------

    @property
    def uid(self) -> _Uid:
        return self._uid

    @property
    def sak(self) -> int:
        return SAK

    @property
    def atqa(self) -> bytes:
        """ATQA as a reader reports it, MSB first (``00 04`` for a 4-byte UID)."""
        return b"\x00\x04" if len(self._uid) == 4 else b"\x00\x44"

    # --- presence and fault injection ------------------------------------------------

    @property
    def present(self) -> bool:
        return self._present

    def halt(self) -> None:
        """The card leaves the field: authentication and the value register are lost."""
        with self._lock:
            self._present = False
            self._auth = None
            self._register = None

    def enter_field(self) -> None:
        """The card is presented (again), unauthenticated."""
        with self._lock:
            self._present = True
            self._auth = None
            self._register = None

    def tear_at_write(self, n: int, mode: TearMode, *, seed: int = 0) -> None:
        """Tear the ``n``-th next EEPROM write (1 = the very next one).

        ``mode``: ``"before"`` (the old bytes stay), ``"after"`` (the new bytes landed),
        ``"garbage"`` (a mix of old, new and flipped bits, chosen by ``seed``).
        """
        if n < 1:
            raise ValueError("n counts from 1 (the next write)")
        if mode not in ("before", "after", "garbage"):
            raise ValueError(f"unknown tear mode {mode!r}")
        with self._lock:
            self._tear = (n, mode, seed)

    def cancel_tear(self) -> None:
        with self._lock:
            self._tear = None

    # --- internals -----------------------------------------------------------------

    def _need_field(self) -> None:
        if not self._present:
            raise CardRemoved("the card is not in the field")

    def _block(self, block: int) -> bytes:
        return bytes(self._mem[block * 16 : block * 16 + 16])

    def _check_block_number(self, block: int) -> None:
        if not isinstance(block, int) or not 0 <= block < BLOCKS:
            raise ValueError(f"block {block!r} is outside 0..{BLOCKS - 1}")

    def _nak(self, why: str) -> AccessDenied:
        self._auth = None
        self._register = None
        return AccessDenied(why)

    def _key_in_use(self, block: int) -> str:
        """The key letter authenticated for ``block``'s sector, or raise."""
        if self._auth is None or self._auth[0] != sector_of(block):
            raise self._nak(f"block {block}: its sector {sector_of(block)} is not authenticated")
        letter = "A" if self._auth[1] == KeyType.A else "B"
        conds = self._conditions(sector_of(block))
        if conds is None:
            raise self._nak(f"sector {sector_of(block)} has corrupt access bits: locked")
        if letter == "B" and conds[3] in (0b000, 0b010, 0b001):
            raise self._nak(f"sector {sector_of(block)}: key B is readable, so it is no key")
        return letter

    def _conditions(self, sector: int) -> tuple[int, int, int, int] | None:
        t = (sector * 4 + 3) * 16
        return decode_access_bits(bytes(self._mem[t + 6 : t + 9]))

    def _data_rule(self, block: int, op: int) -> None:
        letter = self._key_in_use(block)
        if is_trailer(block):
            raise self._nak(f"block {block} is a sector trailer, not a data block")
        conds = self._conditions(sector_of(block))
        assert conds is not None
        allowed = _DATA_RULES[conds[block % 4]][op]
        if letter not in allowed:
            what = ("read", "write", "increment", "decrement/transfer/restore")[op]
            raise self._nak(f"block {block}: key {letter} may not {what} it")

    def _eeprom_write(self, block: int, data: bytes) -> None:
        """Write one block, honouring a pending tear."""
        self.writes += 1
        if self._tear is not None:
            n, mode, seed = self._tear
            if n > 1:
                self._tear = (n - 1, mode, seed)
            else:
                self._tear = None
                old = self._block(block)
                if mode == "after":
                    self._mem[block * 16 : block * 16 + 16] = data
                elif mode == "garbage":
                    self._mem[block * 16 : block * 16 + 16] = _garbage(old, data, seed)
                self.halt()
                raise CardRemoved(f"the card left the field while block {block} was written")
        self._mem[block * 16 : block * 16 + 16] = data

    # --- MifareClassicLink -----------------------------------------------------------

    def authenticate(self, block: int, key_type: KeyType, key: bytes) -> None:
        with self._lock:
            self._need_field()
            self._check_block_number(block)
            self._register = None
            self._auth = None
            t = (sector_of(block) * 4 + 3) * 16
            stored = self._mem[t : t + 6] if key_type == KeyType.A else self._mem[t + 10 : t + 16]
            if KeyType(key_type) not in (KeyType.A, KeyType.B) or bytes(key) != bytes(stored):
                raise SectorAuthFailed(
                    f"sector {sector_of(block)} refused key {KeyType(key_type).name}"
                )
            self._auth = (sector_of(block), KeyType(key_type))

    def read_block(self, block: int) -> bytes:
        with self._lock:
            self._need_field()
            self._check_block_number(block)
            if not is_trailer(block):
                self._data_rule(block, 0)
                return self._block(block)
            letter = self._key_in_use(block)
            conds = self._conditions(sector_of(block))
            assert conds is not None
            rule = _TRAILER_RULES[conds[3]]
            raw = self._block(block)
            access = raw[6:10] if letter in rule[1] else bytes(4)
            key_b = raw[10:16] if letter in rule[3] else bytes(6)
            return bytes(6) + access + key_b

    def write_block(self, block: int, data: bytes) -> None:
        with self._lock:
            self._need_field()
            self._check_block_number(block)
            data = bytes(data)
            if len(data) != 16:
                raise ValueError("a block is 16 bytes")
            if block == 0 and not self.magic:
                self._key_in_use(block)
                raise self._nak("block 0 (manufacturer block) is read-only")
            if not is_trailer(block):
                self._data_rule(block, 1)
                self._eeprom_write(block, data)
                if block == 0:
                    self._adopt_uid_from_block0()
                return
            letter = self._key_in_use(block)
            conds = self._conditions(sector_of(block))
            assert conds is not None
            key_a_w, _, access_w, _, key_b_w = _TRAILER_RULES[conds[3]]
            if letter not in key_a_w + access_w + key_b_w:
                raise self._nak(f"trailer {block}: key {letter} may write none of it")
            new = bytearray(self._block(block))
            if letter in key_a_w:
                new[0:6] = data[0:6]
            if letter in access_w:
                if decode_access_bits(data[6:9]) is None:
                    raise self._nak(f"trailer {block}: access bits fail their check (would lock the sector)")
                new[6:10] = data[6:10]
            if letter in key_b_w:
                new[10:16] = data[10:16]
            self._eeprom_write(block, bytes(new))

    def _adopt_uid_from_block0(self) -> None:
        b0 = self._block(0)
        uid = b0[0:4] if len(self._uid) == 4 else b0[0:7]
        self._uid = _Uid(uid)
        self._uid._card = self

    def _value_source(self, block: int, op: int) -> tuple[int, int]:
        self._data_rule(block, op)
        decoded = decode_value_block(self._block(block))
        if decoded is None:
            raise self._nak(f"block {block} is not a value block")
        return decoded

    def increment(self, block: int, amount: int) -> None:
        self._value_op(block, amount, 2)

    def decrement(self, block: int, amount: int) -> None:
        self._value_op(block, -amount, 3)

    def _value_op(self, block: int, delta: int, op: int) -> None:
        with self._lock:
            self._need_field()
            self._check_block_number(block)
            if not 0 <= abs(delta) < 2**31:
                raise ValueError("a value operation moves 0..2^31-1")
            value, address = self._value_source(block, op)
            if not -(2**31) <= value + delta < 2**31:
                raise self._nak(f"block {block}: value would overflow")
            self._register = (value + delta, address)

    def restore(self, block: int) -> None:
        with self._lock:
            self._need_field()
            self._check_block_number(block)
            self._register = self._value_source(block, 3)

    def transfer(self, block: int) -> None:
        with self._lock:
            self._need_field()
            self._check_block_number(block)
            self._data_rule(block, 3)
            if self._register is None:
                raise self._nak("transfer without a preceding increment/decrement/restore")
            value, address = self._register
            self._register = None
            self._eeprom_write(block, encode_value_block(value, address))


def _garbage(old: bytes, new: bytes, seed: int) -> bytes:
    """What a torn EEPROM write may leave: some new bytes, some old, some bits flipped."""
    rng = random.Random(seed)
    out = bytearray(n if rng.random() < 0.5 else o for o, n in zip(old, new, strict=True))
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(16)] ^= 1 << rng.randrange(8)
    while bytes(out) in (old, new):
        out[rng.randrange(16)] ^= 1 << rng.randrange(8)
    return bytes(out)
