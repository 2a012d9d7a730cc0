"""The archive of acknowledged records: what a restore from backup must not lose.

A terminal deletes a record once HQ acknowledged it. A backup taken at 02:00 and a disk
lost at 15:00 would lose every record acknowledged in between, and the terminals no
longer hold them. So HQ appends every signed record it holds (stored, or recognised as
a duplicate of a stored one) to this archive *after* the batch committed and *before*
the batch's acks are published, and fsyncs it first (:meth:`AckArchive.append`).
After a restore, ``onecard hq replay-archive`` feeds the whole archive through ingest:
records the backup already holds are duplicates, the others are stored and posted.

On disk: a folder of segment files ``records-000001.seg``, ... Each record is one
frame, ``length (4 bytes, big-endian) | CRC-32 of the payload (4 bytes) | payload``, the
payload being the record's wire bytes (signed body + Ed25519 signature). A segment is
closed at :data:`SEGMENT_BYTES`; a torn last frame (a crash mid-write: its batch was
never acknowledged) is cut off when the archive is opened again. One write and one
fsync per batch: the cost is bounded by the batch, not by the archive's size.

If a write or fsync fails the archive refuses every later append (:class:`ArchiveFailed`),
and ingest acknowledges nothing more until HQ is restarted on a working disk: an ack
must never cover a record the archive does not hold.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024
#: The largest record payload accepted (a record's wire form is well under 1 KB).
MAX_FRAME = 64 * 1024
_HEADER = struct.Struct(">II")
_NAME = re.compile(r"^records-(\d{6,})\.seg$")


class ArchiveFailed(RuntimeError):
    """The archive could not be made durable: no ack may be published."""


@dataclass
class ArchiveRead:
    """What reading the archive found: the payloads, and damaged frames skipped."""

    records: int = 0
    damaged: int = 0
    segments: int = 0


def _segments(folder: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_file() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _good_length(path: Path) -> int:
    """Bytes of ``path`` up to the first torn or damaged frame."""
    good = 0
    with path.open("rb") as fh:
        while True:
            header = fh.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return good
            length, crc = _HEADER.unpack(header)
            if length > MAX_FRAME:
                return good
            payload = fh.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return good
            good += _HEADER.size + length


class AckArchive:
    """Append-only, fsync'd segments of acknowledged records (see the module docstring).

    Thread-safe: several commit threads of one process may append.
    """

    def __init__(self, folder: Path | str, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._failed: str | None = None
        segments = _segments(self.folder)
        if segments:
            last = segments[-1]
            good = _good_length(last)
            if good < last.stat().st_size:
                log.warning("archive segment %s ends in a torn frame (a crash mid-write, "
                            "never acknowledged); cutting it at %d bytes", last.name, good)
                with last.open("r+b") as fh:
                    fh.truncate(good)
                    os.fsync(fh.fileno())
            self._number = int(_NAME.match(last.name).group(1))  # type: ignore[union-attr]
        else:
            self._number = 1
        self._file = self._open(self._number)

    def _open(self, number: int):
        path = self.folder / f"records-{number:06d}.seg"
        new = not path.exists()
        fh = path.open("ab")
        if new:
            _fsync_dir(self.folder)
        return fh

    def append(self, payloads: Iterable[bytes]) -> int:
        """Write ``payloads`` and fsync them; returns how many. ArchiveFailed when the disk
        refused (now or before): the caller must not acknowledge."""
        frames = [_frame(bytes(p)) for p in payloads]
        data = b"".join(frames)
        if not frames:
            return 0
        with self._lock:
            if self._failed:
                raise ArchiveFailed(f"the archive failed earlier ({self._failed}); "
                                    "restart HQ once its disk works")
            try:
                if self._file.tell() > 0 and self._file.tell() + len(data) > self.segment_bytes:
                    self._file.close()
                    self._number += 1
                    self._file = self._open(self._number)
                self._file.write(data)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                self._failed = f"{type(exc).__name__}: {exc}"
                log.critical("the archive of acknowledged records failed: %s; no more acks "
                             "until HQ restarts", self._failed)
                raise ArchiveFailed(self._failed) from exc
        return len(frames)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_archive(folder: Path | str, summary: ArchiveRead | None = None) -> Iterator[bytes]:
    """Every payload of the archive in the order it was written. A damaged frame (its
    CRC does not match) ends its segment's reading: counted in ``summary.damaged``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no archive folder at {folder}")
    summary = summary if summary is not None else ArchiveRead()
    for path in _segments(folder):
        summary.segments += 1
        with path.open("rb") as fh:
            while True:
                header = fh.read(_HEADER.size)
                if not header:
                    break
                if len(header) < _HEADER.size:
                    summary.damaged += 1
                    break
                length, crc = _HEADER.unpack(header)
                payload = fh.read(length) if length <= MAX_FRAME else b""
                if len(payload) != length or zlib.crc32(payload) != crc:
                    summary.damaged += 1
                    log.warning("archive segment %s: damaged frame; the rest of this "
                                "segment is skipped", path.name)
                    break
                summary.records += 1
                yield payload
