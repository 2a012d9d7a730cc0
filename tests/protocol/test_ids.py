"""One id grammar, and ledger account names that cannot collide whatever the ids.

Hole 6 of issue #11: ids were joined with ``:`` into account names and could hold ``:``
themselves, so a product named ``swim:unbacked`` made an account with no floor and a
card named ``K1:visits:q`` collided with another card's account.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hq_server.devices.registry import RegistryError, add_device
from hq_server.ledger.accounts import (
    CHART,
    UnknownAccount,
    account_name,
    account_rule,
    parse_account,
)
from hq_server.ledger.postings import postings_for
from protocol.ids import ID_PATTERN, MAX_PRODUCT, is_card_id, is_id, is_product_name
from protocol.products import Catalogue, CatalogueError, CountProduct
from protocol.record import Operation, RecordRejected, TransactionRecord

ids = st.from_regex(ID_PATTERN, fullmatch=True)
products = ids.filter(lambda p: len(p) <= MAX_PRODUCT)
kinds = st.sampled_from(sorted(CHART))


@st.composite
def accounts(draw) -> tuple[str, str, str, str]:
    family, kind = draw(kinds)
    product = draw(products) if CHART[(family, kind)][1] else ""
    return family, draw(ids), kind, product


@settings(max_examples=2000, deadline=None)
@given(accounts(), accounts())
def test_distinct_accounts_have_distinct_names(a, b):
    name_a, name_b = account_name(*a), account_name(*b)
    assert (name_a == name_b) == (a == b)


@settings(max_examples=1000, deadline=None)
@given(accounts())
def test_every_account_is_classified_by_its_kind_alone(parts):
    family, owner, kind, product = parts
    name = account_name(*parts)
    parsed = parse_account(name)
    assert (parsed.family, parsed.owner, parsed.kind, parsed.product) == parts
    assert account_rule(name) == CHART[(family, kind)][0]


@pytest.mark.parametrize("product", ["unbacked", "unbacked_points", "purse", "cash"])
def test_a_product_named_like_an_account_kind_keeps_its_floor(product):
    assert account_rule(f"card:K1:visits:{product}").credit_floor
    assert account_rule(account_name("card", "unbacked", "visits", product)).credit_floor


@pytest.mark.parametrize("name", [
    "card:K1:visits:swim:unbacked", "card:K1:visits:q:purse", "card:K1:purse:x",
    "card:K1:visits", "store:S1:revenue", "card::purse", "card:K 1:purse", "bank:K1:purse",
    "card:K1:cash", "store:S1:purse", "card:K1:visits:" + "p" * 33,
])
def test_names_outside_the_chart_are_refused(name):
    with pytest.raises(UnknownAccount):
        account_rule(name)


@settings(max_examples=500, deadline=None)
@given(card=ids, store=ids, product=products,
       op=st.sampled_from([Operation.ADD_VISITS, Operation.TAKE_VISIT, Operation.DEBIT]))
def test_every_posted_account_names_its_records_card_store_and_product(card, store, product, op):
    r = TransactionRecord(device_id="d1", seq=1, prev_hash=bytes(32), device_time_ms=0,
                          card_id=card, operation=op, store=store, product=product,
                          purse_before=500, purse_after=400 if op == Operation.DEBIT else 500,
                          visits_before=3, visits_after={Operation.ADD_VISITS: 13,
                                                         Operation.TAKE_VISIT: 2}.get(op, 3),
                          cash_fen=100 if op == Operation.ADD_VISITS else 0)
    r.encode()  # a record the codec accepts
    for entry in postings_for(r, {}):
        parsed = parse_account(entry.account)
        assert parsed.owner == (card if parsed.family == "card" else store)
        assert parsed.product in ("", product, "general")


@pytest.mark.parametrize("bad", ["swim:unbacked", "K1:visits:q", "a#1", "a/b", "a+b", "$SYS",
                                 "", "-x", ".", "..", "a b", "é", "x" * 65])
def test_the_grammar_refuses_separators_and_oddities(bad):
    assert not is_id(bad)


@pytest.mark.parametrize("good", ["K1", "gate-01", "store_7", "S1.north", "0", "A" * 64])
def test_the_grammar_accepts_ordinary_ids(good):
    assert is_id(good)


def test_every_kind_of_id_uses_the_grammar(sqlite_url):
    from hq_server.db.engine import open_engine

    with pytest.raises(CatalogueError):
        Catalogue(count_products=(CountProduct(1, "swim:unbacked", 100, 10),))
    assert not is_product_name("p" * 33) and not is_card_id("K" * 17)
    for field, value in (("card_id", "K1:visits:q"), ("product", "swim:unbacked"),
                         ("store", "S1:cash"), ("device_id", "gate:1")):
        kw = dict(device_id="d1", seq=1, prev_hash=bytes(32), device_time_ms=0, card_id="K1",
                  operation=Operation.TAKE_VISIT, store="S1")
        with pytest.raises(RecordRejected):
            TransactionRecord(**{**kw, field: value}).encode()
    engine = open_engine(sqlite_url)
    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    with pytest.raises(RegistryError):
        add_device(engine, "gate:1", key, "S1", "gate")
    with pytest.raises(RegistryError):
        add_device(engine, "gate-1", key, "S1:north", "gate")
    add_device(engine, "gate-1", key, "S1", "gate")
