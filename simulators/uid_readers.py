"""Serial ID-card readers and QR/barcode scanners on ptys.

Each emulator opens a pseudo-terminal and keeps its slave side open (so a host closing
and reopening the port does no harm); ``path`` is what the terminal opens. A read is
one line (or, for RDM6300-style ID readers, one STX/ETX frame), written in one go as
the real devices send it.
"""

from __future__ import annotations

import os
import tty


class _PtyDevice:
    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)

    @property
    def path(self) -> str:
        return os.ttyname(self._slave)

    def send(self, data: bytes) -> None:
        os.write(self._master, data)

    def close(self) -> None:
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Em4100ReaderEmulator(_PtyDevice):
    """A 125 kHz ID-card reader: ``framing`` is ``"line"`` (10 hex + CR LF) or ``"rdm6300"``."""

    def __init__(self, framing: str = "line") -> None:
        if framing not in ("line", "rdm6300", "decimal"):
            raise ValueError("framing is 'line', 'decimal' or 'rdm6300'")
        super().__init__()
        self.framing = framing

    def present_tag(self, tag: int) -> None:
        """A member holds ID card ``tag`` (40-bit number) to the reader."""
        if not 0 <= tag < 2**40:
            raise ValueError("an EM4100 tag number has 40 bits")
        if self.framing == "decimal":
            self.send(f"{tag & 0xFFFFFFFF:010d}\r\n".encode())
            return
        body = f"{tag:010X}"
        if self.framing == "line":
            self.send(body.encode() + b"\r\n")
            return
        check = 0
        for b in tag.to_bytes(5, "big"):
            check ^= b
        self.send(b"\x02" + body.encode() + f"{check:02X}".encode() + b"\x03")


class QrScannerEmulator(_PtyDevice):
    """A QR/barcode scanner in serial mode: the code's text then ``suffix``."""

    def __init__(self, suffix: bytes = b"\r") -> None:
        super().__init__()
        self.suffix = suffix

    def scan(self, text: str) -> None:
        self.send(text.encode("utf-8") + self.suffix)
