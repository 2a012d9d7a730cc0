"""Business rules HQ checks on every verified record (plain code over data).

A signature proves which terminal sent a record, not that the record is honest: a
stolen or rooted terminal holds a valid key. So before a record's value enters a card's
or a store's balance, HQ asks whether a legitimate operation could have made it:

* the device's **role** may perform the operation (:data:`ROLE_OPERATIONS`);
* the record's **store** is the store the device is registered to;
* value rises only where something pays for it: the purse on a recharge (cash plus the
  catalogue's bonus tier), an account opening or a refund; visits only on a sale;
  points only on operations that grant them; cash goes out only on a refund or recall;
* a **refund** returns no more than was debited from the same card (cumulative);
* a **recall** pays out no more than HQ's ledger holds for the card;
* visits and passes are sold at the **catalogue** price in force when the record was
  made, and bonus follows the catalogue's **bonus tiers**;
* the value one record moves stays under the **cap** of the device's role.

:func:`check_record` returns the rules a record breaks (an empty list: none). Ingest
posts a record that breaks any to suspense (``hq_server.ledger.postings.suspense_postings``)
with an anomaly; see ``docs/ledger.md``. Everything here is data in, data out: the
caller gathers the card's history and the catalogue in force in batch queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.products import Catalogue
from protocol.record import Operation, TransactionRecord

_ALL = frozenset(Operation)

#: What each device role's terminal really does (terminal_fw/runtime.py): a gate lets
#: people in (visits, UID credentials) and blocks denylisted cards; a kiosk is member
#: self-service (top up, buy visits and passes); a staff handheld does the counter's
#: whole job, refunds and recalls included.
ROLE_OPERATIONS: Mapping[str, frozenset[Operation]] = {
    "gate": frozenset({Operation.TAKE_VISIT, Operation.UID_VISIT, Operation.BLOCK}),
    "kiosk": frozenset({Operation.RECHARGE, Operation.ADD_VISITS, Operation.SELL_PASS,
                        Operation.BLOCK}),
    "handheld": _ALL,
}

#: Operations that may put value onto a purse; what pays for it is checked per operation.
PURSE_RISES = frozenset({Operation.RECHARGE, Operation.OPEN_ACCOUNT, Operation.REFUND})
#: Operations that may pay cash out to the member.
CASH_OUT = frozenset({Operation.REFUND, Operation.RECALL})
#: Operations that may change points: earned on a purchase, clawed back on its refund.
POINTS_EARNED = frozenset({Operation.DEBIT})
POINTS_CLAWED_BACK = frozenset({Operation.REFUND})

#: The most value (fen) one record of a role may move, purse or cash. A gate moves none.
DEFAULT_ROLE_CAPS_FEN: Mapping[str, int] = {
    "gate": 0,
    "kiosk": 1_000_000,  # 10,000 yuan at a self-service kiosk
    "handheld": 10_000_000,  # 100,000 yuan at the counter
}


@dataclass(frozen=True)
class RulesConfig:
    """How HQ judges records; the defaults are what a chain gets out of the box."""

    role_caps_fen: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_ROLE_CAPS_FEN))
    #: With no catalogue at HQ, prices and bonus tiers cannot be checked. False (default):
    #: such records post and are counted (``records_unpriced``), with a warning; True:
    #: they go to suspense under the rule ``no_catalogue``.
    require_catalogue: bool = False
    #: Hold a device (status ``held``: its further records are not taken until an
    #: operator releases it) after this many records broke rules; None: never.
    hold_device_after: int | None = 1


@dataclass(frozen=True)
class DeviceFacts:
    """What HQ's registry says about the sender."""

    device_id: str
    role: str
    store: str


@dataclass
class CardFacts:
    """What HQ knows of the card before this record (updated by :func:`note_accepted`)."""

    debited_fen: int = 0  # purse and cash taken by debits, ever
    refunded_fen: int = 0  # refunds honoured, ever
    purse_held_fen: int = 0  # what the ledger holds on the card's purse now


@dataclass(frozen=True)
class BrokenRule:
    rule: str  # a stable name, e.g. "operation_not_for_role"
    reason: str  # in words, for the operator


def refund_value(r: TransactionRecord) -> int:
    """What a refund gives back: onto the purse plus cash paid out."""
    return (r.purse_after - r.purse_before) - r.cash_fen


def debit_value(r: TransactionRecord) -> int:
    """What a debit took: from the purse plus the cash taken for the shortfall."""
    return (r.purse_before - r.purse_after) + r.cash_fen


