"""Sessions: what an operator holds after signing in, until it times out or signs out.

Three kinds, each with an idle and an absolute timeout:

========== ============================================= ========= ==========
kind       carried as                                     idle      absolute
========== ============================================= ========= ==========
browser    cookie ``__Host-onecard-session`` + CSRF token 30 min    12 h
cli        bearer token in ~/.config/onecard/session.json 8 h       24 h
staff_card bearer token on the handheld                   10 min    8 h (a shift)
========== ============================================= ========= ==========

A session id is 32 random bytes (``ocs_...``); HQ stores only its SHA-256, so a copy of
the database signs nobody in. A browser session's id rotates every
:data:`ROTATE_MS` of use (the old id keeps working for :data:`ROTATION_GRACE_MS`, for
requests already under way), and signing in always starts a new session, so an id
planted before sign-in (session fixation) is worthless. Its CSRF token (synchronizer
token) stays for the whole session and must come back in the ``X-CSRF-Token`` header
of every request that changes data.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from hq_server.db.tables import operator_sessions
from hq_server.operators.access import Actor
from hq_server.operators.accounts import active_operator
from hq_server.operators.errors import AuthenticationFailed, CsrfRejected

MINUTE = 60 * 1000
HOUR = 60 * MINUTE
PREFIX = "ocs_"
#: kind → (idle timeout, absolute timeout), in ms.
TIMEOUTS: dict[str, tuple[int, int]] = {
    "browser": (30 * MINUTE, 12 * HOUR),
    "cli": (8 * HOUR, 24 * HOUR),
    "staff_card": (10 * MINUTE, 8 * HOUR),
}
ROTATE_MS = 15 * MINUTE
ROTATION_GRACE_MS = 30 * 1000
COOKIE = "__Host-onecard-session"
CSRF_HEADER = "X-CSRF-Token"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A live session: its id (only when just issued or rotated), and what it is for."""

    operator: str
    kind: str
    csrf_token: str | None
    expires_at_ms: int
    idle_ms: int
    token: str | None = None  # the id to hand back: set at sign-in and on rotation


def open_session(engine: Engine, actor: Actor, kind: str, now_ms: int) -> Session:
    """A new session for a signed-in operator (never reusing an id the client had)."""
    idle, absolute = TIMEOUTS[kind]
    token = PREFIX + secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32) if kind == "browser" else None
    with engine.begin() as conn:
        conn.execute(insert(operator_sessions).values(
            session_hash=token_hash(token), operator=actor.operator, kind=kind,
            csrf_token=csrf, origin=actor.origin[:128], created_at_ms=now_ms,
            issued_at_ms=now_ms, last_seen_at_ms=now_ms, expires_at_ms=now_ms + absolute,
            idle_ms=idle))
    return Session(actor.operator, kind, csrf, now_ms + absolute, idle, token)


def resume_session(engine: Engine, token: str, kinds: tuple[str, ...], origin: str,
                   now_ms: int, *, csrf: str | None = None, unsafe: bool = False,
                   ) -> tuple[Actor, Session]:
    """The Actor of a live session, its idle clock restarted (and its id rotated when due).

    ``unsafe`` (a request that changes data) on a browser session requires ``csrf`` to
    equal the session's token (CsrfRejected). An unknown, expired or idle session, or
    one of a disabled operator, is AuthenticationFailed."""
    if not token.startswith(PREFIX) or len(token) > 100:
        raise AuthenticationFailed("unknown or expired session")
    digest = token_hash(token)
    with engine.begin() as conn:
        row = conn.execute(select(operator_sessions)
                           .where(operator_sessions.c.session_hash == digest)
                           ).mappings().first()
        if row is None or row["kind"] not in kinds:
            raise AuthenticationFailed("unknown or expired session")
        if now_ms >= row["expires_at_ms"] or now_ms - row["last_seen_at_ms"] >= row["idle_ms"]:
            conn.execute(delete(operator_sessions)
                         .where(operator_sessions.c.session_hash == digest))
            raise AuthenticationFailed("session expired: sign in again")
        if unsafe and row["kind"] == "browser" and not (
                csrf and row["csrf_token"] and hmac.compare_digest(csrf, row["csrf_token"])):
            raise CsrfRejected(f"a browser session must send its {CSRF_HEADER} header to "
                               "change data")
        holder = active_operator(conn, row["operator"])
        if holder is None or holder.scope is None:
            raise AuthenticationFailed("unknown or expired session")
        new_token = None
        if row["kind"] == "browser" and now_ms - row["issued_at_ms"] >= ROTATE_MS:
            new_token = PREFIX + secrets.token_urlsafe(32)
            conn.execute(insert(operator_sessions).values(
                **{**dict(row), "session_hash": token_hash(new_token), "issued_at_ms": now_ms,
                   "last_seen_at_ms": now_ms}))
            conn.execute(update(operator_sessions)
                         .where(operator_sessions.c.session_hash == digest)
                         .values(expires_at_ms=min(row["expires_at_ms"],
                                                   now_ms + ROTATION_GRACE_MS),
                                 issued_at_ms=now_ms))
        else:
            conn.execute(update(operator_sessions)
                         .where(operator_sessions.c.session_hash == digest)
                         .values(last_seen_at_ms=now_ms))
    actor = Actor(holder.username, holder.role, holder.scope, origin)
    return actor, Session(holder.username, row["kind"], row["csrf_token"],
                          int(row["expires_at_ms"]), int(row["idle_ms"]), new_token)


def close_session(engine: Engine, token: str) -> bool:
    """Sign out: the session (and any id it rotated from or to) ends now."""
    with engine.begin() as conn:
        row = conn.execute(select(operator_sessions.c.operator, operator_sessions.c.created_at_ms)
                           .where(operator_sessions.c.session_hash == token_hash(token))).first()
        if row is None:
            return False
        conn.execute(delete(operator_sessions).where(
            (operator_sessions.c.operator == row[0])
            & (operator_sessions.c.created_at_ms == row[1])))
    return True
