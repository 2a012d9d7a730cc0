"""Real signed records for HQ tests: a terminal's key and chain, without MQTT.

``Till`` signs records the way a terminal's outbox does (sequence, previous hash,
Ed25519), so ingest, ledger and reconciliation see exactly what the field sends.
``VisitGate`` taps :class:`CountCard` members through the gate's own card operation
(:func:`protocol.card_ops.take_visit`) and the terminal's signing place, for tests that
need real signed visits at volume.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hq_server.devices.registry import add_device
from protocol import card_ops
from protocol.card_ops import TerminalContext
from protocol.card_state import CardState, Refusal
from protocol.products import CardProduct, Catalogue, CountProduct
from protocol.record import GENESIS_HASH, Operation, SignedRecord, TransactionRecord
from protocol.topics import records_topic
from terminal_fw.identity import DeviceIdentity
from terminal_fw.outbox import Outbox
from terminal_fw.tap import Recorder

#: Parameters for an ``engine`` fixture: every ledger test runs on the embedded store
#: and on PostgreSQL (which must be there in CI: ``pg_url`` fails instead of skipping).
STORES = ["sqlite", "postgresql"]


_MIGRATED_SQLITE: list[Path] = []


def _migrated_sqlite_copy(url: str) -> str:
    """``url``'s file made a copy of a fully migrated database (migrated once per process):
    running a dozen migrations for every test's fresh SQLite file cost more than the tests.
    Migrations themselves are tested from an empty file (test_ledger_migrations)."""
    import shutil
    import tempfile

    from hq_server.db.engine import open_engine

    if not _MIGRATED_SQLITE:
        template = Path(tempfile.mkdtemp(prefix="onecard-hq-template-")) / "hq.db"
        open_engine(f"sqlite:///{template}").dispose()
        _MIGRATED_SQLITE.append(template)
    shutil.copyfile(_MIGRATED_SQLITE[0], url.removeprefix("sqlite:///"))
    return url


def store_engine(request: pytest.FixtureRequest):
    """The HQ engine for ``request.param`` (one of :data:`STORES`), fully migrated."""
    from hq_server.db.engine import open_engine

    if request.param == "sqlite":
        return open_engine(_migrated_sqlite_copy(request.getfixturevalue("sqlite_url")))
    return open_engine(request.getfixturevalue("pg_url"))


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def known_store(engine, store_id: str, region: str | None = None) -> str:
    """Make sure HQ knows ``store_id`` (terminals are only registered for known stores)."""
    from hq_server.chain.places import place_of_store
    from hq_server.chain.stores import create_region, create_store
    from hq_server.operators.access import SYSTEM

    with engine.connect() as conn:
        if place_of_store(conn, store_id) is not None:
            return store_id
        region_known = region is None or conn.exec_driver_sql(
            "SELECT 1 FROM regions WHERE region_id = ?" if conn.dialect.name == "sqlite"
            else "SELECT 1 FROM regions WHERE region_id = %s", (region,)).first()
    if not region_known:
        create_region(engine, SYSTEM, region, f"region {region}", 1_700_000_000_000)
    create_store(engine, SYSTEM, store_id, f"store {store_id}", region=region,
                 now_ms=1_700_000_000_000)
    return store_id


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
        """Register the till at HQ, adding its store to the chain first if HQ lacks it."""
        known_store(engine, self.store)
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


# --- gates over decoded cards: signed visits at volume --------------------------------

#: The catalogue of :class:`VisitGate`: one count product, no limits, no anti-passback.
COUNT_CATALOGUE = Catalogue(
    card_products=(CardProduct(1, "count-card", count_products=("swim",)),),
    count_products=(CountProduct(10, "swim", 4000, 10),),
)


class CardTorn(IOError):
    """The card left the field during a write; nothing was written."""


class CountCard:
    """A member card as a decoded :class:`CardState` in memory (no chip, no reader), for
    tests that need many members; it can be told to tear at its next write, which
    leaves its state unchanged, as a card pulled away before the write."""

    def __init__(self, state: CardState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self.tear_next_write = False

    def read(self) -> CardState:
        with self._lock:
            return self._state

    def write(self, new_state: CardState) -> None:
        with self._lock:
            if self.tear_next_write:
                self.tear_next_write = False
                raise CardTorn(f"card {self._state.card_id} left the field during the write")
            self._state = new_state

    @property
    def state(self) -> CardState:
        return self.read()


@dataclass(frozen=True)
class GateDecision:
    opened: bool
    reason: str = ""
    record: SignedRecord | None = None


class VisitGate:
    """A gate taking one visit of ``product`` per tap from a :class:`CountCard`.

    The decision is the deployed one, :func:`protocol.card_ops.take_visit`, and the record
    is signed where a terminal signs every record (:class:`terminal_fw.tap.Recorder`, into
    the device's outbox); only the card's MIFARE memory and the intent journal are left
    out, so HQ tests get real signed visits by the thousand.
    """

    def __init__(self, identity: DeviceIdentity, outbox: Outbox, product: str = "swim", *,
                 operator: str = "", clock: Callable[[], float] = time.time,
                 offline: Callable[[], bool] = lambda: False) -> None:
        self.identity = identity
        self.outbox = outbox
        self.recorder = Recorder(identity, outbox)
        self.product = product
        self.operator = operator
        self.clock = clock
        self.offline = offline

    def tap(self, card: CountCard) -> GateDecision:
        """Decide, write the card, then sign the record; open only after that."""
        state = card.read()
        ctx = TerminalContext(device_id=self.identity.device_id, store=self.identity.store,
                              chain_id=state.chain_id, now_ms=int(self.clock() * 1000),
                              operator=self.operator, accepts=(self.product,),
                              offline=self.offline())
        outcome = card_ops.take_visit(state, catalogue=COUNT_CATALOGUE, ctx=ctx)
        if isinstance(outcome, Refusal):
            return GateDecision(False, str(outcome))
        card.write(outcome.state)
        [signed] = self.recorder.sign(outcome.records)
        return GateDecision(True, "", signed)


def count_card(card_id: str = "M00001", visits: int = 1000, counter: int = 0) -> CountCard:
    """A member card holding ``visits`` swims."""
    return CountCard(CardState(card_id=card_id, visits={"swim": visits}, counter=counter))
