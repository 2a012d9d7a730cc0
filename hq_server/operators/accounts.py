"""HQ operators (操作员): who they are, their role and scope, and who may change them.

Passwords are stored as argon2id hashes (argon2-cffi's RFC 9106 defaults) and never
logged. Every function that reads or changes operators takes the acting operator
(:class:`~hq_server.operators.access.Actor`) first and checks it:

* reading needs ``operators.read`` and the operator to lie inside the actor's scope;
  one outside it is answered exactly like one that does not exist (:class:`NotVisible`);
* creating or changing needs ``operators.write``, :func:`may_manage` (nobody creates or
  changes an operator of their own rank or above, except HQ administrators) and the
  operator's scope inside the actor's (a store manager manages their own store's cashiers
  and auditors only; a region manager those of the stores of their region).

Every change is in the audit log (``operator.create``, ``operator.update``,
``operator.disable``, ``operator.password_reset``, ``operator.unlock``) in the same
transaction, without secrets. A change of role, scope, status or password ends the
operator's sessions and API tokens at once. The first operator is created on the HQ
machine with ``onecard hq create-admin`` (:func:`create_operator`, the bootstrap).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.audit.log import record_action
from hq_server.clock import system_clock
from hq_server.db.tables import (
    api_tokens,
    login_throttle,
    operator_sessions,
    operators,
    regions,
    staff_cards,
    stores,
)
from hq_server.operators.access import (
    ROLE_LEVELS,
    ROLE_PERMISSIONS,
    Actor,
    Forbidden,
    Level,
    NotVisible,
    Scope,
    authorise,
    may_manage,
)
from hq_server.operators.errors import AuthenticationFailed, OperatorError

USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
MIN_PASSWORD = 12
#: argon2 hashes anything, but a megabyte password is an attack, not a password.
MAX_PASSWORD = 1024
ROLES = tuple(ROLE_PERMISSIONS)
#: Roles of operators created before roles and scopes existed.
LEGACY_ROLES = {"admin": "hq_admin"}
STATUSES = ("active", "disabled")

_hasher = PasswordHasher()
#: Verified against when the name is unknown, so both failures cost the same.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


__all__ = ["AuthenticationFailed", "Operator", "OperatorError", "add_operator",
           "create_operator", "get_operator", "list_operators", "update_operator"]


def _common():
    # Imported late: hq_server.api imports this module through its routers.
    from hq_server.api import common

    return common


@dataclass(frozen=True)
class Operator:
    """An operator as the API and CLI show it (never the password hash)."""

    username: str
    role: str
    scope: Scope | None = None
    status: str = "active"
    display_name: str = ""
    version: int = 1
    created_at_ms: int = 0
    updated_at_ms: int | None = None
    last_login_at_ms: int | None = None
    locked_until_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["scope"] = str(self.scope or Scope(Level.CHAIN))
        return out

    def audit_view(self) -> dict[str, Any]:
        """What the audit log keeps: the fields an operator changes, no timestamps."""
        return {k: v for k, v in self.to_json().items()
                if k in ("username", "role", "scope", "status", "display_name", "version")}


def _operator(row: Any, locked_until_ms: int | None = None) -> Operator:
    return Operator(row["username"], LEGACY_ROLES.get(row["role"], row["role"]),
                    Scope.parse(row["scope"]), row["status"], row["display_name"],
                    int(row["version"]), int(row["created_at_ms"]), row["updated_at_ms"],
                    row["last_login_at_ms"], locked_until_ms)


# --- rules ------------------------------------------------------------------------------

def check_password(password: str | None, username: str = "") -> str:
    """The password, if it may be one (length, not the name); OperatorError otherwise."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise OperatorError(f"passwords need at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise OperatorError(f"passwords have at most {MAX_PASSWORD} characters")
    if username and password.lower() == username.lower():
        raise OperatorError("a password may not be the operator's name")
    return password


def check_role_and_scope(role: str, scope: Scope) -> None:
    """A known role at a level that role may have (a cashier works in one store, ...)."""
    if role not in ROLE_PERMISSIONS:
        raise OperatorError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if scope.level not in ROLE_LEVELS[role]:
        levels = ", ".join(sorted(level.value for level in ROLE_LEVELS[role]))
        raise OperatorError(f"a {role} is scoped to a {levels}, not to {scope}")


def _region_of(conn: Connection, store_id: str) -> str | None | bool:
    """The store's region (None: in no region), or False when HQ knows no such store."""
    row = conn.execute(select(stores.c.region_id).where(stores.c.store_id == store_id)).first()
    return False if row is None else row[0]


