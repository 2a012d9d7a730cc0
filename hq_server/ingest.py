"""Ingest: verify device records, store each exactly once, post it, say what to ack.

:class:`Ingest` is the logic over a database and a list of received messages; it knows
nothing of MQTT. :mod:`hq_server.ingest_worker` carries messages from the broker to it
and the acks back.

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

import hashlib
import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from hq_server.catalogue import CatalogueHistory, catalogue_history, latest_version
from hq_server.devices import Device, parse_public_key
from hq_server.ledger import (
    AccountTotals,
    account_totals,
    add_to_accounts,
    bulk_execute,
    copy_rows,
    create_accounts,
    dialect_insert,
)
from hq_server.postings import Entry, postings_for, suspense_postings, txn_id
from hq_server.record_rules import (
    BrokenRule,
    CardFacts,
    DeviceFacts,
    RulesConfig,
    check_record,
    debit_value,
    note_accepted,
    refund_value,
)
from hq_server.schema import (
    anomalies,
    card_reconciliation,
    card_spend,
    counters,
    device_events,
    devices,
    ledger_accounts,
    ledger_entries,
    ledger_transactions,
    quarantine,
    quarantine_budget,
    records,
    rule_breaks,
)
from protocol.record import (
    Operation,
    Reason,
    RecordRejected,
    SignedRecord,
    TransactionRecord,
    check_chain_link,
    decode_wire,
    verify_wire,
)
from protocol.topics import Ack, device_of_topic

log = logging.getLogger(__name__)

MAX_MISSING_REPORTED = 100
#: How often a batch is tried when a concurrent worker made it fail (PostgreSQL
#: unique-key collision, deadlock, floor check that another batch moved; SQLite busy).
MAX_ATTEMPTS = 8
_ADVANCE_WINDOW = 2000
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


@dataclass
class BatchResult:
    posted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    acks: dict[str, Ack] = field(default_factory=dict)
    #: Cards whose records were posted: reconciliation has new evidence for them.
    cards: set[str] = field(default_factory=set)
    retries: int = 0


@dataclass(frozen=True)
class Prepared:
    """A batch whose signatures are checked, ready for :meth:`Ingest.commit`."""

    verified: list[SignedRecord]
    rejected: list[_Rejected]
    registry: dict[str, Device]


@dataclass
class _Rejected:
    payload: bytes
    error: RecordRejected
    device_id: str = "unknown"
    seq: int | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Ingest:
    """Verify, store, post and acknowledge device records, a batch at a time.

    ``verify_threads`` > 1 checks signatures on a thread pool: Ed25519 verification in
    ``cryptography`` releases the GIL, so a second core helps.
    """

    def __init__(self, engine: Engine, *, verify_threads: int = 1,
                 quarantine_limits: QuarantineLimits | None = None,
                 rules: RulesConfig | None = None) -> None:
        self.engine = engine
        self.quarantine_limits = quarantine_limits or QuarantineLimits()
        self.rules = rules or RulesConfig()
        self._catalogues = CatalogueHistory([])
        self._unpriced_warned = False
        self._to_hold: set[str] = set()
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._known_accounts: set[str] = set()  # exist in the database (never deleted)
        self._created: set[str] = set()
        # Hashes of payloads this process quarantined lately, oldest first: a device
        # resends what it was not acked for, and one copy of the evidence is enough.
        self._quarantined: dict[bytes, None] = {}
        self._quarantined_now: list[bytes] = []
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
        verified, rejected, registry = prepared.verified, prepared.rejected, prepared.registry
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.engine.connect() as conn:
                    if conn.dialect.name == "sqlite":
                        # Take the write lock up front: a deferred transaction that reads
                        # first can fail to upgrade when another process wrote meanwhile.
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                    self._created: set[str] = set()
                    self._quarantined_now: list[bytes] = []
                    self._to_hold = set()
                    result = self._apply(conn, verified, rejected, registry)
                    conn.commit()
                self._known_accounts |= self._created
                for digest in self._quarantined_now:
                    self._quarantined[digest] = None
                while len(self._quarantined) > QUARANTINE_MEMORY:
                    self._quarantined.pop(next(iter(self._quarantined)))
                result.retries = attempt - 1
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
            for chunk in _chunks(sorted(device_ids), 500):
                for row in conn.execute(select(devices).where(devices.c.device_id.in_(chunk))).mappings():
                    key = self._keys.get(row["public_key"])
                    if key is None:
                        key = self._keys[row["public_key"]] = parse_public_key(row["public_key"])
                    out[row["device_id"]] = Device(row["device_id"], key, row["store"],
                                                   row["role"], row["status"])
        return out

    def _verify(self, messages: list[tuple[str, bytes]], registry: dict[str, Device]
                ) -> tuple[list[SignedRecord], list[_Rejected]]:
        def check(item: tuple[str, bytes]) -> SignedRecord | _Rejected:
            topic, payload = item
            try:
                return _verify_one(topic, payload, registry)
            except RecordRejected as exc:
                return _rejection(payload, exc, topic)
            except Exception as exc:  # noqa: BLE001 - one message must never sink a batch
                log.exception("unexpected error checking a message on %r", topic)
                return _rejection(payload, RecordRejected(
                    Reason.MALFORMED, f"could not be checked ({type(exc).__name__})"), topic)

        if self._pool and len(messages) >= 64:
            size = -(-len(messages) // self._threads)
            parts = self._pool.map(lambda part: [check(m) for m in part],
                                   list(_chunks(messages, size)))
            outcomes = [o for part in parts for o in part]
        else:
            outcomes = [check(m) for m in messages]
        verified = [o for o in outcomes if isinstance(o, SignedRecord)]
        rejected = [o for o in outcomes if isinstance(o, _Rejected)]
        return verified, rejected

    # --- inside the transaction ---------------------------------------------------------

    def _apply(self, conn: Connection, verified: list[SignedRecord], rejected: list[_Rejected],
               registry: dict[str, Device]) -> BatchResult:
        result = BatchResult()
        now = _now_ms()
        rejected = list(rejected)
        touched: set[str] = set()

        # What the database already holds around these records: duplicates and the
        # chain neighbours, in one query.
        stored = _stored_around(conn, verified)

        fresh: dict[tuple[str, int], SignedRecord] = {}
        for s in verified:
            key = (s.record.device_id, s.record.seq)
            touched.add(s.record.device_id)
            earlier = stored.get(key)
            earlier_hash = earlier[0] if earlier else (fresh[key].record_hash if key in fresh else None)
            if earlier_hash is None:
                fresh[key] = s
            elif earlier_hash == s.record_hash:
                result.duplicates += 1
            else:
                rejected.append(_rejected_record(s, RecordRejected(
                    Reason.CONFLICTING_DUPLICATE,
                    f"{key[0]}#{key[1]} was already stored with other content")))

        # Chain: each new record against its posted neighbours, stored or in this batch.
        status_of: dict[tuple[str, int], str] = {}
        for key in sorted(fresh):
            s = fresh[key]
            dev, seq = key
            try:
                before = _posted_hash(stored, fresh, status_of, (dev, seq - 1))
                check_chain_link(before, s.record)
                after = stored.get((dev, seq + 1))
                if after is not None and after[2] == "posted" and after[1] != s.record_hash:
                    raise RecordRejected(Reason.BROKEN_CHAIN,
                                         f"record {dev}#{seq + 1} does not follow this #{seq}")
                status_of[key] = "posted"
            except RecordRejected as exc:
                # Signed by the device but not on its chain: kept as evidence, not posted.
                # It counts as received so the device is not stuck re-sending it.
                rejected.append(_rejected_record(s, exc))
                status_of[key] = "quarantined"

        # Rows go in key order, so concurrent workers lock them in one order (no deadlock).
        fresh = dict(sorted(fresh.items()))
        rows = [{"device_id": s.record.device_id, "seq": s.record.seq,
                 "record_hash": s.record_hash, "prev_hash": s.record.prev_hash, "wire": s.wire,
                 "card_id": s.record.card_id, "operation": int(s.record.operation),
                 "card_counter": s.record.card_counter, "device_time_ms": s.record.device_time_ms,
                 "received_at_ms": now, "status": status_of[k]} for k, s in fresh.items()]
        if rows and conn.dialect.name == "postgresql":
            # Another worker may be storing the same record right now: PostgreSQL waits
            # for it, and the record is then ours only if our insert took.
            taken = {(d, q) for d, q in conn.exec_driver_sql(_PG_RECORDS_INSERT, {
                c: [row[c] for row in rows] for c in _RECORD_COLUMNS})}
            for key in [k for k in fresh if k not in taken]:
                raced = fresh.pop(key)
                _drop_quarantine_of(rejected, raced)
                held = conn.execute(select(records.c.record_hash).where(
                    (records.c.device_id == key[0]) & (records.c.seq == key[1]))).scalar_one()
                if bytes(held) == raced.record_hash:
                    result.duplicates += 1
                else:
                    rejected.append(_rejected_record(raced, RecordRejected(
                        Reason.CONFLICTING_DUPLICATE,
                        f"{key[0]}#{key[1]} was already stored with other content")))
        elif rows:
            # SQLite: this transaction holds the write lock, what we read is all there is.
            bulk_execute(conn, "records", lambda: _bulk_insert(records), rows)
        to_post = [s for k, s in fresh.items() if status_of[k] == "posted"]
        totals = self._post(conn, to_post, registry, now)
        result.posted = len(to_post)
        result.cards = {s.record.card_id for s in to_post}

        new_rejects = []
        for r in rejected:
            result.rejected[r.error.reason.name.lower()] += 1
            digest = hashlib.sha256(bytes(r.payload)).digest()
            if digest in self._quarantined:
                continue  # the same bytes again (a device resending what we refused)
            new_rejects.append(r)
            self._quarantined_now.append(digest)
            log.warning("rejected record from %s#%s: %s", r.device_id, r.seq or "?", r.error)
        self._quarantine(conn, new_rejects, now)
        if result.cards:
            self._touch_cards(conn, Counter(s.record.card_id for s in to_post))
        # Last, the rows every writer shares (store accounts, device marks): held for
        # the shortest time before the commit.
        add_to_accounts(conn, totals)
        for device_id in sorted(touched):
            result.acks[device_id] = advance(conn, device_id)
        if self._to_hold:
            # After advance: the device rows are locked already, in one order.
            self._hold_devices(conn, sorted(self._to_hold), now)
        if result.duplicates:
            bump(conn, "duplicates_rejected", result.duplicates)
        return result

    def _quarantine(self, conn: Connection, rejects: list[_Rejected], now: int) -> None:
        """Keep refused messages as evidence, within each device's quarantine limits."""
        if not rejects:
            return
        limits = self.quarantine_limits
        per_device: dict[str, list[_Rejected]] = defaultdict(list)
        for r in rejects:
            per_device[r.device_id].append(r)
        rows: list[dict] = []
        dropped: dict[str, tuple[int, int]] = {}
        windows: dict[str, tuple[int, int]] = {}
        budget = quarantine_budget.c
        for device_id in sorted(per_device):  # one lock order for concurrent workers
            _ensure_budget_row(conn, device_id)
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
            for part in _chunks(old, 900):
                conn.execute(delete(quarantine).where(q.id.in_(part)))
            if n:
                log.warning("quarantine of %s is over its limits: %d messages (%d bytes) "
                            "dropped", device_id, n, size)
            start, used = windows[device_id]
            conn.execute(update(quarantine_budget).where(budget.device_id == device_id).values(
                window_start_ms=start, window_rows=used,
                dropped_rows=budget.dropped_rows + n, dropped_bytes=budget.dropped_bytes + size,
                **({"last_dropped_at_ms": now} if n else {})))

    def _post(self, conn: Connection, signed: list[SignedRecord], registry: dict[str, Device],
              now: int) -> AccountTotals:
        """Post each record as one balanced transaction, within the card accounts' floors.

        Returns what to add to the account totals; the caller does that last (those rows
        are shared by every writer)."""
        if not signed:
            return {}
        floor_accounts = sorted({a for s in signed for a in _floor_accounts(s.record)})
        available: dict[str, int] = {}
        if conn.dialect.name == "postgresql":
            found = conn.exec_driver_sql(
                "SELECT account, debits, credits FROM ledger_accounts "
                "WHERE account = ANY(%(a)s::text[])", {"a": floor_accounts}).all()
        else:
            found = [row for chunk in _chunks(floor_accounts, 900) for row in conn.execute(
                select(ledger_accounts.c.account, ledger_accounts.c.debits,
                       ledger_accounts.c.credits).where(ledger_accounts.c.account.in_(chunk)))]
        for account, debits, credits in found:
            available[account] = int(credits) - int(debits)
        existing = self._known_accounts.union(available)
        # A card's records in the order the card made them, so a shortfall lands on the
        # record that really overdrew it.
        ordered = sorted(signed, key=lambda s: (s.record.card_id, s.record.card_counter,
                                                s.record.device_id, s.record.seq))
        txns: list[dict] = []
        entry_rows: list[dict] = []
        all_entries: list[Entry] = []
        judge = self._judge(conn, signed, registry, now)
        for s in ordered:
            r = s.record
            tid = txn_id(r.device_id, r.seq)
            broken = judge.check(r, available)
            if broken:
                # Stored and acknowledged (signed evidence), but its value goes to
                # suspense, never into the card's or the store's balance.
                entries: list[Entry] = suspense_postings(r)
                memo = "suspense: " + ", ".join(sorted({b.rule for b in broken}))
            else:
                entries = postings_for(r, available)
                memo = None
            txns.append({"txn_id": tid, "device_id": r.device_id, "seq": r.seq,
                         "kind": r.operation.name.lower(), "store": r.store,
                         "card_id": r.card_id, "posted_at_ms": now, "reverses": None,
                         "memo": memo})
            all_entries.extend(entries)
            entry_rows.extend({"txn_id": tid, "account": e.account, "asset": e.asset,
                               "amount": e.amount} for e in entries)
        totals = account_totals(all_entries)
        self._created = create_accounts(conn, totals, existing)
        txns.sort(key=lambda row: row["txn_id"])
        copy_rows(conn, ledger_transactions, txns)
        copy_rows(conn, ledger_entries, entry_rows)
        judge.store(conn)
        self._to_hold |= judge.devices_with_breaks
        return totals

    # --- business rules (hq_server.record_rules) ------------------------------------------

    def _judge(self, conn: Connection, signed: list[SignedRecord], registry: dict[str, Device],
               now: int) -> _Judge:
        """The rules' view of this batch: catalogue in force, the cards' refund history."""
        version = latest_version(conn)
        if version != self._catalogues.latest_version:
            self._catalogues = catalogue_history(conn)
        refund_cards = sorted({s.record.card_id for s in signed
                               if s.record.operation == Operation.REFUND})
        spend: dict[str, tuple[int, int]] = {}
        for chunk in _chunks(refund_cards, 900):
            for card, debited, refunded in conn.execute(select(
                    card_spend.c.card_id, card_spend.c.debited_fen, card_spend.c.refunded_fen)
                    .where(card_spend.c.card_id.in_(chunk))):
                spend[card] = (int(debited), int(refunded))
        return _Judge(self, registry, spend, now)

    def _hold_devices(self, conn: Connection, device_ids: list[str], now: int) -> None:
        """Hold devices whose unreviewed rule breaks reached the configured count."""
        threshold = self.rules.hold_device_after
        if threshold is None:
            return
        for device_id in device_ids:
            broken = conn.execute(select(func.count(func.distinct(rule_breaks.c.seq))).where(
                (rule_breaks.c.device_id == device_id)
                & rule_breaks.c.reviewed_at_ms.is_(None))).scalar_one()
            if broken < threshold:
                continue
            held = conn.execute(update(devices).where(
                (devices.c.device_id == device_id) & (devices.c.status == "active"))
                .values(status="held")).rowcount
            if held:
                conn.execute(insert(device_events).values(
                    device_id=device_id, event="held", actor="ingest:rules",
                    detail=f"{broken} record(s) broke business rules; release with "
                           f"'onecard hq rules release {device_id}'", at_ms=now))
                log.warning("device %s held: %d record(s) broke business rules",
                            device_id, broken)

    def _touch_cards(self, conn: Connection, per_card: Counter[str]) -> None:
        cards = sorted(per_card)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "INSERT INTO card_reconciliation (card_id, touched) "
                "SELECT * FROM unnest(%(cards)s::text[], %(counts)s::bigint[]) "
                "ON CONFLICT (card_id) DO UPDATE "
                "SET touched = card_reconciliation.touched + excluded.touched",
                {"cards": cards, "counts": [per_card[c] for c in cards]})
            return

        def make():
            ins = dialect_insert(conn)(card_reconciliation).values(
                card_id=bindparam("card_id"), touched=bindparam("touched"))
            return ins.on_conflict_do_update(
                index_elements=[card_reconciliation.c.card_id],
                set_={"touched": card_reconciliation.c.touched + ins.excluded.touched})

        bulk_execute(conn, "card_touch", make,
                     [{"card_id": c, "touched": n} for c, n in sorted(per_card.items())])


