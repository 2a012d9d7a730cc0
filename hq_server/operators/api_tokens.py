"""API tokens for integrations: named, as wide as their operator's rights or narrower.

A token is shown once (``oct_...``, 32 random bytes) and stored as its SHA-256. It acts
as its operator with that operator's current role, narrowed to the token's scope and,
when given, to a subset of the role's permissions; it stops working when revoked, when
it expires, and when its operator is disabled or changes role, scope or password.
``last_used_at_ms`` is kept (to the minute) so unused tokens can be found and revoked.
Creating and revoking are audited (``api_token.create``, ``api_token.revoke``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Engine

from hq_server.audit.log import record_action
from hq_server.db.tables import api_tokens
from hq_server.operators.access import PERMISSIONS, Actor, NotVisible, Scope
from hq_server.operators.accounts import active_operator, scope_within
from hq_server.operators.errors import AuthenticationFailed, OperatorError
from hq_server.operators.sessions import token_hash

PREFIX = "oct_"
NAME = re.compile(r"^[\w .:/-]{1,100}$")
LAST_USED_RESOLUTION_MS = 60 * 1000


@dataclass(frozen=True)
class ApiToken:
    """A token as listed (never its secret)."""

    token_id: str
    operator: str
    name: str
    scope: str
    permissions: list[str] | None
    created_at_ms: int
    expires_at_ms: int | None
    last_used_at_ms: int | None
    revoked_at_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _token(row: Any) -> ApiToken:
    perms = row["permissions"].split() if row["permissions"] is not None else None
    return ApiToken(row["token_id"], row["operator"], row["name"], row["scope"], perms,
                    row["created_at_ms"], row["expires_at_ms"], row["last_used_at_ms"],
                    row["revoked_at_ms"])


def create_api_token(actor: Actor, engine: Engine, name: str, now_ms: int, *,
                     scope: Scope | None = None, permissions: list[str] | None = None,
                     expires_at_ms: int | None = None) -> tuple[str, ApiToken]:
    """A new token for the acting operator; returns (the secret, shown once; the token)."""
    if not NAME.match(name or ""):
        raise OperatorError("a token's name is 1-100 letters, digits, spaces or . : / - _")
    scope = scope or actor.scope
    if permissions is not None:
        unknown = sorted(set(permissions) - set(PERMISSIONS))
        if unknown:
            raise OperatorError(f"unknown permissions: {', '.join(unknown)}")
        beyond = sorted(p for p in set(permissions) if not actor.can(p))
        if beyond:
            raise OperatorError(f"a token cannot have rights its operator lacks: "
                                f"{', '.join(beyond)}")
        permissions = sorted(set(permissions))
    elif actor.permissions is not None:
        permissions = sorted(actor.permissions)
    if expires_at_ms is not None and expires_at_ms <= now_ms:
        raise OperatorError("a token's expiry must lie in the future")
    secret = PREFIX + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(8)
    with engine.begin() as conn:
        if not scope_within(conn, actor.scope, scope):
            raise OperatorError(f"a token's scope must lie within yours ({actor.scope})")
        if conn.execute(select(api_tokens.c.token_id).where(and_(
                api_tokens.c.operator == actor.operator, api_tokens.c.name == name,
                api_tokens.c.revoked_at_ms.is_(None)))).first():
            raise OperatorError(f"you already have a token named {name!r}")
        values = {"token_id": token_id, "operator": actor.operator, "name": name,
                  "scope": str(scope), "created_at_ms": now_ms,
                  "permissions": None if permissions is None else " ".join(permissions),
                  "expires_at_ms": expires_at_ms, "last_used_at_ms": None,
                  "revoked_at_ms": None}
        conn.execute(insert(api_tokens).values(token_hash=token_hash(secret), **values))
        made = _token(values)
        record_action(conn, actor, "api_token.create", "api_token", token_id, None,
                      made.to_json(), now_ms)
    return secret, made


def list_api_tokens(actor: Actor, engine: Engine) -> list[ApiToken]:
    """The acting operator's own tokens, newest first (revoked ones included)."""
    with engine.connect() as conn:
        rows = conn.execute(select(api_tokens).where(api_tokens.c.operator == actor.operator)
                            .order_by(api_tokens.c.created_at_ms.desc(),
                                      api_tokens.c.token_id)).mappings()
        return [_token(r) for r in rows]


def revoke_api_token(actor: Actor, engine: Engine, token_id: str, now_ms: int) -> ApiToken:
    """Revoke one of the acting operator's tokens (an HQ administrator: anyone's)."""
    with engine.begin() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)
                           ).mappings().first()
        if row is None or (row["operator"] != actor.operator and actor.role != "hq_admin"):
            raise NotVisible("not found")
        before = _token(row)
        if before.revoked_at_ms is None:
            conn.execute(update(api_tokens).where(api_tokens.c.token_id == token_id)
                         .values(revoked_at_ms=now_ms))
        after = ApiToken(**{**asdict(before), "revoked_at_ms": before.revoked_at_ms or now_ms})
        record_action(conn, actor, "api_token.revoke", "api_token", token_id,
                      before.to_json(), after.to_json(), now_ms)
    return after


def actor_of_token(engine: Engine, secret: str, origin: str, now_ms: int) -> Actor:
    """The Actor a bearer API token acts as, or AuthenticationFailed."""
    if not secret.startswith(PREFIX) or len(secret) > 100:
        raise AuthenticationFailed("unknown or revoked API token")
    with engine.begin() as conn:
        row = conn.execute(select(api_tokens).where(
            api_tokens.c.token_hash == token_hash(secret))).mappings().first()
        if row is None or row["revoked_at_ms"] is not None or (
                row["expires_at_ms"] is not None and now_ms >= row["expires_at_ms"]):
            raise AuthenticationFailed("unknown or revoked API token")
        holder = active_operator(conn, row["operator"])
        if holder is None or holder.scope is None:
            raise AuthenticationFailed("unknown or revoked API token")
        scope = Scope.parse(row["scope"])
        if not scope_within(conn, holder.scope, scope):  # the operator was narrowed since
            raise AuthenticationFailed("unknown or revoked API token")
        if (row["last_used_at_ms"] or 0) + LAST_USED_RESOLUTION_MS <= now_ms:
            conn.execute(update(api_tokens).where(api_tokens.c.token_id == row["token_id"])
                         .values(last_used_at_ms=now_ms))
    perms = frozenset(row["permissions"].split()) if row["permissions"] is not None else None
    return Actor(holder.username, holder.role, scope, origin, perms)
