"""Holding a device whose records keep breaking business rules, and releasing it.

A held device's records are refused (unacknowledged: they wait on the device) until an
operator releases it:
a stolen terminal cannot keep feeding value into suspense.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.clock import system_clock
from hq_server.db.tables import device_events, devices, rule_breaks

log = logging.getLogger(__name__)


def hold_devices(conn: Connection, device_ids: list[str], threshold: int | None,
                 now_ms: int) -> None:
    """Hold devices whose unreviewed rule breaks reached ``threshold`` (None: never)."""
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
                       f"'onecard hq rules release {device_id}'", at_ms=now_ms))
            log.warning("device %s held: %d record(s) broke business rules",
                        device_id, broken)


def release_device(engine: Engine, device_id: str, *, operator: str, reason: str,
                   now_ms: int | None = None) -> bool:
    """Let a held device's records in again (it resends what HQ did not acknowledge).

    Its rule breaks so far are marked reviewed and no longer count towards holding it.
    Returns False when the device was not held."""
    now = system_clock() if now_ms is None else now_ms
    with engine.begin() as conn:
        done = conn.execute(update(devices).where(
            (devices.c.device_id == device_id) & (devices.c.status == "held"))
            .values(status="active")).rowcount
        if not done:
            return False
        conn.execute(update(rule_breaks).where(
            (rule_breaks.c.device_id == device_id) & rule_breaks.c.reviewed_at_ms.is_(None))
            .values(reviewed_at_ms=now))
        conn.execute(insert(device_events).values(
            device_id=device_id, event="released", actor=operator[:64],
            detail=reason or "released", at_ms=now))
    return True


@dataclass(frozen=True)
class RuleBreak:
    """One rule a posted record broke (its value went to ``suspense:<device>``)."""

    device_id: str
    seq: int
    card_id: str
    rule: str
    reason: str
    reviewed: bool


def rule_breaks_report(engine: Engine, device_id: str | None = None
                       ) -> tuple[list[RuleBreak], list[str]]:
    """Every rule break (of one device, if given) in the order found, and the held devices."""
    q = select(rule_breaks).order_by(rule_breaks.c.id)
    if device_id:
        q = q.where(rule_breaks.c.device_id == device_id)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
        held = [d for (d,) in conn.execute(select(devices.c.device_id).where(
            devices.c.status == "held").order_by(devices.c.device_id))]
    return [RuleBreak(r["device_id"], r["seq"], r["card_id"], r["rule"], r["reason"],
                      bool(r["reviewed_at_ms"])) for r in rows], held