class _Judge:
    """Applies :func:`check_record` to one batch, in the cards' order, and stores what
    it found: rule breaks, anomalies, the cards' debit and refund totals."""

    def __init__(self, ingest: Ingest, registry: dict[str, Device],
                 spend: dict[str, tuple[int, int]], now: int) -> None:
        self.ingest = ingest
        self.registry = registry
        self.now = now
        self.cards: dict[str, CardFacts] = {}
        self._spend = spend
        self.deltas: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.breaks: list[tuple[TransactionRecord, list[BrokenRule]]] = []
        self.unpriced = 0
        self.devices_with_breaks: set[str] = set()

    def check(self, r: TransactionRecord, available: dict[str, int]) -> list[BrokenRule]:
        device = self.registry[r.device_id]
        card = self.cards.get(r.card_id)
        if card is None:
            debited, refunded = self._spend.get(r.card_id, (0, 0))
            card = self.cards[r.card_id] = CardFacts(debited, refunded)
        card.purse_held_fen = available.get(f"card:{r.card_id}:purse", 0)
        catalogue = self.ingest._catalogues.in_force(r.device_time_ms)
        broken = check_record(r, DeviceFacts(device.device_id, device.role, device.store), card,
                              catalogue, self.ingest.rules)
        if broken:
            self.breaks.append((r, broken))
            self.devices_with_breaks.add(r.device_id)
            return broken
        note_accepted(r, card)
        if r.operation == Operation.DEBIT:
            self.deltas[r.card_id][0] += max(debit_value(r), 0)
        elif r.operation == Operation.REFUND:
            self.deltas[r.card_id][1] += refund_value(r)
        if catalogue is None and (r.operation in (Operation.ADD_VISITS, Operation.SELL_PASS)
                                  or r.bonus_fen):
            self.unpriced += 1
        return broken

    def store(self, conn: Connection) -> None:
        if self.breaks:
            copy_rows(conn, rule_breaks, [
                {"device_id": r.device_id, "seq": r.seq, "card_id": r.card_id, "rule": rule,
                 "reason": "; ".join(b.reason for b in broken if b.rule == rule),
                 "detected_at_ms": self.now}
                for r, broken in self.breaks for rule in sorted({b.rule for b in broken})])
            copy_rows(conn, anomalies, [self._anomaly(r, broken) for r, broken in self.breaks])
            for r, broken in self.breaks:
                log.warning("record %s#%s broke business rules (value to suspense): %s",
                            r.device_id, r.seq, "; ".join(f"{b.rule}: {b.reason}" for b in broken))
        deltas = {c: d for c, d in sorted(self.deltas.items()) if any(d)}
        if deltas:
            _add_card_spend(conn, deltas)
        if self.unpriced:
            bump(conn, "records_unpriced", self.unpriced)
            if not self.ingest._unpriced_warned:
                self.ingest._unpriced_warned = True
                log.warning("HQ holds no catalogue: prices and bonus tiers of records are not "
                            "checked (load one with 'onecard hq catalogue set FILE')")

    def _anomaly(self, r: TransactionRecord, broken: list[BrokenRule]) -> dict:
        from hq_server.reconciliation import CardEvent

        device = self.registry[r.device_id]
        rules = sorted({b.rule for b in broken})
        evidence = {"device": r.device_id, "role": device.role, "registered_store": device.store,
                    "rules": rules, "reasons": {b.rule: b.reason for b in broken},
                    "record": CardEvent.of(r).evidence(),
                    "suspense": f"suspense:{r.device_id}"}
        return {"anomaly_key": f"rule_broken:{r.device_id}#{r.seq}", "card_id": r.card_id,
                "kind": "rule_broken", "severity": "high", "status": "open",
                "summary": f"{r.device_id} ({device.role}, {device.store}) broke "
                           f"{', '.join(rules)}: {broken[0].reason}; value held in suspense",
                "evidence": json.dumps(evidence, sort_keys=True, ensure_ascii=False),
                "detected_at_ms": self.now}


