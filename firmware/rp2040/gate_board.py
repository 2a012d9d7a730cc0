"""The gate I/O board: one turnstile, its sensors and lights, and the link to the terminal.

The board, not the Raspberry Pi, switches the turnstile's relay: it opens for exactly one
passage when the terminal asks (OPEN), locks again on the passage sensor's first edge or
at the timeout, whichever comes first, and reports the outcome (PASSAGE) until the
terminal acknowledges it. When the terminal stops talking for ``LINK_TIMEOUT_MS`` the
board goes to its configured safe state (locked, or free for fire exits); a passage open
at that moment still ends at its own timeout. A hardware watchdog resets a hung board;
the relay pin comes up low after any reset, so a reset always locks the door.

:class:`GateBoard` is the logic and takes its pins, UART and clock as arguments, so the
same code runs on the RP2040, in MicroPython's unix port over a pty (``unix/machine.py``)
and in CPython unit tests. :func:`main` wires it to the real ``machine`` module.
"""

import ioboard_frames as f

FIRMWARE_VERSION = 1


class Debounced:
    """An input that changes only after holding its new level for ``hold_ms``."""

    def __init__(self, pin, hold_ms: int, now_ms: int) -> None:
        self.pin = pin
        self.hold_ms = hold_ms
        self.level = pin.value()
        self.since = now_ms  # when ``level`` was last confirmed
        self._seen = self.level
        self._seen_at = now_ms

    def update(self, now_ms: int) -> int:
        """1 on a rising edge, -1 on a falling edge, 0 otherwise."""
        raw = self.pin.value()
        if raw != self._seen:
            self._seen = raw
            self._seen_at = now_ms
        if self._seen != self.level and now_ms - self._seen_at >= self.hold_ms:
            self.level = self._seen
            self.since = now_ms
            return 1 if self.level else -1
        return 0


class GateBoard:
    """The board's state machine; call :meth:`step` every few milliseconds."""

    def __init__(self, cfg, relay, green, red, buzzer, passage, forced, uart, *,
                 now_ms: int, boot: int, reset_cause: int, wdt=None) -> None:
        self.cfg = cfg
        self.relay = relay
        self.green = green
        self.red = red
        self.buzzer = buzzer
        self.uart = uart
        self.wdt = wdt
        self.relay.value(0)
        self.green.value(0)
        self.red.value(0)
        self.buzzer.value(0)
        self.passage = Debounced(passage, cfg.DEBOUNCE_MS, now_ms)
        self.forced = Debounced(forced, cfg.DEBOUNCE_MS, now_ms)
        self.link = f.Link(max_tries=0)
        self.mode = f.MODE_LOCKED
        self.ref = f.NO_REF
        self.open_until = 0
        self.passages = 0
        self.forced_count = 0
        self.stuck = False
        self.recent: list[bytes] = []  # refs already answered (an OPEN repeated is not reopened)
        self.last_rx = now_ms
        self.signal_until = 0
        self.beeps: list[tuple[int, int]] = []  # (from, to) buzzer on
        self.link.send(f.HELLO, f.hello_payload(boot, reset_cause, cfg.SAFE_STATE,
                                                FIRMWARE_VERSION))

    # --- outputs -------------------------------------------------------------------------

    def _lock(self) -> None:
        self.relay.value(0)
        self.green.value(0)

    def _signal(self, now_ms: int, red: bool, beeps: int) -> None:
        self.red.value(1 if red else 0)
        self.signal_until = now_ms + 600
        self.beeps = [(now_ms + 250 * i, now_ms + 250 * i + 150) for i in range(beeps)]

    def _update_signals(self, now_ms: int) -> None:
        on = 0
        for start, end in self.beeps:
            if start <= now_ms < end:
                on = 1
        self.buzzer.value(on)
        if self.signal_until and now_ms >= self.signal_until:
            self.signal_until = 0
            self.beeps = []
            self.red.value(1 if self.mode == f.MODE_SAFE_LOCKED else 0)

    # --- passages --------------------------------------------------------------------------

    def _report(self, ref: bytes, outcome: int) -> None:
        self.recent.append(ref)
        if len(self.recent) > 8:
            self.recent.pop(0)
        self.link.send(f.PASSAGE, f.passage_payload(ref, outcome, self.passages))

    def _open(self, ref: bytes, timeout_ms: int, now_ms: int) -> None:
        if ref == self.ref or ref in self.recent:
            return  # the terminal repeated an OPEN it already had an answer for
        if self.mode == f.MODE_OPEN:
            self._report(ref, f.BUSY)
            return
        if self.stuck or self.passage.level:
            self._report(ref, f.SENSOR_FAULT)
            self._signal(now_ms, True, 2)
            return
        self.mode = f.MODE_OPEN
        self.ref = ref
        self.open_until = now_ms + min(max(timeout_ms, 500), self.cfg.MAX_OPEN_MS)
        self.red.value(0)
        self.green.value(1)
        self.relay.value(1)
        self.beeps = [(now_ms, now_ms + 80)]
        self.signal_until = now_ms + 100

    def _close(self, outcome: int) -> None:
        self._lock()
        ref = self.ref
        self.ref = f.NO_REF
        self.mode = f.MODE_LOCKED
        self._report(ref, outcome)

    def _state(self, token: int) -> bytes:
        inputs = (f.IN_PASSAGE if self.passage.level else 0) | \
            (f.IN_FORCED if self.forced.level else 0) | (f.IN_STUCK if self.stuck else 0)
        return f.state_payload(self.mode, inputs, self.passages, self.ref, token)

    # --- the link -------------------------------------------------------------------------------

    def _handle(self, kind: int, payload: bytes, now_ms: int) -> None:
        if kind == f.OPEN:
            try:
                ref, timeout_ms = f.parse_open(payload)
            except f.FrameError:
                return
            self._open(ref, timeout_ms, now_ms)
        elif kind == f.REFUSE:
            if self.mode != f.MODE_OPEN:
                self._signal(now_ms, True, 2)
        elif kind in (f.STATUS, f.SYNC):
            token = f.get_u16(payload, 0) if len(payload) >= 2 else 0
            self.link.send(f.STATE, self._state(token))

    def _leave_safe_state(self) -> None:
        if self.mode in (f.MODE_SAFE_LOCKED, f.MODE_SAFE_FREE):
            self._lock()
            self.red.value(0)
            self.mode = f.MODE_LOCKED

    def _enter_safe_state(self) -> None:
        if self.cfg.SAFE_STATE == f.SAFE_FREE:
            self.mode = f.MODE_SAFE_FREE
            self.relay.value(1)
            self.green.value(1)
        else:
            self.mode = f.MODE_SAFE_LOCKED
            self._lock()
            self.red.value(1)

    # --- the loop ----------------------------------------------------------------------------

    def step(self, now_ms: int) -> None:
        """One round: watchdog, UART in, sensors, timeouts, UART out."""
        if self.wdt is not None:
            self.wdt.feed()
        data = self.uart.read()
        if data:
            messages = self.link.receive(data)
            if messages or self.link.acks:
                self.last_rx = now_ms
                self._leave_safe_state()
            for kind, payload in messages:
                self._handle(kind, payload, now_ms)
        edge = self.passage.update(now_ms)
        if edge > 0:
            self.passages += 1
            if self.mode == f.MODE_OPEN:
                self._close(f.COMPLETED)
        stuck = bool(self.passage.level) and self.mode not in (f.MODE_OPEN, f.MODE_SAFE_FREE) \
            and now_ms - self.passage.since >= self.cfg.STUCK_MS
        if stuck != self.stuck and (stuck or not self.passage.level):
            self.stuck = stuck
            self.link.send(f.SENSOR, bytes([0, 1 if stuck else 0]))
        if self.forced.update(now_ms) > 0 and self.mode not in (f.MODE_OPEN, f.MODE_SAFE_FREE):
            self.forced_count += 1
            self.link.send(f.DOOR_FORCED, f.u32(self.forced_count))
            self._signal(now_ms, True, 3)
        if self.mode == f.MODE_OPEN and now_ms - self.open_until >= 0:
            self._close(f.NOT_TAKEN)
        if self.mode == f.MODE_LOCKED and now_ms - self.last_rx >= self.cfg.LINK_TIMEOUT_MS:
            self._enter_safe_state()
        self._update_signals(now_ms)
        out = self.link.transmit(now_ms)
        if out:
            self.uart.write(out)


