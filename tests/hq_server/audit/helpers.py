"""Shared pieces of the audit, recycle-bin and backup tests."""

from __future__ import annotations

from sqlalchemy import insert, text

from hq_server.audit.log import record_action
from hq_server.db.tables import regions, stores
from hq_server.operators.access import Actor, Level, Place, Scope

ADMIN = Actor("alice", "hq_admin", Scope(Level.CHAIN), "cli")
AUDITOR = Actor("audrey", "auditor", Scope(Level.CHAIN), "cli")
MANAGER_S1 = Actor("bob", "store_manager", Scope(Level.STORE, "S1"), "api 10.0.0.1")
MANAGER_S2 = Actor("carol", "store_manager", Scope(Level.STORE, "S2"), "api 10.0.0.2")
REGION_NORTH = Actor("dave", "region_manager", Scope(Level.REGION, "north"), "cli")
CASHIER_S1 = Actor("erin", "cashier", Scope(Level.STORE, "S1"), "cli")
S1, S2, S3 = Place("S1", "north"), Place("S2", "north"), Place("S3", "south")


def make_chain(engine) -> None:
    """Regions north (S1, S2) and south (S3)."""
    with engine.begin() as conn:
        conn.execute(insert(regions), [{"region_id": r, "name": r, "created_at_ms": 1}
                                       for r in ("north", "south")])
        conn.execute(insert(stores), [
            {"store_id": s, "name": s, "region_id": r, "created_at_ms": 1}
            for s, r in (("S1", "north"), ("S2", "north"), ("S3", "south"))])


def some_actions(engine, n: int = 6) -> None:
    """``n`` actions: members of S1, S2, S3 in turn, each created then updated."""
    places = [S1, S2, S3]
    with engine.begin() as conn:
        for i in range(n):
            place = places[i % 3]
            record_action(conn, ADMIN, "member.create" if i < 3 else "member.update",
                          "member", f"M{i % 3}", None, {"name": f"会员{i}", "i": i},
                          now_ms=1_000 * (i + 1), place=place)


def drop_audit_triggers(engine) -> None:
    """What an attacker holding the database's password can do."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
