"""Every card operation as a pure function: card state, products, clock, terminal in;
new card state and record content out — or a :class:`Refusal` with its reason.

Nothing here touches a reader, a database or the wall clock: the time comes in
``TerminalContext.now_ms``, so every rule (expiry, daily limit, anti-passback) can be
tested for any moment in microseconds. ``terminal_fw.tap`` carries the result to the
card and the outbox; :func:`on_image` applies an operation to a whole card dump.

Every operation has one signature, ``op(state, *args, catalogue=..., ctx=..., **options)
-> Done | Refusal``, and is listed in :data:`OPERATIONS` with what it needs of the card;
callers look an operation up there (:func:`card_operation`) instead of testing which
function they were given. :func:`check_denylist` is not an operation: it is the step
that comes before every operation on an issued card.

Each result carries the records to sign (``Done.records``; one, except for a recall
that empties several count products). Their ``seq``/``prev_hash`` are placeholders: the
outbox places each record in the device's chain. Every record passes
:func:`protocol.record.check_consistency`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from protocol.card_format import (
    PURSE_MAX,
    CardFormatError,
    personalise_image,
    read_image,
    write_image,
)
from protocol.card_state import FORMAT_VERSION, CardState, Refusal, RefusalReason
from protocol.ids import is_card_id
from protocol.keys import ChainKeys
from protocol.money import MAX_FEN
from protocol.products import Catalogue, add_months, pass_last_day
from protocol.record import GENESIS_HASH, Flag, Operation, TransactionRecord

_EPOCH_DAY_UNIX = 10957  # 2000-01-01 in days since 1970-01-01
MAX_COUNTER = 2**32 - 1


@dataclass(frozen=True)
class TerminalContext:
    """Who is doing the operation, where, and when (the clock is an input, not a call)."""

    device_id: str
    store: str
    chain_id: int
    now_ms: int
    operator: str = ""
    utc_offset_minutes: int = 480  # the venue's local time (China: UTC+8)
    gate_group: int = 0  # 0..15, for anti-passback
    accepts: tuple[str, ...] = ()  # products this gate lets in; () = any
    offline: bool = False

    @property
    def _local_minutes(self) -> int:
        return self.now_ms // 60_000 + self.utc_offset_minutes

    @property
    def today(self) -> int:
        """Local day number (days since 2000-01-01), as the card stores dates."""
        return self._local_minutes // 1440 - _EPOCH_DAY_UNIX

    @property
    def minute_of_day(self) -> int:
        return self._local_minutes % 1440


@dataclass(frozen=True)
class CheckoutLine:
    """One line of a checkout: list price per unit and the item's discount category."""

    category: str
    unit_price_fen: int
    quantity: int = 1
    sku: str = ""


@dataclass(frozen=True)
class Done:
    """An operation that goes ahead: write ``state`` to the card, sign ``records``.

    ``refusal`` is set when the card must still be written but the member is turned
    away (a denylisted card is marked blocked on the card and refused).
    """

    state: CardState
    records: tuple[TransactionRecord, ...]
    refusal: Refusal | None = None

    @property
    def record(self) -> TransactionRecord:
        return self.records[0]


Outcome = Done | Refusal


def _refuse(reason: RefusalReason, detail: str = "") -> Refusal:
    return Refusal(reason, detail)


def _record(
    ctx: TerminalContext, before: CardState, after: CardState, op: Operation, *,
    product: str = "", cash_fen: int = 0, bonus_fen: int = 0,
    visits: tuple[int, int] | None = None, extra: dict[str, Any] | None = None,
) -> TransactionRecord:
    v_before, v_after = visits if visits is not None else (
        before.visits_of(product), after.visits_of(product))
    return TransactionRecord(
        device_id=ctx.device_id, seq=1, prev_hash=GENESIS_HASH, device_time_ms=ctx.now_ms,
        card_id=after.card_id or before.card_id, operation=op, store=ctx.store, product=product,
        purse_before=before.purse_fen, purse_after=after.purse_fen, visits_before=v_before,
        visits_after=v_after, cash_fen=cash_fen, bonus_fen=bonus_fen,
        card_counter=after.counter, operator=ctx.operator,
        flags=int(Flag.OFFLINE) if ctx.offline else 0, extra=extra or {},
    )


