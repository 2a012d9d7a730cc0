"""Regions (大区) and stores (单店) as HQ manages them: create, edit, close, list, show.

Every function takes the acting operator first and authorises it with the place of
what it touches (:func:`~hq_server.operators.access.authorise`): a region is chain-level
data (only chain-wide operators change regions), a store lies in its region (a region
manager creates and edits the stores of their region). Each change is recorded in the
audit log in the same transaction, carries a ``version`` and is refused with
:class:`~hq_server.api.common.EditConflict` when someone else changed it meanwhile.

A store is never deleted: its records, ledger accounts and terminals name it forever.
Closing it (``status = closed``) stops new terminals from being enrolled for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.api.common import check_version, decode_cursor, encode_cursor, page_limit
from hq_server.audit.log import record_action
from hq_server.chain.errors import ChainError, ChainNotFound
from hq_server.chain.hours import HoursError, parse_hours
from hq_server.db.tables import devices, regions, stores
from hq_server.operators.access import Actor, Level, Place, authorise, scope_filter
from protocol.ids import describe, is_store_id

MAX_NAME = 200
MAX_ADDRESS = 500
MAX_PHONE = 40
STATUSES = ("active", "closed")
STORE_FIELDS = ("name", "region", "address", "phone", "opening_hours")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _text(value: Any, what: str, limit: int, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise ChainError(f"{what} must be text")
    if required and not value.strip():
        raise ChainError(f"{what} must not be empty")
    if len(value) > limit:
        raise ChainError(f"{what} may have at most {limit} characters")
    if any(not ch.isprintable() for ch in value):
        raise ChainError(f"{what} must not contain control characters")
    return value


def _phone(value: Any) -> str:
    text = _text(value, "phone", MAX_PHONE)
    if text and (not all(ch.isdigit() or ch in "+-() " for ch in text)
                 or sum(ch.isdigit() for ch in text) < 5):
        raise ChainError(f"phone {text[:40]!r} is not a telephone number (digits, spaces, "
                         "+ - and parentheses, at least 5 digits)")
    return text


def _id(value: Any, what: str) -> str:
    if not is_store_id(value):
        raise ChainError(f"not a {what} id: {str(value)[:70]!r} ({describe()})")
    return value


def _hours(value: Any) -> dict[str, Any]:
    try:
        return parse_hours(value)
    except HoursError as exc:
        raise ChainError(f"opening hours: {exc}") from None


# --- representations -----------------------------------------------------------------

def _region_out(row: Any) -> dict[str, Any]:
    return {"region_id": row["region_id"], "name": row["name"], "status": row["status"],
            "version": int(row["version"]), "created_at_ms": int(row["created_at_ms"])}


def _store_out(row: Any) -> dict[str, Any]:
    return {"store_id": row["store_id"], "name": row["name"], "region": row["region_id"],
            "address": row["address"], "phone": row["phone"],
            "opening_hours": json.loads(row["opening_hours"] or "{}"),
            "status": row["status"], "version": int(row["version"]),
            "created_at_ms": int(row["created_at_ms"]),
            "closed_at_ms": row["closed_at_ms"]}


def _region_row(conn: Connection, region_id: str, *, lock: bool = False) -> Any:
    q = select(regions).where(regions.c.region_id == region_id)
    row = conn.execute(q.with_for_update() if lock else q).mappings().first()
    if row is None:
        raise ChainNotFound(f"no region {region_id!r}")
    return row


def _store_row(conn: Connection, store_id: str, *, lock: bool = False) -> Any:
    q = select(stores).where(stores.c.store_id == store_id)
    row = conn.execute(q.with_for_update() if lock else q).mappings().first()
    if row is None:
        raise ChainNotFound(f"no store {store_id!r}")
    return row


def _active_region(conn: Connection, region_id: str | None) -> None:
    if region_id is None:
        return
    row = conn.execute(select(regions.c.status).where(regions.c.region_id == region_id)).first()
    if row is None:
        raise ChainError(f"region {region_id!r} is not known at HQ (create it first: "
                         "onecard hq region add)")
    if row[0] != "active":
        raise ChainError(f"region {region_id!r} is closed")


# --- regions -------------------------------------------------------------------------

def create_region(engine: Engine, actor: Actor, region_id: str, name: str,
                  now_ms: int) -> dict[str, Any]:
    """A new region (大区); regions are chain-level: only chain-wide operators add them."""
    authorise(actor, "stores.write", Place(None))
    _id(region_id, "region")
    name = _text(name, "name", MAX_NAME, required=True)
    with engine.begin() as conn:
        if conn.execute(select(regions.c.region_id)
                        .where(regions.c.region_id == region_id)).first():
            raise ChainError(f"region {region_id!r} exists already")
        conn.execute(insert(regions).values(region_id=region_id, name=name, status="active",
                                            version=1, created_at_ms=now_ms))
        out = _region_out(_region_row(conn, region_id))
        record_action(conn, actor, "region.create", "region", region_id, None, out, now_ms)
    return out


def edit_region(engine: Engine, actor: Actor, region_id: str, *, version: int | None,
                name: str | None = None, status: str | None = None,
                based_on: dict[str, Any] | None = None, now_ms: int) -> dict[str, Any]:
    """Rename a region or close/reopen it; a region with open stores cannot be closed."""
    authorise(actor, "stores.write", Place(None))
    with engine.begin() as conn:
        before = _region_out(_region_row(conn, region_id, lock=True))
        check_version(version, before, based_on)
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = _text(name, "name", MAX_NAME, required=True)
        if status is not None:
            if status not in STATUSES:
                raise ChainError(f"status must be one of {', '.join(STATUSES)}")
            if status == "closed":
                open_stores = conn.execute(select(func.count()).select_from(stores).where(
                    (stores.c.region_id == region_id) & (stores.c.status == "active"))
                ).scalar_one()
                if open_stores:
                    raise ChainError(f"region {region_id!r} still has {open_stores} open "
                                     "stores: close or move them first")
            values["status"] = status
        conn.execute(update(regions).where(regions.c.region_id == region_id).values(
            version=regions.c.version + 1, updated_at_ms=now_ms, **values))
        after = _region_out(_region_row(conn, region_id))
        action = "region.close" if status == "closed" and before["status"] != "closed" \
            else "region.update"
        record_action(conn, actor, action, "region", region_id, before, after, now_ms)
    return after


def list_regions(engine: Engine, actor: Actor) -> list[dict[str, Any]]:
    """Every region an operator may see: all of them, or their own region's."""
    authorise(actor, "stores.read")
    level, ident = scope_filter(actor)
    q = select(regions).order_by(regions.c.region_id)
    with engine.connect() as conn:
        if level is Level.REGION:
            q = q.where(regions.c.region_id == ident)
        elif level is Level.STORE:
            q = q.where(regions.c.region_id.in_(
                select(stores.c.region_id).where(stores.c.store_id == ident)))
        return [_region_out(r) for r in conn.execute(q).mappings()]


