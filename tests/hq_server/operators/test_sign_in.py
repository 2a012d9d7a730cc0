"""Signing in: back-off, lock-out, unlock, staff cards, sessions and API tokens (both
stores), and what goes to the security log versus the audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hq_server.db.tables import api_tokens, audit_log, operator_sessions, security_events
from hq_server.operators.access import Scope
from hq_server.operators.accounts import disable_operator, get_operator, unlock_operator
from hq_server.operators.api_tokens import (
    actor_of_token,
    create_api_token,
    list_api_tokens,
    revoke_api_token,
)
from hq_server.operators.errors import (
    AuthenticationFailed,
    CsrfRejected,
    OperatorError,
    SignInThrottled,
)
from hq_server.operators.lockout import MINUTE, SECOND
from hq_server.operators.sessions import (
    ROTATION_GRACE_MS,
    close_session,
    open_session,
    resume_session,
)
from hq_server.operators.signin import sign_in, verify_staff_card
from hq_server.operators.staff_cards import assign_staff_card
from tests.hq_records import STORES, store_engine
from tests.hq_server.operators.chain import NOW, PASSWORD, make_chain, operator


@pytest.fixture(params=STORES)
def engine(request):
    engine = store_engine(request)
    make_chain(engine)
    return engine


def attempt(engine, name: str, password: str, now: int, address: str = "198.51.100.7"):
    """What a sign-in answers: 'ok', 'wrong' or ('wait', seconds)."""
    try:
        sign_in(engine, name, password, address, now)
        return "ok"
    except AuthenticationFailed:
        return "wrong"
    except SignInThrottled as exc:
        return ("wait", exc.retry_after_s)


def audit_actions(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(audit_log.c.operator, audit_log.c.action, audit_log.c.target_id)
            .order_by(audit_log.c.seq))]


def test_back_off_lock_out_and_unlock_look_the_same_for_unknown_names(engine):
    operator(engine, "cash", "cashier", "store:S1")
    manager = operator(engine, "mgr", "store_manager", "store:S1")

    def run(name: str, address: str) -> list:
        now, seen = NOW, []
        for _ in range(10):
            seen.append(attempt(engine, name, "wrong password", now, address))
            seen.append(attempt(engine, name, "wrong password", now, address))  # at once
            now += 61 * SECOND
        seen.append(attempt(engine, name, PASSWORD, now, address))  # locked: even right
        return seen

    real, ghost = run("cash", "192.0.2.1"), run("ghost", "192.0.2.2")
    assert real == ghost  # nothing tells which names exist
    # two free failures, then each retry at once must wait 1, 2, 4 ... s; the tenth locks
    assert real[:8] == ["wrong", "wrong", "wrong", ("wait", 1), "wrong", ("wait", 2),
                        "wrong", ("wait", 4)]
    assert real.count("wrong") == 10 and real[16] == "wrong"
    assert real[17] == ("wait", 30 * 60) and real[20] == ("wait", 30 * 60 - 2 * 61)
    assert ("system", "operator.lock", "cash") in audit_actions(engine)
    assert not any(t == "ghost" for _, _, t in audit_actions(engine))
    assert get_operator(manager, engine, "cash", now_ms=NOW + 11 * MINUTE).locked_until_ms
    unlock_operator(manager, engine, "cash", now_ms=NOW + 11 * MINUTE)
    assert audit_actions(engine)[-1] == ("mgr", "operator.unlock", "cash")
    assert attempt(engine, "cash", PASSWORD, NOW + 11 * MINUTE) == "ok"


def test_a_lock_ends_by_itself_after_thirty_minutes(engine):
    operator(engine, "cash", "cashier", "store:S1")
    now = NOW
    for _ in range(10):
        assert attempt(engine, "cash", "nope nope nope", now) == "wrong"
        now += 61 * SECOND
    last = now - 61 * SECOND
    assert attempt(engine, "cash", PASSWORD, last + 30 * MINUTE - SECOND)[0] == "wait"
    assert attempt(engine, "cash", PASSWORD, last + 30 * MINUTE) == "ok"


def test_an_address_trying_many_names_is_blocked_for_every_name(engine):
    operator(engine, "cash", "cashier", "store:S1")
    for i in range(30):
        assert attempt(engine, f"guess{i}", "password123456", NOW + i, "203.0.113.9") == "wrong"
    assert attempt(engine, "cash", PASSWORD, NOW + 40, "203.0.113.9")[0] == "wait"
    assert attempt(engine, "cash", PASSWORD, NOW + 40, "192.0.2.1") == "ok"
    assert attempt(engine, "cash", PASSWORD, NOW + 40 + 15 * MINUTE, "203.0.113.9") == "ok"


def test_sign_ins_go_to_the_security_log_without_secrets(engine):
    operator(engine, "cash", "cashier", "store:S1")
    attempt(engine, "cash", "a wrong one long ago", NOW - 91 * 24 * 60 * MINUTE)
    attempt(engine, "cash", "my wrong secret", NOW)
    attempt(engine, "cash", PASSWORD, NOW + 1)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(
            select(security_events.c.event, security_events.c.subject,
                   security_events.c.address, security_events.c.detail)
            .order_by(security_events.c.id))]
    assert [r[:3] for r in rows] == [("login.failed", "operator:cash", "198.51.100.7"),
                                     ("login.ok", "operator:cash", "198.51.100.7")]
    assert "secret" not in repr(rows) and PASSWORD not in repr(rows)
    assert not any(a.startswith("login") for _, a, _ in audit_actions(engine))


def test_a_staff_card_and_pin_sign_in_and_five_wrong_pins_lock_the_card(engine):
    admin = operator(engine, "boss", "hq_admin", "chain")
    operator(engine, "cash", "cashier", "store:S1")
    with pytest.raises(OperatorError, match="run"):
        assign_staff_card(admin, engine, "STAFF-1", "cash", "123456", NOW)
    assign_staff_card(admin, engine, "STAFF-1", "cash", "482913", NOW)
    actor = verify_staff_card(engine, "STAFF-1", "482913", "10.0.0.5", NOW)
    assert (actor.operator, actor.role, str(actor.scope)) == ("cash", "cashier", "store:S1")
    now = NOW
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            verify_staff_card(engine, "STAFF-1", "000111", "10.0.0.5", now)
        now += 40 * SECOND
    with pytest.raises(SignInThrottled):
        verify_staff_card(engine, "STAFF-1", "482913", "10.0.0.5", now)
    assert ("system", "staff_card.lock", "STAFF-1") in audit_actions(engine)
    unlock_operator(admin, engine, "cash", now_ms=now)
    assert verify_staff_card(engine, "STAFF-1", "482913", "10.0.0.5", now).operator == "cash"
    live = open_session(engine, actor, "staff_card", now)
    with pytest.raises(AuthenticationFailed):  # a short session: 10 minutes idle
        resume_session(engine, live.token, ("staff_card",), "h", now + 10 * MINUTE)


def test_sessions_time_out_idle_and_absolute_and_rotate_their_id(engine):
    cashier = operator(engine, "cash", "cashier", "store:S1")
    live = open_session(engine, cashier, "browser", NOW)
    rotated, rotations, rotated_at = None, 0, NOW
    token, now = live.token, NOW
    while now < NOW + 12 * 60 * MINUTE - 10 * MINUTE:  # used every 10 minutes: never idle
        now += 10 * MINUTE
        _, seen = resume_session(engine, token, ("browser",), "b", now)
        if seen.token is not None:
            rotated, token, rotations, rotated_at = token, seen.token, rotations + 1, now
    assert rotations == 12 * 60 // 20 - 1 and rotated != token  # every 15 min of use
    # the old id serves requests already under way for a moment, then never again
    resume_session(engine, rotated, ("browser",), "b", rotated_at + ROTATION_GRACE_MS - 1)
    with pytest.raises(AuthenticationFailed):
        resume_session(engine, rotated, ("browser",), "b", rotated_at + ROTATION_GRACE_MS)
    with pytest.raises(AuthenticationFailed):  # absolute: 12 hours, however busy
        resume_session(engine, token, ("browser",), "b", NOW + 12 * 60 * MINUTE)
    idle = open_session(engine, cashier, "browser", NOW)
    with pytest.raises(AuthenticationFailed):
        resume_session(engine, idle.token, ("browser",), "b", NOW + 30 * MINUTE)


def test_a_browser_session_needs_its_csrf_token_to_change_data(engine):
    cashier = operator(engine, "cash", "cashier", "store:S1")
    live = open_session(engine, cashier, "browser", NOW)
    resume_session(engine, live.token, ("browser",), "b", NOW + 1)  # reading: no token needed
    with pytest.raises(CsrfRejected):
        resume_session(engine, live.token, ("browser",), "b", NOW + 2, unsafe=True)
    with pytest.raises(CsrfRejected):
        resume_session(engine, live.token, ("browser",), "b", NOW + 3, unsafe=True,
                       csrf="guess")
    resume_session(engine, live.token, ("browser",), "b", NOW + 4, unsafe=True,
                   csrf=live.csrf_token)
    with pytest.raises(AuthenticationFailed):  # a browser id is no bearer token
        resume_session(engine, live.token, ("cli", "staff_card"), "b", NOW + 5)
    assert close_session(engine, live.token)
    with pytest.raises(AuthenticationFailed):
        resume_session(engine, live.token, ("browser",), "b", NOW + 6)
    with engine.connect() as conn:
        stored = conn.execute(select(operator_sessions.c.session_hash)).scalars().all()
    assert live.token not in stored


def test_api_tokens_are_narrower_hashed_revocable_and_know_when_last_used(engine):
    manager = operator(engine, "mgr", "store_manager", "store:S1")
    region = operator(engine, "rm", "region_manager", "region:north")
    secret, made = create_api_token(region, engine, "crm", NOW, scope=Scope.parse("store:S2"),
                                    permissions=["members.read"])
    actor = actor_of_token(engine, secret, "api x", NOW + 1)
    assert (str(actor.scope), actor.can("members.read"), actor.can("members.write")) == (
        "store:S2", True, False)
    with pytest.raises(OperatorError, match="within yours"):
        create_api_token(manager, engine, "wide", NOW, scope=Scope.parse("region:north"))
    with pytest.raises(OperatorError, match="lacks"):
        create_api_token(manager, engine, "stores", NOW, permissions=["stores.write"])
    with pytest.raises(OperatorError, match="already"):
        create_api_token(region, engine, "crm", NOW)
    listed = list_api_tokens(region, engine)
    assert [t.last_used_at_ms for t in listed] == [NOW + 1]
    assert secret not in repr(listed)
    with engine.connect() as conn:
        assert secret not in repr(conn.execute(select(api_tokens)).all())
    with pytest.raises(LookupError):  # another operator's token: as if it did not exist
        revoke_api_token(manager, engine, made.token_id, NOW + 2)
    revoke_api_token(region, engine, made.token_id, NOW + 2)
    with pytest.raises(AuthenticationFailed):
        actor_of_token(engine, secret, "api x", NOW + 3)
    assert [a for _, a, _ in audit_actions(engine)][-2:] == ["api_token.create",
                                                             "api_token.revoke"]


def test_a_disabled_operator_is_signed_out_everywhere(engine):
    admin = operator(engine, "boss", "hq_admin", "chain")
    cashier = operator(engine, "cash", "cashier", "store:S1")
    live = open_session(engine, cashier, "cli", NOW)
    secret, _ = create_api_token(cashier, engine, "till", NOW)
    disable_operator(admin, engine, "cash", now_ms=NOW)
    with pytest.raises(AuthenticationFailed):
        resume_session(engine, live.token, ("cli",), "c", NOW + 1)
    with pytest.raises(AuthenticationFailed):
        actor_of_token(engine, secret, "c", NOW + 1)
    assert attempt(engine, "cash", PASSWORD, NOW + 1) == "wrong"
