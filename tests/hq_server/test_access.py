"""Roles, scopes and the rule that out of scope looks exactly like "does not exist"."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hq_server.operators.access import (
    PERMISSIONS,
    ROLE_LEVELS,
    ROLE_PERMISSIONS,
    Actor,
    Forbidden,
    Level,
    NotVisible,
    Place,
    Scope,
    authorise,
    may_manage,
)

A1 = Place("store-a1", "north")
A2 = Place("store-a2", "north")
B1 = Place("store-b1", "south")
CHAIN_THING = Place(None)


def actor(role: str, scope: str) -> Actor:
    return Actor("op", role, Scope.parse(scope))


def test_a_cashier_of_one_store_cannot_see_another_stores_member():
    cashier = actor("cashier", "store:store-a1")
    authorise(cashier, "members.read", A1)
    with pytest.raises(NotVisible):
        authorise(cashier, "members.read", A2)
    with pytest.raises(NotVisible):
        authorise(cashier, "members.write", B1)


def test_a_region_manager_sees_the_stores_of_the_region_only():
    manager = actor("region_manager", "region:north")
    authorise(manager, "members.write", A1)
    authorise(manager, "stores.write", A2)
    with pytest.raises(NotVisible):
        authorise(manager, "members.read", B1)


def test_roles_without_the_permission_are_forbidden_even_in_scope():
    with pytest.raises(Forbidden):
        authorise(actor("cashier", "store:store-a1"), "operators.write", A1)
    with pytest.raises(Forbidden):
        authorise(actor("auditor", "chain"), "members.write", A1)
    authorise(actor("auditor", "chain"), "audit.read", A1)


def test_chain_level_data_is_read_by_all_and_written_only_by_chain_operators():
    authorise(actor("cashier", "store:store-a1"), "catalogue.read", CHAIN_THING)
    with pytest.raises(Forbidden):
        authorise(actor("store_manager", "store:store-a1"), "members.write", CHAIN_THING)
    authorise(actor("hq_admin", "chain"), "catalogue.write", CHAIN_THING)


def test_operators_manage_only_lower_ranks():
    assert may_manage(actor("store_manager", "store:store-a1"), "cashier")
    assert not may_manage(actor("store_manager", "store:store-a1"), "store_manager")
    assert not may_manage(actor("store_manager", "store:store-a1"), "hq_admin")
    assert may_manage(actor("hq_admin", "chain"), "hq_admin")
    assert not may_manage(actor("cashier", "store:store-a1"), "cashier")


def test_scopes_parse_and_refuse_nonsense():
    assert Scope.parse("chain") == Scope(Level.CHAIN)
    assert str(Scope.parse("store:S1")) == "store:S1"
    for bad in ("", "planet:earth", "store:", "chain:x"):
        with pytest.raises(ValueError):
            Scope.parse(bad)
    with pytest.raises(ValueError):
        authorise(actor("hq_admin", "chain"), "members.fly", A1)


@given(role=st.sampled_from(list(ROLE_PERMISSIONS)),
       permission=st.sampled_from(PERMISSIONS),
       store=st.sampled_from(["store-a1", "store-a2", "store-b1"]))
def test_authorise_allows_exactly_permission_and_scope(role, permission, store):
    region = {"store-a1": "north", "store-a2": "north", "store-b1": "south"}[store]
    level = sorted(ROLE_LEVELS[role], key=lambda lv: lv.value)[0]
    scope = {Level.CHAIN: Scope(Level.CHAIN), Level.REGION: Scope(Level.REGION, "north"),
             Level.STORE: Scope(Level.STORE, "store-a1")}[level]
    who = Actor("op", role, scope)
    place = Place(store, region)
    allowed = permission in ROLE_PERMISSIONS[role]
    in_scope = scope.covers(place)
    if not allowed:
        with pytest.raises(Forbidden):
            authorise(who, permission, place)
    elif not in_scope:
        with pytest.raises(NotVisible):
            authorise(who, permission, place)
    else:
        authorise(who, permission, place)
