"""Our card application's memory on any MIFARE Classic link (PC/SC, PN532, the simulator).

:class:`CardMemory` reads the newest valid state copy with the read-only key A and writes
a new state with key B: first the copy that is not the newest (the commit), then the
other one (the mirror). Where the card is pulled away decides what happened:

* before the last block of the commit has been sent: the card keeps the old state;
* during the last block of the commit: unknown until the card is read again
  (the tap runner's intent journal settles it at the card's next tap); the chip may
  or may not have stored it;
* during the mirror: the new state is on the card (the mirror only repairs).

Which operation runs and what gets recorded is :mod:`terminal_fw.tap`'s business; this
module only moves card states on and off the chip.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from protocol.card_format import (
    APP_SECTORS,
    COPY_SECTORS,
    CardRead,
    decode_application,
    encode_application,
    state_writes,
)
from protocol.card_state import CardState
from protocol.keys import TRANSPORT_KEY, ChainKeys, trailer
from protocol.mifare import (
    AccessDenied,
    KeyType,
    MifareClassicLink,
    ReaderError,
    SectorAuthFailed,
)
from protocol.products import Catalogue


def read_run(link: MifareClassicLink, block: int, count: int) -> list[bytes]:
    """``count`` consecutive blocks of one sector: one command on links that move several
    blocks at once (``read_blocks``, e.g. a multi-block PC/SC reader), else one each."""
    multi = getattr(link, "read_blocks", None)
    if multi is not None and count > 1:
        data = bytes(multi(block, count))
        return [data[16 * i:16 * (i + 1)] for i in range(count)]
    return [bytes(link.read_block(block + i)) for i in range(count)]


def write_run(link: MifareClassicLink, writes: list[tuple[int, bytes]]) -> None:
    """Write ``(block, data)`` pairs in order, consecutive blocks in one command where the
    link can (``write_blocks``). Blocks land in order either way."""
    multi = getattr(link, "write_blocks", None)
    i = 0
    while i < len(writes):
        j = i + 1
        while j < len(writes) and writes[j][0] == writes[j - 1][0] + 1:
            j += 1
        if multi is not None and j - i > 1:
            multi(writes[i][0], b"".join(bytes(d) for _, d in writes[i:j]))
        else:
            for block, data in writes[i:j]:
                link.write_block(block, data)
        i = j


class WriteStatus(enum.Enum):
    REFUSED = "refused"  # nothing written (the refusal says why)
    WRITTEN = "written"  # the new state is on the card: sign the records
    NOT_WRITTEN = "not written"  # the card left before the commit: old state, no records
    UNCONFIRMED = "unconfirmed"  # the card left during the commit's last write: resolve()


class CardMemory:
    """Read and write the OneCard application on one card.

    The I/O is kept lean because every card command is a reader round trip at the gate:
    a writer (``read(for_write=True)``) opens the two state sectors with key B, so the
    sector it read last is still open for the commit; the three data blocks of a sector
    move in one command on readers that can (:func:`read_run`/:func:`write_run`).
    """

    def __init__(self, link: MifareClassicLink, keys: ChainKeys, catalogue: Catalogue) -> None:
        self.link = link
        self.keys = keys
        self.catalogue = catalogue
        self._uid: bytes | None = None
        self._open: tuple[int, KeyType] | None = None  # the sector the card has authenticated
        self.pending_mirror: list[tuple[int, bytes]] = []

    @property
    def uid(self) -> bytes:
        if self._uid is None:
            self._uid = bytes(self.link.uid())
        return self._uid

    def _authenticate(self, sector: int, key_type: KeyType) -> None:
        if self._open == (sector, key_type):
            return
        key = (self.keys.key_a if key_type is KeyType.A else self.keys.key_b)(self.uid, sector)
        self._open = None
        self.link.authenticate(sector * 4, key_type, key)
        self._open = (sector, key_type)

    def read_blocks(self, *, for_write: bool = False) -> dict[int, bytes]:
        """The nine data blocks: the header with key A, the state copies with key A
        (or key B when the caller is about to write them)."""
        blocks: dict[int, bytes] = {}
        for sector in APP_SECTORS:
            writer = for_write and sector in COPY_SECTORS
            self._authenticate(sector, KeyType.B if writer else KeyType.A)
            for i, data in enumerate(read_run(self.link, sector * 4, 3)):
                blocks[sector * 4 + i] = data
        return blocks

    def read(self, *, for_write: bool = False) -> CardRead:
        """The card's newest valid state. Raises CardFormatError (not ours, tampered,
        damaged, ...), SectorAuthFailed (keys of another chain, or a blank card),
        CardRemoved."""
        try:
            blocks = self.read_blocks(for_write=for_write)
        except ReaderError:
            self._open = None
            raise
        return decode_application(blocks, self.uid, self.keys, self.catalogue)

    def _write_sector_blocks(self, writes: list[tuple[int, bytes]]) -> None:
        self._authenticate(writes[0][0] // 4, KeyType.B)
        write_run(self.link, writes)

    def write(self, read: CardRead, new_state: CardState, *,
              before_last: Callable[[], None] | None = None, mirror: bool = True) -> WriteStatus:
        """Move the card from ``read`` to ``new_state``; reader errors become a status.

        ``before_last`` runs just before the commit's last block, the one that makes the
        new state count (the crash-safe caller waits there for its intent to be on disk;
        an exception from it stops the write with the old state still on the card). With
        ``mirror=False`` the other copy is left for :meth:`write_mirror`, so the caller
        can write it while its records go to disk.
        """
        commit, mirror_writes = state_writes(read, new_state, self.keys, self.catalogue)
        try:
            self._authenticate(commit[0][0] // 4, KeyType.B)
            write_run(self.link, commit[:-1])
        except ReaderError:
            self._open = None
            return WriteStatus.NOT_WRITTEN  # the untouched copy still holds the old state
        if before_last is not None:
            before_last()
        try:
            self.link.write_block(*commit[-1])
        except (AccessDenied, SectorAuthFailed):
            self._open = None
            return WriteStatus.NOT_WRITTEN  # the card refused the block: nothing stored
        except ReaderError:
            self._open = None
            return WriteStatus.UNCONFIRMED  # gone mid-write: it may or may not have landed
        self.pending_mirror = mirror_writes
        if mirror:
            self.write_mirror()
        return WriteStatus.WRITTEN

    def write_mirror(self) -> bool:
        """Bring the other copy up to date after a commit. False if the card left first:
        the commit stands, and the next write repairs the other copy."""
        writes, self.pending_mirror = self.pending_mirror, []
        if not writes:
            return True
        try:
            self._write_sector_blocks(writes)
        except ReaderError:
            self._open = None
            return False
        return True

    def personalise(self, state: CardState) -> None:
        """Write header, both copies and our sector trailers. Each sector is opened with
        our key B, or the transport key on a blank card. A torn issue is simply repeated."""
        blocks = encode_application(state, self.uid, self.keys, self.catalogue)
        self._open = None  # this opens the sectors itself, with the transport key if need be
        for sector in APP_SECTORS:
            key_b = self.keys.key_b(self.uid, sector)
            try:
                self.link.authenticate(sector * 4, KeyType.B, key_b)
            except SectorAuthFailed:
                self.link.authenticate(sector * 4, KeyType.A, TRANSPORT_KEY)
            for b in range(sector * 4, sector * 4 + 3):
                self.link.write_block(b, blocks[b])
            self.link.write_block(sector * 4 + 3, trailer(self.keys.key_a(self.uid, sector), key_b))