def scope_within(conn: Connection, outer: Scope, inner: Scope) -> bool:
    """Whether everything ``inner`` covers lies inside ``outer``."""
    if outer.level is Level.CHAIN:
        return True
    if inner.level is Level.STORE:
        if outer.level is Level.STORE:
            return inner.id == outer.id
        return _region_of(conn, inner.id) == outer.id
    return outer.level is Level.REGION and inner.level is Level.REGION and inner.id == outer.id


def _check_place_exists(conn: Connection, scope: Scope) -> None:
    if scope.level is Level.STORE and _region_of(conn, scope.id) is False:
        raise OperatorError(f"HQ knows no store {scope.id!r}")
    if scope.level is Level.REGION and conn.execute(
            select(regions.c.region_id).where(regions.c.region_id == scope.id)).first() is None:
        raise OperatorError(f"HQ knows no region {scope.id!r}")


def _visible(conn: Connection, actor: Actor, target: Operator) -> bool:
    return target.scope is not None and scope_within(conn, actor.scope, target.scope)


def _may_change(conn: Connection, actor: Actor, role: str, scope: Scope) -> None:
    """Refuse (Forbidden) unless ``actor`` may manage an operator ``role`` at ``scope``."""
    if not may_manage(actor, role):
        raise Forbidden(f"a {actor.role} may not manage operators with role {role}")
    if not scope_within(conn, actor.scope, scope):
        raise Forbidden(f"operators you manage must lie within your scope ({actor.scope})")


# --- reading ----------------------------------------------------------------------------

def _locked_until(conn: Connection, username: str, now_ms: int) -> int | None:
    row = conn.execute(select(login_throttle.c.blocked_until_ms)
                       .where(login_throttle.c.subject == f"operator:{username}")).first()
    return row[0] if row and row[0] is not None and row[0] > now_ms else None


def _load(conn: Connection, username: str, now_ms: int) -> Operator | None:
    row = conn.execute(select(operators).where(operators.c.username == username)
                       ).mappings().first()
    return None if row is None else _operator(row, _locked_until(conn, username, now_ms))


def _visible_operator(conn: Connection, actor: Actor, username: str, now_ms: int) -> Operator:
    target = _load(conn, username, now_ms)
    if target is None or not _visible(conn, actor, target):
        raise NotVisible("not found")
    return target


def get_operator(actor: Actor, engine: Engine, username: str, *,
                 now_ms: int | None = None) -> Operator:
    """One operator inside the actor's scope (else NotVisible, as for an unknown name)."""
    authorise(actor, "operators.read")
    with engine.connect() as conn:
        return _visible_operator(conn, actor, username, system_clock() if now_ms is None
                                 else now_ms)


def _scope_condition(conn: Connection, actor: Actor):
    level, ident = actor.scope.level, actor.scope.id
    if level is Level.CHAIN:
        return None
    if level is Level.STORE:
        return operators.c.scope == f"store:{ident}"
    region_stores = [f"store:{s}" for (s,) in conn.execute(
        select(stores.c.store_id).where(stores.c.region_id == ident))]
    return or_(operators.c.scope == f"region:{ident}", operators.c.scope.in_(region_stores))


def list_operators(actor: Actor, engine: Engine, *, cursor: str | None = None,
                   limit: int | None = None, status: str | None = None,
                   role: str | None = None, now_ms: int | None = None,
                   ) -> tuple[list[Operator], str | None]:
    """Operators inside the actor's scope, by name, a page at a time (keyset cursor)."""
    authorise(actor, "operators.read")
    now = system_clock() if now_ms is None else now_ms
    after = _common().decode_cursor(cursor, 1)
    size = _common().page_limit(limit)
    with engine.connect() as conn:
        query = select(operators).order_by(operators.c.username).limit(size + 1)
        condition = _scope_condition(conn, actor)
        if condition is not None:
            query = query.where(condition)
        if after is not None:
            query = query.where(operators.c.username > str(after[0]))
        if status is not None:
            query = query.where(operators.c.status == status)
        if role is not None:
            query = query.where(operators.c.role == role)
        rows = list(conn.execute(query).mappings())
        items = [_operator(r, _locked_until(conn, r["username"], now)) for r in rows[:size]]
    more = len(rows) > size
    return items, _common().encode_cursor((items[-1].username,)) if more and items else None


# --- changing ---------------------------------------------------------------------------