def _bump(state: CardState, **changes: Any) -> CardState | Refusal:
    if state.counter >= MAX_COUNTER:
        return _refuse(RefusalReason.LIMIT, "the card's transaction counter is used up")
    return replace(state, counter=state.counter + 1, **changes)


def _usable(state: CardState, ctx: TerminalContext, *, check_expiry: bool = True) -> Refusal | None:
    """The checks every operation on an issued card starts with, in this order."""
    if state.format_version != FORMAT_VERSION:
        return _refuse(RefusalReason.UNKNOWN_FORMAT, f"card format {state.format_version}")
    if state.chain_id != ctx.chain_id:
        return _refuse(RefusalReason.WRONG_CHAIN, f"card of chain {state.chain_id}")
    if state.recalled:
        return _refuse(RefusalReason.RECALLED, f"card {state.card_id} was taken back")
    if state.blocked:
        return _refuse(RefusalReason.BLOCKED, f"card {state.card_id} is blocked")
    if check_expiry and state.expiry_day and ctx.today > state.expiry_day:
        return _refuse(RefusalReason.EXPIRED, f"card {state.card_id} expired")
    return None


def _positive_fen(value: object, *, allow_zero: bool = False) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and (0 if allow_zero else 1) <= value <= MAX_FEN)


# --- issue and accounts ---------------------------------------------------------


def issue(
    previous: CardState | None, *, card_id: str, card_product: str, catalogue: Catalogue,
    ctx: TerminalContext,
) -> Outcome:
    """Personalise a card (发卡): card number, card product, expiry, included pass.

    ``previous`` is None for a blank card, or the state of a recalled card being
    reissued (its counter carries on, so HQ never sees a counter go backwards).
    """
    if previous is not None and not previous.recalled:
        return _refuse(RefusalReason.ALREADY_ISSUED, f"card already issued as {previous.card_id}")
    cp = catalogue.card_product(card_product)
    if cp is None:
        return _refuse(RefusalReason.UNKNOWN_PRODUCT, f"no card product {card_product!r}")
    if not is_card_id(card_id):
        return _refuse(RefusalReason.NOT_ALLOWED, "card number must be 1..16 of A-Z a-z 0-9 _ . : -")
    today = ctx.today
    expiry = add_months(today, 12 * cp.valid_years) - 1 if cp.valid_years else 0
    pass_fields: dict[str, Any] = {}
    if cp.included_pass:
        ps = catalogue.pass_product(cp.included_pass)
        assert ps is not None  # the catalogue checked it
        pass_fields = {"pass_product": ps.name, "pass_from_day": today,
                       "pass_to_day": pass_last_day(today, ps.length)}
    counter = (previous.counter if previous else 0) + 1
    if counter > MAX_COUNTER:
        return _refuse(RefusalReason.LIMIT, "the card's transaction counter is used up")
    state = CardState(
        card_id=card_id, counter=counter, chain_id=ctx.chain_id, card_product=cp.name,
        issued_day=today, expiry_day=expiry, **pass_fields,
    )
    before = previous if previous is not None else CardState(card_id=card_id)
    before = replace(before, purse_fen=0, visits={})
    return Done(state, (_record(ctx, before, state, Operation.ISSUE, product=cp.name,
                                visits=(0, 0)),))


