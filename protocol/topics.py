"""MQTT topics and the small JSON messages that travel beside records.

Every topic a device may publish to starts with ``onecard/v1/dev/<device_id>/up/`` and
every topic addressed to one device with ``onecard/v1/dev/<device_id>/down/``; the
broker's ACL grants a device exactly those two subtrees (see ``broker_config/``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# MessageError is re-exported: terminal_fw and hq_server import it from here.
from protocol.ids import ID_PATTERN
from protocol.messages import MessageError, int_field, load_object, str_field

ROOT = "onecard/v1"
DEVICE_ID = re.compile(ID_PATTERN)  # the one id grammar (protocol.ids)


def device_topic_root(device_id: str) -> str:
    """``onecard/v1/dev/<device_id>``, the subtree every topic of one device sits under.

    The id is checked (ValueError if it is not one) because it becomes part of a topic
    name: a ``/``, ``+`` or ``#`` in it would address other devices' topics.
    """
    if not DEVICE_ID.match(device_id):
        raise ValueError(f"not a device id: {device_id!r}")
    return f"{ROOT}/dev/{device_id}"


def records_topic(device_id: str) -> str:
    """Device → HQ: one signed record per message (binary payload), QoS 1."""
    return f"{device_topic_root(device_id)}/up/records"


def ack_topic(device_id: str) -> str:
    """HQ → device: :class:`Ack` as JSON, QoS 1."""
    return f"{device_topic_root(device_id)}/down/ack"


#: What HQ ingest subscribes to (through a shared subscription when scaled out).
ALL_RECORDS = f"{ROOT}/dev/+/up/records"
ALL_RECORDS_SHARED = f"$share/hq-ingest/{ALL_RECORDS}"


def device_of_topic(topic: str) -> str | None:
    """The device id in a per-device topic, or None if the topic is not one of ours."""
    parts = topic.split("/")
    if len(parts) >= 5 and "/".join(parts[:3]) == f"{ROOT}/dev" and DEVICE_ID.match(parts[3]):
        return parts[3]
    return None


@dataclass(frozen=True)
class Ack:
    """HQ has durably committed every record of the device up to ``through``.

    It is the highest *contiguous* committed sequence: a device may delete records
    ``<= through`` and nothing else. ``missing`` lists sequences HQ has not seen below
    the highest it has (a gap), so the device can send them again at once.
    """

    through: int
    missing: tuple[int, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps({"through": self.through, "missing": list(self.missing)}).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Ack:
        d = load_object(payload, "ack")
        through = int_field(d, "through", "ack")
        missing = d.get("missing", [])
        if not isinstance(missing, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s > through for s in missing):
            raise MessageError("malformed ack: missing must list sequences above through")
        return cls(through, tuple(missing))


# --- presence: birth, death, heartbeat (Sparkplug's pattern) ------------------------
#
# A terminal counts its broker sessions: ``bdseq`` goes up by one at every connect and
# is kept on disk. At connect it sets its Last Will to a Death carrying that bdseq, and
# once connected it publishes a Birth with the same bdseq (retained, so an HQ that starts
# later still learns the fleet). A clean shutdown publishes the Death itself (reason
# "clean"). HQ only lets a Death end the session whose bdseq it carries, so a Last Will
# the broker delivers late, after the terminal already reconnected, is not taken for
# the new session.


def birth_topic(device_id: str) -> str:
    """Device → HQ: :class:`Birth`, retained, QoS 1."""
    return f"{device_topic_root(device_id)}/up/presence/birth"


def death_topic(device_id: str) -> str:
    """Device (or the broker, as its Last Will) → HQ: :class:`Death`, retained, QoS 1."""
    return f"{device_topic_root(device_id)}/up/presence/death"


def heartbeat_topic(device_id: str) -> str:
    """Device → HQ: :class:`Heartbeat`, QoS 0 or 1, every few seconds to a minute."""
    return f"{device_topic_root(device_id)}/up/presence/heartbeat"


ALL_PRESENCE = f"{ROOT}/dev/+/up/presence/+"
ALL_PRESENCE_SHARED = f"$share/hq-ingest/{ALL_PRESENCE}"


def presence_kind(topic: str) -> str | None:
    """``"birth"``, ``"death"`` or ``"heartbeat"`` for a presence topic, else None."""
    parts = topic.split("/")
    if len(parts) == 7 and parts[4:6] == ["up", "presence"] and parts[6] in (
            "birth", "death", "heartbeat"):
        return parts[6]
    return None


def _readers(data: dict, what: str) -> dict[str, str]:
    value = data.get("readers", {})
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 32
            for k, v in value.items()):
        raise MessageError(f"malformed {what}: readers must map reader names to a status")
    return dict(value)


@dataclass(frozen=True)
class Birth:
    """A terminal's new broker session: who it is and what it runs."""

    bdseq: int
    time_ms: int
    software_version: str
    role: str
    store: str
    config_version: int = 0
    denylist_version: int = 0
    readers: dict[str, str] = field(default_factory=dict)  # name → "ok" / "absent" / ...

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Birth:
        d = load_object(payload, "birth")
        return cls(bdseq=int_field(d, "bdseq", "birth"),
                   time_ms=int_field(d, "time_ms", "birth"),
                   software_version=str_field(d, "software_version", "birth"),
                   role=str_field(d, "role", "birth", max_len=16),
                   store=str_field(d, "store", "birth"),
                   config_version=int_field(d, "config_version", "birth"),
                   denylist_version=int_field(d, "denylist_version", "birth"),
                   readers=_readers(d, "birth"))


