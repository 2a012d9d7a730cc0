"""Our card application over any MIFARE Classic link (PC/SC, PN532, the simulator).

:class:`CardApp` reads the newest valid state copy with the read-only key A and writes
a new state with key B: first the copy that is not the newest (the commit), then the
other one (the mirror). Where the card is pulled away decides what happened:

* before the last block of the commit has been sent: the card keeps the old state;
* during the last block of the commit: unknown until the card is read again
  (:meth:`CardService.resolve`); the chip may or may not have stored it;
* during the mirror: the new state is on the card (the mirror only repairs).

:class:`CardService` runs one operation of :mod:`protocol.card_ops` end to end:
read, denylist check, decide, write, and says whether the records must be signed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from protocol.card_format import (
    APP_SECTORS,
    CardFormatError,
    CardRead,
    decode_application,
    encode_application,
    state_writes,
)
from protocol.card_ops import Done, check_denylist, issue, recall
from protocol.card_state import CardState, Refusal, RefusalReason
from protocol.keys import TRANSPORT_KEY, ChainKeys, trailer
from protocol.mifare import (
    AccessDenied,
    AuthenticationFailed,
    CardRemoved,
    KeyType,
    MifareClassicLink,
    ReaderError,
)
from protocol.products import Catalogue
from protocol.record import TransactionRecord


class WriteStatus(enum.Enum):
    REFUSED = "refused"  # nothing written (the refusal says why)
    WRITTEN = "written"  # the new state is on the card: sign the records
    NOT_WRITTEN = "not written"  # the card left before the commit: old state, no records
    UNCONFIRMED = "unconfirmed"  # the card left during the commit's last write: resolve()


@dataclass(frozen=True)
class CardResult:
    status: WriteStatus
    refusal: Refusal | None = None
    done: Done | None = None
    before: CardState | None = None

    @property
    def records(self) -> tuple[TransactionRecord, ...]:
        return self.done.records if self.done is not None and self.status is WriteStatus.WRITTEN else ()


class CardApp:
    """Read and write the OneCard application on one card."""

    def __init__(self, link: MifareClassicLink, keys: ChainKeys, catalogue: Catalogue) -> None:
        self.link = link
        self.keys = keys
        self.catalogue = catalogue
        self._uid: bytes | None = None

    @property
    def uid(self) -> bytes:
        if self._uid is None:
            self._uid = bytes(self.link.uid())
        return self._uid

    def read_blocks(self) -> dict[int, bytes]:
        """The nine data blocks, authenticated with each sector's key A."""
        blocks: dict[int, bytes] = {}
        for sector in APP_SECTORS:
            self.link.authenticate(sector * 4, KeyType.A, self.keys.key_a(self.uid, sector))
            for b in range(sector * 4, sector * 4 + 3):
                blocks[b] = bytes(self.link.read_block(b))
        return blocks

    def read(self) -> CardRead:
        """The card's newest valid state. Raises CardFormatError (not ours, tampered,
        damaged, ...), AuthenticationFailed (keys of another chain, or a blank card),
        CardRemoved."""
        return decode_application(self.read_blocks(), self.uid, self.keys, self.catalogue)

    def _write_sector_blocks(self, writes: list[tuple[int, bytes]]) -> None:
        sector = writes[0][0] // 4
        self.link.authenticate(sector * 4, KeyType.B, self.keys.key_b(self.uid, sector))
        for block, data in writes:
            self.link.write_block(block, data)

    def write(self, read: CardRead, new_state: CardState) -> WriteStatus:
        """Move the card from ``read`` to ``new_state``; reader errors become a status."""
        commit, mirror = state_writes(read, new_state, self.keys, self.catalogue)
        sector = commit[0][0] // 4
        try:
            self.link.authenticate(sector * 4, KeyType.B, self.keys.key_b(self.uid, sector))
            for block, data in commit[:-1]:
                self.link.write_block(block, data)
        except ReaderError:
            return WriteStatus.NOT_WRITTEN  # the untouched copy still holds the old state
        try:
            self.link.write_block(*commit[-1])
        except (AccessDenied, AuthenticationFailed):
            return WriteStatus.NOT_WRITTEN  # the card refused the block: nothing stored
        except ReaderError:
            return WriteStatus.UNCONFIRMED  # gone mid-write: it may or may not have landed
        try:
            self._write_sector_blocks(mirror)
        except ReaderError:
            pass  # the commit stands; the next write repairs the other copy
        return WriteStatus.WRITTEN

    def personalise(self, state: CardState) -> None:
        """Write header, both copies and our sector trailers. Each sector is opened with
        our key B, or the transport key on a blank card. A torn issue is simply repeated."""
        blocks = encode_application(state, self.uid, self.keys, self.catalogue)
        for sector in APP_SECTORS:
            key_b = self.keys.key_b(self.uid, sector)
            try:
                self.link.authenticate(sector * 4, KeyType.B, key_b)
            except AuthenticationFailed:
                self.link.authenticate(sector * 4, KeyType.A, TRANSPORT_KEY)
            for b in range(sector * 4, sector * 4 + 3):
                self.link.write_block(b, blocks[b])
            self.link.write_block(sector * 4 + 3, trailer(self.keys.key_a(self.uid, sector), key_b))