def open_account(
    state: CardState, opening_fen: int, *, catalogue: Catalogue, ctx: TerminalContext
) -> Outcome:
    """Open the stored-value purse with an opening amount (开户); bonus tiers apply."""
    if (refusal := _usable(state, ctx)) is not None:
        return refusal
    cp = catalogue.card_product(state.card_product)
    if cp is None or not cp.stored_value:
        return _refuse(RefusalReason.NOT_ALLOWED, f"{state.card_product!r} has no stored-value purse")
    if state.account_open:
        return _refuse(RefusalReason.ACCOUNT_ALREADY_OPEN)
    if not _positive_fen(opening_fen, allow_zero=True):
        return _refuse(RefusalReason.BAD_AMOUNT, f"opening amount {opening_fen!r}")
    if state.purse_fen != 0:
        return _refuse(RefusalReason.NOT_ALLOWED, "a purse that was never opened must be empty")
    bonus = catalogue.bonus_for(opening_fen) if opening_fen else 0
    purse = opening_fen + bonus
    if purse > min(PURSE_MAX, catalogue.purse_limit_fen):
        return _refuse(RefusalReason.LIMIT, f"purse would hold {purse} fen")
    new = _bump(state, purse_fen=purse, account_open=True)
    if isinstance(new, Refusal):
        return new
    return Done(new, (_record(ctx, state, new, Operation.OPEN_ACCOUNT, cash_fen=opening_fen,
                              bonus_fen=bonus),))


def recharge(state: CardState, paid_fen: int, *, catalogue: Catalogue, ctx: TerminalContext) -> Outcome:
    """Top up the purse (充值): the member pays ``paid_fen``, the card gets it plus the
    bonus of the highest tier reached."""
    if (refusal := _usable(state, ctx)) is not None:
        return refusal
    if not state.account_open:
        return _refuse(RefusalReason.ACCOUNT_NOT_OPEN)
    if not _positive_fen(paid_fen):
        return _refuse(RefusalReason.BAD_AMOUNT, f"top-up amount {paid_fen!r}")
    bonus = catalogue.bonus_for(paid_fen)
    purse = state.purse_fen + paid_fen + bonus
    limit = min(PURSE_MAX, catalogue.purse_limit_fen)
    if purse > limit:
        return _refuse(RefusalReason.LIMIT, f"purse would hold {purse} fen, the most is {limit}")
    new = _bump(state, purse_fen=purse)
    if isinstance(new, Refusal):
        return new
    return Done(new, (_record(ctx, state, new, Operation.RECHARGE, cash_fen=paid_fen,
                              bonus_fen=bonus),))


# --- paying -------------------------------------------------------------------------


def checkout_total(lines: Sequence[CheckoutLine], pays_percent: Callable[[str], int]) -> tuple[int, int]:
    """(list price, member price) of a checkout; each line rounds half up to the fen."""
    gross = total = 0
    for line in lines:
        amount = line.unit_price_fen * line.quantity
        gross += amount
        total += (amount * pays_percent(line.category) + 50) // 100
    return gross, total


def debit(
    state: CardState, lines: Sequence[CheckoutLine], *, catalogue: Catalogue,
    ctx: TerminalContext, cash_for_shortfall: bool = True,
) -> Outcome:
    """Pay a checkout (消费): member discount by category, the card pays what it can,
    the rest is reported as cash to take (or the debit is refused without cash)."""
    if (refusal := _usable(state, ctx)) is not None:
        return refusal
    if not lines:
        return _refuse(RefusalReason.BAD_AMOUNT, "an empty checkout")
    for line in lines:
        if not (_positive_fen(line.unit_price_fen, allow_zero=True) and isinstance(line.quantity, int)
                and not isinstance(line.quantity, bool) and 1 <= line.quantity <= 10_000):
            return _refuse(RefusalReason.BAD_AMOUNT, f"checkout line {line!r}")
    cp = catalogue.card_product(state.card_product)
    pays = cp.pays_percent if cp is not None else (lambda _c: 100)
    gross, total = checkout_total(lines, pays)
    if gross > MAX_FEN:
        return _refuse(RefusalReason.BAD_AMOUNT, f"checkout of {gross} fen")
    from_card = min(state.purse_fen, total) if state.account_open else 0
    shortfall = total - from_card
    if shortfall and not cash_for_shortfall:
        return _refuse(RefusalReason.INSUFFICIENT_BALANCE,
                       f"balance {state.purse_fen} fen, checkout {total} fen")
    new = _bump(state, purse_fen=state.purse_fen - from_card)
    if isinstance(new, Refusal):
        return new
    extra = {"gross_fen": gross, "discount_fen": gross - total, "total_fen": total}
    return Done(new, (_record(ctx, state, new, Operation.DEBIT, cash_fen=shortfall, extra=extra),))


