"""ID-card readers and QR scanners through pyserial on ptys."""

from __future__ import annotations

import pytest

from simulators.uid_readers import Em4100ReaderEmulator, QrScannerEmulator
from terminal_fw.readers.serial_uid import SerialUidReader, parse_em4100, parse_rdm6300


@pytest.mark.parametrize("framing,expected", [("line", "1A2B3C4D5E"), ("rdm6300", "1A2B3C4D5E"),
                                              ("decimal", f"{0x2B3C4D5E:010d}")])
def test_id_card_reader_framings(framing, expected):
    with Em4100ReaderEmulator(framing) as emu, SerialUidReader(emu.path, "em4100") as reader:
        emu.present_tag(0x1A2B3C4D5E)
        read = reader.read(2.0)
        assert read is not None and (read.kind, read.value) == ("em4100", expected)
        assert reader.read(0.1) is None  # one read per presentation


def test_damaged_rdm6300_frame_is_dropped_and_the_next_read_counts():
    with Em4100ReaderEmulator("rdm6300") as emu, SerialUidReader(emu.path, "em4100") as reader:
        emu.send(b"\x021A2B3C4D5E00\x03")  # wrong checksum
        emu.present_tag(0x0000000042)
        read = reader.read(2.0)
        assert read is not None and read.value == "0000000042"


def test_qr_scanner_lines_with_any_line_end():
    with QrScannerEmulator(b"\r\n") as emu, SerialUidReader(emu.path, "qr") as reader:
        emu.scan("ONECARD:M00001:会员")
        emu.scan("https://example.invalid/m/2")
        assert reader.read(2.0).value == "ONECARD:M00001:会员"
        assert reader.read(2.0).value == "https://example.invalid/m/2"
        assert reader.read(0.1) is None


def test_parsers_refuse_noise():
    assert parse_em4100("12345") is None
    assert parse_em4100("zz23456789") is None
    assert parse_rdm6300(b"\x02123\x03") is None
