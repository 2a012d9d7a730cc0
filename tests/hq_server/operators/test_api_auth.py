"""Signing in to the API: browser sessions (secure cookie + CSRF), bearer tokens, Basic,
staff cards, and the operators routes (If-Match, cursor, out of scope = not found)."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from hq_server.api.app import create_app
from hq_server.db.engine import open_engine
from hq_server.devices.enrolment import BrokerAddress
from hq_server.operators.lockout import MINUTE
from hq_server.operators.staff_cards import assign_staff_card
from tests.hq_server.operators.chain import NOW, PASSWORD, make_chain, operator


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def hq(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'hq.db'}")
    make_chain(engine)
    admin = operator(engine, "boss", "hq_admin", "chain")
    operator(engine, "mgr", "store_manager", "store:S1")
    operator(engine, "cash", "cashier", "store:S1")
    operator(engine, "cash3", "cashier", "store:S3")
    assign_staff_card(admin, engine, "STAFF-1", "cash", "482913", NOW)
    app = create_app(engine, None, BrokerAddress("127.0.0.1", 8883))  # type: ignore[arg-type]
    app.state.clock = Clock()
    yield app
    engine.dispose()


def browser(app) -> TestClient:
    return TestClient(app, base_url="https://testserver")


def login(client: TestClient, name: str, password: str = PASSWORD):
    return client.post("/v1/auth/login", json={"username": name, "password": password})


def test_login_sets_a_secure_cookie_and_changing_data_needs_the_csrf_token(hq):
    with browser(hq) as client:
        signed = login(client, "mgr")
        assert signed.status_code == 200, signed.text
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith("__Host-onecard-session=ocs_")
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert flag.lower() in cookie.lower()
        csrf = signed.json()["csrf_token"]
        assert signed.json()["role"] == "store_manager"
        assert client.get("/v1/auth/session").json()["csrf_token"] == csrf
        body = {"username": "new-cash", "password": "another long one", "role": "cashier",
                "scope": "store:S1"}
        refused = client.post("/v1/operators", json=body)
        assert (refused.status_code, refused.json()["code"]) == (403, "csrf-rejected")
        made = client.post("/v1/operators", json=body, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201, made.text
        out = client.post("/v1/auth/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
        assert client.get("/v1/auth/session").status_code == 401


def test_a_session_id_from_before_login_is_never_kept(hq):
    with browser(hq) as client:
        client.cookies.set("__Host-onecard-session", "ocs_planted-by-an-attacker")
        assert client.get("/v1/auth/session").status_code == 401
        signed = login(client, "cash")
        assert "ocs_planted" not in signed.headers["set-cookie"]


def test_the_cookie_rotates_while_used_and_dies_when_idle(hq):
    with browser(hq) as client:
        login(client, "cash")
        first = client.cookies.get("__Host-onecard-session")
        hq.state.clock.now += 16 * MINUTE
        renewed = client.get("/v1/auth/session")
        assert renewed.status_code == 200 and "set-cookie" in renewed.headers
        assert client.cookies.get("__Host-onecard-session") != first
        hq.state.clock.now += 31 * MINUTE
        assert client.get("/v1/auth/session").status_code == 401


def test_wrong_passwords_are_answered_401_then_429_with_retry_after(hq):
    with browser(hq) as client:
        answers = [login(client, "cash", "not my password") for _ in range(4)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert answers[-1].json()["code"] == "sign-in-throttled"
        assert answers[-1].headers["Retry-After"] == "1"
        ghost = [login(client, "ghost", "not my password") for _ in range(4)]
        assert [a.status_code for a in ghost] == [401, 401, 401, 429]
        assert ghost[0].json()["detail"] == answers[0].json()["detail"]


def test_api_tokens_basic_and_staff_cards_authenticate_without_cookies(hq):
    with browser(hq) as client:
        csrf = login(client, "mgr").json()["csrf_token"]
        made = client.post("/v1/api-tokens", headers={"X-CSRF-Token": csrf},
                           json={"name": "crm", "permissions": ["members.read"]})
        assert made.status_code == 201, made.text
        secret = made.json()["token"]
        listed = client.get("/v1/api-tokens").json()["items"]
        assert [t["name"] for t in listed] == ["crm"] and secret not in str(listed)
    with TestClient(hq, base_url="https://testserver") as bare:
        bearer = {"Authorization": f"Bearer {secret}"}
        assert bare.get("/v1/auth/session", headers=bearer).json()["permissions"] == [
            "members.read"]
        assert bare.get("/v1/operators", headers=bearer).status_code == 403  # narrower
        basic = "Basic " + base64.b64encode(f"mgr:{PASSWORD}".encode()).decode()
        assert bare.get("/v1/operators", headers={"Authorization": basic}).status_code == 200
        card = bare.post("/v1/auth/staff-card", json={"card_id": "STAFF-1", "pin": "482913"})
        assert card.status_code == 200, card.text
        handheld = {"Authorization": f"Bearer {card.json()['token']}"}
        assert bare.get("/v1/auth/session", headers=handheld).json()["operator"] == "cash"
        wrong = bare.post("/v1/auth/staff-card", json={"card_id": "STAFF-1", "pin": "111222"})
        assert wrong.status_code == 401


def test_operators_routes_page_edit_with_if_match_and_hide_other_stores(hq):
    with browser(hq) as client:
        csrf = {"X-CSRF-Token": login(client, "mgr").json()["csrf_token"]}
        page = client.get("/v1/operators", params={"limit": 1}).json()
        names = [o["username"] for o in page["items"]]
        while page["next_cursor"]:
            page = client.get("/v1/operators", params={"limit": 1,
                                                       "cursor": page["next_cursor"]}).json()
            names += [o["username"] for o in page["items"]]
        assert names == ["cash", "mgr"]
        shown = client.get("/v1/operators/cash")
        assert shown.headers["ETag"] == '"1"'
        ok = client.patch("/v1/operators/cash", json={"display_name": "王芳"},
                          headers={**csrf, "If-Match": '"1"'})
        assert ok.json()["version"] == 2
        stale = client.patch("/v1/operators/cash", json={"display_name": "李四"},
                             headers={**csrf, "If-Match": '"1"'})
        assert stale.status_code == 409 and stale.json()["current"]["display_name"] == "王芳"
        hidden = client.get("/v1/operators/cash3")
        missing = client.get("/v1/operators/nobody")
        assert hidden.status_code == missing.status_code == 404
        assert {k: v for k, v in hidden.json().items() if k != "instance"} == {
            k: v for k, v in missing.json().items() if k != "instance"}
        evil = client.patch("/v1/operators/cash", json={"display_name": "<script>x</script>"},
                            headers={**csrf, "If-Match": '"2"'})
        assert evil.json()["display_name"] == "<script>x</script>"  # stored verbatim, JSON out