def refund(
    state: CardState, original: TransactionRecord, *, catalogue: Catalogue, ctx: TerminalContext
) -> Outcome:
    """Reverse a debit (退款): what the card paid goes back onto the purse, the cash
    taken for the shortfall is paid back. HQ refuses a second reversal of one debit."""
    if (refusal := _usable(state, ctx, check_expiry=False)) is not None:
        return refusal
    card_paid = original.purse_before - original.purse_after
    if (original.operation != Operation.DEBIT or original.card_id != state.card_id
            or original.card_counter > state.counter or card_paid < 0
            or (card_paid == 0 and original.cash_fen == 0)):
        return _refuse(RefusalReason.NOT_REFUNDABLE,
                       f"{original.operation.name} {original.device_id}#{original.seq}")
    purse = state.purse_fen + card_paid
    if purse > min(PURSE_MAX, catalogue.purse_limit_fen):
        return _refuse(RefusalReason.LIMIT, f"purse would hold {purse} fen")
    new = _bump(state, purse_fen=purse)
    if isinstance(new, Refusal):
        return new
    extra = {"reverses": f"{original.device_id}#{original.seq}"}
    return Done(new, (_record(ctx, state, new, Operation.REFUND, cash_fen=-original.cash_fen,
                              extra=extra),))


# --- visits and passes --------------------------------------------------------------


def add_visits(
    state: CardState, product: str, packages: int = 1, *, catalogue: Catalogue,
    ctx: TerminalContext, pay_from_purse: bool = False,
) -> Outcome:
    """Sell packages of a count product onto the card (充次), paid in cash or from the purse."""
    if (refusal := _usable(state, ctx)) is not None:
        return refusal
    cp = catalogue.card_product(state.card_product)
    count = catalogue.count_product(product)
    if count is None:
        return _refuse(RefusalReason.UNKNOWN_PRODUCT, f"no count product {product!r}")
    if cp is None or product not in cp.count_products:
        return _refuse(RefusalReason.NOT_ALLOWED, f"{product!r} cannot be sold onto {state.card_product!r}")
    if not isinstance(packages, int) or isinstance(packages, bool) or not 1 <= packages <= 1000:
        return _refuse(RefusalReason.BAD_AMOUNT, f"packages {packages!r}")
    held = dict(state.visits)
    if product not in held and len(held) >= 3:
        used_up = next((name for name, left in held.items() if left == 0), None)
        if used_up is None:
            return _refuse(RefusalReason.NO_FREE_SLOT, "the card already holds 3 count products")
        del held[used_up]  # a used-up product gives its slot to the new one
    left = state.visits_of(product) + count.visits * packages
    if left > 0xFFFF:
        return _refuse(RefusalReason.LIMIT, f"{left} visits of {product}, the most is 65535")
    price = count.price_fen * packages
    if price > MAX_FEN:
        return _refuse(RefusalReason.BAD_AMOUNT, f"price {price} fen")
    purse = state.purse_fen
    if pay_from_purse:
        if not state.account_open or purse < price:
            return _refuse(RefusalReason.INSUFFICIENT_BALANCE, f"balance {purse}, price {price} fen")
        purse -= price
    new = _bump(state, visits={**held, product: left}, purse_fen=purse)
    if isinstance(new, Refusal):
        return new
    return Done(new, (_record(ctx, state, new, Operation.ADD_VISITS, product=product,
                              cash_fen=0 if pay_from_purse else price),))


