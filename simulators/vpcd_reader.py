"""A virtual contactless PC/SC reader: a vsmartcard-vpcd client answering Part 3 APDUs.

pcscd loads the vpcd driver, which listens on TCP 35963 (reader ``Virtual PCD 00 00``)
and 35964 (``Virtual PCD 00 01``). This module connects to that port as the "card
side" and answers what pcscd forwards with the card model currently on its
:class:`~simulators.card_field.CardField`, so the terminal's pyscard driver talks to the
real pcscd exactly as it would to an ACR122U. Any other PC/SC tool can talk to it too.

vpcd protocol: each message is a 2-byte big-endian length and a payload. A 1-byte
payload is a control code (0 power off, 1 power on, 2 reset, 4 get ATR); anything
longer is an APDU whose answer we send back. With no card in the field we answer the ATR
request with an empty payload, which vpcd reports to pcscd as "no card".

vpcd writes length and payload in two segments; Linux delays the ACK of the first one
(delayed ACK, ~40 ms) unless we set ``TCP_QUICKACK`` after every receive. Without it
every APDU costs ~40 ms. Loopback only: vpcd itself listens on all interfaces, so never
point this at another host on a shared network.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from typing import Any

from protocol import pcsc_apdu as apdu
from protocol.card_format import decode_value_block, encode_value_block
from protocol.mifare import AccessDenied, CardRemoved, KeyType, ReaderError, SectorAuthFailed
from simulators.card_field import CardField, card_uid

log = logging.getLogger(__name__)

VPCD_BASE_PORT = 35963
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4


def reader_name(port: int) -> str:
    """The name pcscd gives the vpcd slot that listens on ``port`` (default config)."""
    return f"Virtual PCD 00 {port - VPCD_BASE_PORT:02X}"


class _CardLeft(Exception):
    """The card left the field in the middle of an APDU."""


class StorageCardReader:
    """The reader chip's side of Part 3: key slots, the session, APDU → chip model.

    Kept apart from the socket so it can be tested and reused (a USB CCID gadget, a
    future relay) without vpcd. Key slots are the reader's volatile memory (they survive
    a card change, as on an ACR122U); the authenticated sector belongs to the card.

    ``multi_block`` picks the reader model: True answers READ/UPDATE BINARY of up to
    three consecutive data blocks in one APDU (ACS "Multiple Blocks Mode": ACR1252U,
    ACR1255U-J1, ACM1252U); False takes one block at a time, as the ACR122U does, and
    refuses longer ones with ``67 00`` before they reach the card.
    """

    def __init__(self, field: CardField, *, multi_block: bool = True) -> None:
        self.field = field
        self.multi_block = multi_block
        self.keys: list[bytes | None] = [None] * apdu.KEY_SLOTS
        self._session_card: Any | None = None

    def atr(self) -> bytes:
        return apdu.ATR_MIFARE_CLASSIC_1K if self.field.card is not None else b""

    def power_on(self) -> None:
        card = self.field.card
        self._session_card = card
        if card is not None and hasattr(card, "enter_field"):
            card.enter_field()  # power cycle: no sector is authenticated any more

    def power_off(self) -> None:
        self._session_card = None

    def transmit(self, command: bytes) -> bytes | None:
        """Answer one APDU; None means the card is gone (the transmit must fail)."""
        card = self.field.card
        if card is None or (self._session_card is not None and card is not self._session_card):
            return None
        try:
            cmd = apdu.parse_command(command)
        except apdu.ApduError as exc:
            return exc.status
        try:
            return self.field.card_io(card, lambda: self._execute(card, cmd))
        except CardRemoved:
            return None
        except (SectorAuthFailed, AccessDenied, ReaderError, ValueError, IndexError):
            return apdu.SW_FAILED

    def _execute(self, card: Any, cmd: apdu.Command) -> bytes:
        if isinstance(cmd, apdu.GetUid):
            return card_uid(card) + apdu.SW_OK
        if isinstance(cmd, apdu.GetAts):
            return apdu.SW_NOT_SUPPORTED  # MIFARE Classic has no ATS
        if isinstance(cmd, apdu.LoadKey):
            self.keys[cmd.slot] = cmd.key
            return apdu.SW_OK
        if isinstance(cmd, apdu.Authenticate):
            if cmd.slot >= apdu.KEY_SLOTS or self.keys[cmd.slot] is None:
                return apdu.SW_FAILED
            card.authenticate(cmd.block, KeyType(cmd.key_type), self.keys[cmd.slot])
            return apdu.SW_OK
        if isinstance(cmd, apdu.ReadBinary):
            count = self._block_count(cmd.block, cmd.length)
            if count is None:
                return apdu.SW_WRONG_LENGTH
            return b"".join(bytes(card.read_block(cmd.block + i)) for i in range(count)) + apdu.SW_OK
        if isinstance(cmd, apdu.UpdateBinary):
            count = self._block_count(cmd.block, len(cmd.data))
            if count is None:
                return apdu.SW_WRONG_LENGTH
            for i in range(count):  # block by block: a tear leaves the first ones written
                card.write_block(cmd.block + i, cmd.data[16 * i:16 * (i + 1)])
            return apdu.SW_OK
        if isinstance(cmd, apdu.ValueOperation):
            if cmd.op is apdu.ValueOp.STORE:
                card.write_block(cmd.block, encode_value_block(cmd.amount, cmd.block))
            elif cmd.op is apdu.ValueOp.INCREMENT:
                card.increment(cmd.block, cmd.amount)
                card.transfer(cmd.block)
            else:
                card.decrement(cmd.block, cmd.amount)
                card.transfer(cmd.block)
            return apdu.SW_OK
        if isinstance(cmd, apdu.RestoreValue):
            card.restore(cmd.source)
            card.transfer(cmd.target)
            return apdu.SW_OK
        if isinstance(cmd, apdu.ReadValue):
            decoded = decode_value_block(bytes(card.read_block(cmd.block)))
            if decoded is None:
                return apdu.SW_FAILED
            return apdu.encode_value(decoded[0]) + apdu.SW_OK
        return apdu.SW_NOT_SUPPORTED


    def _block_count(self, block: int, length: int) -> int | None:
        """How many blocks a READ/UPDATE BINARY covers; None if this reader refuses it.
        Multi-block stays on the data blocks of one sector (never a trailer)."""
        if length == 16:
            return 1
        if not self.multi_block or length % 16 or not 16 < length <= apdu.MULTI_BLOCK_MAX:
            return None
        count = length // 16
        if block % 4 + count > 3:
            return None
        return count


class VpcdReader:
    """Connects a :class:`CardField` to pcscd through vpcd, with unplug/replug.

    vpcd's model is "a connected client is an inserted card": it asks for the ATR on
    every poll (~400 ms) and drops the client whose answer is empty. So this reader
    connects while a card is on its field and disconnects when the card leaves (between
    commands, or in the middle of one). After a disconnect it stays away for a little
    over two poll periods, so pcscd always sees the removal, even when the next card is
    put down at once. ``unplug()`` disconnects and stays away, like pulling a USB reader;
    ``replug()`` comes back.
    """

    #: how long to stay disconnected after a card left, so pcscd's poll notices it
    #: (a caller that itself waits for pcscd's removal event may set ``removal_hold`` 0)
    REMOVAL_HOLD_S = 0.9

    def __init__(self, field: CardField, port: int = VPCD_BASE_PORT,
                 host: str = "127.0.0.1", *, multi_block: bool = True) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the virtual reader only talks to vpcd over loopback")
        self.field = field
        self.host = host
        self.port = port
        self.reader = StorageCardReader(field, multi_block=multi_block)
        self.apdus_served = 0
        self._sock: socket.socket | None = None
        self._sock_card: Any | None = None
        self._lock = threading.Lock()
        self._plugged = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._left_at = 0.0
        self.removal_hold = self.REMOVAL_HOLD_S
        field.on_change(self._field_changed)

    @property
    def name(self) -> str:
        return reader_name(self.port)

    def start(self) -> VpcdReader:
        self._plugged.set()
        self._thread = threading.Thread(target=self._run, name=f"vpcd-{self.port}", daemon=True)
        self._thread.start()
        return self

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Wait until vpcd holds our connection (a card is on the field)."""
        return self._connected.wait(timeout)

    def unplug(self) -> None:
        self._plugged.clear()
        self._drop()

    def replug(self) -> None:
        self._plugged.set()

    def stop(self) -> None:
        self._stop.set()
        self._plugged.set()
        self._drop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> VpcdReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------------------

    def _field_changed(self, card: Any | None) -> None:
        with self._lock:
            stale = self._sock is not None and card is not self._sock_card
        if stale:
            self._drop()

    def _drop(self) -> None:
        with self._lock:
            sock, self._sock, self._sock_card = self._sock, None, None
        self._connected.clear()
        if sock is not None:
            self._left_at = time.monotonic()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _run(self) -> None:
        generation = self.field.generation
        while not self._stop.is_set():
            if not self._plugged.wait(0.2):
                continue
            card = self.field.card
            if card is None:
                self.field.wait_for_change(generation, 0.2)
                generation = self.field.generation
                continue
            hold = self._left_at + self.removal_hold - time.monotonic()
            if hold > 0:
                time.sleep(min(hold, 0.2))
                continue
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2)
            except OSError:
                time.sleep(0.2)  # vpcd not up yet (pcscd starting): try again
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sock, self._sock_card = sock, card
            if self.field.card is not card or not self._plugged.is_set():
                self._drop()
                continue
            self._connected.set()
            log.debug("virtual reader %s: card on, connected to vpcd", self.name)
            try:
                self._serve(sock)
            except (OSError, _CardLeft):
                pass
            finally:
                with self._lock:
                    mine = self._sock is sock
                if mine:
                    self._drop()
                else:
                    sock.close()
            self.reader.power_off()

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("vpcd closed the connection")
            buf += chunk
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return bytes(buf)

    def _send(self, sock: socket.socket, payload: bytes) -> None:
        sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            (length,) = struct.unpack(">H", self._recv_exact(sock, 2))
            payload = self._recv_exact(sock, length) if length else b""
            if length == 1:
                code = payload[0]
                if code == CTRL_ATR:
                    atr = self.reader.atr()
                    if not atr:
                        raise _CardLeft
                    self._send(sock, atr)
                elif code in (CTRL_ON, CTRL_RESET):
                    self.reader.power_on()
                elif code == CTRL_OFF:
                    self.reader.power_off()
                continue
            answer = self.reader.transmit(payload)
            self.apdus_served += 1
            if answer is None:
                # The card left mid-command. Dropping the connection makes vpcd fail the
                # transmit at once (the terminal sees the card gone); an empty answer
                # would stall it.
                raise _CardLeft
            self._send(sock, answer)
