"""UID-only readers on a serial line: EM4100 (125 kHz ID card) readers and QR/barcode scanners.

Both kinds send one read per line and know nothing of keys or blocks: the terminal looks
the identifier up (an ID card's number, a member QR code) instead of reading a purse
from the card. What arrives on the wire varies by model, so :func:`parse_em4100` takes
the common forms:

* ``0012345678`` or ``1A2B3C4D5E`` then CR/LF: the 10 decimal digits printed on the card,
  or the 10 hex digits of the 40-bit tag (what most USB-serial "ID readers" send);
* RDM6300-style frames ``02 <10 hex> <2 hex checksum> 03`` with no line end; the checksum
  (XOR of the five tag bytes) is checked, so line noise never becomes a member.

A scanner sends the code's text and CR or LF (or both). Reads are returned as
:class:`UidRead`; a garbled line raises nothing and is logged and dropped, since the
member simply scans again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import serial

from protocol.mifare import ReaderUnavailable

log = logging.getLogger(__name__)

STX, ETX = 0x02, 0x03
#: The longest line a reader may send (a member QR code is far shorter). A longer run of
#: bytes with no line end is line noise or an attack on memory: it is dropped up to the
#: next line end, so the buffer never holds more than this.
MAX_LINE = 4096
RDM6300_FRAME = 14
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class UidRead:
    kind: str  # "em4100" or "qr"
    value: str  # EM4100: 10 upper-case hex digits (or 10 decimal digits); QR: the text
    at: float  # time.perf_counter() when the line was complete


def parse_em4100(text: str) -> str | None:
    """The tag number in a line from an ID-card reader, or None if it is not one."""
    text = text.strip()
    if len(text) == 10 and set(text) <= _DIGITS:  # ASCII only: str.isdigit() takes "١"
        return text
    if len(text) == 10 and set(text) <= _HEX:
        return text.upper()
    return None


def parse_rdm6300(frame: bytes) -> str | None:
    """``02 + 10 hex + 2 hex checksum + 03`` → the 10 hex digits, or None if damaged."""
    if len(frame) != 14 or frame[0] != STX or frame[-1] != ETX:
        return None
    body, check_hex = frame[1:11].decode("latin-1"), frame[11:13].decode("latin-1")
    if not set(body) <= _HEX or not set(check_hex) <= _HEX:
        return None  # fromhex() and int() would also take spaces and signs
    tag, check = bytes.fromhex(body), int(check_hex, 16)
    x = 0
    for b in tag:
        x ^= b
    return body.upper() if x == check else None


class SerialUidReader:
    """Reads whole lines (or STX/ETX frames) from one serial reader."""

    def __init__(self, port: str, kind: str, *, baudrate: int = 9600) -> None:
        if kind not in ("em4100", "qr"):
            raise ValueError("kind is 'em4100' or 'qr'")
        self.port_name = port
        self.kind = kind
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None
        self._buf = bytearray()
        self._skipping = False  # dropping an over-long line up to its end

    def open(self) -> SerialUidReader:
        try:
            self._serial = serial.Serial(self.port_name, self.baudrate, timeout=0.05)
        except (serial.SerialException, OSError) as exc:
            raise ReaderUnavailable(f"cannot open {self.port_name}: {exc}") from exc
        return self

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def __enter__(self) -> SerialUidReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, timeout: float) -> UidRead | None:
        """The next complete read within ``timeout`` s, or None."""
        if self._serial is None:
            raise ReaderUnavailable("the reader's port is closed")
        deadline = time.monotonic() + timeout
        while True:
            got = self._take()
            if got is not None:
                return got
            try:
                if time.monotonic() >= deadline and not self._serial.in_waiting:
                    return None  # what has arrived is read first, even at timeout 0
                data = self._serial.read(max(1, self._serial.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise ReaderUnavailable(f"reading {self.port_name}: {exc}") from exc
            self._buf += data

    def _take(self) -> UidRead | None:
        while True:
            buf = self._buf
            if self._skipping:
                cuts = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
                if not cuts:
                    buf.clear()
                    return None
                del buf[:min(cuts) + 1]
                self._skipping = False
                continue
            if self.kind == "em4100" and buf[:1] == bytes([STX]):
                end = buf.find(bytes([ETX]), 0, RDM6300_FRAME)
                if end < 0:
                    if len(buf) < RDM6300_FRAME:
                        return None
                    log.info("dropped an ID-reader frame with no end (%d bytes)", len(buf))
                    del buf[:1]  # resynchronise after the false STX
                    continue
                frame, self._buf = bytes(buf[:end + 1]), buf[end + 1:]
                value = parse_rdm6300(frame)
                if value is not None:
                    return UidRead(self.kind, value, time.perf_counter())
                log.info("dropped a damaged ID-reader frame %r", frame)
                continue
            cuts = [i for i in (buf.find(b"\r", 0, MAX_LINE + 1), buf.find(b"\n", 0, MAX_LINE + 1))
                    if i >= 0]
            if not cuts:
                if len(buf) > MAX_LINE:
                    log.info("dropped a line longer than %d bytes", MAX_LINE)
                    buf.clear()
                    self._skipping = True
                return None
            cut = min(cuts)
            line, self._buf = bytes(buf[:cut]), buf[cut + 1:]
            text = line.decode("utf-8", errors="replace").strip("\x00\r\n ")
            if not text:
                continue  # the LF of a CR LF pair, or an empty line
            if self.kind == "qr":
                return UidRead("qr", text, time.perf_counter())
            value = parse_em4100(text)
            if value is not None:
                return UidRead("em4100", value, time.perf_counter())
            log.info("dropped a line that is no EM4100 number: %r", text)
