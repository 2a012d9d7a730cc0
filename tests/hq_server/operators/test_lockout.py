"""Back-off and lock-out rules after failed sign-ins (pure: no database, no clock)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hq_server.operators import lockout
from hq_server.operators.lockout import (
    ADDRESS,
    MINUTE,
    OPERATOR,
    SECOND,
    STAFF_CARD,
    Throttle,
    after_failure,
    wait_ms,
)


def fail(times: int, policy, start: int = 0, gap: int = 0) -> tuple[Throttle, int, list[bool]]:
    state, now, locks = Throttle(), start, []
    for _ in range(times):
        state, locked = after_failure(state, now, policy)
        locks.append(locked)
        now += gap
    return state, now, locks


def test_two_wrong_passwords_cost_nothing_the_third_starts_the_back_off():
    state, _, _ = fail(2, OPERATOR)
    assert wait_ms(state, 0, OPERATOR) == 0
    state, _ = after_failure(state, 0, OPERATOR)
    assert wait_ms(state, 0, OPERATOR) == 1 * SECOND
    state, _ = after_failure(state, 1 * SECOND, OPERATOR)
    assert wait_ms(state, 1 * SECOND, OPERATOR) == 2 * SECOND


def test_the_tenth_failure_locks_an_operator_for_thirty_minutes():
    state, _, locks = fail(10, OPERATOR, gap=60 * SECOND)
    assert locks == [False] * 9 + [True]
    last = state.last_failure_at_ms
    assert wait_ms(state, last, OPERATOR) == 30 * MINUTE
    assert wait_ms(state, last + 30 * MINUTE - 1, OPERATOR) == 1
    assert wait_ms(state, last + 30 * MINUTE, OPERATOR) == 0  # unlocked by time
    assert lockout.current(state, last + 30 * MINUTE, OPERATOR) == Throttle()


def test_an_address_is_blocked_after_thirty_failures_within_fifteen_minutes():
    state, now, locks = fail(30, ADDRESS, gap=10 * SECOND)
    assert locks[-1] and not any(locks[:-1])
    assert wait_ms(state, now, ADDRESS) > 0
    spread, now, locks = fail(30, ADDRESS, gap=MINUTE)  # 30 in 29 minutes: never 30 in 15
    assert not any(locks)


def test_five_wrong_pins_lock_a_staff_card():
    _, _, locks = fail(5, STAFF_CARD, gap=40 * SECOND)
    assert locks == [False] * 4 + [True]


def test_failures_long_ago_are_forgotten():
    state, _, _ = fail(5, OPERATOR, gap=SECOND)
    later = state.last_failure_at_ms + OPERATOR.window_ms
    assert wait_ms(state, later, OPERATOR) == 0
    assert after_failure(state, later, OPERATOR)[0].failures == 1


@given(gaps=st.lists(st.integers(min_value=0, max_value=10 * MINUTE), max_size=40),
       policy=st.sampled_from([OPERATOR, ADDRESS, STAFF_CARD]))
def test_back_off_is_bounded_and_a_lock_happens_once_per_run(gaps, policy):
    state, now, locks = Throttle(), 0, 0
    for gap in gaps:
        now += gap
        state, locked = after_failure(state, now, policy)
        locks += locked
        wait = wait_ms(state, now, policy)
        assert 0 <= wait <= max(policy.lock_ms, policy.backoff_max_ms)
        if state.blocked_until_ms is None:
            assert wait <= policy.backoff_max_ms
            assert state.failures < policy.lock_after
    # every lock needs lock_after failures since the last time the count started over
    assert locks <= len(gaps) // policy.lock_after
