"""Reconciliation over HQ's database: which cards are due, their events and ledger
balances in, anomalies and the card's expected state out (the rules themselves are
plain code in :mod:`hq_server.reconciliation.rules`).
"""

from __future__ import annotations

import json
import logging

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from hq_server.clock import Clock, system_clock
from hq_server.db.tables import (
    anomalies,
    card_reconciliation,
    ledger_accounts,
    records,
    rule_breaks,
)
from hq_server.devices.denylist import DenylistChange, add_to_denylist, card_denylist_history
from hq_server.reconciliation.rules import (
    Anomaly,
    CardEvent,
    CardReport,
    LedgerView,
    ReconcileConfig,
    ReconcileSummary,
    reconcile_card,
)
from protocol.record import decode_wire

log = logging.getLogger(__name__)


def ledger_view(conn: Connection, card_id: str) -> LedgerView:
    prefix = f"card:{card_id}:"
    purse = points = unbacked = 0
    visits: dict[str, int] = {}
    for account, debits, credits in conn.execute(
            select(ledger_accounts.c.account, ledger_accounts.c.debits, ledger_accounts.c.credits)
            .where(ledger_accounts.c.account.between(prefix, prefix + "\x7f"))):
        rest = account[len(prefix):]
        held = int(credits) - int(debits)
        if rest == "purse":
            purse = held
        elif rest == "points":
            points = held
        elif rest == "unbacked":
            unbacked = -held
        elif rest.startswith("visits:"):
            visits[rest[len("visits:"):]] = held
    return LedgerView(purse, visits, points, unbacked)


#: Anomalies ingest raises when a record breaks a business rule (hq_server.ingest.record_rules):
#: facts about a device, which reconciliation neither finds nor clears.
INGEST_KINDS = frozenset({"rule_broken"})


def card_events(conn: Connection, card_id: str) -> list[CardEvent]:
    """The card's posted records whose value the ledger took.

    A record that broke a business rule posted to suspense: the value it claims is not
    explained, so it is left out here and a card that carries that value on shows it as
    a forged top-up."""
    in_suspense = {(d, q) for d, q in conn.execute(
        select(rule_breaks.c.device_id, rule_breaks.c.seq).where(rule_breaks.c.card_id == card_id))}
    return [CardEvent.of(decode_wire(bytes(w)).record) for d, q, w in conn.execute(
        select(records.c.device_id, records.c.seq, records.c.wire).where(
            (records.c.card_id == card_id) & (records.c.status == "posted")))
        if (d, q) not in in_suspense]


def reconcile_card_in_db(engine: Engine, card_id: str, config: ReconcileConfig | None = None,
                         *, clock: Clock = system_clock) -> tuple[CardReport, ReconcileSummary]:
    """Reconcile one card now (whether or not it is due); a card HQ does not know is
    refused (:class:`~hq_server.cards.errors.CardNotFound`), never "0 anomalies"."""
    from hq_server.cards.registry import require_known_card

    with engine.connect() as conn:
        require_known_card(conn, card_id)
    summary = ReconcileSummary()
    report = _reconcile_one(engine, card_id, config or ReconcileConfig(), summary, None,
                            clock)
    return report, summary


def reconcile_due(engine: Engine, config: ReconcileConfig | None = None,
                  limit: int = 500, *, clock: Clock = system_clock) -> ReconcileSummary:
    """Reconcile the cards ingest touched since their last reconciliation."""
    config = config or ReconcileConfig()
    summary = ReconcileSummary()
    c = card_reconciliation.c
    with engine.connect() as conn:
        due = conn.execute(select(c.card_id, c.touched).where(c.touched > c.reconciled_touch)
                           .order_by(c.card_id).limit(limit)).all()
    for card_id, touched in due:
        try:
            _reconcile_one(engine, card_id, config, summary, touched, clock)
        except IntegrityError:
            # Another worker reconciled the same card at the same moment and stored the
            # same anomaly first; the card stays due and is looked at again next time.
            log.info("card %s was reconciled concurrently; again next round", card_id)
    return summary


