"""MQTT topics and the small JSON messages that travel beside records.

Every topic a device may publish to starts with ``onecard/v1/dev/<device_id>/up/`` and
every topic addressed to one device with ``onecard/v1/dev/<device_id>/down/``; the
broker's ACL grants a device exactly those two subtrees (see ``broker_config/``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

ROOT = "onecard/v1"
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _device(device_id: str) -> str:
    if not DEVICE_ID.match(device_id):
        raise ValueError(f"not a device id: {device_id!r}")
    return f"{ROOT}/dev/{device_id}"


def records_topic(device_id: str) -> str:
    """Device → HQ: one signed record per message (binary payload), QoS 1."""
    return f"{_device(device_id)}/up/records"


def ack_topic(device_id: str) -> str:
    """HQ → device: :class:`Ack` as JSON, QoS 1."""
    return f"{_device(device_id)}/down/ack"


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
        try:
            data = json.loads(payload)
            through = data["through"]
            missing = tuple(data.get("missing", ()))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed ack: {exc}") from None
        if not isinstance(through, int) or through < 0 or not all(
            isinstance(s, int) and s > through for s in missing
        ):
            raise ValueError("malformed ack: through must be a non-negative integer")
        return cls(through, missing)


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
    return f"{_device(device_id)}/up/presence/birth"


def death_topic(device_id: str) -> str:
    """Device (or the broker, as its Last Will) → HQ: :class:`Death`, retained, QoS 1."""
    return f"{_device(device_id)}/up/presence/death"


def heartbeat_topic(device_id: str) -> str:
    """Device → HQ: :class:`Heartbeat`, QoS 0 or 1, every few seconds to a minute."""
    return f"{_device(device_id)}/up/presence/heartbeat"


ALL_PRESENCE = f"{ROOT}/dev/+/up/presence/+"
ALL_PRESENCE_SHARED = f"$share/hq-ingest/{ALL_PRESENCE}"


def presence_kind(topic: str) -> str | None:
    """``"birth"``, ``"death"`` or ``"heartbeat"`` for a presence topic, else None."""
    parts = topic.split("/")
    if len(parts) == 7 and parts[4:6] == ["up", "presence"] and parts[6] in (
            "birth", "death", "heartbeat"):
        return parts[6]
    return None


class MessageError(ValueError):
    """A presence or denylist message that does not follow its schema."""


def _load(payload: bytes, what: str) -> dict:
    try:
        data = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise MessageError(f"malformed {what}: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError(f"malformed {what}: not a JSON object")
    return data


def _int(data: dict, key: str, what: str, *, minimum: int | None = 0,
         optional: bool = False) -> int | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (
            minimum is not None and value < minimum):
        raise MessageError(f"malformed {what}: {key} must be an integer"
                           + (f" >= {minimum}" if minimum is not None else ""))
    return value


def _str(data: dict, key: str, what: str, *, max_len: int = 64) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > max_len:
        raise MessageError(f"malformed {what}: {key} must be text of at most {max_len} characters")
    return value


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
        d = _load(payload, "birth")
        return cls(bdseq=_int(d, "bdseq", "birth"), time_ms=_int(d, "time_ms", "birth"),
                   software_version=_str(d, "software_version", "birth"),
                   role=_str(d, "role", "birth", max_len=16), store=_str(d, "store", "birth"),
                   config_version=_int(d, "config_version", "birth"),
                   denylist_version=_int(d, "denylist_version", "birth"),
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
        d = _load(payload, "death")
        reason = _str(d, "reason", "death", max_len=16) or "lwt"
        if reason not in ("lwt", "clean"):
            raise MessageError("malformed death: reason must be 'lwt' or 'clean'")
        return cls(bdseq=_int(d, "bdseq", "death"), reason=reason,
                   time_ms=_int(d, "time_ms", "death", optional=True) or 0)


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
        d = _load(payload, "heartbeat")
        return cls(bdseq=_int(d, "bdseq", "heartbeat"), time_ms=_int(d, "time_ms", "heartbeat"),
                   outbox_depth=_int(d, "outbox_depth", "heartbeat"),
                   oldest_unsent_age_ms=_int(d, "oldest_unsent_age_ms", "heartbeat",
                                             optional=True) or 0,
                   last_ack_seq=_int(d, "last_ack_seq", "heartbeat", optional=True) or 0,
                   disk_free_bytes=_int(d, "disk_free_bytes", "heartbeat", optional=True) or 0,
                   clock_offset_ms=_int(d, "clock_offset_ms", "heartbeat", minimum=None,
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
        card = _str(d, "card_id", what)
        if not card:
            raise MessageError(f"malformed {what}: card_id is required")
        return cls(card, _str(d, "reason", what), _int(d, "effective_at_ms", what))


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
        d = _load(payload, "denylist snapshot")
        return cls(_int(d, "version", "denylist snapshot"),
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
        d = _load(payload, what)
        frm, to = _int(d, "from_version", what), _int(d, "to_version", what)
        if to <= frm:
            raise MessageError(f"malformed {what}: to_version must be above from_version")
        removed = d.get("removed", [])
        if not isinstance(removed, list) or not all(isinstance(c, str) for c in removed):
            raise MessageError(f"malformed {what}: removed must be a list of card ids")
        return cls(frm, to, _entries(d, "added", what), tuple(removed))
