"""Members (会员资料) over API v1: list and search, the member page, register, edit (If-Match),
delete and restore, merge, import (with a dry run) and export, custom field definitions.

members.service imports hq_server.api.common, whose package imports this router: so
``service``'s attributes are used at call time only and ``transfer`` is imported where
it is used.

Every route acts as the authenticated operator (:data:`CurrentActor`) and calls
:mod:`hq_server.members.service` / :mod:`hq_server.members.transfer`, which authorise
and audit; refusals become problems in :mod:`hq_server.api.problems`. POSTs accept an
``Idempotency-Key``.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from hq_server.api.common import StoredAnswer, run_idempotent
from hq_server.api.dependencies import CurrentActor, Parts, requires
from hq_server.clock import system_clock
from hq_server.members import service  # attributes used at call time only (import cycle)
from hq_server.members.custom_fields import FIELD_TYPES, FieldDefinition
from hq_server.members.profile import PROFILE_FIELDS

router = APIRouter(tags=["members"])

_EXAMPLE = {
    "name": "张三", "mobile": "138 0013 8000", "gender": "male", "birthday": "1990-05-17",
    "store_id": "S1", "category": "gold", "email": "zhang.san@example.com",
    "habits": "prefers the quiet pool in the morning", "custom": {"shoe_size": 42},
}


def _profile_fields(max_length: bool) -> dict[str, Any]:
    return {f.name: (str | None, Field(default=None, description=f"{f.label_zh} ({f.kind})",
                                       max_length=f.max_length if max_length else None))
            for f in PROFILE_FIELDS}


MemberIn = create_model(
    "MemberIn", __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]}),
    member_id=(str | None, Field(default=None, max_length=32,
                                 description="Member number (会员编号); HQ assigns one if absent")),
    custom=(dict[str, Any] | None, Field(default=None, description="Custom field values")),
    **_profile_fields(False))
MemberPatch = create_model(
    "MemberPatch", __config__=ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"version": 3, "name": "张三丰", "remark1": "moved to Shanghai"}]}),
    version=(int | None, Field(default=None, description="The version edited (or If-Match)")),
    custom=(dict[str, Any] | None, None),
    **_profile_fields(False))


class CardOut(BaseModel):
    card_id: str
    state: str | None = None
    product: str | None = None
    store_id: str | None = None


class ActivityOut(BaseModel):
    visits: int
    spend_fen: int = Field(description="Net revenue from the member's cards, fen")
    average_spend_fen: int
    last_visit_ms: int | None


class TransactionOut(BaseModel):
    txn_id: str
    kind: str
    store_id: str
    card_id: str | None
    posted_at_ms: int
    suspense: bool
    purse_fen: int
    spend_fen: int


MemberOut = create_model(
    "MemberOut", __config__=ConfigDict(json_schema_extra={"examples": [{
        **_EXAMPLE, "member_id": "M00000001", "mobile": "+8613800138000", "status": "active",
        "merged_into": None, "version": 1, "created_at_ms": 1764720000000,
        "updated_at_ms": 1764720000000, "custom": {"shoe_size": 42},
        "cards": [{"card_id": "C0001", "state": "open", "product": "stored-value",
                   "store_id": "S1"}]}]}),
    member_id=(str, ...), custom=(dict[str, Any], ...), status=(str, ...),
    merged_into=(str | None, None), version=(int, ...), created_at_ms=(int, ...),
    updated_at_ms=(int, ...), cards=(list[CardOut] | None, None),
    activity=(ActivityOut | None, None), transactions=(list[TransactionOut] | None, None),
    **_profile_fields(False))


class MemberPage(BaseModel):
    items: list[MemberOut]  # type: ignore[valid-type]
    next_cursor: str | None = Field(description="Pass as cursor for the next page")


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"merged": "M00000007"}]})
    merged: str = Field(min_length=1, max_length=32,
                        description="The duplicate member merged into this one")


class FieldIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"key": "shoe_size", "label": "鞋码", "type": "integer", "required": False},
        {"key": "therapist", "label": "Favourite therapist", "type": "choice",
         "choices": ["Li", "Wang"], "default": "Li"}]})
    key: str = Field(min_length=1, max_length=40)
    label: str = Field(min_length=1, max_length=100)
    type: Literal[FIELD_TYPES]  # type: ignore[valid-type]
    max_length: int = Field(default=200, ge=1, le=2000)
    choices: list[Annotated[str, Field(max_length=100)]] = Field(default=[], max_length=100)
    default: str | int | bool | None = None
    required: bool = False


class FieldOut(BaseModel):
    key: str
    label: str
    type: str
    max_length: int
    choices: list[str]
    default: Any = None
    required: bool
    status: str
    version: int


class ImportRow(BaseModel):
    row: int
    action: str
    member_id: str | None
    reasons: list[str]
    changed: list[str]


class ImportOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "dry_run": True, "applied": False,
        "counts": {"create": 1, "update": 0, "unchanged": 0, "refused": 1},
        "file_sha256": "96d6…", "rows": [
            {"row": 2, "action": "create", "member_id": None, "reasons": [], "changed": []},
            {"row": 3, "action": "refused", "member_id": None,
             "reasons": ["birthday: 2031-01-01 is in the future (today is 2026-12-03)"],
             "changed": []}]}]})
    dry_run: bool
    applied: bool
    counts: dict[str, int]
    file_sha256: str
    rows: list[ImportRow]


def _version(if_match: str | None, body_version: int | None) -> int | None:
    if if_match is not None:
        text = if_match.strip().removeprefix("W/").strip('"')
        if text.isdigit() and len(text) <= 9:
            return int(text)
        return -1  # not a version this API gave: a conflict, never a match
    return body_version


class ListFilters(BaseModel):
    q: str | None = Field(default=None, max_length=100,
                          description="Card number, mobile (prefix), name or pinyin "
                                      "initials (zs finds 张三), ID or member number")
    card: str | None = Field(default=None, max_length=64)
    mobile: str | None = Field(default=None, max_length=32, description="Phone instead of card")
    name: str | None = Field(default=None, max_length=100)
    id_number: str | None = Field(default=None, max_length=32)
    store_id: str | None = Field(default=None, max_length=64)
    category: str | None = Field(default=None, max_length=32)
    status: Literal["active", "deleted", "merged", "any"] = "active"
    joined_from: str | None = Field(default=None, max_length=10, pattern=r"^\d{4}-\d{2}-\d{2}$")
    joined_to: str | None = Field(default=None, max_length=10, pattern=r"^\d{4}-\d{2}-\d{2}$")
    birth_month: int | None = Field(default=None, ge=1, le=12)
    spend_min_fen: int | None = Field(default=None, ge=0, le=2**53)
    spend_max_fen: int | None = Field(default=None, ge=0, le=2**53)
    visits_min: int | None = Field(default=None, ge=0, le=2**31)
    visits_max: int | None = Field(default=None, ge=0, le=2**31)

    def query(self) -> "service.MemberQuery":
        d = self.model_dump()
        return service.MemberQuery(text=d.pop("q"), card_id=d.pop("card"), **d)


Filters = Annotated[ListFilters, Query()]


@router.get("/v1/members", response_model=MemberPage, dependencies=[requires("members.read")])
def list_members(who: CurrentActor, hq: Parts, filters: Filters,
                 cursor: Annotated[str | None, Query(max_length=512)] = None,
                 limit: Annotated[int | None, Query(ge=1, le=200)] = None) -> dict[str, Any]:
    """Search members in your scope, each with its cards; segments by spend, visits,
    join date and birthday month. Cursor-paginated by member number."""
    return service.find_members(who, hq.engine, filters.query(), cursor=cursor, limit=limit)


@router.get("/v1/members/export", response_class=Response,
            responses={200: {"content": {"text/csv": {}, "application/vnd.openxmlformats-"
                                         "officedocument.spreadsheetml.sheet": {}}}}, dependencies=[requires("members.export")])
def export(who: CurrentActor, hq: Parts, filters: Filters,
           format: Literal["csv", "xlsx"] = "csv") -> Response:
    """The members a search finds as CSV or XLSX, in the columns import reads."""
    from hq_server.members import transfer

    columns, rows = transfer.export_members(who, hq.engine, filters.query(), system_clock())
    if format == "xlsx":
        return Response(transfer.write_xlsx(columns, rows),
                        media_type="application/vnd.openxmlformats-officedocument."
                                   "spreadsheetml.sheet",
                        headers={"Content-Disposition": 'attachment; filename="members.xlsx"'})
    return Response(transfer.write_csv(columns, rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="members.csv"'})


@router.get("/v1/members/{member_id}", response_model=MemberOut, dependencies=[requires("members.read")])
def get(member_id: str, who: CurrentActor, hq: Parts) -> dict[str, Any]:
    """The member page: profile, cards, visits and spend from the ledger, last 20
    transactions. Unknown and out-of-scope members alike: 404."""
    return service.get_member(who, hq.engine, member_id)


def _idempotent(hq: Parts, who: CurrentActor, key: str | None, request: Request,
                body: bytes, run: Any, status: int) -> Any:
    def once() -> StoredAnswer:
        return StoredAnswer(status, run())

    answer = run_idempotent(hq.engine, who.operator, key, request.method, request.url.path,
                            body, once, system_clock())
    return answer.body


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=40)]


@router.post("/v1/members", response_model=MemberOut, status_code=201, dependencies=[requires("members.write")])
def create(body: MemberIn, who: CurrentActor, hq: Parts, request: Request,  # type: ignore[valid-type]
           key: IdempotencyKey = None) -> Any:
    """Register a member. Every wrong field is reported (422 member-invalid); a mobile
    already in the chain is 409 duplicate-mobile."""
    data = body.model_dump(exclude_unset=True)
    return _idempotent(hq, who, key, request, body.model_dump_json().encode(),
                       lambda: service.create_member(who, hq.engine, data, system_clock()), 201)


@router.patch("/v1/members/{member_id}", response_model=MemberOut, dependencies=[requires("members.write")])
def patch(member_id: str, body: MemberPatch, who: CurrentActor, hq: Parts,  # type: ignore[valid-type]
          if_match: IfMatch = None) -> Any:
    """Edit the fields given. Send the version edited (If-Match: "3" or version); if
    another operator changed the member since: 409 edit-conflict with what changed."""
    data = body.model_dump(exclude_unset=True)
    expected = _version(if_match, data.pop("version", None))
    return service.update_member(who, hq.engine, member_id, data, expected, system_clock())


@router.delete("/v1/members/{member_id}", response_model=MemberOut, dependencies=[requires("members.delete")])
def delete(member_id: str, who: CurrentActor, hq: Parts, if_match: IfMatch = None) -> Any:
    """Move the member to the recycle bin (数据回收站); restore brings it back."""
    return service.delete_member(who, hq.engine, member_id, system_clock(),
                                 expected_version=_version(if_match, None))


@router.post("/v1/members/{member_id}/restore", response_model=MemberOut, dependencies=[requires("recycle.restore")])
def restore(member_id: str, who: CurrentActor, hq: Parts, request: Request,
            key: IdempotencyKey = None) -> Any:
    """Bring a deleted member back from the recycle bin."""
    return _idempotent(hq, who, key, request, b"",
                       lambda: service.restore_member(who, hq.engine, member_id,
                                                      system_clock()), 200)


@router.post("/v1/members/{member_id}/merge", response_model=MemberOut, dependencies=[requires("members.write")])
def merge(member_id: str, body: MergeIn, who: CurrentActor, hq: Parts, request: Request,
          key: IdempotencyKey = None) -> Any:
    """Merge the member ``merged`` into this one: cards and their history move here,
    the merged member stays as a pointer."""
    return _idempotent(hq, who, key, request, body.model_dump_json().encode(),
                       lambda: service.merge_members(who, hq.engine, member_id, body.merged,
                                                     system_clock()), 200)


@router.post("/v1/members/import", response_model=ImportOut,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"},
                              "example": "姓名,手机,store_id\n张三,13800138000,S1\n"},
                 "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                     "schema": {"type": "string", "format": "binary"}}}}}, dependencies=[requires("members.import")])
async def import_file(request: Request, who: CurrentActor, hq: Parts,
                      dry_run: bool = False, skip_refused: bool = False,
                      key: IdempotencyKey = None) -> Any:
    """Import members from the CSV or XLSX body. A dry run reports row by row what would
    be created, updated, left unchanged or refused, and writes nothing. Without
    ``skip_refused`` a file with a refused row is not applied at all (422
    import-refused, with the report)."""
    from starlette.concurrency import run_in_threadpool

    from hq_server.members import transfer

    data = await request.body()
    kind = request.headers.get("content-type", "")
    name = "upload.xlsx" if "spreadsheetml" in kind else "upload.csv"

    def run() -> Any:
        return _idempotent(hq, who, key, request, data, lambda: transfer.import_members(
            who, hq.engine, data, name, system_clock(), dry_run=dry_run,
            skip_refused=skip_refused).as_dict(), 200)

    return await run_in_threadpool(run)


@router.get("/v1/member-fields", response_model=list[FieldOut], dependencies=[requires("members.read")])
def fields(who: CurrentActor, hq: Parts) -> list[dict[str, Any]]:
    """The custom fields operators defined (retired ones included, marked)."""
    return service.list_fields(who, hq.engine)


@router.post("/v1/member-fields", response_model=FieldOut, status_code=201, dependencies=[requires("members.write")])
def define(body: FieldIn, who: CurrentActor, hq: Parts, request: Request,
           key: IdempotencyKey = None) -> Any:
    """Define a custom field for all members (chain-wide operators only)."""
    definition = FieldDefinition(body.key, body.label, body.type, body.max_length,
                                 tuple(body.choices), body.default, body.required)
    return _idempotent(hq, who, key, request, body.model_dump_json().encode(),
                       lambda: service.define_field(who, hq.engine, definition,
                                                    system_clock()), 201)


@router.delete("/v1/member-fields/{key}", response_model=FieldOut, dependencies=[requires("members.write")])
def retire(key: str, who: CurrentActor, hq: Parts) -> Any:
    """Retire a custom field: no longer asked for; members keep their values."""
    return service.retire_field(who, hq.engine, key, system_clock())

