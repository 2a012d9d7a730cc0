"""Signing in: a password (browser, CLI, HTTP Basic) or a staff card and PIN (handhelds).

Every attempt first asks whether its subjects may try at all (the operator name or card,
and the client address; rules in :mod:`hq_server.operators.lockout`), then checks the
secret, then records the outcome. The answers to a wrong password, an unknown name and
a disabled operator are the same, and so are the lock-outs, because unknown names are
counted too.

What goes where:

* the **security log** (table ``security_events``, and Python logging at INFO/WARNING):
  every sign-in, failure, throttled attempt and sign-out. Anyone on the network can
  cause these rows, so they stay out of the audit log, which they would flood; they are
  pruned after :data:`SECURITY_LOG_DAYS` days, at each successful sign-in.
* the **audit log** (hash-chained, :func:`hq_server.audit.log.record_action`): changes
  to an operator's state — ``operator.lock`` when failures lock a real operator (by
  ``system``, from the address of the last attempt) and ``operator.unlock`` by a
  manager, ``staff_card.lock`` likewise.
"""

from __future__ import annotations

import logging

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from hq_server.audit.log import record_action
from hq_server.db.tables import login_throttle, operators, security_events, staff_cards
from hq_server.operators import accounts, lockout
from hq_server.operators.access import SYSTEM, Actor
from hq_server.operators.accounts import active_operator, verify_password
from hq_server.operators.errors import AuthenticationFailed, SignInThrottled

log = logging.getLogger(__name__)

SECURITY_LOG_DAYS = 90
_DAY_MS = 24 * 3600 * 1000


def _subject(kind: str, ident: str) -> str:
    return f"{kind}:{ident}"[:160]


def throttle_state(conn: Connection, subject: str) -> lockout.Throttle:
    row = conn.execute(select(login_throttle).where(login_throttle.c.subject == subject)
                       ).mappings().first()
    if row is None:
        return lockout.Throttle()
    return lockout.Throttle(int(row["failures"]), int(row["first_failure_at_ms"]),
                            int(row["last_failure_at_ms"]), row["blocked_until_ms"])


def _store_state(conn: Connection, subject: str, state: lockout.Throttle) -> None:
    values = {"failures": state.failures, "first_failure_at_ms": state.first_failure_at_ms,
              "last_failure_at_ms": state.last_failure_at_ms,
              "blocked_until_ms": state.blocked_until_ms}
    done = conn.execute(update(login_throttle).where(login_throttle.c.subject == subject)
                        .values(**values))
    if done.rowcount == 0:
        try:
            with conn.begin_nested():
                conn.execute(insert(login_throttle).values(subject=subject, **values))
        except IntegrityError:  # a concurrent failure inserted it first
            conn.execute(update(login_throttle).where(login_throttle.c.subject == subject)
                         .values(**values))


def security_event(conn: Connection, event: str, subject: str, address: str, now_ms: int,
                   detail: str = "") -> None:
    """One row of the security log (never a password, PIN or token)."""
    conn.execute(insert(security_events).values(at_ms=now_ms, event=event,
                                                subject=subject[:160], address=address[:64],
                                                detail=detail[:200]))
    level = logging.INFO if event.endswith(".ok") or event == "logout" else logging.WARNING
    log.log(level, "security: %s %s from %s %s", event, subject, address, detail)


def prune_security_log(conn: Connection, now_ms: int) -> int:
    """Forget security events older than :data:`SECURITY_LOG_DAYS` (done at each
    successful sign-in: an indexed delete, so the log never grows without bound)."""
    return conn.execute(delete(security_events).where(
        security_events.c.at_ms < now_ms - SECURITY_LOG_DAYS * _DAY_MS)).rowcount


def _refuse_if_throttled(engine: Engine, subjects: list[tuple[str, lockout.Policy]],
                         address: str, now_ms: int) -> None:
    with engine.connect() as conn:
        wait = max(lockout.wait_ms(throttle_state(conn, s), now_ms, p) for s, p in subjects)
    if wait > 0:
        with engine.begin() as conn:
            security_event(conn, "login.throttled", subjects[0][0], address, now_ms,
                           f"wait {wait} ms")
        raise SignInThrottled(wait)


