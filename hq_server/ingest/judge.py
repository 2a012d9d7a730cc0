"""The business rules applied to one batch, in the cards' order, and what they found.

:func:`hq_server.ingest.record_rules.check_record` judges one record from facts; the
:class:`Judge` gathers those facts for a batch (the catalogue in force, each card's
debits and refunds so far, what HQ holds on the card) and stores what it found: rule
breaks, anomalies, the cards' new debit and refund totals.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.engine import Connection

from hq_server.catalogue.versions import CatalogueHistory, catalogue_history, latest_version
from hq_server.db.bulk import chunks, copy_rows
from hq_server.db.tables import anomalies, card_spend, rule_breaks
from hq_server.devices.registry import Device
from hq_server.ingest.record_rules import (
    BrokenRule,
    CardFacts,
    DeviceFacts,
    RulesConfig,
    check_record,
    debit_value,
    note_accepted,
    refund_value,
)
from hq_server.ingest.storage import add_card_spend, bump
from hq_server.reconciliation.rules import CardEvent
from protocol.record import Operation, SignedRecord, TransactionRecord

log = logging.getLogger(__name__)


def current_catalogues(conn: Connection, held: CatalogueHistory) -> CatalogueHistory:
    """The catalogue history, read again only when a new version was set."""
    return held if latest_version(conn) == held.latest_version else catalogue_history(conn)


def judge_batch(conn: Connection, signed: list[SignedRecord], registry: dict[str, Device],
                catalogues: CatalogueHistory, rules: RulesConfig, now: int) -> Judge:
    """The rules' view of this batch: catalogue in force, the cards' refund history."""
    refund_cards = sorted({s.record.card_id for s in signed
                           if s.record.operation == Operation.REFUND})
    spend: dict[str, tuple[int, int]] = {}
    for chunk in chunks(refund_cards, 900):
        for card, debited, refunded in conn.execute(select(
                card_spend.c.card_id, card_spend.c.debited_fen, card_spend.c.refunded_fen)
                .where(card_spend.c.card_id.in_(chunk))):
            spend[card] = (int(debited), int(refunded))
    return Judge(registry, spend, catalogues, rules, now)


class Judge:
    """Applies :func:`check_record` to one batch, in the cards' order, and stores what
    it found: rule breaks, anomalies, the cards' debit and refund totals."""

    def __init__(self, registry: dict[str, Device], spend: dict[str, tuple[int, int]],
                 catalogues: CatalogueHistory, rules: RulesConfig, now: int) -> None:
        self.catalogues = catalogues
        self.rules = rules
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
        catalogue = self.catalogues.in_force(r.device_time_ms)
        broken = check_record(r, DeviceFacts(device.device_id, device.role, device.store), card,
                              catalogue, self.rules)
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
            add_card_spend(conn, deltas)
        if self.unpriced:
            bump(conn, "records_unpriced", self.unpriced)

    def _anomaly(self, r: TransactionRecord, broken: list[BrokenRule]) -> dict:
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
