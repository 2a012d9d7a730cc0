"""What a batch of verified records means, before anything is written (plain code).

Given the records whose signatures checked out and what the database already holds
around them (the same sequence numbers and their chain neighbours), :func:`classify`
decides, record by record: a duplicate of what is stored (counted, nothing written), a
conflicting duplicate (same device and sequence, other content: refused), a record on
its device's hash chain (stored and posted) or off it (stored as evidence, not posted,
and quarantined). Records may arrive out of order and in one batch with their
neighbours; the chain is checked against both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.record import Reason, RecordRejected, SignedRecord, check_chain_link

Key = tuple[str, int]  # (device id, sequence)


@dataclass(frozen=True)
class StoredRecord:
    """A record row the database already holds: its hash, its ``prev_hash``, its status."""

    record_hash: bytes
    prev_hash: bytes
    status: str  # posted / quarantined


@dataclass
class Rejected:
    """A message refused, kept as evidence under the device that sent it."""

    payload: bytes
    error: RecordRejected
    device_id: str = "unknown"
    seq: int | None = None


def rejected_record(signed: SignedRecord, exc: RecordRejected) -> Rejected:
    """A verified record refused later (chain, duplicate): its device sent it."""
    return Rejected(signed.wire, exc, signed.record.device_id, signed.record.seq)


@dataclass
class Classification:
    """The decisions for one batch.

    ``fresh`` are the records to store, in key order (the lock order of concurrent
    workers), each with its ``status``: ``posted`` (on the chain) or ``quarantined``.
    """

    fresh: dict[Key, SignedRecord] = field(default_factory=dict)
    status: dict[Key, str] = field(default_factory=dict)
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    #: Devices that sent a record in this batch: their acks are recomputed.
    devices: set[str] = field(default_factory=set)

    @property
    def to_post(self) -> list[SignedRecord]:
        return [s for k, s in self.fresh.items() if self.status[k] == "posted"]

    def lost_race(self, key: Key, held_hash: bytes) -> None:
        """Another worker stored ``key`` first (PostgreSQL): what it holds decides.

        The record is no longer ours to post: it is a duplicate if the stored one has
        the same hash, a conflicting duplicate otherwise; a chain rejection made before
        we knew is forgotten (the other worker judged the chain)."""
        raced = self.fresh.pop(key)
        self.status.pop(key, None)
        for i, r in enumerate(self.rejected):
            if r.payload == raced.wire and r.error.reason == Reason.BROKEN_CHAIN:
                del self.rejected[i]
                break
        if held_hash == raced.record_hash:
            self.duplicates += 1
        else:
            self.rejected.append(rejected_record(raced, _conflict(key)))


def classify(verified: list[SignedRecord], stored: dict[Key, StoredRecord]) -> Classification:
    """Decide what each record of a batch is (see the module docstring).

    ``stored`` holds the rows at, just before and just after each record's sequence.
    """
    out = Classification()
    fresh: dict[Key, SignedRecord] = {}
    for s in verified:
        key = (s.record.device_id, s.record.seq)
        out.devices.add(s.record.device_id)
        earlier = stored.get(key)
        earlier_hash = earlier.record_hash if earlier else (
            fresh[key].record_hash if key in fresh else None)
        if earlier_hash is None:
            fresh[key] = s
        elif earlier_hash == s.record_hash:
            out.duplicates += 1
        else:
            out.rejected.append(rejected_record(s, _conflict(key)))

    # Chain: each new record against its posted neighbours, stored or in this batch.
    for key in sorted(fresh):
        s = fresh[key]
        dev, seq = key
        try:
            before = _posted_hash(stored, fresh, out.status, (dev, seq - 1))
            check_chain_link(before, s.record)
            after = stored.get((dev, seq + 1))
            if after is not None and after.status == "posted" and after.prev_hash != s.record_hash:
                raise RecordRejected(Reason.BROKEN_CHAIN,
                                     f"record {dev}#{seq + 1} does not follow this #{seq}")
            out.status[key] = "posted"
        except RecordRejected as exc:
            # Signed by the device but not on its chain: kept as evidence, not posted.
            # It counts as received so the device is not stuck re-sending it.
            out.rejected.append(rejected_record(s, exc))
            out.status[key] = "quarantined"
    out.fresh = dict(sorted(fresh.items()))
    return out


def _conflict(key: Key) -> RecordRejected:
    return RecordRejected(Reason.CONFLICTING_DUPLICATE,
                          f"{key[0]}#{key[1]} was already stored with other content")


def _posted_hash(stored: dict[Key, StoredRecord], fresh: dict[Key, SignedRecord],
                 status: dict[Key, str], key: Key) -> bytes | None:
    if key in status:
        return fresh[key].record_hash if status[key] == "posted" else None
    row = stored.get(key)
    return row.record_hash if row is not None and row.status == "posted" else None