def sell_pass(
    state: CardState, pass_name: str, *, catalogue: Catalogue, ctx: TerminalContext,
    pay_from_purse: bool = False,
) -> Outcome:
    """Sell a time pass (月卡/季卡/年卡), or renew it: a renewal of a pass still valid
    starts the day after it ends, so no paid day is lost."""
    if (refusal := _usable(state, ctx)) is not None:
        return refusal
    ps = catalogue.pass_product(pass_name)
    if ps is None:
        return _refuse(RefusalReason.UNKNOWN_PRODUCT, f"no pass {pass_name!r}")
    cp = catalogue.card_product(state.card_product)
    if cp is None or (pass_name not in cp.passes and pass_name != cp.included_pass):
        return _refuse(RefusalReason.NOT_ALLOWED, f"{pass_name!r} cannot be sold onto {state.card_product!r}")
    today = ctx.today
    current = state.pass_product and state.pass_to_day >= today
    if current and state.pass_product != pass_name:
        return _refuse(RefusalReason.NOT_ALLOWED, f"the card holds a valid {state.pass_product!r} pass")
    first = state.pass_from_day if current else today
    last = pass_last_day(state.pass_to_day + 1 if current else today, ps.length)
    if last > 0xFFFF:
        return _refuse(RefusalReason.LIMIT, "pass would end beyond the card's calendar")
    purse = state.purse_fen
    if pay_from_purse:
        if not state.account_open or purse < ps.price_fen:
            return _refuse(RefusalReason.INSUFFICIENT_BALANCE, f"balance {purse}, price {ps.price_fen} fen")
        purse -= ps.price_fen
    new = _bump(state, pass_product=pass_name, pass_from_day=first, pass_to_day=last, purse_fen=purse)
    if isinstance(new, Refusal):
        return new
    return Done(new, (_record(ctx, state, new, Operation.SELL_PASS, product=pass_name,
                              cash_fen=0 if pay_from_purse else ps.price_fen, visits=(0, 0),
                              extra={"pass_from_day": first, "pass_to_day": last}),))


def take_visit(state: CardState, *, catalogue: Catalogue, ctx: TerminalContext) -> Outcome:
    """One entry through a gate (刷卡入闸).

    Checks, in order: the card (format, chain, recalled, blocked, expired), the
    anti-passback window of this gate group, the card product's daily limit; then
    what pays for the entry: a valid time pass, a free ticket of today, or one visit of
    a count product this gate accepts (in the order the card holds them).
    """
    if (refusal := _usable(state, ctx)) is not None:
        return refusal
    today, minute = ctx.today, ctx.minute_of_day
    now_min = today * 1440 + minute
    used_today = state.uses_today if state.last_use_day == today else 0
    ever_used = state.last_use_day or state.last_use_minute or state.uses_today
    window = catalogue.anti_passback_minutes.get(ctx.gate_group, 0)
    last_min = state.last_use_day * 1440 + state.last_use_minute
    if window and ever_used and state.last_gate_group == ctx.gate_group and 0 <= now_min - last_min < window:
        return _refuse(RefusalReason.ANTI_PASSBACK,
                       f"entered gate group {ctx.gate_group} {now_min - last_min} min ago")
    cp = catalogue.card_product(state.card_product)
    if cp is not None and cp.daily_limit and used_today >= cp.daily_limit:
        return _refuse(RefusalReason.DAILY_LIMIT, f"{used_today} entries today, limit {cp.daily_limit}")

    def accepted(name: str) -> bool:
        return not ctx.accepts or name in ctx.accepts

    product = ""
    visits: tuple[int, int] = (0, 0)
    new_visits = state.visits
    pass_ok = state.pass_product and accepted(state.pass_product)
    if pass_ok and state.pass_from_day <= today <= state.pass_to_day:
        product = state.pass_product
    elif cp is not None and cp.free_per_day and accepted(cp.name) and used_today < cp.free_per_day:
        product = cp.name
    else:
        for name, left in state.visits.items():
            if left > 0 and accepted(name):
                product, visits = name, (left, left - 1)
                new_visits = {**state.visits, name: left - 1}
                break
    if not product:
        if pass_ok and today < state.pass_from_day:
            return _refuse(RefusalReason.NOT_YET_VALID, f"{state.pass_product} starts on day {state.pass_from_day}")
        if pass_ok and today > state.pass_to_day:
            return _refuse(RefusalReason.EXPIRED, f"{state.pass_product} ended on day {state.pass_to_day}")
        if cp is not None and cp.free_per_day and accepted(cp.name):
            return _refuse(RefusalReason.DAILY_LIMIT, f"{cp.free_per_day} free entries a day, used")
        return _refuse(RefusalReason.EXHAUSTED, "no visits left for this gate")
    new = _bump(
        state, visits=new_visits, last_use_day=today, last_use_minute=minute,
        uses_today=min(15, used_today + 1), last_gate_group=ctx.gate_group,
    )
    if isinstance(new, Refusal):
        return new
    return Done(new, (_record(ctx, state, new, Operation.TAKE_VISIT, product=product, visits=visits),))