class Clock:
    """Milliseconds since boot that never wrap (``time.ticks_ms`` wraps after ~12 days
    on the RP2040)."""

    def __init__(self, time) -> None:
        self.time = time
        self.last = time.ticks_ms()
        self.now = 0

    def ms(self) -> int:
        t = self.time.ticks_ms()
        self.now += self.time.ticks_diff(t, self.last)
        self.last = t
        return self.now


def main() -> None:
    """Wire the board to the real pins and run forever (the watchdog resets a hang)."""
    import os
    import time

    import config
    import machine

    cause = machine.reset_cause()
    reset_cause = f.RESET_WATCHDOG if cause == machine.WDT_RESET else \
        f.RESET_POWER_ON if cause == machine.PWRON_RESET else f.RESET_SOFT
    relay = machine.Pin(config.RELAY, machine.Pin.OUT, value=0)  # locked before anything else
    wdt = machine.WDT(timeout=config.WATCHDOG_MS)
    uart = machine.UART(config.UART_ID, baudrate=config.BAUDRATE, tx=machine.Pin(config.UART_TX),
                        rx=machine.Pin(config.UART_RX), timeout=0)
    clock = Clock(time)
    boot = int.from_bytes(os.urandom(2), "big")
    board = GateBoard(config, relay, machine.Pin(config.GREEN, machine.Pin.OUT, value=0),
                      machine.Pin(config.RED, machine.Pin.OUT, value=0),
                      machine.Pin(config.BUZZER, machine.Pin.OUT, value=0),
                      machine.Pin(config.PASSAGE_SENSOR, machine.Pin.IN, machine.Pin.PULL_DOWN),
                      machine.Pin(config.FORCED_SENSOR, machine.Pin.IN, machine.Pin.PULL_DOWN),
                      uart, now_ms=clock.ms(), boot=boot, reset_cause=reset_cause, wdt=wdt)
    while True:
        board.step(clock.ms())
        time.sleep_ms(2)
