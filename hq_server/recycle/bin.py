"""The recycle bin's services: put a deleted thing in, list, restore, purge.

- **Put in** (:func:`put_in_bin`): a domain's delete service calls it inside its own
  transaction, so a thing is never deleted without an entry, nor the reverse.
- **List** (:func:`list_bin`): what is in the bin, newest first, narrowed to the
  reader's scope (an entry belongs to the store of what was deleted; entries of
  chain-level things are seen by chain-scoped operators only). Needs
  ``recycle.restore`` (store and region managers, administrators) or ``audit.read``
  (auditors see the bin, they cannot restore).
- **Restore** (:func:`restore_from_bin`, ``recycle.restore`` in the entry's scope): the
  domain brings the thing back; the entry is closed as ``restored``.
- **Purge** (:func:`purge_from_bin`, ``recycle.purge``: administrators only): allowed once
  the retention period (default 30 days, :func:`retention_ms`) has passed since the
  deletion; the domain removes the thing for good and the entry keeps only who/when
  (its snapshot is dropped: a purge is also how personal data goes).

Restore and purge are audited (``recycle.restore``, ``recycle.purge``) in the same
transaction as the change.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.api.common import BadCursor, decode_cursor, encode_cursor, page_limit
from hq_server.audit.log import record_action
from hq_server.db.tables import recycle_bin
from hq_server.operators.access import (
    Actor,
    Forbidden,
    Level,
    Place,
    authorise,
    scope_filter,
)
from hq_server.recycle.registry import kind_of

DAY_MS = 24 * 3600 * 1000
DEFAULT_RETENTION_DAYS = 30
#: Environment variable that sets the retention period in days (1 to 3650).
RETENTION_ENV = "ONECARD_RECYCLE_RETENTION_DAYS"
STATES = ("in_bin", "restored", "purged")


class NotInBin(LookupError):
    """No such entry in the bin, or it was already restored or purged (HTTP 404)."""


class RetentionNotOver(Exception):
    """Purging before the retention period ended (HTTP 409)."""


class CannotRestore(Exception):
    """The domain refuses to bring the thing back, with the reason (HTTP 409)."""


class AlreadyInBin(Exception):
    """The thing is in the bin already (a second delete of it)."""


def retention_ms(days: int | None = None) -> int:
    """The retention period: ``days``, else ``$ONECARD_RECYCLE_RETENTION_DAYS``, else 30."""
    if days is None:
        text = os.environ.get(RETENTION_ENV, "").strip()
        if not text:
            days = DEFAULT_RETENTION_DAYS
        elif text.isdigit():
            days = int(text)
        else:
            raise ValueError(f"{RETENTION_ENV} must be a number of days, not {text[:20]!r}")
    if not 1 <= days <= 3650:
        raise ValueError("the recycle bin keeps things 1 to 3650 days")
    return days * DAY_MS


@dataclass(frozen=True)
class BinEntry:
    entry_id: int
    kind: str
    target_id: str
    label: str
    store: str | None
    region: str | None
    state: str
    deleted_at_ms: int
    deleted_by: str
    purge_after_ms: int
    closed_at_ms: int | None
    closed_by: str | None
    snapshot: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _entry(row: Any, keep_ms: int) -> BinEntry:
    return BinEntry(row["entry_id"], row["kind"], row["target_id"], row["label"],
                    row["store"], row["region"], row["state"], row["deleted_at_ms"],
                    row["deleted_by"], row["deleted_at_ms"] + keep_ms, row["closed_at_ms"],
                    row["closed_by"],
                    None if row["snapshot_json"] is None else json.loads(row["snapshot_json"]))


def put_in_bin(conn: Connection, actor: Actor, kind: str, target_id: str, *,
               place: Place | None, label: str, snapshot: dict[str, Any] | None,
               now_ms: int) -> int:
    """Record that ``target_id`` of ``kind`` was deleted (inside the delete's transaction).

    The caller has already authorised the delete and audited it (``member.delete``, ...).
    Returns the entry id.
    """
    kind_of(kind)
    held = conn.execute(select(recycle_bin.c.entry_id).where(
        (recycle_bin.c.kind == kind) & (recycle_bin.c.target_id == target_id)
        & (recycle_bin.c.state == "in_bin"))).first()
    if held is not None:
        raise AlreadyInBin(f"{kind} {target_id} is in the recycle bin already")
    place = place or Place(None)
    return int(conn.execute(insert(recycle_bin).values(
        kind=kind, target_id=target_id, label=label[:200], store=place.store,
        region=place.region, state="in_bin", deleted_at_ms=now_ms,
        deleted_by=actor.operator,
        snapshot_json=None if snapshot is None else json.dumps(
            snapshot, ensure_ascii=False, sort_keys=True, default=str),
    )).inserted_primary_key[0])


def _may_read(actor: Actor) -> None:
    try:
        authorise(actor, "recycle.restore")
    except Forbidden:
        authorise(actor, "audit.read")


def list_bin(engine: Engine, actor: Actor, *, kind: str | None = None,
             state: str = "in_bin", cursor: str | None = None, limit: int | None = None,
             keep_days: int | None = None) -> tuple[list[BinEntry], str | None]:
    """One page of the bin, newest first, and the next page's cursor (or None)."""
    _may_read(actor)
    if state not in STATES:
        raise NotInBin(f"state is one of {', '.join(STATES)}")
    size = page_limit(limit)
    after = decode_cursor(cursor, 1)
    query = (select(recycle_bin).where(recycle_bin.c.state == state)
             .order_by(recycle_bin.c.entry_id.desc()).limit(size + 1))
    level, scope_id = scope_filter(actor)
    if level is Level.STORE:
        query = query.where(recycle_bin.c.store == scope_id)
    elif level is Level.REGION:
        query = query.where(recycle_bin.c.region == scope_id)
    if kind is not None:
        query = query.where(recycle_bin.c.kind == kind)
    if after is not None:
        if not isinstance(after[0], int) or not 0 < after[0] < 2**62:
            raise BadCursor("this cursor was not made by this API")
        query = query.where(recycle_bin.c.entry_id < after[0])
    keep = retention_ms(keep_days)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    items = [_entry(r, keep) for r in rows[:size]]
    return items, encode_cursor((items[-1].entry_id,)) if len(rows) > size else None


def _open_entry(conn: Connection, actor: Actor, entry_id: int, permission: str) -> Any:
    row = conn.execute(select(recycle_bin).where(recycle_bin.c.entry_id == entry_id)
                       .with_for_update()).mappings().first()
    if row is None or row["state"] != "in_bin":
        # Checked before the scope: an entry out of scope and a missing one read alike.
        authorise(actor, permission)
        raise NotInBin(f"no entry {entry_id} in the recycle bin")
    authorise(actor, permission, Place(row["store"], row["region"]))
    return row


def _close(conn: Connection, actor: Actor, row: Any, state: str, now_ms: int) -> None:
    values: dict[str, Any] = {"state": state, "closed_at_ms": now_ms,
                              "closed_by": actor.operator}
    if state == "purged":
        values["snapshot_json"] = None
    conn.execute(update(recycle_bin).where(recycle_bin.c.entry_id == row["entry_id"])
                 .values(**values))
    action = "recycle.restore" if state == "restored" else "recycle.purge"
    record_action(conn, actor, action, row["kind"], row["target_id"],
                  {"bin_entry": row["entry_id"], "state": "in_bin", "label": row["label"]},
                  {"bin_entry": row["entry_id"], "state": state}, now_ms,
                  place=Place(row["store"], row["region"]))


def take_out_of_bin(conn: Connection, actor: Actor, kind: str, target_id: str,
                    now_ms: int) -> None:
    """Close the bin entry of a thing its own domain restored (e.g. ``PATCH`` of a member
    back to active), inside that transaction; nothing when it is not in the bin."""
    row = conn.execute(select(recycle_bin).where(
        (recycle_bin.c.kind == kind) & (recycle_bin.c.target_id == target_id)
        & (recycle_bin.c.state == "in_bin"))).mappings().first()
    if row is not None:
        conn.execute(update(recycle_bin).where(recycle_bin.c.entry_id == row["entry_id"])
                     .values(state="restored", closed_at_ms=now_ms,
                             closed_by=actor.operator))


def restore_from_bin(engine: Engine, actor: Actor, entry_id: int, now_ms: int) -> BinEntry:
    """Bring a deleted thing back, through its domain; audited. NotInBin, NotVisible,
    Forbidden or the domain's CannotRestore otherwise (then nothing changed)."""
    with engine.begin() as conn:
        row = _open_entry(conn, actor, entry_id, "recycle.restore")
        kind_of(row["kind"]).restore(conn, actor, row["target_id"], now_ms)
        _close(conn, actor, row, "restored", now_ms)
        closed = conn.execute(select(recycle_bin).where(
            recycle_bin.c.entry_id == entry_id)).mappings().one()
    return _entry(closed, retention_ms())


def purge_from_bin(engine: Engine, actor: Actor, entry_id: int, now_ms: int,
                   keep_days: int | None = None) -> BinEntry:
    """Remove a deleted thing for good (administrators, after the retention period)."""
    keep = retention_ms(keep_days)
    with engine.begin() as conn:
        row = _open_entry(conn, actor, entry_id, "recycle.purge")
        if now_ms < row["deleted_at_ms"] + keep:
            days_left = -(-(row["deleted_at_ms"] + keep - now_ms) // DAY_MS)
            raise RetentionNotOver(
                f"entry {entry_id} ({row['kind']} {row['target_id']}) may be purged "
                f"{keep // DAY_MS} days after its deletion: {days_left} more day(s)")
        kind_of(row["kind"]).purge(conn, actor, row["target_id"], now_ms)
        _close(conn, actor, row, "purged", now_ms)
        closed = conn.execute(select(recycle_bin).where(
            recycle_bin.c.entry_id == entry_id)).mappings().one()
    return _entry(closed, keep)


def purge_expired(engine: Engine, actor: Actor, now_ms: int,
                  keep_days: int | None = None) -> list[BinEntry]:
    """Purge every entry whose retention period is over (administrators)."""
    authorise(actor, "recycle.purge")
    keep = retention_ms(keep_days)
    with engine.connect() as conn:
        due = [r for (r,) in conn.execute(
            select(recycle_bin.c.entry_id).where(
                (recycle_bin.c.state == "in_bin")
                & (recycle_bin.c.deleted_at_ms <= now_ms - keep))
            .order_by(recycle_bin.c.entry_id))]
    return [purge_from_bin(engine, actor, entry_id, now_ms, keep_days) for entry_id in due]
