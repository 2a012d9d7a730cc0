"""The chain for operators: regions (大区) and stores (单店), through hq_server.chain.stores.

Lists are scoped to the operator and paginated by cursor; edits carry the version they
edit (``If-Match: "<version>"`` or ``version`` in the body) and get 409 with the current
store when someone else changed it; POSTs take an ``Idempotency-Key``.
"""

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from hq_server.api.common import StoredAnswer, run_idempotent
from hq_server.api.dependencies import CurrentActor, Parts, requires
from hq_server.chain.stores import (
    close_store,
    create_region,
    create_store,
    edit_region,
    edit_store,
    get_store,
    list_regions,
    list_stores,
)
from hq_server.clock import system_clock

router = APIRouter(tags=["stores"])

HOURS_EXAMPLE = {"mon": ["09:00-21:00"], "tue": ["09:00-21:00"], "sat": ["08:00-22:00"],
                 "holidays": {"2026-10-01": [], "2026-12-24": ["10:00-16:00"]}}
STORE_EXAMPLE = {"store_id": "pool-east", "name": "东区游泳馆", "region": "east",
                 "address": "上海市浦东新区世纪大道 100 号", "phone": "021-5555 0100",
                 "opening_hours": HOURS_EXAMPLE, "status": "active", "version": 1,
                 "created_at_ms": 1764633600000, "closed_at_ms": None}


class RegionIn(BaseModel):
    region_id: str = Field(max_length=64, examples=["east"])
    name: str = Field(max_length=200, examples=["华东大区"])


class RegionEdit(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    status: Literal["active", "closed"] | None = None
    version: int | None = Field(default=None, description="Or send If-Match")


class RegionOut(BaseModel):
    region_id: str
    name: str
    status: str
    version: int
    created_at_ms: int


class StoreIn(BaseModel):
    model_config = {"json_schema_extra": {"examples": [
        {k: STORE_EXAMPLE[k] for k in ("store_id", "name", "region", "address", "phone",
                                       "opening_hours")}]}}

    store_id: str = Field(max_length=64)
    name: str = Field(max_length=200)
    region: str | None = Field(default=None, max_length=64)
    address: str = Field(default="", max_length=500)
    phone: str = Field(default="", max_length=40)
    opening_hours: dict[str, Any] = Field(default_factory=dict)


class StoreEdit(BaseModel):
    model_config = {"json_schema_extra": {"examples": [
        {"phone": "021-5555 0199", "version": 1}]}}

    name: str | None = Field(default=None, max_length=200)
    region: str | None = Field(default=None, max_length=64)
    address: str | None = Field(default=None, max_length=500)
    phone: str | None = Field(default=None, max_length=40)
    opening_hours: dict[str, Any] | None = None
    version: int | None = Field(default=None, description="Or send If-Match")


class Terminal(BaseModel):
    device_id: str
    role: str
    status: str


class StoreOut(BaseModel):
    model_config = {"json_schema_extra": {"examples": [STORE_EXAMPLE]}}

    store_id: str
    name: str
    region: str | None
    address: str
    phone: str
    opening_hours: dict[str, Any]
    status: str
    version: int
    created_at_ms: int
    closed_at_ms: int | None
    terminals: list[Terminal] | None = None


class StorePage(BaseModel):
    items: list[StoreOut]
    next_cursor: str | None


class RegionList(BaseModel):
    items: list[RegionOut]


def version_of(if_match: str | None, body_version: int | None) -> int | None:
    """The version an edit is based on: the body's, else the If-Match header's."""
    if body_version is not None:
        return body_version
    if if_match:
        text = if_match.strip().removeprefix("W/").strip('"')
        if text.isdigit() and len(text) < 12:
            return int(text)
    return None


def _answer(response: Response, answer: StoredAnswer) -> Any:
    response.status_code = answer.status
    return answer.body


async def idempotent(request: Request, hq: Any, actor: Any, key: str | None, status: int,
                     run: Callable[[], Any]) -> StoredAnswer:
    """Run a POST once per Idempotency-Key (hq_server.api.common.run_idempotent), off the
    event loop."""
    body = await request.body()
    return await run_in_threadpool(
        run_idempotent, hq.engine, actor.operator, key, request.method, request.url.path,
        body, lambda: StoredAnswer(status, run()), system_clock())


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=40)]


