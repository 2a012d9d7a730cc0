"""A ``machine`` module for MicroPython's unix port: the board's pins and UART on ptys.

The unix port has no ``machine``; this one lets the real firmware (``gate_board.py``,
``main.py``) run unchanged in real MicroPython, wired to the test rig
(:mod:`simulators.ioboard`) through two ttys named in the environment:

* ``IOBOARD_UART`` — the UART, raw bytes, the terminal's driver on the far side;
* ``IOBOARD_HARNESS`` — the wiring harness, one line per pin change: the rig writes
  ``I <gpio> <0|1>`` to drive an input, this module writes ``O <gpio> <0|1>`` whenever
  the firmware changes an output.

``IOBOARD_RESET_CAUSE`` (``power``, ``watchdog``) is what :func:`reset_cause` says.
Only what the firmware uses is here.
"""

import os
import select
import termios
import time

PWRON_RESET = 1
WDT_RESET = 3
SOFT_RESET = 5


def _open_raw(path):
    stream = open(path, "r+b")  # noqa: SIM115 (kept open for the board's life)
    termios.setraw(stream.fileno())
    poller = select.poll()
    poller.register(stream, select.POLLIN)
    return stream, poller


class _Harness:
    def __init__(self, path):
        self.stream, self.poll = _open_raw(path)
        self.inputs = {}
        self.line = b""

    def drain(self):
        while self.poll.poll(0):
            byte = self.stream.read(1)
            if not byte:
                return
            if byte != b"\n":
                self.line += byte
                continue
            parts = self.line.split()
            self.line = b""
            if len(parts) == 3 and parts[0] == b"I":
                self.inputs[int(parts[1])] = int(parts[2])

    def output(self, gpio, value):
        self.stream.write(b"O %d %d\n" % (gpio, value))


_harness = None


def _wiring():
    global _harness
    if _harness is None:
        _harness = _Harness(os.getenv("IOBOARD_HARNESS"))
    return _harness


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, gpio, mode=IN, pull=None, value=None):
        self.gpio = gpio
        self.mode = mode
        self._value = 0
        if mode == Pin.OUT:
            self.value(value or 0)

    def value(self, v=None):
        wiring = _wiring()
        if v is None:
            if self.mode == Pin.OUT:
                return self._value
            wiring.drain()
            return wiring.inputs.get(self.gpio, 0)
        v = 1 if v else 0
        if v != self._value or self.mode == Pin.OUT:
            changed = v != self._value
            self._value = v
            if changed or not hasattr(self, "_told"):
                self._told = True
                wiring.output(self.gpio, v)
        return None


class UART:
    def __init__(self, uart_id, baudrate=115200, tx=None, rx=None, timeout=0, **kw):
        self.stream, self.poll = _open_raw(os.getenv("IOBOARD_UART"))

    def read(self, n=-1):
        data = b""
        while self.poll.poll(0) and len(data) < 256:
            byte = self.stream.read(1)
            if not byte:
                break
            data += byte
        return data or None

    def write(self, data):
        return self.stream.write(data)


class WDT:
    """The hardware watchdog: a board whose loop stops feeding it is reset (here: the
    process exits with status 3, and the rig starts it again as a watchdog reset)."""

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.fed = time.ticks_ms()

    def feed(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self.fed) > self.timeout:
            raise SystemExit(3)
        self.fed = now


def reset_cause():
    return WDT_RESET if os.getenv("IOBOARD_RESET_CAUSE") == "watchdog" else PWRON_RESET


def unique_id():
    return b"\xe6\x61\x00\x00\x00\x00\x00\x01"
