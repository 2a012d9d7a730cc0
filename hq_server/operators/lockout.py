"""Back-off and lock-out after failed sign-ins: pure rules, no database, no clock.

Three things are counted, each as a *subject* with its own policy:

* an operator name (``operator:<name>``, known or not, so the answers never tell which
  names exist): from the 3rd consecutive failure each further attempt must wait
  1, 2, 4, ... seconds (at most 60) after the last one; the 10th locks the name for
  30 minutes (``operator.lock`` in the audit log). A manager may unlock earlier.
* a client address (``address:<ip>``): 30 failures within 15 minutes block every
  sign-in from that address for 15 minutes, whatever names it tries.
* a staff card (``staff_card:<id>``): the 5th wrong PIN locks the card for 30 minutes.

A success clears the name's (or card's) count; a count whose last failure is older than
its window starts again. :func:`wait_ms` says how long a subject must still wait;
:func:`after_failure` is the state after one more failure.
"""

from __future__ import annotations

from dataclasses import dataclass

SECOND = 1000
MINUTE = 60 * SECOND


@dataclass(frozen=True)
class Policy:
    """How a kind of subject is throttled."""

    backoff_after: int  # failures before each attempt must wait (0: never back off)
    backoff_max_ms: int
    lock_after: int  # failures that lock the subject
    lock_ms: int
    window_ms: int  # failures older than this (since the last) are forgotten


OPERATOR = Policy(backoff_after=2, backoff_max_ms=60 * SECOND, lock_after=10,
                  lock_ms=30 * MINUTE, window_ms=60 * MINUTE)
ADDRESS = Policy(backoff_after=0, backoff_max_ms=0, lock_after=30, lock_ms=15 * MINUTE,
                 window_ms=15 * MINUTE)
STAFF_CARD = Policy(backoff_after=2, backoff_max_ms=30 * SECOND, lock_after=5,
                    lock_ms=30 * MINUTE, window_ms=60 * MINUTE)


@dataclass(frozen=True)
class Throttle:
    """Failures of one subject so far."""

    failures: int = 0
    first_failure_at_ms: int = 0
    last_failure_at_ms: int = 0
    blocked_until_ms: int | None = None


def current(state: Throttle, now_ms: int, policy: Policy) -> Throttle:
    """``state`` with an expired lock or a stale count forgotten."""
    if state.blocked_until_ms is not None and now_ms >= state.blocked_until_ms:
        return Throttle()
    if state.failures and state.blocked_until_ms is None and (
            now_ms - state.first_failure_at_ms >= policy.window_ms
            if policy.backoff_after == 0
            else now_ms - state.last_failure_at_ms >= policy.window_ms):
        return Throttle()
    return state


def backoff_ms(failures: int, policy: Policy) -> int:
    """How long after the last failure the next attempt must wait."""
    if policy.backoff_after == 0 or failures <= policy.backoff_after:
        return 0
    return min(SECOND << min(failures - policy.backoff_after - 1, 20), policy.backoff_max_ms)


def wait_ms(state: Throttle, now_ms: int, policy: Policy) -> int:
    """Milliseconds before this subject may try again (0: it may try now)."""
    state = current(state, now_ms, policy)
    if state.blocked_until_ms is not None:
        return state.blocked_until_ms - now_ms
    return max(0, state.last_failure_at_ms + backoff_ms(state.failures, policy) - now_ms)


def after_failure(state: Throttle, now_ms: int, policy: Policy) -> tuple[Throttle, bool]:
    """The state after one more failure, and whether this failure locked the subject."""
    state = current(state, now_ms, policy)
    failures = state.failures + 1
    first = state.first_failure_at_ms if state.failures else now_ms
    locked = failures >= policy.lock_after and state.blocked_until_ms is None
    blocked = now_ms + policy.lock_ms if locked else state.blocked_until_ms
    return Throttle(failures, first, now_ms, blocked), locked
