"""A small chain for operator tests: two regions, three stores, one operator per role.

north: S1, S2 — south: S3. Operators are created by the HQ machine's bootstrap actor;
``PASSWORD`` is everyone's.
"""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from hq_server.db.tables import regions, stores
from hq_server.operators.access import Actor, Scope
from hq_server.operators.accounts import add_operator, bootstrap_actor

PASSWORD = "a long enough password"
NOW = 1_800_000_000_000


def make_chain(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(regions), [
            {"region_id": "north", "name": "北区", "created_at_ms": NOW},
            {"region_id": "south", "name": "南区", "created_at_ms": NOW}])
        conn.execute(insert(stores), [
            {"store_id": "S1", "name": "一店", "region_id": "north", "created_at_ms": NOW},
            {"store_id": "S2", "name": "二店", "region_id": "north", "created_at_ms": NOW},
            {"store_id": "S3", "name": "三店", "region_id": "south", "created_at_ms": NOW}])


def operator(engine: Engine, username: str, role: str, scope: str) -> Actor:
    """Create an operator and return the Actor it signs in as."""
    made = add_operator(bootstrap_actor("tests"), engine, username, PASSWORD, role,
                        Scope.parse(scope), now_ms=NOW)
    assert made.scope is not None
    return Actor(made.username, made.role, made.scope, "tests")
