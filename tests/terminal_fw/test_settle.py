"""The settling rules, as pure functions: an unfinished card write and what it comes to.

No disk, no card, no clock: an intent, the card's state now and the time go in, the
action comes out (:mod:`terminal_fw.tap.settle`). The carrying out is tested with real
stores and cards in ``test_tap_path.py``, ``test_card_gate.py`` and the crash tests.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.card_ops import take_visit
from protocol.card_state import CardState
from protocol.record import Flag
from terminal_fw.tap.journal import Intent, Status
from terminal_fw.tap.settle import (
    SERVE_GRACE_S,
    Settlement,
    Then,
    settle,
    settle_at_start,
    settle_unseen,
)
from tests.card_world import CATALOGUE, T0, ctx

BEFORE = CardState(card_id="M00001", chain_id=7, card_product="gold", counter=3,
                   visits={"swim": 10})
DONE = take_visit(BEFORE, catalogue=CATALOGUE, ctx=ctx())
AFTER = DONE.state  # type: ignore[union-attr]
ELSEWHERE = replace(AFTER, counter=AFTER.counter + 1, visits={"swim": 8})
GRACE_MS = SERVE_GRACE_S * 1000


def intent(status: Status, *, serve: bool = True) -> Intent:
    return Intent("i1", b"\x11\x22\x33\x44", "take_visit", serve, 0, BEFORE, AFTER,
                  DONE.records, status, T0)  # type: ignore[union-attr]


READBACK = int(Flag.CONFIRMED_ON_READBACK)


def test_a_landed_paid_entry_is_recorded_and_the_member_let_in_free() -> None:
    """Its write's own answer was lost: the records say it was confirmed by reading the
    card back, since another terminal's identical write would read the same (seed
    1000256 of the simulator)."""
    assert settle(intent(Status.OPEN), AFTER, T0 + 1000) == \
        Settlement(Status.COMMITTED, sign=True, flags=READBACK, then=Then.SERVE)


def test_a_landed_write_that_serves_nobody_is_recorded_and_ends_the_tap() -> None:
    assert settle(intent(Status.OPEN, serve=False), AFTER, T0 + 1000) == \
        Settlement(Status.DONE, sign=True, flags=READBACK, then=Then.COMPLETED)


def test_a_write_that_never_landed_is_abandoned_and_the_tap_goes_on() -> None:
    assert settle(intent(Status.OPEN), BEFORE, T0) == Settlement(Status.ABANDONED)


def test_a_card_used_elsewhere_meanwhile_goes_to_hq_flagged_with_three_states() -> None:
    action = settle(intent(Status.OPEN), ELSEWHERE, T0)
    assert action.status is Status.REPORTED and action.sign and action.then is Then.GO_ON
    assert action.flags == int(Flag.UNCONFIRMED_CARD_WRITE)
    states = action.extra["unconfirmed"]  # type: ignore[index]
    assert (states["card_before"]["counter"], states["card_after"]["counter"],
            states["card_now"]["counter"]) == (3, 4, 5)


def test_a_blank_card_now_is_neither_landed_nor_unchanged() -> None:
    assert settle(intent(Status.OPEN), None, T0).status is Status.REPORTED


def test_records_never_signed_before_the_cut_are_signed_now() -> None:
    assert settle(intent(Status.WRITTEN), AFTER, T0) == \
        Settlement(Status.COMMITTED, sign=True, then=Then.SERVE)
    assert settle(intent(Status.WRITTEN), AFTER, T0 + GRACE_MS) == \
        Settlement(Status.DONE, sign=True)
    assert settle(intent(Status.WRITTEN, serve=False), AFTER, T0) == \
        Settlement(Status.DONE, sign=True)


def test_a_paid_entry_whose_gate_never_opened_is_honoured_only_within_the_grace() -> None:
    assert settle(intent(Status.COMMITTED), AFTER, T0 + GRACE_MS - 1) == Settlement(then=Then.SERVE)
    assert settle(intent(Status.COMMITTED), AFTER, T0 + GRACE_MS) == Settlement(Status.DONE)
    assert settle(intent(Status.COMMITTED), ELSEWHERE, T0) == Settlement(Status.DONE)


def test_a_reported_write_is_closed_by_what_the_card_shows() -> None:
    assert settle(intent(Status.REPORTED), AFTER, T0) == Settlement(Status.DONE)
    assert settle(intent(Status.REPORTED), ELSEWHERE, T0) == Settlement(Status.DONE)
    assert settle(intent(Status.REPORTED), BEFORE, T0) == \
        Settlement(Status.REPORTED_NOT_LANDED)


@pytest.mark.parametrize("status", [Status.DONE, Status.ABANDONED, Status.REPORTED_NOT_LANDED])
def test_settled_intents_are_left_alone(status: Status) -> None:
    assert settle(intent(status), AFTER, T0) == Settlement()


def test_at_start_a_confirmed_card_write_gets_its_records_once() -> None:
    assert settle_at_start(intent(Status.WRITTEN), records_in_outbox=False) == \
        Settlement(Status.COMMITTED, sign=True)
    assert settle_at_start(intent(Status.WRITTEN, serve=False), records_in_outbox=False) == \
        Settlement(Status.DONE, sign=True)
    for status in (Status.OPEN, Status.WRITTEN):  # an older terminal signed them already
        assert settle_at_start(intent(status), records_in_outbox=True) == \
            Settlement(Status.COMMITTED)
    assert settle_at_start(intent(Status.OPEN), records_in_outbox=False) == Settlement()


def test_a_card_that_stays_away_is_reported_after_the_configured_wait() -> None:
    wait = 900_000
    assert settle_unseen(intent(Status.OPEN), T0 + wait - 1, wait) == Settlement()
    action = settle_unseen(intent(Status.OPEN), T0 + wait, wait)
    assert action.status is Status.REPORTED and action.sign
    assert "card_now" not in action.extra["unconfirmed"]  # type: ignore[index]
    short = 60_000
    assert settle_unseen(intent(Status.COMMITTED), T0 + GRACE_MS, short) == Settlement()
    assert settle_unseen(intent(Status.COMMITTED), T0 + GRACE_MS + 1, short) == \
        Settlement(Status.DONE)
