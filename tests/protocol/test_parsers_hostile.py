"""Every parser of untrusted bytes outside HQ's JSON topics is bounded and total.

Card dumps, PN532 frames and answers, PC/SC APDUs and answers, serial ID/QR lines: any
bytes give either a result or the parser's documented refusal (with a reason), never an
unexpected exception, and no buffer grows without bound.
"""

from __future__ import annotations

import pytest
import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import pcsc_apdu as apdu
from protocol import pn532_frames as pn
from protocol.card_format import (
    _HEADER,
    _STATE,
    COPY_BLOCKS,
    MAGIC,
    CardFormatError,
    _mac,
    encode_value_block,
    read_image,
)
from protocol.card_state import FORMAT_VERSION
from protocol.mifare import KeyType, ReaderError
from simulators.mifare_classic import CardDumpError, MifareClassic1K, load_dump
from terminal_fw.readers import serial_uid
from terminal_fw.readers.pcsc import PcscMifareLink
from terminal_fw.readers.pn532 import Pn532, Pn532MifareLink
from tests.card_world import CATALOGUE, CHAIN, KEYS

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


# --- card dumps and images -------------------------------------------------------


@FAST
@given(st.binary(max_size=2100))
def test_any_dump_bytes_give_a_card_or_a_dump_error(data: bytes) -> None:
    try:
        card = MifareClassic1K.from_mfd(data)
    except CardDumpError as exc:
        assert str(exc)
    else:
        assert len(card.to_mfd()) == 1024


def test_dump_file_too_big_is_refused_without_reading_it_all(tmp_path) -> None:
    big = tmp_path / "huge.mfd"
    with big.open("wb") as f:
        f.truncate(512 * 1024 * 1024)  # sparse: 512 MB that a reader must not slurp
    with pytest.raises(CardDumpError, match="1024 bytes"):
        load_dump(big)
    with pytest.raises(CardDumpError, match="not a file|cannot read"):
        load_dump(tmp_path)


@FAST
@given(st.binary(max_size=2100))
def test_any_image_bytes_read_or_refuse_with_a_reason(data: bytes) -> None:
    try:
        read_image(data, KEYS, CATALOGUE)
    except CardFormatError as exc:
        assert exc.reason is not None


@st.composite
def mac_correct_images(draw) -> bytes:
    """Images whose MACs verify (as a holder of the chain's keys could make) but whose
    fields are anything: the decoder must still refuse or read, never crash."""
    uid = bytes.fromhex("11223344")
    image = bytearray(draw(st.binary(min_size=1024, max_size=1024)))
    image[0:5] = uid + bytes([uid[0] ^ uid[1] ^ uid[2] ^ uid[3]])
    mac_key = KEYS.mac_key(uid)
    b4 = _HEADER.pack(MAGIC, FORMAT_VERSION, draw(st.integers(0, 255)), CHAIN,
                      draw(st.integers(0, 65535)), draw(st.integers(0, 65535)), bytes(4))
    b5 = draw(st.binary(min_size=16, max_size=16))
    tail = bytes(8)
    b6 = _mac(mac_key, b"OCH1", uid, b4, b5, tail) + tail
    blocks = {4: b4, 5: b5, 6: b6}
    for slot in (0, 1):
        vb, b1, b2 = COPY_BLOCKS[slot]
        value = encode_value_block(draw(st.integers(-(2**31), 2**31 - 1)), vb)
        rec = draw(st.binary(min_size=24, max_size=24))
        if draw(st.booleans()):
            rec = _STATE.pack(*draw(st.tuples(
                st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
                st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 65535),
                st.integers(0, 65535), st.integers(0, 255)))) + rec[15:]
        mac = _mac(mac_key, b"OCS1", uid, b4, b5, b6[:8], value, rec)
        body = rec + mac
        blocks.update({vb: value, b1: body[:16], b2: body[16:]})
    for b, data in blocks.items():
        image[b * 16:b * 16 + 16] = data
    return bytes(image)


@FAST
@given(mac_correct_images())
def test_mac_correct_images_with_any_fields_read_or_refuse(image: bytes) -> None:
    try:
        read = read_image(image, KEYS, CATALOGUE)
    except CardFormatError as exc:
        assert exc.reason is not None
    else:
        assert 0 <= read.state.purse_fen <= 2**31 - 1


# --- PN532 frames and answers ----------------------------------------------------


@FAST
@given(st.lists(st.binary(max_size=600), max_size=12))
def test_pn532_frame_parser_takes_any_bytes_and_stays_bounded(chunks: list[bytes]) -> None:
    parser = pn.FrameParser()
    for chunk in chunks:
        for event in parser.feed(chunk):
            assert isinstance(event, pn.AckFrame | pn.Nack | pn.ErrorFrame | pn.Frame | pn.BadChecksum)
        assert parser.pending() <= pn.MAX_PENDING


def test_pn532_frame_parser_bounds_its_buffer_under_a_flood_of_false_starts() -> None:
    parser = pn.FrameParser()
    for _ in range(50):  # 50 x 64 KB of start codes whose length checksum never matches
        assert parser.feed(b"\x00\xff\x05\x05" * 16384) == []
        assert parser.pending() <= pn.MAX_PENDING
    # ... and a good frame after the flood is still found
    assert parser.feed(pn.chip_response(0x02, b"\x32\x01\x06\x07")) == [
        pn.Frame(pn.TFI_PN532, b"\x03\x32\x01\x06\x07")]