# --- taking cards out of use -----------------------------------------------------------


def recall(state: CardState, *, catalogue: Catalogue, ctx: TerminalContext,
           pay_out: bool = True) -> Outcome:
    """Take the card back and empty it (收缴/退卡). The purse is paid out in cash when
    ``pay_out`` (a member returning a card), else it stays with the venue (a card
    confiscated). One record empties the purse, one more per count product with visits."""
    if (refusal := _usable(state, ctx, check_expiry=False)) is not None and \
            refusal.reason is not RefusalReason.BLOCKED:
        return refusal
    new = _bump(state, purse_fen=0, visits={}, account_open=False, recalled=True, blocked=False,
                pass_product="", pass_from_day=0, pass_to_day=0)
    if isinstance(new, Refusal):
        return new
    records = [_record(ctx, state, new, Operation.RECALL, cash_fen=-state.purse_fen if pay_out else 0,
                       visits=(0, 0))]
    empty = replace(state, purse_fen=0)
    for name, left in state.visits.items():
        if left:
            records.append(_record(ctx, empty, new, Operation.RECALL, product=name, visits=(left, 0)))
    return Done(new, tuple(records))


def read_balance(state: CardState, *, catalogue: Catalogue, ctx: TerminalContext) -> Outcome:
    """The card as it stands (查询余额): purse, visits, pass. Writes nothing and records
    nothing (``Done`` with no records); a denylisted card is still caught by
    :func:`check_denylist`, which runs before every operation on an issued card."""
    return Done(state, ())


def uid_visit(card_id: str, *, kind: str, amount_fen: int, ctx: TerminalContext,
              product: str = "", under_risk_cap: bool = False, approval: str = "") -> TransactionRecord:
    """The record of one use of a UID-only credential (an ID card, a QR code) that the
    terminal's authoriser approved: no card memory changes, so it is a record only.
    ``ctx.offline`` says the approval was local (within the risk caps)."""
    flags = int(Flag.OFFLINE) if ctx.offline else 0
    if under_risk_cap:
        flags |= int(Flag.UNDER_RISK_CAP)
    extra: dict[str, Any] = {"credential_kind": kind, "amount_fen": amount_fen}
    if approval:
        extra["approval"] = approval
    return TransactionRecord(
        device_id=ctx.device_id, seq=1, prev_hash=GENESIS_HASH, device_time_ms=ctx.now_ms,
        card_id=card_id, operation=Operation.UID_VISIT, store=ctx.store, product=product,
        operator=ctx.operator, flags=flags, extra=extra)


