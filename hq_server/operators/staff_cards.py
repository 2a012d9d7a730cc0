"""Staff cards (员工卡): a card and a PIN sign an operator in on a handheld.

A manager assigns a card to an operator they manage, with a PIN of 6-12 digits (not one
digit repeated, not a run like 123456). Only the argon2id hash of the PIN is kept. Signing
in (:func:`hq_server.operators.signin.verify_staff_card`) gives a short session
(:mod:`hq_server.operators.sessions`, kind ``staff_card``); five wrong PINs lock the card
for 30 minutes (or until a manager unlocks its operator). Audited as ``staff_card.assign``
and ``staff_card.revoke``.
"""

from __future__ import annotations

import re

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from hq_server.audit.log import record_action
from hq_server.db.tables import login_throttle, staff_cards
from hq_server.operators import accounts
from hq_server.operators.access import Actor, NotVisible, Scope, authorise
from hq_server.operators.accounts import _may_change, _visible_operator
from hq_server.operators.errors import OperatorError

CARD_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
PIN = re.compile(r"^[0-9]{6,12}$")


def check_pin(pin: str) -> str:
    if not isinstance(pin, str) or not PIN.match(pin):
        raise OperatorError("a PIN is 6 to 12 digits")
    steps = {int(b) - int(a) for a, b in zip(pin, pin[1:], strict=False)}
    if len(set(pin)) == 1 or steps in ({1}, {-1}):
        raise OperatorError("a PIN may not be one digit repeated or a run like 123456")
    return pin


def assign_staff_card(actor: Actor, engine: Engine, card_id: str, username: str, pin: str,
                      now_ms: int) -> None:
    """Give ``username`` the staff card ``card_id`` with a PIN (replacing an earlier one)."""
    authorise(actor, "operators.write")
    if not CARD_ID.match(card_id or ""):
        raise OperatorError("a staff card id is 1-64 letters, digits or _ . : -")
    hashed = accounts._hasher.hash(check_pin(pin))
    with engine.begin() as conn:
        target = _visible_operator(conn, actor, username, now_ms)
        _may_change(conn, actor, target.role, target.scope or Scope.parse("chain"))
        before = conn.execute(select(staff_cards.c.operator, staff_cards.c.status)
                              .where(staff_cards.c.card_id == card_id)).first()
        if before is not None and before[0] != username:
            raise OperatorError(f"staff card {card_id!r} belongs to another operator; "
                                "revoke it first")
        conn.execute(delete(staff_cards).where(staff_cards.c.card_id == card_id))
        conn.execute(insert(staff_cards).values(card_id=card_id, operator=username,
                                                pin_hash=hashed, status="active",
                                                created_at_ms=now_ms))
        conn.execute(delete(login_throttle)
                     .where(login_throttle.c.subject == f"staff_card:{card_id}"))
        record_action(conn, actor, "staff_card.assign", "staff_card", card_id,
                      None if before is None else {"operator": before[0], "status": before[1]},
                      {"operator": username, "status": "active"}, now_ms)


def revoke_staff_card(actor: Actor, engine: Engine, card_id: str, now_ms: int) -> None:
    """The card signs nobody in any more (lost, or its holder left)."""
    authorise(actor, "operators.write")
    with engine.begin() as conn:
        row = conn.execute(select(staff_cards.c.operator, staff_cards.c.status)
                           .where(staff_cards.c.card_id == card_id)).first()
        if row is None:
            raise NotVisible("not found")
        target = _visible_operator(conn, actor, row[0], now_ms)
        _may_change(conn, actor, target.role, target.scope or Scope.parse("chain"))
        conn.execute(update(staff_cards).where(staff_cards.c.card_id == card_id)
                     .values(status="revoked"))
        record_action(conn, actor, "staff_card.revoke", "staff_card", card_id,
                      {"operator": row[0], "status": row[1]},
                      {"operator": row[0], "status": "revoked"}, now_ms)
