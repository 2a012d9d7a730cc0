"""The card registry in the database: kept current by ingest, read and linked by operators.

:func:`apply_ingested` runs inside ingest's batch transaction, after the records are
posted: one query reads the entries of the batch's cards, :func:`~hq_server.cards.rules.follow_batch`
decides, and one statement each writes the new entries, the changed ones and their
history — a batch of thousands of records costs a handful of statements, and most
batches (uses of cards already open) write nothing at all.

The service functions take the acting operator first. A card's place is its issuing
store's: an operator of another store gets "not found" for it (:class:`CardNotFound`
and :class:`~hq_server.operators.access.NotVisible` answer the same).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, literal_column, or_, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.api.common import check_version, decode_cursor, encode_cursor, page_limit
from hq_server.audit.log import record_action
from hq_server.cards.errors import CardError, CardNotFound
from hq_server.cards.rules import STATES, CardEntry, CardEvent, follow_batch
from hq_server.chain.places import place_of_store
from hq_server.db.bulk import bulk_execute, chunks
from hq_server.db.tables import card_history, card_uids, cards, records, stores, uid_credentials
from hq_server.operators.access import Actor, Level, Place, authorise, scope_filter
from protocol.ids import describe, is_id
from protocol.record import SignedRecord, TransactionRecord

MAX_UID_HEX = 32


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


# --- kept current by ingest ------------------------------------------------------------

def _source(r: TransactionRecord) -> str:
    return f"record {r.device_id}#{r.seq}"


def _entries(conn: Connection, card_ids: list[str]) -> dict[str, CardEntry]:
    c = cards.c
    cols = (c.card_id, c.state, c.product, c.issuing_store, c.member_id)
    out: dict[str, CardEntry] = {}
    if conn.dialect.name == "postgresql":
        # Locked in card order: two workers touching one card wait for each other.
        rows = conn.exec_driver_sql(
            "SELECT card_id, state, product, issuing_store, member_id FROM cards "
            "WHERE card_id = ANY(%(c)s::text[]) ORDER BY card_id FOR UPDATE",
            {"c": card_ids}).all()
    else:
        rows = [row for part in chunks(card_ids, 900)
                for row in conn.execute(select(*cols).where(c.card_id.in_(part)))]
    for card_id, state, product, store, member in rows:
        out[card_id] = CardEntry(card_id, state, product, store, member)
    return out


def _write_history(conn: Connection, events: list[CardEvent],
                   detail: dict[str, str] | None = None) -> None:
    bulk_execute(conn, "card_history", lambda: insert(card_history).values(
        card_id=bindparam("card_id"), at_ms=bindparam("at_ms"), event=bindparam("event"),
        state_before=bindparam("state_before"), state_after=bindparam("state_after"),
        source=bindparam("source"), store=bindparam("store"), detail=bindparam("detail")),
        [{"card_id": e.card_id, "at_ms": e.at_ms, "event": e.event,
          "state_before": e.state_before, "state_after": e.state_after,
          "source": e.source[:128], "store": e.store,
          "detail": json.dumps(detail or {}, ensure_ascii=False)} for e in events])


def apply_ingested(conn: Connection, signed: list[SignedRecord], now_ms: int) -> int:
    """Bring the registry up to date with a batch of posted records; returns how many
    cards' entries changed. Runs in the caller's (ingest's) transaction."""
    if not signed:
        return 0
    batch = [s.record for s in signed]
    current = _entries(conn, sorted({r.card_id for r in batch}))
    changed, events = follow_batch(current, batch, _source, now_ms)
    if not changed:
        return 0
    fresh = [e for k, e in sorted(changed.items()) if k not in current]
    moved = [e for k, e in sorted(changed.items()) if k in current]
    bulk_execute(conn, "cards_new", lambda: insert(cards).values(
        card_id=bindparam("card_id"), product=bindparam("product"),
        state=bindparam("state"), issuing_store=bindparam("issuing_store"),
        first_seen_ms=bindparam("now"), updated_at_ms=bindparam("now"),
        version=bindparam("version")),
        [{"card_id": e.card_id, "product": e.product, "state": e.state,
          "issuing_store": e.issuing_store, "now": now_ms, "version": 1} for e in fresh])
    bulk_execute(conn, "cards_moved", lambda: update(cards).where(
        cards.c.card_id == bindparam("card")).values(
        product=bindparam("product"), state=bindparam("state"),
        issuing_store=bindparam("issuing_store"), updated_at_ms=bindparam("now"),
        version=cards.c.version + literal_column("1")),
        [{"card": e.card_id, "product": e.product, "state": e.state,
          "issuing_store": e.issuing_store, "now": now_ms} for e in moved])
    _write_history(conn, events)
    return len(changed)


# --- lookups every card operation starts with --------------------------------------------

def card_exists(conn: Connection, card_id: str) -> bool:
    """Whether HQ knows ``card_id``: a registered card or a registered UID credential
    (``em4100.<number>``, ``qr.<text>``: see :func:`protocol.ids.credential_card_id`)."""
    if not is_id(card_id):
        return False
    if conn.execute(select(cards.c.card_id).where(cards.c.card_id == card_id)).first():
        return True
    kind, dot, credential = card_id.partition(".")
    if not dot or credential.startswith("h."):
        return False
    return conn.execute(select(uid_credentials.c.kind).where(
        (uid_credentials.c.kind == kind) & (uid_credentials.c.credential == credential))
    ).first() is not None


def require_known_card(conn: Connection, card_id: str) -> None:
    """Refuse an operation on a card HQ has never seen, with a reason."""
    if not card_exists(conn, card_id):
        shown = str(card_id)[:70]
        raise CardNotFound(f"no card {shown!r} at HQ: it was never issued, registered or "
                           "used at a terminal (check the number; `onecard hq card list`)")


def mark_denylisted(conn: Connection, card_id: str, listed: bool, source: str,
                    now_ms: int) -> None:
    """A denylist change (挂失 / 解挂) as the card's state: ``lost`` while listed; taken off,
    the card returns to the state it had before it was lost."""
    row = conn.execute(select(cards.c.state).where(cards.c.card_id == card_id)
                       .with_for_update()).first()
    if row is None:
        return  # a UID credential: its status lives in uid_credentials
    state = row[0]
    if listed:
        if state in ("lost", "recalled", "replaced"):
            return
        after = "lost"
    else:
        if state != "lost":
            return
        was = conn.execute(select(card_history.c.state_before).where(
            (card_history.c.card_id == card_id) & (card_history.c.state_after == "lost"))
            .order_by(card_history.c.id.desc()).limit(1)).scalar()
        after = was if was in STATES and was != "lost" else "open"
    conn.execute(update(cards).where(cards.c.card_id == card_id).values(
        state=after, updated_at_ms=now_ms, version=cards.c.version + 1))
    _write_history(conn, [CardEvent(card_id, "lost" if listed else "found", state, after,
                                    source, None, now_ms)])


# --- what operators see and do -----------------------------------------------------------

def _card_out(row: Any) -> dict[str, Any]:
    return {"card_id": row["card_id"], "state": row["state"], "product": row["product"],
            "member_id": row["member_id"], "issuing_store": row["issuing_store"],
            "first_seen_ms": int(row["first_seen_ms"]),
            "updated_at_ms": int(row["updated_at_ms"]), "version": int(row["version"])}


def _visible_card(conn: Connection, actor: Actor, permission: str, card_id: str,
                  *, lock: bool = False) -> Any:
    q = select(cards).where(cards.c.card_id == card_id)
    row = conn.execute(q.with_for_update() if lock else q).mappings().first() \
        if is_id(card_id) else None
    if row is None:
        raise CardNotFound(f"no card {str(card_id)[:70]!r}")
    place = place_of_store(conn, row["issuing_store"]) or Place(row["issuing_store"])
    authorise(actor, permission, place)
    return row


def _uids(conn: Connection, card_id: str) -> list[str]:
    return [u for (u,) in conn.execute(select(card_uids.c.uid).where(
        card_uids.c.card_id == card_id).order_by(card_uids.c.added_at_ms, card_uids.c.uid))]


def _clean_uids(uids: list[str] | tuple[str, ...]) -> list[str]:
    out = []
    for uid in uids:
        text = str(uid).replace(" ", "").replace(":", "").upper()
        if not (2 <= len(text) <= MAX_UID_HEX and len(text) % 2 == 0
                and all(ch in "0123456789ABCDEF" for ch in text)):
            raise CardError(f"UID {str(uid)[:40]!r} is not a chip UID (2 to 16 bytes in hex)")
        out.append(text)
    return out


def register_card(engine: Engine, actor: Actor, card_id: str, *, store: str,
                  product: str = "", uids: list[str] | tuple[str, ...] = (),
                  now_ms: int) -> dict[str, Any]:
    """Take a blank card into stock at ``store`` (白卡入库), with its chip UID(s), so it is
    known before a terminal issues it."""
    if not is_id(card_id):
        raise CardError(f"not a card id: {str(card_id)[:70]!r} ({describe()})")
    if product and not is_id(product):
        raise CardError(f"not a card product: {product[:70]!r} ({describe()})")
    clean = _clean_uids(list(uids))
    with engine.begin() as conn:
        place = place_of_store(conn, store) if is_id(store) else None
        if place is None:
            raise CardError(f"store {str(store)[:70]!r} is not known at HQ")
        authorise(actor, "cards.write", place)
        if conn.execute(select(cards.c.card_id).where(cards.c.card_id == card_id)).first():
            raise CardError(f"card {card_id!r} is registered already")
        taken = conn.execute(select(card_uids.c.uid, card_uids.c.card_id)
                             .where(card_uids.c.uid.in_(clean))).first() if clean else None
        if taken:
            raise CardError(f"UID {taken[0]} belongs to card {taken[1]} already")
        conn.execute(insert(cards).values(card_id=card_id, product=product, state="blank",
                                          issuing_store=store, first_seen_ms=now_ms,
                                          updated_at_ms=now_ms, version=1))
        for uid in clean:
            conn.execute(insert(card_uids).values(uid=uid, card_id=card_id, added_at_ms=now_ms))
        _write_history(conn, [CardEvent(card_id, "registered", None, "blank",
                                        f"operator {actor.operator}", store, now_ms)])
        out = _card_out(conn.execute(select(cards).where(cards.c.card_id == card_id))
                        .mappings().one())
        out["uids"] = clean
        record_action(conn, actor, "card.register", "card", card_id, None, out, now_ms)
    return out


def get_card(engine: Engine, actor: Actor, card_id: str, *,
             history_limit: int = 100) -> dict[str, Any]:
    """A card with its UIDs, its history (newest first) and its last records."""
    with engine.connect() as conn:
        out = _card_out(_visible_card(conn, actor, "cards.read", card_id))
        out["uids"] = _uids(conn, card_id)
        h = card_history.c
        out["history"] = [
            {"at_ms": int(r["at_ms"]), "event": r["event"], "state_before": r["state_before"],
             "state_after": r["state_after"], "source": r["source"], "store": r["store"]}
            for r in conn.execute(select(card_history).where(h.card_id == card_id)
                                  .order_by(h.id.desc()).limit(history_limit)).mappings()]
        rc = records.c
        out["last_records"] = [
            {"device_id": r["device_id"], "seq": int(r["seq"]), "operation": int(r["operation"]),
             "card_counter": int(r["card_counter"]), "device_time_ms": int(r["device_time_ms"]),
             "status": r["status"]}
            for r in conn.execute(select(records).where(rc.card_id == card_id)
                                  .order_by(rc.card_counter.desc()).limit(20)).mappings()]
    return out


def _scoped(q, actor: Actor):
    level, ident = scope_filter(actor)
    if level is Level.STORE:
        return q.where(or_(cards.c.issuing_store.is_(None), cards.c.issuing_store == ident))
    if level is Level.REGION:
        return q.where(or_(cards.c.issuing_store.is_(None), cards.c.issuing_store.in_(
            select(stores.c.store_id).where(stores.c.region_id == ident))))
    return q


def list_cards(engine: Engine, actor: Actor, *, state: str | None = None,
               store: str | None = None, member: str | None = None,
               product: str | None = None, cursor: str | None = None,
               limit: int | None = None) -> Page:
    """The cards in the operator's scope, by card id, a page at a time."""
    authorise(actor, "cards.read")
    if state is not None and state not in STATES:
        raise CardError(f"state must be one of {', '.join(STATES)}")
    after = decode_cursor(cursor, 1)
    n = page_limit(limit)
    c = cards.c
    q = _scoped(select(cards).order_by(c.card_id).limit(n + 1), actor)
    for column, value in ((c.state, state), (c.issuing_store, store), (c.member_id, member),
                          (c.product, product)):
        if value is not None:
            q = q.where(column == value)
    if after is not None:
        q = q.where(c.card_id > str(after[0]))
    with engine.connect() as conn:
        rows = [_card_out(r) for r in conn.execute(q).mappings()]
    more = len(rows) > n
    rows = rows[:n]
    return Page(rows, encode_cursor((rows[-1]["card_id"],)) if more else None)


def link_card_to_member(conn: Connection, actor: Actor, card_id: str, member_id: str | None,
                        now_ms: int, *, version: int | None = None) -> dict[str, Any]:
    """Give a card to a member (or take it from them: ``member_id=None``), in the caller's
    transaction (the members domain checks that the member exists and is visible).

    ``version``, when given, must be the card's current version (edit conflicts)."""
    if member_id is not None and not is_id(member_id):
        raise CardError(f"not a member id: {str(member_id)[:70]!r} ({describe()})")
    row = _visible_card(conn, actor, "cards.write", card_id, lock=True)
    before = _card_out(row)
    if version is not None:
        check_version(version, before)
    if before["state"] in ("recalled", "replaced") and member_id is not None:
        raise CardError(f"card {card_id} is {before['state']}: it cannot be given to a member")
    if before["member_id"] == member_id:
        return before
    conn.execute(update(cards).where(cards.c.card_id == card_id).values(
        member_id=member_id, updated_at_ms=now_ms, version=cards.c.version + 1))
    _write_history(conn, [CardEvent(card_id, "linked" if member_id else "unlinked",
                                    before["state"], before["state"],
                                    f"operator {actor.operator}", None, now_ms)],
                   {"member_before": before["member_id"] or "", "member_after": member_id or ""})
    after = _card_out(conn.execute(select(cards).where(cards.c.card_id == card_id))
                      .mappings().one())
    record_action(conn, actor, "card.link" if member_id else "card.unlink", "card", card_id,
                  before, after, now_ms)
    return after


def cards_of_member(conn: Connection, actor: Actor, member_id: str) -> list[dict[str, Any]]:
    """A member's cards that the operator may see, by card id."""
    authorise(actor, "cards.read")
    q = _scoped(select(cards).where(cards.c.member_id == member_id)
                .order_by(cards.c.card_id), actor)
    return [_card_out(r) for r in conn.execute(q).mappings()]
