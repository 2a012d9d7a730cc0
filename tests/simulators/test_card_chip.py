"""The simulator's MIFARE Classic 1K chip behaves as the datasheet says where we can tell."""

from __future__ import annotations

import pytest

from protocol.card_format import decode_value_block, encode_value_block
from protocol.keys import (
    ONECARD_ACCESS,
    TRANSPORT_KEY,
    decode_access_bits,
    encode_access_bits,
    trailer,
)
from protocol.mifare import (
    AccessDenied,
    CardRemoved,
    KeyType,
    MifareClassicLink,
    SectorAuthFailed,
)
from simulators.mifare_classic import MifareClassic1K

UID = bytes.fromhex("DEADBEEF")
KA = bytes.fromhex("A0A1A2A3A4A5")
KB = bytes.fromhex("B0B1B2B3B4B5")


def test_blank_card_has_factory_layout() -> None:
    card = MifareClassic1K.blank(UID)
    assert isinstance(card, MifareClassicLink)
    mfd = card.to_mfd()
    assert len(mfd) == 1024
    assert mfd[0:4] == UID and mfd[4] == 0xDE ^ 0xAD ^ 0xBE ^ 0xEF
    assert mfd[5] == 0x08 and mfd[6:8] == b"\x04\x00"
    assert mfd[48:64] == TRANSPORT_KEY + bytes.fromhex("FF078069") + TRANSPORT_KEY
    assert card.uid == UID and card.uid() == UID
    assert card.sak == 0x08 and card.atqa == b"\x00\x04"
    again = MifareClassic1K.from_mfd(mfd)
    assert again.uid == UID and again.to_mfd() == mfd


def test_seven_byte_uid_round_trips_through_a_dump() -> None:
    uid7 = bytes.fromhex("04782E21801D80")
    card = MifareClassic1K.blank(uid7)
    assert card.atqa == b"\x00\x44"
    assert MifareClassic1K.from_mfd(card.to_mfd()).uid == uid7


def test_access_bits_encoding_matches_the_transport_value() -> None:
    assert encode_access_bits((0, 0, 0, 1)) == bytes.fromhex("FF078069")
    for conds in [(0, 2, 4, 6), (1, 3, 5, 7), ONECARD_ACCESS]:
        assert decode_access_bits(encode_access_bits(conds)) == conds
    assert decode_access_bits(bytes.fromhex("FF0780")) is not None
    assert decode_access_bits(bytes.fromhex("FF0781")) is None


def personalised() -> MifareClassic1K:
    card = MifareClassic1K.blank(UID)
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    card.write_block(7, trailer(KA, KB, ONECARD_ACCESS))
    return card


def test_wrong_key_fails_and_drops_authentication() -> None:
    card = personalised()
    with pytest.raises(SectorAuthFailed):
        card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    with pytest.raises(AccessDenied):
        card.read_block(4)
    card.authenticate(4, KeyType.A, KA)
    assert card.read_block(5) == bytes(16)


def test_key_a_reads_only_and_key_b_writes() -> None:
    card = personalised()
    card.authenticate(5, KeyType.A, KA)
    with pytest.raises(AccessDenied):
        card.write_block(5, b"x" * 16)
    card.authenticate(5, KeyType.A, KA)  # a NAK dropped the authentication
    assert card.read_block(5) == bytes(16)
    card.authenticate(5, KeyType.B, KB)
    card.write_block(5, b"y" * 16)
    assert card.read_block(5) == b"y" * 16
    # blocks outside the authenticated sector are refused
    with pytest.raises(AccessDenied):
        card.read_block(8)


def test_trailer_reads_hide_keys() -> None:
    card = personalised()
    card.authenticate(7, KeyType.A, KA)
    t = card.read_block(7)
    assert t[0:6] == bytes(6) and t[10:16] == bytes(6)
    assert t[6:10] == encode_access_bits(ONECARD_ACCESS)
    fresh = MifareClassic1K.blank(UID)
    fresh.authenticate(3, KeyType.A, TRANSPORT_KEY)
    t = fresh.read_block(3)
    assert t[0:6] == bytes(6) and t[10:16] == TRANSPORT_KEY  # transport: key B readable


def test_readable_key_b_cannot_serve_as_a_key() -> None:
    card = MifareClassic1K.blank(UID)
    card.authenticate(1, KeyType.B, TRANSPORT_KEY)
    with pytest.raises(AccessDenied):
        card.read_block(1)