def _end_sessions(conn: Connection, username: str, now_ms: int) -> None:
    """Sign the operator out everywhere: sessions end, API tokens are revoked."""
    conn.execute(delete(operator_sessions).where(operator_sessions.c.operator == username))
    conn.execute(update(api_tokens).where(and_(api_tokens.c.operator == username,
                                               api_tokens.c.revoked_at_ms.is_(None)))
                 .values(revoked_at_ms=now_ms))


def add_operator(actor: Actor, engine: Engine, username: str, password: str, role: str,
                 scope: Scope, *, display_name: str = "", now_ms: int | None = None) -> Operator:
    """Create an operator with ``role`` at ``scope``, audited as ``operator.create``."""
    authorise(actor, "operators.write")
    now = system_clock() if now_ms is None else now_ms
    role = LEGACY_ROLES.get(role, role)
    if not USERNAME.match(username or ""):
        raise OperatorError("operator names are 2-64 characters: a-z 0-9 _ . - "
                            "(lower case, starting with a letter or digit)")
    check_role_and_scope(role, scope)
    check_password(password, username)
    if len(display_name) > 200:
        raise OperatorError("a display name has at most 200 characters")
    hashed = _hasher.hash(password)
    with engine.begin() as conn:
        _may_change(conn, actor, role, scope)
        _check_place_exists(conn, scope)
        if conn.execute(select(operators.c.username)
                        .where(operators.c.username == username)).first():
            raise OperatorError(f"operator {username!r} already exists")
        conn.execute(insert(operators).values(
            username=username, password_hash=hashed, role=role, status="active",
            scope=str(scope), display_name=display_name, version=1, created_at_ms=now))
        created = Operator(username, role, scope, "active", display_name, 1, now)
        record_action(conn, actor, "operator.create", "operator", username, None,
                      created.audit_view(), now)
    return created


def update_operator(actor: Actor, engine: Engine, username: str, expected_version: int | None,
                    *, role: str | None = None, scope: Scope | None = None,
                    display_name: str | None = None, status: str | None = None,
                    now_ms: int | None = None) -> Operator:
    """Change role, scope, display name or status of an operator (``operator.update``).

    Refused with EditConflict when the operator changed since ``expected_version``. The
    actor must be allowed to manage the operator both as it is and as it will be.
    """
    authorise(actor, "operators.write")
    now = system_clock() if now_ms is None else now_ms
    with engine.begin() as conn:
        before = _visible_operator(conn, actor, username, now)
        _common().check_version(expected_version, before.to_json())
        new_role = LEGACY_ROLES.get(role, role) if role is not None else before.role
        new_scope = scope if scope is not None else before.scope
        assert new_scope is not None
        new_status = status if status is not None else before.status
        if new_status not in STATUSES:
            raise OperatorError(f"status is one of {', '.join(STATUSES)}")
        if display_name is not None and len(display_name) > 200:
            raise OperatorError("a display name has at most 200 characters")
        check_role_and_scope(new_role, new_scope)
        if username == actor.operator and (new_role, new_scope, new_status) != (
                before.role, before.scope, before.status):
            raise Forbidden("operators may not change their own role, scope or status")
        _may_change(conn, actor, before.role, before.scope)
        _may_change(conn, actor, new_role, new_scope)
        _check_place_exists(conn, new_scope)
        values = {"role": new_role, "scope": str(new_scope), "status": new_status,
                  "display_name": before.display_name if display_name is None
                  else display_name, "version": before.version + 1, "updated_at_ms": now}
        done = conn.execute(update(operators).where(and_(
            operators.c.username == username, operators.c.version == before.version))
            .values(**values))
        if done.rowcount != 1:  # changed between our read and our write
            current = _load(conn, username, now)
            _common().check_version(expected_version,
                                    current.to_json() if current else {"version": 0})
        after = _load(conn, username, now)
        assert after is not None
        if (new_role, new_scope, new_status) != (before.role, before.scope, before.status):
            _end_sessions(conn, username, now)
        action = "operator.disable" if (new_status, before.status) == (
            "disabled", "active") else "operator.update"
        record_action(conn, actor, action, "operator", username, before.audit_view(),
                      after.audit_view(), now)
    return after


def disable_operator(actor: Actor, engine: Engine, username: str,
                     expected_version: int | None = None, *,
                     now_ms: int | None = None) -> Operator:
    """Disable an operator: they can no longer sign in; sessions and tokens end."""
    if expected_version is None:
        expected_version = get_operator(actor, engine, username, now_ms=now_ms).version
    return update_operator(actor, engine, username, expected_version, status="disabled",
                           now_ms=now_ms)


