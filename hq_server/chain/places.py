"""Where a store lies in the chain: the region it belongs to (总部 → 大区 → 单店).

Every scope check needs the :class:`~hq_server.operators.access.Place` of what it
touches; this module answers it from the ``stores`` table. A store that HQ does not know
has no place: callers treat it as "not found".
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from hq_server.chain.errors import ChainError, ChainNotFound
from hq_server.db.tables import stores
from hq_server.operators.access import Place


def place_of_store(conn: Connection, store_id: str | None) -> Place | None:
    """The place of ``store_id`` (None: a chain-level thing, ``Place(None)``)."""
    if store_id is None:
        return Place(None)
    row = conn.execute(select(stores.c.region_id).where(stores.c.store_id == store_id)).first()
    return None if row is None else Place(store_id, row[0])


def places_of_stores(conn: Connection, store_ids: Iterable[str]) -> dict[str, Place]:
    """The places of many stores at once (unknown stores are left out)."""
    wanted = sorted(set(store_ids))
    out: dict[str, Place] = {}
    for i in range(0, len(wanted), 500):
        for store_id, region_id in conn.execute(
                select(stores.c.store_id, stores.c.region_id)
                .where(stores.c.store_id.in_(wanted[i:i + 500]))):
            out[store_id] = Place(store_id, region_id)
    return out


def require_open_store(conn: Connection, store_id: str) -> None:
    """Refuse a store HQ does not know or has closed (terminals, enrolment tokens)."""
    row = conn.execute(select(stores.c.status).where(stores.c.store_id == store_id)).first()
    if row is None:
        raise ChainNotFound(f"store {store_id!r} is not known at HQ (add it first: "
                            f"onecard hq store add {store_id} --name ...)")
    if row[0] != "active":
        raise ChainError(f"store {store_id!r} is closed")
