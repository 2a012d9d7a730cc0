"""Reading the audit log (操作日志) as operators ask for it: by operator, target, action
and period, newest first, a page at a time, narrowed to what the reader may see.

Where a row belongs is its ``store`` column (the store of the action's target, given
to :func:`~hq_server.audit.log.record_action` as ``place``). A store-scoped reader (a
store manager, a store auditor) sees the rows of their store; a region-scoped reader
the rows of the stores of their region; only chain-scoped readers see rows with no
store (chain-level things: regions, products, the chain's operators).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from hq_server.api.common import BadCursor, decode_cursor, encode_cursor, page_limit
from hq_server.db.tables import audit_log, stores
from hq_server.operators.access import Actor, Level, authorise, scope_filter

_ACTION = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?$")


class BadAuditFilter(ValueError):
    """A filter of the audit listing that cannot be applied, with the reason (HTTP 422)."""


@dataclass(frozen=True)
class AuditFilter:
    """What to list. ``action`` is exact (``member.update``) or a prefix (``member.*``);
    ``target`` is ``kind`` or ``kind:id``; the period is ``[since_ms, until_ms)``."""

    operator: str | None = None
    target: str | None = None
    action: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        if self.action is not None and not _ACTION.match(self.action):
            raise BadAuditFilter("action is a dotted name (member.update) or a prefix "
                                 "ending in .* (member.*)")
        if (self.since_ms is not None and self.until_ms is not None
                and self.since_ms >= self.until_ms):
            raise BadAuditFilter("the period's start must come before its end")
        for name in ("operator", "target"):
            value = getattr(self, name)
            if value is not None and not 0 < len(value) <= 200:
                raise BadAuditFilter(f"{name} must be 1 to 200 characters")


def _entry(row: Any) -> dict[str, Any]:
    return {"seq": row["seq"], "at_ms": row["at_ms"], "operator": row["operator"],
            "role": row["role"], "origin": row["origin"], "action": row["action"],
            "target_kind": row["target_kind"], "target_id": row["target_id"],
            "store": row["store"],
            "before": None if row["before_json"] is None else json.loads(row["before_json"]),
            "after": None if row["after_json"] is None else json.loads(row["after_json"])}


def list_actions(engine: Engine, actor: Actor, wanted: AuditFilter,
                 cursor: str | None = None, limit: int | None = None
                 ) -> tuple[list[dict[str, Any]], str | None]:
    """One page of audit rows, newest first, and the cursor of the next page (or None)."""
    authorise(actor, "audit.read")
    size = page_limit(limit)
    after = decode_cursor(cursor, 1)
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(size + 1)
    level, scope_id = scope_filter(actor)
    if level is Level.STORE:
        query = query.where(audit_log.c.store == scope_id)
    elif level is Level.REGION:
        query = query.where(audit_log.c.store.in_(
            select(stores.c.store_id).where(stores.c.region_id == scope_id)))
    if after is not None:
        if not isinstance(after[0], int) or not 0 < after[0] < 2**62:
            raise BadCursor("this cursor was not made by this API")
        query = query.where(audit_log.c.seq < after[0])
    if wanted.operator is not None:
        query = query.where(audit_log.c.operator == wanted.operator)
    if wanted.target is not None:
        kind, _, ident = wanted.target.partition(":")
        query = query.where(audit_log.c.target_kind == kind)
        if ident:
            query = query.where(audit_log.c.target_id == ident)
    if wanted.action is not None:
        if wanted.action.endswith(".*"):
            prefix = wanted.action[:-1]
            query = query.where(audit_log.c.action.startswith(prefix, autoescape=True))
        else:
            query = query.where(audit_log.c.action == wanted.action)
    if wanted.since_ms is not None:
        query = query.where(audit_log.c.at_ms >= wanted.since_ms)
    if wanted.until_ms is not None:
        query = query.where(audit_log.c.at_ms < wanted.until_ms)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    items = [_entry(r) for r in rows[:size]]
    next_cursor = encode_cursor((items[-1]["seq"],)) if len(rows) > size else None
    return items, next_cursor
