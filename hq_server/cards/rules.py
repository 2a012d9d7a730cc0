"""How a card's registry entry follows from the records HQ ingests: plain functions.

A card's state (卡状态) is one of :data:`STATES`. Terminals change it by what they do to
the card (issue 发卡, open 开户, recall 收缴, block 挂失拦截), HQ by the denylist (挂失:
lost) and by operators (freeze 冻结). :func:`follow_record` says what one record does to
the entry as it stands — nothing when the record does not change the state, product or
issuing store — so ingest writes only the few cards whose entry moved, in bulk.

A card first seen in use (a recharge or a visit of a card HQ never saw issued: issued
before HQ kept a registry, or by a terminal whose ISSUE record is still on its way) is
registered as ``open`` at the store that used it, so every card in the ledger is in the
registry. A use never reopens a lost, blocked, frozen, recalled or replaced card: that
is reconciliation's business (a late denylist hit, a clone), not a state change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from protocol.record import Operation, TransactionRecord

STATES = ("blank", "issued", "open", "lost", "blocked", "frozen", "recalled", "replaced")
#: The states a card is good for use in.
IN_SERVICE = frozenset({"issued", "open"})
#: Operations that use a card's value or visits (not UID-only credentials).
USES = frozenset({Operation.RECHARGE, Operation.DEBIT, Operation.ADD_VISITS,
                  Operation.TAKE_VISIT, Operation.REFUND, Operation.SELL_PASS})


@dataclass(frozen=True)
class CardEntry:
    """A card as the registry holds it."""

    card_id: str
    state: str
    product: str = ""
    issuing_store: str | None = None
    member_id: str | None = None


@dataclass(frozen=True)
class CardEvent:
    """One change of a card's entry, for its history."""

    card_id: str
    event: str
    state_before: str | None
    state_after: str
    source: str
    store: str | None
    at_ms: int


def follow_record(entry: CardEntry | None, record: TransactionRecord
                  ) -> tuple[CardEntry, str] | None:
    """The entry after ``record`` and the event's name, or None when it changes nothing."""
    op = record.operation
    if op is Operation.UID_VISIT:
        return None  # a UID credential (hq_server.devices.uid_credentials), not a card
    state = entry.state if entry is not None else None
    if op is Operation.ISSUE:
        if state in (None, "blank", "recalled", "issued", "open"):
            base = entry or CardEntry(record.card_id, "issued")
            return replace(base, state="issued", product=record.product or base.product,
                           issuing_store=record.store), "issued"
        return None
    if op is Operation.OPEN_ACCOUNT:
        if entry is None:
            return CardEntry(record.card_id, "open", issuing_store=record.store), "opened"
        if state in ("blank", "issued"):
            return replace(entry, state="open"), "opened"
        return None
    if op is Operation.RECALL:
        if entry is None:
            return CardEntry(record.card_id, "recalled", issuing_store=record.store), "recalled"
        return None if state == "recalled" else (replace(entry, state="recalled"), "recalled")
    if op is Operation.BLOCK:
        if entry is None:
            return CardEntry(record.card_id, "blocked", issuing_store=record.store), "blocked"
        if state in ("recalled", "replaced", "blocked"):
            return None
        return replace(entry, state="blocked"), "blocked"
    if op in USES:
        if entry is None:
            # A use names a count or pass product, not the card product: unknown
            # until its ISSUE record arrives.
            return CardEntry(record.card_id, "open", issuing_store=record.store), "first_seen"
        if state in ("blank", "issued"):
            return replace(entry, state="open"), "opened"
    return None


def follow_batch(entries: dict[str, CardEntry], records: list[TransactionRecord],
                 source_of, at_ms: int) -> tuple[dict[str, CardEntry], list[CardEvent]]:
    """Fold a batch's records (in each card's order) into the entries they touch.

    Returns the entries that changed (by card) and their events, in order; ``entries``
    is not modified. ``source_of(record)`` names a record in the history."""
    changed: dict[str, CardEntry] = {}
    events: list[CardEvent] = []
    for r in sorted(records, key=lambda r: (r.card_id, r.card_counter, r.device_id, r.seq)):
        current = changed.get(r.card_id, entries.get(r.card_id))
        moved = follow_record(current, r)
        if moved is None:
            continue
        entry, event = moved
        changed[r.card_id] = entry
        events.append(CardEvent(r.card_id, event, current.state if current else None,
                                entry.state, source_of(r), r.store, at_ms))
    return changed, events
