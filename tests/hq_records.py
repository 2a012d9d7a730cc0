"""Real signed records for HQ tests: a terminal's key and chain, without MQTT.

``Till`` signs records the way a terminal's outbox does (sequence, previous hash,
Ed25519), so ingest, ledger and reconciliation see exactly what the field sends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hq_server.devices.registry import add_device
from protocol.record import GENESIS_HASH, Operation, SignedRecord, TransactionRecord
from protocol.topics import records_topic

#: Parameters for an ``engine`` fixture: every ledger test runs on the embedded store
#: and on PostgreSQL (which must be there in CI: ``pg_url`` fails instead of skipping).
STORES = ["sqlite", "postgresql"]


def store_engine(request: pytest.FixtureRequest):
    """The HQ engine for ``request.param`` (one of :data:`STORES`), fully migrated."""
    from hq_server.db.engine import open_engine

    return open_engine(request.getfixturevalue(
        "sqlite_url" if request.param == "sqlite" else "pg_url"))


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@dataclass
class Till:
    """A terminal that signs records: device id, store, key and chain head."""

    device_id: str
    store: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seq: int = 0
    head: bytes = GENESIS_HASH
    clock_ms: int = 1_700_000_000_000

    @property
    def public_key_hex(self) -> str:
        return self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def register(self, engine, role: str = "handheld") -> Till:
        add_device(engine, self.device_id, self.public_key_hex, self.store, role)
        return self

    def sign(self, card_id: str, operation: Operation, **fields) -> SignedRecord:
        self.seq += 1
        self.clock_ms += 1000
        fields.setdefault("device_time_ms", self.clock_ms)
        signed = TransactionRecord(device_id=self.device_id, seq=self.seq, prev_hash=self.head,
                                   card_id=card_id, operation=operation, store=self.store,
                                   **fields).sign(self.key)
        self.head = signed.record_hash
        return signed

    def message(self, signed: SignedRecord) -> tuple[str, bytes]:
        return records_topic(self.device_id), signed.wire


@dataclass
class Card:
    """What a card holds, moved along by the records a till makes for it."""

    card_id: str
    purse: int = 0
    visits: dict[str, int] = field(default_factory=dict)
    counter: int = 0

    def copy(self) -> Card:
        return replace(self, visits=dict(self.visits))


def recharge(till: Till, card: Card, cash: int, bonus: int = 0) -> SignedRecord:
    card.counter += 1
    before = card.purse
    card.purse += cash + bonus
    return till.sign(card.card_id, Operation.RECHARGE, purse_before=before,
                     purse_after=card.purse, cash_fen=cash, bonus_fen=bonus,
                     card_counter=card.counter)


def debit(till: Till, card: Card, amount: int, product: str = "shop", cash: int = 0) -> SignedRecord:
    card.counter += 1
    before = card.purse
    card.purse -= amount
    return till.sign(card.card_id, Operation.DEBIT, product=product, purse_before=before,
                     purse_after=card.purse, cash_fen=cash, card_counter=card.counter)


def add_visits(till: Till, card: Card, product: str, n: int, price: int) -> SignedRecord:
    card.counter += 1
    before = card.visits.get(product, 0)
    card.visits[product] = before + n
    return till.sign(card.card_id, Operation.ADD_VISITS, product=product, visits_before=before,
                     visits_after=before + n, cash_fen=price, purse_before=card.purse,
                     purse_after=card.purse, card_counter=card.counter)


def take_visit(till: Till, card: Card, product: str, *, offline: bool = False) -> SignedRecord:
    card.counter += 1
    before = card.visits.get(product, 0)
    card.visits[product] = before - 1
    return till.sign(card.card_id, Operation.TAKE_VISIT, product=product, visits_before=before,
                     visits_after=before - 1, purse_before=card.purse, purse_after=card.purse,
                     card_counter=card.counter, flags=1 if offline else 0)


def shuffled(items: list, seed: int = 7) -> list:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out
