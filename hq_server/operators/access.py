"""Who may do what, and where: roles as sets of permissions, operators scoped to a place.

A chain is managed at three levels (总部、大区、单店: HQ, region, store). Every operator has
one role and one scope: the whole chain, one region, or one store. A request is allowed
when the operator's role holds the permission *and* the thing asked about lies inside the
operator's scope. Out of scope is answered exactly like "does not exist"
(:class:`NotVisible`), so a cashier of store A cannot even learn that a member or card of
store B exists; a missing permission is :class:`Forbidden`.

Plain data and functions (no database): services call :func:`authorise` with the place
of what they touch (:class:`Place`), and :func:`scope_filter` tells a query which stores
an operator may see.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Level(enum.Enum):
    """Management levels (管理层级)."""

    CHAIN = "chain"  # 总部: the whole chain
    REGION = "region"  # 大区: the stores of one region
    STORE = "store"  # 单店: one store


@dataclass(frozen=True)
class Scope:
    """Where an operator may act: the chain, one region (by id) or one store (by id)."""

    level: Level
    id: str = ""

    def __post_init__(self) -> None:
        if (self.level is Level.CHAIN) != (self.id == ""):
            raise ValueError("a chain scope has no id; a region or store scope needs one")

    def covers(self, place: Place) -> bool:
        if self.level is Level.CHAIN:
            return True
        if self.level is Level.REGION:
            return place.region == self.id
        return place.store == self.id

    def __str__(self) -> str:
        return self.level.value if self.level is Level.CHAIN else f"{self.level.value}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``chain``, ``region:<id>`` or ``store:<id>``."""
        level, _, ident = text.partition(":")
        try:
            return cls(Level(level), ident)
        except ValueError:
            raise ValueError(f"scope {text!r} is not chain, region:<id> or store:<id>") from None


@dataclass(frozen=True)
class Place:
    """Where a thing lives: its store and that store's region (None: not in a region).

    A thing that belongs to the whole chain (a card product, a member registered at HQ)
    has ``store=None``; only chain-scoped operators see it as in scope for writing, every
    operator may read it if the role allows (see :func:`authorise`).
    """

    store: str | None
    region: str | None = None


#: Every permission, by domain. A route or command names exactly one.
PERMISSIONS: tuple[str, ...] = (
    "members.read", "members.write", "members.delete", "members.import", "members.export",
    "cards.read", "cards.write",
    "stores.read", "stores.write",
    "operators.read", "operators.write",
    "devices.read", "devices.write",
    "ledger.read", "ledger.write",
    "catalogue.read", "catalogue.write",
    "reports.read",
    "audit.read",
    "recycle.restore", "recycle.purge",
    "backup.run",
)

_READS = frozenset(p for p in PERMISSIONS if p.endswith((".read", ".export")))
_CASHIER = frozenset({"members.read", "members.write", "cards.read", "cards.write",
                      "stores.read", "catalogue.read"})
_STORE_MANAGER = _CASHIER | {"members.delete", "members.import", "members.export",
                             "operators.read", "operators.write", "devices.read",
                             "reports.read", "ledger.read", "recycle.restore", "audit.read"}
_REGION_MANAGER = _STORE_MANAGER | {"stores.write", "devices.write"}

#: Roles (角色): each a set of permissions. Order is rank, lowest first: an operator may
#: only create or change operators of a rank below their own (an administrator: any).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "cashier": _CASHIER,  # 收银员
    "auditor": _READS,  # 审计 (read-only, everything)
    "store_manager": _STORE_MANAGER,  # 店长
    "region_manager": _REGION_MANAGER,  # 大区经理
    "hq_admin": frozenset(PERMISSIONS),  # 总部管理员
}
ROLES: tuple[str, ...] = tuple(ROLE_PERMISSIONS)
#: The levels each role may be scoped to.
ROLE_LEVELS: dict[str, frozenset[Level]] = {
    "cashier": frozenset({Level.STORE}),
    "auditor": frozenset({Level.CHAIN, Level.REGION, Level.STORE}),
    "store_manager": frozenset({Level.STORE}),
    "region_manager": frozenset({Level.REGION}),
    "hq_admin": frozenset({Level.CHAIN}),
}


@dataclass(frozen=True)
class Actor:
    """Who is acting, as authorised: the operator, their role and scope, and from where.

    ``origin`` says where the request came from (``cli``, ``api 203.0.113.7``,
    ``system``) for the audit log. ``permissions`` narrows the role (API tokens).
    """

    operator: str
    role: str
    scope: Scope
    origin: str = "cli"
    #: Narrower than the role (an API token made for fewer rights); None: the role's.
    permissions: frozenset[str] | None = None

    def can(self, permission: str) -> bool:
        if self.permissions is not None and permission not in self.permissions:
            return False
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())


#: HQ's own work (ingest keeping the card registry current, scheduled backups).
SYSTEM = Actor("system", "hq_admin", Scope(Level.CHAIN), "system")


class Forbidden(PermissionError):
    """The operator's role does not hold the permission (HTTP 403)."""


class NotVisible(LookupError):
    """Outside the operator's scope: answered exactly as "not found" (HTTP 404)."""


def authorise(actor: Actor, permission: str, place: Place | None = None) -> None:
    """Allow ``actor`` to use ``permission`` on a thing at ``place``, or raise.

    ``place=None`` means the chain as a whole (a list, a chain-wide setting): allowed by
    the permission alone; the caller then narrows what it returns with
    :func:`scope_filter`. A chain-level thing (``Place(None)``) is readable by anyone
    with the permission and writable only by chain-scoped operators.
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    if not actor.can(permission):
        raise Forbidden(f"operator {actor.operator!r} ({actor.role}) may not {permission}")
    if place is None:
        return
    if place.store is None:
        if permission in _READS or actor.scope.level is Level.CHAIN:
            return
        raise Forbidden(f"only chain-wide operators may {permission} chain-level data")
    if not actor.scope.covers(place):
        raise NotVisible("not found")


def scope_filter(actor: Actor) -> tuple[Level, str]:
    """What a query must keep: all stores, the stores of one region, or one store."""
    return actor.scope.level, actor.scope.id


def visible(actor: Actor, places: Iterable[Place]) -> list[Place]:
    return [p for p in places if p.store is None or actor.scope.covers(p)]


def may_manage(actor: Actor, role: str) -> bool:
    """Whether ``actor`` may create or change an operator with ``role``."""
    if actor.role == "hq_admin":
        return role in ROLE_PERMISSIONS
    ranks = list(ROLE_PERMISSIONS)
    return (actor.can("operators.write") and role in ranks
            and ranks.index(role) < ranks.index(actor.role))
