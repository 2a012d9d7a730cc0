"""A turnstile on gpiozero mock pins: it lets a person through only while the relay is open.

Tests and the demo make a :class:`gpiozero.pins.mock.MockFactory`, hand it to the
terminal's :class:`terminal_fw.gate_io.GateIO` (by pin numbers only: simulators may not
import the terminal) and to this model. :meth:`TurnstileModel.walk_through` is a member
pushing the arm: if the relay is released the arm turns and the passage sensor goes high
then low (a passage); if not, the arm stays locked and nothing is reported.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class TurnstileModel:
    def __init__(self, factory: Any, *, relay_pin: int = 17, sensor_pin: int = 24,
                 relay_active_high: bool = True, passage_s: float = 0.02) -> None:
        self._relay = factory.pin(relay_pin)
        self._sensor = factory.pin(sensor_pin)
        self._active_high = relay_active_high
        self.passage_s = passage_s
        self.passages = 0
        self.blocked = 0
        self._lock = threading.Lock()

    @property
    def released(self) -> bool:
        """True while the relay holds the arm free."""
        return bool(self._relay.state) == self._active_high

    def walk_through(self, wait: float = 0.0) -> bool:
        """A person pushes the arm, waiting up to ``wait`` s for it to be released."""
        deadline = time.monotonic() + wait
        while not self.released:
            if time.monotonic() >= deadline:
                with self._lock:
                    self.blocked += 1
                return False
            time.sleep(0.002)
        self._sensor.drive_high()
        time.sleep(self.passage_s)
        self._sensor.drive_low()
        with self._lock:
            self.passages += 1
        return True
