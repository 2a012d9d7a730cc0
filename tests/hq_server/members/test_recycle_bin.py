"""A deleted member goes to the recycle bin (数据回收站): listed there, restored from there
or through the member, and purged for good only by an administrator after retention."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hq_server.db.tables import members
from hq_server.members.service import create_member, delete_member, get_member, restore_member
from hq_server.operators.access import Actor, Level, Scope
from hq_server.recycle.bin import (
    RetentionNotOver,
    list_bin,
    purge_from_bin,
    restore_from_bin,
)

ADMIN = Actor("admin", "hq_admin", Scope(Level.CHAIN), "tests")
MANAGER_S1 = Actor("mgr", "store_manager", Scope(Level.STORE, "S1"), "tests")
DAY = 86_400_000
NOW = 1_800_000_000_000


@pytest.fixture
def member(engine):  # the engine's chain: S1, S2 (EAST), S3 (WEST)
    return create_member(MANAGER_S1, engine, {"name": "张三", "mobile": "13800138000"},
                         NOW)["member_id"]


def _in_bin(engine, actor):
    items, _ = list_bin(engine, actor, kind="member")
    return [(e.target_id, e.state) for e in items]


def test_a_deleted_member_is_in_the_bin_and_comes_back_from_it(engine, member):
    delete_member(MANAGER_S1, engine, member, NOW + 1)
    assert _in_bin(engine, MANAGER_S1) == [(member, "in_bin")]
    entry = list_bin(engine, MANAGER_S1, kind="member")[0][0]
    restore_from_bin(engine, MANAGER_S1, entry.entry_id, NOW + 2)
    assert get_member(MANAGER_S1, engine, member)["status"] == "active"
    assert _in_bin(engine, ADMIN) == []


def test_restoring_the_member_itself_closes_its_bin_entry(engine, member):
    delete_member(MANAGER_S1, engine, member, NOW + 1)
    restore_member(MANAGER_S1, engine, member, NOW + 2)
    assert _in_bin(engine, ADMIN) == []


def test_only_after_retention_does_a_purge_erase_the_personal_data(engine, member):
    delete_member(MANAGER_S1, engine, member, NOW + 1)
    entry = list_bin(engine, ADMIN, kind="member")[0][0]
    with pytest.raises(RetentionNotOver):
        purge_from_bin(engine, ADMIN, entry.entry_id, NOW + 2)
    purge_from_bin(engine, ADMIN, entry.entry_id, NOW + 31 * DAY)
    with engine.connect() as conn:
        row = conn.execute(select(members).where(members.c.member_id == member)).mappings().one()
    assert row["status"] == "deleted" and row["mobile"] is None and row["name"] == ""
    assert row["store_id"] == "S1"  # the number and store stay: the ledger names the card
