"""Every route of the API × every role × in and out of scope.

The permission of each route is read from the app (``requires(...)`` on the route, see
:func:`hq_server.api.dependencies.route_permissions`), so a route added by any router is
covered as soon as it exists, and one that declares nothing (and is not ``PUBLIC``)
fails here. A route whose path names a thing (``{device_id}``, ``{username}``, ...) is
called for a thing in store S1 by an operator whose scope covers S1 (answered as for any
allowed call: not 401/403/404) and by one whose scope does not (answered exactly like an
id that does not exist). Add a sample to ``SAMPLES`` for each new path parameter, and a
valid body to ``BODIES`` so writes reach their scope check.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from broker_config.install import SiteDeviceCA
from hq_server.api.app import create_app
from hq_server.api.dependencies import route_permissions
from hq_server.db.engine import open_engine
from hq_server.db.tables import devices
from hq_server.devices.enrolment import BrokerAddress
from hq_server.operators.access import ROLE_PERMISSIONS, ROLES
from hq_server.operators.api_tokens import create_api_token
from hq_server.operators.staff_cards import assign_staff_card
from tests.hq_server.operators.chain import NOW, make_chain, operator
from tests.mtls_helpers import make_site, remove_site

#: Each role's caller whose scope covers store S1, and one whose scope does not.
CALLERS: dict[str, tuple[str, str | None]] = {
    "cashier": ("store:S1", "store:S3"),
    "auditor": ("store:S1", "store:S3"),
    "store_manager": ("store:S1", "store:S3"),
    "region_manager": ("region:north", "region:south"),
    "hq_admin": ("chain", None),  # the chain covers everything: no "out of scope"
}

#: Path parameter → how to name a thing of store S1 (``caller`` is the caller's name).
SAMPLES: dict[str, Any] = {
    "device_id": lambda caller: "gate-s1",
    "username": lambda caller: "target-s1",
    "card_id": lambda caller: "STAFF-S1",
    "token_id": lambda caller: TOKENS.get(caller, UNKNOWN),  # one's own is "in scope"
    "store_id": lambda caller: "S1",
    "region_id": lambda caller: "north",
    "entry_id": lambda caller: ENTRIES.get("S1", UNKNOWN),  # a thing of S1 in the bin
    "member_id": lambda caller: ENTRIES.get("member", UNKNOWN),  # a member of S1
    "key": lambda caller: "locker",  # a custom member field (chain-level)
}
ENTRIES: dict[str, str] = {}  # store → a recycle-bin entry id of a thing deleted there
UNKNOWN = "no-such-thing"
#: Parameters whose ids are numbers: an unknown one is a number too.
UNKNOWN_NUMBER = {"entry_id": "999999"}
#: Chain-level things (a region is the chain's structure): only chain-wide operators
#: change them, whatever their role allows elsewhere.
CHAIN_LEVEL = {("PATCH", "/v1/regions/{region_id}"), ("DELETE", "/v1/member-fields/{key}")}

#: Valid bodies, so that writes reach their scope check (others get ``{}``).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/devices/{device_id}/revoke"): {"reason": "matrix test"},
    ("PATCH", "/v1/operators/{username}"): {"display_name": "changed", "version": 1},
    ("POST", "/v1/operators/{username}/password"): {"password": "another long password"},
    ("PUT", "/v1/operators/{username}/staff-card"): {"card_id": "STAFF-X", "pin": "482913"},
    ("POST", "/v1/operators"): {"username": "new-cashier", "password": "a long password!",
                                "role": "cashier", "scope": "store:S1"},
    ("POST", "/v1/enrolment-tokens"): {"store": "S1", "role": "gate"},
    ("POST", "/v1/api-tokens"): {"name": "matrix"},
    ("POST", "/v1/members"): {"name": "New member", "mobile": "13800000002", "store_id": "S1"},
    ("POST", "/v1/members/{member_id}/merge"): {"merged": "M-MATRIX-2"},
}

TOKENS: dict[str, str] = {}  # caller → a token id of their own, to use as a sample
SECRETS: dict[str, str] = {}  # caller → the API token it authenticates with


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'hq.db'}")
    make_chain(engine)
    with engine.begin() as conn:
        conn.execute(insert(devices).values(device_id="gate-s1", public_key="ab" * 32,
                                            store="S1", role="gate", status="active",
                                            registered_at_ms=NOW))
    target = operator(engine, "target-s1", "cashier", "store:S1")
    admin = operator(engine, "boss", "hq_admin", "chain")
    ENTRIES["S1"] = str(_deleted_thing_of_s1(engine, admin))
    # the staff card's id names a member card of S1 too, for the card registry's routes
    from hq_server.cards.registry import register_card

    register_card(engine, admin, "STAFF-S1", store="S1", now_ms=NOW)
    # a member of S1, and a custom member field of the chain
    from hq_server.members.custom_fields import FieldDefinition
    from hq_server.members.service import create_member, define_field

    ENTRIES["member"] = create_member(admin, engine, {"name": "Matrix", "mobile": "13800000001",
                                                      "store_id": "S1"}, NOW)["member_id"]
    create_member(admin, engine, {"member_id": "M-MATRIX-2", "name": "Matrix two",
                                  "mobile": "13800000003", "store_id": "S1"}, NOW)
    define_field(admin, engine, FieldDefinition("locker", "Locker", "text"), NOW)
    assign_staff_card(admin, engine, "STAFF-S1", target.operator, "482913", NOW)
    for role, scopes in CALLERS.items():
        for where, scope in zip(("in", "out"), scopes, strict=True):
            if scope is None:
                continue
            name = f"{role.replace('_', '-')}-{where}"
            actor = operator(engine, name, role, scope)
            SECRETS[name] = create_api_token(actor, engine, "auth", NOW)[0]
            TOKENS[name] = create_api_token(actor, engine, "sample", NOW)[1].token_id
    site = make_site()
    app = create_app(engine, OfflineBroker(site, "127.0.0.1"), BrokerAddress("127.0.0.1", 8883))
    with TestClient(app, base_url="https://testserver") as c:
        yield c
    engine.dispose()
    remove_site(site)


class OfflineBroker(SiteDeviceCA):
    """The site's real device CA, with no broker running to reload or to disconnect
    terminals from (this test is about who may revoke, not about the broker)."""

    def revoke_certificates(self, serials: list[int]) -> None:
        from broker_config.install import revoke

        revoke(self.site, serials)

    def disconnect(self, device_id: str, timeout: float = 10.0) -> bool:
        return False


def samples(path: str, caller: str | None) -> dict[str, str]:
    """The path's parameters naming things of store S1 (or ``caller``'s own)."""
    return {p: SAMPLES[p](caller) for p in SAMPLES if "{" + p + "}" in path}


def _deleted_thing_of_s1(engine, admin) -> int:
    """A thing of store S1 in the recycle bin (a kind of this test's own)."""
    from hq_server.operators.access import Place
    from hq_server.recycle.bin import CannotRestore, put_in_bin
    from hq_server.recycle.registry import BinKind, register

    def nothing(conn, actor, target_id, now_ms) -> None:
        # it stays in the bin, so every role in turn finds it there (409, not 404)
        raise CannotRestore("the matrix test's thing never comes back")

    register(BinKind(kind="matrix-thing", title="a thing of the matrix test",
                     restore=nothing, purge=nothing))
    with engine.begin() as conn:
        return put_in_bin(conn, admin, "matrix-thing", "T1", place=Place("S1", "north"),
                          label="T1", snapshot={"id": "T1"}, now_ms=NOW)


def call(client: TestClient, method: str, path: str, caller: str | None,
         values: dict[str, str] | None = None) -> Any:
    filled = path
    for param, value in (samples(path, caller) if values is None else values).items():
        filled = filled.replace("{" + param + "}", value)
    headers = {"Authorization": f"Bearer {SECRETS[caller]}"} if caller else {}
    body = BODIES.get((method, path), {}) if method in ("POST", "PUT", "PATCH") else None
    return client.request(method, filled, headers=headers, json=body)


def same_answer(a: Any, b: Any) -> bool:
    """Same status and body, but for the path the problem occurred at."""
    def strip(r):
        body = r.json()
        return r.status_code, {k: v for k, v in body.items() if k != "instance"}
    return strip(a) == strip(b)


def routes() -> list[tuple[str, str, str]]:
    from hq_server.devices.enrolment import BrokerAddress as _B

    app = create_app(None, None, _B("127.0.0.1", 8883))  # type: ignore[arg-type]
    out = []
    for (method, path), declared in sorted(route_permissions(app).items()):
        assert len(declared) == 1, (f"{method} {path} declares {declared or 'nothing'}: "
                                    "give it requires(<permission>) or PUBLIC")
        out.append((method, path, declared[0]))
    return out


ROUTES = routes()


def test_every_route_declares_one_permission_or_is_public():
    assert ROUTES, "no routes found"
    params = {p.strip("{}") for _, path, _ in ROUTES for p in path.split("/")
              if p.startswith("{")}
    missing = params - set(SAMPLES)
    assert not missing, f"add a sample for path parameters {missing} to SAMPLES"


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_route_by_role_and_scope(client, method, path, permission):
    if permission == "public":
        assert call(client, method, path, None).status_code != 401
        return
    anonymous = call(client, method, path, None)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["code"] == "not-authenticated"
    scoped = "{" in path
    for role in ROLES:
        allowed = permission == "signed-in" or permission in ROLE_PERMISSIONS[role]
        inside = f"{role.replace('_', '-')}-in"
        answer = call(client, method, path, inside)
        if not allowed:
            assert answer.status_code == 403, (role, answer.text)
            assert answer.json()["code"] == "forbidden"
            continue
        if (method, path) in CHAIN_LEVEL and not CALLERS[role][0].startswith("chain"):
            assert answer.status_code == 403 and answer.json()["code"] == "forbidden", (
                role, answer.text)
            continue
        assert answer.status_code not in (401, 403), (role, answer.status_code, answer.text)
        if scoped:
            assert answer.status_code != 404, (role, answer.text)
            unknown = call(client, method, path, inside,
                           {p: UNKNOWN_NUMBER.get(p, UNKNOWN) for p in samples(path, inside)})
            if CALLERS[role][1] is not None:  # the very same thing, asked from elsewhere
                outside = call(client, method, path, f"{role.replace('_', '-')}-out",
                               samples(path, inside))
                assert same_answer(outside, unknown), (role, outside.text, unknown.text)
                assert outside.status_code == 404, (role, outside.text)
