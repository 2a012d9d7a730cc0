"""The PC/SC driver through the real stack: pyscard → pcscd → vpcd → simulated reader → chip.

Covers the Part 3 commands both ways, card removal between and during commands, two
readers at once, reader unplug/replug, and a third-party style client (pyscard's
high-level API) reading the simulated card.
"""

from __future__ import annotations

import pytest

from protocol.card_format import decode_value_block, encode_value_block
from protocol.mifare import AccessDenied, CardRemoved, KeyType, ReaderError, SectorAuthFailed
from simulators.mifare_classic import MifareClassic1K
from tests import pcsc_fixtures

pytestmark = pytest.mark.pcsc
pcscd = pcsc_fixtures.pcscd
vpcd_pair = pcsc_fixtures.vpcd_pair

TRANSPORT = b"\xff" * 6
UID_A = bytes.fromhex("A1B2C3D4")
UID_B = bytes.fromhex("11223344")


@pytest.fixture
def readers():
    from terminal_fw.readers.pcsc import PcscReaders

    r = PcscReaders(["Virtual PCD"])
    yield r
    r.close()


def tap(readers, vreader, card, timeout=5.0):
    """Put ``card`` on the virtual reader; return the terminal's link once it sees it."""
    vreader.field.place(card)
    event = readers.wait_for_card(timeout, reader=vreader.name)
    assert event is not None, f"no card event on {vreader.name}"
    return readers.connect(vreader.name)


def test_uid_auth_read_write(vpcd_pair, readers):
    entry, _ = vpcd_pair
    card = MifareClassic1K.blank(UID_A)
    with tap(readers, entry, card) as link:
        assert link.uid() == UID_A
        with pytest.raises(SectorAuthFailed):
            link.authenticate(4, KeyType.A, b"\x00" * 6)
        with pytest.raises(AccessDenied):
            link.read_block(4)  # the failed authentication left the sector closed
        link.authenticate(4, KeyType.A, TRANSPORT)
        link.write_block(5, bytes(range(16)))
        assert link.read_block(5) == bytes(range(16))
        link.authenticate(0, KeyType.A, TRANSPORT)
        with pytest.raises(AccessDenied):
            link.write_block(0, bytes(16))  # manufacturer block is read-only
    assert card.to_mfd()[5 * 16:6 * 16] == bytes(range(16))


def test_value_operations_keep_byte_order(vpcd_pair, readers):
    entry, _ = vpcd_pair
    card = MifareClassic1K.blank(UID_A)
    with tap(readers, entry, card) as link:
        link.authenticate(4, KeyType.A, TRANSPORT)
        link.write_block(5, encode_value_block(1000, 5))
        assert link.read_value(5) == 1000
        link.increment(5, 258)  # 0x102: a byte-order slip would show
        link.transfer(5)
        assert decode_value_block(link.read_block(5)) == (1258, 5)
        link.decrement(5, 300)
        link.transfer(6)  # into another block of the sector
        assert link.read_value(6) == 958
        link.restore(5)
        link.transfer(4)
        assert link.read_value(4) == 1258
        link.authenticate(8, KeyType.A, TRANSPORT)
        with pytest.raises(AccessDenied):
            link.read_value(9)  # not a value block


def test_card_taken_away_between_commands(vpcd_pair, readers):
    entry, _ = vpcd_pair
    card = MifareClassic1K.blank(UID_A)
    link = tap(readers, entry, card)
    link.authenticate(4, KeyType.A, TRANSPORT)
    entry.field.remove()
    with pytest.raises(CardRemoved):
        link.read_block(4)
    link.close()
    assert readers.wait_for_removal(entry.name, 5.0)


@pytest.mark.parametrize("mode,expected", [("before", bytes(16)), ("after", b"\x55" * 16)])
def test_card_torn_during_write(vpcd_pair, readers, mode, expected):
    entry, _ = vpcd_pair
    card = MifareClassic1K.blank(UID_A)
    link = tap(readers, entry, card)
    link.authenticate(4, KeyType.A, TRANSPORT)
    entry.field.tear_at_next_write(mode)
    with pytest.raises(CardRemoved):
        link.write_block(4, b"\x55" * 16)
    link.close()
    assert entry.field.card is None
    assert card.to_mfd()[64:80] == expected
    assert readers.wait_for_removal(entry.name, 5.0)
    # the member puts the card back: the terminal sees a new tap and can read it
    with tap(readers, entry, card) as again:
        again.authenticate(4, KeyType.A, TRANSPORT)
        assert again.read_block(4) == expected


