"""Members at HQ on SQLite and PostgreSQL: register, find, edit, scope, merge, the ledger."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import select

from hq_server.api.common import EditConflict
from hq_server.db.tables import audit_log, members
from hq_server.members.custom_fields import FieldDefinition
from hq_server.members.errors import (
    DuplicateMobile,
    MemberInvalid,
    MemberNotFound,
    MemberStateConflict,
)
from hq_server.members.service import (
    MemberQuery,
    create_member,
    define_field,
    delete_member,
    find_members,
    get_member,
    members_by_mobile,
    merge_members,
    restore_member,
    update_member,
)
from hq_server.operators.access import Forbidden
from tests.hq_server.members.helpers import (
    ADMIN,
    AUDITOR,
    CASHIER_S1,
    CASHIER_S2,
    INJECTIONS,
    MANAGER_S1,
    NOW,
    REGION_EAST,
    give_card,
    post_checkout,
)


def ids(page) -> list[str]:
    return [m["member_id"] for m in page["items"]]


def test_operators_find_a_member_by_card_phone_name_pinyin_and_id(engine):
    zs = create_member(CASHIER_S1, engine, {"name": "张三", "mobile": "138 0013 8000",
                                            "id_number": "11010519491231002x"}, NOW)
    create_member(CASHIER_S1, engine, {"name": "李四", "mobile": "13900139000"}, NOW)
    give_card(engine, "C1001", zs["member_id"])
    assert zs["store_id"] == "S1" and zs["mobile"] == "+8613800138000"
    for text in ("zs", "zhangs", "张", "张三", "13800", "+86138", "C1001",
                 "11010519491231002X", zs["member_id"]):
        assert ids(find_members(CASHIER_S1, engine, MemberQuery(text=text))) == \
            [zs["member_id"]], text
    assert ids(find_members(CASHIER_S1, engine, MemberQuery(card_id="C1001"))) == \
        [zs["member_id"]]
    by_phone = members_by_mobile(CASHIER_S1, engine, "1380013")
    assert [m["member_id"] for m in by_phone] == [zs["member_id"]]
    assert [c["card_id"] for c in by_phone[0]["cards"]] == ["C1001"]
    assert ids(find_members(CASHIER_S1, engine, MemberQuery(text="ww"))) == []


def test_another_stores_member_is_answered_like_an_unknown_one(engine):
    m = create_member(CASHIER_S1, engine, {"name": "王五", "mobile": "13700137000"}, NOW)
    with pytest.raises(MemberNotFound) as out_of_scope:
        get_member(CASHIER_S2, engine, m["member_id"])
    with pytest.raises(MemberNotFound) as unknown:
        get_member(CASHIER_S2, engine, "M99999999")
    assert str(out_of_scope.value) == str(unknown.value)
    with pytest.raises(MemberNotFound):
        update_member(CASHIER_S2, engine, m["member_id"], {"name": "x"}, 1, NOW)
    assert ids(find_members(CASHIER_S2, engine, MemberQuery(text="ww"))) == []
    assert ids(find_members(REGION_EAST, engine, MemberQuery(text="ww"))) == [m["member_id"]]
    assert get_member(AUDITOR, engine, m["member_id"])["name"] == "王五"
    with pytest.raises(Forbidden):
        update_member(AUDITOR, engine, m["member_id"], {"name": "x"}, 1, NOW)
    with pytest.raises(MemberInvalid, match="store_id: no store 'S3'"):
        create_member(CASHIER_S1, engine, {"name": "x", "store_id": "S3"}, NOW)


def test_two_operators_editing_one_member_the_second_sees_what_changed(engine):
    m = create_member(ADMIN, engine, {"name": "张三", "store_id": "S1"}, NOW)
    results: list[object] = []
    barrier = threading.Barrier(2)

    def edit(who, changes):
        barrier.wait()
        try:
            results.append(update_member(who, engine, m["member_id"], changes, 1, NOW + 1,
                                         based_on=m))
        except EditConflict as conflict:
            results.append(conflict)

    threads = [threading.Thread(target=edit, args=(ADMIN, {"name": "张三丰"})),
               threading.Thread(target=edit, args=(MANAGER_S1, {"remark1": "VIP"}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conflicts = [r for r in results if isinstance(r, EditConflict)]
    done = [r for r in results if isinstance(r, dict)]
    assert len(conflicts) == 1 and len(done) == 1
    assert conflicts[0].current["version"] == 2
    assert conflicts[0].changed == (["name"] if done[0]["name"] == "张三丰" else ["remark1"])
    assert get_member(ADMIN, engine, m["member_id"])["version"] == 2


def test_injection_strings_are_stored_verbatim_in_every_text_field(engine):
    text_fields = ["category", "name", "name_on_card", "nationality", "home_address",
                   "billing_address", "company", "title", "company_address", "vip_name",
                   "vip_address", "habits", "remark1", "remark2", "remark3"]
    for i, evil in enumerate(INJECTIONS):
        data = {f: evil[:30] if f in ("category", "name_on_card") else evil
                for f in text_fields}
        m = create_member(ADMIN, engine, {**data, "store_id": "S1"}, NOW + i)
        page = get_member(ADMIN, engine, m["member_id"])
        assert {f: page[f] for f in text_fields} == data
    with engine.connect() as conn:
        assert conn.execute(select(members.c.member_id)).fetchall()  # the table survived
    found = find_members(ADMIN, engine, MemberQuery(text=INJECTIONS[0]))
    assert len(found["items"]) == 1


def test_mobile_unique_in_the_chain_and_birthday_not_in_the_future(engine):
    create_member(CASHIER_S1, engine, {"name": "A", "mobile": "13800138000"}, NOW)
    with pytest.raises(DuplicateMobile, match="a member of another store"):
        create_member(CASHIER_S2, engine, {"name": "B", "mobile": "+86 138 0013 8000"}, NOW)
    with pytest.raises(MemberInvalid) as refused:
        create_member(CASHIER_S1, engine, {"name": "C", "birthday": "2027-01-01"}, NOW)
    assert refused.value.errors[0].field == "birthday"
    assert "future" in refused.value.errors[0].reason
    with engine.connect() as conn:
        assert len(conn.execute(select(members)).fetchall()) == 1


def test_delete_restore_and_the_audit_log(engine):
    m = create_member(MANAGER_S1, engine, {"name": "赵六"}, NOW)
    with pytest.raises(Forbidden):
        delete_member(CASHIER_S1, engine, m["member_id"], NOW)
    delete_member(MANAGER_S1, engine, m["member_id"], NOW + 1)
    assert ids(find_members(MANAGER_S1, engine, MemberQuery(text="zl"))) == []
    with pytest.raises(MemberStateConflict, match="deleted"):
        update_member(MANAGER_S1, engine, m["member_id"], {"name": "x"}, 2, NOW)
    restored = restore_member(MANAGER_S1, engine, m["member_id"], NOW + 2)
    assert restored["status"] == "active" and restored["version"] == 3
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.action, audit_log.c.operator,
                                   audit_log.c.target_id).order_by(audit_log.c.seq)).fetchall()
    assert [tuple(r) for r in rows] == [("member.create", "erin", m["member_id"]),
                                        ("member.delete", "erin", m["member_id"]),
                                        ("member.restore", "erin", m["member_id"])]


def test_visits_spend_and_last_visit_come_from_the_ledger(engine):
    m = create_member(ADMIN, engine, {"name": "张三", "store_id": "S1"}, NOW)
    give_card(engine, "C1", m["member_id"])
    give_card(engine, "C2", m["member_id"])
    post_checkout(engine, "C1", 1, 3000, NOW + 10)
    post_checkout(engine, "C2", 2, 1001, NOW + 20)
    page = get_member(ADMIN, engine, m["member_id"])
    assert page["activity"] == {"visits": 2, "spend_fen": 4001, "average_spend_fen": 2000,
                                "last_visit_ms": NOW + 20}
    assert [(t["txn_id"], t["purse_fen"], t["spend_fen"]) for t in page["transactions"]] == [
        ("T1#2r", 1001, 0), ("T1#2", -1001, 1001), ("T1#1r", 3000, 0), ("T1#1", -3000, 3000)]
    assert ids(find_members(ADMIN, engine, MemberQuery(spend_min_fen=4000, visits_min=2))) == \
        [m["member_id"]]
    assert ids(find_members(ADMIN, engine, MemberQuery(spend_min_fen=4002))) == []


def test_merging_keeps_both_histories(engine):
    keep = create_member(ADMIN, engine, {"name": "张三", "store_id": "S1"}, NOW)
    dup = create_member(ADMIN, engine, {"name": "张三", "store_id": "S1", "mobile": "13800138000",
                                        "email": "zs@example.com"}, NOW)
    friend = create_member(ADMIN, engine, {"name": "李四", "store_id": "S1",
                                           "referrer_id": dup["member_id"]}, NOW)
    give_card(engine, "C1", keep["member_id"])
    give_card(engine, "C2", dup["member_id"])
    post_checkout(engine, "C1", 1, 500, NOW + 1)
    post_checkout(engine, "C2", 2, 700, NOW + 2)
    survivor = merge_members(ADMIN, engine, keep["member_id"], dup["member_id"], NOW + 3)
    assert survivor["mobile"] == "+8613800138000" and survivor["email"] == "zs@example.com"
    page = get_member(ADMIN, engine, keep["member_id"])
    assert [c["card_id"] for c in page["cards"]] == ["C1", "C2"]
    assert page["activity"]["visits"] == 2 and page["activity"]["spend_fen"] == 1200
    pointer = get_member(ADMIN, engine, dup["member_id"])
    assert pointer["status"] == "merged" and pointer["merged_into"] == keep["member_id"]
    assert pointer["cards"] == [] and pointer["mobile"] is None
    assert get_member(ADMIN, engine, friend["member_id"])["referrer_id"] == keep["member_id"]
    assert ids(find_members(ADMIN, engine, MemberQuery(text="13800"))) == [keep["member_id"]]


def test_referrals_never_go_round_in_a_circle(engine):
    a = create_member(ADMIN, engine, {"name": "A", "store_id": "S1"}, NOW)
    b = create_member(ADMIN, engine, {"name": "B", "store_id": "S1",
                                      "referrer_id": a["member_id"]}, NOW)
    c = create_member(ADMIN, engine, {"name": "C", "store_id": "S1",
                                      "referrer_id": b["member_id"]}, NOW)
    with pytest.raises(MemberInvalid, match="circle"):
        update_member(ADMIN, engine, a["member_id"], {"referrer_id": c["member_id"]}, 1, NOW)
    with pytest.raises(MemberInvalid, match="refer themself"):
        update_member(ADMIN, engine, a["member_id"], {"referrer_id": a["member_id"]}, 1, NOW)


def test_custom_fields_are_validated_on_every_write(engine):
    with pytest.raises(Forbidden):
        define_field(MANAGER_S1, engine, FieldDefinition("size", "鞋码", "integer"), NOW)
    define_field(ADMIN, engine, FieldDefinition("size", "鞋码", "integer"), NOW)
    define_field(ADMIN, engine, FieldDefinition("deposit", "押金", "decimal", default="0.00"),
                 NOW)
    m = create_member(CASHIER_S1, engine, {"name": "A", "custom": {"size": "42"}}, NOW)
    assert m["custom"] == {"size": 42, "deposit": "0.00"}
    with pytest.raises(MemberInvalid, match="custom.size"):
        update_member(CASHIER_S1, engine, m["member_id"], {"custom": {"size": "big"}}, 1, NOW)
    edited = update_member(CASHIER_S1, engine, m["member_id"],
                           {"custom": {"deposit": "100.10"}}, 1, NOW)
    assert edited["custom"] == {"size": 42, "deposit": "100.10"}
    with engine.connect() as conn:
        stored = conn.execute(select(members.c.custom_json)).scalar_one()
    assert json.loads(stored) == {"size": 42, "deposit": "100.10"}
