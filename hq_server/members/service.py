"""Members as operators work with them: register, look up, edit, delete and restore,
merge, search — each authorised by permission and scope, each change in the audit log
within the same transaction, each edit guarded by the member's ``version``.

Every function takes the acting operator (:class:`~hq_server.operators.access.Actor`)
first. A member lives at the store that registered it (its :class:`Place`, from
:mod:`hq_server.chain.places`), or at HQ (``store_id`` None: readable by every operator
with the permission, writable by chain-wide ones). A member outside the operator's scope
is answered exactly like one that does not exist (:class:`MemberNotFound` is a
:class:`NotVisible`).

Deleting marks the member ``deleted`` (it stays in the recycle bin, 数据回收站, with
its cards and history); :func:`restore_member` brings it back; purging after the
retention period is the recycle bin's (hq_server/audit), not this module's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, union, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from hq_server.api.common import (
    EditConflict,
    check_version,
    decode_cursor,
    encode_cursor,
    page_limit,
)
from hq_server.audit.log import record_action
from hq_server.chain.places import place_of_store
from hq_server.db.tables import (
    counters,
    ledger_entries,
    ledger_transactions,
    member_fields,
    members,
    stores,
)
from hq_server.members.activity import VISIT_KINDS, activity_of_cards, last_transactions
from hq_server.members.card_link import (
    CARD_REGISTRY,
    cards_of_members,
    member_of_card,
    move_cards,
    registry_present,
)
from hq_server.members.custom_fields import FieldDefinition, clean_custom
from hq_server.members.errors import (
    DuplicateMobile,
    FieldError,
    MemberInvalid,
    MemberNotFound,
    MemberStateConflict,
    MergeRefused,
)
from hq_server.members.normalise import (
    fold_name,
    mobile_search_prefix,
    normalise_id_number,
    prefix_upper_bound,
)
from hq_server.members.profile import (
    PROFILE_FIELDS,
    clean_profile,
    member_id_problem,
    search_columns,
)
from hq_server.operators.access import Actor, Level, NotVisible, Place, authorise, scope_filter

PROFILE_NAMES = tuple(f.name for f in PROFILE_FIELDS)
#: The most referrers a chain of referrals is followed through when looking for a cycle.
MAX_REFERRAL_DEPTH = 1000


def today_of(now_ms: int) -> date:
    """The calendar day of ``now_ms`` (UTC; a birthday "in the future" is judged by it)."""
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()


# --- representation --------------------------------------------------------------------

def member_out(row: Any) -> dict[str, Any]:
    """A member as the API, the CLI and the audit log show it."""
    out: dict[str, Any] = {"member_id": row["member_id"]}
    out.update({name: row[name] for name in PROFILE_NAMES})
    out["custom"] = json.loads(row["custom_json"] or "{}")
    out.update(status=row["status"], merged_into=row["merged_into"],
               version=int(row["version"]), created_at_ms=int(row["created_at_ms"]),
               updated_at_ms=int(row["updated_at_ms"]))
    return out


def _check_version(expected: int | None, current: dict[str, Any],
                   based_on: dict[str, Any] | None, conn: Connection | None = None) -> None:
    """:func:`check_version`, naming only the fields an operator edits as changed.

    When the client did not send what it saw (``based_on``), the audit log knows: every
    change of a member records the fields it changed and the version it made, so the
    fields changed since ``expected`` are read from there."""
    try:
        check_version(expected, current, based_on)
    except EditConflict as conflict:
        changed = [c for c in conflict.changed if c not in ("updated_at_ms", "created_at_ms")]
        if based_on is None and expected is not None and conn is not None:
            changed = _changed_since(conn, current["member_id"], int(expected)) or changed
        raise EditConflict(current, changed) from None


def _changed_since(conn: Connection, member_id: str, version: int) -> list[str]:
    from hq_server.db.tables import audit_log

    fields: set[str] = set()
    for (after,) in conn.execute(select(audit_log.c.after_json).where(
            (audit_log.c.target_kind == "member") & (audit_log.c.target_id == member_id))
            .order_by(audit_log.c.seq.desc()).limit(200)):
        values = json.loads(after or "{}")
        made = values.get("version")
        if not isinstance(made, int) or made <= version:
            break
        fields.update(k for k in values if k not in ("version", "updated_at_ms", "merged",
                                                     "cards_moved"))
    return sorted(fields)


def _changed(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict, dict]:
    keys = [k for k in after if before.get(k) != after.get(k)
            and k not in ("version", "updated_at_ms")]
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


def field_definitions(conn: Connection) -> dict[str, FieldDefinition]:
    """The active custom field definitions, by key, in display order."""
    defs: dict[str, FieldDefinition] = {}
    for r in conn.execute(select(member_fields).where(member_fields.c.status == "active")
                          .order_by(member_fields.c.position, member_fields.c.key)).mappings():
        defs[r["key"]] = FieldDefinition(
            r["key"], r["label"], r["type"], int(r["max_length"]),
            tuple(json.loads(r["choices_json"])),
            None if r["default_json"] is None else json.loads(r["default_json"]),
            bool(r["required"]))
    return defs


# --- reading one member ------------------------------------------------------------------

def _row(conn: Connection, member_id: str, *, lock: bool = False) -> Any:
    stmt = select(members).where(members.c.member_id == member_id)
    if lock:
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def _place(conn: Connection, store_id: str | None) -> Place:
    place = place_of_store(conn, store_id)
    return place if place is not None else Place(store_id or "?", "?")


def load_member(conn: Connection, actor: Actor, member_id: str, permission: str, *,
                lock: bool = False) -> Any:
    """The member's row, authorised for ``permission``; unknown and out of scope alike
    raise :class:`MemberNotFound`."""
    row = _row(conn, member_id, lock=lock) if isinstance(member_id, str) else None
    if row is None:
        authorise(actor, permission)  # a cashier without the permission learns nothing
        raise MemberNotFound("not found")
    try:
        authorise(actor, permission, _place(conn, row["store_id"]))
    except NotVisible:
        raise MemberNotFound("not found") from None
    return row


def get_member(actor: Actor, engine: Engine, member_id: str, *,
               transactions: int = 20) -> dict[str, Any]:
    """The member's page (会员资料页): profile, cards, what the ledger says (visits,
    spend, last visit) and the last ``transactions`` ledger transactions of its cards."""
    with engine.connect() as conn:
        row = load_member(conn, actor, member_id, "members.read")
        out = member_out(row)
        cards = cards_of_members(conn, [member_id])[member_id]
        card_ids = [c["card_id"] for c in cards]
        out["cards"] = cards
        out["activity"] = activity_of_cards(conn, card_ids).as_dict()
        out["transactions"] = last_transactions(conn, card_ids, transactions)
    return out


# --- writing -------------------------------------------------------------------------------

def _next_member_id(conn: Connection) -> str:
    """The next free member number ``M00000001``… (numbers typed in by imports skipped)."""
    row = conn.execute(select(counters.c.value).where(counters.c.name == "member_number")
                       .with_for_update()).first()
    value = 0 if row is None else int(row[0])
    while True:
        value += 1
        candidate = f"M{value:08d}"
        if _row(conn, candidate) is None:
            break
    if row is None:
        conn.execute(insert(counters).values(name="member_number", value=value))
    else:
        conn.execute(update(counters).where(counters.c.name == "member_number")
                     .values(value=value))
    return candidate


def _check_store(conn: Connection, actor: Actor, store_id: str | None,
                 errors: list[FieldError]) -> None:
    place = place_of_store(conn, store_id)
    if place is None:
        errors.append(FieldError("store_id", f"no store {store_id!r} in the chain"))
        return
    try:
        authorise(actor, "members.write", place)
    except NotVisible:
        errors.append(FieldError("store_id", f"no store {store_id!r} in the chain"))


def _check_referrer(conn: Connection, actor: Actor, member_id: str | None,
                    referrer_id: str | None, errors: list[FieldError]) -> None:
    """The referrer must be a member the operator can see, and no chain of referrals may
    lead back to the member itself."""
    if referrer_id is None:
        return
    if referrer_id == member_id:
        errors.append(FieldError("referrer_id", "a member cannot refer themself"))
        return
    try:
        load_member(conn, actor, referrer_id, "members.read")
    except MemberNotFound:
        errors.append(FieldError("referrer_id", f"no member {referrer_id!r}"))
        return
    seen, current = set(), referrer_id
    for _ in range(MAX_REFERRAL_DEPTH):
        if current is None or current in seen:
            return
        if current == member_id:
            errors.append(FieldError("referrer_id", f"{referrer_id} was (indirectly) referred "
                                     f"by {member_id}: referrals may not go round in a circle"))
            return
        seen.add(current)
        current = conn.execute(select(members.c.referrer_id)
                               .where(members.c.member_id == current)).scalar()


def _check_mobile(conn: Connection, actor: Actor, member_id: str | None,
                  mobile: str | None) -> None:
    if mobile is None:
        return
    other = conn.execute(select(members.c.member_id, members.c.store_id, members.c.status)
                         .where(members.c.mobile == mobile)).first()
    if other is None or other[0] == member_id:
        return
    try:
        authorise(actor, "members.read", _place(conn, other[1]))
        whose = f"member {other[0]}" + (" (deleted: restore it instead)"
                                        if other[2] == "deleted" else "")
    except NotVisible:
        whose = "a member of another store"
    raise DuplicateMobile(f"mobile {mobile} is already registered to {whose}")


def _search_values(profile: dict[str, Any]) -> dict[str, Any]:
    return search_columns(profile)


def create_member(actor: Actor, engine: Engine, data: dict[str, Any],
                  now_ms: int) -> dict[str, Any]:
    """Register a member (会员登记) from ``data`` (profile fields, ``member_id`` to choose
    the number, ``custom`` values); the stored member.

    Refused with every wrong field (:class:`MemberInvalid`), a mobile already in the chain
    (:class:`DuplicateMobile`); nothing is written then. Without ``store_id`` a store
    operator registers at their own store, a chain operator at HQ.
    """
    authorise(actor, "members.write")
    with engine.begin() as conn:
        out = _insert_member(conn, actor, data, now_ms, defs=field_definitions(conn))
    return out


def _insert_member(conn: Connection, actor: Actor, data: dict[str, Any], now_ms: int, *,
                   defs: dict[str, FieldDefinition]) -> dict[str, Any]:
    data = dict(data)
    member_id = data.pop("member_id", None) or None
    custom_in = data.pop("custom", None) or {}
    if "store_id" not in data and actor.scope.level is Level.STORE:
        data["store_id"] = actor.scope.id
    profile, errors = clean_profile(data, today_of(now_ms))
    custom, custom_errors = clean_custom(custom_in, defs)
    errors += custom_errors
    if member_id is not None:
        problem = member_id_problem(member_id) if isinstance(member_id, str) else "must be text"
        if problem:
            errors.append(FieldError("member_id", problem))
        elif _row(conn, member_id) is not None:
            errors.append(FieldError("member_id", f"member number {member_id} is taken"))
    if "store_id" in profile:
        _check_store(conn, actor, profile["store_id"], errors)
    _check_referrer(conn, actor, member_id, profile.get("referrer_id"), errors)
    if errors:
        raise MemberInvalid(errors)
    _check_mobile(conn, actor, None, profile.get("mobile"))
    if profile.get("join_date") is None:
        profile["join_date"] = today_of(now_ms).isoformat()
    member_id = member_id or _next_member_id(conn)
    values = {**profile, **_search_values(profile), "member_id": member_id,
              "custom_json": json.dumps(custom, ensure_ascii=False, sort_keys=True),
              "status": "active", "merged_into": None, "version": 1, "created_at_ms": now_ms,
              "updated_at_ms": now_ms}
    try:
        with conn.begin_nested():
            conn.execute(insert(members).values(values))
    except IntegrityError:
        _check_mobile(conn, actor, None, profile.get("mobile"))
        raise MemberInvalid([FieldError("member_id", "taken meanwhile; try again")]) from None
    out = member_out(values)
    record_action(conn, actor, "member.create", "member", member_id, None, out, now_ms)
    return out


def update_member(actor: Actor, engine: Engine, member_id: str, changes: dict[str, Any],
                  expected_version: int | None, now_ms: int, *,
                  based_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """Edit a member: only the fields in ``changes`` (``custom`` values merge into the
    existing ones). ``expected_version`` is the version the operator edited; if another
    operator changed the member since, :class:`EditConflict` (409) says what changed and
    nothing is applied. Returns the member as stored."""
    with engine.begin() as conn:
        row = load_member(conn, actor, member_id, "members.write", lock=True)
        before = member_out(row)
        _editable(row)
        _check_version(expected_version, before, based_on, conn)
        out = _apply_changes(conn, actor, row, changes, now_ms, field_definitions(conn))
    return out


def _editable(row: Any) -> None:
    if row["status"] == "deleted":
        raise MemberStateConflict(f"member {row['member_id']} is deleted; restore it first")
    if row["status"] == "merged":
        raise MemberStateConflict(f"member {row['member_id']} was merged into "
                                  f"{row['merged_into']}; edit that member")


def _apply_changes(conn: Connection, actor: Actor, row: Any, changes: dict[str, Any],
                   now_ms: int, defs: dict[str, FieldDefinition]) -> dict[str, Any]:
    before = member_out(row)
    changes = dict(changes)
    custom_in = changes.pop("custom", None)
    changes.pop("member_id", None)
    changes.pop("version", None)
    cleaned, errors = clean_profile(changes, today_of(now_ms), partial=True)
    custom, custom_errors = clean_custom(custom_in or {}, defs, before["custom"])
    errors += custom_errors
    if "store_id" in cleaned and cleaned["store_id"] != row["store_id"]:
        _check_store(conn, actor, cleaned["store_id"], errors)
    if "referrer_id" in cleaned and cleaned["referrer_id"] != row["referrer_id"]:
        _check_referrer(conn, actor, row["member_id"], cleaned["referrer_id"], errors)
    if errors:
        raise MemberInvalid(errors)
    profile = {name: row[name] for name in PROFILE_NAMES} | cleaned
    if profile.get("mobile") != row["mobile"]:
        _check_mobile(conn, actor, row["member_id"], profile.get("mobile"))
    after = {**before, **cleaned, "custom": custom}
    if after == before:
        return before  # nothing changed: no new version, no audit row
    version = int(row["version"]) + 1
    values = {**cleaned, **_search_values(profile),
              "custom_json": json.dumps(custom, ensure_ascii=False, sort_keys=True),
              "version": version, "updated_at_ms": now_ms}
    try:
        with conn.begin_nested():
            done = conn.execute(update(members).where(
                (members.c.member_id == row["member_id"])
                & (members.c.version == row["version"])).values(values)).rowcount
    except IntegrityError:
        _check_mobile(conn, actor, row["member_id"], profile.get("mobile"))
        raise
    if done != 1:  # changed between our read and write (SQLite has no row lock)
        _check_version(int(row["version"]), member_out(_row(conn, row["member_id"])), before,
                       conn)
    after.update(version=version, updated_at_ms=now_ms)
    old, new = _changed(before, after)
    record_action(conn, actor, "member.update", "member", row["member_id"],
                  {**old, "version": version - 1}, {**new, "version": version}, now_ms)
    return after


def _set_status(actor: Actor, engine: Engine, member_id: str, permission: str,
                want_from: str, to: str, action: str, expected_version: int | None,
                now_ms: int) -> dict[str, Any]:
    from hq_server.recycle.bin import put_in_bin, take_out_of_bin

    with engine.begin() as conn:
        row = load_member(conn, actor, member_id, permission, lock=True)
        if row["status"] != want_from:
            raise MemberStateConflict(f"member {member_id} is {row['status']}, not {want_from}")
        before = member_out(row)
        if expected_version is not None:
            _check_version(expected_version, before, None, conn)
        conn.execute(update(members).where(members.c.member_id == member_id)
                     .values(status=to, version=int(row["version"]) + 1, updated_at_ms=now_ms))
        after = {**before, "status": to, "version": int(row["version"]) + 1,
                 "updated_at_ms": now_ms}
        place = _place(conn, row["store_id"])
        record_action(conn, actor, action, "member", member_id,
                      {"status": want_from, "version": int(row["version"])},
                      {"status": to, "version": int(row["version"]) + 1}, now_ms,
                      place=place)
        if to == "deleted":
            put_in_bin(conn, actor, BIN_KIND, member_id, place=place,
                       label=f"{member_id} {row['name']}", snapshot=before, now_ms=now_ms)
        else:
            take_out_of_bin(conn, actor, BIN_KIND, member_id, now_ms)
    return after


def delete_member(actor: Actor, engine: Engine, member_id: str, now_ms: int, *,
                  expected_version: int | None = None) -> dict[str, Any]:
    """Move a member to the recycle bin (数据回收站): status ``deleted``, kept with its
    cards and history, hidden from searches; restored by :func:`restore_member` or from the
    bin (``onecard hq recycle-bin restore``); only an administrator purges it, after the
    retention period (:func:`_purge_in_bin` erases the personal data for good)."""
    return _set_status(actor, engine, member_id, "members.delete", "active", "deleted",
                       "member.delete", expected_version, now_ms)


def restore_member(actor: Actor, engine: Engine, member_id: str, now_ms: int, *,
                   expected_version: int | None = None) -> dict[str, Any]:
    """Bring a deleted member back from the recycle bin, as it was."""
    return _set_status(actor, engine, member_id, "recycle.restore", "deleted", "active",
                       "member.restore", expected_version, now_ms)


#: The recycle bin's name for members (hq_server.recycle).
BIN_KIND = "member"


def _restore_in_bin(conn: Connection, actor: Actor, member_id: str, now_ms: int) -> None:
    """The bin's restore of a member (inside the bin's transaction, which audits it)."""
    from hq_server.recycle.bin import CannotRestore

    row = conn.execute(select(members.c.status, members.c.version, members.c.mobile)
                       .where(members.c.member_id == member_id)).first()
    if row is None or row[0] != "deleted":
        raise CannotRestore(f"member {member_id} is not deleted")
    conn.execute(update(members).where(members.c.member_id == member_id)
                 .values(status="active", version=int(row[1]) + 1, updated_at_ms=now_ms))


#: What purging keeps of a member: the number (cards and the ledger name it) and the
#: store; every other personal field is erased.
_KEPT_ON_PURGE = {"member_id", "store_id", "status", "merged_into", "version",
                  "created_at_ms", "updated_at_ms"}


def _purge_in_bin(conn: Connection, actor: Actor, member_id: str, now_ms: int) -> None:
    """The bin's purge of a member: the personal data erased for good; the member number
    stays (its cards' ledger history names it), marked deleted, with no name or mobile."""
    values: dict[str, Any] = {}
    for column in members.columns:
        if column.name in _KEPT_ON_PURGE:
            continue
        values[column.name] = None if column.nullable else (
            "{}" if column.name == "custom_json" else "")
    values["updated_at_ms"] = now_ms
    conn.execute(update(members).where((members.c.member_id == member_id)
                                       & (members.c.status == "deleted")).values(**values))


def _register_bin_kind() -> None:
    from hq_server.recycle.registry import BinKind, register

    register(BinKind(kind=BIN_KIND, title="member (会员)", restore=_restore_in_bin,
                     purge=_purge_in_bin))


_register_bin_kind()


def merge_members(actor: Actor, engine: Engine, survivor_id: str, merged_id: str,
                  now_ms: int) -> dict[str, Any]:
    """Merge a duplicate registration into the member that stays (合并会员).

    The survivor keeps its profile and takes over what it lacks from the other (blank
    fields, custom values, the mobile); every card of the merged member moves to the
    survivor, so both histories (the ledger is kept by card) are the survivor's; members
    the merged one referred now name the survivor. The merged member stays as a pointer
    (status ``merged``, ``merged_into``), so old references still resolve.
    """
    if survivor_id == merged_id:
        raise MergeRefused("a member cannot be merged into itself")
    with engine.begin() as conn:
        survivor = load_member(conn, actor, survivor_id, "members.write", lock=True)
        merged = load_member(conn, actor, merged_id, "members.write", lock=True)
        for row in (survivor, merged):
            if row["status"] != "active":
                raise MergeRefused(f"member {row['member_id']} is {row['status']}")
        before_s, before_m = member_out(survivor), member_out(merged)
        fill = {name: merged[name] for name in PROFILE_NAMES
                if survivor[name] in (None, "") and merged[name] not in (None, "")
                and name not in ("referrer_id", "store_id")}
        custom = {**before_m["custom"], **before_s["custom"]}
        conn.execute(update(members).where(members.c.member_id == merged_id).values(
            status="merged", merged_into=survivor_id, mobile=None, mobile_search=None,
            version=int(merged["version"]) + 1, updated_at_ms=now_ms))
        profile = {name: survivor[name] for name in PROFILE_NAMES} | fill
        conn.execute(update(members).where(members.c.member_id == survivor_id).values(
            **fill, **_search_values(profile),
            referrer_id=None if survivor["referrer_id"] == merged_id else survivor["referrer_id"],
            custom_json=json.dumps(custom, ensure_ascii=False, sort_keys=True),
            version=int(survivor["version"]) + 1, updated_at_ms=now_ms))
        conn.execute(update(members).where((members.c.referrer_id == merged_id)
                                           & (members.c.member_id != survivor_id))
                     .values(referrer_id=survivor_id))
        moved = move_cards(conn, merged_id, survivor_id)
        after_s = member_out(_row(conn, survivor_id))
        old, new = _changed(before_s, after_s)
        record_action(conn, actor, "member.merge", "member", survivor_id,
                      {**old, "version": before_s["version"]},
                      {**new, "version": after_s["version"], "merged": merged_id,
                       "cards_moved": moved}, now_ms)
        record_action(conn, actor, "member.merged_into", "member", merged_id,
                      {"status": "active", "mobile": before_m["mobile"]},
                      {"status": "merged", "merged_into": survivor_id,
                       "version": before_m["version"] + 1}, now_ms)
    return after_s


# --- custom field definitions ------------------------------------------------------------

def list_fields(actor: Actor, engine: Engine) -> list[dict[str, Any]]:
    authorise(actor, "members.read")
    with engine.connect() as conn:
        return [_field_out(r) for r in conn.execute(
            select(member_fields).order_by(member_fields.c.position, member_fields.c.key)
        ).mappings()]


def _field_out(r: Any) -> dict[str, Any]:
    return {"key": r["key"], "label": r["label"], "type": r["type"],
            "max_length": int(r["max_length"]), "choices": json.loads(r["choices_json"]),
            "default": None if r["default_json"] is None else json.loads(r["default_json"]),
            "required": bool(r["required"]), "status": r["status"],
            "version": int(r["version"])}


def define_field(actor: Actor, engine: Engine, definition: FieldDefinition,
                 now_ms: int) -> dict[str, Any]:
    """Define a custom field for every member of the chain (chain-wide operators only).

    A required field needs a default when members already exist, since every member
    must then have a value."""
    from hq_server.members.custom_fields import check_definition
    from hq_server.members.errors import FieldDefinitionInvalid

    authorise(actor, "members.write", Place(None))
    d = check_definition(definition)
    with engine.begin() as conn:
        if conn.execute(select(member_fields.c.key).where(member_fields.c.key == d.key)).first():
            raise FieldDefinitionInvalid(f"key: a custom field {d.key!r} exists already")
        if d.required and d.default is None and conn.execute(
                select(members.c.member_id).where(members.c.status == "active").limit(1)).first():
            raise FieldDefinitionInvalid("default: a required field needs a default while "
                                         "members exist (they would have no value)")
        position = int(conn.execute(select(func.coalesce(func.max(member_fields.c.position),
                                                         0))).scalar_one()) + 1
        values = {"key": d.key, "label": d.label, "type": d.type, "max_length": d.max_length,
                  "choices_json": json.dumps(list(d.choices), ensure_ascii=False),
                  "default_json": None if d.default is None else json.dumps(d.default),
                  "required": d.required, "position": position, "status": "active",
                  "version": 1, "created_at_ms": now_ms}
        conn.execute(insert(member_fields).values(values))
        out = _field_out(values)
        record_action(conn, actor, "member_field.create", "member_field", d.key, None, out,
                      now_ms)
    return out


def retire_field(actor: Actor, engine: Engine, key: str, now_ms: int) -> dict[str, Any]:
    """Stop asking for a custom field; the values members have keep (history)."""
    from hq_server.members.errors import FieldDefinitionInvalid

    authorise(actor, "members.write", Place(None))
    with engine.begin() as conn:
        row = conn.execute(select(member_fields).where(member_fields.c.key == key)
                           ).mappings().first()
        if row is None or row["status"] != "active":
            raise FieldDefinitionInvalid(f"no active custom field {key!r}")
        conn.execute(update(member_fields).where(member_fields.c.key == key)
                     .values(status="retired", version=int(row["version"]) + 1))
        out = {**_field_out(row), "status": "retired", "version": int(row["version"]) + 1}
        record_action(conn, actor, "member_field.retire", "member_field", key,
                      {"status": "active"}, {"status": "retired"}, now_ms)
    return out


# --- search ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemberQuery:
    """What an operator searches by. ``text`` is the one search box: a card number, a
    mobile (prefix), a name or its pinyin/initials (prefix), an ID number or a member
    number. The rest narrow it (ranges include both ends)."""

    text: str | None = None
    card_id: str | None = None
    mobile: str | None = None
    name: str | None = None
    id_number: str | None = None
    store_id: str | None = None
    category: str | None = None
    status: str = "active"
    joined_from: str | None = None
    joined_to: str | None = None
    birth_month: int | None = None
    spend_min_fen: int | None = None
    spend_max_fen: int | None = None
    visits_min: int | None = None
    visits_max: int | None = None


def _prefix(conn: Connection, column: Any, text: str) -> ColumnElement[bool]:
    """``column`` starts with ``text``, as an index range scan on either database."""
    if conn.dialect.name == "postgresql":
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(escaped + "%", escape="\\")
    return and_(column >= text, column < prefix_upper_bound(text))


def _text_conditions(conn: Connection, text: str) -> list[ColumnElement[bool]]:
    text = text.strip()[:100]
    if not text:
        return []
    found: list[ColumnElement[bool]] = [members.c.member_id == text]
    owner = member_of_card(conn, text)
    if owner:
        found.append(members.c.member_id == owner)
    phone = mobile_search_prefix(text)
    if phone is not None and len(phone[1].lstrip("+")) >= 3:
        column = members.c.mobile if phone[0] == "e164" else members.c.mobile_search
        found.append(_prefix(conn, column, phone[1]))
    id_number = normalise_id_number(text)
    if len(id_number) >= 4:
        found.append(members.c.id_number_norm == id_number)
    folded = fold_name(text)
    if folded:
        found.append(_prefix(conn, members.c.name_norm, folded))
        letters = folded.replace(" ", "")
        if letters.isascii() and letters.isalpha():
            found.append(_prefix(conn, members.c.name_initials, letters))
            found.append(_prefix(conn, members.c.name_pinyin, letters))
    return found


def _scope_condition(actor: Actor) -> ColumnElement[bool] | None:
    level, ident = scope_filter(actor)
    if level is Level.CHAIN:
        return None
    if level is Level.REGION:
        in_region = select(stores.c.store_id).where(stores.c.region_id == ident)
        return or_(members.c.store_id.is_(None), members.c.store_id.in_(in_region))
    return or_(members.c.store_id.is_(None), members.c.store_id == ident)


def _activity_columns() -> tuple[Any, Any]:
    """Per member (correlated): visits and spend from the ledger, through its cards."""
    c, t, e = CARD_REGISTRY.c, ledger_transactions.c, ledger_entries.c
    reversal = ledger_transactions.alias("reversal")
    visits = (select(func.count()).select_from(
        ledger_transactions.join(CARD_REGISTRY, c.card_id == t.card_id))
        .where(c.member_id == members.c.member_id, t.kind.in_(VISIT_KINDS),
               func.coalesce(t.memo, "").notlike("suspense:%"),
               ~select(reversal.c.txn_id).where(reversal.c.reverses == t.txn_id).exists())
        .scalar_subquery())
    spend = (select(func.coalesce(-func.sum(e.amount), 0)).select_from(
        ledger_entries.join(ledger_transactions, e.txn_id == t.txn_id)
        .join(CARD_REGISTRY, c.card_id == t.card_id))
        .where(c.member_id == members.c.member_id, e.asset == "CNY",
               e.account.like("store:%:revenue:%"))
        .scalar_subquery())
    return visits, spend


def query_conditions(conn: Connection, actor: Actor, q: MemberQuery) -> list[ColumnElement[bool]]:
    """The WHERE conditions of a search, the operator's scope included."""
    where: list[ColumnElement[bool]] = []
    if q.status != "any":
        where.append(members.c.status == q.status)
    scope = _scope_condition(actor)
    if scope is not None:
        where.append(scope)
    if q.text:
        # One index search per way the text may match, united: an OR of them all lets a
        # planner fall back to scanning the whole table in member order (SQLite does).
        found = _text_conditions(conn, q.text)
        where.append(members.c.member_id.in_(union(
            *(select(members.c.member_id).where(condition) for condition in found)))
            if found else members.c.member_id.is_(None))
    if q.card_id:
        where.append(members.c.member_id == (member_of_card(conn, q.card_id.strip()) or ""))
    if q.mobile:
        phone = mobile_search_prefix(q.mobile)
        if phone is None:
            where.append(members.c.member_id.is_(None))
        else:
            column = members.c.mobile if phone[0] == "e164" else members.c.mobile_search
            where.append(_prefix(conn, column, phone[1]))
    if q.name:
        folded = fold_name(q.name)
        letters = folded.replace(" ", "")
        options = [_prefix(conn, members.c.name_norm, folded)] if folded else []
        if letters.isascii() and letters.isalpha():
            options += [_prefix(conn, members.c.name_initials, letters),
                        _prefix(conn, members.c.name_pinyin, letters)]
        where.append(or_(*options) if options else members.c.member_id.is_(None))
    if q.id_number:
        where.append(members.c.id_number_norm == normalise_id_number(q.id_number))
    if q.store_id:
        where.append(members.c.store_id == q.store_id)
    if q.category:
        where.append(members.c.category == q.category)
    if q.joined_from:
        where.append(members.c.join_date >= q.joined_from)
    if q.joined_to:
        where.append(members.c.join_date <= q.joined_to)
    if q.birth_month is not None:
        where.append(members.c.birth_month == q.birth_month)
    ranges = (q.spend_min_fen, q.spend_max_fen, q.visits_min, q.visits_max)
    if any(v is not None for v in ranges):
        if not registry_present(conn):
            visits, spend = 0, 0
        else:
            visits, spend = _activity_columns()
        for column, low, high in ((spend, q.spend_min_fen, q.spend_max_fen),
                                  (visits, q.visits_min, q.visits_max)):
            if isinstance(column, int):
                if (low is not None and low > 0) or (high is not None and high < 0):
                    where.append(members.c.member_id.is_(None))
                continue
            if low is not None:
                where.append(column >= low)
            if high is not None:
                where.append(column <= high)
    return where


def find_members(actor: Actor, engine: Engine, q: MemberQuery, *, cursor: str | None = None,
                 limit: int | None = None) -> dict[str, Any]:
    """One page of the members matching ``q`` within the operator's scope, by member
    number, each with its cards: ``{"items": [...], "next_cursor": ...}``."""
    authorise(actor, "members.read")
    after = decode_cursor(cursor, 1)
    size = page_limit(limit)
    with engine.connect() as conn:
        where = query_conditions(conn, actor, q)
        if after is not None:
            where.append(members.c.member_id > str(after[0]))
        rows = conn.execute(select(members).where(*where).order_by(members.c.member_id)
                            .limit(size + 1)).mappings().all()
        page = [member_out(r) for r in rows[:size]]
        cards = cards_of_members(conn, [m["member_id"] for m in page])
    for m in page:
        m["cards"] = cards[m["member_id"]]
    more = len(rows) > size
    return {"items": page,
            "next_cursor": encode_cursor((page[-1]["member_id"],)) if more and page else None}


def members_by_mobile(actor: Actor, engine: Engine, mobile: str) -> list[dict[str, Any]]:
    """Phone instead of card (报手机号代卡): the members whose mobile starts with what was
    typed, each with its cards, so the counter can serve a member who forgot the card."""
    return find_members(actor, engine, MemberQuery(mobile=mobile), limit=20)["items"]
