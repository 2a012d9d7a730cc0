"""The device registry for operators: list the terminals, revoke one."""

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from hq_server.api.dependencies import Parts, requires
from hq_server.db.tables import devices
from hq_server.devices.enrolment import revoke_device
from hq_server.operators.access import Actor
from hq_server.operators.places import authorise_at_device, visible_stores

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
def revoke(device_id: str, body: RevokeRequest,
           who: Annotated[Actor, requires("devices.write")], hq: Parts) -> RevokeResponse:
    """Revoke a device: the broker refuses it, HQ quarantines its records."""
    authorise_at_device(who, hq.engine, "devices.write", device_id)
    serials = revoke_device(hq.engine, hq.authority, device_id, who.operator, body.reason)
    return RevokeResponse(device_id=device_id, status="revoked",
                          revoked_certificates=[str(s) for s in serials])


@router.get("/v1/devices", response_model=list[DeviceOut])
def list_devices(who: Annotated[Actor, requires("devices.read")],
                 hq: Parts) -> list[DeviceOut]:
    """The terminals of the stores inside your scope."""
    with hq.engine.connect() as conn:
        rows = list(conn.execute(select(devices).order_by(devices.c.device_id)).mappings())
    seen = visible_stores(who, hq.engine, [r["store"] for r in rows])
    return [DeviceOut(**{k: r[k] for k in DeviceOut.model_fields}) for r in rows
            if r["store"] in seen]
