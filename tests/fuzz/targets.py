"""The fuzz targets: one function per parser that meets bytes from outside.

Each target takes the fuzzer's bytes, calls the parser, and lets through only the
refusal the parser documents (``Target.refusals``); any other exception is a crash. Where
a format has one encoding, what decodes must encode back to the same bytes; where it
has several (JSON), what decodes must decode again to the same value. The targets are
plain functions so that a finding replays in an ordinary test without atheris
(tests/fuzz/test_findings.py, where findings go) and the corpus is replayed in-process by
tests/fuzz/test_fuzz.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocol import card_format, ioboard_frames, pcsc_apdu, pn532_frames
from protocol.fleet import Command as FleetCommand
from protocol.fleet import (
    CommandResult,
    ConfigReport,
    TimeSample,
    UidAuthRequest,
    UidAuthResponse,
)
from protocol.messages import MessageError, load_object
from protocol.record import RecordRejected, decode_wire, encode_body
from protocol.terminal_config import ConfigError, parse_config
from protocol.topics import Ack, Birth, Death, DenylistDelta, DenylistSnapshot, Heartbeat
from terminal_fw.readers.serial_uid import SerialUidReader

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class Target:
    """A parser under fuzzing: what it runs and which refusals it may raise."""

    name: str
    run: Callable[[bytes], None]
    refusals: tuple[type[BaseException], ...]

    def __call__(self, data: bytes) -> None:
        """Feed one input; a documented refusal is a correct answer, anything else escapes."""
        try:
            self.run(data)
        except self.refusals:
            pass


# --- transaction records -------------------------------------------------------------


def _record(data: bytes) -> None:
    signed = decode_wire(data)
    assert signed.wire == data, "the wire form is body + signature, unchanged"
    assert encode_body(signed.record) == signed.body, "a decoded record re-encodes to its bytes"


# --- JSON messages -------------------------------------------------------------------

#: Every message class with a ``from_json``; the first input byte picks one.
MESSAGE_CLASSES: tuple[type, ...] = (
    Ack, Birth, Death, Heartbeat, DenylistSnapshot, DenylistDelta,
    ConfigReport, UidAuthRequest, UidAuthResponse, FleetCommand, CommandResult, TimeSample,
)


def _messages(data: bytes) -> None:
    if not data:
        return
    cls, payload = MESSAGE_CLASSES[data[0] % len(MESSAGE_CLASSES)], data[1:]
    try:
        obj = load_object(payload, "fuzz")
    except MessageError:
        obj = None
    if obj is not None:
        assert isinstance(obj, dict)
        json.dumps(obj)  # what load_object accepts, the standard encoder can write
    message = cls.from_json(payload)  # type: ignore[attr-defined]
    again = cls.from_json(message.to_json())  # type: ignore[attr-defined]
    assert again == message, f"{cls.__name__} does not survive to_json/from_json"


# --- card images ---------------------------------------------------------------------


def _card_image(data: bytes) -> None:
    from tests.card_world import CATALOGUE, KEYS  # the fuzz chain's keys and catalogue

    for at in range(0, len(data) - 15, 16):
        block = data[at:at + 16]
        decoded = card_format.decode_value_block(block)
        if decoded is not None:
            assert card_format.encode_value_block(*decoded) == block
    read = card_format.read_image(data, KEYS, CATALOGUE)
    again = card_format.encode_application(read.state, read.uid, KEYS, CATALOGUE)
    for b in card_format.HEADER_BLOCKS:
        assert again[b] == read.header[b], f"header block {b} does not re-encode"
    for b in card_format.COPY_BLOCKS[read.newest_slot]:
        assert again[b] == data[b * 16:b * 16 + 16], f"state block {b} does not re-encode"


# --- PN532 frames --------------------------------------------------------------------


def _pn532(data: bytes) -> None:
    whole = pn532_frames.FrameParser()
    events = whole.feed(data)
    assert whole.pending() <= pn532_frames.MAX_PENDING
    # the same bytes in pieces (sizes from the input itself) give the same events
    pieces, split, at = pn532_frames.FrameParser(), [], 0
    step = (data[0] % 7) + 1 if data else 1
    while at < len(data):
        split += pieces.feed(data[at:at + step])
        at += step
    assert split == events, "events depend on how the bytes were split"
    for event in events:
        if isinstance(event, pn532_frames.Frame) and len(event.data) < 0xFFFF:
            again = pn532_frames.FrameParser().feed(pn532_frames.build_frame(event.tfi, event.data))
            assert again == [event], "a frame does not survive build_frame"


# --- PC/SC APDUs ---------------------------------------------------------------------


def _reencode(command: pcsc_apdu.Command) -> bytes | None:
    """The canonical APDU for ``command``, or None when the builder refuses its values."""
    p = pcsc_apdu
    try:
        match command:
            case p.GetUid():
                return p.get_uid()
            case p.LoadKey(slot, key):
                return p.load_key(slot, key)
            case p.Authenticate(block, key_type, slot):
                return p.authenticate(block, key_type, slot)
            case p.ReadBinary(block, length):
                return p.read_binary(block, length)
            case p.UpdateBinary(block, data):
                return p.update_binary(block, data)
            case p.ValueOperation(block, op, amount):
                return p.value_operation(block, op, amount)
            case p.RestoreValue(source, target):
                return p.restore_value(source, target)
            case p.ReadValue(block):
                return p.read_value(block)
    except ValueError:
        return None  # a value the reader accepts but the terminal never sends
    return None  # GetAts: the terminal has no builder for it


def _pcsc(data: bytes) -> None:
    try:
        body, status = pcsc_apdu.split_response(data)
        assert body + status == data
        if status == pcsc_apdu.SW_OK and len(body) == 4:
            assert pcsc_apdu.encode_value(pcsc_apdu.decode_value(body)) == body
    except pcsc_apdu.ApduError:
        pass
    command = pcsc_apdu.parse_command(data)
    canonical = _reencode(command)
    if canonical is not None:
        assert pcsc_apdu.parse_command(canonical) == command, "a command does not re-encode"


# --- serial UID readers --------------------------------------------------------------


def _serial_uid(data: bytes) -> None:
    kind = "qr" if data[:1] and data[0] & 1 else "em4100"
    reader = SerialUidReader("fuzz", kind)  # never opened: bytes go straight into its buffer
    step = (data[1] % 13) + 1 if len(data) > 1 else 1
    for at in range(2, max(len(data), 2), step):
        reader._buf += data[at:at + step]
        while (read := reader._take()) is not None:
            assert read.kind == kind
            if kind == "em4100":
                assert len(read.value) == 10 and read.value == read.value.upper()
                assert set(read.value) <= set("0123456789ABCDEF")
            else:
                assert read.value and read.value == read.value.strip("\x00\r\n ")
        assert len(reader._buf) <= 2 * 4096 + step, "the line buffer grows without bound"


# --- gate I/O board ------------------------------------------------------------------

_PAYLOADS = (
    (ioboard_frames.parse_open, lambda v: ioboard_frames.open_payload(*v), ioboard_frames.REF_LEN + 2),
    (ioboard_frames.parse_passage, lambda v: ioboard_frames.passage_payload(*v),
     ioboard_frames.REF_LEN + 5),
    (ioboard_frames.parse_hello, lambda v: ioboard_frames.hello_payload(*v), 5),
    (ioboard_frames.parse_state, lambda v: ioboard_frames.state_payload(*v),
     8 + ioboard_frames.REF_LEN),
)


def _ioboard(data: bytes) -> None:
    reader = ioboard_frames.FrameReader()
    for seq, kind, payload in reader.feed(data):
        assert ioboard_frames.encode_frame(seq, kind, payload)  # whatever was read can be sent
    for parse, build, size in _PAYLOADS:
        try:
            values = parse(data)
        except ioboard_frames.FrameError:
            continue
        assert build(values) == data[:size], f"{parse.__name__} does not re-encode"
    stuffed = data.split(b"\x00", 1)[0]
    seq, kind, payload = ioboard_frames.decode_frame(stuffed)
    assert ioboard_frames.encode_frame(seq, kind, payload) == stuffed + b"\x00", \
        "a frame decodes from bytes its encoder never writes"


# --- config documents ----------------------------------------------------------------


def _config(data: bytes) -> None:
    config = parse_config(data)
    again = parse_config(json.dumps(config.document).encode())
    assert again == config, "a config does not survive its own document"


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("record", _record, (RecordRejected,)),
    Target("messages", _messages, (MessageError,)),
    Target("card_image", _card_image, (card_format.CardFormatError,)),
    Target("pn532", _pn532, ()),
    Target("pcsc_apdu", _pcsc, (pcsc_apdu.ApduError,)),
    Target("serial_uid", _serial_uid, ()),
    Target("ioboard", _ioboard, (ioboard_frames.FrameError,)),
    Target("config", _config, (ConfigError,)),
)}


def _canary(data: bytes) -> None:
    """A planted bug: proves that the harness reports a crash and replays it."""
    assert not data.startswith(b"!"), "the canary's planted bug"


#: Not a parser: run only by tests/fuzz/test_fuzz.py to check that a finding is caught.
CANARY = Target("canary", _canary, ())


def corpus_inputs(name: str) -> list[tuple[Path, bytes]]:
    """The seed corpus kept in the repository for one target."""
    return [(p, p.read_bytes()) for p in sorted((CORPUS / name).iterdir()) if p.is_file()]
