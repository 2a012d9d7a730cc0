"""The card registry, kept current from the signed records HQ ingests, and read in scope."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from hq_server.api.common import EditConflict
from hq_server.cards.errors import CardError, CardNotFound
from hq_server.cards.registry import (
    cards_of_member,
    get_card,
    link_card_to_member,
    list_cards,
    register_card,
)
from hq_server.cards.rules import STATES, CardEntry, follow_record
from hq_server.db.tables import audit_log, card_history
from hq_server.devices.denylist import DenylistError, add_to_denylist, remove_from_denylist
from hq_server.ingest.batch import ingest_all
from hq_server.operators.access import SYSTEM, Actor, Level, NotVisible, Scope
from hq_server.reconciliation.runs import reconcile_card_in_db
from protocol.record import Operation, TransactionRecord
from tests.hq_records import STORES, Card, Till, debit, known_store, recharge, store_engine

T = 1_764_633_600_000


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def cashier(store: str) -> Actor:
    return Actor(f"cashier-{store}", "cashier", Scope(Level.STORE, store))


def issue(till: Till, card: Card, product: str = "swim-card"):
    card.counter += 1
    return till.sign(card.card_id, Operation.ISSUE, product=product, card_counter=card.counter)


def open_account(till: Till, card: Card, cash: int):
    card.counter += 1
    before, card.purse = card.purse, card.purse + cash
    return till.sign(card.card_id, Operation.OPEN_ACCOUNT, purse_before=before,
                     purse_after=card.purse, cash_fen=cash, card_counter=card.counter)


def ingest(engine, till: Till, *signed) -> None:
    result = ingest_all(engine, [till.message(s) for s in signed])
    assert result.posted == len(signed), result


@pytest.fixture
def stores(engine):
    known_store(engine, "A", region="east")
    known_store(engine, "B", region="west")
    return Till("desk-a", "A").register(engine), Till("desk-b", "B").register(engine)


def test_ingested_records_issue_open_and_recall_cards_with_history(engine, stores):
    a, _ = stores
    m1 = Card("M1")
    ingest(engine, a, issue(a, m1))
    assert get_card(engine, SYSTEM, "M1")["state"] == "issued"
    ingest(engine, a, open_account(a, m1, 10_000), recharge(a, m1, 5_000), debit(a, m1, 300))
    card = get_card(engine, SYSTEM, "M1")
    assert (card["state"], card["product"], card["issuing_store"]) == ("open", "swim-card", "A")
    assert [(h["event"], h["state_before"], h["state_after"]) for h in card["history"]] == [
        ("opened", "issued", "open"), ("issued", None, "issued")]
    assert card["history"][1]["source"] == "record desk-a#1"
    assert [r["card_counter"] for r in card["last_records"]] == [4, 3, 2, 1]
    m1.counter += 1
    ingest(engine, a, a.sign("M1", Operation.RECALL, card_counter=m1.counter))
    assert get_card(engine, SYSTEM, "M1")["state"] == "recalled"


def test_a_card_first_seen_in_use_is_registered_open_at_that_store(engine, stores):
    _, b = stores
    ingest(engine, b, recharge(b, Card("OLD-7"), 2_000))
    card = get_card(engine, SYSTEM, "OLD-7")
    assert (card["state"], card["issuing_store"]) == ("open", "B")
    assert card["history"][0]["event"] == "first_seen"


def test_a_batch_of_many_cards_in_one_go_and_replayed_records_change_nothing(engine, stores):
    a, _ = stores
    cards = [Card(f"C{i:04d}") for i in range(300)]
    signed = [issue(a, c) for c in cards] + [open_account(a, c, 100) for c in cards]
    ingest(engine, a, *signed)
    assert len(list_cards(engine, SYSTEM, state="open", limit=200).items) == 200
    with engine.connect() as conn:
        rows = conn.execute(select(card_history.c.id)).all()
    assert len(rows) == 600
    again = ingest_all(engine, [a.message(s) for s in signed])  # duplicates
    assert again.duplicates == 600
    with engine.connect() as conn:
        assert len(conn.execute(select(card_history.c.id)).all()) == 600


def test_denylisting_a_card_marks_it_lost_and_taking_it_off_restores_it(engine, stores):
    a, _ = stores
    m = Card("M2")
    ingest(engine, a, issue(a, m), open_account(a, m, 1_000))
    add_to_denylist(engine, "M2", "reported lost")
    assert get_card(engine, SYSTEM, "M2")["state"] == "lost"
    ingest(engine, a, recharge(a, m, 100))  # a late use does not reopen a lost card
    assert get_card(engine, SYSTEM, "M2")["state"] == "lost"
    remove_from_denylist(engine, "M2", "found by the member")
    card = get_card(engine, SYSTEM, "M2")
    assert card["state"] == "open"
    assert [h["event"] for h in card["history"][:2]] == ["found", "lost"]


def test_operations_on_cards_hq_does_not_know_are_refused_with_a_reason(engine, stores):
    with pytest.raises(DenylistError, match="no card 'GHOST-CARD' at HQ"):
        add_to_denylist(engine, "GHOST-CARD", "reported lost")
    with pytest.raises(CardNotFound, match="no card 'NOSUCH' at HQ"):
        reconcile_card_in_db(engine, "NOSUCH")
    with pytest.raises(CardNotFound):
        get_card(engine, SYSTEM, "NOSUCH")
    with engine.begin() as conn, pytest.raises(CardNotFound):
        link_card_to_member(conn, SYSTEM, "NOSUCH", "K1", T)


def test_a_cashier_of_a_cannot_see_or_link_the_cards_of_b(engine, stores):
    a, b = stores
    ingest(engine, a, recharge(a, Card("CA"), 100))
    ingest(engine, b, recharge(b, Card("CB"), 100))
    assert [c["card_id"] for c in list_cards(engine, cashier("A")).items] == ["CA"]
    west = Actor("rm", "region_manager", Scope(Level.REGION, "west"))
    assert [c["card_id"] for c in list_cards(engine, west).items] == ["CB"]
    for card_id in ("CB", "NOSUCH"):  # both answered "not found" by the API
        with pytest.raises((NotVisible, CardNotFound)):
            get_card(engine, cashier("A"), card_id)
    with engine.begin() as conn, pytest.raises(NotVisible):
        link_card_to_member(conn, cashier("A"), "CB", "K1", T)


def test_members_get_cards_through_the_registry_with_versions_and_audit(engine, stores):
    a, _ = stores
    ingest(engine, a, recharge(a, Card("CA"), 100), recharge(a, Card("CC"), 100))
    with engine.begin() as conn:
        linked = link_card_to_member(conn, cashier("A"), "CA", "K1", T, version=1)
        link_card_to_member(conn, cashier("A"), "CC", "K1", T)
        assert [c["card_id"] for c in cards_of_member(conn, cashier("A"), "K1")] == ["CA", "CC"]
        assert cards_of_member(conn, cashier("B"), "K1") == []
    assert linked["member_id"] == "K1" and linked["version"] == 2
    with engine.begin() as conn, pytest.raises(EditConflict) as conflict:
        link_card_to_member(conn, cashier("A"), "CA", "K2", T, version=1)
    assert conflict.value.current["member_id"] == "K1"
    assert [c["card_id"] for c in list_cards(engine, SYSTEM, member="K1").items] == ["CA", "CC"]
    with engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.action, audit_log.c.target_id)
                               .order_by(audit_log.c.seq)).all()
    assert [tuple(r) for r in audited][-2:] == [("card.link", "CA"), ("card.link", "CC")]


INJECTIONS = ["'; DROP TABLE cards;--", "<script>alert(1)</script>", "Robert'); --"]


def test_blank_cards_taken_into_stock_and_bad_ids_refused(engine, stores):
    card = register_card(engine, cashier("A"), "B0001", store="A", product="swim-card",
                         uids=["04 a1 b2 c3"], now_ms=T)
    assert (card["state"], card["uids"]) == ("blank", ["04A1B2C3"])
    a, _ = stores
    ingest(engine, a, issue(a, Card("B0001")))
    assert get_card(engine, SYSTEM, "B0001")["state"] == "issued"
    with pytest.raises(CardError, match="belongs to card B0001"):
        register_card(engine, SYSTEM, "B0002", store="A", uids=["04A1B2C3"], now_ms=T)
    with pytest.raises(NotVisible):
        register_card(engine, cashier("A"), "B0003", store="B", now_ms=T)
    for text in INJECTIONS:
        with pytest.raises(CardError, match="not a card id"):
            register_card(engine, SYSTEM, text, store="A", now_ms=T)
        with engine.begin() as conn, pytest.raises(CardError, match="not a member id"):
            link_card_to_member(conn, SYSTEM, "B0001", text, T)
    with pytest.raises(CardError, match="state must be one of"):
        list_cards(engine, SYSTEM, state="'; --")


OPS = st.sampled_from(list(Operation))


@given(state=st.one_of(st.none(), st.sampled_from(STATES)), op=OPS)
def test_a_record_never_reopens_a_card_taken_out_of_service(state, op):
    entry = None if state is None else CardEntry("M1", state, "p", "A")
    record = TransactionRecord(device_id="d", seq=1, prev_hash=bytes(32), device_time_ms=1,
                               card_id="M1", operation=op, store="B", product="x")
    moved = follow_record(entry, record)
    if moved is None:
        return
    after, _ = moved
    assert after.state in STATES and after.card_id == "M1"
    if state in ("lost", "blocked", "frozen", "replaced") and op not in (
            Operation.RECALL, Operation.BLOCK):
        pytest.fail(f"{op.name} moved a {state} card to {after.state}")
    if op is Operation.UID_VISIT:
        pytest.fail("a UID credential is not a card")