def check_record(r: TransactionRecord, device: DeviceFacts, card: CardFacts,
                 catalogue: Catalogue | None, config: RulesConfig | None = None
                 ) -> list[BrokenRule]:
    """The rules ``r`` breaks, judged against the device, the card and the catalogue."""
    config = config or RulesConfig()
    op = r.operation
    broken: list[BrokenRule] = []

    def breaks(rule: str, reason: str) -> None:
        broken.append(BrokenRule(rule, reason))

    purse_delta = r.purse_after - r.purse_before
    visits_delta = r.visits_after - r.visits_before
    allowed = ROLE_OPERATIONS.get(device.role, frozenset())
    if op not in allowed:
        breaks("operation_not_for_role", f"a {device.role} may not {op.name}")
    if r.store != device.store:
        breaks("store_not_registered",
               f"record booked to store {r.store!r}, device is registered to {device.store!r}")
    cap = config.role_caps_fen.get(device.role, 0)
    moved = max(abs(purse_delta), abs(r.cash_fen), abs(r.bonus_fen))
    if moved > cap:
        breaks("role_cap", f"moves {moved} fen, a {device.role} may move at most {cap}")

    if purse_delta > 0 and op not in PURSE_RISES:
        breaks("purse_rise_not_paid", f"{op.name} raises the purse by {purse_delta} fen")
    if visits_delta > 0 and op != Operation.ADD_VISITS:
        breaks("visits_rise_not_sold", f"{op.name} raises visits by {visits_delta}")
    if r.cash_fen < 0 and op not in CASH_OUT:
        breaks("cash_out_not_allowed", f"{op.name} pays out {-r.cash_fen} fen")
    if (r.points_delta > 0 and op not in POINTS_EARNED) or \
            (r.points_delta < 0 and op not in POINTS_CLAWED_BACK | POINTS_EARNED):
        breaks("points_not_granted", f"{op.name} does not grant points ({r.points_delta})")

    if op in (Operation.RECHARGE, Operation.OPEN_ACCOUNT):
        _check_top_up(r, catalogue, config, breaks)
    elif r.bonus_fen:
        breaks("bonus_beyond_tiers", f"{op.name} carries a bonus of {r.bonus_fen} fen")
    if op == Operation.REFUND:
        value = refund_value(r)
        if purse_delta < 0 or r.cash_fen > 0 or value <= 0:
            breaks("refund_beyond_debits", "a refund must give value back, not take it")
        elif value > card.debited_fen - card.refunded_fen:
            breaks("refund_beyond_debits",
                   f"refunds {value} fen; the card's debits leave {card.debited_fen - card.refunded_fen}"
                   " fen to refund")
    if op == Operation.RECALL:
        paid_out = -r.cash_fen
        if paid_out > max(card.purse_held_fen, 0) or paid_out > r.purse_before:
            breaks("recall_beyond_holdings",
                   f"pays out {paid_out} fen; HQ holds {card.purse_held_fen} fen for the card")
    if op in (Operation.ADD_VISITS, Operation.SELL_PASS):
        _check_price(r, catalogue, config, breaks)
    return broken


def _check_top_up(r: TransactionRecord, catalogue: Catalogue | None, config: RulesConfig,
                  breaks) -> None:
    paid, bonus = r.cash_fen, r.bonus_fen
    purse_delta = r.purse_after - r.purse_before
    if paid < 0 or bonus < 0 or purse_delta != paid + bonus:
        breaks("top_up_not_paid", f"purse rises {purse_delta} fen for {paid} paid + {bonus} bonus")
    if r.operation == Operation.RECHARGE and paid <= 0:
        breaks("top_up_not_paid", "a recharge with nothing paid")
    if bonus > 0:
        if catalogue is None:
            if paid <= 0:
                breaks("bonus_beyond_tiers", f"bonus {bonus} fen with nothing paid")
            elif config.require_catalogue:
                breaks("no_catalogue", "HQ holds no catalogue to check the bonus against")
        elif bonus > catalogue.bonus_for(max(paid, 0)):
            breaks("bonus_beyond_tiers", f"bonus {bonus} fen for {paid} fen paid; the tiers give "
                   f"{catalogue.bonus_for(max(paid, 0))}")


def _check_price(r: TransactionRecord, catalogue: Catalogue | None, config: RulesConfig,
                 breaks) -> None:
    paid = r.cash_fen + (r.purse_before - r.purse_after)
    visits_delta = r.visits_after - r.visits_before
    if catalogue is None:
        if paid <= 0:
            breaks("price_not_catalogue", f"{r.operation.name} of {r.product!r} for {paid} fen")
        elif config.require_catalogue:
            breaks("no_catalogue", "HQ holds no catalogue to check the price against")
        return
    if r.operation == Operation.ADD_VISITS:
        product = catalogue.count_product(r.product)
        if product is None:
            breaks("price_not_catalogue", f"no count product {r.product!r} in the catalogue")
            return
        packages, rest = divmod(visits_delta, product.visits)
        if packages < 1 or rest or paid != packages * product.price_fen:
            breaks("price_not_catalogue",
                   f"{visits_delta} visits of {r.product} for {paid} fen; the catalogue sells "
                   f"{product.visits} for {product.price_fen} fen")
    else:
        ps = catalogue.pass_product(r.product)
        if ps is None:
            breaks("price_not_catalogue", f"no pass {r.product!r} in the catalogue")
        elif paid != ps.price_fen or visits_delta:
            breaks("price_not_catalogue",
                   f"pass {r.product} for {paid} fen; the catalogue price is {ps.price_fen} fen")


def note_accepted(r: TransactionRecord, card: CardFacts) -> None:
    """Move the card's facts on past a record that broke no rule."""
    if r.operation == Operation.DEBIT:
        card.debited_fen += max(debit_value(r), 0)
    elif r.operation == Operation.REFUND:
        card.refunded_fen += refund_value(r)
