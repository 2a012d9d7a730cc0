"""What every role has: a terminal to ask, and what a card or credential does by default."""

from __future__ import annotations

from typing import Any

from protocol.card_ops import read_balance
from protocol.card_state import CardState
from protocol.mifare import MifareClassicLink
from terminal_fw.roles.host import TerminalHost
from terminal_fw.sessions import CardSession
from terminal_fw.uid_auth import credential_card_id


def summary(state: CardState) -> dict[str, Any]:
    """A card as an event shows it."""
    return {"card_id": state.card_id, "purse_fen": state.purse_fen, "visits": dict(state.visits),
            "pass": state.pass_product, "pass_to_day": state.pass_to_day,
            "counter": state.counter, "blocked": state.blocked}


class Role:
    """A role driven by a UI (handheld, kiosk): a card on the reader is shown, and held
    for the UI when one is attached (:meth:`attach`)."""

    def __init__(self, host: TerminalHost, *, pin_factory: Any = None) -> None:
        self.host = host
        self.pin_factory = pin_factory
        self._ui: Any = None

    def stop(self) -> None:
        pass

    def attach(self, ui: Any) -> None:
        """``ui(session)`` is called with a :class:`~terminal_fw.sessions.CardSession` for
        every card put on the reader, on the reader's thread: the UI keeps the session
        while the member decides and closes it when done."""
        self._ui = ui

    def on_card(self, link: MifareClassicLink, direction: str) -> CardSession | None:
        """Show what is on the card; hand it to the UI if one is attached."""
        result = self.host.card(link, read_balance)
        self.host.emit("card", ok=result.ok, reason=result.reason,
                       card=summary(result.state) if result.state else None)
        if self._ui is None:
            return None
        session = self.host.hold(link)
        self._ui(session)
        return session

    def on_uid(self, kind: str, value: str) -> None:
        self.host.emit("uid", kind=kind, credential_card=credential_card_id(kind, value))
