"""The recycle bin (数据回收站), tested with a kind registered here the way members,
products and operators register theirs: deleting puts a thing in the bin, a manager in
scope restores it, only an administrator purges it and only after the retention period;
every restore and purge is audited."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Column, MetaData, String, Table, insert, select, update

from hq_server.api.app import create_app
from hq_server.api.dependencies import current_actor
from hq_server.audit.log import record_action
from hq_server.audit.query import AuditFilter, list_actions
from hq_server.audit.verify import verify_audit
from hq_server.clock import system_clock
from hq_server.operators.access import Actor, Forbidden, NotVisible, Place
from hq_server.recycle.bin import (
    DAY_MS,
    AlreadyInBin,
    CannotRestore,
    NotInBin,
    RetentionNotOver,
    list_bin,
    purge_expired,
    purge_from_bin,
    put_in_bin,
    restore_from_bin,
    retention_ms,
)
from hq_server.recycle.registry import BinKind, register, unregister
from onecard.cli.hq import group
from tests.cli_login import sign_in_cli
from tests.hq_records import STORES, store_engine, url_of
from tests.hq_server.audit.helpers import (
    ADMIN,
    AUDITOR,
    CASHIER_S1,
    MANAGER_S1,
    MANAGER_S2,
    REGION_NORTH,
    S1,
    S3,
    make_chain,
)

gadgets = Table("demo_gadgets", MetaData(), Column("gadget_id", String(32), primary_key=True),
                Column("store", String(32)), Column("status", String(16)))


def _restore(conn, actor: Actor, gadget_id: str, now_ms: int) -> None:
    row = conn.execute(select(gadgets).where(gadgets.c.gadget_id == gadget_id)).first()
    if row is None:
        raise CannotRestore(f"gadget {gadget_id} is gone")
    if gadget_id.startswith("DUP"):
        raise CannotRestore("another gadget now has this name")
    conn.execute(update(gadgets).where(gadgets.c.gadget_id == gadget_id)
                 .values(status="active"))


def _purge(conn, actor: Actor, gadget_id: str, now_ms: int) -> None:
    conn.execute(gadgets.delete().where(gadgets.c.gadget_id == gadget_id))


@pytest.fixture(autouse=True)
def demo_kind():
    register(BinKind("gadget", "demo gadget", restore=_restore, purge=_purge))
    yield
    unregister("gadget")


def delete_gadget(engine, actor: Actor, gadget_id: str, place: Place, now_ms: int) -> int:
    """What a domain's delete service does: mark deleted, audit, put in the bin."""
    with engine.begin() as conn:
        conn.execute(update(gadgets).where(gadgets.c.gadget_id == gadget_id)
                     .values(status="deleted"))
        record_action(conn, actor, "gadget.delete", "gadget", gadget_id,
                      {"status": "active"}, {"status": "deleted"}, now_ms, place=place)
        return put_in_bin(conn, actor, "gadget", gadget_id, place=place,
                          label=f"gadget {gadget_id}", snapshot={"id": gadget_id},
                          now_ms=now_ms)


@pytest.fixture(params=STORES)
def engine(request):
    engine = store_engine(request)
    make_chain(engine)
    gadgets.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(gadgets), [{"gadget_id": g, "store": s, "status": "active"}
                                       for g, s in (("G1", "S1"), ("G3", "S3"),
                                                    ("DUP1", "S1"))])
    return engine


def _status(engine, gadget_id: str):
    with engine.connect() as conn:
        return conn.execute(select(gadgets.c.status)
                            .where(gadgets.c.gadget_id == gadget_id)).scalar()


def test_deleted_things_are_listed_in_scope(engine):
    e1 = delete_gadget(engine, MANAGER_S1, "G1", S1, 1_000)
    e3 = delete_gadget(engine, ADMIN, "G3", S3, 2_000)
    assert [e.entry_id for e in list_bin(engine, ADMIN)[0]] == [e3, e1]
    assert [e.entry_id for e in list_bin(engine, MANAGER_S1)[0]] == [e1]
    assert [e.entry_id for e in list_bin(engine, REGION_NORTH)[0]] == [e1]
    assert list_bin(engine, MANAGER_S2)[0] == []
    assert [e.entry_id for e in list_bin(engine, AUDITOR)[0]] == [e3, e1]
    entry = list_bin(engine, ADMIN)[0][1]
    assert entry.purge_after_ms == 1_000 + retention_ms() and entry.deleted_by == "bob"
    with pytest.raises(Forbidden):
        list_bin(engine, CASHIER_S1)
    with pytest.raises(AlreadyInBin), engine.begin() as conn:
        put_in_bin(conn, ADMIN, "gadget", "G1", place=S1, label="again", snapshot=None,
                   now_ms=3_000)