def test_entry_and_exit_reader_at_once(vpcd_pair, readers):
    entry, exit_ = vpcd_pair
    entry.field.place(MifareClassic1K.blank(UID_A))
    exit_.field.place(MifareClassic1K.blank(UID_B))
    seen: dict[str, bytes] = {}
    for _ in range(10):
        for event in readers.wait(2.0):
            if event.present:
                with readers.connect(event.reader) as link:
                    seen[event.reader] = link.uid()
        if len(seen) == 2:
            break
    assert seen == {entry.name: UID_A, exit_.name: UID_B}


def test_reader_unplug_and_replug_recovers(vpcd_pair, readers):
    entry, _ = vpcd_pair
    card = MifareClassic1K.blank(UID_A)
    link = tap(readers, entry, card)
    assert link.uid() == UID_A
    entry.unplug()
    with pytest.raises(CardRemoved):
        link.read_block(1)
    link.close()
    assert readers.wait_for_removal(entry.name, 5.0)
    entry.replug()
    event = readers.wait_for_card(5.0, reader=entry.name)
    assert event is not None
    with readers.connect(entry.name) as again:
        again.authenticate(1, KeyType.A, TRANSPORT)
        assert again.read_block(1) == bytes(16)


def test_any_pcsc_client_can_read_the_simulated_card(vpcd_pair):
    """pyscard's high-level API, as third-party tools use it, with raw Part 3 APDUs."""
    from smartcard.CardRequest import CardRequest
    from smartcard.CardType import ATRCardType
    from smartcard.util import toBytes

    from protocol.pcsc_apdu import ATR_MIFARE_CLASSIC_1K

    entry, _ = vpcd_pair
    entry.field.place(MifareClassic1K.blank(UID_A))
    request = CardRequest(timeout=5, cardType=ATRCardType(list(ATR_MIFARE_CLASSIC_1K)),
                          readers=[entry.name])
    service = request.waitforcard()
    service.connection.connect()
    try:
        data, sw1, sw2 = service.connection.transmit(toBytes("FF CA 00 00 00"))
        assert (bytes(data), sw1, sw2) == (UID_A, 0x90, 0x00)
        _, sw1, sw2 = service.connection.transmit(toBytes("FF 82 00 01 06 FF FF FF FF FF FF"))
        assert (sw1, sw2) == (0x90, 0x00)
        # obsolete authenticate form FF 88, key slot 01
        _, sw1, sw2 = service.connection.transmit(toBytes("FF 88 00 07 60 01"))
        assert (sw1, sw2) == (0x90, 0x00)
        data, sw1, sw2 = service.connection.transmit(toBytes("FF B0 00 07 10"))
        assert (sw1, sw2) == (0x90, 0x00)
        assert bytes(data[6:10]) == bytes.fromhex("FF078069")
        _, sw1, sw2 = service.connection.transmit(toBytes("FF 00 00 00 00"))
        assert (sw1, sw2) == (0x6A, 0x81)
    finally:
        service.connection.disconnect()


def test_three_blocks_per_apdu_where_the_reader_can_one_by_one_where_it_cannot(vpcd_pair, readers):
    """ACS's Multiple Blocks Mode (ACR1252U-class) is found out with one read, and an
    ACR122U-class reader, which refuses it, is asked block by block from then on."""
    multi, single = vpcd_pair
    single.reader.multi_block = False
    data = bytes(range(48))
    card = MifareClassic1K.blank(UID_A)
    with tap(readers, multi, card) as link:
        link.authenticate(4, KeyType.A, TRANSPORT)
        sent = multi.apdus_served
        link.write_blocks(4, data)  # not known yet: writes never probe, so one per block
        assert multi.apdus_served - sent == 3
        assert link.read_blocks(4, 3) == data and link.multi_block is True
        assert multi.apdus_served - sent == 4
        link.write_blocks(4, data[::-1])
        assert link.read_blocks(4, 3) == data[::-1]
        assert multi.apdus_served - sent == 6  # one APDU each
        with pytest.raises(ReaderError):
            link.read_blocks(5, 3)  # would run into the sector trailer: refused
    multi.field.remove()
    card_b = MifareClassic1K.blank(UID_B)
    with tap(readers, single, card_b) as link:
        link.authenticate(8, KeyType.A, TRANSPORT)
        link.write_blocks(8, data)
        sent = single.apdus_served
        assert link.read_blocks(8, 3) == data and link.multi_block is False
        assert single.apdus_served - sent == 1 + 1 + 3  # refused try, authenticate again, 3 reads
    single.field.remove()
    assert readers.wait_for_removal(single.name, 5.0)
    card_b.enter_field()
    with tap(readers, single, card_b) as link:  # the reader's mode is remembered
        assert link.multi_block is False
        link.authenticate(8, KeyType.A, TRANSPORT)
        sent = single.apdus_served
        assert link.read_blocks(8, 3) == data
        assert single.apdus_served - sent == 3
