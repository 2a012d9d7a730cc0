"""What a role may ask of the terminal it runs in — the whole interface, and nothing else.

A role (gate, handheld, kiosk) decides what a card or a credential on its readers comes
to and serves the member; everything else — the tap runner, the stores, the uplink, the
threads — belongs to the terminal (:class:`terminal_fw.runtime.Runtime`). Keeping the
role's view this narrow is what lets a new role be a new file.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from protocol.mifare import MifareClassicLink
from protocol.record import SignedRecord
from protocol.terminal_config import TerminalConfig
from terminal_fw.sessions import CardSession
from terminal_fw.tap import TapResult

if TYPE_CHECKING:
    from terminal_fw.runtime.settings import RuntimeSettings


class TerminalHost(Protocol):
    """The terminal as a role sees it."""

    settings: RuntimeSettings  # the local settings (readers, wiring, timeouts)

    def current_config(self) -> TerminalConfig:
        """HQ's configuration now running (catalogue, price list, gate, opening hours)."""

    def now_ms(self) -> int:
        """The terminal's clock."""

    def card(self, link: MifareClassicLink, operation: Any, *args: Any,
             serve: bool = False, **kwargs: Any) -> TapResult:
        """Run one card operation (:data:`protocol.card_ops.OPERATIONS`) crash-safely."""

    def served(self, result: TapResult) -> None:
        """The member got what ``result`` paid for."""

    def passage_settled(self, intent_prefix: str, *, owed: bool) -> None:
        """The passage for the intent whose id starts with ``intent_prefix`` is over: its
        paid entry is still ``owed`` to the member (passage not taken, door never
        opened), or used up."""

    def uid_use(self, kind: str, credential: str, amount_fen: int, *, product: str = "",
                operator: str = "") -> tuple[bool, str, SignedRecord | None]:
        """Authorise and record one use of a UID-only credential."""

    def hold(self, link: MifareClassicLink) -> CardSession:
        """Keep the card on ``link`` for a UI (:mod:`terminal_fw.sessions`)."""

    def emit(self, event: str, **data: Any) -> None:
        """Tell the log and whoever watches (tests, a UI) what happened."""

    def guard(self) -> str | None:
        """Why the terminal must not take value right now (maintenance, full disk), or None."""

    def exclusive(self) -> AbstractContextManager[Any]:
        """One card operation at a time on this terminal; a shutdown waits for it."""