def _add_card_spend(conn: Connection, deltas: dict[str, list[int]]) -> None:
    """Add to the cards' debit and refund totals: rows made first, then one update, so
    the table's check sees the sums (a concurrent refund past the debits fails, and its
    batch is retried)."""
    cards = list(deltas)
    params = {"c": cards, "d": [deltas[c][0] for c in cards], "r": [deltas[c][1] for c in cards]}
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "INSERT INTO card_spend (card_id) SELECT * FROM unnest(%(c)s::text[]) "
            "ON CONFLICT (card_id) DO NOTHING", params)
        conn.exec_driver_sql(
            "UPDATE card_spend SET debited_fen = card_spend.debited_fen + d.debited, "
            "refunded_fen = card_spend.refunded_fen + d.refunded "
            "FROM unnest(%(c)s::text[], %(d)s::bigint[], %(r)s::bigint[]) "
            "AS d(card_id, debited, refunded) WHERE card_spend.card_id = d.card_id", params)
        return
    bulk_execute(conn, "card_spend_row", lambda: dialect_insert(conn)(card_spend).values(
        card_id=bindparam("card_id")).on_conflict_do_nothing(), [{"card_id": c} for c in cards])
    bulk_execute(conn, "card_spend_add", lambda: update(card_spend).where(
        card_spend.c.card_id == bindparam("card")).values(
        debited_fen=card_spend.c.debited_fen + bindparam("debited"),
        refunded_fen=card_spend.c.refunded_fen + bindparam("refunded")),
        [{"card": c, "debited": d, "refunded": f} for c, (d, f) in deltas.items()])


