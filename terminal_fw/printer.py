"""Receipt printing on an ESC/POS thermal printer over a serial line (python-escpos).

Most counter and kiosk printers in China (Xprinter, GP, Sunmi's built-ins) speak ESC/POS
and print Chinese in GB18030 once switched to Chinese mode (``FS &``); python-escpos's
own encoder knows only single-byte code pages, so lines with non-ASCII characters are sent
in Chinese mode as GB18030 and ASCII lines go through python-escpos as usual.

A receipt is plain data (:class:`Receipt`): the kiosk and the handheld build it from the
signed record; this module only puts it on paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from escpos.printer import Serial

from protocol.money import format_fen

FS_CHINESE_ON = b"\x1c&"
FS_CHINESE_OFF = b"\x1c."


@dataclass(frozen=True)
class Receipt:
    title: str
    lines: tuple[tuple[str, str], ...] = ()  # (label, value) pairs, e.g. ("余额 Balance", "¥12.50")
    footer: str = ""
    qr: str = ""  # e.g. the record id, for the member to check later
    amounts_fen: dict[str, int] = field(default_factory=dict)  # printed as money lines


class ReceiptPrinter:
    """One ESC/POS printer on ``port`` (e.g. ``/dev/ttyUSB0``, ``/dev/serial0``)."""

    def __init__(self, port: str, *, baudrate: int = 9600, width: int = 32) -> None:
        self.width = width
        self._printer = Serial(devfile=port, baudrate=baudrate, timeout=1, dsrdtr=False)

    def _line(self, text: str) -> None:
        if text.isascii():
            self._printer.text(text + "\n")
        else:
            self._printer._raw(FS_CHINESE_ON + (text + "\n").encode("gb18030") + FS_CHINESE_OFF)

    def _columns(self, left: str, right: str) -> str:
        # CJK characters take two columns on the paper
        def cols(s: str) -> int:
            return sum(2 if ord(c) > 0x2E7F else 1 for c in s)

        gap = max(1, self.width - cols(left) - cols(right))
        return left + " " * gap + right

    def print_receipt(self, receipt: Receipt) -> None:
        p = self._printer
        p.hw("INIT")
        p.set(align="center", bold=True, double_height=True, double_width=True)
        self._line(receipt.title)
        p.set(align="left", bold=False, normal_textsize=True)
        self._line("-" * self.width)
        for label, value in receipt.lines:
            self._line(self._columns(label, value))
        for label, fen in receipt.amounts_fen.items():
            self._line(self._columns(label, format_fen(fen)))
        if receipt.footer:
            self._line("-" * self.width)
            self._line(receipt.footer)
        if receipt.qr:
            p.set(align="center")
            p.qr(receipt.qr, native=True, size=4)
        p.cut()

    def close(self) -> None:
        self._printer.close()

    def __enter__(self) -> ReceiptPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
