"""Every card operation, and every reason a card operation is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.card_ops import (
    OPERATIONS,
    CardNeed,
    CheckoutLine,
    Done,
    add_visits,
    card_operation,
    check_denylist,
    debit,
    issue,
    on_image,
    open_account,
    read_balance,
    recall,
    recharge,
    refund,
    sell_pass,
    take_visit,
)
from protocol.card_state import CardState, Refusal, RefusalReason
from protocol.products import Catalogue, CatalogueError, date_of, day_number
from protocol.record import Operation, check_consistency
from simulators.mifare_classic import MifareClassic1K
from tests.card_world import CATALOGUE, DAY, KEYS, MINUTE, T0, UID, ctx

R = RefusalReason


def done(outcome: Done | Refusal | None) -> Done:
    assert isinstance(outcome, Done), outcome
    for record in outcome.records:
        check_consistency(record)
        record.encode()
        assert record.card_counter == outcome.state.counter
    return outcome


def refused(outcome: Done | Refusal | None, reason: RefusalReason) -> None:
    assert isinstance(outcome, Refusal), outcome
    assert outcome.reason is reason, outcome


def issued(product: str = "gold", *, now: int = T0) -> CardState:
    return done(issue(None, card_id="M00001", card_product=product, catalogue=CATALOGUE,
                      ctx=ctx(now))).state


def funded(amount: int = 100_000) -> CardState:
    return done(open_account(issued(), amount, catalogue=CATALOGUE, ctx=ctx())).state


def test_issue_writes_number_product_expiry_and_included_pass() -> None:
    d = done(issue(None, card_id="M00001", card_product="gold", catalogue=CATALOGUE, ctx=ctx()))
    s = d.state
    assert (s.card_id, s.card_product, s.counter, s.chain_id) == ("M00001", "gold", 1, 7)
    assert date_of(s.issued_day).isoformat() == "2024-06-01"
    assert date_of(s.expiry_day).isoformat() == "2027-05-31"
    assert d.record.operation is Operation.ISSUE and d.record.product == "gold"
    annual = issued("annual")
    assert annual.pass_product == "year"
    assert (date_of(annual.pass_from_day).isoformat(), date_of(annual.pass_to_day).isoformat()) == \
        ("2024-06-01", "2025-05-31")
    refused(issue(s, card_id="M2", card_product="gold", catalogue=CATALOGUE, ctx=ctx()),
            R.ALREADY_ISSUED)
    refused(issue(None, card_id="M2", card_product="platinum", catalogue=CATALOGUE, ctx=ctx()),
            R.UNKNOWN_PRODUCT)
    refused(issue(None, card_id="bad id!", card_product="gold", catalogue=CATALOGUE, ctx=ctx()),
            R.NOT_ALLOWED)


def test_open_account_and_recharge_with_bonus_tiers() -> None:
    s = issued()
    refused(recharge(s, 1000, catalogue=CATALOGUE, ctx=ctx()), R.ACCOUNT_NOT_OPEN)
    d = done(open_account(s, 50_000, catalogue=CATALOGUE, ctx=ctx()))
    assert d.state.purse_fen == 52_500 and d.record.bonus_fen == 2_500
    refused(open_account(d.state, 0, catalogue=CATALOGUE, ctx=ctx()), R.ACCOUNT_ALREADY_OPEN)
    r = done(recharge(d.state, 100_000, catalogue=CATALOGUE, ctx=ctx()))
    assert (r.state.purse_fen, r.record.cash_fen, r.record.bonus_fen) == (162_500, 100_000, 10_000)
    r2 = done(recharge(r.state, 49_999, catalogue=CATALOGUE, ctx=ctx()))
    assert r2.record.bonus_fen == 0 and r2.state.counter == r.state.counter + 1
    for bad in (0, -5, 1.5, True, "100"):
        refused(recharge(r.state, bad, catalogue=CATALOGUE, ctx=ctx()), R.BAD_AMOUNT)  # type: ignore[arg-type]
    refused(recharge(r.state, 2**31, catalogue=CATALOGUE, ctx=ctx()), R.LIMIT)
    refused(open_account(issued("swim10"), 100, catalogue=CATALOGUE, ctx=ctx()), R.NOT_ALLOWED)


def test_debit_applies_member_discount_and_reports_the_shortfall() -> None:
    s = funded(10_000)  # purse 10_000
    lines = [CheckoutLine("food", 2_500, 2), CheckoutLine("spa", 9_999), CheckoutLine("shop", 100)]
    d = done(debit(s, lines, catalogue=CATALOGUE, ctx=ctx()))
    # food 5000 * 88% = 4400, spa 9999 * 80% = 7999.2 -> 7999, shop 100 at list price
    assert d.record.extra == {"gross_fen": 15_099, "discount_fen": 2_600, "total_fen": 12_499}
    assert d.state.purse_fen == 0 and d.record.cash_fen == 2_499
    refused(debit(s, lines, catalogue=CATALOGUE, ctx=ctx(), cash_for_shortfall=False),
            R.INSUFFICIENT_BALANCE)
    small = done(debit(s, [CheckoutLine("food", 1_000)], catalogue=CATALOGUE, ctx=ctx(),
                       cash_for_shortfall=False))
    assert small.state.purse_fen == 9_120 and small.record.cash_fen == 0
    refused(debit(s, [], catalogue=CATALOGUE, ctx=ctx()), R.BAD_AMOUNT)
    refused(debit(s, [CheckoutLine("food", -1)], catalogue=CATALOGUE, ctx=ctx()), R.BAD_AMOUNT)


def test_refund_reverses_a_debit_of_this_card_only() -> None:
    s = funded(10_000)
    d = done(debit(s, [CheckoutLine("shop", 12_000)], catalogue=CATALOGUE, ctx=ctx()))
    original = replace(d.record, seq=42)
    r = done(refund(d.state, original, catalogue=CATALOGUE, ctx=ctx()))
    assert r.state.purse_fen == 10_000 and r.record.cash_fen == -2_000
    assert r.record.extra == {"reverses": "gate-01#42"}
    other = replace(original, card_id="M99999")
    refused(refund(d.state, other, catalogue=CATALOGUE, ctx=ctx()), R.NOT_REFUNDABLE)
    recharge_record = done(recharge(s, 100, catalogue=CATALOGUE, ctx=ctx())).record
    refused(refund(d.state, recharge_record, catalogue=CATALOGUE, ctx=ctx()), R.NOT_REFUNDABLE)


def test_add_visits_fills_three_slots_at_most() -> None:
    s = funded(100_000)
    s = done(add_visits(s, "swim", 2, catalogue=CATALOGUE, ctx=ctx())).state
    assert s.visits == {"swim": 20} and s.purse_fen == 110_000
    d = done(add_visits(s, "gym", catalogue=CATALOGUE, ctx=ctx(), pay_from_purse=True))
    assert d.state.purse_fen == 80_000 and d.record.cash_fen == 0
    s = done(add_visits(d.state, "sauna", catalogue=CATALOGUE, ctx=ctx())).state
    refused(add_visits(s, "yoga", catalogue=CATALOGUE, ctx=ctx()), R.NO_FREE_SLOT)
    refused(add_visits(s, "golf", catalogue=CATALOGUE, ctx=ctx()), R.UNKNOWN_PRODUCT)
    refused(add_visits(s, "swim", 0, catalogue=CATALOGUE, ctx=ctx()), R.BAD_AMOUNT)
    nearly_full = replace(s, visits={**s.visits, "swim": 65_530})
    refused(add_visits(nearly_full, "swim", catalogue=CATALOGUE, ctx=ctx()), R.LIMIT)
    refused(add_visits(s, "yoga", catalogue=CATALOGUE, ctx=ctx(), pay_from_purse=True), R.NO_FREE_SLOT)
    freed = done(add_visits(replace(s, visits={**s.visits, "gym": 0}), "yoga", catalogue=CATALOGUE,
                            ctx=ctx()))
    assert freed.state.visits == {"swim": 20, "sauna": 5, "yoga": 8}
    refused(add_visits(issued("swim10"), "gym", catalogue=CATALOGUE, ctx=ctx()), R.NOT_ALLOWED)
    poor = done(open_account(issued(), 0, catalogue=CATALOGUE, ctx=ctx())).state
    refused(add_visits(poor, "gym", catalogue=CATALOGUE, ctx=ctx(), pay_from_purse=True),
            R.INSUFFICIENT_BALANCE)


def test_take_visit_counts_down_and_refuses_when_exhausted() -> None:
    s = done(add_visits(issued("swim10"), "swim", catalogue=CATALOGUE, ctx=ctx())).state
    d = done(take_visit(s, catalogue=CATALOGUE, ctx=ctx()))
    assert d.state.visits == {"swim": 9} and d.record.visits_before == 10
    assert (d.state.last_use_day, d.state.last_use_minute, d.state.uses_today) == \
        (day_number(date_of(8918)), 600, 1)
    empty = replace(s, visits={"swim": 0})
    refused(take_visit(empty, catalogue=CATALOGUE, ctx=ctx()), R.EXHAUSTED)
    refused(take_visit(s, catalogue=CATALOGUE, ctx=ctx(accepts=("gym",))), R.EXHAUSTED)


def test_daily_limit_resets_the_next_day() -> None:
    s = done(add_visits(issued("swim10"), "swim", catalogue=CATALOGUE, ctx=ctx())).state
    for i in range(2):
        s = done(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 + i * 60 * MINUTE))).state
    refused(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 + 3 * 60 * MINUTE)), R.DAILY_LIMIT)
    tomorrow = done(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 + DAY)))
    assert tomorrow.state.uses_today == 1 and tomorrow.state.visits == {"swim": 7}


def test_free_tickets_per_day() -> None:
    s = issued("guest")
    for _ in range(2):
        d = done(take_visit(s, catalogue=CATALOGUE, ctx=ctx()))
        assert d.record.product == "guest" and d.record.visits_after == d.record.visits_before
        s = d.state
    refused(take_visit(s, catalogue=CATALOGUE, ctx=ctx()), R.DAILY_LIMIT)
    done(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 + DAY)))


def test_anti_passback_per_gate_group() -> None:
    s = done(add_visits(funded(), "swim", catalogue=CATALOGUE, ctx=ctx())).state
    s = done(take_visit(s, catalogue=CATALOGUE, ctx=ctx(gate_group=1))).state
    refused(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 + 9 * MINUTE, gate_group=1)),
            R.ANTI_PASSBACK)
    done(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 + 9 * MINUTE, gate_group=2)))
    done(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 + 10 * MINUTE, gate_group=1)))


def test_time_pass_validity_and_renewal() -> None:
    s = issued("annual")
    d = done(take_visit(s, catalogue=CATALOGUE, ctx=ctx()))
    assert d.record.product == "year" and d.state.visits == {}
    refused(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 - DAY)), R.NOT_YET_VALID)
    refused(take_visit(s, catalogue=CATALOGUE, ctx=ctx(T0 + 366 * DAY)), R.EXPIRED)
    renewed = done(sell_pass(s, "year", catalogue=CATALOGUE, ctx=ctx(T0 + 300 * DAY)))
    assert date_of(renewed.state.pass_to_day).isoformat() == "2026-05-31"
    assert renewed.record.operation is Operation.SELL_PASS and renewed.record.cash_fen == 300_000
    refused(sell_pass(s, "month", catalogue=CATALOGUE, ctx=ctx()), R.NOT_ALLOWED)
    g = done(sell_pass(funded(400_000), "month", catalogue=CATALOGUE, ctx=ctx(), pay_from_purse=True))
    assert g.state.purse_fen == 410_000 - 30_000
    assert date_of(g.state.pass_to_day).isoformat() == "2024-06-30"


def test_expired_card_is_refused() -> None:
    s = done(add_visits(issued(), "swim", catalogue=CATALOGUE, ctx=ctx())).state
    later = ctx(T0 + 3 * 366 * DAY)
    refused(take_visit(s, catalogue=CATALOGUE, ctx=later), R.EXPIRED)
    refused(open_account(s, 1, catalogue=CATALOGUE, ctx=later), R.EXPIRED)


def test_wrong_chain_and_unknown_format_are_refused() -> None:
    s = funded()
    refused(take_visit(replace(s, chain_id=8), catalogue=CATALOGUE, ctx=ctx()), R.WRONG_CHAIN)
    refused(recharge(replace(s, format_version=2), 100, catalogue=CATALOGUE, ctx=ctx()),
            R.UNKNOWN_FORMAT)


def test_denylisted_card_is_refused_and_blocked_on_the_card() -> None:
    s = done(add_visits(funded(), "swim", catalogue=CATALOGUE, ctx=ctx())).state
    assert check_denylist(s, {"M00002"}, ctx=ctx()) is None
    d = done(check_denylist(s, {"M00001"}, ctx=ctx()))
    assert d.state.blocked and d.record.operation is Operation.BLOCK
    assert d.refusal is not None and d.refusal.reason is R.DENYLISTED
    refused(check_denylist(d.state, {"M00001"}, ctx=ctx()), R.DENYLISTED)
    refused(take_visit(d.state, catalogue=CATALOGUE, ctx=ctx()), R.BLOCKED)
    refused(recharge(d.state, 100, catalogue=CATALOGUE, ctx=ctx()), R.BLOCKED)


def test_recall_empties_the_card_and_it_can_be_issued_again() -> None:
    s = done(add_visits(funded(), "swim", catalogue=CATALOGUE, ctx=ctx())).state
    s = done(add_visits(s, "gym", catalogue=CATALOGUE, ctx=ctx())).state
    d = done(recall(s, catalogue=CATALOGUE, ctx=ctx()))
    assert d.state.recalled and d.state.purse_fen == 0 and d.state.visits == {}
    assert [(r.product, r.purse_before, r.cash_fen, r.visits_before) for r in d.records] == \
        [("", 110_000, -110_000, 0), ("swim", 0, 0, 10), ("gym", 0, 0, 12)]
    refused(take_visit(d.state, catalogue=CATALOGUE, ctx=ctx()), R.RECALLED)
    refused(recall(d.state, catalogue=CATALOGUE, ctx=ctx()), R.RECALLED)
    again = done(issue(d.state, card_id="M00077", card_product="guest", catalogue=CATALOGUE,
                       ctx=ctx()))
    assert again.state.counter == d.state.counter + 1 and not again.state.recalled
    kept = done(recall(s, catalogue=CATALOGUE, ctx=ctx(), pay_out=False))
    assert kept.record.cash_fen == 0


def test_operations_on_whole_images() -> None:
    image = MifareClassic1K.blank(UID).to_mfd()
    r = on_image(image, issue, keys=KEYS, catalogue=CATALOGUE, card_id="M00001",
                 card_product="gold", ctx=ctx())
    assert not isinstance(r, Refusal)
    r = on_image(r.image, open_account, 5_000, keys=KEYS, catalogue=CATALOGUE, ctx=ctx())
    assert not isinstance(r, Refusal) and r.done.state.purse_fen == 5_000
    refused(on_image(r.image, issue, keys=KEYS, catalogue=CATALOGUE, card_id="M2",
                     card_product="gold", ctx=ctx()), R.ALREADY_ISSUED)
    refused(on_image(image, take_visit, keys=KEYS, catalogue=CATALOGUE, ctx=ctx()), R.NOT_ONECARD)
    r2 = on_image(r.image, recall, keys=KEYS, catalogue=CATALOGUE, ctx=ctx())
    assert not isinstance(r2, Refusal) and r2.done.state.recalled


def test_every_operation_is_in_the_table_and_takes_catalogue_and_ctx() -> None:
    s = funded()
    for name, op in OPERATIONS.items():
        assert card_operation(name) is op and card_operation(op.run) is op
        if op.needs is CardNeed.BLANK_OR_RECALLED:
            continue
        args = {"recharge": (100,), "open_account": (0,), "add_visits": ("swim",),
                "sell_pass": ("month",), "debit": ([CheckoutLine("food", 100)],)}.get(name, ())
        if name == "refund":
            paid = done(debit(s, [CheckoutLine("food", 100)], catalogue=CATALOGUE, ctx=ctx()))
            s, args = paid.state, (paid.record,)
        op.run(s, *args, catalogue=CATALOGUE, ctx=ctx())  # one signature for all
    with pytest.raises(ValueError):
        card_operation(check_denylist)  # the step before every operation, not one itself


def test_reading_the_balance_writes_and_records_nothing() -> None:
    s = funded()
    d = done(read_balance(s, catalogue=CATALOGUE, ctx=ctx()))
    assert d.state is s and d.records == () and not OPERATIONS["read_balance"].writes
    image = MifareClassic1K.blank(UID).to_mfd()
    r = on_image(image, "issue", keys=KEYS, catalogue=CATALOGUE, card_id="M00001",
                 card_product="gold", ctx=ctx())
    assert not isinstance(r, Refusal)
    shown = on_image(r.image, read_balance, keys=KEYS, catalogue=CATALOGUE, ctx=ctx())
    assert not isinstance(shown, Refusal) and shown.image == r.image


def test_catalogue_round_trips_through_json_and_refuses_nonsense() -> None:
    assert Catalogue.from_dict(CATALOGUE.to_dict()) == CATALOGUE
    bad = CATALOGUE.to_dict()
    bad["count_products"][1]["code"] = 10
    with pytest.raises(CatalogueError):
        Catalogue.from_dict(bad)
    with pytest.raises(CatalogueError):
        Catalogue.from_dict({"passes": [{"code": 1, "name": "x", "price_fen": 1, "length": "week"}]})
    with pytest.raises(CatalogueError):
        Catalogue.from_dict({"count_products": [{"code": 1}]})
