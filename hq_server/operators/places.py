"""Authorising on things older than the chain's store table: a terminal, a store id.

Terminals were enrolled for a store id before HQ kept its stores (``stores``); such a
store has no region yet, so it is in scope of chain operators and of operators of that
very store only. An unknown device is answered like an out-of-scope one (NotVisible),
so nobody learns which device ids exist outside their scope.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from hq_server.chain.places import place_of_store
from hq_server.db.tables import devices
from hq_server.operators.access import Actor, NotVisible, Place, authorise


def authorise_at_store(actor: Actor, engine: Engine, permission: str, store: str) -> None:
    with engine.connect() as conn:
        place = place_of_store(conn, store) or Place(store, None)
    authorise(actor, permission, place)


def authorise_at_device(actor: Actor, engine: Engine, permission: str, device_id: str) -> None:
    with engine.connect() as conn:
        row = conn.execute(select(devices.c.store).where(devices.c.device_id == device_id)
                           ).first()
        if row is None:
            authorise(actor, permission)  # a missing permission is still 403
            raise NotVisible("not found")
        place = place_of_store(conn, row[0]) or Place(row[0], None)
    authorise(actor, permission, place)


def visible_stores(actor: Actor, engine: Engine, store_ids: list[str]) -> set[str]:
    """Those of ``store_ids`` inside the actor's scope."""
    with engine.connect() as conn:
        return {s for s in set(store_ids)
                if actor.scope.covers(place_of_store(conn, s) or Place(s, None))}
