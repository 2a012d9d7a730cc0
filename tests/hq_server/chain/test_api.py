"""API v1 for the chain, cards and income: scope answered as not found, 409 on concurrent
edits, idempotent POSTs, cursor pages, problem details."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hq_server.api.app import create_app
from hq_server.api.dependencies import current_actor
from hq_server.devices.enrolment import BrokerAddress
from hq_server.ingest.batch import ingest_all
from hq_server.operators.access import SYSTEM, Actor, Level, Scope
from tests.hq_records import STORES, Card, Till, debit, known_store, recharge, store_engine


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def client_as(engine, actor: Actor) -> TestClient:
    app = create_app(engine, None, BrokerAddress("127.0.0.1"))  # type: ignore[arg-type]
    app.dependency_overrides[current_actor] = lambda: actor
    return TestClient(app, raise_server_exceptions=False)


ADMIN = Actor("ops", "hq_admin", Scope(Level.CHAIN), "api test")
MANAGER_A = Actor("mgr-a", "store_manager", Scope(Level.STORE, "A"), "api test")


def test_stores_through_the_api_with_idempotency_conflicts_and_scope(engine):
    admin = client_as(engine, ADMIN)
    assert admin.post("/v1/regions", json={"region_id": "east", "name": "华东"}).status_code == 201
    body = {"store_id": "A", "name": "<b>东区</b>'; --", "region": "east",
            "opening_hours": {"mon": ["09:00-21:00"]}}
    first = admin.post("/v1/stores", json=body, headers={"Idempotency-Key": "k1"})
    again = admin.post("/v1/stores", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert first.json()["name"] == "<b>东区</b>'; --"  # verbatim, JSON-escaped on output
    dup = admin.post("/v1/stores", json=body)
    assert dup.status_code == 422 and dup.json()["code"] == "invalid-input"
    admin.post("/v1/stores", json={"store_id": "B", "name": "west"})

    ok = admin.patch("/v1/stores/A", json={"phone": "021-5555 0100"},
                     headers={"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json()["version"] == 2
    stale = admin.patch("/v1/stores/A", json={"name": "late", "version": 1})
    assert stale.status_code == 409 and stale.json()["code"] == "edit-conflict"
    assert stale.json()["current"]["phone"] == "021-5555 0100"
    missing = admin.patch("/v1/stores/A", json={"name": "no version"})
    assert missing.status_code == 409

    mgr = client_as(engine, MANAGER_A)
    assert [s["store_id"] for s in mgr.get("/v1/stores").json()["items"]] == ["A"]
    other, nothing = mgr.get("/v1/stores/B"), mgr.get("/v1/stores/NOSUCH")
    assert other.status_code == nothing.status_code == 404
    assert other.json()["detail"] == nothing.json()["detail"]
    assert mgr.patch("/v1/stores/A", json={"name": "x", "version": 2}).status_code == 403
    bad = admin.post("/v1/stores", json={"store_id": "C", "name": "c",
                                         "opening_hours": {"mon": ["22:00-08:00"]}})
    assert bad.status_code == 422 and "ends before" in bad.json()["detail"]


def test_cards_pages_filters_and_scope_through_the_api(engine):
    known_store(engine, "A")
    known_store(engine, "B")
    a, b = Till("desk-a", "A").register(engine), Till("desk-b", "B").register(engine)
    ingest_all(engine, [a.message(recharge(a, Card(f"CA{i}"), 100)) for i in range(5)]
               + [b.message(recharge(b, Card("CB0"), 100))])
    admin = client_as(engine, ADMIN)
    seen, cursor = [], None
    while True:
        page = admin.get("/v1/cards", params={"limit": 2, **({"cursor": cursor} if cursor
                                                              else {})}).json()
        seen += [c["card_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["CA0", "CA1", "CA2", "CA3", "CA4", "CB0"]
    assert [c["card_id"] for c in admin.get("/v1/cards", params={"store": "B"}).json()[
        "items"]] == ["CB0"]
    assert admin.get("/v1/cards", params={"state": "nonsense"}).status_code == 422
    assert admin.get("/v1/cards", params={"cursor": "forged"}).json()["code"] == "bad-cursor"
    card = admin.get("/v1/cards/CA0").json()
    assert card["state"] == "open" and card["history"][0]["event"] == "first_seen"
    mgr = client_as(engine, MANAGER_A)
    assert len(mgr.get("/v1/cards").json()["items"]) == 5
    other, nothing = mgr.get("/v1/cards/CB0"), mgr.get("/v1/cards/NOSUCH")
    assert other.status_code == nothing.status_code == 404
    assert other.json()["detail"] == nothing.json()["detail"]
    devices = admin.get("/v1/devices", params={"limit": 1}).json()
    assert [d["device_id"] for d in devices["items"]] == ["desk-a"] and devices["next_cursor"]
    assert [d["device_id"] for d in mgr.get("/v1/devices").json()["items"]] == ["desk-a"]


def test_todays_income_by_store_from_the_ledger(engine):
    known_store(engine, "A")
    known_store(engine, "B")
    a, b = Till("desk-a", "A").register(engine), Till("desk-b", "B").register(engine)
    day = 1_764_633_600_000  # 2025-12-02 00:00 +08:00
    a.clock_ms = b.clock_ms = day + 3_600_000
    ca, cb = Card("CA"), Card("CB")
    ingest_all(engine, [a.message(recharge(a, ca, 10_000, bonus=1_000)),
                        a.message(debit(a, ca, 3_000, product="swim")),
                        a.message(debit(a, ca, 500, product="tea", cash=200)),
                        b.message(recharge(b, cb, 5_000))])
    b.clock_ms = day + 86_400_000 + 10  # the next day: not in this report
    ingest_all(engine, [b.message(recharge(b, cb, 7_000))])
    admin = client_as(engine, ADMIN)
    report = admin.get("/v1/reports/income", params={"day": "2025-12-02"}).json()
    by_store = {s["store"]: s for s in report["stores"]}
    assert by_store["A"] == {"store": "A", "cash_taken_fen": 10_200, "recharges_fen": 10_000,
                             "bonus_given_fen": 1_000, "revenue_fen": 3_700,
                             "revenue_by_product": {"swim": 3_000, "tea": 700}}
    assert by_store["B"]["cash_taken_fen"] == 5_000 and by_store["B"]["revenue_fen"] == 0
    assert report["totals"]["cash_taken_fen"] == 15_200
    mine = client_as(engine, MANAGER_A).get("/v1/reports/income", params={"day": "2025-12-02"})
    assert [s["store"] for s in mine.json()["stores"]] == ["A"]
    both = admin.get("/v1/reports/income", params={"from": "2025-12-02", "to": "2025-12-03"})
    assert {s["store"]: s["cash_taken_fen"] for s in both.json()["stores"]}["B"] == 12_000
    cashier = Actor("c", "cashier", Scope(Level.STORE, "A"))
    assert client_as(engine, cashier).get("/v1/reports/income",
                                          params={"day": "2025-12-02"}).status_code == 403
    assert admin.get("/v1/reports/income").status_code == 422


def test_the_openapi_documents_the_new_routes_with_examples(engine):
    schema = client_as(engine, SYSTEM).get("/openapi.json").json()
    for path in ("/v1/regions", "/v1/stores", "/v1/stores/{store_id}", "/v1/cards",
                 "/v1/cards/{card_id}", "/v1/reports/income"):
        assert path in schema["paths"], path
    components = schema["components"]["schemas"]
    assert components["StoreOut"]["examples"] and components["CardDetail"]["examples"]