def check_denylist(state: CardState, denylist: Collection[str], *, ctx: TerminalContext) -> Outcome | None:
    """None when the card is not denylisted. A denylisted card (挂失) is refused; if it
    is not yet marked blocked on the card, the result is a :class:`Done` that writes the
    block (and records it) while still refusing the member."""
    if state.card_id not in denylist:
        return None
    refusal = _refuse(RefusalReason.DENYLISTED, f"card {state.card_id}")
    if state.blocked or state.recalled:
        return refusal
    new = _bump(state, blocked=True)
    if isinstance(new, Refusal):
        return refusal
    return Done(new, (_record(ctx, state, new, Operation.BLOCK, visits=(0, 0)),), refusal=refusal)


# --- the table of operations -------------------------------------------------------


class CardNeed(enum.Enum):
    """What an operation needs to find on the card before it runs."""

    ISSUED = "an issued card of this chain (checked against the denylist first)"
    BLANK_OR_RECALLED = "a blank card, or a recalled one to reissue (None when blank)"


@dataclass(frozen=True)
class CardOperation:
    """One entry of :data:`OPERATIONS`: the function, what it needs, whether it writes."""

    name: str
    run: Callable[..., Outcome]
    needs: CardNeed = CardNeed.ISSUED
    writes: bool = True  # False: the operation only reads the card (no records either)


#: Every card operation, by name: what the runner, :func:`on_image` and the roles use.
OPERATIONS: dict[str, CardOperation] = {op.name: op for op in (
    CardOperation("issue", issue, CardNeed.BLANK_OR_RECALLED),
    CardOperation("open_account", open_account),
    CardOperation("recharge", recharge),
    CardOperation("debit", debit),
    CardOperation("refund", refund),
    CardOperation("add_visits", add_visits),
    CardOperation("sell_pass", sell_pass),
    CardOperation("take_visit", take_visit),
    CardOperation("recall", recall),
    CardOperation("read_balance", read_balance, writes=False),
)}


def card_operation(operation: str | Callable[..., Outcome]) -> CardOperation:
    """The table entry for ``operation`` (its name, or the function itself). Raises
    ValueError for anything that is not a card operation."""
    name = operation if isinstance(operation, str) else getattr(operation, "__name__", "")
    found = OPERATIONS.get(name)
    if found is None or (not isinstance(operation, str) and found.run is not operation):
        raise ValueError(f"{operation!r} is not a card operation")
    return found


# --- whole card images ---------------------------------------------------------------


@dataclass(frozen=True)
class ImageResult:
    image: bytes
    done: Done


def on_image(
    image: bytes, operation: str | Callable[..., Outcome], *args: Any, keys: ChainKeys,
    catalogue: Catalogue, **kwargs: Any,
) -> ImageResult | Refusal:
    """Run ``operation`` on the state in a 1024-byte card image and write the result back.

    An operation that needs a blank or recalled card (``issue``) personalises the image;
    every other one reads the newest valid copy first. Card data that cannot be read
    becomes a Refusal. (No denylist here: a dump has no terminal around it.)
    """
    op = card_operation(operation)
    try:
        if op.needs is CardNeed.BLANK_OR_RECALLED:
            try:
                previous: CardState | None = read_image(image, keys, catalogue).state
            except CardFormatError as exc:
                if exc.reason is not RefusalReason.NOT_ONECARD:
                    return exc.refusal()
                previous = None
            outcome = op.run(previous, *args, catalogue=catalogue, **kwargs)
            if isinstance(outcome, Refusal):
                return outcome
            return ImageResult(personalise_image(image, outcome.state, keys, catalogue), outcome)
        state = read_image(image, keys, catalogue).state
        outcome = op.run(state, *args, catalogue=catalogue, **kwargs)
        if isinstance(outcome, Refusal):
            return outcome
        if not op.writes:
            return ImageResult(image, outcome)
        return ImageResult(write_image(image, outcome.state, keys, catalogue), outcome)
    except CardFormatError as exc:
        return exc.refusal()
