"""Fleet presence: which terminal is online, since when, how far behind, running what.

:func:`next_presence` is the rule (plain code): a Birth opens session ``bdseq``, a Death
closes only the session it names, a Heartbeat refreshes the session it belongs to.
Anything older than the current session is ignored, so a Last Will that the broker
delivers after the terminal already reconnected, or a retained Birth delivered again
after its Death, never flips the terminal's state. Because HQ workers share the
subscription, messages of one terminal can arrive out of order; the rule does not
depend on arrival order within a session beyond "a death is final for its bdseq".

:func:`record_presence` applies a message to the ``device_presence`` table; the
dashboard reads :func:`fleet_presence`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from hq_server.clock import system_clock
from hq_server.db.tables import device_presence, devices
from protocol.topics import Birth, Death, Heartbeat, MessageError, device_of_topic, presence_kind


@dataclass(frozen=True)
class Presence:
    """What HQ knows of one terminal's connection."""

    online: bool = False
    bdseq: int = 0
    session_started_ms: int | None = None
    last_seen_ms: int | None = None
    went_offline_ms: int | None = None
    offline_reason: str | None = None  # "lwt" (unclean loss) or "clean"
    software_version: str | None = None
    role: str | None = None
    store: str | None = None
    config_version: int | None = None
    denylist_version: int | None = None
    readers: dict[str, str] = field(default_factory=dict)
    outbox_depth: int | None = None
    oldest_unsent_age_ms: int | None = None
    last_ack_seq: int | None = None
    disk_free_bytes: int | None = None
    clock_offset_ms: int | None = None


def next_presence(state: Presence, message: Birth | Death | Heartbeat, now_ms: int) -> Presence:
    """The terminal's presence after ``message`` (received at ``now_ms``)."""
    if isinstance(message, Birth):
        if message.bdseq < state.bdseq:
            return state  # an older session's birth
        if message.bdseq == state.bdseq and state.offline_reason:
            return state  # the retained birth of a session that already died
        described = replace(state, software_version=message.software_version,
                            role=message.role, store=message.store,
                            config_version=message.config_version,
                            denylist_version=message.denylist_version,
                            readers=dict(message.readers))
        if message.bdseq == state.bdseq and state.online:
            return described  # the same birth again, or after this session's heartbeat
        return replace(state, online=True, bdseq=message.bdseq, session_started_ms=now_ms,
                       last_seen_ms=now_ms, went_offline_ms=None, offline_reason=None,
                       software_version=message.software_version, role=message.role,
                       store=message.store, config_version=message.config_version,
                       denylist_version=message.denylist_version, readers=dict(message.readers))
    if isinstance(message, Death):
        if message.bdseq < state.bdseq:
            return state  # a late Last Will of a session that is over
        if message.bdseq == state.bdseq and state.offline_reason:
            return state  # already dead
        return replace(state, online=False, bdseq=message.bdseq, went_offline_ms=now_ms,
                       offline_reason=message.reason,
                       session_started_ms=state.session_started_ms
                       if message.bdseq == state.bdseq else now_ms)
    if isinstance(message, Heartbeat):
        if message.bdseq < state.bdseq or (message.bdseq == state.bdseq and state.offline_reason):
            return state  # from a session that is over
        fresh = message.bdseq > state.bdseq  # its Birth has not reached us (yet)
        return replace(state, online=True, bdseq=message.bdseq, last_seen_ms=now_ms,
                       session_started_ms=now_ms if fresh else state.session_started_ms,
                       went_offline_ms=None, offline_reason=None,
                       outbox_depth=message.outbox_depth,
                       oldest_unsent_age_ms=message.oldest_unsent_age_ms,
                       last_ack_seq=message.last_ack_seq, disk_free_bytes=message.disk_free_bytes,
                       clock_offset_ms=message.clock_offset_ms,
                       readers=dict(message.readers) or state.readers)
    raise TypeError(f"not a presence message: {message!r}")


def parse_presence(topic: str, payload: bytes) -> tuple[str, Birth | Death | Heartbeat]:
    """The device id and message of a presence topic; MessageError if malformed."""
    kind = presence_kind(topic)
    device_id = device_of_topic(topic)
    if kind is None or device_id is None:
        raise MessageError(f"not a presence topic: {topic!r}")
    parser = {"birth": Birth, "death": Death, "heartbeat": Heartbeat}[kind]
    return device_id, parser.from_json(payload)


_COLUMNS = [c.name for c in device_presence.columns if c.name != "device_id"]


def _to_row(p: Presence) -> dict:
    row = {name: getattr(p, name) for name in _COLUMNS}
    row["readers"] = json.dumps(p.readers, sort_keys=True)
    return row


def _from_row(row) -> Presence:
    data = {name: row[name] for name in _COLUMNS}
    data["online"] = bool(data["online"])
    data["readers"] = json.loads(data["readers"] or "{}")
    return Presence(**data)


class UnknownDevice(LookupError):
    """Presence from a device HQ has not registered: not stored."""


def record_presence(engine: Engine, topic: str, payload: bytes,
                    now_ms: int | None = None) -> Presence:
    """Apply one presence message to the registry; returns the device's new presence."""
    device_id, message = parse_presence(topic, payload)
    now_ms = system_clock() if now_ms is None else now_ms
    with engine.begin() as conn:
        if conn.execute(select(devices.c.device_id).where(devices.c.device_id == device_id)
                        .with_for_update(key_share=True)).first() is None:
            raise UnknownDevice(f"presence from unregistered device {device_id!r}")
        row = conn.execute(select(device_presence).where(
            device_presence.c.device_id == device_id)).mappings().first()
        state = _from_row(row) if row else Presence()
        new = next_presence(state, message, now_ms)
        if new != state or row is None:
            if row is None:
                conn.execute(insert(device_presence).values(device_id=device_id, **_to_row(new)))
            else:
                conn.execute(update(device_presence).where(
                    device_presence.c.device_id == device_id).values(**_to_row(new)))
    return new


def fleet_presence(engine: Engine) -> dict[str, dict]:
    """Every registered device with its presence and ingest progress (for the dashboard).

    ``upload_backlog`` is HQ's own view: records the device numbered that HQ has not
    got contiguously yet (highest seen minus contiguous mark); ``outbox_depth`` is what
    the device last said it holds.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            select(devices.c.device_id.label("registered_id"),
                   devices.c.store.label("registered_store"),
                   devices.c.role.label("registered_role"), devices.c.status,
                   devices.c.contiguous_through, devices.c.highest_seen,
                   *[device_presence.c[name] for name in _COLUMNS])
            .select_from(devices.outerjoin(device_presence,
                                           device_presence.c.device_id == devices.c.device_id))
            .order_by(devices.c.device_id)).mappings().all()
    out: dict[str, dict] = {}
    for row in rows:
        p = _from_row(row) if row["bdseq"] is not None else Presence()
        out[row["registered_id"]] = {
            **p.__dict__, "registered_store": row["registered_store"],
            "registered_role": row["registered_role"],
            "status": row["status"], "acked_through": row["contiguous_through"],
            "upload_backlog": row["highest_seen"] - row["contiguous_through"],
        }
    return out
