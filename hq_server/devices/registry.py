"""The device registry: which terminals exist, their public keys, stores and status."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.chain.errors import ChainError, ChainNotFound
from hq_server.chain.places import require_open_store
from hq_server.clock import system_clock
from hq_server.db.tables import devices
from protocol.ids import describe, is_device_id, is_store_id


class RegistryError(ValueError):
    """A registration that cannot be accepted, with the reason in words."""


@dataclass(frozen=True)
class Device:
    device_id: str
    public_key: Ed25519PublicKey
    store: str
    role: str
    status: str


def parse_public_key(hex_key: str) -> Ed25519PublicKey:
    try:
        raw = bytes.fromhex(hex_key)
    except ValueError:
        raise RegistryError("public key must be 64 hex digits") from None
    if len(raw) != 32:
        raise RegistryError("public key must be 32 bytes (64 hex digits)")
    return Ed25519PublicKey.from_public_bytes(raw)


def add_device(engine: Engine, device_id: str, public_key_hex: str, store: str,
               role: str = "gate", *, now_ms: int | None = None) -> Device:
    """Register a terminal's public key for a store HQ knows and has not closed.
    Re-registering an id is refused."""
    if not is_device_id(device_id):
        raise RegistryError(f"not a device id: {device_id!r} ({describe()})")
    if not is_store_id(store):
        raise RegistryError(f"not a store id: {store!r} ({describe()})")
    key = parse_public_key(public_key_hex)
    with engine.begin() as conn:
        if conn.execute(select(devices.c.device_id).where(devices.c.device_id == device_id)).first():
            raise RegistryError(f"device {device_id!r} is already registered")
        try:
            require_open_store(conn, store)
        except (ChainError, ChainNotFound) as exc:
            raise RegistryError(str(exc)) from None
        conn.execute(insert(devices).values(
            device_id=device_id, public_key=public_key_hex.lower(), store=store, role=role,
            status="active", registered_at_ms=system_clock() if now_ms is None else now_ms,
        ))
    return Device(device_id, key, store, role, "active")


def set_status(engine: Engine, device_id: str, status: str) -> None:
    with engine.begin() as conn:
        result = conn.execute(update(devices).where(devices.c.device_id == device_id)
                              .values(status=status))
        if result.rowcount == 0:
            raise RegistryError(f"no device {device_id!r}")


def load_device(conn: Connection, device_id: str) -> Device | None:
    row = conn.execute(select(devices).where(devices.c.device_id == device_id)).mappings().first()
    if row is None:
        return None
    return Device(row["device_id"], parse_public_key(row["public_key"]), row["store"],
                  row["role"], row["status"])


def list_devices(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(devices).order_by(devices.c.device_id)).mappings()]
