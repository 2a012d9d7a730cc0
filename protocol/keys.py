"""Card keys: NXP AN10922 key diversification and MIFARE Classic access bits.

Every card gets its own sector keys, derived from a chain master key and the card's UID
(NXP AN10922, AES-128 CMAC), so cracking one card (Crypto1 is broken) reveals nothing
about the next one. There are three masters with three jobs, so a terminal that only
has to read (a balance display) can be given the read master alone:

* the *read* master gives each sector's key A (read only, by the access bits),
* the *write* master gives each sector's key B (read and write),
* the *MAC* master gives the AES key of the application MAC, which is never stored on
  the card at all.

The access-bit encoding lives here too, because both the card format (which writes
sector trailers) and the simulator's chip model (which enforces them) must agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

#: The MIFARE Classic factory ("transport") key for key A and key B.
TRANSPORT_KEY = b"\xff" * 6
#: Transport access bits: data blocks 000 (anything with key A), trailer 001.
TRANSPORT_ACCESS = bytes.fromhex("FF078069")

#: Our application identifier in key diversification (3 bytes, as a DESFire AID).
ONECARD_AID = bytes.fromhex("4F4331")  # "OC1"
_SYSTEM_PREFIX = b"OneCard"


# --- AN10922 -----------------------------------------------------------------------


def _aes_ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _shift_left(block: bytes) -> bytes:
    n = int.from_bytes(block, "big") << 1
    return (n & ((1 << 128) - 1)).to_bytes(16, "big")


def cmac_subkeys(key: bytes) -> tuple[bytes, bytes]:
    """The CMAC subkeys K1, K2 of an AES-128 key (NIST SP 800-38B)."""
    zero = _aes_ecb(key, bytes(16))
    k1 = _shift_left(zero)
    if zero[0] & 0x80:
        k1 = k1[:15] + bytes([k1[15] ^ 0x87])
    k2 = _shift_left(k1)
    if k1[0] & 0x80:
        k2 = k2[:15] + bytes([k2[15] ^ 0x87])
    return k1, k2


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _cbc_mac(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    return (enc.update(data) + enc.finalize())[-16:]


def aes_cmac(key: bytes, message: bytes) -> bytes:
    """AES-128 CMAC (RFC 4493) of ``message``: 16 bytes."""
    if len(key) != 16:
        raise ValueError("AES-128 CMAC needs a 16-byte key")
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


@lru_cache(maxsize=4096)
def an10922_aes128(master: bytes, uid: bytes, aid: bytes, system_id: bytes) -> bytes:
    """Diversify an AES-128 ``master`` key for one card, as NXP AN10922 §2.2.

    The input is ``01 ‖ UID ‖ AID ‖ system id`` (at most 31 bytes). Unlike plain CMAC
    it is always padded to 32 bytes (``80 00 ..``) and then XOR'd with subkey K2, or
    XOR'd with K1 when it is exactly 32 bytes long; the result is the last block of
    AES-CBC over it. (libfreefare once padded to 16 bytes; the test vector catches that.)
    """
    if len(master) != 16:
        raise ValueError("the master key must be 16 bytes (AES-128)")
    m = bytes([0x01]) + uid + aid + system_id
    if len(m) > 32:
        raise ValueError("diversification input longer than 31 bytes")
    k1, k2 = cmac_subkeys(master)
    if len(m) == 32:
        d = m[:16] + _xor(m[16:], k1)
    else:
        m = m + b"\x80" + bytes(31 - len(m))
        d = m[:16] + _xor(m[16:], k2)
    return _cbc_mac(master, d)


@dataclass(frozen=True)
class ChainKeys:
    """A chain's master keys; ``write_master`` may be None on a read-only terminal.

    Sector keys: ``AN10922(master, UID, AID "OC1", "OneCard" ‖ chain id (4 bytes BE) ‖
    sector)`` and the first 6 bytes of the 16-byte result. MAC key: the whole 16-byte
    result of ``AN10922(mac_master, UID, AID, "OneCard" ‖ chain id ‖ FF)``.
    """

    chain_id: int
    read_master: bytes
    write_master: bytes | None
    mac_master: bytes

    def __post_init__(self) -> None:
        if not 0 < self.chain_id < 2**32:
            raise ValueError("chain id must be 1..2^32-1")
        for name in ("read_master", "write_master", "mac_master"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, bytes) or len(value) != 16):
                raise ValueError(f"{name} must be 16 bytes")

    def _system_id(self, tail: int) -> bytes:
        return _SYSTEM_PREFIX + self.chain_id.to_bytes(4, "big") + bytes([tail])

    def key_a(self, uid: bytes, sector: int) -> bytes:
        """The 6-byte key A of ``sector`` on the card ``uid`` (reads only)."""
        return an10922_aes128(self.read_master, uid, ONECARD_AID, self._system_id(sector))[:6]

    def key_b(self, uid: bytes, sector: int) -> bytes:
        """The 6-byte key B of ``sector`` on the card ``uid`` (reads and writes)."""
        if self.write_master is None:
            raise PermissionError("this terminal holds no write master: it may only read cards")
        return an10922_aes128(self.write_master, uid, ONECARD_AID, self._system_id(sector))[:6]

    def mac_key(self, uid: bytes) -> bytes:
        """The 16-byte AES key of the application MAC for the card ``uid``."""
        return an10922_aes128(self.mac_master, uid, ONECARD_AID, self._system_id(0xFF))

    def read_only(self) -> ChainKeys:
        """The same keys without the write master, for terminals that only read."""
        return ChainKeys(self.chain_id, self.read_master, None, self.mac_master)


# --- access bits -------------------------------------------------------------------

AccessConditions = tuple[int, int, int, int]
"""(C1C2C3 of block 0, block 1, block 2, trailer), each as the 3-bit number C1<<2|C2<<1|C3."""


def encode_access_bits(conditions: AccessConditions, gpb: int = 0x69) -> bytes:
    """Bytes 6..9 of a sector trailer for the given access conditions.

    Byte 6 = ~C2 (b3..b0) ‖ ~C1, byte 7 = C1 ‖ ~C3, byte 8 = C3 ‖ C2, byte 9 = user byte.
    """
    c1 = c2 = c3 = 0
    for i, cond in enumerate(conditions):
        if not 0 <= cond <= 7:
            raise ValueError("an access condition is three bits")
        c1 |= ((cond >> 2) & 1) << i
        c2 |= ((cond >> 1) & 1) << i
        c3 |= (cond & 1) << i
    b6 = ((~c2 & 0xF) << 4) | (~c1 & 0xF)
    b7 = (c1 << 4) | (~c3 & 0xF)
    b8 = (c3 << 4) | c2
    return bytes([b6, b7, b8, gpb & 0xFF])


def decode_access_bits(raw: bytes) -> AccessConditions | None:
    """The access conditions in trailer bytes 6..8, or None if their check fails."""
    b6, b7, b8 = raw[0], raw[1], raw[2]
    c1, c2, c3 = b7 >> 4, b8 & 0xF, b8 >> 4
    if (b6 & 0xF) != (~c1 & 0xF) or (b6 >> 4) != (~c2 & 0xF) or (b7 & 0xF) != (~c3 & 0xF):
        return None
    conds = []
    for i in range(4):
        conds.append((((c1 >> i) & 1) << 2) | (((c2 >> i) & 1) << 1) | ((c3 >> i) & 1))
    return (conds[0], conds[1], conds[2], conds[3])


#: Our sectors: data blocks 100 (read with A or B, write with B only, no value ops),
#: trailer 011 (key A, access bits and key B writable with B; key B never readable).
ONECARD_ACCESS: AccessConditions = (0b100, 0b100, 0b100, 0b011)


def trailer(key_a: bytes, key_b: bytes, conditions: AccessConditions = ONECARD_ACCESS) -> bytes:
    """A 16-byte sector trailer: key A ‖ access bits ‖ user byte ‖ key B."""
    if len(key_a) != 6 or len(key_b) != 6:
        raise ValueError("MIFARE Classic keys are 6 bytes")
    return key_a + encode_access_bits(conditions) + key_b


# --- the card key document: what HQ hands a terminal (``hq card-keys``) -----------------


def keys_to_json(keys: ChainKeys) -> dict[str, Any]:
    """The card key document (JSON) HQ hands to terminals and the bench tools read."""
    return {"chain_id": keys.chain_id, "read_master": keys.read_master.hex(),
            "write_master": keys.write_master.hex() if keys.write_master else None,
            "mac_master": keys.mac_master.hex()}


def keys_from_json(data: dict[str, Any]) -> ChainKeys:
    """Parse a key document; ValueError with the reason when it is not one."""
    try:
        write = data.get("write_master")
        return ChainKeys(int(data["chain_id"]), bytes.fromhex(data["read_master"]),
                         bytes.fromhex(write) if write else None,
                         bytes.fromhex(data["mac_master"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a card key document: {exc!r}") from None
