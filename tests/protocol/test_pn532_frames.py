"""PN532 HSU frames: build and parse, incrementally, past junk and bad checksums."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocol import pn532_frames as pn


def test_known_frames_byte_for_byte():
    assert pn.host_command(pn.GET_FIRMWARE_VERSION) == bytes.fromhex("0000FF02FED4022A00")
    assert pn.host_command(pn.SAM_CONFIGURATION, b"\x01\x14\x01") == \
        bytes.fromhex("0000FF05FBD414011401 02 00".replace(" ", ""))
    assert pn.chip_response(pn.GET_FIRMWARE_VERSION, bytes.fromhex("32010607")) == \
        bytes.fromhex("0000FF06FAD50332010607E800")


def test_ack_nack_error_and_frames_after_wakeup_junk():
    parser = pn.FrameParser()
    stream = (pn.WAKEUP + b"\x12\x34" + pn.ACK + pn.NACK + pn.ERROR_FRAME
              + pn.chip_response(pn.IN_RELEASE, b"\x00"))
    events = parser.feed(stream)
    assert events == [pn.AckFrame(), pn.Nack(), pn.ErrorFrame(), pn.Frame(pn.TFI_PN532, b"\x53\x00")]


def test_bad_checksum_is_reported_and_parsing_goes_on():
    bad = bytearray(pn.host_command(pn.GET_FIRMWARE_VERSION))
    bad[-2] ^= 0xFF
    events = pn.FrameParser().feed(bytes(bad) + pn.ACK)
    assert events == [pn.BadChecksum(), pn.AckFrame()]


def test_bad_length_checksum_is_skipped_as_junk():
    events = pn.FrameParser().feed(b"\x00\x00\xff\x05\x00" + pn.ACK)
    assert events == [pn.AckFrame()]


def test_extended_frame_round_trip():
    data = bytes(range(256)) * 2
    frame = pn.build_frame(pn.TFI_PN532, data)
    assert frame[3:5] == b"\xff\xff"
    assert pn.FrameParser().feed(frame) == [pn.Frame(pn.TFI_PN532, data)]


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4),
       st.integers(min_value=1, max_value=7))
def test_any_split_of_a_stream_gives_the_same_frames(payloads, chunk):
    stream = b"".join(pn.build_frame(pn.TFI_HOST, p) for p in payloads)
    parser = pn.FrameParser()
    events = []
    for i in range(0, len(stream), chunk):
        events += parser.feed(stream[i:i + chunk])
    assert events == [pn.Frame(pn.TFI_HOST, p) for p in payloads]
