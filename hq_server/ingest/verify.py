"""Checking one received message: a record signed by a registered, active device,
sent on that device's own topic. What fails is a :class:`Rejected`, attributed to the
device the topic names.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hq_server.devices.registry import Device
from hq_server.ingest.classify import Rejected
from protocol.record import Reason, RecordRejected, SignedRecord, decode_wire, verify_wire
from protocol.topics import device_of_topic


def verify_one(topic: str, payload: bytes, registry: dict[str, Device]) -> SignedRecord:
    def key_for(device_id: str) -> Ed25519PublicKey | None:
        device = registry.get(device_id)
        return device.public_key if device else None

    signed = verify_wire(payload, key_for)
    device_id = signed.record.device_id
    if device_id != device_of_topic(topic):
        raise RecordRejected(Reason.WRONG_TOPIC, f"record of {device_id!r} arrived on {topic!r}")
    device = registry[device_id]
    if device.status == "held":
        raise RecordRejected(Reason.HELD_DEVICE,
                             f"device {device_id!r} is held until an operator releases it")
    if device.status != "active":
        raise RecordRejected(Reason.REVOKED_DEVICE, f"device {device_id!r} is {device.status}")
    return signed



def sender_of_topic(topic: object) -> str:
    """Who sent a message, as its topic says: the device id, or the topic's device
    level when it is not a valid id (cut to 64 characters), or ``unknown``.

    The broker's ACL binds a device's topics to its own credentials, so the topic names
    the sender even when the payload cannot be read or claims to be another device's.
    """
    if not isinstance(topic, str):
        return "unknown"
    device = device_of_topic(topic)
    if device:
        return device
    parts = topic.split("/")
    return (parts[3][:64] if len(parts) > 3 and parts[3] else "unknown")



def rejection(payload: bytes, exc: RecordRejected, topic: object) -> Rejected:
    """A refused message, attributed to the device its topic names (not to the device
    the payload claims to be: one terminal must not spend another's quarantine)."""
    payload = bytes(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else b""
    seq = None
    try:
        seq = decode_wire(payload).record.seq
    except RecordRejected:
        pass
    return Rejected(payload, exc, sender_of_topic(topic), seq)
