"""Reconciliation: every card's own story (its records) against HQ's ledger.

The card carries the offline truth ("卡上余额"); HQ's ledger is the authority ("库中余额").
Each card write raises the card's transaction counter by one, and every write is a
signed record, so a card's records ordered by counter must form one unbroken line:
each record's *before* is the previous record's *after*. What breaks the line is
evidence:

* the same counter written twice from two devices → **clone** (a copied card image used
  at two terminals, typically while they were offline);
* the same counter written twice by one device, or a device seeing the card's counter go
  down → **rollback** (an older dump written back onto the card, or a clone);
* value (purse or visits) that rose between two records with no record to explain it
  → **forged top-up**; when counters are missing in between (records still in transit
  from an offline terminal) it is reported with medium severity and cleared if the
  missing records turn out to explain it;
* value that vanished without a record → **unrecorded loss** (low: a torn write or a
  reader fault, a risk for the member rather than the venue);
* a use of the card after it was denylisted (the loss report) → **late denylist hit**.

:func:`reconcile_card` is plain code over a card's events, its ledger balances and its
denylist history. :func:`hq_server.reconciliation.runs.reconcile_due` is the thin database adapter: it picks the cards
ingest touched since their last reconciliation, stores anomalies (each once, under a
key derived from what it is about) and the card's expected state, and optionally puts
a cloned card on the denylist, returning the denylist delta to publish to terminals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocol.record import Flag, Operation, TransactionRecord
from protocol.topics import DenylistDelta

if TYPE_CHECKING:
    from hq_server.devices.denylist import DenylistPeriod

#: Operations that use the card (and so must not happen after it was denylisted).
USES = frozenset({Operation.DEBIT, Operation.TAKE_VISIT, Operation.UID_VISIT,
                  Operation.RECHARGE, Operation.ADD_VISITS, Operation.REFUND})


@dataclass(frozen=True)
class CardEvent:
    """One record of a card, with what reconciliation needs of it."""

    device_id: str
    seq: int
    counter: int
    operation: Operation
    product: str
    purse_before: int
    purse_after: int
    visits_before: int
    visits_after: int
    device_time_ms: int
    flags: int
    store: str

    @property
    def ref(self) -> str:
        return f"{self.device_id}#{self.seq}"

    @classmethod
    def of(cls, r: TransactionRecord) -> CardEvent:
        return cls(r.device_id, r.seq, r.card_counter, r.operation, r.product, r.purse_before,
                   r.purse_after, r.visits_before, r.visits_after, r.device_time_ms, r.flags,
                   r.store)

    def evidence(self) -> dict:
        return {"record": self.ref, "counter": self.counter, "operation": self.operation.name,
                "store": self.store, "device_time_ms": self.device_time_ms,
                "purse": [self.purse_before, self.purse_after],
                "visits": [self.product, self.visits_before, self.visits_after],
                "offline": bool(self.flags & Flag.OFFLINE),
                "unconfirmed_write": bool(self.flags & Flag.UNCONFIRMED_CARD_WRITE)}


@dataclass(frozen=True)
class LedgerView:
    """What HQ's ledger holds for a card: purse (fen), visits per product, points."""

    purse: int = 0
    visits: dict[str, int] = field(default_factory=dict)
    points: int = 0
    unbacked_purse: int = 0  # value spent beyond what the ledger held (clone, forgery)


@dataclass(frozen=True)
class Anomaly:
    key: str
    card_id: str
    kind: str  # clone / rollback / forged_topup / unrecorded_loss / late_denylist_hit
    severity: str  # low / medium / high
    summary: str
    evidence: dict


@dataclass(frozen=True)
class CardReport:
    card_id: str
    expected: LedgerView
    card_purse: int
    card_visits: dict[str, int]
    card_counter: int
    anomalies: list[Anomaly]

    @property
    def divergence_fen(self) -> int:
        """Value the card shows beyond what the ledger holds for it (negative: less)."""
        return self.card_purse - self.expected.purse


@dataclass(frozen=True)
class CardWrite:
    """One write of the card: the record(s) one device made for it at one moment.

    Most writes are one record; a recall, for one, makes a record per product it clears,
    all with the same counter.
    """

    events: tuple[CardEvent, ...]

    @property
    def first(self) -> CardEvent:
        return self.events[0]

    @property
    def purse_before(self) -> int:
        return self.events[0].purse_before

    @property
    def purse_after(self) -> int:
        return self.events[-1].purse_after


