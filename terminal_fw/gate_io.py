"""The gate's I/O on a Raspberry Pi: turnstile relay, green/red LEDs, buzzer, passage sensor.

Through gpiozero, so the same code drives the real pins on a Pi and gpiozero's mock pins
in tests and the demo (pass ``pin_factory=MockFactory()``). The turnstile relay opens for
one passage only: it closes again as soon as the passage sensor reports that the member
walked through, or after ``admit_timeout`` if they never did (a member who tapped and
turned away must not leave the gate open for the next person).

Wiring (BCM numbers, defaults of :class:`GateWiring`) is in ``docs/hardware.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpiozero import LED, Buzzer, DigitalInputDevice, OutputDevice

from terminal_fw.passage import Passage, PassageReport


@dataclass(frozen=True)
class GateWiring:
    relay: int = 17  # turnstile release relay (active high through a driver transistor)
    green: int = 27  # "go" LED
    red: int = 22  # "refused" LED
    buzzer: int = 23  # active buzzer
    passage_sensor: int = 24  # through-beam / arm sensor: high while someone passes
    relay_active_high: bool = True


class GateIO:
    """Admit one person, or signal a refusal."""

    def __init__(self, wiring: GateWiring = GateWiring(), *, pin_factory: Any = None,
                 admit_timeout: float = 8.0) -> None:
        self.wiring = wiring
        self.admit_timeout = admit_timeout
        self.relay = OutputDevice(wiring.relay, active_high=wiring.relay_active_high,
                                  initial_value=False, pin_factory=pin_factory)
        self.green = LED(wiring.green, pin_factory=pin_factory)
        self.red = LED(wiring.red, pin_factory=pin_factory)
        self.buzzer = Buzzer(wiring.buzzer, pin_factory=pin_factory)
        self.sensor = DigitalInputDevice(wiring.passage_sensor, pull_up=False,
                                         pin_factory=pin_factory)
        self.passages = 0

    def admit(self, timeout: float | None = None) -> bool:
        """Open the turnstile for one passage; True if someone walked through.

        Blocks until the passage is over (sensor active, then clear) or the timeout;
        the relay is closed on the way out whatever happens.
        """
        timeout = self.admit_timeout if timeout is None else timeout
        self.red.off()
        self.green.on()
        self.buzzer.beep(on_time=0.08, off_time=0.05, n=1, background=True)
        self.relay.on()
        try:
            passed = self.sensor.wait_for_active(timeout)
            if passed:
                self.sensor.wait_for_inactive(timeout)
                self.passages += 1
            return bool(passed)
        finally:
            self.relay.off()
            self.green.off()

    def pass_one(self, ref: str, timeout: float | None = None) -> PassageReport:
        """:class:`terminal_fw.passage.GateDoor`'s call: :meth:`admit`, reported."""
        passed = self.admit(timeout)
        return PassageReport(ref, Passage.COMPLETED if passed else Passage.NOT_TAKEN,
                             "" if passed else "timeout")

    def refuse(self) -> None:
        """Red light and two beeps; the turnstile stays shut."""
        self.relay.off()
        self.green.off()
        self.red.blink(on_time=0.15, off_time=0.1, n=3, background=True)
        self.buzzer.beep(on_time=0.15, off_time=0.1, n=2, background=True)

    def close(self) -> None:
        for device in (self.relay, self.green, self.red, self.buzzer, self.sensor):
            device.close()

    def __enter__(self) -> GateIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
