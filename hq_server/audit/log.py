"""The audit log (操作日志): every operator action, append-only and hash-chained.

Each change an operator makes (who, what, before and after, when, from where) is one row,
written in the same database transaction as the change itself, so there is never a change
without its row nor a row without its change. Each row carries the SHA-256 of its content
and of the row before it: editing or deleting a row breaks the chain, which
``onecard hq verify-audit`` reports.

Appends are serialised by locking the chain's head row (``audit_head``), so two
concurrent writers never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from hq_server.operators.access import Actor, Place

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at_ms: int
    operator: str
    role: str
    origin: str
    action: str
    target_kind: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str
    hash: str
    #: The store of the action's target (None: chain-level), see :func:`record_action`.
    store: str | None = None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def entry_hash(prev_hash: str, seq: int, at_ms: int, operator: str, role: str, origin: str,
               action: str, target_kind: str, target_id: str, before: Any, after: Any,
               store: str | None = None) -> str:
    """The hash of one row: its content and the previous row's hash.

    ``store`` is hashed only when set, so rows written before rows knew their store
    (migration 0011) keep their hash.
    """
    content = [prev_hash, seq, at_ms, operator, role, origin, action, target_kind,
               target_id, before, after]
    if store is not None:
        content.append({"store": store})
    body = _canonical(content)
    return hashlib.sha256(body.encode()).hexdigest()


def record_action(conn: Connection, actor: Actor, action: str, target_kind: str,
                  target_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
                  now_ms: int, place: Place | None = None) -> AuditEntry:
    """Append one action to the audit log, inside the caller's transaction.

    ``place`` is where the target lives (its store): store and region managers read
    the actions on their stores' things (``/v1/audit``), and only chain-scoped readers
    see rows without a store. Pass it for everything that belongs to a store.

    ``action`` is a dotted verb (``member.create``, ``member.update``, ``store.create``,
    ``operator.lock``, ...); ``before``/``after`` are the target's fields as the caller
    shows them (None when it did not exist / no longer exists). Secrets (password hashes,
    PINs, tokens) must not be in them.
    """
    from hq_server.db.tables import audit_head, audit_log

    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                        .where(audit_head.c.id == 1).with_for_update()).first()
    if head is None:
        conn.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS))
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                            .where(audit_head.c.id == 1).with_for_update()).one()
    seq, prev = int(head[0]) + 1, str(head[1])
    store = place.store if place is not None else None
    digest = entry_hash(prev, seq, now_ms, actor.operator, actor.role, actor.origin, action,
                        target_kind, target_id, before, after, store)
    conn.execute(insert(audit_log).values(
        seq=seq, at_ms=now_ms, operator=actor.operator, role=actor.role,
        origin=actor.origin, action=action, target_kind=target_kind, target_id=target_id,
        before_json=None if before is None else _canonical(before),
        after_json=None if after is None else _canonical(after),
        prev_hash=prev, hash=digest, store=store))
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    return AuditEntry(seq, now_ms, actor.operator, actor.role, actor.origin, action,
                      target_kind, target_id, before, after, prev, digest, store)


def record_actions(conn: Connection, actor: Actor,
                   actions: list[tuple[Any, ...]], now_ms: int) -> int:
    """Append many actions of one operator at once (an import of 100,000 members), each
    ``(action, target_kind, target_id, before, after[, place])`` its own chained row,
    exactly as :func:`record_action` would write them one by one; the head is locked once
    and the rows inserted in bulk. Returns the last sequence number."""
    from hq_server.db.bulk import copy_rows
    from hq_server.db.tables import audit_head, audit_log

    if not actions:
        return 0
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                        .where(audit_head.c.id == 1).with_for_update()).first()
    if head is None:
        conn.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS))
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                            .where(audit_head.c.id == 1).with_for_update()).one()
    seq, prev = int(head[0]), str(head[1])
    rows = []
    for action, target_kind, target_id, before, after, *rest in actions:
        place = rest[0] if rest else None
        store = place.store if place is not None else None
        seq += 1
        digest = entry_hash(prev, seq, now_ms, actor.operator, actor.role, actor.origin,
                            action, target_kind, target_id, before, after, store)
        rows.append({"seq": seq, "at_ms": now_ms, "operator": actor.operator,
                     "role": actor.role, "origin": actor.origin, "action": action,
                     "target_kind": target_kind, "target_id": target_id,
                     "before_json": None if before is None else _canonical(before),
                     "after_json": None if after is None else _canonical(after),
                     "prev_hash": prev, "hash": digest, "store": store})
        prev = digest
    for i in range(0, len(rows), 5000):
        copy_rows(conn, audit_log, rows[i:i + 5000])
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev))
    return seq