def _writes(events: list[CardEvent]) -> dict[int, list[CardWrite]]:
    grouped: dict[tuple[int, str, int], list[CardEvent]] = defaultdict(list)
    for e in events:
        grouped[(e.counter, e.device_id, e.device_time_ms)].append(e)
    out: dict[int, list[CardWrite]] = defaultdict(list)
    for (counter, _dev, _t), evs in sorted(grouped.items()):
        out[counter].append(CardWrite(tuple(sorted(evs, key=lambda e: e.seq))))
    return out


def _unsure(write: CardWrite, group: list[CardWrite]) -> bool:
    """Whether the terminal that made ``write`` could not know it was its own: it could
    not confirm it at all, or only by reading back a state another write of the same
    counter also left (the same operation in the same minute leaves the same bytes)."""
    flags = write.first.flags
    if flags & Flag.UNCONFIRMED_CARD_WRITE:
        return True
    if flags & Flag.CONFIRMED_ON_READBACK:
        return any(other is not write and _same_result(other, write) for other in group)
    return False


def _same_result(a: CardWrite, b: CardWrite) -> bool:
    def result(w: CardWrite) -> tuple:
        return tuple((e.operation, e.product, e.purse_before, e.purse_after, e.visits_before,
                      e.visits_after) for e in w.events)
    return result(a) == result(b)


def _followed(write: CardWrite, previous: list[tuple[int, dict[str, int]]]) -> list[dict[str, int]]:
    """Copies of the visits of each earlier state ``write`` can have started from: those
    its purse and its visits before agree with, else those its purse agrees with, else
    the first (the line is broken there, and an anomaly says so)."""
    before: dict[str, int] = {}
    for e in write.events:
        if e.product:
            before.setdefault(e.product, e.visits_before)
    by_purse = [v for p, v in previous if p == write.purse_before]
    fits = [v for v in by_purse if all(v.get(k, 0) == n for k, n in before.items())]
    return [dict(v) for v in (fits or by_purse or [previous[0][1]])]


