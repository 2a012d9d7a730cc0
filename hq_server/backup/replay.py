"""``onecard hq replay-archive``: feed the archive of acknowledged records through ingest.

Run after a restore. Every record goes through ingest exactly as if its terminal had
sent it again: signature, device, chain and business rules are checked, and a record
the database already holds is recognised as a duplicate (idempotent on device id +
sequence), so replaying the whole archive is safe, and so is replaying it twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from sqlalchemy.engine import Engine

from hq_server.backup.archive import ArchiveRead, read_archive
from hq_server.ingest.batch import Ingest
from protocol.record import RecordRejected, decode_wire
from protocol.topics import records_topic


@dataclass
class ReplayResult:
    read: int = 0
    posted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0
    damaged_frames: int = 0


def replay_archive(engine: Engine, folder: Path | str, batch: int = 500) -> ReplayResult:
    """Ingest every archived record again; what was already held counts as a duplicate."""
    out = ReplayResult()
    summary = ArchiveRead()

    def messages() -> Iterator[tuple[str, bytes]]:
        for payload in read_archive(folder, summary):
            out.read += 1
            try:
                device_id = decode_wire(payload).record.device_id
            except RecordRejected:
                out.unreadable += 1
                continue
            yield records_topic(device_id), payload

    ingest = Ingest(engine)
    try:
        stream = messages()
        while part := list(islice(stream, batch)):  # streamed: the archive may be large
            result = ingest.process(part)
            out.posted += result.posted
            out.duplicates += result.duplicates
            out.rejected.update(result.rejected)
    finally:
        ingest.close()
    out.damaged_frames = summary.damaged
    return out