_RECORD_COLUMNS = ("device_id", "seq", "record_hash", "prev_hash", "wire", "card_id",
                   "operation", "card_counter", "device_time_ms", "received_at_ms", "status")
_RECORD_TYPES = ("text", "bigint", "bytea", "bytea", "bytea", "text", "integer", "bigint",
                 "bigint", "bigint", "text")
# One statement with one array per column: a few parameters to send and parse instead
# of one per value. Rows go in the order given (sorted), which is the lock order.
_PG_RECORDS_INSERT = (
    f"INSERT INTO records ({', '.join(_RECORD_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"%({c})s::{t}[]" for c, t in zip(_RECORD_COLUMNS, _RECORD_TYPES, strict=True))
    + ") ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq")


def _drop_quarantine_of(rejected: list[_Rejected], signed: SignedRecord) -> None:
    """Forget a chain rejection of ``signed`` made before we knew another worker had it."""
    for i, r in enumerate(rejected):
        if r.payload == signed.wire and r.error.reason == Reason.BROKEN_CHAIN:
            del rejected[i]
            return


def _bulk_insert(table, *skip: str):
    return insert(table).values({c.name: bindparam(c.name) for c in table.columns
                                 if c.name not in skip})


def _floor_accounts(r: TransactionRecord) -> tuple[str, ...]:
    card = f"card:{r.card_id}"
    if r.product:
        return (f"{card}:purse", f"{card}:points", f"{card}:visits:{r.product}")
    return (f"{card}:purse", f"{card}:points")


