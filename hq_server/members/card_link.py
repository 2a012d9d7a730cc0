"""The join from cards to members: the one place the members domain reads the card registry.

The card registry (every card, its UID(s), product, state, issuing store and member) is
the chain domain's. Members need three things from it, and only through this module:

* a member's cards (profile page, "phone instead of card", export);
* the member of a card number (search by card);
* moving a member's cards to another member (merge keeps both histories).

The join it expects — ``cards.member_id → members.member_id`` — on a table ``cards`` with
the registry's ``cards`` table (``card_id`` the printed/encoded card number, ``member_id``
nullable, ``state``, ``product``, ``issuing_store``, read here as ``store_id``). If the
registry changes shape, only this module changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Connection

from hq_server.db.tables import cards

#: The card registry (hq_server/cards): this domain reads it and writes only ``member_id``.
CARD_REGISTRY = cards
#: The issuing store, under the name this domain uses.
_STORE = cards.c.issuing_store.label("store_id")

_present: dict[str, bool] = {}


def registry_present(conn: Connection) -> bool:
    """Whether this database has the card registry (asked once per database)."""
    key = conn.engine.url.render_as_string(hide_password=True)
    if not _present.get(key):
        _present[key] = inspect(conn).has_table("cards")
    return _present[key]


def cards_of_members(conn: Connection, member_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Each member's cards (``card_id``, ``state``, ``product``, ``store_id``), by member."""
    wanted = sorted(set(member_ids))
    out: dict[str, list[dict[str, Any]]] = {m: [] for m in wanted}
    if not wanted or not registry_present(conn):
        return out
    c = CARD_REGISTRY.c
    for i in range(0, len(wanted), 500):
        for row in conn.execute(select(c.member_id, c.card_id, c.state, c.product, _STORE)
                                .where(c.member_id.in_(wanted[i:i + 500]))
                                .order_by(c.member_id, c.card_id)).mappings():
            out[row["member_id"]].append({k: row[k] for k in ("card_id", "state", "product",
                                                              "store_id")})
    return out


def member_of_card(conn: Connection, card_id: str) -> str | None:
    """The member a card number belongs to (None: unknown card or no member)."""
    if not card_id or not registry_present(conn):
        return None
    c = CARD_REGISTRY.c
    return conn.execute(select(c.member_id).where(c.card_id == card_id)).scalar()


def move_cards(conn: Connection, from_member: str, to_member: str) -> list[str]:
    """Give every card of ``from_member`` to ``to_member`` (a merge); the moved card ids."""
    if not registry_present(conn):
        return []
    c = CARD_REGISTRY.c
    moved = list(conn.execute(select(c.card_id).where(c.member_id == from_member)
                              .order_by(c.card_id)).scalars())
    if moved:
        conn.execute(update(CARD_REGISTRY).where(c.member_id == from_member)
                     .values(member_id=to_member))
    return moved
