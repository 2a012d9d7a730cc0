"""PN532 NFC readers on a serial line (HSU/UART) through pyserial.

The cheap reader boards (Elechand, Adafruit, the red "PN532 V3" module) wired to a
Raspberry Pi's UART or a USB-serial adapter. Frames are :mod:`protocol.pn532_frames`;
this module is the host side: wake-up, ACK handling with timeouts, NACK on a corrupted
answer, aborting a waiting poll, and the MIFARE Classic commands wrapped in
InDataExchange. It provides a :class:`~protocol.mifare.MifareClassicLink`.

Failure mapping:

* InDataExchange status ``01`` (timeout: no card answered), ``29``/``2B`` (target
  released / card disappeared) or ``27`` (no target any more) → :class:`CardRemoved`;
  the operation may or may not have reached the card's EEPROM.
* status ``14`` → :class:`SectorAuthFailed`; any other status → :class:`AccessDenied`.
* no ACK after a retry with wake-up, or the port failing → :class:`ReaderUnavailable`;
  :meth:`Pn532.reopen` gets the reader back when the port returns.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import serial

from protocol import pn532_frames as pn
from protocol.mifare import (
    AccessDenied,
    CardRemoved,
    KeyType,
    ReaderError,
    ReaderUnavailable,
    SectorAuthFailed,
)

log = logging.getLogger(__name__)

_CARD_GONE = {pn.STATUS_TIMEOUT, pn.STATUS_TARGET_RELEASED, pn.STATUS_CARD_DISAPPEARED,
              pn.STATUS_WRONG_CONTEXT}


_READ_SLICE = 0.02  # seconds one blocking read may take before deadlines are checked


class Pn532:
    """One PN532 on a serial port (a path such as ``/dev/ttyAMA0``, or an open port).

    ``ack_timeout`` bounds the wait for the chip's ACK (a real chip sends it within a
    millisecond or two); ``answer_timeout`` bounds the wait for the answer to a command
    that does not wait for a card.
    """

    def __init__(self, port: str | serial.Serial, *, baudrate: int = 115200,
                 ack_timeout: float = 0.5, answer_timeout: float = 1.0) -> None:
        self.port_name = port if isinstance(port, str) else port.port
        self.baudrate = baudrate
        self.ack_timeout = ack_timeout
        self.answer_timeout = answer_timeout
        self._serial: serial.Serial | None = port if not isinstance(port, str) else None
        self._parser = pn.FrameParser()
        self._pending: deque[pn.Event] = deque()
        self._retries: int | None = None
        self.firmware: bytes = b""

    # --- port ------------------------------------------------------------------------

    def open(self) -> Pn532:
        """Open the port, wake the chip, put its SAM in normal mode and read its firmware."""
        if self._serial is None:
            try:
                self._serial = serial.Serial(self.port_name, self.baudrate, timeout=0)
            except (serial.SerialException, OSError) as exc:
                raise ReaderUnavailable(f"cannot open {self.port_name}: {exc}") from exc
        self._parser.clear()
        self._retries = None
        self._write(pn.WAKEUP)
        self.command(pn.SAM_CONFIGURATION, b"\x01\x14\x01")
        self.firmware = self.command(pn.GET_FIRMWARE_VERSION)
        return self

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                pass
            self._serial = None

    def reopen(self, timeout: float = 10.0) -> None:
        """After ReaderUnavailable: wait for the port to come back and open it again."""
        self.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.open()
                return
            except ReaderUnavailable:
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __enter__(self) -> Pn532:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- frames ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._serial is None:
            raise ReaderUnavailable("the PN532 port is closed")
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise ReaderUnavailable(f"writing to {self.port_name}: {exc}") from exc

    def _event(self, deadline: float) -> pn.Event | None:
        """The next frame event from the chip, or None at ``deadline``."""
        assert self._serial is not None
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                if self._serial.timeout != _READ_SLICE:
                    self._serial.timeout = _READ_SLICE  # reconfigures the tty: do it once
                first = self._serial.read(1)
                if first:
                    data = first + self._serial.read(self._serial.in_waiting or 0)
                    self._pending.extend(self._parser.feed(data))
            except (serial.SerialException, OSError, TypeError) as exc:
                raise ReaderUnavailable(f"reading from {self.port_name}: {exc}") from exc
        return self._pending.popleft()

    def command(self, code: int, params: bytes = b"", *, timeout: float | None = None,
                abort_on_timeout: bool = False) -> bytes:
        """Send one command and return its answer's parameters (after the answer code).

        Retries once, with a wake-up, when no ACK comes. Returns b"" only for an
        aborted wait (``abort_on_timeout``); raises :class:`ReaderUnavailable` when the
        chip does not answer, :class:`ReaderError` for a syntax-error frame.
        """
        frame = pn.host_command(code, params)
        for attempt in (1, 2):
            self._pending.clear()
            self._write(frame)
            if self._await_ack():
                break
            if attempt == 2:
                raise ReaderUnavailable(f"no ACK from the PN532 on {self.port_name}")
            log.info("PN532 on %s did not ACK: waking it and retrying", self.port_name)
            self._parser.clear()
            self._write(pn.WAKEUP)
        deadline = time.monotonic() + (self.answer_timeout if timeout is None else timeout)
        while True:
            event = self._event(deadline)
            if event is None:
                if abort_on_timeout:
                    self._write(pn.ACK)  # abort the command the chip is still running
                    self._drain()
                    return b""
                raise ReaderUnavailable(f"no answer from the PN532 to command {code:02X}")
            if isinstance(event, pn.BadChecksum):
                self._write(pn.NACK)  # ask for the answer again
                continue
            if isinstance(event, pn.ErrorFrame):
                raise ReaderError(f"the PN532 rejected command {code:02X} (syntax error)")
            if isinstance(event, pn.Frame) and event.tfi == pn.TFI_PN532 and event.code == code + 1:
                return event.data[1:]
            # a stray ACK or an old answer: ignore

    def _await_ack(self) -> bool:
        deadline = time.monotonic() + self.ack_timeout
        while True:
            event = self._event(deadline)
            if event is None:
                return False
            if isinstance(event, pn.AckFrame):
                return True
            if isinstance(event, pn.ErrorFrame):
                raise ReaderError("the PN532 answered with a syntax-error frame")

    def _drain(self) -> None:
        """Drop whatever an aborted command may still send."""
        time.sleep(0.005)
        assert self._serial is not None
        try:
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass
        self._parser.clear()
        self._pending.clear()

    # --- reader operations ----------------------------------------------------------

    def set_passive_retries(self, retries: int) -> None:
        """MxRtyPassiveActivation: 0xFF waits for a card for ever (until aborted)."""
        if self._retries != retries:
            self.command(pn.RF_CONFIGURATION, bytes([0x05, 0xFF, 0x01, retries]))
            self._retries = retries

    def wait_for_card(self, timeout: float) -> Pn532MifareLink | None:
        """Block until a type A card is in the field (or ``timeout``): a link to it.

        Uses InListPassiveTarget with endless retries, aborted with an ACK on timeout, so
        a card is seen the moment it arrives without the host polling.
        """
        self.set_passive_retries(0xFF)
        answer = self.command(pn.IN_LIST_PASSIVE_TARGET, b"\x01\x00", timeout=timeout,
                              abort_on_timeout=True)
        return self._link_from(answer)

    def card_present(self) -> Pn532MifareLink | None:
        """One quick look for a card (a single activation attempt)."""
        self.set_passive_retries(0x00)
        return self._link_from(self.command(pn.IN_LIST_PASSIVE_TARGET, b"\x01\x00"))

    def wait_for_removal(self, timeout: float, interval: float = 0.05) -> bool:
        """True once no card answers any more (the member took it away)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.card_present() is None:
                return True
            time.sleep(interval)
        return False

    def _link_from(self, answer: bytes) -> Pn532MifareLink | None:
        if not answer or answer[0] == 0:
            return None
        # NbTg, Tg, SENS_RES(2), SEL_RES, NFCIDLength, NFCID...
        if len(answer) < 6:
            raise ReaderError(f"InListPassiveTarget answer too short ({answer.hex()})")
        tg, atqa, sak, uid_len = answer[1], answer[2:4], answer[4], answer[5]
        uid = answer[6:6 + uid_len]
        if uid_len not in (4, 7, 10) or len(uid) != uid_len:
            raise ReaderError(f"InListPassiveTarget answer with a {uid_len}-byte UID "
                              f"field holding {len(uid)} bytes: not a type A card")
        return Pn532MifareLink(self, tg, uid, atqa, sak)

    def release(self) -> None:
        """Forget the selected card (InRelease) so the next tap starts clean."""
        self.command(pn.IN_RELEASE, b"\x00")

    def power_down(self) -> None:
        """Put the chip to sleep; the next command wakes it (wake-up preamble)."""
        self.command(pn.POWER_DOWN, b"\x10")  # wake on HSU
        self._parser.clear()
        self._write(pn.WAKEUP)


