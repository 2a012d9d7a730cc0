"""Settlement over HQ's ledger: a period's matrix from the posted purse movements, and
booking it once to the stores' ``settlement`` accounts (through the ledger's writer).
The matching itself is plain code in :mod:`hq_server.settlement.rules`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine

from hq_server.db.tables import ledger_entries, ledger_transactions
from hq_server.ledger.accounts import CNY
from hq_server.ledger.writer import LedgerError, post_transaction
from hq_server.settlement.rules import (
    HQ_STORE,
    PurseMovement,
    SettlementMatrix,
    match_movements,
    settlement_entries,
    settlement_matrix,
)


def purse_movements(engine: Engine, until_ms: int | None = None) -> list[PurseMovement]:
    """Every posted movement of every card purse (reversals included), from the ledger."""
    e, t = ledger_entries.c, ledger_transactions.c
    q = (select(t.card_id, t.store, e.amount, t.posted_at_ms, t.txn_id)
         .select_from(ledger_entries.join(ledger_transactions, e.txn_id == t.txn_id))
         .where(e.account.like("card:%:purse") & (e.asset == CNY)))
    if until_ms is not None:
        q = q.where(t.posted_at_ms < until_ms)
    with engine.connect() as conn:
        # A credit to the purse (negative amount) puts value on the card.
        return [PurseMovement(card, store, -int(amount), int(at), txn)
                for card, store, amount, at, txn in conn.execute(q)]


def period_matrix(engine: Engine, start_ms: int, end_ms: int) -> SettlementMatrix:
    """The settlement matrix of ``[start_ms, end_ms)``, derived from the ledger."""
    if end_ms <= start_ms:
        raise LedgerError("a settlement period must end after it starts")
    return settlement_matrix(match_movements(purse_movements(engine, until_ms=end_ms)),
                             start_ms, end_ms)


def post_settlement(engine: Engine, start_ms: int, end_ms: int) -> tuple[SettlementMatrix, bool]:
    """Book a period's matrix to the stores' settlement accounts, once.

    Returns the matrix and whether it was posted now (False: that period was already
    booked). Overlapping periods are refused: each matched amount must settle once.
    """
    matrix = period_matrix(engine, start_ms, end_ms)
    t = ledger_transactions.c
    with engine.connect() as conn:
        booked = [txn for (txn,) in conn.execute(select(t.txn_id).where(t.kind == "settlement"))]
    this = f"settle:{start_ms}:{end_ms}"
    for txn in booked:
        if txn == this:
            return matrix, False
        _, s, e = txn.split(":")
        if int(s) < end_ms and start_ms < int(e):
            raise LedgerError(f"period overlaps the settlement already booked as {txn}")
    posted = post_transaction(engine, this, "settlement", HQ_STORE, settlement_entries(matrix),
                              {"start_ms": start_ms, "end_ms": end_ms,
                               "owes": {f"{a}->{b}": v for (a, b), v in matrix.owes.items()}})
    return matrix, posted
