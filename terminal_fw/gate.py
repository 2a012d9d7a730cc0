"""The gate role: a member taps a count card and the turnstile opens for one visit.

The decision is plain code (:func:`decide_visit`); :class:`Gate` carries it out:
read the card, decide, write the card, commit the signed record durably, and only then
report "open". A gate that cannot commit the record does not open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from protocol.card_ops import TerminalContext, take_visit
from protocol.card_state import CardState
from protocol.mifare import CardRemoved, MifareClassicLink, ReaderError
from protocol.record import Operation, SignedRecord, TransactionRecord
from terminal_fw.card_app import CardResult, CardService, WriteStatus
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
    def __init__(
        self,
        identity: DeviceIdentity,
        outbox: Outbox,
        product: str,
        *,
        operator: str = "",
        clock: Callable[[], float] = time.time,
        offline: Callable[[], bool] = lambda: False,
        card_service: CardService | None = None,
        gate_group: int = 0,
        accepts: tuple[str, ...] = (),
    ) -> None:
        self.identity = identity
        self.outbox = outbox
        self.product = product
        self.operator = operator
        self.clock = clock
        self.offline = offline
        # MIFARE Classic cards in our format (terminal_fw.card_app), when configured
        self.card_service = card_service
        self.gate_group = gate_group
        self.accepts = accepts
        self._unconfirmed: dict[bytes, CardResult] = {}

    def tap(self, card: CardAccess | MifareClassicLink) -> GateDecision:
        if self.card_service is not None and isinstance(card, MifareClassicLink):
            return self.tap_card(card)
        assert not isinstance(card, MifareClassicLink), "a MIFARE card needs a card_service"
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

    def tap_card(self, link: MifareClassicLink) -> GateDecision:
        """A visit on a MIFARE Classic card in our format, through ``card_service``.

        The gate opens only once the card holds the new state and its records are
        committed. A card pulled away during the write's last block leaves the outcome
        unknown: the gate stays shut and remembers it; when the same card is tapped
        again the card is read first, and if the visit did land it is recorded and the
        gate opens for it (the member has paid), else the tap starts afresh.
        """
        assert self.card_service is not None
        ctx = TerminalContext(
            device_id=self.identity.device_id, store=self.identity.store,
            chain_id=self.card_service.keys.chain_id, now_ms=int(self.clock() * 1000),
            operator=self.operator, gate_group=self.gate_group, accepts=self.accepts,
            offline=self.offline(),
        )
        try:
            uid = bytes(link.uid())
            pending = self._unconfirmed.get(uid)
            result = self.card_service.resolve(link, pending) if pending is not None else None
            self._unconfirmed.pop(uid, None)
            if result is None or result.status is not WriteStatus.WRITTEN:
                result = self.card_service.run(link, take_visit, ctx=ctx)
        except CardRemoved:
            return GateDecision(False, "card removed")
        except ReaderError as exc:  # wrong keys, refused access, reader gone: not charged
            return GateDecision(False, f"card error: {exc}")
        if result.status is WriteStatus.UNCONFIRMED:
            self._unconfirmed[uid] = result
            return GateDecision(False, "card removed during the write: tap again")
        if result.status is not WriteStatus.WRITTEN:
            reason = str(result.refusal) if result.refusal else "card removed: not charged"
            return GateDecision(False, reason)
        signed = [self.outbox.append(r, self.identity.signing_key) for r in result.records]
        if result.refusal is not None:  # denylisted: blocked on the card, and refused
            return GateDecision(False, str(result.refusal), signed[0] if signed else None)
        return GateDecision(True, "", signed[0] if signed else None)