def test_key_a_cannot_rewrite_our_trailer_and_bad_access_bits_are_refused() -> None:
    card = personalised()
    card.authenticate(7, KeyType.A, KA)
    with pytest.raises(AccessDenied):
        card.write_block(7, trailer(TRANSPORT_KEY, TRANSPORT_KEY, (0, 0, 0, 1)))
    card.authenticate(7, KeyType.B, KB)
    with pytest.raises(AccessDenied):
        card.write_block(7, KA + bytes.fromhex("FF078169") + KB)
    card.authenticate(7, KeyType.B, KB)
    card.write_block(7, trailer(TRANSPORT_KEY, TRANSPORT_KEY, (0, 0, 0, 1)))
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)


def test_manufacturer_block_is_read_only_unless_magic() -> None:
    card = MifareClassic1K.blank(UID)
    card.authenticate(0, KeyType.A, TRANSPORT_KEY)
    with pytest.raises(AccessDenied):
        card.write_block(0, bytes(16))
    clone = MifareClassic1K.blank(UID, magic=True)
    other = bytes.fromhex("01020304")
    clone.authenticate(0, KeyType.A, TRANSPORT_KEY)
    clone.write_block(0, other + bytes([1 ^ 2 ^ 3 ^ 4, 8, 4, 0]) + bytes(8))
    assert clone.uid == other


def test_value_operations_follow_the_chip() -> None:
    card = MifareClassic1K.blank(UID)
    card.authenticate(5, KeyType.A, TRANSPORT_KEY)
    card.write_block(5, encode_value_block(100, 5))
    assert card.read_block(5) == bytes.fromhex("640000009BFFFFFF6400000005FA05FA")
    card.decrement(5, 30)
    card.transfer(5)
    card.increment(5, 5)
    card.transfer(6)
    assert decode_value_block(card.read_block(5)) == (70, 5)
    assert decode_value_block(card.read_block(6)) == (75, 5)
    card.restore(6)
    card.transfer(4)
    assert decode_value_block(card.read_block(4)) == (75, 5)
    with pytest.raises(AccessDenied):
        card.transfer(4)  # the register was used up
    card.authenticate(5, KeyType.A, TRANSPORT_KEY)
    card.write_block(6, b"not a value blk!")
    with pytest.raises(AccessDenied):
        card.increment(6, 1)


def test_value_ops_respect_access_bits() -> None:
    card = MifareClassic1K.blank(UID)
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    card.write_block(4, encode_value_block(10, 4))
    # block 0 of sector 1: 001 = decrement only; trailer 011
    card.write_block(7, trailer(KA, KB, (0b001, 0b100, 0b100, 0b011)))
    card.authenticate(4, KeyType.B, KB)
    with pytest.raises(AccessDenied):
        card.increment(4, 1)
    card.authenticate(4, KeyType.A, KA)
    card.decrement(4, 1)
    card.transfer(4)
    with pytest.raises(AccessDenied):
        card.write_block(4, encode_value_block(99, 4))


@pytest.mark.parametrize("mode", ["before", "after", "garbage"])
def test_tear_leaves_old_new_or_garbage_and_removes_the_card(mode: str) -> None:
    card = MifareClassic1K.blank(UID)
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    card.write_block(4, b"a" * 16)
    card.tear_at_write(2, mode)  # type: ignore[arg-type]
    card.write_block(5, b"b" * 16)
    with pytest.raises(CardRemoved):
        card.write_block(4, b"c" * 16)
    assert not card.present
    with pytest.raises(CardRemoved):
        card.read_block(4)
    with pytest.raises(CardRemoved):
        card.uid()
    card.enter_field()
    with pytest.raises(AccessDenied):
        card.read_block(4)  # authentication was lost with the field
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    block = card.read_block(4)
    assert card.read_block(5) == b"b" * 16
    if mode == "before":
        assert block == b"a" * 16
    elif mode == "after":
        assert block == b"c" * 16
    else:
        assert block not in (b"a" * 16, b"c" * 16)


def test_transfer_can_tear_too() -> None:
    card = MifareClassic1K.blank(UID)
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    card.write_block(4, encode_value_block(10, 4))
    card.tear_at_write(1, "before")
    card.decrement(4, 3)
    with pytest.raises(CardRemoved):
        card.transfer(4)
    card.enter_field()
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    assert decode_value_block(card.read_block(4)) == (10, 4)


def test_halt_and_enter_field() -> None:
    card = MifareClassic1K.blank(UID)
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    card.halt()
    with pytest.raises(CardRemoved):
        card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    card.enter_field()
    card.authenticate(4, KeyType.A, TRANSPORT_KEY)
    assert card.read_block(4) == bytes(16)
