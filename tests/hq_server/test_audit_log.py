"""The audit log: each action one row, chained by hashes, refused by the database to change."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from hq_server.audit.log import GENESIS, entry_hash, record_action
from hq_server.db.tables import audit_log
from hq_server.operators.access import Actor, Level, Scope
from tests.hq_records import STORES, store_engine

ADMIN = Actor("alice", "hq_admin", Scope(Level.CHAIN), "cli")


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def test_actions_chain_and_the_chain_recomputes(engine):
    with engine.begin() as conn:
        first = record_action(conn, ADMIN, "member.create", "member", "M1", None,
                              {"name": "张三", "note": "<script>x</script>'; DROP TABLE x;--"},
                              now_ms=1_000)
        second = record_action(conn, ADMIN, "member.update", "member", "M1",
                               {"name": "张三"}, {"name": "张三丰"}, now_ms=2_000)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).mappings().all()
    assert [r["seq"] for r in rows] == [1, 2]
    prev = GENESIS
    for r in rows:
        before = None if r["before_json"] is None else json.loads(r["before_json"])
        after = None if r["after_json"] is None else json.loads(r["after_json"])
        assert r["hash"] == entry_hash(prev, r["seq"], r["at_ms"], r["operator"], r["role"],
                                       r["origin"], r["action"], r["target_kind"],
                                       r["target_id"], before, after)
        prev = r["hash"]
    assert json.loads(rows[0]["after_json"])["note"] == "<script>x</script>'; DROP TABLE x;--"


def test_the_database_refuses_to_change_or_delete_an_audit_row(engine):
    with engine.begin() as conn:
        record_action(conn, ADMIN, "store.create", "store", "S1", None, {"name": "East"}, 5)
    for statement in ("UPDATE audit_log SET operator = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(select(audit_log.c.operator)).scalars().all() == ["alice"]


def test_a_rolled_back_change_leaves_no_audit_row(engine):
    with pytest.raises(RuntimeError), engine.begin() as conn:
        record_action(conn, ADMIN, "member.delete", "member", "M9", {"name": "x"}, None, 7)
        raise RuntimeError("the change itself failed")
    with engine.connect() as conn:
        assert conn.execute(select(audit_log)).first() is None
