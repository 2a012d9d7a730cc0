"""Quarantine: refused messages kept as evidence, within each device's limits.

A refused message (bad signature, off its chain, a held device, ...) is kept with its
reason so an operator can see what a terminal sent; a device that keeps sending garbage
must not fill HQ's disk, so what is kept is capped per device (:class:`QuarantineLimits`)
and what is dropped is counted.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from hq_server.db.bulk import chunks, copy_rows, dialect_insert
from hq_server.db.tables import quarantine, quarantine_budget
from hq_server.ingest.classify import Rejected

log = logging.getLogger(__name__)

QUARANTINE_MEMORY = 100_000
#: The most of one refused message kept as evidence. A genuine record is under 5 KB
#: (ids, numbers, 4 KB of extra, signature); beyond this nothing can be verified anyway.
QUARANTINE_WIRE_KEPT = 8192


@dataclass(frozen=True)
class QuarantineLimits:
    """How much refused evidence HQ keeps per device, so no terminal can fill its disk.

    Over ``max_rows`` or ``max_bytes`` (of stored wire) the device's oldest rows are
    deleted; over ``max_per_minute`` new rows of the device are not stored. Either way
    the device's ``quarantine_budget`` row counts what was dropped, which
    ``ingest_figures`` and ``onecard hq verify-ledger`` show.
    """

    max_rows: int = 1000
    max_bytes: int = 4 * 1024 * 1024
    max_per_minute: int = 120

    def __post_init__(self) -> None:
        if min(self.max_rows, self.max_bytes, self.max_per_minute) < 1:
            raise ValueError("quarantine limits must be at least 1")


class RecentlyQuarantined:
    """Hashes of payloads this process quarantined lately, oldest first: a device
    resends what it was not acked for, and one copy of the evidence is enough.

    What a batch adds counts only once the batch committed (:meth:`remember`)."""

    def __init__(self, size: int = QUARANTINE_MEMORY) -> None:
        self.size = size
        self._seen: dict[bytes, None] = {}

    def new_ones(self, rejects: list[Rejected]) -> tuple[list[Rejected], list[bytes]]:
        """The rejects not kept lately, and their digests (for :meth:`remember`)."""
        fresh: list[Rejected] = []
        digests: list[bytes] = []
        for r in rejects:
            digest = hashlib.sha256(bytes(r.payload)).digest()
            if digest in self._seen:
                continue  # the same bytes again (a device resending what we refused)
            fresh.append(r)
            digests.append(digest)
        return fresh, digests

    def remember(self, digests: list[bytes]) -> None:
        for digest in digests:
            self._seen[digest] = None
        while len(self._seen) > self.size:
            self._seen.pop(next(iter(self._seen)))


def ensure_budget_row(conn: Connection, device_id: str) -> None:
    ins = dialect_insert(conn)(quarantine_budget).values(device_id=device_id)
    conn.execute(ins.on_conflict_do_nothing(index_elements=[quarantine_budget.c.device_id]))


def quarantine_rejects(conn: Connection, rejects: list[Rejected], limits: QuarantineLimits,
                       now: int) -> None:
    """Keep refused messages as evidence, within each device's quarantine limits."""
    if not rejects:
        return
    per_device: dict[str, list[Rejected]] = defaultdict(list)
    for r in rejects:
        per_device[r.device_id].append(r)
    rows: list[dict] = []
    dropped: dict[str, tuple[int, int]] = {}
    windows: dict[str, tuple[int, int]] = {}
    budget = quarantine_budget.c
    for device_id in sorted(per_device):  # one lock order for concurrent workers
        ensure_budget_row(conn, device_id)
        start, used = conn.execute(
            select(budget.window_start_ms, budget.window_rows)
            .where(budget.device_id == device_id).with_for_update()).one()
        if now - start >= 60_000 or now < start:
            start, used = now, 0
        room = max(0, limits.max_per_minute - used)
        keep, over = per_device[device_id][:room], per_device[device_id][room:]
        windows[device_id] = (start, used + len(keep))
        dropped[device_id] = (len(over), sum(min(len(r.payload), QUARANTINE_WIRE_KEPT)
                                             for r in over))
        rows += [{"device_id": device_id, "seq": r.seq,
                  "reason": r.error.reason.name.lower(), "detail": r.error.detail[:1000],
                  "wire": bytes(r.payload)[:QUARANTINE_WIRE_KEPT], "received_at_ms": now}
                 for r in keep]
    copy_rows(conn, quarantine, rows)
    q = quarantine.c
    for device_id in sorted(per_device):
        n, size = dropped[device_id]
        held = conn.execute(select(q.id, func.length(q.wire)).where(q.device_id == device_id)
                            .order_by(q.id.desc())).all()
        count = total = 0
        old: list[int] = []
        for row_id, length in held:  # newest first: keep while within both caps
            count, total = count + 1, total + int(length)
            if count > limits.max_rows or total > limits.max_bytes:
                old.append(row_id)
                n, size = n + 1, size + int(length)
        for part in chunks(old, 900):
            conn.execute(delete(quarantine).where(q.id.in_(part)))
        if n:
            log.warning("quarantine of %s is over its limits: %d messages (%d bytes) "
                        "dropped", device_id, n, size)
        start, used = windows[device_id]
        conn.execute(update(quarantine_budget).where(budget.device_id == device_id).values(
            window_start_ms=start, window_rows=used,
            dropped_rows=budget.dropped_rows + n, dropped_bytes=budget.dropped_bytes + size,
            **({"last_dropped_at_ms": now} if n else {})))


def quarantine_dropped(conn: Connection) -> int:
    """Refused messages not kept, over all devices, because of the quarantine limits."""
    return int(conn.execute(select(func.coalesce(
        func.sum(quarantine_budget.c.dropped_rows), 0))).scalar_one())
