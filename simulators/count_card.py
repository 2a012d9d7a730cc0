"""An in-process member card holding a :class:`protocol.card_state.CardState`.

It stands in for a card on a reader where a test or the demo needs a member who taps,
without going through a reader stack. It can be told to tear (fail) at its next write,
which leaves its state unchanged, as a card pulled away before the write.
"""

from __future__ import annotations

import threading

from protocol.card_state import CardState


class CardTorn(IOError):
    """The card left the field during a write; nothing was written."""


class SimCountCard:
    def __init__(self, state: CardState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self.tear_next_write = False

    def read(self) -> CardState:
        with self._lock:
            return self._state

    def write(self, new_state: CardState) -> None:
        with self._lock:
            if self.tear_next_write:
                self.tear_next_write = False
                raise CardTorn(f"card {self._state.card_id} left the field during the write")
            self._state = new_state

    @property
    def state(self) -> CardState:
        return self.read()
