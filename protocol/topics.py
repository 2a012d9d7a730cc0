"""MQTT topics and the small JSON messages that travel beside records.

Every topic a device may publish to starts with ``onecard/v1/dev/<device_id>/up/`` and
every topic addressed to one device with ``onecard/v1/dev/<device_id>/down/``; the
broker's ACL grants a device exactly those two subtrees (see ``broker_config/``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

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