def _stored_around(conn: Connection, verified: list[SignedRecord]
                   ) -> dict[tuple[str, int], tuple[bytes, bytes, str]]:
    """Rows already stored at, just before and just after each record's sequence."""
    per_device: dict[str, set[int]] = defaultdict(set)
    for s in verified:
        per_device[s.record.device_id].update((s.record.seq - 1, s.record.seq, s.record.seq + 1))
    stored: dict[tuple[str, int], tuple[bytes, bytes, str]] = {}
    cols = (records.c.seq, records.c.record_hash, records.c.prev_hash, records.c.status)
    for dev, seqs in per_device.items():
        lo, hi = min(seqs), max(seqs)
        where = records.c.device_id == dev
        if hi - lo < 4 * len(seqs):  # one range scan of the primary key
            queries = [select(*cols).where(where & records.c.seq.between(lo, hi))]
        else:
            queries = [select(*cols).where(where & records.c.seq.in_(part))
                       for part in _chunks(sorted(seqs), 900)]
        for q in queries:
            for seq, h, p, status in conn.execute(q):
                if seq in seqs:
                    stored[(dev, seq)] = (bytes(h), bytes(p), status)
    return stored


def _verify_one(topic: str, payload: bytes, registry: dict[str, Device]) -> SignedRecord:
    def key_for(device_id: str) -> Ed25519PublicKey | None:
        device = registry.get(device_id)
        return device.public_key if device else None

    signed = verify_wire(payload, key_for)
    device_id = signed.record.device_id
    if device_id != device_of_topic(topic):
        raise RecordRejected(Reason.WRONG_TOPIC, f"record of {device_id!r} arrived on {topic!r}")
    device = registry[device_id]
    if device.status == "held":
        raise RecordRejected(Reason.HELD_DEVICE,
                             f"device {device_id!r} is held until an operator releases it")
    if device.status != "active":
        raise RecordRejected(Reason.REVOKED_DEVICE, f"device {device_id!r} is {device.status}")
    return signed


