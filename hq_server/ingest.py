"""Ingest: verify device records, store each exactly once, post it, say what to ack.

:class:`Ingest` is the logic over a database connection and a list of received
messages; it knows nothing of MQTT. :mod:`hq_server.ingest_worker` carries messages
from the broker to it and the acks back.

Exactly once: (device id, sequence) is the primary key of ``records`` and the ledger
transaction id is derived from it, so a record that arrives twice is recognised and
counted as a duplicate, and a record that arrives after an HQ crash that lost its
uncommitted batch is simply processed again. An ack is only ever computed from what
is committed: the caller publishes :attr:`BatchResult.acks` after the commit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.devices import Device, load_device
from hq_server.postings import postings_for, txn_id
from hq_server.schema import (
    counters,
    devices,
    ledger_entries,
    ledger_transactions,
    quarantine,
    records,
)
from protocol.record import (
    Reason,
    RecordRejected,
    SignedRecord,
    check_chain_link,
    decode_wire,
    verify_wire,
)
from protocol.topics import Ack, device_of_topic

log = logging.getLogger(__name__)

MAX_MISSING_REPORTED = 100


@dataclass
class BatchResult:
    posted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    acks: dict[str, Ack] = field(default_factory=dict)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Ingest:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- the batch ------------------------------------------------------------------

    def process(self, messages: list[tuple[str, bytes]]) -> BatchResult:
        """Handle a batch in one database transaction; return what to acknowledge."""
        result = BatchResult()
        touched: set[str] = set()
        with self.engine.begin() as conn:
            cache: dict[str, Device | None] = {}
            for topic, payload in messages:
                device_id = self._handle(conn, cache, topic, payload, result)
                if device_id:
                    touched.add(device_id)
            for device_id in sorted(touched):
                result.acks[device_id] = self._advance(conn, device_id)
            if result.duplicates:
                self._bump(conn, "duplicates_rejected", result.duplicates)
        return result

    def _handle(self, conn: Connection, cache: dict[str, Device | None], topic: str,
                payload: bytes, result: BatchResult) -> str | None:
        """Process one message; returns the device id to acknowledge, if any."""
        topic_device = device_of_topic(topic)

        def key_for(device_id: str):
            if device_id not in cache:
                cache[device_id] = load_device(conn, device_id)
            device = cache[device_id]
            return device.public_key if device else None

        try:
            signed = verify_wire(payload, key_for)
        except RecordRejected as exc:
            self._quarantine(conn, payload, exc, result)
            return None
        r = signed.record
        device = cache[r.device_id]
        assert device is not None
        if device.status != "active":
            self._quarantine(conn, payload, RecordRejected(
                Reason.REVOKED_DEVICE, f"device {r.device_id!r} is {device.status}"), result)
            return None
        if topic_device != r.device_id:
            self._quarantine(conn, payload, RecordRejected(
                Reason.WRONG_TOPIC, f"record of {r.device_id!r} arrived on {topic!r}"), result)
            return None

        existing = conn.execute(
            select(records.c.record_hash).where(
                (records.c.device_id == r.device_id) & (records.c.seq == r.seq))
        ).first()
        if existing is not None:
            if bytes(existing[0]) == signed.record_hash:
                result.duplicates += 1
            else:
                self._quarantine(conn, payload, RecordRejected(
                    Reason.CONFLICTING_DUPLICATE,
                    f"{r.device_id}#{r.seq} was already stored with other content"), result)
            return r.device_id  # re-ack: the device may have missed our ack

        status = "posted"
        try:
            self._check_chain(conn, signed)
        except RecordRejected as exc:
            # Signed by the device but not on its chain: keep it as evidence, do not
            # post it. It counts as received so the device is not stuck re-sending it.
            self._quarantine(conn, payload, exc, result)
            status = "quarantined"
        conn.execute(insert(records).values(
            device_id=r.device_id, seq=r.seq, record_hash=signed.record_hash,
            prev_hash=r.prev_hash, wire=signed.wire, card_id=r.card_id,
            operation=int(r.operation), card_counter=r.card_counter,
            device_time_ms=r.device_time_ms, received_at_ms=_now_ms(), status=status,
        ))
        if status == "posted":
            self._post(conn, signed, device)
            result.posted += 1
        return r.device_id

    def _check_chain(self, conn: Connection, signed: SignedRecord) -> None:
        r = signed.record
        neighbours = {
            seq: (bytes(h), bytes(p)) for seq, h, p in conn.execute(
                select(records.c.seq, records.c.record_hash, records.c.prev_hash).where(
                    (records.c.device_id == r.device_id)
                    & records.c.seq.in_([r.seq - 1, r.seq + 1])
                    & (records.c.status == "posted"))
            )
        }
        before = neighbours.get(r.seq - 1)
        check_chain_link(before[0] if before else None, r)
        after = neighbours.get(r.seq + 1)
        if after is not None and after[1] != signed.record_hash:
            raise RecordRejected(
                Reason.BROKEN_CHAIN,
                f"record {r.device_id}#{r.seq + 1} does not follow this #{r.seq}")

    def _post(self, conn: Connection, signed: SignedRecord, device: Device) -> None:
        r = signed.record
        tid = txn_id(r.device_id, r.seq)
        conn.execute(insert(ledger_transactions).values(
            txn_id=tid, device_id=r.device_id, seq=r.seq, kind=r.operation.name.lower(),
            store=r.store, card_id=r.card_id, posted_at_ms=_now_ms(),
        ))
        entries = postings_for(r)
        if entries:
            conn.execute(insert(ledger_entries), [
                {"txn_id": tid, "account": e.account, "asset": e.asset, "amount": e.amount}
                for e in entries
            ])

    def _quarantine(self, conn: Connection, payload: bytes, exc: RecordRejected,
                    result: BatchResult) -> None:
        device_id = seq = None
        try:
            rec = decode_wire(payload).record
            device_id, seq = rec.device_id, rec.seq
        except RecordRejected:
            pass
        log.warning("rejected record from %s#%s: %s", device_id or "?", seq or "?", exc)
        conn.execute(insert(quarantine).values(
            device_id=device_id, seq=seq, reason=exc.reason.name.lower(), detail=exc.detail,
            wire=bytes(payload)[:65536], received_at_ms=_now_ms(),
        ))
        result.rejected[exc.reason.name.lower()] += 1

    def _advance(self, conn: Connection, device_id: str) -> Ack:
        """Move the device's contiguous mark over what is stored; report the gaps."""
        through, highest = conn.execute(
            select(devices.c.contiguous_through, devices.c.highest_seen)
            .where(devices.c.device_id == device_id)).one()
        stored = [s for (s,) in conn.execute(
            select(records.c.seq).where((records.c.device_id == device_id)
                                        & (records.c.seq > through)).order_by(records.c.seq))]
        for seq in stored:
            if seq != through + 1:
                break
            through = seq
        highest = max([highest, through, *stored[-1:]])
        present = set(stored)
        missing = tuple(islice((s for s in range(through + 1, highest) if s not in present),
                               MAX_MISSING_REPORTED))
        conn.execute(update(devices).where(devices.c.device_id == device_id)
                     .values(contiguous_through=through, highest_seen=highest))
        return Ack(through, missing)

    def _bump(self, conn: Connection, name: str, by: int) -> None:
        done = conn.execute(update(counters).where(counters.c.name == name)
                            .values(value=counters.c.value + by)).rowcount
        if not done:
            conn.execute(insert(counters).values(name=name, value=by))
