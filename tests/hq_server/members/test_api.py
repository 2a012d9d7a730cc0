"""Members over API v1: problems with reasons, If-Match conflicts, idempotency keys,
scope answered as not found, injection strings verbatim, import and export."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hq_server.api import create_app
from hq_server.api.dependencies import current_actor
from hq_server.devices.enrolment import BrokerAddress
from tests.hq_server.members.helpers import ADMIN, CASHIER_S1, CASHIER_S2, INJECTIONS

PROBLEM = "application/problem+json"


@pytest.fixture
def api(engine):
    # Enrolment's device authority is not used by the member routes.
    app = create_app(engine, None, BrokerAddress("127.0.0.1", 8883))  # type: ignore[arg-type]
    acting = {"actor": ADMIN}
    app.dependency_overrides[current_actor] = lambda: acting["actor"]
    with TestClient(app, raise_server_exceptions=False) as client:
        client.acting = acting  # type: ignore[attr-defined]
        yield client


def test_register_find_and_see_the_member_page(api):
    r = api.post("/v1/members", json={"name": "张三", "mobile": "138 0013 8000",
                                      "store_id": "S1"})
    assert r.status_code == 201, r.text
    member = r.json()
    assert member["mobile"] == "+8613800138000" and member["version"] == 1
    found = api.get("/v1/members", params={"q": "zs"}).json()
    assert [m["member_id"] for m in found["items"]] == [member["member_id"]]
    page = api.get(f"/v1/members/{member['member_id']}").json()
    assert page["activity"]["visits"] == 0 and page["cards"] == []


def test_every_wrong_field_is_a_problem_with_a_pointer(api):
    r = api.post("/v1/members", json={"name": "x" * 101, "birthday": "2999-01-01",
                                      "mobile": "12345", "store_id": "S1"})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "member-invalid"
    assert {e["pointer"] for e in body["errors"]} == {"/name", "/birthday", "/mobile"}
    assert api.get("/v1/members").json()["items"] == []


def test_the_second_edit_gets_409_and_sees_what_changed(api):
    m = api.post("/v1/members", json={"name": "张三", "store_id": "S1"}).json()
    url = f"/v1/members/{m['member_id']}"
    first = api.patch(url, json={"name": "张三丰"}, headers={"If-Match": '"1"'})
    assert first.status_code == 200 and first.json()["version"] == 2
    second = api.patch(url, json={"remark1": "VIP"}, headers={"If-Match": '"1"'})
    assert second.status_code == 409 and second.json()["code"] == "edit-conflict"
    assert second.json()["changed"] == ["name"] and second.json()["current"]["name"] == "张三丰"
    assert api.patch(url, json={"remark1": "VIP"}).status_code == 409  # no version at all
    assert api.patch(url, json={"remark1": "VIP", "version": 2}).status_code == 200


def test_a_retried_post_with_the_same_key_registers_once(api):
    headers = {"Idempotency-Key": "till-7-0001"}
    a = api.post("/v1/members", json={"name": "李四", "store_id": "S1"}, headers=headers)
    b = api.post("/v1/members", json={"name": "李四", "store_id": "S1"}, headers=headers)
    assert a.status_code == b.status_code == 201 and a.json() == b.json()
    assert len(api.get("/v1/members").json()["items"]) == 1
    other = api.post("/v1/members", json={"name": "王五", "store_id": "S1"}, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency-key-reused"


def test_another_stores_member_is_not_found_exactly_like_a_missing_one(api):
    api.acting["actor"] = CASHIER_S1
    m = api.post("/v1/members", json={"name": "王五"}).json()
    api.acting["actor"] = CASHIER_S2
    theirs = api.get(f"/v1/members/{m['member_id']}")
    missing = api.get("/v1/members/M99999999")
    assert theirs.status_code == missing.status_code == 404
    strip = lambda b: {k: v for k, v in b.items() if k != "instance"}  # noqa: E731
    assert strip(theirs.json()) == strip(missing.json())
    assert api.patch(f"/v1/members/{m['member_id']}", json={"name": "x", "version": 1}
                     ).status_code == 404
    assert api.delete(f"/v1/members/{m['member_id']}").status_code in (403, 404)
    assert api.get("/v1/members", params={"q": "ww"}).json()["items"] == []


def test_injection_strings_come_back_verbatim_as_json(api):
    for evil in INJECTIONS:
        r = api.post("/v1/members", json={"name": evil, "remark1": evil, "habits": evil,
                                          "store_id": "S1"})
        assert r.status_code == 201, r.text
        assert r.headers["content-type"] == "application/json"
        got = api.get(f"/v1/members/{r.json()['member_id']}").json()
        assert got["name"] == got["remark1"] == got["habits"] == evil
    assert len(api.get("/v1/members", params={"limit": 200}).json()["items"]) == len(INJECTIONS)


def test_delete_restore_merge_import_and_export(api):
    a = api.post("/v1/members", json={"name": "A", "store_id": "S1"}).json()
    b = api.post("/v1/members", json={"name": "A", "store_id": "S1",
                                      "mobile": "13800138000"}).json()
    assert api.delete(f"/v1/members/{a['member_id']}").json()["status"] == "deleted"
    assert api.post(f"/v1/members/{a['member_id']}/restore").json()["status"] == "active"
    merged = api.post(f"/v1/members/{a['member_id']}/merge", json={"merged": b["member_id"]})
    assert merged.status_code == 200 and merged.json()["mobile"] == "+8613800138000"
    data = "姓名,手机,store_id\n李四,13900139000,S1\n王五,2,S1\n".encode()
    dry = api.post("/v1/members/import", params={"dry_run": "true"}, content=data,
                   headers={"Content-Type": "text/csv"})
    assert dry.status_code == 200 and dry.json()["counts"]["refused"] == 1
    refused = api.post("/v1/members/import", content=data, headers={"Content-Type": "text/csv"})
    assert refused.status_code == 422 and refused.json()["code"] == "import-refused"
    assert refused.json()["report"]["rows"][1]["action"] == "refused"
    export = api.get("/v1/members/export", params={"format": "csv"})
    assert export.status_code == 200 and "+8613800138000" in export.content.decode("utf-8-sig")
    fields = api.post("/v1/member-fields", json={"key": "size", "label": "鞋码",
                                                 "type": "integer"})
    assert fields.status_code == 201
    bad = api.post("/v1/members", json={"name": "C", "store_id": "S1",
                                        "custom": {"size": 4.5}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/custom/size"