def _reconcile_one(engine: Engine, card_id: str, config: ReconcileConfig,
                   summary: ReconcileSummary, touched: int | None, clock: Clock) -> CardReport:
    now = clock()
    with engine.begin() as conn:
        report = reconcile_card(card_id, card_events(conn, card_id), ledger_view(conn, card_id),
                                card_denylist_history(conn, card_id))
        new = _store_anomalies(conn, report, now, summary)
        values = {
            "expected_purse": report.expected.purse,
            "expected_visits": json.dumps(report.expected.visits, sort_keys=True),
            "expected_points": report.expected.points,
            "card_purse": report.card_purse,
            "card_visits": json.dumps(report.card_visits, sort_keys=True),
            "card_counter": report.card_counter,
            "open_anomalies": sum(1 for _ in report.anomalies) + _open_ingest_anomalies(conn, card_id),
            "reconciled_at_ms": now,
        }
        if touched is not None:
            values["reconciled_touch"] = touched
        done = conn.execute(update(card_reconciliation)
                            .where(card_reconciliation.c.card_id == card_id).values(**values)).rowcount
        if not done:
            conn.execute(insert(card_reconciliation).values(card_id=card_id, touched=0, **values))
    summary.cards += 1
    summary.new_anomalies.extend(new)
    if config.auto_denylist_clones and any(a.kind == "clone" for a in new):
        change: DenylistChange | None = add_to_denylist(
            engine, card_id, "clone suspected", source="auto:clone", effective_at_ms=now,
            if_not_listed=True)
        if change is not None:
            summary.denylist_deltas.append(change.delta)
            log.warning("card %s denylisted automatically: clone suspected", card_id)
    return report


def _open_ingest_anomalies(conn: Connection, card_id: str) -> int:
    a = anomalies.c
    return int(conn.execute(select(func.count()).where(
        (a.card_id == card_id) & a.kind.in_(INGEST_KINDS) & (a.status == "open"))).scalar_one())


def _store_anomalies(conn: Connection, report: CardReport, now: int,
                     summary: ReconcileSummary) -> list[Anomaly]:
    a = anomalies.c
    existing = {key: (status, evidence) for key, status, evidence in conn.execute(
        select(a.anomaly_key, a.status, a.evidence).where(
            (a.card_id == report.card_id) & a.kind.not_in(INGEST_KINDS)))}
    new: list[Anomaly] = []
    for anomaly in report.anomalies:
        evidence = json.dumps(anomaly.evidence, sort_keys=True, ensure_ascii=False)
        held = existing.get(anomaly.key)
        if held is None:
            conn.execute(insert(anomalies).values(
                anomaly_key=anomaly.key, card_id=anomaly.card_id, kind=anomaly.kind,
                severity=anomaly.severity, status="open", summary=anomaly.summary,
                evidence=evidence, detected_at_ms=now))
            new.append(anomaly)
            log.warning("anomaly on card %s: %s (%s)", anomaly.card_id, anomaly.summary,
                        anomaly.severity)
        elif held[0] == "cleared" or held[1] != evidence:
            # More evidence arrived (a third device on a cloned counter), or it is back.
            conn.execute(update(anomalies).where(a.anomaly_key == anomaly.key).values(
                status="open", severity=anomaly.severity, summary=anomaly.summary,
                evidence=evidence, cleared_at_ms=None))
    keep = {x.key for x in report.anomalies}
    stale = [k for k, (status, _) in existing.items() if status == "open" and k not in keep]
    if stale:
        # Evidence that later records explained (a top-up whose recharge arrived late).
        conn.execute(update(anomalies).where(and_(a.anomaly_key.in_(stale), a.status == "open"))
                     .values(status="cleared", cleared_at_ms=now))
        summary.cleared += len(stale)
    return new


def open_anomalies(engine: Engine, card_id: str | None = None) -> list[dict]:
    """Open anomalies (newest first), with their evidence decoded."""
    a = anomalies.c
    q = select(anomalies).where(a.status == "open")
    if card_id is not None:
        q = q.where(a.card_id == card_id)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(a.detected_at_ms.desc(), a.id.desc())).mappings().all()
    return [{**dict(r), "evidence": json.loads(r["evidence"])} for r in rows]


