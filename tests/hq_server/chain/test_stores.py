"""The chain as HQ data: regions and stores managed with scope, versions and the audit log."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from hq_server.api.common import BadCursor, EditConflict
from hq_server.chain.errors import ChainError, ChainNotFound
from hq_server.chain.hours import HoursError, is_open, parse_hours, terminal_hours
from hq_server.chain.stores import (
    close_store,
    create_region,
    create_store,
    edit_region,
    edit_store,
    get_store,
    list_regions,
    list_stores,
)
from hq_server.db.tables import audit_log
from hq_server.devices.enrolment import EnrolmentError, create_token
from hq_server.devices.registry import RegistryError, add_device, set_status
from hq_server.operators.access import SYSTEM, Actor, Forbidden, Level, NotVisible, Scope
from protocol.terminal_config import parse_config
from tests.hq_records import STORES, Till, store_engine

T = 1_764_633_600_000
HOURS = {"mon": ["09:00-12:00", "13:00-21:00"], "sun": ["08:00-22:00"],
         "holidays": {"2026-10-01": [], "2026-12-24": ["10:00-16:00"]}}
INJECTIONS = ["'; DROP TABLE stores;--", "<script>alert(1)</script>", "Robert'); --",
              "东区\"店\" & <b>", "${jndi:ldap://x}"]


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def manager(store: str) -> Actor:
    return Actor(f"mgr-{store}", "store_manager", Scope(Level.STORE, store))


def region_manager(region: str) -> Actor:
    return Actor(f"rm-{region}", "region_manager", Scope(Level.REGION, region))


@pytest.fixture
def chain(engine):
    create_region(engine, SYSTEM, "east", "华东大区", T)
    create_region(engine, SYSTEM, "west", "西部大区", T)
    create_store(engine, SYSTEM, "A", "东区游泳馆", region="east", address="世纪大道 100 号",
                 phone="021-5555 0100", opening_hours=HOURS, now_ms=T)
    create_store(engine, SYSTEM, "A2", "东区二店", region="east", now_ms=T)
    create_store(engine, SYSTEM, "B", "西区健身房", region="west", now_ms=T)
    return engine


def actions(engine) -> list[tuple[str, str, str]]:
    a = audit_log.c
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(a.operator, a.action, a.target_id).order_by(a.seq))]


def test_a_store_keeps_what_hq_was_told_and_every_change_is_audited(chain):
    store = get_store(chain, SYSTEM, "A")
    assert (store["name"], store["region"], store["address"], store["phone"]) == (
        "东区游泳馆", "east", "世纪大道 100 号", "021-5555 0100")
    assert store["opening_hours"] == parse_hours(HOURS) and store["version"] == 1
    edited = edit_store(chain, SYSTEM, "A", {"phone": "021-5555 0199"}, version=1, now_ms=T + 1)
    assert edited["phone"] == "021-5555 0199" and edited["version"] == 2
    assert actions(chain)[-1] == ("system", "store.update", "A")
    assert ("system", "region.create", "east") in actions(chain)
    assert ("system", "store.create", "B") in actions(chain)


def test_a_stores_hours_feed_its_terminals_config_unchanged(chain):
    hours = get_store(chain, SYSTEM, "A")["opening_hours"]
    config = parse_config({"version": 1, "opening_hours": terminal_hours(hours)})
    assert config.opening_hours == {0: ((540, 720), (780, 1260)), 6: ((480, 1320),)}


def test_opening_hours_know_holidays_and_weekdays():
    import datetime as dt

    hours = parse_hours(HOURS)
    assert is_open(hours, dt.datetime(2026, 11, 30, 10, 0))  # a Monday
    assert not is_open(hours, dt.datetime(2026, 11, 30, 12, 30))  # lunch
    assert not is_open(hours, dt.datetime(2026, 12, 1, 10, 0))  # Tuesday: not listed
    assert not is_open(hours, dt.datetime(2026, 10, 1, 10, 0))  # holiday, closed all day
    assert is_open(hours, dt.datetime(2026, 12, 24, 11, 0))  # holiday with its own hours
    assert is_open(parse_hours({}), dt.datetime(2026, 12, 1, 3, 0))  # none given: always


@pytest.mark.parametrize("bad, why", [
    ({"mon": ["9:00-21:00"]}, "HH:MM"),
    ({"mon": ["21:00-09:00"]}, "ends before"),
    ({"mon": ["09:00-12:00", "11:00-13:00"]}, "overlap"),
    ({"funday": []}, "unknown day"),
    ({"holidays": {"2026-02-30": []}}, "not a date"),
    ({"mon": "09:00-21:00"}, "list"),
    ([], "object"),
])
def test_opening_hours_that_make_no_sense_are_refused_with_the_reason(bad, why):
    with pytest.raises(HoursError, match=why):
        parse_hours(bad)


def test_bad_fields_are_refused_and_change_nothing(chain):
    for changes, why in [({"phone": "call me"}, "not a telephone"), ({"name": ""}, "empty"),
                         ({"name": "x" * 201}, "at most 200"), ({"name": "a\x00b"}, "control"),
                         ({"colour": "red"}, "unknown store fields"),
                         ({"region": "nowhere"}, "not known"),
                         ({"opening_hours": {"mon": ["25:00-26:00"]}}, "HH:MM")]:
        with pytest.raises(ChainError, match=why):
            edit_store(chain, SYSTEM, "A", changes, version=1, now_ms=T)
    assert get_store(chain, SYSTEM, "A")["version"] == 1
    with pytest.raises(ChainError, match="not a store id"):
        create_store(chain, SYSTEM, "bad id;", "x", now_ms=T)
    with pytest.raises(ChainError, match="exists already"):
        create_store(chain, SYSTEM, "A", "again", now_ms=T)


def test_injection_strings_are_stored_verbatim(chain):
    for i, text in enumerate(INJECTIONS):
        create_store(chain, SYSTEM, f"X{i}", text, address=text, now_ms=T)
        got = get_store(chain, SYSTEM, f"X{i}")
        assert got["name"] == text and got["address"] == text
    assert len(list_stores(chain, SYSTEM, limit=200).items) == 3 + len(INJECTIONS)


def test_two_operators_editing_one_store_the_second_gets_a_conflict_with_what_changed(chain):
    seen = get_store(chain, SYSTEM, "A")
    edit_store(chain, SYSTEM, "A", {"name": "东区旗舰店"}, version=seen["version"], now_ms=T + 1)
    with pytest.raises(EditConflict) as conflict:
        edit_store(chain, SYSTEM, "A", {"phone": "021-0000 0000"}, version=seen["version"],
                   based_on=seen, now_ms=T + 2)
    assert conflict.value.changed == ["name"]
    assert conflict.value.current["name"] == "东区旗舰店"
    assert get_store(chain, SYSTEM, "A")["phone"] == "021-5555 0100"  # nothing applied


def test_a_store_manager_sees_only_their_store(chain):
    a = manager("A")
    assert [s["store_id"] for s in list_stores(chain, a).items] == ["A"]
    assert [r["region_id"] for r in list_regions(chain, a)] == ["east"]
    for store in ("B", "NOSUCH"):  # another store's and a missing one: the same answer
        with pytest.raises((NotVisible, ChainNotFound)):
            get_store(chain, a, store)
    with pytest.raises(Forbidden):  # a store manager cannot change stores
        edit_store(chain, a, "A", {"phone": "021-1111 1111"}, version=1, now_ms=T)


def test_a_region_manager_manages_the_stores_of_their_region_only(chain):
    east = region_manager("east")
    assert [s["store_id"] for s in list_stores(chain, east).items] == ["A", "A2"]
    create_store(chain, east, "A3", "东区三店", region="east", now_ms=T)
    with pytest.raises(NotVisible):
        create_store(chain, east, "B2", "西区二店", region="west", now_ms=T)
    with pytest.raises(NotVisible):
        edit_store(chain, east, "B", {"name": "mine now"}, version=1, now_ms=T)
    with pytest.raises(NotVisible):  # moving a store out of one's region
        edit_store(chain, east, "A", {"region": "west"}, version=1, now_ms=T)
    with pytest.raises(Forbidden):  # regions are the chain's
        create_region(chain, east, "north", "华北", T)
    assert get_store(chain, SYSTEM, "A")["region"] == "east"


def test_store_lists_page_by_cursor_and_filter(chain):
    for i in range(7):
        create_store(chain, SYSTEM, f"P{i}", f"store {i}", region="west", now_ms=T)
    seen, cursor = [], None
    while True:
        page = list_stores(chain, SYSTEM, region="west", cursor=cursor, limit=3)
        seen += [s["store_id"] for s in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["B"] + [f"P{i}" for i in range(7)]
    with pytest.raises(BadCursor):
        list_stores(chain, SYSTEM, cursor="not-a-cursor")


def test_terminals_and_tokens_only_for_stores_hq_knows_and_keeps_open(chain):
    with pytest.raises(RegistryError, match="not known at HQ"):
        add_device(chain, "gate-01", Till("gate-01", "GHOST").public_key_hex, "GHOST")
    with pytest.raises(EnrolmentError) as refused:
        create_token(chain, "GHOST", "gate", "test", now_ms=T)
    assert refused.value.code == "unknown_store"
    till = Till("gate-01", "A2")
    add_device(chain, "gate-01", till.public_key_hex, "A2", "gate")
    assert get_store(chain, SYSTEM, "A2")["terminals"] == [
        {"device_id": "gate-01", "role": "gate", "status": "active"}]
    with pytest.raises(ChainError, match="active terminals"):
        close_store(chain, SYSTEM, "A2", version=1, now_ms=T)
    set_status(chain, "gate-01", "revoked")
    closed = close_store(chain, SYSTEM, "A2", version=1, now_ms=T + 5)
    assert closed["status"] == "closed" and closed["closed_at_ms"] == T + 5
    with pytest.raises(EnrolmentError, match="closed"):
        create_token(chain, "A2", "gate", "test", now_ms=T)
    assert [s["store_id"] for s in list_stores(chain, SYSTEM, status="closed").items] == ["A2"]
    assert ("system", "store.close", "A2") in actions(chain)


def test_a_region_with_open_stores_cannot_be_closed(chain):
    with pytest.raises(ChainError, match="open stores"):
        edit_region(chain, SYSTEM, "west", version=1, status="closed", now_ms=T)
    close_store(chain, SYSTEM, "B", version=1, now_ms=T)
    closed = edit_region(chain, SYSTEM, "west", version=1, status="closed", now_ms=T)
    assert closed["status"] == "closed"
    with pytest.raises(ChainError, match="closed"):
        create_store(chain, SYSTEM, "B9", "late", region="west", now_ms=T)
    assert json.loads(json.dumps(list_regions(chain, SYSTEM)))[1]["status"] == "closed"
