"""Enrolment: operators create one-time tokens, terminals enrol with one and roll keys.

Terminals authenticate with what they hold: a one-time token to enrol, their current
signing key to roll keys. Tokens travel in request bodies, never in URLs.
"""

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hq_server.api.dependencies import PUBLIC, Parts, requires
from hq_server.devices.enrolment import MAX_CSR_BYTES, create_token, enrol, roll_keys
from hq_server.devices.provisioning import card_keys_for, check_in, provision
from hq_server.operators.access import Actor
from hq_server.operators.places import authorise_at_store

HEX_KEY = r"^[0-9a-fA-F]{64}$"

router = APIRouter()


class TokenRequest(BaseModel):
    store: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    role: Literal["gate", "handheld", "kiosk"]
    ttl_seconds: int = Field(default=86400, ge=60, le=30 * 86400)


class TokenResponse(BaseModel):
    token: str = Field(description="Shown once; HQ keeps only its hash.")
    store: str
    role: str
    expires_at_ms: int


class EnrolRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    public_key: str = Field(pattern=HEX_KEY, description="Ed25519 signing key, raw, hex.")
    csr: str = Field(max_length=MAX_CSR_BYTES, description="PEM CSR for the MQTT client key.")
    need_card_keys: bool = Field(
        default=False, description="Refuse (token unspent) when HQ holds no card keys: "
        "a terminal joining in one step could not read a card without them.")


class RollRequest(BaseModel):
    public_key: str = Field(pattern=HEX_KEY)
    csr: str = Field(max_length=MAX_CSR_BYTES)
    issued_at_ms: int
    signature: str = Field(pattern=r"^[0-9a-fA-F]{128}$",
                           description="Ed25519 signature by the current key over "
                           "protocol.enrolment.roll_message(...)")


class CheckInRequest(BaseModel):
    nonce: str = Field(pattern=r"^[0-9a-f]{32,64}$")
    signature: str = Field(pattern=r"^[0-9a-fA-F]{128}$",
                           description="Ed25519 signature by the device's key over "
                           "protocol.enrolment.checkin_message(device_id, nonce)")


class CardKeysOut(BaseModel):
    chain_id: int
    read_master: str
    write_master: str | None
    mac_master: str


class ProvisionOut(BaseModel):
    store_config: dict[str, Any] | None = Field(
        default=None, description="The store's terminal config (None: HQ holds none yet).")
    card_keys: CardKeysOut | None = Field(
        default=None, description="The chain's card masters this role needs.")
    hq_time_ms: int = Field(description="HQ's clock: terminals without an RTC set theirs.")


class CheckInResponse(ProvisionOut):
    nonce: str


class CaResponse(BaseModel):
    ca: str = Field(description="HQ's CA certificate (PEM); check it against the pin.")


class BrokerOut(BaseModel):
    host: str
    port: int


class RollResponse(BaseModel):
    device_id: str
    store: str
    role: str
    certificate: str
    ca: str
    broker: BrokerOut
    config: dict[str, Any]


class EnrolResponse(RollResponse, ProvisionOut):
    """The identity, with what the terminal serves with: config, card keys, HQ's time."""


@router.post("/v1/enrolment-tokens", response_model=TokenResponse, status_code=201,
             tags=["operators"])
def new_token(body: TokenRequest, who: Annotated[Actor, requires("devices.write")],
              hq: Parts) -> TokenResponse:
    """Create a one-time enrolment token for a terminal of a store and role."""
    authorise_at_store(who, hq.engine, "devices.write", body.store)
    issued = create_token(hq.engine, body.store, body.role, who.operator,
                          dt.timedelta(seconds=body.ttl_seconds))
    return TokenResponse(token=issued.token, store=issued.store, role=issued.role,
                         expires_at_ms=issued.expires_at_ms)


@router.post("/v1/enrol", response_model=EnrolResponse, status_code=201, tags=["terminals"],
             dependencies=[PUBLIC])
def enrol_device(body: EnrolRequest, hq: Parts) -> EnrolResponse:
    """Enrol a terminal: token + signing public key + CSR → identity and certificate,
    with the store's config, the role's card keys and HQ's time."""
    done = enrol(hq.engine, hq.authority, hq.broker, body.token, body.public_key, body.csr,
                 before_commit=lambda store, role: card_keys_for(
                     hq.card_keys, role, required=body.need_card_keys))
    return EnrolResponse(**done.to_json(), **provision(
        hq.engine, hq.card_keys, done.store, done.role, card_keys=done.card_keys).to_json())


@router.get("/v1/enrolment/ca", response_model=CaResponse, tags=["terminals"],
            dependencies=[PUBLIC])
def enrolment_ca(hq: Parts) -> CaResponse:
    """HQ's CA certificate, for a joining terminal to check against its pinned hash."""
    return CaResponse(ca=hq.authority.ca_pem().decode())


@router.post("/v1/devices/{device_id}/checkin", response_model=CheckInResponse,
             tags=["terminals"], dependencies=[PUBLIC])
def checkin(device_id: str, body: CheckInRequest, hq: Parts) -> CheckInResponse:
    """An enrolled terminal at start: its config, card keys and HQ's time (signed nonce)."""
    answer = check_in(hq.engine, hq.card_keys, device_id, body.nonce, body.signature)
    return CheckInResponse(**answer.to_json(), nonce=body.nonce)


@router.post("/v1/devices/{device_id}/roll", response_model=RollResponse, tags=["terminals"],
             dependencies=[PUBLIC])
def roll(device_id: str, body: RollRequest, hq: Parts) -> RollResponse:
    """Replace the device's keys; signed with its current key. Old ones die at once."""
    return RollResponse(**roll_keys(
        hq.engine, hq.authority, hq.broker, device_id, body.public_key, body.csr,
        body.issued_at_ms, body.signature).to_json())
