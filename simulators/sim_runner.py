"""Run one simulated reader with a card from a dump until interrupted (``onecard sim ...``).

``run_pcsc`` serves the card through vpcd, so any PC/SC client (pcsc_scan, pyscard,
libnfc's pcsc driver, vendor tools) sees it on ``Virtual PCD 00 00``; ``run_pn532``
serves it from an emulated PN532 on a pty, for any PN532 host (libnfc with
``pn532_uart:<path>``, Adafruit's library, our driver). On exit the card's memory, with
whatever the client wrote, is saved back to the dump when ``save`` is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from simulators.card_field import CardField
from simulators.mifare_classic import MifareClassic1K, load_dump


def load_card(dump: Path) -> MifareClassic1K:
    """The card in ``dump``; :class:`~simulators.mifare_classic.CardDumpError` if it is none."""
    return load_dump(dump)


def run_pcsc(dump: Path, *, port: int, say: Callable[[str], None], stop: threading.Event,
             save: bool = False, multi_block: bool = True) -> MifareClassic1K:
    from simulators.vpcd_reader import VpcdReader

    card = load_card(dump)
    field = CardField("pcsc")
    with VpcdReader(field, port=port, multi_block=multi_block) as reader:
        field.place(card)
        model = "multi-block, ACR1252U-class" if multi_block else "one block per APDU, ACR122U-class"
        say(f"PC/SC reader: {reader.name} (vpcd port {port}, {model}); "
            f"card UID {card.uid.hex().upper()}")
        say("pcscd must be running (pcscd -f). Ctrl-C to stop.")
        stop.wait()
    if save:
        dump.write_bytes(card.to_mfd())
    return card


def run_pn532(dump: Path, *, say: Callable[[str], None], stop: threading.Event,
              save: bool = False) -> MifareClassic1K:
    from simulators.pn532_emulator import Pn532Emulator

    card = load_card(dump)
    field = CardField("pn532")
    with Pn532Emulator(field) as emulator:
        field.place(card)
        say(f"PN532 on {emulator.path} (stable link {emulator.link_path}); "
            f"card UID {card.uid.hex().upper()}")
        say("Ctrl-C to stop.")
        stop.wait()
    if save:
        dump.write_bytes(card.to_mfd())
    return card
