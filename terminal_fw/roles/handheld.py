"""The handheld role: a staff handheld at the counter — checkout, taking a visit,
recharge, selling visits, issuing a card.

Each method takes the link to the card on the handheld's reader (the staff app holds
it in a :class:`~terminal_fw.sessions.CardSession` while the member's card lies on the
reader: pass ``session.link``) and returns the operation's result; the receipt may be
printed once it returns ``ok`` (the records are durable).
"""

from __future__ import annotations

from dataclasses import replace

from protocol.card_ops import (
    CheckoutLine,
    add_visits,
    debit,
    issue,
    open_account,
    recharge,
    take_visit,
)
from protocol.mifare import MifareClassicLink
from terminal_fw.roles.base import Role
from terminal_fw.tap import TapResult


class HandheldRole(Role):
    """A staff handheld at the counter (收银台/服务台)."""

    def checkout(self, link: MifareClassicLink, items: list[tuple[str, int]], *,
                 operator: str = "", cash_for_shortfall: bool = True) -> TapResult:
        """Pay ``items`` (sku, quantity) from the price list: member discount, the card
        pays what it can, the rest is cash (or the checkout is refused without cash)."""
        cfg = self.host.current_config()
        lines = []
        for sku, quantity in items:
            item = cfg.price(sku)
            if item is None:
                return TapResult(False, f"unknown item {sku!r} (not on the price list)")
            lines.append(CheckoutLine(item.category, item.unit_price_fen, quantity, sku))
        return self.host.card(link, debit, lines, operator=operator,
                              cash_for_shortfall=cash_for_shortfall)

    def take_visit(self, link: MifareClassicLink, product: str, *,
                   operator: str = "") -> TapResult:
        """Take one visit of ``product`` at the counter (a sauna, a class)."""
        return self.host.card(link, take_visit, operator=operator, accepts=(product,))

    def recharge(self, link: MifareClassicLink, paid_fen: int, *, operator: str = "") -> TapResult:
        return self.host.card(link, recharge, paid_fen, operator=operator)

    def add_visits(self, link: MifareClassicLink, product: str, packages: int = 1, *,
                   operator: str = "", pay_from_purse: bool = False) -> TapResult:
        """Sell ``packages`` of a count product onto the card (充次)."""
        return self.host.card(link, add_visits, product, packages, operator=operator,
                              pay_from_purse=pay_from_purse)

    def issue_card(self, link: MifareClassicLink, card_id: str, card_product: str, *,
                   opening_fen: int | None = None, operator: str = "") -> TapResult:
        """Issue (发卡) and, for a stored-value product, open the purse (开户)."""
        result = self.host.card(link, issue, card_id=card_id, card_product=card_product,
                                operator=operator)
        if not result.ok or opening_fen is None:
            return result
        opened = self.host.card(link, open_account, opening_fen, operator=operator)
        return replace(opened, records=result.records + opened.records)
