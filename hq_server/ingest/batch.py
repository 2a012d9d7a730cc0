"""Ingest: verify device records, store each exactly once, post it, say what to ack.

:class:`Ingest` is the logic over a database and a list of received messages; it knows
nothing of MQTT. :mod:`hq_server.ingest.worker` carries messages from the broker to it
and the acks back. A batch goes: verify (:mod:`~hq_server.ingest.verify`), classify
(:mod:`~hq_server.ingest.classify`, plain code), store (:mod:`~hq_server.ingest.storage`),
post (:mod:`~hq_server.ingest.posting`, through the ledger's one writer), quarantine
(:mod:`~hq_server.ingest.quarantine`), ack (:mod:`~hq_server.ingest.acks`); the card
registry (:mod:`hq_server.cards.registry`) follows the posted records in the same
transaction.

Exactly once: (device id, sequence) is the primary key of ``records`` and the ledger
transaction id is derived from it, so a record that arrives twice is recognised and
counted as a duplicate, and a record that arrives after an HQ crash that lost its
uncommitted batch is simply processed again. Two workers that race on the same record
(PostgreSQL) collide on that key: the loser's whole batch rolls back and is retried,
and then sees the record as a duplicate. An ack is only ever computed from what is
committed: the caller publishes :attr:`BatchResult.acks` after the commit.

A batch is one database transaction with a fixed number of statements (not one per
record), which is what lets one worker keep up with the broker.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from hq_server.backup.archive import AckArchive
from hq_server.cards.registry import apply_ingested
from hq_server.catalogue.versions import CatalogueHistory
from hq_server.clock import Clock, system_clock
from hq_server.db.bulk import chunks
from hq_server.db.tables import devices
from hq_server.devices.registry import Device, parse_public_key
from hq_server.ingest.acks import advance
from hq_server.ingest.classify import Rejected, classify
from hq_server.ingest.device_holds import hold_devices
from hq_server.ingest.judge import current_catalogues, judge_batch
from hq_server.ingest.posting import post_records
from hq_server.ingest.quarantine import QuarantineLimits, RecentlyQuarantined, quarantine_rejects
from hq_server.ingest.record_rules import RulesConfig
from hq_server.ingest.storage import bump, insert_records, stored_around, touch_cards
from hq_server.ingest.verify import rejection, verify_one
from hq_server.ledger.writer import add_to_accounts
from protocol.record import Reason, RecordRejected, SignedRecord
from protocol.topics import Ack, device_of_topic

log = logging.getLogger(__name__)

#: How often a batch is tried when a concurrent worker made it fail (PostgreSQL
#: unique-key collision, deadlock, floor check that another batch moved; SQLite busy).
MAX_ATTEMPTS = 8


@dataclass
class BatchResult:
    posted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    acks: dict[str, Ack] = field(default_factory=dict)
    #: Cards whose records were posted: reconciliation has new evidence for them.
    cards: set[str] = field(default_factory=set)
    retries: int = 0
    #: Wire bytes of the batch's records HQ now holds (stored, or duplicates of stored
    #: ones): what the archive of acknowledged records keeps (hq_server.backup.archive).
    held: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class Prepared:
    """A batch whose signatures are checked, ready for :meth:`Ingest.commit`."""

    verified: list[SignedRecord]
    rejected: list[Rejected]
    registry: dict[str, Device]


@dataclass
class _Committed:
    """What a batch learnt that counts only once its transaction committed."""

    created_accounts: set[str] = field(default_factory=set)
    quarantined: list[bytes] = field(default_factory=list)


class Ingest:
    """Verify, store, post and acknowledge device records, a batch at a time.

    ``verify_threads`` > 1 checks signatures on a thread pool: Ed25519 verification in
    ``cryptography`` releases the GIL, so a second core helps. ``clock`` stamps what a
    batch stores (received, posted, quarantined).
    """

    def __init__(self, engine: Engine, *, verify_threads: int = 1,
                 quarantine_limits: QuarantineLimits | None = None,
                 rules: RulesConfig | None = None, clock: Clock = system_clock,
                 archive: AckArchive | None = None) -> None:
        self.engine = engine
        #: When set, every committed batch's held records are appended (fsync'd) here
        #: before :meth:`commit` returns, i.e. before any of its acks can be published.
        self.archive = archive
        self.quarantine_limits = quarantine_limits or QuarantineLimits()
        self.rules = rules or RulesConfig()
        self.clock = clock
        self._catalogues = CatalogueHistory([])
        self._unpriced_warned = False
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._known_accounts: set[str] = set()  # exist in the database (never deleted)
        self._quarantined = RecentlyQuarantined()
        self._pool = ThreadPoolExecutor(verify_threads) if verify_threads > 1 else None
        self._threads = verify_threads

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=False)

    # --- the batch ------------------------------------------------------------------

    def process(self, messages: list[tuple[str, bytes]]) -> BatchResult:
        """Handle a batch in one database transaction; return what to acknowledge."""
        return self.commit(self.prepare(messages))

    def prepare(self, messages: list[tuple[str, bytes]]) -> Prepared:
        """Check signatures and devices (no write): the part that can run beside a commit."""
        registry = self._load_devices({d for t, _ in messages
                                       if isinstance(t, str) and (d := device_of_topic(t))})
        verified, rejected = self._verify(messages, registry)
        return Prepared(verified, rejected, registry)

    def commit(self, prepared: Prepared) -> BatchResult:
        """Store and post a prepared batch in one transaction (retried on collisions)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                committed = _Committed()
                with self.engine.connect() as conn:
                    if conn.dialect.name == "sqlite":
                        # Take the write lock up front: a deferred transaction that reads
                        # first can fail to upgrade when another process wrote meanwhile.
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                    result = self._apply(conn, prepared, committed)
                    conn.commit()
                self._known_accounts |= committed.created_accounts
                self._quarantined.remember(committed.quarantined)
                result.retries = attempt - 1
                if self.archive is not None:
                    self.archive.append(result.held)  # durable before any ack leaves
                return result
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.info("ingest batch collided with another writer (%s: %s); retrying",
                         type(exc.orig).__name__, str(exc.orig).splitlines()[0])
                time.sleep(random.uniform(0.005, 0.02) * attempt)
        raise AssertionError("unreachable")

    def _load_devices(self, device_ids: set[str]) -> dict[str, Device]:
        if not device_ids:
            return {}
        out: dict[str, Device] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(device_ids), 500):
                for row in conn.execute(select(devices).where(devices.c.device_id.in_(chunk))).mappings():
                    key = self._keys.get(row["public_key"])
                    if key is None:
                        key = self._keys[row["public_key"]] = parse_public_key(row["public_key"])
                    out[row["device_id"]] = Device(row["device_id"], key, row["store"],
                                                   row["role"], row["status"])
        return out

    def _verify(self, messages: list[tuple[str, bytes]], registry: dict[str, Device]
                ) -> tuple[list[SignedRecord], list[Rejected]]:
        def check(item: tuple[str, bytes]) -> SignedRecord | Rejected:
            topic, payload = item
            try:
                return verify_one(topic, payload, registry)
            except RecordRejected as exc:
                return rejection(payload, exc, topic)
            except Exception as exc:  # noqa: BLE001 - one message must never sink a batch
                log.exception("unexpected error checking a message on %r", topic)
                return rejection(payload, RecordRejected(
                    Reason.MALFORMED, f"could not be checked ({type(exc).__name__})"), topic)

        if self._pool and len(messages) >= 64:
            size = -(-len(messages) // self._threads)
            parts = self._pool.map(lambda part: [check(m) for m in part],
                                   list(chunks(messages, size)))
            outcomes = [o for part in parts for o in part]
        else:
            outcomes = [check(m) for m in messages]
        verified = [o for o in outcomes if isinstance(o, SignedRecord)]
        rejected = [o for o in outcomes if isinstance(o, Rejected)]
        return verified, rejected

    # --- inside the transaction ---------------------------------------------------------

    def _apply(self, conn: Connection, prepared: Prepared, committed: _Committed) -> BatchResult:
        result = BatchResult()
        now = self.clock()
        # What the database already holds around these records (duplicates and chain
        # neighbours, in one query), then the decisions, then the rows.
        batch = classify(prepared.verified, stored_around(conn, prepared.verified))
        batch.rejected[:0] = prepared.rejected
        insert_records(conn, batch, now)
        result.duplicates = batch.duplicates
        conflicting = {r.payload for r in batch.rejected
                       if r.error.reason == Reason.CONFLICTING_DUPLICATE}
        result.held = [s.wire for s in prepared.verified if s.wire not in conflicting]

        to_post = batch.to_post
        if to_post:
            self._catalogues = current_catalogues(conn, self._catalogues)
        judge = judge_batch(conn, to_post, prepared.registry, self._catalogues, self.rules, now)
        written = post_records(conn, to_post, judge, now, known=self._known_accounts)
        committed.created_accounts = written.created
        if judge.unpriced and not self._unpriced_warned:
            self._unpriced_warned = True
            log.warning("HQ holds no catalogue: prices and bonus tiers of records are not "
                        "checked (load one with 'onecard hq catalogue set FILE')")
        result.posted = len(to_post)
        result.cards = {s.record.card_id for s in to_post}
        # The card registry follows the posted records (issued, opened, recalled, ...).
        apply_ingested(conn, to_post, now)

        for r in batch.rejected:
            result.rejected[r.error.reason.name.lower()] += 1
        new_rejects, committed.quarantined = self._quarantined.new_ones(batch.rejected)
        for r in new_rejects:
            log.warning("rejected record from %s#%s: %s", r.device_id, r.seq or "?", r.error)
        quarantine_rejects(conn, new_rejects, self.quarantine_limits, now)
        if result.cards:
            touch_cards(conn, Counter(s.record.card_id for s in to_post))
        # Last, the rows every writer shares (store accounts, device marks): held for
        # the shortest time before the commit.
        add_to_accounts(conn, written.totals)
        for device_id in sorted(batch.devices):
            result.acks[device_id] = advance(conn, device_id)
        if judge.devices_with_breaks:
            # After advance: the device rows are locked already, in one order.
            hold_devices(conn, sorted(judge.devices_with_breaks), self.rules.hold_device_after,
                         now)
        if result.duplicates:
            bump(conn, "duplicates_rejected", result.duplicates)
        return result


def ingest_all(engine: Engine, messages: Iterable[tuple[str, bytes]], batch: int = 500,
               on_batch: Callable[[BatchResult], None] | None = None,
               archive: AckArchive | None = None) -> BatchResult:
    """Feed messages through :class:`Ingest` in batches (tests, tools); totals returned."""
    ingest = Ingest(engine, archive=archive)
    totals = BatchResult()
    pending = list(messages)
    for part in chunks(pending, batch):
        r = ingest.process(part)
        totals.posted += r.posted
        totals.duplicates += r.duplicates
        totals.rejected.update(r.rejected)
        totals.acks.update(r.acks)
        totals.cards |= r.cards
        if on_batch:
            on_batch(r)
    return totals
