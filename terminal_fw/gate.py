"""The simple gate: a member taps a count card and the turnstile opens for one visit.

This gate works on a :class:`CardAccess`, a card already decoded into a
:class:`~protocol.card_state.CardState`, which is what the fleet, ingest, reconciliation
and enrolment tests need to produce signed records at volume. The decision is plain code
(:func:`decide_visit`); :class:`Gate` carries it out: read the card, decide, write the
card, commit the signed record durably, and only then report "open". A gate that cannot
commit the record does not open.

MIFARE Classic cards in OneCard's format do not come here: the deployed path for them
is :class:`terminal_fw.intent.CardTransactions` (intent journal, tear-safe commit on the
card, records and intent status committed together), as the runtime's gate role, the
demo and the reader-path tests run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from protocol.card_state import CardState
from protocol.mifare import MifareClassicLink
from protocol.record import Operation, SignedRecord, TransactionRecord
from terminal_fw.identity import DeviceIdentity
from terminal_fw.outbox import Outbox


class CardAccess(Protocol):
    """The card in the reader's field, as the gate sees it."""

    def read(self) -> CardState: ...

    def write(self, new_state: CardState) -> None: ...


@dataclass(frozen=True)
class Refusal:
    reason: str


@dataclass(frozen=True)
class VisitTaken:
    new_state: CardState


def decide_visit(state: CardState, product: str) -> VisitTaken | Refusal:
    """Take one visit of ``product`` from the card, or say why not."""
    if state.blocked:
        return Refusal("card blocked")
    left = state.visits_of(product)
    if left <= 0:
        return Refusal(f"no visits of {product} left")
    visits = dict(state.visits)
    visits[product] = left - 1
    return VisitTaken(replace(state, visits=visits, counter=state.counter + 1))


@dataclass(frozen=True)
class GateDecision:
    opened: bool
    reason: str = ""
    record: SignedRecord | None = None


class Gate:
    """Takes one visit of ``product`` per tap from a :class:`CardAccess` card."""

    def __init__(
        self,
        identity: DeviceIdentity,
        outbox: Outbox,
        product: str,
        *,
        operator: str = "",
        clock: Callable[[], float] = time.time,
        offline: Callable[[], bool] = lambda: False,
    ) -> None:
        self.identity = identity
        self.outbox = outbox
        self.product = product
        self.operator = operator
        self.clock = clock
        self.offline = offline

    def tap(self, card: CardAccess) -> GateDecision:
        """Decide, write the card, then commit the signed record; open only after that."""
        if isinstance(card, MifareClassicLink):
            # a raw MIFARE link would skip the intent journal and the tear-safe commit
            raise TypeError("a MIFARE Classic card goes through "
                            "terminal_fw.intent.CardTransactions, not Gate")
        state = card.read()
        outcome = decide_visit(state, self.product)
        if isinstance(outcome, Refusal):
            return GateDecision(False, outcome.reason)
        new = outcome.new_state
        card.write(new)
        content = TransactionRecord(
            device_id=self.identity.device_id,
            seq=1,  # placeholder: the outbox assigns the real sequence and chain hash
            prev_hash=bytes(32),
            device_time_ms=int(self.clock() * 1000),
            card_id=state.card_id,
            operation=Operation.TAKE_VISIT,
            store=self.identity.store,
            product=self.product,
            purse_before=state.purse_fen,
            purse_after=new.purse_fen,
            visits_before=state.visits_of(self.product),
            visits_after=new.visits_of(self.product),
            card_counter=new.counter,
            operator=self.operator,
            flags=1 if self.offline() else 0,
        )
        signed = self.outbox.append(content, self.identity.signing_key)
        return GateDecision(True, "", signed)