def test_a_manager_restores_in_scope_and_out_of_scope_looks_missing(engine):
    entry = delete_gadget(engine, MANAGER_S1, "G1", S1, 1_000)
    assert _status(engine, "G1") == "deleted"
    with pytest.raises(NotVisible):
        restore_from_bin(engine, MANAGER_S2, entry, 2_000)
    with pytest.raises(NotInBin):
        restore_from_bin(engine, MANAGER_S2, 999_999, 2_000)
    with pytest.raises(Forbidden):
        restore_from_bin(engine, CASHIER_S1, entry, 2_000)
    restored = restore_from_bin(engine, MANAGER_S1, entry, 2_000)
    assert restored.state == "restored" and restored.closed_by == "bob"
    assert _status(engine, "G1") == "active"
    with pytest.raises(NotInBin):
        restore_from_bin(engine, MANAGER_S1, entry, 3_000)
    rows, _ = list_actions(engine, ADMIN, AuditFilter(target="gadget:G1"))
    assert [(r["action"], r["operator"], r["store"]) for r in rows] == [
        ("recycle.restore", "bob", "S1"), ("gadget.delete", "bob", "S1")]
    assert verify_audit(engine).intact


def test_a_refused_restore_changes_nothing(engine):
    entry = delete_gadget(engine, ADMIN, "DUP1", S1, 1_000)
    with pytest.raises(CannotRestore, match="now has this name"):
        restore_from_bin(engine, ADMIN, entry, 2_000)
    assert _status(engine, "DUP1") == "deleted"
    assert [e.entry_id for e in list_bin(engine, ADMIN)[0]] == [entry]
    assert list_actions(engine, ADMIN, AuditFilter(action="recycle.*"))[0] == []


def test_only_an_administrator_purges_and_only_after_the_retention(engine):
    entry = delete_gadget(engine, MANAGER_S1, "G1", S1, 1_000)
    with pytest.raises(Forbidden):
        purge_from_bin(engine, MANAGER_S1, entry, 1_000 + 40 * DAY_MS)
    with pytest.raises(RetentionNotOver, match="1 more day"):
        purge_from_bin(engine, ADMIN, entry, 1_000 + 29 * DAY_MS)
    assert _status(engine, "G1") == "deleted"
    purged = purge_from_bin(engine, ADMIN, entry, 1_000 + 30 * DAY_MS)
    assert purged.state == "purged" and purged.snapshot is None
    assert _status(engine, "G1") is None
    assert list_bin(engine, ADMIN)[0] == []
    assert [e.entry_id for e in list_bin(engine, ADMIN, state="purged")[0]] == [entry]
    assert list_actions(engine, ADMIN, AuditFilter(action="recycle.purge"))[0][0][
        "target_id"] == "G1"


def test_the_retention_is_configurable(engine, monkeypatch):
    entry = delete_gadget(engine, ADMIN, "G3", S3, 0)
    monkeypatch.setenv("ONECARD_RECYCLE_RETENTION_DAYS", "7")
    with pytest.raises(RetentionNotOver):
        purge_from_bin(engine, ADMIN, entry, 6 * DAY_MS)
    assert [e.target_id for e in purge_expired(engine, ADMIN, 7 * DAY_MS)] == ["G3"]
    monkeypatch.setenv("ONECARD_RECYCLE_RETENTION_DAYS", "seven")
    with pytest.raises(ValueError, match="number of days"):
        retention_ms()


def test_api_restores_and_purges_with_problems_for_refusals(engine):
    entry = delete_gadget(engine, MANAGER_S1, "G1", S1, system_clock())  # deleted just now
    app = create_app(engine, None, None)
    client = TestClient(app)
    app.dependency_overrides[current_actor] = lambda: MANAGER_S2
    hidden = client.post(f"/v1/recycle-bin/{entry}/restore")
    missing = client.post("/v1/recycle-bin/424242/restore")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"] == missing.json()["detail"]
    assert client.get("/v1/recycle-bin").json() == {"items": [], "next_cursor": None}
    huge = client.post(f"/v1/recycle-bin/{2**70}/restore")
    assert huge.status_code == 422 and huge.json()["code"] == "validation-error"
    app.dependency_overrides[current_actor] = lambda: ADMIN
    early = client.post(f"/v1/recycle-bin/{entry}/purge")
    assert early.status_code == 409 and early.json()["code"] == "retention-not-over"
    app.dependency_overrides[current_actor] = lambda: MANAGER_S1
    listed = client.get("/v1/recycle-bin").json()["items"]
    assert [(i["entry_id"], i["kind"], i["state"]) for i in listed] == [
        (entry, "gadget", "in_bin")]
    first = client.post(f"/v1/recycle-bin/{entry}/restore", headers={"Idempotency-Key": "k1"})
    again = client.post(f"/v1/recycle-bin/{entry}/restore", headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and first.json()["state"] == "restored"
    assert _status(engine, "G1") == "active"


def test_cli_lists_restores_and_purges(engine, monkeypatch):
    sign_in_cli(url_of(engine), monkeypatch, "alice")
    entry = delete_gadget(engine, ADMIN, "G3", S3, 1_000)  # long past its retention
    runner = CliRunner()
    base = ["--db", url_of(engine)]
    listed = runner.invoke(group, ["recycle-bin", "list", *base])
    assert listed.exit_code == 0 and "gadget" in listed.output and "G3" in listed.output
    usage = runner.invoke(group, ["recycle-bin", "purge", *base])
    assert usage.exit_code == 2
    purged = runner.invoke(group, ["recycle-bin", "purge", *base, str(entry)])
    assert purged.exit_code == 0, purged.output
    assert "purged gadget G3" in purged.output
    gone = runner.invoke(group, ["recycle-bin", "restore", *base, str(entry)])
    assert gone.exit_code == 1 and "no entry" in gone.output