def _count_failure(engine: Engine, subjects: list[tuple[str, lockout.Policy]], address: str,
                   now_ms: int, event: str, locks: dict[str, tuple[str, str, str]]) -> None:
    """Record one failure for each subject; audit the lock of a real operator or card.

    ``locks`` maps a subject to the (action, target kind, target id) its lock is audited
    as (only subjects that name something that exists)."""
    with engine.begin() as conn:
        for subject, policy in subjects:
            state, locked = lockout.after_failure(throttle_state(conn, subject), now_ms,
                                                  policy)
            _store_state(conn, subject, state)
            if locked:
                security_event(conn, "lockout", subject, address, now_ms,
                               f"{state.failures} failures")
                if subject in locks:
                    action, kind, ident = locks[subject]
                    actor = Actor(SYSTEM.operator, SYSTEM.role, SYSTEM.scope,
                                  f"api {address}"[:128])
                    record_action(conn, actor, action, kind, ident, None,
                                  {"failures": state.failures,
                                   "locked_until_ms": state.blocked_until_ms}, now_ms)
        security_event(conn, event, subjects[0][0], address, now_ms)


def sign_in(engine: Engine, username: str, password: str, address: str, now_ms: int,
            origin: str | None = None) -> Actor:
    """The operator's Actor if name and password match, with back-off and lock-out.

    Raises SignInThrottled before checking anything when the name or the address must
    wait, AuthenticationFailed on any failure (saying nothing about which)."""
    username = (username or "")[:64]
    subjects = [(_subject("operator", username), lockout.OPERATOR),
                (_subject("address", address), lockout.ADDRESS)]
    _refuse_if_throttled(engine, subjects, address, now_ms)
    found = verify_password(engine, username, password)
    if found is None:
        with engine.connect() as conn:
            exists = conn.execute(select(operators.c.username)
                                  .where(operators.c.username == username)).first()
        locks = {subjects[0][0]: ("operator.lock", "operator", username)} if exists else {}
        _count_failure(engine, subjects, address, now_ms, "login.failed", locks)
        raise AuthenticationFailed("wrong operator name or password")
    with engine.begin() as conn:
        conn.execute(delete(login_throttle).where(login_throttle.c.subject == subjects[0][0]))
        conn.execute(update(operators).where(operators.c.username == found.username)
                     .values(last_login_at_ms=now_ms))
        security_event(conn, "login.ok", subjects[0][0], address, now_ms)
        prune_security_log(conn, now_ms)
    assert found.scope is not None
    return Actor(found.username, found.role, found.scope, origin or f"api {address}")


def verify_staff_card(engine: Engine, card_id: str, pin: str, address: str, now_ms: int,
                      ) -> Actor:
    """The Actor of the operator holding an active staff card whose PIN matches.

    Wrong PINs are counted per card (5 lock it for 30 minutes) and per address."""
    card_id = (card_id or "")[:64]
    subjects = [(_subject("staff_card", card_id), lockout.STAFF_CARD),
                (_subject("address", address), lockout.ADDRESS)]
    _refuse_if_throttled(engine, subjects, address, now_ms)
    with engine.connect() as conn:
        row = conn.execute(select(staff_cards).where(staff_cards.c.card_id == card_id)
                           ).mappings().first()
        holder = active_operator(conn, row["operator"]) if row is not None else None
    try:
        accounts._hasher.verify(row["pin_hash"] if row else accounts._DUMMY_HASH, (pin or "")[:64])
        ok = row is not None and row["status"] == "active" and holder is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        locks = {subjects[0][0]: ("staff_card.lock", "staff_card", card_id)} if row else {}
        _count_failure(engine, subjects, address, now_ms, "staff_card.failed", locks)
        raise AuthenticationFailed("unknown staff card or wrong PIN")
    assert holder is not None and holder.scope is not None
    with engine.begin() as conn:
        conn.execute(delete(login_throttle).where(login_throttle.c.subject == subjects[0][0]))
        conn.execute(update(operators).where(operators.c.username == holder.username)
                     .values(last_login_at_ms=now_ms))
        security_event(conn, "staff_card.ok", subjects[0][0], address, now_ms,
                       holder.username)
    return Actor(holder.username, holder.role, holder.scope, f"handheld {address}"[:128])