class CardService:
    """One card operation end to end over a link: the terminal's card-side step.

    ``operation`` is a function of :mod:`protocol.card_ops` (``take_visit``,
    ``recharge``, ...), called with the card's state and ``catalogue``/``ctx``.
    """

    def __init__(self, keys: ChainKeys, catalogue: Catalogue, *,
                 denylist: Callable[[], Collection[str]] = frozenset) -> None:
        self.keys = keys
        self.catalogue = catalogue
        self.denylist = denylist

    def run(self, link: MifareClassicLink, operation: Callable[..., Any], *args: Any,
            **kwargs: Any) -> CardResult:
        """Read, check the denylist, decide, write. CardRemoved while reading
        propagates (nothing happened); after that the status says what is on the card."""
        app = CardApp(link, self.keys, self.catalogue)
        if operation is issue:
            return self._issue(app, *args, **kwargs)
        try:
            read = app.read()
        except CardFormatError as exc:
            return CardResult(WriteStatus.REFUSED, exc.refusal())
        except AuthenticationFailed:
            return CardResult(WriteStatus.REFUSED, Refusal(RefusalReason.NOT_ONECARD,
                                                           "the card refuses this chain's keys"))
        ctx = kwargs["ctx"]
        listed = check_denylist(read.state, self.denylist(), ctx=ctx)
        if listed is not None:
            outcome: Done | Refusal = listed
        else:
            if operation in (recall, check_denylist):
                outcome = operation(read.state, *args, **kwargs)
            else:
                outcome = operation(read.state, *args, catalogue=self.catalogue, **kwargs)
        if isinstance(outcome, Refusal):
            return CardResult(WriteStatus.REFUSED, outcome, before=read.state)
        status = app.write(read, outcome.state)
        return CardResult(status, outcome.refusal, outcome, read.state)

    def _issue(self, app: CardApp, *args: Any, force: bool = False, **kwargs: Any) -> CardResult:
        try:
            previous: CardState | None = app.read().state
        except AuthenticationFailed:
            previous = None  # blank (transport keys) or half-personalised
        except CardFormatError as exc:
            if exc.reason is not RefusalReason.NOT_ONECARD and not force:
                return CardResult(WriteStatus.REFUSED, exc.refusal())
            previous = None
        outcome = issue(previous, *args, catalogue=self.catalogue, **kwargs)
        if isinstance(outcome, Refusal):
            return CardResult(WriteStatus.REFUSED, outcome, before=previous)
        try:
            app.personalise(outcome.state)
        except CardRemoved:
            return CardResult(WriteStatus.UNCONFIRMED, None, outcome, previous)
        return CardResult(WriteStatus.WRITTEN, None, outcome, previous)

    def resolve(self, link: MifareClassicLink, result: CardResult) -> CardResult:
        """After an UNCONFIRMED write, read the card again: WRITTEN if the new state is
        there, NOT_WRITTEN if the old one is. Raises CardRemoved if it left again."""
        if result.status is not WriteStatus.UNCONFIRMED or result.done is None:
            return result
        app = CardApp(link, self.keys, self.catalogue)
        try:
            now = app.read().state
        except (CardFormatError, AuthenticationFailed):
            return CardResult(WriteStatus.NOT_WRITTEN, result.refusal, result.done, result.before)
        landed = now == result.done.state
        status = WriteStatus.WRITTEN if landed else WriteStatus.NOT_WRITTEN
        return CardResult(status, result.refusal, result.done, result.before)

