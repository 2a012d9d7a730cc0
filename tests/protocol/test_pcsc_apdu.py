"""Part 3 storage-card APDUs both ways, and the simulated reader's two reader models."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import pcsc_apdu as apdu
from protocol.mifare import KeyType
from simulators.card_field import CardField
from simulators.mifare_classic import MifareClassic1K
from simulators.vpcd_reader import StorageCardReader

TRANSPORT = b"\xff" * 6


@given(block=st.integers(0, 255), count=st.integers(1, 3), data=st.binary(min_size=48, max_size=48))
def test_block_reads_and_writes_round_trip(block, count, data):
    read = apdu.parse_command(apdu.read_binary(block, 16 * count))
    assert read == apdu.ReadBinary(block, 16 * count)
    write = apdu.parse_command(apdu.update_binary(block, data[:16 * count]))
    assert write == apdu.UpdateBinary(block, data[:16 * count])


@pytest.mark.parametrize("length", [0, 8, 17, 64])
def test_lengths_that_are_not_one_to_three_blocks_are_refused(length):
    with pytest.raises(ValueError):
        apdu.read_binary(4, length)
    with pytest.raises(ValueError):
        apdu.update_binary(4, bytes(length))
    raw = bytes([0xFF, 0xD6, 0x00, 0x04, length]) + bytes(length)
    with pytest.raises(apdu.ApduError) as err:
        apdu.parse_command(raw)
    assert err.value.status == apdu.SW_WRONG_LENGTH


def reader(multi_block: bool) -> tuple[StorageCardReader, MifareClassic1K]:
    field = CardField("test")
    card = MifareClassic1K.blank(bytes.fromhex("0A0B0C0D"))
    field.place(card)
    r = StorageCardReader(field, multi_block=multi_block)
    r.power_on()
    assert r.transmit(apdu.load_key(0, TRANSPORT)) == apdu.SW_OK
    assert r.transmit(apdu.authenticate(4, KeyType.A, 0)) == apdu.SW_OK
    return r, card


def test_a_multi_block_reader_moves_three_blocks_of_a_sector_at_once():
    r, card = reader(multi_block=True)
    data = bytes(range(48))
    assert r.transmit(apdu.update_binary(4, data)) == apdu.SW_OK
    assert r.transmit(apdu.read_binary(4, 48)) == data + apdu.SW_OK
    assert card.to_mfd()[64:112] == data
    assert r.transmit(apdu.read_binary(5, 48)) == apdu.SW_WRONG_LENGTH  # into the trailer
    assert r.transmit(apdu.update_binary(6, data[:32])) == apdu.SW_WRONG_LENGTH


def test_a_single_block_reader_refuses_longer_reads_before_they_reach_the_card():
    r, card = reader(multi_block=False)
    before = card.to_mfd()
    assert r.transmit(apdu.read_binary(4, 48)) == apdu.SW_WRONG_LENGTH
    assert r.transmit(apdu.update_binary(4, bytes(range(32)))) == apdu.SW_WRONG_LENGTH
    assert card.to_mfd() == before
    assert r.transmit(apdu.read_binary(4)) == before[64:80] + apdu.SW_OK  # session still open