@FAST
@given(st.binary(max_size=300))
def test_pn532_target_list_answer_gives_a_link_none_or_a_reader_error(answer: bytes) -> None:
    chip = Pn532("/dev/null")
    try:
        link = chip._link_from(answer)
    except ReaderError:
        return
    if link is not None:
        assert len(link.uid()) in (4, 7, 10)


class _ScriptedChip:
    """A PN532 whose every answer to InDataExchange is the given bytes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def command(self, code: int, params: bytes = b"", **_: object) -> bytes:
        return self.answer


@FAST
@given(st.binary(max_size=64))
def test_pn532_card_answers_give_data_or_a_reader_error(answer: bytes) -> None:
    link = Pn532MifareLink(_ScriptedChip(answer), 1, b"\x11\x22\x33\x44", b"\x00\x04", 0x08)
    for op in (lambda: link.read_block(4), lambda: link.write_block(4, bytes(16)),
               lambda: link.authenticate(4, KeyType.A, bytes(6)),
               lambda: link.increment(8, 1), lambda: link.transfer(8)):
        try:
            op()
        except ReaderError:
            pass


# --- PC/SC APDUs and answers -----------------------------------------------------


@FAST
@given(st.binary(max_size=300))
def test_any_apdu_parses_or_gets_a_status_word(data: bytes) -> None:
    try:
        apdu.parse_command(data)
    except apdu.ApduError as exc:
        assert len(exc.status) == 2 and str(exc)


class _ScriptedPcsc(PcscMifareLink):
    """A PC/SC link whose reader answers each APDU from a script (no pcscd)."""

    def __init__(self, answers: list[bytes]) -> None:
        self._answers = iter(answers)
        super().__init__(0, 0, 0, "scripted", multi_block=None)

    def transmit(self, command: bytes) -> bytes:
        answer = next(self._answers, b"\x90\x00")
        if len(answer) < 2:
            from protocol.mifare import CardRemoved
            raise CardRemoved("no answer")
        return answer


pcsc_answers = st.builds(
    lambda data, sw: data + sw, st.binary(max_size=60),
    st.sampled_from([b"\x90\x00", b"\x90\x00", b"\x63\x00", b"\x6a\x82"])
    | st.binary(min_size=2, max_size=2)) | st.binary(max_size=3)


PCSC_OPERATIONS = {
    "authenticate": lambda link: link.authenticate(4, KeyType.A, bytes(6)),
    "read_block": lambda link: link.read_block(4),
    "read_blocks": lambda link: link.read_blocks(4, 3),
    "write_block": lambda link: link.write_block(4, bytes(16)),
    "read_value": lambda link: link.read_value(8),
    "increment_into": lambda link: (link.increment(8, 5), link.transfer(9)),
}


@FAST
@given(pcsc_answers)
def test_pcsc_uid_answer_gives_a_link_or_a_reader_error(answer: bytes) -> None:
    try:
        link = _ScriptedPcsc([answer])
    except ReaderError:
        return
    assert len(link.uid()) in (4, 7, 10)


@FAST
@given(st.sampled_from(sorted(PCSC_OPERATIONS)), st.lists(pcsc_answers, min_size=1, max_size=4))
def test_pcsc_card_answers_give_data_or_a_reader_error(operation: str, answers: list[bytes]) -> None:
    link = _ScriptedPcsc([bytes.fromhex("11223344 9000"), *answers])
    try:
        PCSC_OPERATIONS[operation](link)
    except ReaderError:
        pass


# --- serial ID / QR readers --------------------------------------------------------


def _send(reader: serial_uid.SerialUidReader, data: bytes) -> list[serial_uid.UidRead]:
    """Write ``data`` down the loop in pieces the loop holds (4 KB), reading as it goes."""
    reads = []
    for i in range(0, len(data), 1024):
        reader._serial.write(data[i:i + 1024])
        while (got := reader.read(0)) is not None:
            reads.append(got)
        assert len(reader._buf) <= serial_uid.MAX_LINE
    return reads


@pytest.mark.parametrize("kind", ["em4100", "qr"])
@FAST
@given(chunks=st.lists(st.binary(max_size=3000), max_size=4))
def test_serial_reader_takes_any_bytes_and_stays_bounded(kind: str, chunks: list[bytes]) -> None:
    reader = serial_uid.SerialUidReader("loop://", kind)
    reader._serial = serial.serial_for_url("loop://", timeout=0)
    try:
        for chunk in chunks:
            for got in _send(reader, chunk):
                assert got.kind == kind
                assert len(got.value) <= serial_uid.MAX_LINE
    finally:
        reader.close()


def test_serial_reader_drops_an_endless_line_and_reads_the_next_one() -> None:
    reader = serial_uid.SerialUidReader("loop://", "em4100")
    reader._serial = serial.serial_for_url("loop://", timeout=0)
    try:
        assert _send(reader, b"7" * 100_000) == []  # no line end, ever
        assert _send(reader, b"\x02" + b"A" * 50_000) == []  # an STX frame with no ETX
        assert [r.value for r in _send(reader, b"\r\n0012345678\r\n")] == ["0012345678"]
    finally:
        reader.close()


@FAST
@given(st.text(max_size=40), st.binary(max_size=20))
def test_em4100_parsers_are_total(text: str, frame: bytes) -> None:
    hex_digits = set("0123456789ABCDEF")
    value = serial_uid.parse_em4100(text)
    assert value is None or (len(value) == 10 and set(value) <= hex_digits)
    value = serial_uid.parse_rdm6300(frame)
    assert value is None or (len(value) == 10 and set(value) <= hex_digits)
