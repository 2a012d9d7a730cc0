"""The firmware's logic in CPython, for fast tests: fake pins, a fake UART, a clock.

``gate_board.py`` imports the codec as ``ioboard_frames`` (its name on the board); here
that name is the terminal's own :mod:`protocol.ioboard_frames` — one codec, two runtimes.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from protocol import ioboard_frames as frames

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware" / "rp2040"


def firmware_module(name: str) -> ModuleType:
    sys.modules.setdefault("ioboard_frames", frames)
    if str(FIRMWARE) not in sys.path:
        sys.path.append(str(FIRMWARE))
    return importlib.import_module(name)


class FakePin:
    def __init__(self, level: int = 0) -> None:
        self.level = level
        self.history: list[int] = []

    def value(self, v: int | None = None) -> Any:
        if v is None:
            return self.level
        self.level = 1 if v else 0
        self.history.append(self.level)
        return None


class FakeUart:
    def __init__(self) -> None:
        self.inbox = bytearray()
        self.sent = bytearray()

    def read(self) -> bytes | None:
        data, self.inbox = bytes(self.inbox), bytearray()
        return data or None

    def write(self, data: bytes) -> int:
        self.sent.extend(data)
        return len(data)


def config(**changes: Any) -> SimpleNamespace:
    values = {"SAFE_STATE": frames.SAFE_LOCKED, "LINK_TIMEOUT_MS": 3000, "MAX_OPEN_MS": 30000,
              "DEBOUNCE_MS": 10, "STUCK_MS": 3000}
    values.update(changes)
    return SimpleNamespace(**values)


class Bench:
    """The board on the bench: a terminal-side link talking to it, time stepped by hand."""

    def __init__(self, **cfg: Any) -> None:
        gate_board = firmware_module("gate_board")
        self.pins = {name: FakePin() for name in
                     ("relay", "green", "red", "buzzer", "passage", "forced")}
        self.uart = FakeUart()
        self.now = 0
        self.board = gate_board.GateBoard(
            config(**cfg), self.pins["relay"], self.pins["green"], self.pins["red"],
            self.pins["buzzer"], self.pins["passage"], self.pins["forced"], self.uart,
            now_ms=0, boot=0x1234, reset_cause=frames.RESET_POWER_ON)
        self.pi = frames.Link(max_tries=0, retry_ms=50)
        self.received: list[tuple[int, bytes]] = []

    def send(self, kind: int, payload: bytes = b"") -> int:
        return self.pi.send(kind, payload)

    def run(self, ms: int, step: int = 5, talk: bool = True) -> None:
        """Let ``ms`` pass; the terminal side talks (and acknowledges) when ``talk``."""
        for _ in range(ms // step):
            self.now += step
            if talk:
                self.uart.inbox.extend(self.pi.transmit(self.now))
            self.board.step(self.now)
            out, self.uart.sent = bytes(self.uart.sent), bytearray()
            if talk:
                self.received.extend(self.pi.receive(out))

    def messages(self, kind: int) -> list[bytes]:
        return [payload for k, payload in self.received if k == kind]

    def passages(self) -> list[tuple[bytes, int, int]]:
        return [frames.parse_passage(p) for p in self.messages(frames.PASSAGE)]

    @property
    def released(self) -> bool:
        return self.pins["relay"].level == 1

    def pulse(self, pin: str, ms: int = 40) -> None:
        self.pins[pin].level = 1
        self.run(ms)
        self.pins[pin].level = 0
        self.run(ms)