# --- stores --------------------------------------------------------------------------

def create_store(engine: Engine, actor: Actor, store_id: str, name: str, *,
                 region: str | None = None, address: str = "", phone: str = "",
                 opening_hours: dict[str, Any] | None = None, now_ms: int) -> dict[str, Any]:
    """A new store (单店) in ``region``; a region manager adds stores to their region."""
    _id(store_id, "store")
    if region is not None:
        _id(region, "region")
    authorise(actor, "stores.write", Place(store_id, region))
    values = {"name": _text(name, "name", MAX_NAME, required=True),
              "address": _text(address, "address", MAX_ADDRESS), "phone": _phone(phone),
              "opening_hours": json.dumps(_hours(opening_hours or {}), ensure_ascii=False)}
    with engine.begin() as conn:
        _active_region(conn, region)
        if conn.execute(select(stores.c.store_id).where(stores.c.store_id == store_id)).first():
            raise ChainError(f"store {store_id!r} exists already")
        conn.execute(insert(stores).values(store_id=store_id, region_id=region, status="active",
                                           version=1, created_at_ms=now_ms, **values))
        out = _store_out(_store_row(conn, store_id))
        record_action(conn, actor, "store.create", "store", store_id, None, out, now_ms)
    return out


def _visible_store(conn: Connection, actor: Actor, permission: str, store_id: str,
                   *, lock: bool = False) -> Any:
    row = _store_row(conn, store_id, lock=lock) if is_store_id(store_id) else None
    if row is None:
        raise ChainNotFound(f"no store {str(store_id)[:70]!r}")
    authorise(actor, permission, Place(row["store_id"], row["region_id"]))
    return row


