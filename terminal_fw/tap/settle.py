"""What an unfinished card write comes to: the settling rules, as pure functions.

A power cut or a card pulled away can leave an intent (:mod:`terminal_fw.tap.journal`)
anywhere between *open* and *done*. These rules say what to do with it from what is
known — the intent, the card's state now (when the card is back on the reader), the
time — and nothing else: no clock, no disk, no card. The runner
(:mod:`terminal_fw.tap.runner`) carries the answer out. The rules in words:

* the card shows the new state: the write landed. Sign the records if that has not
  happened yet (flagged ``CONFIRMED_ON_READBACK`` when the write's own answer was lost); a paid entry whose gate never opened is served now without charging
  again, within :data:`SERVE_GRACE_S` of the tap;
* the card shows the old state: nothing happened, the intent is abandoned;
* the card shows a third state (used elsewhere meanwhile): the records go to HQ
  flagged ``UNCONFIRMED_CARD_WRITE`` with the three states, for reconciliation;
* the card never comes back: after ``unconfirmed_report_after_s`` the same report.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from protocol.card_state import CardState
from protocol.record import Flag
from terminal_fw.tap.journal import Intent, Status

#: A paid tap whose gate never opened (power cut) is honoured at the same card's next
#: tap within this many seconds, without charging again.
SERVE_GRACE_S = 600


class Then(enum.Enum):
    """What the tap in progress does once the earlier intent is settled."""

    GO_ON = "go on"  # carry on with this tap's own operation
    SERVE = "serve"  # this tap is the earlier, paid one: serve the member for it, free
    COMPLETED = "completed"  # the earlier write is complete now: this tap comes to that


@dataclass(frozen=True)
class Settlement:
    """The action for one intent: its new status (None: unchanged), whether its records
    are signed in the same transaction (with ``flags`` and ``extra`` added), and what
    the tap in progress does next."""

    status: Status | None = None
    sign: bool = False
    flags: int = 0
    extra: dict[str, Any] | None = None
    then: Then = Then.GO_ON


NOTHING = Settlement()


def brief(state: CardState | None) -> dict[str, Any] | None:
    """The part of a card state HQ needs to reconcile an unconfirmed write."""
    if state is None:
        return None
    return {"counter": state.counter, "purse_fen": state.purse_fen, "visits": dict(state.visits),
            "blocked": state.blocked}


def _final(intent: Intent) -> Status:
    """Where a landed write ends: waiting to be served, or done."""
    return Status.COMMITTED if intent.serve else Status.DONE


def _fresh(intent: Intent, now_ms: int) -> bool:
    return now_ms - intent.created_ms < SERVE_GRACE_S * 1000


def settle(intent: Intent, card_now: CardState | None, now_ms: int) -> Settlement:
    """The card of an unfinished ``intent`` is back on the reader, showing ``card_now``
    (None: blank or not ours). Say what the intent comes to."""
    landed = card_now is not None and card_now == intent.after
    unchanged = card_now == intent.before
    if intent.status is Status.WRITTEN:  # the card was written; the records never got signed
        if landed and intent.serve and _fresh(intent, now_ms):
            return Settlement(Status.COMMITTED, sign=True, then=Then.SERVE)
        return Settlement(Status.DONE, sign=True)
    if intent.status is Status.OPEN:
        if landed:
            # Landed as far as the card shows; the write's own answer never came, so
            # the records say how it was confirmed (another terminal's identical write
            # would look the same).
            return Settlement(_final(intent), sign=True, flags=int(Flag.CONFIRMED_ON_READBACK),
                              then=Then.SERVE if intent.serve else Then.COMPLETED)
        if unchanged:
            return Settlement(Status.ABANDONED)
        return Settlement(Status.REPORTED, sign=True, flags=int(Flag.UNCONFIRMED_CARD_WRITE),
                          extra={"unconfirmed": {"intent": intent.id,
                                                 "card_before": brief(intent.before),
                                                 "card_after": brief(intent.after),
                                                 "card_now": brief(card_now)}})
    if intent.status is Status.REPORTED:
        return Settlement(Status.DONE if landed or not unchanged else Status.REPORTED_NOT_LANDED)
    if intent.status is Status.COMMITTED:
        if landed and intent.serve and _fresh(intent, now_ms):
            return Settlement(then=Then.SERVE)
        return Settlement(Status.DONE)
    return NOTHING


def settle_at_start(intent: Intent, records_in_outbox: bool) -> Settlement:
    """At start, without the card: an intent whose card write was confirmed gets its
    records signed. ``records_in_outbox`` is true only for an intent adopted from an
    older terminal, which signed them in a step of its own: never sign them twice."""
    if intent.status in (Status.OPEN, Status.WRITTEN) and records_in_outbox:
        return Settlement(_final(intent))
    if intent.status is Status.WRITTEN:
        return Settlement(_final(intent), sign=True)
    return NOTHING


def settle_unseen(intent: Intent, now_ms: int, report_after_ms: int) -> Settlement:
    """The card of ``intent`` has not come back for a while: an unknown write is reported
    to HQ with both states; a paid entry past its grace is no longer served."""
    age = now_ms - intent.created_ms
    if age < report_after_ms:
        return NOTHING
    if intent.status is Status.OPEN:
        return Settlement(Status.REPORTED, sign=True, flags=int(Flag.UNCONFIRMED_CARD_WRITE),
                          extra={"unconfirmed": {"intent": intent.id,
                                                 "card_before": brief(intent.before),
                                                 "card_after": brief(intent.after)}})
    if intent.status is Status.COMMITTED and age > SERVE_GRACE_S * 1000:
        return Settlement(Status.DONE)
    return NOTHING
