"""HQ operators: the people who may create enrolment tokens, revoke devices, and more.

Passwords are stored as argon2id hashes (argon2-cffi's RFC 9106 defaults) and never
logged. A failed login takes as long for an unknown name as for a wrong password, so
the API does not reveal which operator names exist. The first operator is created on
the HQ machine with ``onecard hq create-admin``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from hq_server.clock import system_clock
from hq_server.db.tables import operators

USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
MIN_PASSWORD = 12
ROLES = ("admin",)

_hasher = PasswordHasher()
#: Verified against when the name is unknown, so both failures cost the same.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class OperatorError(ValueError):
    """An operator that cannot be created, with the reason in words."""


class AuthenticationFailed(Exception):
    """Wrong name or password (deliberately not saying which)."""


@dataclass(frozen=True)
class Operator:
    username: str
    role: str


def create_operator(engine: Engine, username: str, password: str,
                    role: str = "admin", *, now_ms: int | None = None) -> Operator:
    """Add an operator. An existing name is refused: passwords change elsewhere."""
    if not USERNAME.match(username or ""):
        raise OperatorError("operator names are 2-64 characters: a-z 0-9 _ . - "
                            "(lower case, starting with a letter or digit)")
    if role not in ROLES:
        raise OperatorError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if len(password or "") < MIN_PASSWORD:
        raise OperatorError(f"passwords need at least {MIN_PASSWORD} characters")
    hashed = _hasher.hash(password)
    with engine.begin() as conn:
        if conn.execute(select(operators.c.username)
                        .where(operators.c.username == username)).first():
            raise OperatorError(f"operator {username!r} already exists")
        conn.execute(insert(operators).values(
            username=username, password_hash=hashed, role=role, status="active",
            created_at_ms=system_clock() if now_ms is None else now_ms))
    return Operator(username, role)


def authenticate(engine: Engine, username: str, password: str) -> Operator:
    """Return the operator if name and password match an active operator."""
    with engine.connect() as conn:
        row = conn.execute(select(operators).where(operators.c.username == username)
                           ).mappings().first()
    stored = row["password_hash"] if row else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        raise AuthenticationFailed("wrong operator name or password") from None
    if row is None or row["status"] != "active":
        raise AuthenticationFailed("wrong operator name or password")
    if _hasher.check_needs_rehash(stored):
        with engine.begin() as conn:
            conn.execute(update(operators).where(operators.c.username == username)
                         .values(password_hash=_hasher.hash(password)))
    return Operator(row["username"], row["role"])


def has_operators(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(operators.c.username).limit(1)).first() is not None
