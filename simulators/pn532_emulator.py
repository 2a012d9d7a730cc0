"""A PN532 NFC controller on a pseudo-terminal, speaking HSU frames like the real chip.

The terminal (or any PN532 host: libnfc, Adafruit's library, a vendor tool) opens the
pty's slave path as its serial port; this emulator sits on the master side with a card
model from a :class:`~simulators.card_field.CardField` in its RF field.

Faithful beyond the happy path, because hosts depend on it:

* every well-formed command gets an ACK at once, then its answer; a frame with a bad
  checksum is ignored (the host times out and retries); an unknown command gets the
  syntax-error frame ``7F``;
* a host NACK makes it send its last answer again; a host ACK aborts a running command
  (InListPassiveTarget or InAutoPoll waiting for a card);
* junk and the ``55 55 00 ..`` wake-up before a start code are skipped; after PowerDown
  it ignores everything until a ``55`` wakes it;
* Diagnose (communication line test echoes), Get/General status, Read/WriteRegister
  (read-modify-write by hosts works), SetParameters, SAMConfiguration, RFConfiguration
  (MxRtyPassiveActivation governs how long InListPassiveTarget waits), InListPassiveTarget,
  InDataExchange with MIFARE Classic auth/read/write/inc/dec/restore/transfer,
  InCommunicateThru (status 01 when nothing answers), InDeselect, InRelease, InAutoPoll.

Status bytes: ``00`` ok, ``01`` timeout (no card answered: it left the field),
``14`` MIFARE authentication error, ``0B`` for a MIFARE NAK (access bits refuse), ``27``
no target listed. A real PN532 may report a NAK as a timeout; the terminal treats both as
a failed operation and re-reads.

The emulator keeps its own handle on the slave open (raw mode), so the host closing and
reopening the port does not hang up the master side. ``unplug()`` closes the pty as a
USB adapter being pulled does; ``replug()`` makes a new one behind the same stable
``link_path`` (like ``/dev/serial/by-id/...``).
"""

from __future__ import annotations

import logging
import os
import select
import tempfile
import threading
import time
import tty
from typing import Any

from protocol import pn532_frames as pn
from protocol.mifare import AccessDenied, CardRemoved, KeyType, ReaderError, SectorAuthFailed
from simulators.card_field import CardField, card_uid

log = logging.getLogger(__name__)

FIRMWARE = bytes([0x32, 0x01, 0x06, 0x07])  # IC PN532, version 1.6, supports ISO A/B/18092


