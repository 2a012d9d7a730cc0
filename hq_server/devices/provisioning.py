"""What a terminal receives beside its identity: the store's config, its card keys, HQ's time.

A new terminal gets all three in the enrolment answer, so it takes a tap as soon as it
is enrolled; an enrolled terminal gets them again at every start by *checking in*
(:func:`check_in`), which is how a key rotation, a new store config or the time after
a power cut without a real-time clock reach it. Both travel over HQ's TLS API, which the
terminal pinned at enrolment (``protocol.enrolment.ca_pin``).

A check-in is signed with the device's signing key over a nonce the terminal chose; no
time is in it because a terminal without a real-time clock does not know the time yet.
HQ answers only an active device, echoes the nonce so the answer cannot be replayed
into another check-in, and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from sqlalchemy import select
from sqlalchemy.engine import Engine

from hq_server.clock import system_clock
from hq_server.db.tables import devices
from hq_server.devices.card_keys import CardKeyring, CardKeysMissing
from hq_server.devices.enrolment import EnrolmentError
from hq_server.devices.registry import parse_public_key
from hq_server.fleet.store_config import store_config
from protocol.enrolment import checkin_message


@dataclass(frozen=True)
class Provision:
    store_config: dict[str, Any] | None
    card_keys: dict[str, Any] | None
    hq_time_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"store_config": self.store_config, "card_keys": self.card_keys,
                "hq_time_ms": self.hq_time_ms}


def card_keys_for(keyring: CardKeyring | None, role: str, *, required: bool) -> dict | None:
    """The role's card keys; with ``required``, refuse (before a token is spent) when HQ
    holds none, since the terminal could not read a single card."""
    try:
        if keyring is None:
            raise CardKeysMissing("HQ was started without the chain's card keys")
        return keyring.for_role(role)
    except (CardKeysMissing, ValueError, OSError) as exc:
        if required:
            raise EnrolmentError("card_keys_missing", f"{exc}; the terminal would read no "
                                 "card. Run `onecard hq card-keys init --site ...` at HQ, "
                                 "restart serve-api, and run the same join line again") from None
        return None


def provision(engine: Engine, keyring: CardKeyring | None, store: str, role: str,
              card_keys: dict | None = None, now_ms: int | None = None) -> Provision:
    if card_keys is None:
        card_keys = card_keys_for(keyring, role, required=False)
    return Provision(store_config(engine, store), card_keys,
                     system_clock() if now_ms is None else now_ms)


def check_in(engine: Engine, keyring: CardKeyring | None, device_id: str, nonce_hex: str,
             signature_hex: str, now_ms: int | None = None) -> Provision:
    """Verify a signed check-in and answer with the config, card keys and time."""
    with engine.connect() as conn:
        row = conn.execute(select(devices).where(devices.c.device_id == device_id)
                           ).mappings().first()
    if row is None:
        raise EnrolmentError("unknown_device", f"no device {device_id!r} at HQ")
    if row["status"] != "active":
        raise EnrolmentError("revoked", f"device {device_id!r} is {row['status']}")
    try:
        parse_public_key(row["public_key"]).verify(bytes.fromhex(signature_hex),
                                                   checkin_message(device_id, nonce_hex))
    except (InvalidSignature, ValueError):
        raise EnrolmentError("bad_signature", f"the check-in is not signed with {device_id}'s "
                             "current key") from None
    return provision(engine, keyring, row["store"], row["role"], now_ms=now_ms)
