"""The RF field of one simulated reader: put a card on it, take it away, tear a write.

Tests and the demo hold one :class:`CardField` per simulated reader (entry reader, exit
reader, a kiosk's reader) and move card models between them. The reader simulators
(:mod:`simulators.vpcd_reader`, :mod:`simulators.pn532_emulator`) ask the field which
card is present before each command, so taking a card away between two commands looks to
the terminal exactly like a member pulling the card: the next command fails with no
card. :meth:`CardField.tear_at_next_write` goes further and pulls the card *during* the
next block write, as the chip model's tear injection decides what landed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from protocol.mifare import CardRemoved


class CardField:
    """Which card (a chip model, e.g. ``MifareClassic1K``) is on one reader, if any."""

    def __init__(self, name: str = "reader") -> None:
        self.name = name
        self._card: Any | None = None
        self._generation = 0  # bumps on every place/remove, so a reader sees a new tap
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._tear_pending: str | None = None
        self._listeners: list[Callable[[Any | None], None]] = []

    # --- what tests and the demo do ------------------------------------------------

    def place(self, card: Any) -> None:
        """Put ``card`` on the reader (replacing any card already there)."""
        with self._lock:
            self._card = card
            self._generation += 1
            enter = getattr(card, "enter_field", None)
            if enter is not None:
                enter()
            if self._tear_pending is not None:
                self._arm_tear(card, self._tear_pending)
                self._tear_pending = None
            self._changed.notify_all()
        self._notify(card)

    def remove(self) -> Any | None:
        """Take the card away; returns it (or None if the field was empty)."""
        with self._lock:
            card, self._card = self._card, None
            if card is not None:
                self._generation += 1
                halt = getattr(card, "halt", None)
                if halt is not None:
                    halt()
                self._changed.notify_all()
        if card is not None:
            self._notify(None)
        return card

    def tear_at_next_write(self, mode: str = "before") -> None:
        """Pull the card away during its next block write.

        ``mode`` is passed to the chip model's ``tear_at_write``: ``"before"`` (the old
        bytes stay), ``"after"`` (the new bytes landed, the answer was lost) or
        ``"garbage"`` (a corrupted mix). Applies to the card on the field now, or to the
        next card placed.
        """
        with self._lock:
            if self._card is None:
                self._tear_pending = mode
            else:
                self._arm_tear(self._card, mode)

    def on_change(self, listener: Callable[[Any | None], None]) -> None:
        """Call ``listener(card_or_None)`` after every place/remove (e.g. a UI)."""
        self._listeners.append(listener)

    # --- what reader simulators do -------------------------------------------------

    @property
    def card(self) -> Any | None:
        with self._lock:
            return self._card

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def wait_for_change(self, generation: int, timeout: float) -> bool:
        """Block until the field changed since ``generation`` (True) or timeout (False)."""
        with self._lock:
            return self._changed.wait_for(lambda: self._generation != generation, timeout)

    def card_io(self, card: Any, operation: Callable[[], Any]) -> Any:
        """Run one card operation; a card that tore or left is taken off the field.

        The chip model raises :class:`CardRemoved` when a tear fires; from then on the
        card is no longer in this field, as for a member who pulled it away.
        """
        with self._lock:
            if self._card is not card:
                raise CardRemoved("the card is no longer on the reader")
        try:
            return operation()
        except CardRemoved:
            with self._lock:
                if self._card is card:
                    self._card = None
                    self._generation += 1
                    self._changed.notify_all()
            self._notify(None)
            raise

    # -------------------------------------------------------------------------------

    @staticmethod
    def _arm_tear(card: Any, mode: str) -> None:
        tear = getattr(card, "tear_at_write", None)
        if tear is None:
            raise TypeError(f"{type(card).__name__} has no tear injection")
        tear(1, mode)

    def _notify(self, card: Any | None) -> None:
        for listener in list(self._listeners):
            listener(card)


def card_uid(card: Any) -> bytes:
    """The card's UID, whether the model offers it as a property or a method."""
    uid = card.uid
    return bytes(uid() if callable(uid) else uid)
