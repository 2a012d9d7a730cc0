"""The device registry for operators: list the terminals, revoke one."""

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from hq_server.api.dependencies import CurrentOperator, Parts
from hq_server.db.tables import devices
from hq_server.devices.enrolment import revoke_device

router = APIRouter(tags=["operators"])


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


@router.post("/v1/devices/{device_id}/revoke", response_model=RevokeResponse)
def revoke(device_id: str, body: RevokeRequest, who: CurrentOperator,
           hq: Parts) -> RevokeResponse:
    """Revoke a device: the broker refuses it, HQ quarantines its records."""
    serials = revoke_device(hq.engine, hq.authority, device_id, who.username, body.reason)
    return RevokeResponse(device_id=device_id, status="revoked",
                          revoked_certificates=[str(s) for s in serials])


@router.get("/v1/devices", response_model=list[DeviceOut])
def list_devices(_who: CurrentOperator, hq: Parts) -> list[DeviceOut]:
    with hq.engine.connect() as conn:
        rows = conn.execute(select(devices).order_by(devices.c.device_id)).mappings()
        return [DeviceOut(**{k: r[k] for k in DeviceOut.model_fields}) for r in rows]
