"""PN532 host-interface frames (HSU/UART), shared by the terminal driver and the emulator.

Normal frame: ``00 00 FF LEN LCS TFI PD0..PDn DCS 00``; LEN counts TFI and data, LEN+LCS
and TFI+data+DCS are both 0 mod 256. Frames longer than 254 bytes use the extended form
``00 00 FF FF FF LENM LENL LCS ...``. ``00 00 FF 00 FF 00`` is an ACK, ``00 00 FF FF 00 00``
a NACK (resend your last frame), and a frame with TFI ``7F`` is the chip's syntax-error
frame. Bytes before the ``00 FF`` start code (the ``55 55 00 ..`` wake-up, line noise)
are skipped, as the chip does.

We wrote this ourselves: the one maintained PN532 library (Adafruit's CircuitPython
driver) imports Blinka's ``digitalio`` and busy-waits on the port, and nfcpy has no
MIFARE Classic. The parser is incremental and pure, so both ends and the tests feed it
whatever bytes arrived.
"""

from __future__ import annotations

from dataclasses import dataclass

PREAMBLE = b"\x00"
START_CODE = b"\x00\xff"
POSTAMBLE = b"\x00"
ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
WAKEUP = b"\x55\x55" + bytes(14)

TFI_HOST = 0xD4
TFI_PN532 = 0xD5
TFI_ERROR = 0x7F

# Commands (host → PN532); the answer code is the command + 1.
DIAGNOSE = 0x00
GET_FIRMWARE_VERSION = 0x02
GET_GENERAL_STATUS = 0x04
READ_REGISTER = 0x06
WRITE_REGISTER = 0x08
SET_PARAMETERS = 0x12
SAM_CONFIGURATION = 0x14
POWER_DOWN = 0x16
RF_CONFIGURATION = 0x32
IN_DATA_EXCHANGE = 0x40
IN_COMMUNICATE_THRU = 0x42
IN_DESELECT = 0x44
IN_LIST_PASSIVE_TARGET = 0x4A
IN_RELEASE = 0x52
IN_AUTO_POLL = 0x60

# MIFARE Classic commands carried by InDataExchange.
MIFARE_AUTH_A = 0x60
MIFARE_AUTH_B = 0x61
MIFARE_READ = 0x30
MIFARE_WRITE = 0xA0
MIFARE_DECREMENT = 0xC0
MIFARE_INCREMENT = 0xC1
MIFARE_RESTORE = 0xC2
MIFARE_TRANSFER = 0xB0

# InDataExchange / InCommunicateThru status byte (low 6 bits).
STATUS_OK = 0x00
STATUS_TIMEOUT = 0x01  # the target did not answer: on a real chip, usually the card left
STATUS_CRC_ERROR = 0x02
STATUS_RF_PROTOCOL_ERROR = 0x0B  # what our emulator answers for a MIFARE NAK (access bits)
STATUS_INVALID_PARAMETER = 0x10
STATUS_MIFARE_AUTH_ERROR = 0x14
STATUS_WRONG_CONTEXT = 0x27  # e.g. InDataExchange with no target listed
STATUS_TARGET_RELEASED = 0x29
STATUS_CARD_DISAPPEARED = 0x2B

MAX_NORMAL_LEN = 0xFF - 1  # LEN 0xFF is reserved for NACK/extended


class FrameError(ValueError):
    """Bytes that cannot be framed (too long, bad data)."""


@dataclass(frozen=True)
class AckFrame:
    pass


@dataclass(frozen=True)
class Nack:
    pass


@dataclass(frozen=True)
class ErrorFrame:
    """The chip's application-level error frame (TFI 7F)."""


@dataclass(frozen=True)
class Frame:
    tfi: int
    data: bytes  # PD0..PDn: command or response code first

    @property
    def code(self) -> int:
        return self.data[0] if self.data else -1


@dataclass(frozen=True)
class BadChecksum:
    """A frame whose DCS did not match; the receiver should ask again (NACK)."""


Event = AckFrame | Nack | ErrorFrame | Frame | BadChecksum


def build_frame(tfi: int, data: bytes) -> bytes:
    """One information frame, extended automatically when TFI + data exceed 254 bytes."""
    body = bytes([tfi]) + data
    if len(body) > 0xFFFF:
        raise FrameError("frame longer than 65535 bytes")
    dcs = (-sum(body)) & 0xFF
    if len(body) <= MAX_NORMAL_LEN:
        length = len(body)
        head = PREAMBLE + START_CODE + bytes([length, (-length) & 0xFF])
    else:
        hi, lo = len(body) >> 8, len(body) & 0xFF
        head = PREAMBLE + START_CODE + b"\xff\xff" + bytes([hi, lo, (-(hi + lo)) & 0xFF])
    return head + body + bytes([dcs]) + POSTAMBLE


def host_command(code: int, params: bytes = b"") -> bytes:
    return build_frame(TFI_HOST, bytes([code]) + params)


def chip_response(command_code: int, params: bytes = b"") -> bytes:
    return build_frame(TFI_PN532, bytes([command_code + 1]) + params)


#: The most bytes a parser ever holds: one extended frame (7-byte head, 65535-byte body,
#: DCS). Whatever arrives, :meth:`FrameParser.pending` never exceeds it.
MAX_PENDING = 7 + 0xFFFF + 1


class FrameParser:
    """Incremental parser: feed bytes, get complete events in order.

    Total over any bytes: junk, false start codes and broken length checksums are
    skipped, a bad data checksum becomes :class:`BadChecksum`, and the buffer holds at
    most :data:`MAX_PENDING` bytes. Scanning is linear in the bytes fed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def pending(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        pos = 0
        while True:
            event, pos = self._next(pos)
            if event is None:
                break
            events.append(event)
        del self._buf[:pos]
        return events

    def _next(self, pos: int) -> tuple[Event | None, int]:
        """The next event at or after ``pos`` and where parsing goes on; (None, where the
        unparsed rest starts) when the buffer holds no complete event."""
        buf = self._buf
        while True:
            start = buf.find(START_CODE, pos)
            if start < 0:
                # keep a trailing 00 in case it begins a start code
                keep = 1 if buf.endswith(b"\x00") else 0
                return None, max(pos, len(buf) - keep)
            pos = start
            if len(buf) - pos < 4:
                return None, pos
            length, lcs = buf[pos + 2], buf[pos + 3]
            if length == 0x00 and lcs == 0xFF:
                return AckFrame(), pos + 4
            if length == 0xFF and lcs == 0x00:
                return Nack(), pos + 4
            if length == 0xFF and lcs == 0xFF:
                if len(buf) - pos < 7:
                    return None, pos
                hi, lo, xlcs = buf[pos + 4], buf[pos + 5], buf[pos + 6]
                if (hi + lo + xlcs) & 0xFF:
                    pos += 2  # not a real start code: look further
                    continue
                size, header = hi << 8 | lo, 7
            else:
                if (length + lcs) & 0xFF:
                    pos += 2
                    continue
                size, header = length, 4
            if size == 0:
                pos += header
                continue
            end = pos + header + size
            if len(buf) < end + 1:
                return None, pos
            body = bytes(buf[pos + header:end])
            dcs = buf[end]
            if (sum(body) + dcs) & 0xFF:
                return BadChecksum(), end + 1
            if body[0] == TFI_ERROR:
                return ErrorFrame(), end + 1
            return Frame(body[0], body[1:]), end + 1
