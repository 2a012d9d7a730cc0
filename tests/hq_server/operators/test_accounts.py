"""Operators with roles and scopes: who may create and change whom, on both stores."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from hq_server.api.common import EditConflict
from hq_server.db.engine import open_engine
from hq_server.db.migrations import upgrade
from hq_server.db.tables import audit_log, operators
from hq_server.operators.access import Forbidden, NotVisible, Scope
from hq_server.operators.accounts import (
    OperatorError,
    add_operator,
    bootstrap_actor,
    disable_operator,
    get_operator,
    list_operators,
    reset_password,
    update_operator,
)
from hq_server.operators.api_tokens import actor_of_token, create_api_token
from hq_server.operators.errors import AuthenticationFailed
from hq_server.operators.sessions import open_session, resume_session
from tests.hq_records import STORES, store_engine
from tests.hq_server.operators.chain import NOW, PASSWORD, make_chain, operator


@pytest.fixture(params=STORES)
def engine(request):
    engine = store_engine(request)
    make_chain(engine)
    return engine


def audit_actions(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(audit_log.c.operator, audit_log.c.action, audit_log.c.target_id)
            .order_by(audit_log.c.seq))]


def test_a_store_manager_manages_the_cashiers_of_their_store_only(engine):
    manager = operator(engine, "mgr-s1", "store_manager", "store:S1")
    made = add_operator(manager, engine, "cash-s1", PASSWORD, "cashier", Scope.parse("store:S1"),
                        now_ms=NOW)
    assert (made.role, str(made.scope)) == ("cashier", "store:S1")
    with pytest.raises(Forbidden, match="within your scope"):
        add_operator(manager, engine, "cash-s2", PASSWORD, "cashier", Scope.parse("store:S2"))
    with pytest.raises(Forbidden, match="may not manage"):
        add_operator(manager, engine, "mgr2-s1", PASSWORD, "store_manager",
                     Scope.parse("store:S1"))
    other = operator(engine, "cash-s3", "cashier", "store:S3")
    with pytest.raises(NotVisible):  # another store's operator: as if it did not exist
        update_operator(manager, engine, other.operator, 1, display_name="x")
    with pytest.raises(NotVisible):
        get_operator(manager, engine, "cash-s3")
    with pytest.raises(NotVisible):
        get_operator(manager, engine, "nobody")


def test_nobody_creates_an_operator_above_their_own_rank(engine):
    region = operator(engine, "rm-north", "region_manager", "region:north")
    add_operator(region, engine, "mgr-s2", PASSWORD, "store_manager", Scope.parse("store:S2"))
    for role, scope in (("region_manager", "region:north"), ("hq_admin", "chain")):
        with pytest.raises(Forbidden):
            add_operator(region, engine, "up", PASSWORD, role, Scope.parse(scope))
    with pytest.raises(Forbidden):  # a store of another region
        add_operator(region, engine, "mgr-s3", PASSWORD, "store_manager", Scope.parse("store:S3"))
    cashier = operator(engine, "cash", "cashier", "store:S1")
    with pytest.raises(Forbidden):
        add_operator(cashier, engine, "cash2", PASSWORD, "cashier", Scope.parse("store:S1"))


def test_roles_are_scoped_to_their_levels_and_places_must_exist(engine):
    admin = operator(engine, "boss", "hq_admin", "chain")
    for role, scope, why in (("cashier", "chain", "scoped to a store"),
                             ("region_manager", "store:S1", "scoped to a region"),
                             ("hq_admin", "region:north", "scoped to a chain"),
                             ("cashier", "store:NOPE", "no store"),
                             ("auditor", "region:west", "no region"),
                             ("wizard", "chain", "unknown role")):
        with pytest.raises(OperatorError, match=why):
            add_operator(admin, engine, "someone", PASSWORD, role, Scope.parse(scope))
    with pytest.raises(OperatorError, match="at least 12"):
        add_operator(admin, engine, "someone", "short", "cashier", Scope.parse("store:S1"))
    with pytest.raises(OperatorError, match="operator names"):
        add_operator(admin, engine, "Robert'); DROP TABLE operators;--", PASSWORD, "cashier",
                     Scope.parse("store:S1"))
    names = [o.username for o in list_operators(admin, engine)[0]]
    assert names == ["boss"]  # nothing half-created


def test_lists_narrow_to_the_scope_and_page_by_cursor(engine):
    admin = operator(engine, "boss", "hq_admin", "chain")
    for i, store in enumerate(["S1", "S1", "S2", "S3"]):
        operator(engine, f"c{i}", "cashier", f"store:{store}")
    region = operator(engine, "rm", "region_manager", "region:north")
    seen, cursor = [], None
    while True:
        page, cursor = list_operators(region, engine, cursor=cursor, limit=2)
        seen += [o.username for o in page]
        if cursor is None:
            break
    assert seen == ["c0", "c1", "c2", "rm"]
    store = operator(engine, "m1", "store_manager", "store:S1")
    assert [o.username for o in list_operators(store, engine)[0]] == ["c0", "c1", "m1"]
    assert len(list_operators(admin, engine)[0]) == 7


def test_edits_are_versioned_audited_and_end_sessions_when_rights_change(engine):
    admin = operator(engine, "boss", "hq_admin", "chain")
    cashier = operator(engine, "cash", "cashier", "store:S1")
    live = open_session(engine, cashier, "cli", NOW)
    secret, _ = create_api_token(cashier, engine, "till sync", NOW)
    renamed = update_operator(admin, engine, "cash", 1, display_name="王芳", now_ms=NOW)
    assert renamed.version == 2
    resume_session(engine, live.token, ("cli",), "t", NOW + 1)  # a rename keeps sessions
    with pytest.raises(EditConflict) as conflict:
        update_operator(admin, engine, "cash", 1, role="store_manager")
    assert conflict.value.current["display_name"] == "王芳"
    moved = update_operator(admin, engine, "cash", 2, scope=Scope.parse("store:S2"), now_ms=NOW)
    assert str(moved.scope) == "store:S2"
    with pytest.raises(AuthenticationFailed):
        resume_session(engine, live.token, ("cli",), "t", NOW + 2)
    with pytest.raises(AuthenticationFailed):
        actor_of_token(engine, secret, "t", NOW + 2)
    actions = [a for _, a, _ in audit_actions(engine)]
    assert actions[-2:] == ["operator.update", "operator.update"]
    with engine.connect() as conn:
        last = conn.execute(select(audit_log.c.before_json, audit_log.c.after_json)
                            .order_by(audit_log.c.seq.desc())).first()
    assert json.loads(last[0])["scope"] == "store:S1" and json.loads(last[1])["scope"] == "store:S2"
    assert "password" not in last[0] + last[1]


def test_disable_and_reset_password_are_audited_and_nobody_disables_themselves(engine):
    admin = operator(engine, "boss", "hq_admin", "chain")
    manager = operator(engine, "mgr", "store_manager", "store:S1")
    operator(engine, "cash", "cashier", "store:S1")
    reset_password(manager, engine, "cash", "a brand new password", now_ms=NOW)
    assert disable_operator(manager, engine, "cash", now_ms=NOW).status == "disabled"
    with pytest.raises(Forbidden):
        disable_operator(admin, engine, "boss")
    with pytest.raises(NotVisible):  # the chain's administrator is outside store S1
        reset_password(manager, engine, "boss", "a brand new password")
    reset_password(manager, engine, "mgr", "my own new password")  # one's own: allowed
    tail = audit_actions(engine)[-3:]
    assert tail == [("mgr", "operator.password_reset", "cash"),
                    ("mgr", "operator.disable", "cash"),
                    ("mgr", "operator.password_reset", "mgr")]


def test_operators_of_before_roles_become_hq_administrators_at_chain_scope(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = open_engine(url, migrate=False)
    upgrade(engine, "0007_access_contracts")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO operators (username, password_hash, role, status, "
                          "created_at_ms) VALUES ('admin', 'x', 'admin', 'active', 1)"))
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(select(operators.c.role, operators.c.scope, operators.c.version)
                           ).one()
    assert tuple(row) == ("hq_admin", "chain", 1)


def test_the_bootstrap_is_audited_with_the_person_at_the_console(engine):
    add_operator(bootstrap_actor("cli:zhang"), engine, "first", PASSWORD, "hq_admin",
                 Scope.parse("chain"), now_ms=NOW)
    assert audit_actions(engine)[-1] == ("bootstrap:cli:zhang", "operator.create", "first")