@dataclass(frozen=True)
class Death:
    """The end of session ``bdseq``: ``reason`` is "lwt" (unclean) or "clean" (shutdown)."""

    bdseq: int
    reason: str = "lwt"
    time_ms: int = 0  # 0 in a Last Will, which is composed at connect time

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Death:
        d = load_object(payload, "death")
        reason = str_field(d, "reason", "death", max_len=16) or "lwt"
        if reason not in ("lwt", "clean"):
            raise MessageError("malformed death: reason must be 'lwt' or 'clean'")
        return cls(bdseq=int_field(d, "bdseq", "death"), reason=reason,
                   time_ms=int_field(d, "time_ms", "death", optional=True) or 0)


@dataclass(frozen=True)
class Heartbeat:
    """A terminal's periodic health: its upload backlog and what might go wrong next."""

    bdseq: int
    time_ms: int
    outbox_depth: int
    oldest_unsent_age_ms: int = 0
    last_ack_seq: int = 0
    disk_free_bytes: int = 0
    clock_offset_ms: int = 0  # device clock minus HQ/NTP reference; may be negative
    readers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Heartbeat:
        d = load_object(payload, "heartbeat")
        return cls(bdseq=int_field(d, "bdseq", "heartbeat"),
                   time_ms=int_field(d, "time_ms", "heartbeat"),
                   outbox_depth=int_field(d, "outbox_depth", "heartbeat"),
                   oldest_unsent_age_ms=int_field(d, "oldest_unsent_age_ms", "heartbeat",
                                                  optional=True) or 0,
                   last_ack_seq=int_field(d, "last_ack_seq", "heartbeat", optional=True) or 0,
                   disk_free_bytes=int_field(d, "disk_free_bytes", "heartbeat",
                                             optional=True) or 0,
                   clock_offset_ms=int_field(d, "clock_offset_ms", "heartbeat", minimum=None,
                                             optional=True) or 0,
                   readers=_readers(d, "heartbeat"))


# --- denylist: snapshot + deltas, versioned --------------------------------------------
#
# HQ's denylist is an append-only log; its version is the number of its last entry.
# The snapshot (retained) lets a terminal start from scratch; each delta takes a
# terminal from ``from_version`` to ``to_version``. A terminal whose version is not a
# delta's ``from_version`` ignores the delta and waits for (or asks for) a snapshot.

DENYLIST_SNAPSHOT_TOPIC = f"{ROOT}/broadcast/denylist/snapshot"
DENYLIST_DELTA_TOPIC = f"{ROOT}/broadcast/denylist/delta"


@dataclass(frozen=True)
class DenylistEntry:
    card_id: str
    reason: str
    effective_at_ms: int

    def as_dict(self) -> dict:
        return {"card_id": self.card_id, "reason": self.reason,
                "effective_at_ms": self.effective_at_ms}

    @classmethod
    def from_dict(cls, d: object, what: str) -> DenylistEntry:
        if not isinstance(d, dict):
            raise MessageError(f"malformed {what}: entries must be objects")
        card = str_field(d, "card_id", what)
        if not card:
            raise MessageError(f"malformed {what}: card_id is required")
        return cls(card, str_field(d, "reason", what), int_field(d, "effective_at_ms", what))


def _entries(d: dict, key: str, what: str) -> tuple:
    items = d.get(key, [])
    if not isinstance(items, list):
        raise MessageError(f"malformed {what}: {key} must be a list")
    return tuple(DenylistEntry.from_dict(i, what) for i in items)


@dataclass(frozen=True)
class DenylistSnapshot:
    version: int
    cards: tuple[DenylistEntry, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps({"version": self.version,
                           "cards": [c.as_dict() for c in self.cards]}).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> DenylistSnapshot:
        d = load_object(payload, "denylist snapshot")
        return cls(int_field(d, "version", "denylist snapshot"),
                   _entries(d, "cards", "denylist snapshot"))


@dataclass(frozen=True)
class DenylistDelta:
    from_version: int
    to_version: int
    added: tuple[DenylistEntry, ...] = ()
    removed: tuple[str, ...] = ()  # card ids taken off the list

    def to_json(self) -> bytes:
        return json.dumps({"from_version": self.from_version, "to_version": self.to_version,
                           "added": [c.as_dict() for c in self.added],
                           "removed": list(self.removed)}).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> DenylistDelta:
        what = "denylist delta"
        d = load_object(payload, what)
        frm, to = int_field(d, "from_version", what), int_field(d, "to_version", what)
        if to <= frm:
            raise MessageError(f"malformed {what}: to_version must be above from_version")
        removed = d.get("removed", [])
        if not isinstance(removed, list) or not all(isinstance(c, str) for c in removed):
            raise MessageError(f"malformed {what}: removed must be a list of card ids")
        return cls(frm, to, _entries(d, "added", what), tuple(removed))
