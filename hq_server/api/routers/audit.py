"""The audit log (操作日志) and the recycle bin (数据回收站) for operators and integrators."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, Field

from hq_server.api.common import StoredAnswer, run_idempotent
from hq_server.api.dependencies import CurrentActor, Parts, requires
from hq_server.audit.query import AuditFilter, list_actions
from hq_server.clock import system_clock
from hq_server.recycle.bin import list_bin, purge_from_bin, restore_from_bin

router = APIRouter(tags=["audit"])

#: A recycle-bin entry id as the database holds it (a 32-bit integer).
EntryId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class AuditEntryOut(BaseModel):
    seq: int
    at_ms: int
    operator: str
    role: str
    origin: str = Field(description="Where the action came from: cli <user>, api <address>")
    action: str = Field(examples=["member.update"])
    target_kind: str = Field(examples=["member"])
    target_id: str = Field(examples=["M0001"])
    store: str | None = Field(description="The store of the target; null: chain-level")
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = None


class BinEntryOut(BaseModel):
    entry_id: int
    kind: str = Field(examples=["member"])
    target_id: str
    label: str
    store: str | None
    region: str | None
    state: str = Field(description="in_bin, restored or purged")
    deleted_at_ms: int
    deleted_by: str
    purge_after_ms: int = Field(description="From when an administrator may purge it")
    closed_at_ms: int | None
    closed_by: str | None
    snapshot: dict[str, Any] | None


class BinPage(BaseModel):
    items: list[BinEntryOut]
    next_cursor: str | None = None


@router.get("/v1/audit", response_model=AuditPage, dependencies=[requires("audit.read")])
def audit_log(who: CurrentActor, hq: Parts,
              operator: Annotated[str | None, Query(max_length=200)] = None,
              target: Annotated[str | None, Query(max_length=200,
                                                  examples=["member:M0001"])] = None,
              action: Annotated[str | None, Query(max_length=64,
                                                  examples=["member.*"])] = None,
              since_ms: Annotated[int | None, Query(ge=0, le=2**62)] = None,
              until_ms: Annotated[int | None, Query(ge=0, le=2**62)] = None,
              cursor: Annotated[str | None, Query(max_length=512)] = None,
              limit: Annotated[int | None, Query(ge=1, le=200)] = None) -> AuditPage:
    """Operator actions, newest first (``audit.read``), as far as the reader's scope
    reaches: a store's actions for a store-scoped reader, a region's for a region's."""
    items, next_cursor = list_actions(hq.engine, who, AuditFilter(
        operator, target, action, since_ms, until_ms), cursor, limit)
    return AuditPage(items=[AuditEntryOut(**i) for i in items], next_cursor=next_cursor)


@router.get("/v1/recycle-bin", response_model=BinPage, dependencies=[requires("audit.read")])
def recycle_bin(who: CurrentActor, hq: Parts,
                kind: Annotated[str | None, Query(max_length=32)] = None,
                state: Annotated[str, Query(pattern="^(in_bin|restored|purged)$")] = "in_bin",
                cursor: Annotated[str | None, Query(max_length=512)] = None,
                limit: Annotated[int | None, Query(ge=1, le=200)] = None) -> BinPage:
    """What was deleted, newest first, in the reader's scope."""
    items, next_cursor = list_bin(hq.engine, who, kind=kind, state=state, cursor=cursor,
                                  limit=limit)
    return BinPage(items=[BinEntryOut(**e.as_dict()) for e in items],
                   next_cursor=next_cursor)


def _idempotent(request: Request, who, hq, key: str | None, run) -> Any:
    """Run ``run`` once per Idempotency-Key (these POSTs carry no body)."""
    answer = run_idempotent(hq.engine, who.operator, key, request.method, request.url.path,
                            b"", lambda: StoredAnswer(200, run()), system_clock())
    return answer.body


@router.post("/v1/recycle-bin/{entry_id}/restore", response_model=BinEntryOut, dependencies=[requires("recycle.restore")])
def restore(entry_id: EntryId, request: Request, who: CurrentActor, hq: Parts,
            idempotency_key: Annotated[str | None, Header()] = None) -> Any:
    """Bring a deleted thing back (``recycle.restore``, in scope); audited."""
    return _idempotent(request, who, hq, idempotency_key, lambda: restore_from_bin(
        hq.engine, who, entry_id, system_clock()).as_dict())


@router.post("/v1/recycle-bin/{entry_id}/purge", response_model=BinEntryOut, dependencies=[requires("recycle.purge")])
def purge(entry_id: EntryId, request: Request, who: CurrentActor, hq: Parts,
          idempotency_key: Annotated[str | None, Header()] = None) -> Any:
    """Remove a deleted thing for good (``recycle.purge``: administrators, after the
    retention period); audited."""
    return _idempotent(request, who, hq, idempotency_key, lambda: purge_from_bin(
        hq.engine, who, entry_id, system_clock()).as_dict())
