"""The two MIFARE reader paths behind one face, for tests and the tap bench.

``PcscPath``: pyscard → pcscd → vpcd → :class:`simulators.vpcd_reader.VpcdReader` → chip.
``Pn532Path``: pyserial → pty → :class:`simulators.pn532_emulator.Pn532Emulator` → chip.
Each has a card field (put a card down, take it away, tear a write) and ``tap()``, which
waits for the terminal driver to see the card and returns its link.
"""

from __future__ import annotations

from typing import Any

from protocol.mifare import MifareClassicLink
from simulators.card_field import CardField


class PcscPath:
    name = "pcsc"

    def __init__(self, vreader: Any) -> None:
        from terminal_fw.readers.pcsc import PcscReaders

        self.vreader = vreader
        self.field: CardField = vreader.field
        self.readers = PcscReaders([vreader.name])
        self._link: Any = None
        self.last_event_at = 0.0

    def tap(self, card: Any, timeout: float = 5.0) -> MifareClassicLink:
        self.field.place(card)
        event = self.readers.wait_for_card(timeout, reader=self.vreader.name)
        assert event is not None, f"pcscd never saw the card on {self.vreader.name}"
        self.last_event_at = event.at
        self._link = self.readers.connect(self.vreader.name)
        return self._link

    def take_away(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        self.field.remove()
        assert self.readers.wait_for_removal(self.vreader.name, 5.0)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self.readers.close()


class Pn532Path:
    name = "pn532"

    def __init__(self, emulator: Any) -> None:
        from terminal_fw.readers.pn532 import Pn532

        self.emulator = emulator
        self.field: CardField = emulator.field
        self.chip = Pn532(emulator.link_path).open()
        self.last_event_at = 0.0

    def tap(self, card: Any, timeout: float = 5.0) -> MifareClassicLink:
        import time

        self.field.place(card)
        link = self.chip.wait_for_card(timeout)
        assert link is not None, "the PN532 never saw the card"
        self.last_event_at = time.perf_counter()
        return link

    def take_away(self) -> None:
        self.field.remove()
        assert self.chip.wait_for_removal(5.0)

    def close(self) -> None:
        self.chip.close()
