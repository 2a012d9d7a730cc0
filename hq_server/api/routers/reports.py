"""Reports for operators: income by store (门店营收) for a day or a period."""

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from hq_server.api.dependencies import CurrentActor, Parts, requires
from hq_server.reports.income import (
    DEFAULT_UTC_OFFSET_MINUTES,
    ReportError,
    day_bounds,
    income_by_store,
    income_totals,
    period_bounds,
)

router = APIRouter(tags=["reports"])


class StoreIncomeOut(BaseModel):
    store: str
    cash_taken_fen: int
    recharges_fen: int
    bonus_given_fen: int
    revenue_fen: int
    revenue_by_product: dict[str, int]


class IncomeReport(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{
        "start_ms": 1764604800000, "end_ms": 1764691200000,
        "stores": [{"store": "pool-east", "cash_taken_fen": 150000, "recharges_fen": 100000,
                    "bonus_given_fen": 10000, "revenue_fen": 62000,
                    "revenue_by_product": {"swim": 40000, "tea": 22000}}],
        "totals": {"cash_taken_fen": 150000, "recharges_fen": 100000,
                   "bonus_given_fen": 10000, "revenue_fen": 62000,
                   "revenue_by_product": {"swim": 40000, "tea": 22000}}}]}}

    start_ms: int
    end_ms: int
    stores: list[StoreIncomeOut]
    totals: StoreIncomeOut | dict[str, Any]


@router.get("/v1/reports/income", response_model=IncomeReport, dependencies=[requires("reports.read")])
def income(actor: CurrentActor, hq: Parts, day: dt.date | None = None,
           first: Annotated[dt.date | None, Query(alias="from")] = None,
           last: Annotated[dt.date | None, Query(alias="to")] = None,
           store: Annotated[str | None, Query(max_length=64)] = None,
           utc_offset_minutes: Annotated[int, Query(ge=-720, le=840)] =
           DEFAULT_UTC_OFFSET_MINUTES) -> Any:
    """Income per store in the operator's scope for ``day``, or ``from`` .. ``to`` (days,
    both included, local time)."""
    if day is not None and (first or last):
        raise ReportError("give either day or from/to")
    if day is not None:
        start, end = day_bounds(day, utc_offset_minutes)
    elif first is not None and last is not None:
        start, end = period_bounds(first, last, utc_offset_minutes)
    else:
        raise ReportError("give day=YYYY-MM-DD or from=...&to=...")
    incomes = income_by_store(hq.engine, actor, start, end, store=store)
    return {"start_ms": start, "end_ms": end, "stores": [i.to_dict() for i in incomes],
            "totals": {"store": "*", **income_totals(incomes)}}