def reset_password(actor: Actor, engine: Engine, username: str, password: str, *,
                   now_ms: int | None = None) -> Operator:
    """Set a new password (``operator.password_reset``; the audit keeps no secret).

    An operator may change their own; a manager those of the operators they manage. All
    the operator's sessions and API tokens end."""
    now = system_clock() if now_ms is None else now_ms
    check_password(password, username)
    hashed = _hasher.hash(password)
    with engine.begin() as conn:
        if username == actor.operator:
            target = _load(conn, username, now)
            if target is None:
                raise NotVisible("not found")
        else:
            authorise(actor, "operators.write")
            target = _visible_operator(conn, actor, username, now)
            _may_change(conn, actor, target.role, target.scope or Scope(Level.CHAIN))
        conn.execute(update(operators).where(operators.c.username == username)
                     .values(password_hash=hashed, version=target.version + 1,
                             updated_at_ms=now))
        _end_sessions(conn, username, now)
        after = _load(conn, username, now)
        assert after is not None
        record_action(conn, actor, "operator.password_reset", "operator", username,
                      target.audit_view(), after.audit_view(), now)
    return after


def unlock_operator(actor: Actor, engine: Engine, username: str, *,
                    now_ms: int | None = None) -> Operator:
    """End a lock-out before its time (``operator.unlock``): the operator's name and
    staff cards may try again at once."""
    authorise(actor, "operators.write")
    now = system_clock() if now_ms is None else now_ms
    with engine.begin() as conn:
        target = _visible_operator(conn, actor, username, now)
        _may_change(conn, actor, target.role, target.scope or Scope(Level.CHAIN))
        cards = [f"staff_card:{c}" for (c,) in conn.execute(
            select(staff_cards.c.card_id).where(staff_cards.c.operator == username))]
        conn.execute(delete(login_throttle).where(
            login_throttle.c.subject.in_([f"operator:{username}", *cards])))
        after = _load(conn, username, now)
        assert after is not None
        before = {**target.audit_view(), "locked_until_ms": target.locked_until_ms}
        record_action(conn, actor, "operator.unlock", "operator", username, before,
                      {**after.audit_view(), "locked_until_ms": None}, now)
    return after


# --- the HQ machine's bootstrap and sign-in by password ---------------------------------

def bootstrap_actor(human: str) -> Actor:
    """Who creates operators on the HQ machine before any operator exists: recorded
    with the name of the person at the console (``--operator``) for the audit."""
    return Actor(f"bootstrap:{human}"[:64], "hq_admin", Scope(Level.CHAIN), "cli")


def create_operator(engine: Engine, username: str, password: str,
                    role: str = "hq_admin", *, now_ms: int | None = None,
                    scope: Scope | None = None, human: str = "hq-machine") -> Operator:
    """Add an operator as the HQ machine's bootstrap (``onecard hq create-admin``).

    No signed-in operator is needed: whoever runs this can read the database file.
    Audited as ``bootstrap:<human>``."""
    role = LEGACY_ROLES.get(role, role)
    return add_operator(bootstrap_actor(human), engine, username, password, role,
                        scope or Scope(Level.CHAIN), now_ms=now_ms)


def verify_password(engine: Engine, username: str, password: str) -> Operator | None:
    """The active operator if name and password match, else None (same cost either way).

    No throttling here: :mod:`hq_server.operators.signin` counts failures around it."""
    with engine.connect() as conn:
        row = conn.execute(select(operators).where(operators.c.username == username)
                           ).mappings().first()
    stored = row["password_hash"] if row else _DUMMY_HASH
    try:
        _hasher.verify(stored, (password or "")[:MAX_PASSWORD])
        ok = True
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None or row["status"] != "active":
        return None
    if _hasher.check_needs_rehash(stored):
        with engine.begin() as conn:
            conn.execute(update(operators).where(operators.c.username == username)
                         .values(password_hash=_hasher.hash(password)))
    return _operator(row)


def authenticate(engine: Engine, username: str, password: str) -> Operator:
    """Return the operator if name and password match an active operator (unthrottled:
    the API and CLI sign in through :func:`hq_server.operators.signin.sign_in`)."""
    found = verify_password(engine, username, password)
    if found is None:
        raise AuthenticationFailed("wrong operator name or password")
    return found


def active_operator(conn: Connection, username: str) -> Operator | None:
    """The operator if it exists and is active (sessions and tokens check this)."""
    row = conn.execute(select(operators).where(operators.c.username == username)
                       ).mappings().first()
    return _operator(row) if row is not None and row["status"] == "active" else None


def has_operators(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(operators.c.username).limit(1)).first() is not None
