"""The FastAPI application: enrolment for terminals, tokens and revocation for operators.

Terminals authenticate with what they hold: a one-time token to enrol, their current
signing key to roll keys. Operators authenticate with HTTP Basic over TLS against
:mod:`hq_server.operators.accounts` (argon2id). Every error is problem details (RFC 9457,
:mod:`hq_server.api.problems`, ``docs/api.md``) with a status a client can act on;
nothing secret (tokens, keys, passwords) is ever logged or echoed: tokens travel in
request bodies, never in URLs.
"""

# No "from __future__ import annotations": FastAPI resolves the dependency annotations
# of the route functions, which refer to names local to create_app().
import datetime as dt
import secrets
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.engine import Engine

from hq_server.api import problems
from hq_server.db.tables import devices
from hq_server.devices.enrolment import (
    MAX_CSR_BYTES,
    BrokerAddress,
    DeviceAuthority,
    EnrolmentError,
    create_token,
    enrol,
    revoke_device,
    roll_keys,
)
from hq_server.operators.accounts import AuthenticationFailed, Operator, authenticate
from hq_server.supervision import hq_health

HEX_KEY = r"^[0-9a-fA-F]{64}$"



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


class RollRequest(BaseModel):
    public_key: str = Field(pattern=HEX_KEY)
    csr: str = Field(max_length=MAX_CSR_BYTES)
    issued_at_ms: int
    signature: str = Field(pattern=r"^[0-9a-fA-F]{128}$",
                           description="Ed25519 signature by the current key over "
                           "protocol.enrolment.roll_message(...)")


class BrokerOut(BaseModel):
    host: str
    port: int


class EnrolResponse(BaseModel):
    device_id: str
    store: str
    role: str
    certificate: str
    ca: str
    broker: BrokerOut
    config: dict[str, Any]


class RevokeRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class RevokeResponse(BaseModel):
    device_id: str
    status: str
    revoked_certificates: list[str]


class DeviceOut(BaseModel):
    device_id: str
    store: str
    role: str
    status: str
    contiguous_through: int


def create_app(engine: Engine, authority: DeviceAuthority, broker: BrokerAddress) -> FastAPI:
    app = FastAPI(title="OneCard HQ", version="1",
                  description="HQ's API for terminals (enrolment) and operators.")
    basic = HTTPBasic(auto_error=False, realm="OneCard HQ")
    problems.install(app)

    @app.exception_handler(EnrolmentError)
    async def _refused(request: Request, exc: EnrolmentError):
        code = exc.code.replace("_", "-")
        headers = {"WWW-Authenticate": 'Basic realm="OneCard HQ"'} if exc.code == "not_authenticated" else None
        return problems.problem(code if code in problems.TYPES else "bad-request", exc.message,
                                request.url.path, headers=headers)

    def operator(creds: Annotated[HTTPBasicCredentials | None, Depends(basic)]) -> Operator:
        if creds is None:
            raise EnrolmentError("not_authenticated", "operator name and password required")
        try:
            return authenticate(engine, creds.username, creds.password)
        except AuthenticationFailed as exc:
            raise EnrolmentError("not_authenticated", str(exc)) from None

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health", tags=["service"],
             responses={503: {"description": "a part of HQ is not alive"}})
    def health() -> JSONResponse:
        """Which parts of HQ are alive (ingest, fleet service, ...) and how far behind
        they are, from the rows their supervisors write: 200 when all are, else 503."""
        figures = hq_health(engine)
        return JSONResponse(figures, status_code=200 if figures["ok"] else 503)

    @app.post("/v1/enrolment-tokens", response_model=TokenResponse, status_code=201,
              tags=["operators"])
    def new_token(body: TokenRequest, who: Annotated[Operator, Depends(operator)]) -> TokenResponse:
        """Create a one-time enrolment token for a terminal of a store and role."""
        issued = create_token(engine, body.store, body.role, who.username,
                              dt.timedelta(seconds=body.ttl_seconds))
        return TokenResponse(token=issued.token, store=issued.store, role=issued.role,
                             expires_at_ms=issued.expires_at_ms)

    @app.post("/v1/enrol", response_model=EnrolResponse, status_code=201, tags=["terminals"])
    def enrol_device(body: EnrolRequest) -> EnrolResponse:
        """Enrol a terminal: token + signing public key + CSR → identity and certificate."""
        return EnrolResponse(**enrol(engine, authority, broker, body.token, body.public_key,
                                     body.csr).to_json())

    @app.post("/v1/devices/{device_id}/roll", response_model=EnrolResponse, tags=["terminals"])
    def roll(device_id: str, body: RollRequest) -> EnrolResponse:
        """Replace the device's keys; signed with its current key. Old ones die at once."""
        return EnrolResponse(**roll_keys(
            engine, authority, broker, device_id, body.public_key, body.csr,
            body.issued_at_ms, body.signature).to_json())

    @app.post("/v1/devices/{device_id}/revoke", response_model=RevokeResponse,
              tags=["operators"])
    def revoke(device_id: str, body: RevokeRequest,
               who: Annotated[Operator, Depends(operator)]) -> RevokeResponse:
        """Revoke a device: the broker refuses it, HQ quarantines its records."""
        serials = revoke_device(engine, authority, device_id, who.username, body.reason)
        return RevokeResponse(device_id=device_id, status="revoked",
                              revoked_certificates=[str(s) for s in serials])

    @app.get("/v1/devices", response_model=list[DeviceOut], tags=["operators"])
    def list_devices(_who: Annotated[Operator, Depends(operator)]) -> list[DeviceOut]:
        with engine.connect() as conn:
            rows = conn.execute(select(devices).order_by(devices.c.device_id)).mappings()
            return [DeviceOut(**{k: r[k] for k in DeviceOut.model_fields}) for r in rows]

    app.state.instance = secrets.token_hex(4)
    return app
