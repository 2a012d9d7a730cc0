"""A receipt printer on a pty that turns the ESC/POS bytes it receives back into text.

Tests and the demo read what a member would find on the paper: :attr:`receipts` holds one
list of lines per cut. The decoder knows what our terminal and common tools send:
ESC @ (init), ESC ! / GS ! (print mode and size), ESC E (bold), ESC a (alignment),
ESC t (code page), ESC d (feed n lines), FS & / FS . (Chinese GB18030 mode on/off),
GS ( k (QR code: shown as ``[QR <data>]``), GS k (barcode: ``[BARCODE <data>]``),
GS V (cut). Unknown ESC/GS sequences are skipped by their usual length, and counted in
:attr:`unknown` so a test can notice bytes it did not expect.
"""

from __future__ import annotations

import os
import select
import threading
import tty


class EscPosDecoder:
    """Pure decoder: feed bytes, read ``receipts`` (finished) and ``current`` lines."""

    def __init__(self) -> None:
        self.receipts: list[list[str]] = []
        self.current: list[str] = []
        self.unknown = 0
        self._buf = bytearray()
        self._line = bytearray()
        self._chinese = False
        self._qr_data = b""
        self._pending_text = ""

    def feed(self, data: bytes) -> None:
        self._buf += data
        while self._step():
            pass

    def _text(self) -> str:
        raw = bytes(self._line)
        self._line.clear()
        return raw.decode("gb18030" if self._chinese else "cp437", errors="replace")

    def _flush_mode(self) -> None:
        # a mode switch in the middle of a line: keep what was decoded so far
        self._pending_text += self._text()

    def _step(self) -> bool:
        b = self._buf
        if not b:
            return False
        c = b[0]
        need = {0x1B: 2, 0x1D: 2, 0x1C: 2}.get(c, 1)
        if len(b) < need:
            return False
        if c == 0x0A:
            self.current.append(self._pending_text + self._text())
            self._pending_text = ""
            del b[:1]
            return True
        if c == 0x1C:  # FS
            if b[1] in (0x26, 0x2E):
                self._flush_mode()
                self._chinese = b[1] == 0x26
                del b[:2]
                return True
            self.unknown += 1
            del b[:2]
            return True
        if c == 0x1B:  # ESC
            cmd = b[1]
            if cmd == 0x40:  # init
                self._chinese = False
                del b[:2]
                return True
            if cmd in (0x21, 0x45, 0x61, 0x74, 0x2D, 0x47, 0x4D, 0x7B):
                if len(b) < 3:
                    return False
                del b[:3]
                return True
            if cmd == 0x64:  # feed n lines
                if len(b) < 3:
                    return False
                del b[:3]  # feeding paper adds no text
                return True
            self.unknown += 1
            del b[:2]
            return True
        if c == 0x1D:  # GS
            cmd = b[1]
            if cmd == 0x21:
                if len(b) < 3:
                    return False
                del b[:3]
                return True
            if cmd == 0x56:  # cut: GS V m, or GS V m n for m >= 65
                if len(b) < 3:
                    return False
                size = 4 if b[2] >= 65 else 3
                if len(b) < size:
                    return False
                del b[:size]
                if self._line or self._pending_text:
                    self.current.append(self._pending_text + self._text())
                    self._pending_text = ""
                self.receipts.append(self.current)
                self.current = []
                return True
            if cmd == 0x28 and len(b) >= 3 and b[2] == 0x6B:  # GS ( k pL pH cn fn ...
                if len(b) < 5:
                    return False
                size = b[3] | b[4] << 8
                if len(b) < 5 + size:
                    return False
                body = bytes(b[5:5 + size])
                del b[:5 + size]
                if body[:2] == b"1P":
                    self._qr_data = body[3:]
                elif body[:2] == b"1Q" and self._qr_data:
                    self.current.append(f"[QR {self._qr_data.decode('utf-8', 'replace')}]")
                    self._qr_data = b""
                return True
            if cmd == 0x6B:  # GS k m d1..dk NUL  or  GS k m n d1..dn (m >= 65)
                if len(b) < 4:
                    return False
                m = b[2]
                if m >= 65:
                    n = b[3]
                    if len(b) < 4 + n:
                        return False
                    data = bytes(b[4:4 + n])
                    del b[:4 + n]
                else:
                    end = b.find(b"\x00", 3)
                    if end < 0:
                        return False
                    data = bytes(b[3:end])
                    del b[:end + 1]
                self.current.append(f"[BARCODE {data.decode('ascii', 'replace')}]")
                return True
            if cmd in (0x48, 0x66, 0x68, 0x77, 0x42, 0x4C, 0x57):
                if len(b) < 3:
                    return False
                del b[:3]
                return True
            self.unknown += 1
            del b[:2]
            return True
        if c < 0x20 and c not in (0x09,):
            del b[:1]  # other control bytes (CR, DLE ...) print nothing
            return True
        self._line.append(c)
        del b[:1]
        return True


class EscPosPrinterEmulator:
    """A printer on a pty; ``path`` is the serial port to print to."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        self.decoder = EscPosDecoder()
        self._lock = threading.Lock()
        self._cut = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="escpos-printer", daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        return os.ttyname(self._slave)

    @property
    def receipts(self) -> list[list[str]]:
        with self._lock:
            return [list(r) for r in self.decoder.receipts]

    def wait_for_receipts(self, count: int, timeout: float = 5.0) -> list[list[str]]:
        with self._lock:
            self._cut.wait_for(lambda: len(self.decoder.receipts) >= count, timeout)
            return [list(r) for r in self.decoder.receipts]

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master], [], [], 0.1)
            if not readable:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                continue
            with self._lock:
                self.decoder.feed(data)
                self._cut.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> EscPosPrinterEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