def sender_of_topic(topic: object) -> str:
    """Who sent a message, as its topic says: the device id, or the topic's device
    level when it is not a valid id (cut to 64 characters), or ``unknown``.

    The broker's ACL binds a device's topics to its own credentials, so the topic names
    the sender even when the payload cannot be read or claims to be another device's.
    """
    if not isinstance(topic, str):
        return "unknown"
    device = device_of_topic(topic)
    if device:
        return device
    parts = topic.split("/")
    return (parts[3][:64] if len(parts) > 3 and parts[3] else "unknown")


def _rejection(payload: bytes, exc: RecordRejected, topic: object) -> _Rejected:
    """A refused message, attributed to the device its topic names (not to the device
    the payload claims to be: one terminal must not spend another's quarantine)."""
    payload = bytes(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else b""
    seq = None
    try:
        seq = decode_wire(payload).record.seq
    except RecordRejected:
        pass
    return _Rejected(payload, exc, sender_of_topic(topic), seq)


def _rejected_record(signed: SignedRecord, exc: RecordRejected) -> _Rejected:
    """A verified record refused later (chain, duplicate): its device sent it."""
    return _Rejected(signed.wire, exc, signed.record.device_id, signed.record.seq)


def _ensure_budget_row(conn: Connection, device_id: str) -> None:
    ins = dialect_insert(conn)(quarantine_budget).values(device_id=device_id)
    conn.execute(ins.on_conflict_do_nothing(index_elements=[quarantine_budget.c.device_id]))


def _posted_hash(stored: dict, fresh: dict, status_of: dict, key: tuple[str, int]) -> bytes | None:
    if key in status_of:
        return fresh[key].record_hash if status_of[key] == "posted" else None
    row = stored.get(key)
    return row[0] if row is not None and row[2] == "posted" else None


def advance(conn: Connection, device_id: str) -> Ack:
    """Move the device's contiguous mark over what is committed; report the gaps.

    The device row is locked first (PostgreSQL, FOR NO KEY UPDATE: the records'
    foreign-key locks must not block it), so two workers finishing batches of the same
    device compute their acks one after the other, each over committed records.
    """
    through, highest = conn.execute(
        select(devices.c.contiguous_through, devices.c.highest_seen)
        .where(devices.c.device_id == device_id).with_for_update(key_share=True)).one()
    above: list[int] = []
    while True:
        above = [s for (s,) in conn.execute(
            select(records.c.seq).where((records.c.device_id == device_id) & (records.c.seq > through))
            .order_by(records.c.seq).limit(_ADVANCE_WINDOW))]
        moved = 0
        for seq in above:
            if seq != through + 1:
                break
            through = seq
            moved += 1
        above = above[moved:]
        if above or moved < _ADVANCE_WINDOW:
            break
    highest = max([highest, through, *above[-1:]])
    present = set(above)
    window_end = above[-1] if above else through
    missing = tuple(islice((s for s in range(through + 1, window_end) if s not in present),
                           MAX_MISSING_REPORTED))
    conn.execute(update(devices).where(devices.c.device_id == device_id)
                 .values(contiguous_through=through, highest_seen=highest))
    return Ack(through, missing)


def gap_report(engine: Engine) -> dict[str, Ack]:
    """Devices with a hole in what HQ holds: the ack to send them again (a re-request).

    A device whose missing record's ack was lost would otherwise wait for its resend
    timer; asking again costs one small message per device with a gap.
    """
    out: dict[str, Ack] = {}
    with engine.connect() as conn:
        gapped = [d for (d,) in conn.execute(select(devices.c.device_id).where(
            devices.c.highest_seen > devices.c.contiguous_through))]
    for device_id in gapped:
        with engine.begin() as conn:
            ack = advance(conn, device_id)
        if ack.missing:
            out[device_id] = ack
    return out


def bump(conn: Connection, name: str, by: int) -> None:
    done = conn.execute(update(counters).where(counters.c.name == name)
                        .values(value=counters.c.value + by)).rowcount
    if not done:
        conn.execute(insert(counters).values(name=name, value=by))


def ingest_all(engine: Engine, messages: Iterable[tuple[str, bytes]], batch: int = 500,
               on_batch: Callable[[BatchResult], None] | None = None) -> BatchResult:
    """Feed messages through :class:`Ingest` in batches (tests, tools); totals returned."""
    ingest = Ingest(engine)
    totals = BatchResult()
    pending = list(messages)
    for part in _chunks(pending, batch):
        r = ingest.process(part)
        totals.posted += r.posted
        totals.duplicates += r.duplicates
        totals.rejected.update(r.rejected)
        totals.acks.update(r.acks)
        totals.cards |= r.cards
        if on_batch:
            on_batch(r)
    return totals