class Pn532MifareLink:
    """A MIFARE Classic card listed by a PN532 (target ``tg``)."""

    def __init__(self, chip: Pn532, tg: int, uid: bytes, atqa: bytes, sak: int) -> None:
        self.chip = chip
        self.tg = tg
        self._uid = bytes(uid)
        self.atqa = bytes(atqa)
        self.sak = sak

    def uid(self) -> bytes:
        return self._uid

    def _exchange(self, data: bytes, what: str,
                  refused: type[ReaderError] = AccessDenied) -> bytes:
        answer = self.chip.command(pn.IN_DATA_EXCHANGE, bytes([self.tg]) + data)
        if not answer:
            raise ReaderError(f"{what}: empty answer")
        status = answer[0] & 0x3F
        if status == pn.STATUS_OK:
            return answer[1:]
        if status in _CARD_GONE:
            raise CardRemoved(f"{what}: the card did not answer (status {status:02X})")
        if status == pn.STATUS_MIFARE_AUTH_ERROR:
            raise SectorAuthFailed(f"{what}: the card refused the key")
        raise refused(f"{what}: the card refused (status {status:02X})")

    def authenticate(self, block: int, key_type: KeyType, key: bytes) -> None:
        if len(key) != 6:
            raise ValueError("a MIFARE key is 6 bytes")
        self._exchange(bytes([int(key_type), block]) + bytes(key) + self._uid[-4:],
                       f"authenticate block {block}", refused=SectorAuthFailed)

    def read_block(self, block: int) -> bytes:
        data = self._exchange(bytes([pn.MIFARE_READ, block]), f"read block {block}")
        if len(data) != 16:
            raise ReaderError(f"read block {block}: {len(data)} bytes instead of 16")
        return data

    def write_block(self, block: int, data: bytes) -> None:
        if len(data) != 16:
            raise ValueError("a MIFARE Classic block is 16 bytes")
        self._exchange(bytes([pn.MIFARE_WRITE, block]) + bytes(data), f"write block {block}")

    def increment(self, block: int, amount: int) -> None:
        self._value(pn.MIFARE_INCREMENT, block, amount, "increment")

    def decrement(self, block: int, amount: int) -> None:
        self._value(pn.MIFARE_DECREMENT, block, amount, "decrement")

    def restore(self, block: int) -> None:
        self._value(pn.MIFARE_RESTORE, block, 0, "restore")

    def transfer(self, block: int) -> None:
        self._exchange(bytes([pn.MIFARE_TRANSFER, block]), f"transfer to block {block}")

    def _value(self, code: int, block: int, amount: int, what: str) -> None:
        if not 0 <= amount < 2**31:
            raise ValueError("value operation amount is 0..2^31-1")
        # MIFARE and the PN532 carry the amount little-endian (PC/SC Part 3 is MSB first)
        self._exchange(bytes([code, block]) + amount.to_bytes(4, "little"), f"{what} block {block}")
