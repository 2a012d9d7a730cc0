"""The reader loops: PC/SC readers, PN532 boards and serial UID readers feed the role.

Each loop runs on a thread of the terminal. A card arriving on a PC/SC reader becomes a
link handed to ``role.on_card(link, direction)``; the link is closed afterwards unless
the role held the card for a UI (:meth:`terminal_fw.runtime.terminal.Runtime.hold`),
in which case the card's leaving the reader ends that session. A credential read on a
serial reader goes to ``role.on_uid(kind, value)``.

A PN532 has no reader daemon watching its field: its loop waits for a card, offers it to
the role like a PC/SC card, then watches for the card leaving, except while a UI holds
the card (the UI alone talks to the chip then; its next card operation fails if the card
has left).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from protocol.mifare import ReaderError

if TYPE_CHECKING:
    from terminal_fw.runtime.terminal import Runtime

log = logging.getLogger(__name__)


class ReaderLoops:
    """The reader threads of one terminal."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def start(self) -> None:
        s = self.rt.settings
        names = [n for n in (s.pcsc_entry, s.pcsc_exit) if n]
        if names:
            self.rt.spawn(lambda: self._pcsc_loop(names), "pcsc")
        for direction, port in (("entry", s.pn532_entry), ("exit", s.pn532_exit)):
            if port:
                self.rt.spawn(lambda p=port, d=direction: self._pn532_loop(p, d),
                              f"pn532-{direction}")
        for spec in s.uid_readers:
            self.rt.spawn(lambda spec=spec: self._serial_loop(spec), f"uid-{spec.get('port')}")

    def direction_of(self, reader: str) -> str:
        s = self.rt.settings
        if s.pcsc_exit and (reader == s.pcsc_exit or reader.startswith(s.pcsc_exit)):
            return "exit"
        return "entry"

    def _pcsc_loop(self, names: list[str]) -> None:
        from terminal_fw.readers.pcsc import PcscReaders

        rt = self.rt
        readers = PcscReaders(names)
        stop = rt.stopping
        while not stop.is_set():
            try:
                present = readers.readers()
                for n in names:
                    rt.readers[f"pcsc:{self.direction_of(n)}"] = (
                        "ok" if any(r == n or r.startswith(n) for r in present) else "absent")
                events = readers.wait(0.5)
            except ReaderError as exc:
                for n in names:
                    rt.readers[f"pcsc:{self.direction_of(n)}"] = "error"
                log.warning("PC/SC: %s", exc)
                stop.wait(1.0)
                continue
            for event in events:
                if not event.present:
                    rt.sessions.card_left(event.reader)  # a UI holding it hears so
                    continue
                if stop.is_set():
                    continue
                try:
                    link = readers.connect(event.reader)
                except ReaderError as exc:
                    log.info("card on %s left before we could talk to it: %s", event.reader, exc)
                    continue
                with rt.sessions.offered(link, event.reader):  # closed after, unless held
                    try:
                        rt.role.on_card(link, self.direction_of(event.reader))
                    except ReaderError as exc:
                        rt.emit("refused", reason=f"reader error: {exc}", reader=event.reader)
                    except Exception:
                        log.exception("tap on %s failed", event.reader)
        readers.close()

    def _pn532_loop(self, port: str, direction: str) -> None:
        from terminal_fw.readers.pn532 import Pn532

        rt = self.rt
        name, reader = f"pn532:{direction}", f"pn532:{port}"
        stop = rt.stopping
        chip = Pn532(port)
        while not stop.is_set():
            try:
                chip.open()
                rt.readers[name] = "ok"
                while not stop.is_set():
                    link = chip.wait_for_card(0.5)
                    if link is None:
                        continue
                    link = _ClosableLink(link)
                    with rt.sessions.offered(link, reader):
                        try:
                            rt.role.on_card(link, direction)
                        except ReaderError as exc:
                            rt.emit("refused", reason=f"reader error: {exc}", reader=reader)
                        except Exception:
                            log.exception("tap on %s failed", reader)
                    while not stop.is_set() and rt.sessions.held(reader) is not None:
                        stop.wait(0.2)  # a UI holds the card: it alone talks to the chip
                    while not stop.is_set() and not chip.wait_for_removal(0.5):
                        pass
                    rt.sessions.card_left(reader)
            except ReaderError as exc:
                rt.readers[name] = "absent"
                log.warning("%s (%s): %s", name, port, exc)
                chip.close()
                stop.wait(2.0)
        chip.close()

    def _serial_loop(self, spec: dict[str, Any]) -> None:
        from terminal_fw.readers.serial_uid import SerialUidReader

        rt = self.rt
        port, kind = spec["port"], spec.get("kind", "qr")
        name = f"{kind}:{port}"
        stop = rt.stopping
        while not stop.is_set():
            reader = SerialUidReader(port, kind, baudrate=int(spec.get("baudrate", 9600)))
            try:
                reader.open()
                rt.readers[name] = "ok"
                while not stop.is_set():
                    read = reader.read(0.5)
                    if read is not None:
                        try:
                            rt.role.on_uid(read.kind, read.value)
                        except Exception:
                            log.exception("UID read on %s failed", port)
            except ReaderError as exc:
                rt.readers[name] = "absent"
                log.warning("%s: %s", name, exc)
                stop.wait(2.0)
            finally:
                reader.close()


class _ClosableLink:
    """A PN532 card link as the session bookkeeping closes it: closing releases the card
    (InRelease) so the next tap starts clean."""

    def __init__(self, link: Any) -> None:
        self._link = link

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)

    def close(self) -> None:
        try:
            self._link.chip.release()
        except ReaderError:
            pass  # the card or the reader is gone: nothing to release
