"""HQ's registry of UID-only credentials (EM4100 ID cards, QR codes) and the decision
it gives a terminal that asks about one online.

Such a credential carries no balance or visits of its own: all a terminal can read is a
number, so whether it may be used is HQ's to say. Each registered credential belongs to
a holder (a member or a ticket reference), may be limited in time, to purposes (e.g.
``visit``) and to an amount per use in fen (0: visits only, no money). Anything not
registered and active is refused with a reason the terminal shows; the denylist check
in :class:`~hq_server.fleet.service.FleetService` comes before this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from hq_server.clock import Clock, system_clock
from hq_server.db.tables import uid_credentials
from protocol.fleet import UidAuthRequest, UidAuthResponse

KINDS = ("em4100", "qr")
MAX_CREDENTIAL = 128  # what a UidAuthRequest may carry
MAX_HOLDER = 64


class UidCredentialError(ValueError):
    """Bad input for the registry; nothing was changed."""


@dataclass(frozen=True)
class UidCredential:
    kind: str
    credential: str
    holder: str
    status: str = "active"
    valid_from_ms: int | None = None
    valid_to_ms: int | None = None
    purposes: tuple[str, ...] = ("visit",)
    max_amount_fen: int = 0
    created_at_ms: int = 0
    updated_at_ms: int = 0


#: HQ's answer to a terminal asking whether a UID credential may pass.
Authorise = Callable[[str, UidAuthRequest], UidAuthResponse]


def refuse_all(device_id: str, request: UidAuthRequest) -> UidAuthResponse:
    """The answer when HQ sells no UID credentials."""
    return UidAuthResponse(request.request_id, False, "no UID credentials are sold here")


def _check_key(kind: str, credential: str) -> str:
    if kind not in KINDS:
        raise UidCredentialError(f"unknown credential kind {kind!r}: use one of {', '.join(KINDS)}")
    credential = credential.strip()
    if not credential:
        raise UidCredentialError("the credential is empty")
    if len(credential) > MAX_CREDENTIAL:
        raise UidCredentialError(f"the credential is longer than {MAX_CREDENTIAL} characters")
    return credential


def add_credential(engine: Engine, kind: str, credential: str, holder: str, *,
                   purposes: tuple[str, ...] = ("visit",), max_amount_fen: int = 0,
                   valid_from_ms: int | None = None, valid_to_ms: int | None = None,
                   now_ms: int | None = None) -> UidCredential:
    """Register a credential for ``holder``; UidCredentialError (nothing stored) if bad."""
    credential = _check_key(kind, credential)
    holder = holder.strip()
    if not holder or len(holder) > MAX_HOLDER:
        raise UidCredentialError(f"the holder must be 1 to {MAX_HOLDER} characters")
    clean = tuple(p.strip() for p in purposes if p.strip())
    if not clean or any("," in p or len(p) > 32 for p in clean):
        raise UidCredentialError("give at least one purpose (e.g. visit), each up to 32 "
                                 "characters, without commas")
    if isinstance(max_amount_fen, bool) or not isinstance(max_amount_fen, int) \
            or max_amount_fen < 0:
        raise UidCredentialError("the amount per use must be a whole number of fen, 0 or more")
    if valid_from_ms is not None and valid_to_ms is not None and valid_to_ms <= valid_from_ms:
        raise UidCredentialError("valid-to must be after valid-from")
    now = system_clock() if now_ms is None else now_ms
    row = UidCredential(kind, credential, holder, "active", valid_from_ms, valid_to_ms,
                        clean, max_amount_fen, now, now)
    try:
        with engine.begin() as conn:
            conn.execute(insert(uid_credentials).values(
                kind=kind, credential=credential, holder=holder, status="active",
                valid_from_ms=valid_from_ms, valid_to_ms=valid_to_ms,
                purposes=",".join(clean), max_amount_fen=max_amount_fen,
                created_at_ms=now, updated_at_ms=now))
    except IntegrityError:
        raise UidCredentialError(f"{kind} credential {credential!r} is already registered") from None
    return row


def revoke_credential(engine: Engine, kind: str, credential: str,
                      now_ms: int | None = None) -> None:
    """Stop a credential being approved online (it stays listed, as revoked)."""
    credential = _check_key(kind, credential)
    with engine.begin() as conn:
        done = conn.execute(update(uid_credentials).where(
            uid_credentials.c.kind == kind, uid_credentials.c.credential == credential,
            uid_credentials.c.status == "active",
        ).values(status="revoked", updated_at_ms=system_clock() if now_ms is None else now_ms))
    if done.rowcount != 1:
        if get_credential(engine, kind, credential) is None:
            raise UidCredentialError(f"no {kind} credential {credential!r} is registered")
        raise UidCredentialError(f"{kind} credential {credential!r} is already revoked")


def _row(r) -> UidCredential:
    return UidCredential(r.kind, r.credential, r.holder, r.status, r.valid_from_ms,
                         r.valid_to_ms, tuple(p for p in r.purposes.split(",") if p),
                         r.max_amount_fen, r.created_at_ms, r.updated_at_ms)


def get_credential(engine: Engine, kind: str, credential: str) -> UidCredential | None:
    with engine.connect() as conn:
        r = conn.execute(select(uid_credentials).where(
            uid_credentials.c.kind == kind,
            uid_credentials.c.credential == credential.strip())).first()
    return _row(r) if r is not None else None


def list_credentials(engine: Engine, holder: str | None = None) -> list[UidCredential]:
    query = select(uid_credentials).order_by(uid_credentials.c.kind, uid_credentials.c.credential)
    if holder is not None:
        query = query.where(uid_credentials.c.holder == holder)
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(query)]


def decide(found: UidCredential | None, device_id: str, request: UidAuthRequest,
           now_ms: int) -> UidAuthResponse:
    """HQ's answer for one request, given what the registry holds (pure, for tests)."""
    def refuse(reason: str) -> UidAuthResponse:
        return UidAuthResponse(request.request_id, False, reason)

    if found is None:
        return refuse("unknown credential: not registered at HQ")
    if found.status != "active":
        return refuse("credential revoked")
    if found.valid_from_ms is not None and now_ms < found.valid_from_ms:
        return refuse("credential not yet valid")
    if found.valid_to_ms is not None and now_ms >= found.valid_to_ms:
        return refuse("credential expired")
    if request.purpose not in found.purposes:
        return refuse(f"purpose {request.purpose!r} not allowed for this credential")
    if request.amount_fen < 0 or request.amount_fen > found.max_amount_fen:
        return refuse(f"amount {request.amount_fen} fen is over the per-use limit of "
                      f"{found.max_amount_fen} fen")
    digest = hashlib.sha256(f"{device_id}|{request.request_id}|{found.kind}:"
                            f"{found.credential}".encode()).hexdigest()[:16]
    return UidAuthResponse(request.request_id, True, f"holder {found.holder}",
                           approval=f"uid-{digest}")


def authoriser(engine: Engine, clock: Clock = system_clock) -> Authorise:
    """The ``authorise`` for :class:`~hq_server.fleet.service.FleetService`: look the
    credential up in the registry and decide now."""
    def authorise(device_id: str, request: UidAuthRequest) -> UidAuthResponse:
        return decide(get_credential(engine, request.kind, request.credential), device_id,
                      request, clock())
    return authorise