def edit_store(engine: Engine, actor: Actor, store_id: str, changes: dict[str, Any], *,
               version: int | None, based_on: dict[str, Any] | None = None,
               now_ms: int) -> dict[str, Any]:
    """Change a store's name, region, address, phone or opening hours.

    ``changes`` holds only the fields to change. Moving a store to another region needs
    the operator's scope to cover both regions."""
    unknown = sorted(set(changes) - set(STORE_FIELDS))
    if unknown:
        raise ChainError(f"unknown store fields: {', '.join(unknown)} "
                         f"(editable: {', '.join(STORE_FIELDS)})")
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _text(changes["name"], "name", MAX_NAME, required=True)
    if "address" in changes:
        values["address"] = _text(changes["address"], "address", MAX_ADDRESS)
    if "phone" in changes:
        values["phone"] = _phone(changes["phone"])
    if "opening_hours" in changes:
        values["opening_hours"] = json.dumps(_hours(changes["opening_hours"]),
                                             ensure_ascii=False)
    with engine.begin() as conn:
        row = _visible_store(conn, actor, "stores.write", store_id, lock=True)
        before = _store_out(row)
        check_version(version, before, based_on)
        if before["status"] != "active":
            raise ChainError(f"store {store_id!r} is closed")
        if "region" in changes:
            region = changes["region"]
            if region is not None:
                _id(region, "region")
            authorise(actor, "stores.write", Place(store_id, region))
            _active_region(conn, region)
            values["region_id"] = region
        conn.execute(update(stores).where(stores.c.store_id == store_id).values(
            version=stores.c.version + 1, updated_at_ms=now_ms, **values))
        after = _store_out(_store_row(conn, store_id))
        record_action(conn, actor, "store.update", "store", store_id, before, after, now_ms)
    return after


def close_store(engine: Engine, actor: Actor, store_id: str, *, version: int | None,
                now_ms: int) -> dict[str, Any]:
    """Close a store (闭店): no terminal can be enrolled for it any more; its records,
    accounts and cards stay. Its active terminals must be revoked first."""
    with engine.begin() as conn:
        row = _visible_store(conn, actor, "stores.write", store_id, lock=True)
        before = _store_out(row)
        check_version(version, before)
        if before["status"] == "closed":
            raise ChainError(f"store {store_id!r} is closed already")
        active = conn.execute(select(func.count()).select_from(devices).where(
            (devices.c.store == store_id) & (devices.c.status == "active"))).scalar_one()
        if active:
            raise ChainError(f"store {store_id!r} still has {active} active terminals: "
                             "revoke them first (onecard hq revoke-device)")
        conn.execute(update(stores).where(stores.c.store_id == store_id).values(
            status="closed", closed_at_ms=now_ms, updated_at_ms=now_ms,
            version=stores.c.version + 1))
        after = _store_out(_store_row(conn, store_id))
        record_action(conn, actor, "store.close", "store", store_id, before, after, now_ms)
    return after


def get_store(engine: Engine, actor: Actor, store_id: str) -> dict[str, Any]:
    """One store with its terminals; out of scope answered as not found."""
    with engine.connect() as conn:
        out = _store_out(_visible_store(conn, actor, "stores.read", store_id))
        out["terminals"] = [dict(r) for r in conn.execute(
            select(devices.c.device_id, devices.c.role, devices.c.status)
            .where(devices.c.store == store_id).order_by(devices.c.device_id)).mappings()]
    return out


def list_stores(engine: Engine, actor: Actor, *, region: str | None = None,
                status: str | None = None, cursor: str | None = None,
                limit: int | None = None) -> Page:
    """The stores in the operator's scope, by id, a page at a time."""
    authorise(actor, "stores.read")
    after = decode_cursor(cursor, 1)
    n = page_limit(limit)
    s = stores.c
    q = select(stores).order_by(s.store_id).limit(n + 1)
    level, ident = scope_filter(actor)
    if level is Level.REGION:
        q = q.where(s.region_id == ident)
    elif level is Level.STORE:
        q = q.where(s.store_id == ident)
    if region is not None:
        q = q.where(s.region_id == region)
    if status is not None:
        q = q.where(s.status == status)
    if after is not None:
        q = q.where(s.store_id > str(after[0]))
    with engine.connect() as conn:
        rows = [_store_out(r) for r in conn.execute(q).mappings()]
    more = len(rows) > n
    rows = rows[:n]
    return Page(rows, encode_cursor((rows[-1]["store_id"],)) if more else None)
