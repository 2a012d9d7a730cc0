"""Device enrolment: one-time tokens, enrol, roll keys, revoke.

A terminal earns its identity like this (pretix's device enrolment, adapted):

1. an operator creates a **token** for a store and a role: random, used once, expiring;
   HQ stores only its SHA-256, so a database dump enrols nobody;
2. the terminal makes its Ed25519 signing key and an MQTT client key, and sends the
   token, the signing public key and a CSR for the MQTT key (:func:`enrol`);
3. HQ mints the device id, registers the public key, has the device CA sign the CSR
   with CN = device id, and answers with the certificate, the CA certificate, the
   broker's address and the device's first config.

:func:`roll_keys` replaces both keys on a request signed with the current signing key;
the old certificate goes on the broker's CRL and the old session is cut at once.
:func:`revoke_device` marks the device revoked (ingest quarantines its records with the
reason "revoked device"), revokes its certificates and cuts its connection.

The CA itself is not ours to import (hq_server imports only protocol): whoever runs HQ
hands in an object with the :class:`DeviceAuthority` methods (``onecard hq serve-api``
hands in ``broker_config.install.SiteDeviceCA``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.clock import system_clock
from hq_server.db.tables import device_certificates, device_events, devices, enrolment_tokens
from hq_server.devices.registry import RegistryError, parse_public_key
from protocol.enrolment import ROLES, roll_message
from protocol.ids import describe, is_device_id, is_store_id
from protocol.topics import ROOT, ack_topic, records_topic

log = logging.getLogger(__name__)

DEFAULT_TOKEN_TTL = dt.timedelta(hours=24)
MAX_TOKEN_TTL = dt.timedelta(days=30)
#: A roll request must be this fresh (device clocks may be off; replays die with the key).
ROLL_CLOCK_SKEW_MS = 15 * 60 * 1000
MAX_CSR_BYTES = 8192


class EnrolmentError(ValueError):
    """An enrolment request refused, with a machine code and the reason in words.

    ``code`` is one of: ``bad_request``, ``unknown_token``, ``token_used``,
    ``token_expired``, ``unknown_device``, ``revoked``, ``bad_signature``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DeviceAuthority(Protocol):
    """What enrolment needs from the device CA and the broker."""

    def ca_pem(self) -> bytes: ...

    def sign_device_csr(self, csr_pem: bytes, device_id: str) -> bytes: ...

    def revoke_certificates(self, serials: list[int]) -> None: ...

    def disconnect(self, device_id: str) -> bool: ...


@dataclass(frozen=True)
class BrokerAddress:
    """Where terminals reach the broker's devices listener."""

    host: str
    port: int = 8883


@dataclass
class Enrolment:
    """What a terminal receives: who it is, its certificate, where to go, what to do."""

    device_id: str
    store: str
    role: str
    certificate_pem: str
    ca_pem: str
    broker: BrokerAddress
    config: dict[str, Any] = field(default_factory=dict)
    #: What ``enrol``'s ``before_commit`` returned (the role's card keys); not in to_json.
    card_keys: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "store": self.store, "role": self.role,
                "certificate": self.certificate_pem, "ca": self.ca_pem,
                "broker": {"host": self.broker.host, "port": self.broker.port},
                "config": self.config}


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _event(conn: Connection, device_id: str, event: str, actor: str, detail: dict,
           now_ms: int) -> None:
    conn.execute(insert(device_events).values(
        device_id=device_id, event=event, actor=actor, detail=json.dumps(detail, sort_keys=True),
        at_ms=now_ms))


# --- tokens -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once to the operator; HQ keeps only its hash
    store: str
    role: str
    expires_at_ms: int


