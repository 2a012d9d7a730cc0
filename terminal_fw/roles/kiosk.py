"""The kiosk role: what a member can do alone at a self-service kiosk — see the card,
recharge after paying, add visit packages, buy a pass. The Kivy app drives it, holding
the card in a :class:`~terminal_fw.sessions.CardSession` (pass ``session.link``)."""

from __future__ import annotations

from protocol.card_ops import add_visits, read_balance, recharge, sell_pass
from protocol.mifare import MifareClassicLink
from terminal_fw.roles.base import Role
from terminal_fw.tap import TapResult


class KioskEngine(Role):
    """What a member can do alone at a kiosk; the Kivy app calls these."""

    def read_balance(self, link: MifareClassicLink) -> TapResult:
        """The card as it stands (a denylisted card is blocked and refused)."""
        return self.host.card(link, read_balance)

    def recharge(self, link: MifareClassicLink, paid_fen: int, *, payment_ref: str = "") -> TapResult:
        """After the cash acceptor or the payment QR confirmed ``paid_fen``."""
        return self.host.card(link, recharge, paid_fen, operator=f"kiosk:{payment_ref}"[:64])

    def add_visits(self, link: MifareClassicLink, product: str, packages: int = 1, *,
                   pay_from_purse: bool = True) -> TapResult:
        """The member buys ``packages`` of a count product, from the purse by default."""
        return self.host.card(link, add_visits, product, packages, pay_from_purse=pay_from_purse)

    def sell_pass(self, link: MifareClassicLink, pass_name: str, *,
                  pay_from_purse: bool = True) -> TapResult:
        """The member buys (or renews) a time pass, from the purse by default."""
        return self.host.card(link, sell_pass, pass_name, pay_from_purse=pay_from_purse)
