"""The card registry for operators (卡片档案): list with filters, one card with its history.

A card's place is its issuing store: another store's card is answered 404, exactly as
one that does not exist.
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hq_server.api.dependencies import CurrentActor, Parts, requires
from hq_server.cards.registry import get_card, list_cards

router = APIRouter(tags=["cards"])

State = Literal["blank", "issued", "open", "lost", "blocked", "frozen", "recalled", "replaced"]

CARD_EXAMPLE = {"card_id": "M000123", "state": "open", "product": "swim-10",
                "member_id": "K0001", "issuing_store": "pool-east",
                "first_seen_ms": 1764633600000, "updated_at_ms": 1764637200000, "version": 2}


class CardOut(BaseModel):
    model_config = {"json_schema_extra": {"examples": [CARD_EXAMPLE]}}

    card_id: str
    state: str = Field(description="blank, issued, open, lost, blocked, frozen, recalled "
                       "or replaced")
    product: str
    member_id: str | None
    issuing_store: str | None
    first_seen_ms: int
    updated_at_ms: int
    version: int


class HistoryEntry(BaseModel):
    at_ms: int
    event: str
    state_before: str | None
    state_after: str
    source: str = Field(description="record <device>#<seq>, operator <name> or "
                        "denylist <version>")
    store: str | None


class RecordRef(BaseModel):
    device_id: str
    seq: int
    operation: int
    card_counter: int
    device_time_ms: int
    status: str


class CardDetail(CardOut):
    model_config = {"json_schema_extra": {"examples": [CARD_EXAMPLE | {
        "uids": ["04A1B2C3D4E5F6"],
        "history": [{"at_ms": 1764637200000, "event": "opened", "state_before": "issued",
                     "state_after": "open", "source": "record pool-east-handheld-1a2b3c#42",
                     "store": "pool-east"}],
        "last_records": []}]}}

    uids: list[str]
    history: list[HistoryEntry]
    last_records: list[RecordRef]


class CardPage(BaseModel):
    items: list[CardOut]
    next_cursor: str | None


@router.get("/v1/cards", response_model=CardPage, dependencies=[requires("cards.read")])
def cards(actor: CurrentActor, hq: Parts, state: State | None = None,
          store: Annotated[str | None, Query(max_length=64)] = None,
          member: Annotated[str | None, Query(max_length=64)] = None,
          product: Annotated[str | None, Query(max_length=64)] = None,
          cursor: Annotated[str | None, Query(max_length=512)] = None,
          limit: Annotated[int | None, Query(ge=1, le=200)] = None) -> Any:
    """The cards in the operator's scope, by card id; follow ``next_cursor`` for more."""
    page = list_cards(hq.engine, actor, state=state, store=store, member=member,
                      product=product, cursor=cursor, limit=limit)
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/v1/cards/{card_id}", response_model=CardDetail, dependencies=[requires("cards.read")])
def card(card_id: str, actor: CurrentActor, hq: Parts) -> Any:
    """One card with its UIDs, history (newest first) and last 20 records."""
    return get_card(hq.engine, actor, card_id)