def create_token(engine: Engine, store: str, role: str, created_by: str,
                 ttl: dt.timedelta = DEFAULT_TOKEN_TTL, now_ms: int | None = None) -> IssuedToken:
    """A one-time enrolment token for a terminal of ``role`` in ``store``."""
    if not is_store_id(store):
        raise EnrolmentError("bad_request", f"not a store id: {store!r} ({describe()})")
    if role not in ROLES:
        raise EnrolmentError("bad_request", f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if not dt.timedelta(minutes=1) <= ttl <= MAX_TOKEN_TTL:
        raise EnrolmentError("bad_request", "a token lives between one minute and 30 days")
    now_ms = system_clock() if now_ms is None else now_ms
    token = "oce_" + secrets.token_urlsafe(32)
    expires = now_ms + int(ttl.total_seconds() * 1000)
    with engine.begin() as conn:
        conn.execute(insert(enrolment_tokens).values(
            token_hash=_token_hash(token), store=store, role=role, created_by=created_by,
            created_at_ms=now_ms, expires_at_ms=expires))
    log.info("enrolment token for a %s in store %s created by %s (expires %d)",
             role, store, created_by, expires)
    return IssuedToken(token, store, role, expires)


def _claim_token(conn: Connection, token: str, now_ms: int) -> tuple[str, str]:
    """Mark the token used; exactly one caller can ever succeed. Returns store and role."""
    h = _token_hash(token)
    claimed = conn.execute(
        update(enrolment_tokens)
        .where((enrolment_tokens.c.token_hash == h) & enrolment_tokens.c.used_at_ms.is_(None)
               & (enrolment_tokens.c.expires_at_ms > now_ms))
        .values(used_at_ms=now_ms)).rowcount
    row = conn.execute(select(enrolment_tokens).where(enrolment_tokens.c.token_hash == h)
                       ).mappings().first()
    if claimed == 1 and row is not None:
        return row["store"], row["role"]
    if row is None:
        raise EnrolmentError("unknown_token", "this enrolment token is not known at HQ "
                             "(mistyped, or from another HQ)")
    if row["used_at_ms"] is not None:
        raise EnrolmentError("token_used", "this enrolment token was already used "
                             f"(by device {row['device_id']}); ask HQ for a new one")
    raise EnrolmentError("token_expired", "this enrolment token has expired; "
                         "ask HQ for a new one")


# --- enrol ------------------------------------------------------------------------------


def _mint_device_id(store: str, role: str) -> str:
    """``<store>-<role>-<6 hex>``: an id of the grammar whenever the store's id is one."""
    suffix = f"-{role}-{secrets.token_hex(3)}"
    device_id = store[: 64 - len(suffix)] + suffix
    if not is_device_id(device_id):
        raise EnrolmentError("bad_request", f"store {store!r} cannot name a device")
    return device_id


def _check_request(public_key_hex: str, csr_pem: str) -> bytes:
    try:
        parse_public_key(public_key_hex or "")
    except RegistryError as exc:
        raise EnrolmentError("bad_request", str(exc)) from None
    csr = (csr_pem or "").encode()
    if not csr.startswith(b"-----BEGIN CERTIFICATE REQUEST-----") or len(csr) > MAX_CSR_BYTES:
        raise EnrolmentError("bad_request", "csr must be one PEM certificate signing request")
    return csr


def _sign(authority: DeviceAuthority, csr: bytes, device_id: str) -> x509.Certificate:
    try:
        pem = authority.sign_device_csr(csr, device_id)
    except ValueError as exc:  # the CA's own reason: bad CSR signature, key type, ...
        raise EnrolmentError("bad_request", f"CSR refused: {exc}") from None
    return x509.load_pem_x509_certificate(pem)


def _store_cert(conn: Connection, device_id: str, cert: x509.Certificate, now_ms: int) -> None:
    conn.execute(insert(device_certificates).values(
        serial=str(cert.serial_number), device_id=device_id, issued_at_ms=now_ms,
        not_after_ms=int(cert.not_valid_after_utc.timestamp() * 1000)))


def first_config(device_id: str, store: str, role: str, broker: BrokerAddress) -> dict[str, Any]:
    """The settings a terminal starts with; later versions come over MQTT."""
    return {
        "config_version": 1,
        "device_id": device_id,
        "store": store,
        "role": role,
        "broker": {"host": broker.host, "port": broker.port, "tls": True},
        "topics": {"records": records_topic(device_id), "ack": ack_topic(device_id),
                   "broadcast": f"{ROOT}/broadcast/#"},
        "uplink": {"window": 1000, "resend_after_s": 5.0},
    }


def enrol(engine: Engine, authority: DeviceAuthority, broker: BrokerAddress, token: str,
          public_key_hex: str, csr_pem: str, now_ms: int | None = None,
          before_commit: Callable[[str, str], Any] | None = None) -> Enrolment:
    """Turn a one-time token, a signing public key and a CSR into a device identity.

    Everything happens in one database transaction: a refused or failed enrolment
    leaves the token unused and registers nothing. ``before_commit(store, role)`` runs
    once the token is known good and before anything is signed; what it returns is kept
    as ``card_keys`` and an EnrolmentError it raises refuses the enrolment (HQ holds no
    card keys for a terminal that needs them).
    """
    csr = _check_request(public_key_hex, csr_pem)
    now_ms = system_clock() if now_ms is None else now_ms
    with engine.begin() as conn:
        # Claim first, so a used or expired token is refused before anything is signed.
        store, role = _claim_token(conn, token or "", now_ms)
        extra = before_commit(store, role) if before_commit is not None else None
        device_id = _mint_device_id(store, role)
        while conn.execute(select(devices.c.device_id)
                           .where(devices.c.device_id == device_id)).first():
            device_id = _mint_device_id(store, role)
        cert = _sign(authority, csr, device_id)
        conn.execute(update(enrolment_tokens)
                     .where(enrolment_tokens.c.token_hash == _token_hash(token))
                     .values(device_id=device_id))
        conn.execute(insert(devices).values(
            device_id=device_id, public_key=public_key_hex.lower(), store=store, role=role,
            status="active", registered_at_ms=now_ms))
        _store_cert(conn, device_id, cert, now_ms)
        _event(conn, device_id, "enrolled", "token", {
            "store": store, "role": role, "certificate_serial": str(cert.serial_number),
            "public_key": public_key_hex.lower()}, now_ms)
    log.info("enrolled %s (%s, store %s), certificate serial %d",
             device_id, role, store, cert.serial_number)
    done = Enrolment(device_id, store, role, cert.public_bytes(Encoding.PEM).decode(),
                     authority.ca_pem().decode(), broker,
                     first_config(device_id, store, role, broker))
    done.card_keys = extra
    return done


# --- roll -------------------------------------------------------------------------------


def _active_device(conn: Connection, device_id: str) -> dict:
    row = conn.execute(select(devices).where(devices.c.device_id == device_id)
                       ).mappings().first()
    if row is None:
        raise EnrolmentError("unknown_device", f"no device {device_id!r} at HQ")
    if row["status"] != "active":
        raise EnrolmentError("revoked", f"device {device_id!r} is {row['status']}: "
                             "it must be enrolled again with a new token")
    return dict(row)


def _live_serials(conn: Connection, device_id: str) -> list[int]:
    return [int(s) for (s,) in conn.execute(
        select(device_certificates.c.serial).where(
            (device_certificates.c.device_id == device_id)
            & device_certificates.c.revoked_at_ms.is_(None)))]


def _mark_revoked(conn: Connection, serials: list[int], now_ms: int) -> None:
    if serials:
        conn.execute(update(device_certificates)
                     .where(device_certificates.c.serial.in_([str(s) for s in serials]))
                     .values(revoked_at_ms=now_ms))


def roll_keys(engine: Engine, authority: DeviceAuthority, broker: BrokerAddress,
              device_id: str, public_key_hex: str, csr_pem: str, issued_at_ms: int,
              signature_hex: str, now_ms: int | None = None) -> Enrolment:
    """Replace a device's signing key and MQTT certificate; the old ones die at once.

    The request is signed with the device's current signing key. Records signed with
    the old key and not yet acknowledged would be refused afterwards, so terminals roll
    only with an empty outbox (``onecard terminal roll-keys`` checks).
    """
    csr = _check_request(public_key_hex, csr_pem)
    now_ms = system_clock() if now_ms is None else now_ms
    if abs(now_ms - int(issued_at_ms)) > ROLL_CLOCK_SKEW_MS:
        raise EnrolmentError("bad_request", "the roll request is too old or the device "
                             "clock is off by more than 15 minutes")
    with engine.begin() as conn:
        row = _active_device(conn, device_id)
        try:
            parse_public_key(row["public_key"]).verify(
                bytes.fromhex(signature_hex or ""),
                roll_message(device_id, public_key_hex, csr_pem, issued_at_ms))
        except (InvalidSignature, ValueError):
            raise EnrolmentError("bad_signature", "the roll request is not signed with "
                                 f"{device_id}'s current key") from None
        if public_key_hex.lower() == row["public_key"]:
            raise EnrolmentError("bad_request", "the new signing key is the old one")
        cert = _sign(authority, csr, device_id)
        old = _live_serials(conn, device_id)
        _mark_revoked(conn, old, now_ms)
        conn.execute(update(devices).where(devices.c.device_id == device_id)
                     .values(public_key=public_key_hex.lower()))
        _store_cert(conn, device_id, cert, now_ms)
        _event(conn, device_id, "rolled", device_id, {
            "certificate_serial": str(cert.serial_number),
            "revoked_serials": [str(s) for s in old], "public_key": public_key_hex.lower()},
            now_ms)
    # After the commit: the CRL lists what the database says is revoked.
    authority.revoke_certificates(old)
    authority.disconnect(device_id)
    log.info("rolled keys of %s; revoked certificate serials %s", device_id, old)
    return Enrolment(device_id, row["store"], row["role"], cert.public_bytes(Encoding.PEM).decode(),
                     authority.ca_pem().decode(), broker,
                     first_config(device_id, row["store"], row["role"], broker))


# --- revoke -----------------------------------------------------------------------------


def revoke_device(engine: Engine, authority: DeviceAuthority, device_id: str, actor: str,
                  reason: str, now_ms: int | None = None) -> list[int]:
    """Revoke a device: the broker refuses it and HQ quarantines its records from now on.

    Returns the certificate serials put on the CRL. Revoking twice is harmless.
    """
    now_ms = system_clock() if now_ms is None else now_ms
    with engine.begin() as conn:
        row = conn.execute(select(devices.c.status).where(devices.c.device_id == device_id)
                           ).first()
        if row is None:
            raise EnrolmentError("unknown_device", f"no device {device_id!r} at HQ")
        serials = _live_serials(conn, device_id)
        _mark_revoked(conn, serials, now_ms)
        conn.execute(update(devices).where(devices.c.device_id == device_id)
                     .values(status="revoked"))
        _event(conn, device_id, "revoked", actor, {
            "reason": reason[:500], "revoked_serials": [str(s) for s in serials]}, now_ms)
    authority.revoke_certificates(serials)
    authority.disconnect(device_id)
    log.warning("device %s revoked by %s (%s); certificate serials %s",
                device_id, actor, reason, serials)
    return serials


def device_history(engine: Engine, device_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in conn.execute(
            select(device_events).where(device_events.c.device_id == device_id)
            .order_by(device_events.c.id)).mappings()]