class Pn532Emulator:
    """One emulated PN532 on a pty; ``link_path`` is what a host opens."""

    def __init__(self, field: CardField, *, link_dir: str | None = None) -> None:
        self.field = field
        self._link_dir = link_dir or tempfile.mkdtemp(prefix="onecard-pn532-")
        self.link_path = os.path.join(self._link_dir, "pn532")
        self.registers: dict[int, int] = {}
        self.commands_served = 0
        self._master = -1
        self._slave = -1
        self._parser = pn.FrameParser()
        self._last_answer: bytes | None = None
        self._asleep = False
        self._batch: list[bytes] | None = None
        self._retries_passive = 0xFF
        self._target: Any | None = None
        self._waiting: tuple[int, bytes, float] | None = None  # (command, params, deadline)
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._plugged = False
        self._thread: threading.Thread | None = None
        self._io_lock = threading.Lock()
        field.on_change(lambda _card: self._poke())

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The pty slave device of the current plug-in (changes on replug)."""
        return os.ttyname(self._slave)

    def start(self) -> Pn532Emulator:
        self._open_pty()
        self._thread = threading.Thread(target=self._run, name="pn532-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(self.link_path)
            os.rmdir(self._link_dir)
        except OSError:
            pass

    def unplug(self) -> None:
        """Pull the reader: the pty goes away and the host's port fails."""
        with self._io_lock:
            self._close_pty()
        self._poke()

    def replug(self) -> None:
        """Plug it back in: a fresh chip (asleep until woken) on a new pty."""
        with self._io_lock:
            self._open_pty()
            self._parser.clear()
            self._last_answer = None
            self._target = None
            self._waiting = None
            self._retries_passive = 0xFF
        self._poke()

    def __enter__(self) -> Pn532Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self._master, self._slave = master, slave
        tmp = self.link_path + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link_path)
        self._plugged = True

    def _close_pty(self) -> None:
        self._plugged = False
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # --- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            fds = [self._wake_r]
            master = self._master
            if master >= 0:
                fds.append(master)
            timeout = None
            if self._waiting is not None and self._waiting[2] != float("inf"):
                timeout = max(0.0, self._waiting[2] - time.monotonic())
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
            if master >= 0 and master in readable:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    data = b""  # host closed the port (EIO): our slave handle keeps it alive
                if data:
                    self._received(data)
            if self._waiting is not None:
                self._progress_wait()

    def _write(self, data: bytes) -> None:
        if self._batch is not None:
            self._batch.append(data)
            return
        with self._io_lock:
            if self._master >= 0:
                try:
                    os.write(self._master, data)
                except OSError:
                    pass

    def _answer(self, command: int, params: bytes = b"") -> None:
        frame = pn.chip_response(command, params)
        self._last_answer = frame
        self.commands_served += 1
        self._write(frame)

    def _received(self, data: bytes) -> None:
        if self._asleep:
            idx = data.find(b"\x55")
            if idx < 0:
                return
            self._asleep = False
            data = data[idx:]
        for event in self._parser.feed(data):
            if isinstance(event, pn.AckFrame):
                if self._waiting is not None:
                    self._waiting = None  # the host aborted the running command
            elif isinstance(event, pn.Nack):
                if self._last_answer is not None:
                    self._write(self._last_answer)
            elif isinstance(event, pn.Frame):
                if event.tfi != pn.TFI_HOST or not event.data:
                    self._write(pn.ERROR_FRAME)
                    continue
                self._waiting = None  # a new command replaces one still waiting
                # ACK, then the answer: sent in one write when the answer is ready at once
                # (a host must take frames however the bytes are split); a command that
                # waits for a card gets its ACK now and its answer later.
                self._batch = [pn.ACK]
                try:
                    self._command(event.data[0], event.data[1:])
                finally:
                    out, self._batch = b"".join(self._batch), None
                    self._write(out)
            # BadChecksum and ErrorFrame from a host: ignored, as the chip does

    # --- commands ----------------------------------------------------------------------

    def _command(self, code: int, p: bytes) -> None:
        handler = _HANDLERS.get(code)
        if handler is None:
            self._write(pn.ERROR_FRAME)
            return
        try:
            handler(self, p)
        except IndexError:
            self._write(pn.ERROR_FRAME)  # parameters too short: a syntax error

    def _diagnose(self, p: bytes) -> None:
        test = p[0]
        if test == 0x00:  # communication line test: echo
            self._answer(pn.DIAGNOSE, p)
        elif test in (0x01, 0x02):  # ROM / RAM test
            self._answer(pn.DIAGNOSE, b"\x00")
        else:
            self._answer(pn.DIAGNOSE, b"\x00")

    def _firmware(self, p: bytes) -> None:
        self._answer(pn.GET_FIRMWARE_VERSION, FIRMWARE)

    def _general_status(self, p: bytes) -> None:
        card = self._target_card()
        if card is None:
            self._answer(pn.GET_GENERAL_STATUS, bytes([0x00, 0x00, 0x00, 0x00]))
        else:
            self._answer(pn.GET_GENERAL_STATUS, bytes([0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
                                                       0x00]))

    def _read_register(self, p: bytes) -> None:
        if len(p) < 2 or len(p) % 2:
            raise IndexError
        values = bytes(self.registers.get(p[i] << 8 | p[i + 1], 0) for i in range(0, len(p), 2))
        self._answer(pn.READ_REGISTER, values)

    def _write_register(self, p: bytes) -> None:
        if len(p) < 3 or len(p) % 3:
            raise IndexError
        for i in range(0, len(p), 3):
            self.registers[p[i] << 8 | p[i + 1]] = p[i + 2]
        self._answer(pn.WRITE_REGISTER)

    def _set_parameters(self, p: bytes) -> None:
        _ = p[0]
        self._answer(pn.SET_PARAMETERS)

    def _sam_configuration(self, p: bytes) -> None:
        _ = p[0]
        self._answer(pn.SAM_CONFIGURATION)

    def _power_down(self, p: bytes) -> None:
        _ = p[0]
        self._answer(pn.POWER_DOWN, b"\x00")
        self._asleep = True
        self._target = None

    def _rf_configuration(self, p: bytes) -> None:
        item = p[0]
        if item == 0x05:  # MaxRetries: MxRtyATR, MxRtyPSL, MxRtyPassiveActivation
            self._retries_passive = p[3]
        self._answer(pn.RF_CONFIGURATION)

    def _in_list_passive_target(self, p: bytes) -> None:
        max_tg, baud = p[0], p[1]
        if not 1 <= max_tg <= 2:
            self._write(pn.ERROR_FRAME)
            return
        if baud != 0x00:  # only 106 kbps type A cards live here
            self._answer(pn.IN_LIST_PASSIVE_TARGET, b"\x00")
            return
        self._start_wait(pn.IN_LIST_PASSIVE_TARGET, p, self._retries_passive)

    def _in_auto_poll(self, p: bytes) -> None:
        poll_nr, period = p[0], p[1]
        if poll_nr == 0xFF:
            wait = 0xFF
        else:
            wait = max(0, int(poll_nr * period * 0.15 / 0.01))
        self._start_wait(pn.IN_AUTO_POLL, p, wait)

    def _start_wait(self, command: int, p: bytes, retries: int) -> None:
        # Each activation attempt of a real chip takes a few ms; 0xFF means for ever.
        deadline = float("inf") if retries == 0xFF else time.monotonic() + (retries + 1) * 0.01
        self._waiting = (command, p, deadline)
        self._progress_wait()

    def _progress_wait(self) -> None:
        assert self._waiting is not None
        command, p, deadline = self._waiting
        card = self.field.card
        if card is None and time.monotonic() < deadline:
            return
        self._waiting = None
        if card is None:
            self._answer(command, b"\x00")
            return
        card.enter_field()  # REQA/anticollision/select: a fresh, unauthenticated card
        self._target = card
        uid = card_uid(card)
        target = bytes(card.atqa) + bytes([card.sak, len(uid)]) + uid
        if command == pn.IN_LIST_PASSIVE_TARGET:
            self._answer(command, b"\x01\x01" + target)
        else:
            data = b"\x01" + target
            self._answer(command, bytes([0x01, 0x10, len(data)]) + data)

    def _target_card(self) -> Any | None:
        card = self._target
        if card is not None and self.field.card is not card:
            self._target = None
            return None
        return card

    def _in_data_exchange(self, p: bytes) -> None:
        tg, data = p[0], p[1:]
        if not data:
            raise IndexError
        if tg & 0x3F != 1 or self._target is None:
            self._answer(pn.IN_DATA_EXCHANGE, bytes([pn.STATUS_WRONG_CONTEXT]))
            return
        status, out = self._mifare(data)
        self._answer(pn.IN_DATA_EXCHANGE, bytes([status]) + out)

    def _in_communicate_thru(self, p: bytes) -> None:
        if not p:
            raise IndexError
        if self._target_card() is None:
            self._answer(pn.IN_COMMUNICATE_THRU, bytes([pn.STATUS_TIMEOUT]))
            return
        if p[0] == 0x50:  # HLTA: the card goes quiet and answers nothing
            self._target.halt()
            self._target = None
            self._answer(pn.IN_COMMUNICATE_THRU, bytes([pn.STATUS_TIMEOUT]))
            return
        status, out = self._mifare(p)
        self._answer(pn.IN_COMMUNICATE_THRU, bytes([status]) + out)

    def _in_deselect(self, p: bytes) -> None:
        self._answer(pn.IN_DESELECT, b"\x00")

    def _in_release(self, p: bytes) -> None:
        self._target = None
        self._answer(pn.IN_RELEASE, b"\x00")

    def _mifare(self, data: bytes) -> tuple[int, bytes]:
        """Run one MIFARE Classic command on the listed card: (status, answer bytes)."""
        card = self._target_card()
        if card is None:
            return pn.STATUS_TIMEOUT, b""
        cmd = data[0]
        try:
            def run() -> bytes:
                if cmd in (pn.MIFARE_AUTH_A, pn.MIFARE_AUTH_B):
                    block, key, uid = data[1], data[2:8], data[8:12]
                    if len(key) != 6 or len(uid) != 4:
                        raise ValueError("auth needs a 6-byte key and 4 UID bytes")
                    if uid != card_uid(card)[-4:]:
                        raise SectorAuthFailed("the UID in the auth command is not this card's")
                    card.authenticate(block, KeyType(cmd), key)
                    return b""
                if cmd == pn.MIFARE_READ:
                    return bytes(card.read_block(data[1]))
                if cmd == pn.MIFARE_WRITE:
                    if len(data) != 18:
                        raise ValueError("write needs 16 bytes")
                    card.write_block(data[1], data[2:18])
                    return b""
                if cmd in (pn.MIFARE_INCREMENT, pn.MIFARE_DECREMENT, pn.MIFARE_RESTORE):
                    if len(data) != 6:
                        raise ValueError("value operations carry 4 bytes")
                    amount = int.from_bytes(data[2:6], "little", signed=True)
                    if cmd == pn.MIFARE_INCREMENT:
                        card.increment(data[1], amount)
                    elif cmd == pn.MIFARE_DECREMENT:
                        card.decrement(data[1], amount)
                    else:
                        card.restore(data[1])
                    return b""
                if cmd == pn.MIFARE_TRANSFER:
                    card.transfer(data[1])
                    return b""
                raise AccessDenied(f"command {cmd:02X} is not a MIFARE Classic command")

            return pn.STATUS_OK, self.field.card_io(card, run)
        except CardRemoved:
            self._target = None
            return pn.STATUS_TIMEOUT, b""
        except SectorAuthFailed:
            return pn.STATUS_MIFARE_AUTH_ERROR, b""
        except (AccessDenied, ReaderError):
            return pn.STATUS_RF_PROTOCOL_ERROR, b""
        except (ValueError, IndexError):
            return pn.STATUS_INVALID_PARAMETER, b""


_HANDLERS = {
    pn.DIAGNOSE: Pn532Emulator._diagnose,
    pn.GET_FIRMWARE_VERSION: Pn532Emulator._firmware,
    pn.GET_GENERAL_STATUS: Pn532Emulator._general_status,
    pn.READ_REGISTER: Pn532Emulator._read_register,
    pn.WRITE_REGISTER: Pn532Emulator._write_register,
    pn.SET_PARAMETERS: Pn532Emulator._set_parameters,
    pn.SAM_CONFIGURATION: Pn532Emulator._sam_configuration,
    pn.POWER_DOWN: Pn532Emulator._power_down,
    pn.RF_CONFIGURATION: Pn532Emulator._rf_configuration,
    pn.IN_LIST_PASSIVE_TARGET: Pn532Emulator._in_list_passive_target,
    pn.IN_AUTO_POLL: Pn532Emulator._in_auto_poll,
    pn.IN_DATA_EXCHANGE: Pn532Emulator._in_data_exchange,
    pn.IN_COMMUNICATE_THRU: Pn532Emulator._in_communicate_thru,
    pn.IN_DESELECT: Pn532Emulator._in_deselect,
    pn.IN_RELEASE: Pn532Emulator._in_release,
}
