"""PC/SC contactless readers (ACR122U and kin) through pyscard and pcscd.

The card speaks PC/SC Part 3 storage-card APDUs (:mod:`protocol.pcsc_apdu`); this
driver turns them into a :class:`~protocol.mifare.MifareClassicLink`. One
:class:`PcscReaders` watches any number of readers at once (an entry and an exit reader
on one gate) and survives readers being unplugged and plugged back, and pcscd
restarting: it reports card arrivals per reader and opens a link to the card.

Failure mapping, so the card layer can act:

* card gone (``SCARD_W_REMOVED_CARD``, ``SCARD_E_NOT_TRANSACTED``, ``SCARD_E_NO_SMARTCARD``,
  an empty answer) → :class:`CardRemoved`. A transmit that failed may still have been
  carried out by the card: the card layer's tear handling must re-read.
* reader or daemon gone → :class:`ReaderUnavailable`.
* ``63 00`` to authenticate → :class:`SectorAuthFailed`; to a read, write or value
  operation → :class:`AccessDenied` (access bits, or sector not authenticated).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from smartcard import scard

from protocol import pcsc_apdu as apdu
from protocol.mifare import (
    AccessDenied,
    CardRemoved,
    KeyType,
    ReaderError,
    ReaderUnavailable,
    SectorAuthFailed,
)

log = logging.getLogger(__name__)

PNP_NOTIFICATION = "\\\\?PnP?\\Notification"

_CARD_GONE = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NOT_TRANSACTED,
              scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_RESET_CARD,
              scard.SCARD_W_UNPOWERED_CARD, scard.SCARD_W_UNRESPONSIVE_CARD,
              scard.SCARD_E_INVALID_HANDLE}
_READER_GONE = {scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE,
                scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED,
                scard.SCARD_E_NO_READERS_AVAILABLE, scard.SCARD_E_INVALID_VALUE}


def _u32(code: int) -> int:
    return code & 0xFFFFFFFF


_CARD_GONE = {_u32(c) for c in _CARD_GONE}
_READER_GONE = {_u32(c) for c in _READER_GONE}


def _fail(what: str, code: int) -> ReaderError:
    code = _u32(code)
    message = f"{what}: {scard.SCardGetErrorMessage(code)} (0x{code:08X})"
    if code in _CARD_GONE:
        return CardRemoved(message)
    if code in _READER_GONE:
        return ReaderUnavailable(message)
    return ReaderError(message)


class PcscMifareLink:
    """A MIFARE Classic card on a PC/SC reader, spoken to with Part 3 APDUs.

    Keys go to reader key slot 0 (``FF 82``) only when they differ from the last one
    loaded, which saves one APDU per sector on the usual tap. ``increment``/``decrement``
    /``restore`` are held until ``transfer``: Part 3 has no bare "increment", only
    "increment and transfer back to the same block" (and "restore to another block").

    ``read_blocks``/``write_blocks`` move up to three blocks of a sector in one APDU on
    readers with ACS's "Multiple Blocks Mode" (ACR1252U and later), and one block per
    APDU on the others (ACR122U). ``multi_block`` says which; None means "find out": the
    first multi-block read tries it, and a reader that refuses it is asked block by
    block from then on (the answer is handed to ``on_block_mode`` so that the next card
    on this reader starts out knowing).
    """

    def __init__(self, context: int, card: int, protocol: int, reader: str, *,
                 multi_block: bool | None = None,
                 on_block_mode: Callable[[bool], None] | None = None) -> None:
        self._context = context
        self._card = card
        self._protocol = protocol
        self.reader = reader
        self.multi_block = multi_block
        self._on_block_mode = on_block_mode
        self._loaded_key: bytes | None = None
        self._last_auth: bytes | None = None
        self._pending: tuple[str, int, int] | None = None
        self.apdus = 0
        data = self._command(apdu.get_uid(), "get UID")
        if not data:
            raise CardRemoved("the reader returned no UID")
        if len(data) not in (4, 7, 10):
            raise ReaderError(f"the reader returned a {len(data)}-byte UID (4, 7 or 10 expected)")
        self._uid = data

    # --- MifareClassicLink -----------------------------------------------------------

    def uid(self) -> bytes:
        return self._uid

    def authenticate(self, block: int, key_type: KeyType, key: bytes) -> None:
        if self._loaded_key != key:
            self._command(apdu.load_key(0, key), "load key")
            self._loaded_key = key
        command = apdu.authenticate(block, int(key_type), 0)
        self._last_auth = None
        self._command(command, f"authenticate block {block}", refused=SectorAuthFailed)
        self._last_auth = command

    def read_block(self, block: int) -> bytes:
        data = self._command(apdu.read_binary(block), f"read block {block}")
        if len(data) != 16:
            raise ReaderError(f"read block {block}: {len(data)} bytes instead of 16")
        return data

    def write_block(self, block: int, data: bytes) -> None:
        self._command(apdu.update_binary(block, bytes(data)), f"write block {block}")

    def read_blocks(self, block: int, count: int) -> bytes:
        """``count`` consecutive data blocks of one sector, in one APDU where the reader can."""
        if count == 1 or self.multi_block is False:
            return b"".join(self.read_block(block + i) for i in range(count))
        response = self.transmit(apdu.read_binary(block, 16 * count))
        data, sw = apdu.split_response(response)
        if sw == apdu.SW_OK and len(data) == 16 * count:
            self._learned(True)
            return data
        if self.multi_block is None and self._last_auth is not None:
            # The reader refused the long read (an ACR122U says 63 00 or 67 00): learn it,
            # open the sector again in case the card dropped its session, go block by block.
            log.info("reader %s reads one block at a time (answer %s)", self.reader,
                     sw.hex(" ").upper())
            self._learned(False)
            self._command(self._last_auth, "authenticate again", refused=SectorAuthFailed)
            return self.read_blocks(block, count)
        if sw == apdu.SW_FAILED:
            raise AccessDenied(f"read blocks {block}..{block + count - 1}: the card refused (63 00)")
        raise ReaderError(f"read blocks {block}..{block + count - 1}: status {sw.hex(' ').upper()}")

    def write_blocks(self, block: int, data: bytes) -> None:
        """Consecutive data blocks of one sector, in one APDU where the reader can. The
        blocks land in order: a card that leaves half-way keeps the first ones."""
        count = len(data) // 16
        if count == 1 or not self.multi_block:  # unknown: probe with reads, never writes
            for i in range(count):
                self.write_block(block + i, data[16 * i:16 * (i + 1)])
            return
        self._command(apdu.update_binary(block, bytes(data)),
                      f"write blocks {block}..{block + count - 1}")

    def _learned(self, multi_block: bool) -> None:
        if self.multi_block is None and self._on_block_mode is not None:
            self._on_block_mode(multi_block)
        self.multi_block = multi_block

    def increment(self, block: int, amount: int) -> None:
        self._hold("inc", block, amount)

    def decrement(self, block: int, amount: int) -> None:
        self._hold("dec", block, amount)

    def restore(self, block: int) -> None:
        self._hold("restore", block, 0)

    def transfer(self, block: int) -> None:
        if self._pending is None:
            raise ValueError("transfer without increment, decrement or restore first")
        op, source, amount = self._pending
        self._pending = None
        if op == "restore":
            self._command(apdu.restore_value(source, block), f"restore {source}→{block}")
        elif source == block:
            vop = apdu.ValueOp.INCREMENT if op == "inc" else apdu.ValueOp.DECREMENT
            self._command(apdu.value_operation(block, vop, amount), f"{op} block {block}")
        else:
            # Part 3 cannot increment into another block: compute it and store there.
            value = self.read_value(source)
            value = value + amount if op == "inc" else value - amount
            self._command(apdu.value_operation(block, apdu.ValueOp.STORE, value),
                          f"store block {block}")

    # --- extras ----------------------------------------------------------------------

    def read_value(self, block: int) -> int:
        """The value of a value block (``FF B1``), already in host order."""
        try:
            return apdu.decode_value(self._command(apdu.read_value(block), f"read value {block}"))
        except apdu.ApduError as exc:
            raise ReaderError(f"read value {block}: {exc}") from None

    def transmit(self, command: bytes) -> bytes:
        """Send one raw APDU; returns data + status word (for tools and the bench)."""
        hresult, response = scard.SCardTransmit(self._card, self._protocol, list(command))
        if hresult != scard.SCARD_S_SUCCESS:
            raise _fail("transmit", hresult)
        if len(response) < 2:
            raise CardRemoved("the reader returned no answer (card left the field)")
        self.apdus += 1
        return bytes(response)

    def close(self) -> None:
        """Let the card go (``SCARD_LEAVE_CARD``); errors on the way out are ignored."""
        if self._card:
            scard.SCardDisconnect(self._card, scard.SCARD_LEAVE_CARD)
            self._card = 0

    def __enter__(self) -> PcscMifareLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------

    def _hold(self, op: str, block: int, amount: int) -> None:
        if amount < 0:
            raise ValueError("value operation amount must not be negative")
        self._pending = (op, block, amount)

    def _command(self, command: bytes, what: str,
                 refused: type[ReaderError] = AccessDenied) -> bytes:
        data, sw = apdu.split_response(self.transmit(command))
        if sw == apdu.SW_OK:
            return data
        if sw == apdu.SW_FAILED:
            raise refused(f"{what}: the card refused (63 00)")
        raise ReaderError(f"{what}: status {sw.hex(' ').upper()}")


@dataclass(frozen=True)
class ReaderEvent:
    """A card arrived on (``present``) or left (``not present``) the reader ``reader``."""

    reader: str
    present: bool
    atr: bytes = b""
    at: float = 0.0  # time.perf_counter() when pcscd told us


class PcscReaders:
    """Watch several PC/SC readers at once and open links to the cards on them.

    ``names`` are reader names or prefixes (``"ACS ACR122U"`` matches
    ``"ACS ACR122U PICC Interface 00 00"``); with none, every reader is watched.
    Readers may come and go: a reader that disappears is reported once as a card
    leaving, and is picked up again when it returns.
    """

    def __init__(self, names: list[str] | None = None, *, multi_block: bool | None = None) -> None:
        self.names = list(names or [])
        self.multi_block = multi_block  # None: learn per reader (PcscMifareLink.read_blocks)
        self._block_modes: dict[str, bool] = {}
        self._context: int | None = None
        self._states: dict[str, int] = {}
        self._pnp_state = scard.SCARD_STATE_UNAWARE

    # --- context and reader list ----------------------------------------------------

    def _ctx(self) -> int:
        if self._context is None:
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                raise _fail("connect to pcscd", hresult)
            self._context = context
        return self._context

    def _reset_context(self) -> None:
        if self._context is not None:
            scard.SCardReleaseContext(self._context)
        self._context = None
        self._pnp_state = scard.SCARD_STATE_UNAWARE

    def readers(self) -> list[str]:
        """The readers pcscd knows now that match our names."""
        hresult, found = scard.SCardListReaders(self._ctx(), [])
        if _u32(hresult) in (_u32(scard.SCARD_E_NO_READERS_AVAILABLE),):
            return []
        if hresult != scard.SCARD_S_SUCCESS:
            if _u32(hresult) in _READER_GONE:
                self._reset_context()
            raise _fail("list readers", hresult)
        if not self.names:
            return list(found)
        return [r for r in found if any(r == n or r.startswith(n) for n in self.names)]

    # --- events ----------------------------------------------------------------------

    def wait(self, timeout: float) -> list[ReaderEvent]:
        """Block up to ``timeout`` s for cards arriving or leaving; [] on timeout.

        Survives pcscd restarts and reader unplugging (it waits for them to return).
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                events = self._wait_once(remaining)
            except ReaderUnavailable as exc:
                log.warning("PC/SC: %s; retrying", exc)
                self._reset_context()
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            if events:
                return events

    def _wait_once(self, timeout: float) -> list[ReaderEvent]:
        present = self.readers()
        events: list[ReaderEvent] = []
        for gone in [r for r in self._states if r not in present]:
            if self._states.pop(gone) & scard.SCARD_STATE_PRESENT:
                events.append(ReaderEvent(gone, False, at=time.perf_counter()))
        if events:
            return events
        query = [(r, self._states.get(r, scard.SCARD_STATE_UNAWARE)) for r in present]
        query.append((PNP_NOTIFICATION, self._pnp_state))
        hresult, states = scard.SCardGetStatusChange(self._ctx(), int(timeout * 1000), query)
        now = time.perf_counter()
        if _u32(hresult) == _u32(scard.SCARD_E_TIMEOUT):
            return []
        if hresult != scard.SCARD_S_SUCCESS:
            raise _fail("wait for cards", hresult)
        for name, event_state, atr in states:
            if name == PNP_NOTIFICATION:
                self._pnp_state = event_state & ~scard.SCARD_STATE_CHANGED
                continue
            before = self._states.get(name)
            self._states[name] = event_state & ~scard.SCARD_STATE_CHANGED
            was = before is not None and bool(before & scard.SCARD_STATE_PRESENT)
            now_present = bool(event_state & scard.SCARD_STATE_PRESENT) and not (
                event_state & (scard.SCARD_STATE_MUTE | scard.SCARD_STATE_UNAVAILABLE))
            if now_present != was:
                events.append(ReaderEvent(name, now_present, bytes(atr), now))
            elif now_present and before is not None and (before >> 16) != (event_state >> 16):
                # taken away and put back between two polls: report both
                events.append(ReaderEvent(name, False, at=now))
                events.append(ReaderEvent(name, True, bytes(atr), now))
        return events

    def wait_for_card(self, timeout: float, reader: str | None = None) -> ReaderEvent | None:
        """The next card arrival (on ``reader``, or any watched reader), or None."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            for event in self.wait(remaining):
                if event.present and (reader is None or event.reader == reader):
                    return event
        return None

    def wait_for_removal(self, reader: str, timeout: float) -> bool:
        """True once the card on ``reader`` has gone (or it already had)."""
        if not self._states.get(reader, 0) & scard.SCARD_STATE_PRESENT:
            return True
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            for event in self.wait(remaining):
                if event.reader == reader and not event.present:
                    return True
        return False

    def connect(self, reader: str) -> PcscMifareLink:
        """Open a link to the card on ``reader`` (CardRemoved if there is none)."""
        for attempt in range(3):
            hresult, card, protocol = scard.SCardConnect(
                self._ctx(), reader, scard.SCARD_SHARE_SHARED,
                scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
            # pcscd may be powering an idle card down just as we connect: try again
            if _u32(hresult) != _u32(scard.SCARD_W_UNPOWERED_CARD) or attempt == 2:
                break
            time.sleep(0.02)
        if hresult != scard.SCARD_S_SUCCESS:
            raise _fail(f"connect to the card on {reader}", hresult)
        try:
            mode = self.multi_block if self.multi_block is not None else self._block_modes.get(reader)
            return PcscMifareLink(self._ctx(), card, protocol, reader, multi_block=mode,
                                  on_block_mode=lambda m: self._block_modes.__setitem__(reader, m))
        except ReaderError:
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
            raise

    def close(self) -> None:
        self._reset_context()
