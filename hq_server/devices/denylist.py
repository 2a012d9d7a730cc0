"""The denylist (挂失 / 黑名单): cards every terminal must refuse, as a versioned log.

HQ never edits the list in place: each change is a new row of ``denylist_entries``
(``add`` or ``remove``) and the list's version is the number of the last row. Terminals
get a retained snapshot and then a delta per change
(:class:`protocol.topics.DenylistDelta`), and report the version they run in their
birth message; HQ publishes them through the fleet service
(:mod:`hq_server.fleet.service`). ``effective_at_ms`` is when the card stopped being
good (the moment the member reported the loss, which can be before the operator typed it in): a use after
it is a late denylist hit for reconciliation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine

from hq_server.cards.registry import card_exists, mark_denylisted
from hq_server.clock import system_clock
from hq_server.db.tables import denylist_entries
from protocol.ids import describe, is_id
from protocol.topics import DenylistDelta, DenylistEntry, DenylistSnapshot


class DenylistError(ValueError):
    """A denylist change that cannot be made, with the reason in words."""


@dataclass(frozen=True)
class DenylistPeriod:
    """The card was denylisted from ``since_ms`` until ``until_ms`` (None: still is)."""

    since_ms: int
    until_ms: int | None
    reason: str


@dataclass(frozen=True)
class DenylistChange:
    version: int
    delta: DenylistDelta


def current_version(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(denylist_entries.c.version), 0))).scalar_one())


def _latest(conn: Connection, card_id: str):
    d = denylist_entries.c
    return conn.execute(select(denylist_entries).where(d.card_id == card_id)
                        .order_by(d.version.desc()).limit(1)).mappings().first()


def add_to_denylist(engine: Engine, card_id: str, reason: str, *, source: str = "operator",
                    effective_at_ms: int | None = None, if_not_listed: bool = False,
                    ) -> DenylistChange | None:
    """Denylist a card. Returns the delta to publish, or None if it was already listed
    and ``if_not_listed`` is set (otherwise listing a listed card is refused)."""
    return _change(engine, card_id, "add", reason, source, effective_at_ms, if_not_listed)


def remove_from_denylist(engine: Engine, card_id: str, reason: str, *,
                         source: str = "operator") -> DenylistChange:
    """Take a card off the denylist (found again, or replaced and recalled)."""
    change = _change(engine, card_id, "remove", reason, source, None, False)
    assert change is not None
    return change


def _change(engine: Engine, card_id: str, action: str, reason: str, source: str,
            effective_at_ms: int | None, quiet: bool) -> DenylistChange | None:
    if not is_id(card_id):
        raise DenylistError(f"not a card id: {card_id!r} ({describe()})")
    if not reason.strip() or len(reason) > 64:
        raise DenylistError("a denylist change needs a reason of at most 64 characters")
    now = system_clock()
    effective = now if effective_at_ms is None else effective_at_ms
    if effective < 0:
        raise DenylistError("effective time must not be negative")
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # One change at a time, so versions and deltas follow each other exactly.
            conn.exec_driver_sql("LOCK TABLE denylist_entries IN SHARE ROW EXCLUSIVE MODE")
        if action == "add" and not card_exists(conn, card_id):
            raise DenylistError(f"no card {card_id!r} at HQ: it was never issued, registered "
                                "or used at a terminal, so there is nothing to denylist "
                                "(check the number; `onecard hq card list`)")
        latest = _latest(conn, card_id)
        listed = latest is not None and latest["action"] == "add"
        if (action == "add") == listed:
            if quiet:
                return None
            raise DenylistError(f"card {card_id} is {'already' if listed else 'not'} on the denylist")
        before = current_version(conn)
        version = conn.execute(insert(denylist_entries).values(
            card_id=card_id, action=action, reason=reason, source=source,
            effective_at_ms=effective, created_at_ms=now,
        ).returning(denylist_entries.c.version)).scalar_one()
        # The card's state follows: lost (挂失) while listed, its former state after.
        mark_denylisted(conn, card_id, action == "add", f"denylist {version} ({source})"[:128],
                        now)
    if action == "add":
        delta = DenylistDelta(before, version, added=(DenylistEntry(card_id, reason, effective),))
    else:
        delta = DenylistDelta(before, version, removed=(card_id,))
    return DenylistChange(version, delta)


def denylist_snapshot(engine: Engine) -> DenylistSnapshot:
    """Every card listed now, at the current version."""
    d = denylist_entries.c
    with engine.connect() as conn:
        version = current_version(conn)
        latest = select(d.card_id, func.max(d.version).label("v")).group_by(d.card_id).subquery()
        rows = conn.execute(select(d.card_id, d.reason, d.effective_at_ms).join(
            latest, (latest.c.card_id == d.card_id) & (latest.c.v == d.version))
            .where(d.action == "add").order_by(d.card_id)).all()
    return DenylistSnapshot(version, tuple(DenylistEntry(c, r, t) for c, r, t in rows))


def denylist_delta(engine: Engine, from_version: int) -> DenylistDelta | None:
    """What changed after ``from_version`` (None when nothing did)."""
    d = denylist_entries.c
    with engine.connect() as conn:
        rows = conn.execute(select(denylist_entries).where(d.version > from_version)
                            .order_by(d.version)).mappings().all()
    if not rows:
        return None
    final: dict[str, dict] = {}
    for row in rows:
        final[row["card_id"]] = row
    added = tuple(DenylistEntry(c, r["reason"], r["effective_at_ms"])
                  for c, r in sorted(final.items()) if r["action"] == "add")
    removed = tuple(c for c, r in sorted(final.items()) if r["action"] == "remove")
    return DenylistDelta(from_version, rows[-1]["version"], added, removed)


def card_denylist_history(conn: Connection, card_id: str) -> list[DenylistPeriod]:
    """The periods a card was denylisted, for reconciliation (late denylist hits)."""
    d = denylist_entries.c
    periods: list[DenylistPeriod] = []
    since: tuple[int, str] | None = None
    for action, reason, effective in conn.execute(
            select(d.action, d.reason, d.effective_at_ms).where(d.card_id == card_id)
            .order_by(d.version)):
        if action == "add":
            since = (effective, reason)
        elif since is not None:
            periods.append(DenylistPeriod(since[0], effective, since[1]))
            since = None
    if since is not None:
        periods.append(DenylistPeriod(since[0], None, since[1]))
    return periods
