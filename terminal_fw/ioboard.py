"""The gate I/O board back-end: the RP2040 that drives the turnstile, over a UART.

The board (``firmware/rp2040/``) switches the relay, counts the passage and keeps the
door safe on its own; this driver tells it to open for one passage and waits for its
report. Frames and the retry/duplicate rules are :mod:`protocol.ioboard_frames`, the
same code the firmware runs. One thread reads the serial port, answers with
acknowledgements, and sends ``STATUS`` every :attr:`IoBoard.heartbeat_s` — the heartbeat
without which the board goes to its safe state.

What can go wrong and what the caller sees (:class:`terminal_fw.passage.PassageReport`):

* the board does not acknowledge OPEN (unplugged, powered off): ``NOT_OPENED``;
* the board resets while the door is open: ``INTERRUPTED`` (its relay dropped at reset);
* no report by the timeout plus a margin (cable pulled mid-passage), or no
  acknowledgement of OPEN (it may have arrived): ``UNKNOWN`` — the board closes the door
  at its own timeout and reports when the cable is back; that late report goes to
  ``on_report``. If the board never got the OPEN, the first STATE answering a STATUS
  sent after the fact says so (the board's messages leave in order): a late
  ``NOT_OPENED``;
* a report repeated (its acknowledgement was lost) is taken once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from protocol import ioboard_frames as frames
from terminal_fw.passage import Passage, PassageReport

log = logging.getLogger(__name__)

_NOT_OPENED = {frames.SENSOR_FAULT: "sensor_fault", frames.BUSY: "busy"}


class BoardUnavailable(RuntimeError):
    """The board did not acknowledge a command; ``sent`` if it went out at least once
    (it may have arrived, only the acknowledgement missing)."""

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class IoBoard:
    """A :class:`terminal_fw.passage.GateDoor` on the I/O board at ``port``."""

    def __init__(self, port: str | None = None, *, baudrate: int = 115200,
                 admit_timeout: float = 8.0, report_margin_s: float = 2.0,
                 heartbeat_s: float = 1.0, command_tries: int = 6,
                 on_report: Callable[[PassageReport], None] | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 serial_port: Any = None) -> None:
        if serial_port is None:
            import serial

            serial_port = serial.Serial(port, baudrate, timeout=0.02)
        self.serial = serial_port
        self.admit_timeout = admit_timeout
        self.report_margin_s = report_margin_s
        self.heartbeat_s = heartbeat_s
        self.on_report = on_report
        self.on_event = on_event
        self.link = frames.Link(max_tries=command_tries, retry_ms=80, max_retry_ms=400)
        self.state: dict[str, Any] = {}
        self.boot: int | None = None
        self.passages = 0  # completed passages reported to this driver
        self.door_forced = 0
        self.sensor_stuck = False
        self._reports: dict[str, PassageReport] = {}
        self._waiting: set[str] = set()
        self._opened: set[str] = set()  # waiting refs whose OPEN the board acknowledged
        self._seen: list[str] = []  # refs already reported (a report comes once)
        self._acked: dict[int, bool] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._last_beat = 0.0
        self._calls: list[Callable[[], None]] = []  # callbacks, run outside the lock
        self._token = 0  # of the last STATUS sent
        self._unknown: dict[str, int] = {}  # ref -> the STATUS token that will settle it
        session = int.from_bytes(os.urandom(2), "big")
        with self._lock:
            self.link.send(frames.SYNC, frames.u16(session))
        self._thread = threading.Thread(target=self._run, name="ioboard", daemon=True)
        self._thread.start()

    # --- the door ------------------------------------------------------------------------

    def pass_one(self, ref: str, timeout: float | None = None) -> PassageReport:
        """Open for one passage and wait for the board's report."""
        timeout = self.admit_timeout if timeout is None else timeout
        raw = _ref_bytes(ref)
        key = raw.hex()
        with self._lock:
            self._waiting.add(key)
        try:
            try:
                self._command(frames.OPEN, frames.open_payload(raw, int(timeout * 1000)))
                with self._lock:
                    self._opened.add(key)
            except BoardUnavailable as exc:
                with self._lock:
                    if key not in self._reports:
                        if exc.sent or self._stop.is_set():
                            return self._unknown_outcome(key, ref)
                        return PassageReport(ref, Passage.NOT_OPENED, "board unavailable")
            deadline = time.monotonic() + timeout + self.report_margin_s
            with self._lock:
                while key not in self._reports:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stop.is_set():
                        return self._unknown_outcome(key, ref)
                    self._lock.wait(left)
                report = self._reports.pop(key)
                return PassageReport(ref, report.outcome, report.reason)
        finally:
            with self._lock:
                self._waiting.discard(key)
                self._opened.discard(key)
                self._reports.pop(key, None)

    def _unknown_outcome(self, key: str, ref: str) -> PassageReport:
        """No report (lock held): a later PASSAGE or STATE settles it (``on_report``)."""
        self._unknown[key] = (self._token + 1) & 0xFFFF
        return PassageReport(ref, Passage.UNKNOWN, "no report from the board")

    def refuse(self) -> None:
        try:
            self._command(frames.REFUSE, b"")
        except BoardUnavailable:
            log.warning("I/O board did not take the refusal signal")

    def status(self, timeout: float = 1.0) -> dict[str, Any]:
        """Ask the board for its state now (mode, inputs, passages)."""
        with self._lock:
            before = self.state.get("n", 0)
        self._command(frames.STATUS, self._next_token())
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.state.get("n", 0) == before and time.monotonic() < deadline:
                self._lock.wait(0.05)
            return dict(self.state)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            self._lock.notify_all()
        try:
            self.serial.close()
        except Exception:
            pass

    def __enter__(self) -> IoBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the link --------------------------------------------------------------------------

    def _next_token(self) -> bytes:
        self._token = (self._token + 1) & 0xFFFF
        return frames.u16(self._token)

    def _command(self, kind: int, payload: bytes) -> None:
        """Send and wait for the board's acknowledgement; BoardUnavailable if none came."""
        with self._lock:
            seq = self.link.send(kind, payload)
            if seq < 0:
                raise BoardUnavailable("command queue full")
            self._acked[seq] = False
            deadline = time.monotonic() + 5.0
            sent = False
            try:
                while not self._stop.is_set():
                    done = self._acked.get(seq)
                    if done is True:
                        return
                    if done is None:  # given up after every try: it went out
                        sent = True
                        break
                    sent = sent or bool(self.link.queue and self.link.queue[0][0] == seq
                                        and self.link.queue[0][3] > 0)
                    if done is None or time.monotonic() > deadline:
                        break
                    self._lock.wait(0.05)
            finally:
                self._acked.pop(seq, None)
            if self.link.queue and self.link.queue[0][0] == seq:
                self.link.queue.pop(0)  # given up here: never sent again
        raise BoardUnavailable(f"no acknowledgement for {frames.NAMES.get(kind, kind)}", sent)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.serial.read(256)
            except Exception as exc:  # unplugged USB adapter, closed port
                if self._stop.is_set():
                    return
                log.warning("I/O board port: %s", exc)
                time.sleep(0.2)
                data = b""
            now = time.monotonic()
            with self._lock:
                in_flight = self.link.queue[0][0] if self.link.queue else None
                for kind, payload in self.link.receive(data):
                    try:
                        self._on_message(kind, payload)
                    except frames.FrameError as exc:
                        log.warning("I/O board sent a short %s: %s", frames.NAMES.get(kind), exc)
                if in_flight is not None and in_flight in self._acked and \
                        (not self.link.queue or self.link.queue[0][0] != in_flight):
                    self._acked[in_flight] = True
                for seq, _kind, _payload in self.link.failed:
                    if seq in self._acked:
                        del self._acked[seq]  # None: given up
                self.link.failed.clear()
                if now - self._last_beat >= self.heartbeat_s:
                    self._last_beat = now
                    if not self.link.queue:
                        self.link.send(frames.STATUS, self._next_token())
                out = self.link.transmit(int(now * 1000))
                calls, self._calls = self._calls, []
                self._lock.notify_all()
            for call in calls:
                try:
                    call()
                except Exception:
                    log.exception("I/O board callback")
            if out:
                try:
                    self.serial.write(out)
                except Exception as exc:
                    log.warning("I/O board port: %s", exc)

    def _on_message(self, kind: int, payload: bytes) -> None:
        """Called with the lock held."""
        if kind == frames.PASSAGE:
            raw, outcome, _count = frames.parse_passage(payload)
            key = raw.hex()
            if key in self._seen:
                return
            self._seen = [*self._seen[-63:], key]
            self._unknown.pop(key, None)
            if outcome == frames.COMPLETED:
                self.passages += 1
                report = PassageReport(key, Passage.COMPLETED)
            elif outcome == frames.NOT_TAKEN:
                report = PassageReport(key, Passage.NOT_TAKEN, "timeout")
            else:
                report = PassageReport(key, Passage.NOT_OPENED, _NOT_OPENED.get(outcome, "refused"))
            self._deliver(report)
        elif kind == frames.HELLO:
            boot, cause, safe, version = frames.parse_hello(payload)
            if boot == self.boot:
                return
            first = self.boot is None
            self.boot = boot
            # An opening the board had taken died with it (the relay dropped at reset);
            # commands it had not acknowledged go on to the new board.
            if not first:
                for key in list(self._waiting & self._opened):
                    if key not in self._reports:
                        self._deliver(PassageReport(key, Passage.INTERRUPTED, "board reset"))
            self._event("board_reset", boot=boot, cause=cause, safe_state=safe,
                        firmware=version, first=first)
        elif kind == frames.STATE:
            mode, inputs, passages, raw, token = frames.parse_state(payload)
            for key, needs in list(self._unknown.items()):
                if (token - needs) & 0xFFFF < 0x8000 and key != raw.hex():
                    del self._unknown[key]  # every report before this STATE has arrived
                    self._seen = [*self._seen[-63:], key]
                    self._deliver(PassageReport(key, Passage.NOT_OPENED,
                                                "the board never got the opening"))
            self.state = {"n": self.state.get("n", 0) + 1,
                          "mode": frames.MODES.get(mode, str(mode)),
                          "passage_sensor": bool(inputs & frames.IN_PASSAGE),
                          "door_forced": bool(inputs & frames.IN_FORCED),
                          "sensor_stuck": bool(inputs & frames.IN_STUCK),
                          "passages": passages, "ref": raw.hex()}
        elif kind == frames.DOOR_FORCED:
            self.door_forced += 1
            self._event("door_forced", times=frames.get_u32(payload, 0))
        elif kind == frames.SENSOR:
            self.sensor_stuck = len(payload) > 1 and payload[1] == 1
            self._event("sensor_stuck" if self.sensor_stuck else "sensor_ok", sensor="passage")

    def _deliver(self, report: PassageReport) -> None:
        if report.ref in self._waiting:
            self._reports[report.ref] = report
            return
        late = PassageReport(report.ref, report.outcome, report.reason, late=True)
        self._event("passage_late", ref=report.ref, outcome=report.outcome.value)
        if self.on_report is not None:
            on_report = self.on_report
            self._calls.append(lambda: on_report(late))

    def _event(self, name: str, **data: Any) -> None:
        log.info("I/O board: %s %s", name, data)
        if self.on_event is not None:
            on_event = self.on_event
            self._calls.append(lambda: on_event(name, data))


def _ref_bytes(ref: str) -> bytes:
    """An opening's reference on the wire: 8 bytes (an intent id is 16 hex digits)."""
    try:
        raw = bytes.fromhex(ref)
    except ValueError:
        raw = b""
    if len(raw) != frames.REF_LEN:
        raise ValueError(f"a passage reference is {frames.REF_LEN * 2} hex digits: {ref!r}")
    return raw