def reconcile_card(card_id: str, events: Iterable[CardEvent], ledger: LedgerView,
                   denylisted: Iterable[DenylistPeriod] = ()) -> CardReport:
    """Compare a card's records with each other, with its ledger and its denylist history."""
    events = sorted(events, key=lambda e: (e.counter, e.device_time_ms, e.device_id, e.seq))
    found: list[Anomaly] = []
    by_counter = _writes(events)

    # 1. The same counter written more than once.
    for counter, group in by_counter.items():
        if len(group) < 2:
            continue
        devices = sorted({w.first.device_id for w in group})
        unsure = [w for w in group if _unsure(w, group)]
        evidence = {"counter": counter, "records": [e.evidence() for w in group for e in w.events]}
        # At most one write its terminal was sure of: the card was pulled away or the
        # power went mid-write, and the card was used again (at that terminal or
        # another) from the state it kept. One card explains it, not two copies.
        if len(unsure) >= len(group) - 1:
            found.append(Anomaly(f"unconfirmed_write:{card_id}:{counter}", card_id,
                                 "unconfirmed_write", "low",
                                 f"counter {counter} reused after an unconfirmed card write",
                                 evidence))
        elif len(devices) > 1:
            found.append(Anomaly(f"clone:{card_id}:{counter}", card_id, "clone", "high",
                                 f"counter {counter} written by {len(devices)} devices "
                                 f"({', '.join(devices)}): two copies of the card are in use",
                                 evidence))
        else:
            found.append(Anomaly(f"rollback:{card_id}:{counter}", card_id, "rollback", "high",
                                 f"counter {counter} written {len(group)} times by {devices[0]}: "
                                 "an older card image was written back (rollback or clone)",
                                 evidence))

    # 2. A device that saw the card's counter go down (in the device's own order).
    per_device: dict[str, list[CardEvent]] = defaultdict(list)
    for e in events:
        per_device[e.device_id].append(e)
    for device, seen in per_device.items():
        seen.sort(key=lambda e: e.seq)
        for earlier, later in zip(seen, seen[1:], strict=False):
            if later.counter < earlier.counter:
                found.append(Anomaly(
                    f"rollback:{card_id}:{later.ref}", card_id, "rollback", "high",
                    f"{device} saw the card's counter go back from {earlier.counter} "
                    f"to {later.counter}",
                    {"records": [earlier.evidence(), later.evidence()]}))

    # 3. The unbroken line of value: each write starts from what the previous counter's
    # write(s) left (several after a clone), or from a blank card.
    previous_counter = 0
    previous: list[tuple[int, dict[str, int]]] = [(0, {})]
    for counter in sorted(by_counter):
        gap = counter - previous_counter - 1
        severity = "high" if gap == 0 else "medium"
        note = "" if gap == 0 else f" ({gap} counter(s) in between not seen yet)"
        nxt: list[tuple[int, dict[str, int]]] = []
        for w in by_counter[counter]:
            e = w.first
            purses = [p for p, _ in previous]
            if w.purse_before not in purses:
                best = max(purses)
                if w.purse_before > best:
                    found.append(Anomaly(
                        f"forged_topup:{card_id}:{e.ref}:purse", card_id, "forged_topup", severity,
                        f"purse shows {w.purse_before} fen at counter {counter}, "
                        f"{w.purse_before - best} more than any record explains{note}",
                        {"record": e.evidence(), "explained_fen": best, "counter_gap": gap}))
                elif gap == 0:
                    found.append(Anomaly(
                        f"unrecorded_loss:{card_id}:{e.ref}:purse", card_id, "unrecorded_loss",
                        "low", f"purse shows {w.purse_before} fen at counter {counter}, "
                        f"{min(purses) - w.purse_before} less than the records say",
                        {"record": e.evidence(), "explained_fen": purses}))
            # Go on from the previous write(s) this one followed (its purse and visits
            # before say which), not from whichever came first: after an unconfirmed
            # write that never landed, the line goes on from the write that did. When
            # several fit (a visit and a debit of an empty purse both leave purse 0,
            # and a top-up follows), all of them go on: a later write tells them apart.
            starts = _followed(w, previous)
            for ev in w.events:
                if not ev.product:
                    continue
                options = [v.get(ev.product, 0) for _, v in previous]
                if ev.visits_before not in options:
                    best = max(options)
                    if ev.visits_before > best:
                        found.append(Anomaly(
                            f"forged_topup:{card_id}:{ev.ref}:visits", card_id, "forged_topup",
                            severity, f"card shows {ev.visits_before} visits of {ev.product} at "
                            f"counter {counter}, {ev.visits_before - best} more than any record "
                            f"explains{note}",
                            {"record": ev.evidence(), "explained_visits": best, "counter_gap": gap}))
                    elif gap == 0:
                        found.append(Anomaly(
                            f"unrecorded_loss:{card_id}:{ev.ref}:visits", card_id,
                            "unrecorded_loss", "low",
                            f"card shows {ev.visits_before} visits of {ev.product} at counter "
                            f"{counter}, fewer than the records say",
                            {"record": ev.evidence(), "explained_visits": options}))
                for visits in starts:
                    visits[ev.product] = ev.visits_after
            for visits in starts:
                if (w.purse_after, visits) not in nxt:
                    nxt.append((w.purse_after, visits))
        previous, previous_counter = nxt, counter
    visits_now = previous[-1][1]

    # 4. Uses after the card was denylisted.
    periods = list(denylisted)
    for e in events:
        if e.operation not in USES:
            continue
        for p in periods:
            if e.device_time_ms >= p.since_ms and (p.until_ms is None or e.device_time_ms < p.until_ms):
                offline = bool(e.flags & Flag.OFFLINE)
                found.append(Anomaly(
                    f"late_denylist_hit:{card_id}:{e.ref}", card_id, "late_denylist_hit",
                    "medium" if offline else "high",
                    f"card used at {e.store} ({e.device_id}) "
                    f"{(e.device_time_ms - p.since_ms) // 1000} s after it was denylisted "
                    f"({p.reason}), {'offline' if offline else 'while the terminal was online'}",
                    {"record": e.evidence(), "denylisted_since_ms": p.since_ms, "reason": p.reason}))
                break

    last = events[-1] if events else None
    return CardReport(
        card_id=card_id, expected=ledger,
        card_purse=last.purse_after if last else 0,
        card_visits=visits_now,
        card_counter=last.counter if last else 0,
        anomalies=sorted({a.key: a for a in found}.values(), key=lambda a: a.key),
    )


@dataclass
class ReconcileConfig:
    #: Put a card on the denylist as soon as it is seen cloned (the chain's choice: a
    #: member with a real card then needs a replacement card, 补卡).
    auto_denylist_clones: bool = False


@dataclass
class ReconcileSummary:
    cards: int = 0
    new_anomalies: list[Anomaly] = field(default_factory=list)
    cleared: int = 0
    denylist_deltas: list[DenylistDelta] = field(default_factory=list)