@router.post("/v1/regions", response_model=RegionOut, status_code=201, dependencies=[requires("stores.write")])
async def add_region(body: RegionIn, request: Request, response: Response, actor: CurrentActor,
                     hq: Parts, idempotency_key: IdempotencyKey = None) -> Any:
    """Add a region (chain-wide operators only)."""
    answer = await idempotent(request, hq, actor, idempotency_key, 201, lambda: create_region(
        hq.engine, actor, body.region_id, body.name, system_clock()))
    return _answer(response, answer)


@router.get("/v1/regions", response_model=RegionList, dependencies=[requires("stores.read")])
def regions(actor: CurrentActor, hq: Parts) -> Any:
    """The regions the operator may see."""
    return {"items": list_regions(hq.engine, actor)}


@router.patch("/v1/regions/{region_id}", response_model=RegionOut, dependencies=[requires("stores.write")])
def change_region(region_id: str, body: RegionEdit, actor: CurrentActor, hq: Parts,
                  if_match: IfMatch = None) -> Any:
    """Rename, close or reopen a region."""
    return edit_region(hq.engine, actor, region_id, version=version_of(if_match, body.version),
                       name=body.name, status=body.status, now_ms=system_clock())


@router.post("/v1/stores", response_model=StoreOut, status_code=201, dependencies=[requires("stores.write")])
async def add_store(body: StoreIn, request: Request, response: Response, actor: CurrentActor,
                    hq: Parts, idempotency_key: IdempotencyKey = None) -> Any:
    """Add a store; a region manager adds stores to their own region."""
    answer = await idempotent(request, hq, actor, idempotency_key, 201, lambda: create_store(
        hq.engine, actor, body.store_id, body.name, region=body.region, address=body.address,
        phone=body.phone, opening_hours=body.opening_hours, now_ms=system_clock()))
    return _answer(response, answer)


@router.get("/v1/stores", response_model=StorePage, dependencies=[requires("stores.read")])
def stores(actor: CurrentActor, hq: Parts, region: str | None = None,
           status: Literal["active", "closed"] | None = None,
           cursor: Annotated[str | None, Query(max_length=512)] = None,
           limit: Annotated[int | None, Query(ge=1, le=200)] = None) -> Any:
    """The stores in the operator's scope, by id; follow ``next_cursor`` for more."""
    page = list_stores(hq.engine, actor, region=region, status=status, cursor=cursor,
                       limit=limit)
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/v1/stores/{store_id}", response_model=StoreOut, dependencies=[requires("stores.read")])
def store(store_id: str, actor: CurrentActor, hq: Parts) -> Any:
    """One store with its terminals (another store's: 404, as if it did not exist)."""
    return get_store(hq.engine, actor, store_id)


@router.patch("/v1/stores/{store_id}", response_model=StoreOut, dependencies=[requires("stores.write")])
def change_store(store_id: str, body: StoreEdit, actor: CurrentActor, hq: Parts,
                 if_match: IfMatch = None) -> Any:
    """Change the fields given; 409 with the current store if it changed meanwhile."""
    changes = body.model_dump(exclude_unset=True)
    changes.pop("version", None)
    return edit_store(hq.engine, actor, store_id, changes,
                      version=version_of(if_match, body.version), now_ms=system_clock())


class CloseRequest(BaseModel):
    version: int | None = None


@router.post("/v1/stores/{store_id}/close", response_model=StoreOut, dependencies=[requires("stores.write")])
async def close(store_id: str, request: Request, response: Response, actor: CurrentActor,
                hq: Parts, body: CloseRequest | None = None, if_match: IfMatch = None,
                idempotency_key: IdempotencyKey = None) -> Any:
    """Close a store (闭店): no new terminals; its records and cards stay."""
    version = version_of(if_match, body.version if body else None)
    answer = await idempotent(request, hq, actor, idempotency_key, 200, lambda: close_store(
        hq.engine, actor, store_id, version=version, now_ms=system_clock()))
    return _answer(response, answer)
