"""The device registry for operators: list the terminals, revoke one."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from hq_server.api.common import decode_cursor, encode_cursor, page_limit
from hq_server.api.dependencies import Parts, requires
from hq_server.db.tables import devices, stores
from hq_server.devices.enrolment import revoke_device
from hq_server.operators.access import Actor, Level, scope_filter
from hq_server.operators.places import authorise_at_device

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


class DevicePage(BaseModel):
    items: list[DeviceOut]
    next_cursor: str | None


@router.get("/v1/devices", response_model=DevicePage)
def list_devices(who: Annotated[Actor, requires("devices.read")], hq: Parts,
                 store: str | None = None,
                 cursor: Annotated[str | None, Query(max_length=512)] = None,
                 limit: Annotated[int | None, Query(ge=1, le=200)] = None) -> DevicePage:
    """The terminals of the stores in the operator's scope, by id, a page at a time."""
    after, n = decode_cursor(cursor, 1), page_limit(limit)
    d = devices.c
    q = select(devices).order_by(d.device_id).limit(n + 1)
    level, ident = scope_filter(who)
    if level is Level.STORE:
        q = q.where(d.store == ident)
    elif level is Level.REGION:
        q = q.where(d.store.in_(select(stores.c.store_id).where(stores.c.region_id == ident)))
    if store is not None:
        q = q.where(d.store == store)
    if after is not None:
        q = q.where(d.device_id > str(after[0]))
    with hq.engine.connect() as conn:
        rows = [DeviceOut(**{k: r[k] for k in DeviceOut.model_fields})
                for r in conn.execute(q).mappings()]
    more = len(rows) > n
    rows = rows[:n]
    return DevicePage(items=rows,
                      next_cursor=encode_cursor((rows[-1].device_id,)) if more else None)
