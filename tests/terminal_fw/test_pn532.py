"""The PN532 driver against the emulator on a real pty, and the emulator as a raw host sees it."""

from __future__ import annotations

import os
import select
import time

import pytest
import serial

from protocol import pn532_frames as pn
from protocol.card_format import decode_value_block, encode_value_block
from protocol.mifare import (
    AccessDenied,
    CardRemoved,
    KeyType,
    ReaderUnavailable,
    SectorAuthFailed,
)
from simulators.card_field import CardField
from simulators.mifare_classic import MifareClassic1K
from simulators.pn532_emulator import Pn532Emulator
from terminal_fw.readers.pn532 import Pn532

TRANSPORT = b"\xff" * 6
UID = bytes.fromhex("DEADBEEF")


@pytest.fixture
def emulator():
    emu = Pn532Emulator(CardField("pn532")).start()
    yield emu
    emu.stop()


@pytest.fixture
def chip(emulator):
    c = Pn532(emulator.link_path).open()
    yield c
    c.close()


class RawHost:
    """A host that writes bytes and reads frames itself, to check the emulator's wire."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 115200, timeout=0)
        self.parser = pn.FrameParser()
        self.events: list = []

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def expect(self, timeout: float = 2.0):
        deadline = time.monotonic() + timeout
        while not self.events and time.monotonic() < deadline:
            select.select([self.port.fileno()], [], [], 0.05)
            self.events += self.parser.feed(self.port.read(4096))
        return self.events.pop(0) if self.events else None

    def command(self, code: int, params: bytes = b"") -> pn.Frame:
        self.send(pn.host_command(code, params))
        assert self.expect() == pn.AckFrame()
        frame = self.expect()
        assert isinstance(frame, pn.Frame) and frame.code == code + 1, frame
        return frame

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def host(emulator):
    h = RawHost(emulator.link_path)
    yield h
    h.close()


def test_firmware_and_card_detection(emulator, chip):
    assert chip.firmware == bytes.fromhex("32010607")
    assert chip.wait_for_card(0.2) is None  # aborted with an ACK, chip still answers after
    assert chip.command(pn.GET_FIRMWARE_VERSION) == bytes.fromhex("32010607")
    emulator.field.place(MifareClassic1K.blank(UID))
    link = chip.wait_for_card(2.0)
    assert link is not None and link.uid() == UID
    assert (link.atqa, link.sak) == (b"\x00\x04", 0x08)


def test_mifare_operations_and_refusals(emulator, chip):
    card = MifareClassic1K.blank(UID)
    emulator.field.place(card)
    link = chip.wait_for_card(2.0)
    with pytest.raises(SectorAuthFailed):
        link.authenticate(4, KeyType.A, b"\x01" * 6)
    link.authenticate(4, KeyType.A, TRANSPORT)
    link.write_block(5, encode_value_block(1000, 5))
    link.increment(5, 258)  # little-endian on this path: a slip would show
    link.transfer(5)
    link.decrement(5, 8)
    link.transfer(6)
    link.restore(6)
    link.transfer(4)
    assert decode_value_block(link.read_block(5)) == (1258, 5)
    assert decode_value_block(link.read_block(4)) == (1250, 5)
    link.authenticate(0, KeyType.A, TRANSPORT)
    with pytest.raises(AccessDenied):
        link.write_block(0, bytes(16))
    assert card.to_mfd()[64:80] == encode_value_block(1250, 5)


def test_card_removal_and_tear(emulator, chip):
    card = MifareClassic1K.blank(UID)
    emulator.field.place(card)
    link = chip.wait_for_card(2.0)
    link.authenticate(4, KeyType.A, TRANSPORT)
    emulator.field.tear_at_next_write("before")
    with pytest.raises(CardRemoved):
        link.write_block(4, b"\x77" * 16)
    assert card.to_mfd()[64:80] == bytes(16)
    assert chip.wait_for_removal(1.0)
    emulator.field.place(card)
    link = chip.wait_for_card(2.0)
    link.authenticate(4, KeyType.A, TRANSPORT)
    emulator.field.remove()
    with pytest.raises(CardRemoved):
        link.read_block(4)


def test_unplug_and_replug_recovers(emulator, chip):
    emulator.field.place(MifareClassic1K.blank(UID))
    assert chip.wait_for_card(2.0) is not None
    emulator.unplug()
    with pytest.raises(ReaderUnavailable):
        chip.command(pn.GET_FIRMWARE_VERSION)
    emulator.replug()
    chip.reopen(timeout=5.0)
    link = chip.wait_for_card(2.0)
    assert link is not None and link.uid() == UID


def test_emulator_wire_behaviour(emulator, host):
    # junk and a wake-up before the first frame are skipped
    host.send(b"\x13\x37" + pn.WAKEUP)
    assert host.command(pn.GET_FIRMWARE_VERSION).data[1:] == bytes.fromhex("32010607")
    # NACK: the last answer again
    host.send(pn.NACK)
    again = host.expect()
    assert isinstance(again, pn.Frame) and again.code == pn.GET_FIRMWARE_VERSION + 1
    # Diagnose line test echoes its parameters
    assert host.command(pn.DIAGNOSE, b"\x00hello").data[1:] == b"\x00hello"
    # read-modify-write of a register
    host.command(pn.WRITE_REGISTER, b"\x63\x05\x12")
    assert host.command(pn.READ_REGISTER, b"\x63\x05\x63\x06").data[1:] == b"\x12\x00"
    host.command(pn.SET_PARAMETERS, b"\x14")
    host.command(pn.SAM_CONFIGURATION, b"\x01\x14\x01")
    # unknown command: ACK then the syntax-error frame
    host.send(pn.host_command(0x7A))
    assert host.expect() == pn.AckFrame()
    assert host.expect() == pn.ErrorFrame()
    # a frame with a bad checksum gets no answer at all
    bad = bytearray(pn.host_command(pn.GET_FIRMWARE_VERSION))
    bad[-2] ^= 1
    host.send(bytes(bad))
    assert host.expect(timeout=0.3) is None
    # nothing in the field: InCommunicateThru times out, InDataExchange has no target
    assert host.command(pn.IN_COMMUNICATE_THRU, b"\x26").data[1:] == b"\x01"
    assert host.command(pn.IN_DATA_EXCHANGE, b"\x01\x30\x04").data[1:] == b"\x27"
    # limited retries: InListPassiveTarget answers "no target"
    host.command(pn.RF_CONFIGURATION, b"\x05\xff\x01\x02")
    assert host.command(pn.IN_LIST_PASSIVE_TARGET, b"\x01\x00").data[1:] == b"\x00"
    # endless retries: the command waits for a card; a host ACK aborts it
    host.command(pn.RF_CONFIGURATION, b"\x05\xff\x01\xff")
    host.send(pn.host_command(pn.IN_LIST_PASSIVE_TARGET, b"\x01\x00"))
    assert host.expect() == pn.AckFrame()
    assert host.expect(timeout=0.3) is None
    host.send(pn.ACK)
    emulator.field.place(MifareClassic1K.blank(UID))
    assert host.expect(timeout=0.3) is None  # aborted: no late answer
    # InAutoPoll finds the card (type 0x10: MIFARE at 106 kbps)
    poll = host.command(pn.IN_AUTO_POLL, b"\x01\x01\x10").data[1:]
    assert poll[:2] == b"\x01\x10" and poll[-4:] == UID


def test_power_down_needs_a_wakeup(emulator, host):
    host.command(pn.POWER_DOWN, b"\x10")
    host.send(pn.host_command(pn.GET_FIRMWARE_VERSION))
    assert host.expect(timeout=0.3) is None  # asleep: the frame is lost
    host.send(pn.WAKEUP)
    assert host.command(pn.GET_FIRMWARE_VERSION).data[1:] == bytes.fromhex("32010607")


def test_host_closing_the_port_does_not_kill_the_emulator(emulator):
    for _ in range(3):
        with Pn532(emulator.link_path) as chip:
            assert chip.firmware == bytes.fromhex("32010607")
    assert os.path.exists(emulator.link_path)
