"""HQ's tables (SQLAlchemy Core), shared by SQLite (embedded) and PostgreSQL.

The ledger tables are append-only: nothing here is ever updated or deleted except the
device registry's status and ingest progress columns.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("public_key", String(64), nullable=False),
    Column("store", String(64), nullable=False),
    Column("role", String(16), nullable=False, server_default="gate"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("registered_at_ms", BigInteger, nullable=False),
    # Highest sequence such that every record 1..n is stored (posted or quarantined).
    Column("contiguous_through", BigInteger, nullable=False, server_default="0"),
    Column("highest_seen", BigInteger, nullable=False, server_default="0"),
)

records = Table(
    "records",
    metadata,
    Column("device_id", String(64), ForeignKey("devices.device_id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("record_hash", LargeBinary(32), nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("wire", LargeBinary, nullable=False),
    Column("card_id", String(64), nullable=False),
    Column("operation", Integer, nullable=False),
    Column("card_counter", BigInteger, nullable=False),
    Column("device_time_ms", BigInteger, nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
    # "posted" (in the ledger) or "quarantined" (signed by the device, not posted).
    Column("status", String(16), nullable=False),
    PrimaryKeyConstraint("device_id", "seq", name="pk_records"),
)
Index("ix_records_card", records.c.card_id, records.c.card_counter)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64)),
    Column("seq", BigInteger),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("wire", LargeBinary, nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    # Derived from the record ("<device>#<seq>"), so a retry can never post twice.
    Column("txn_id", String(96), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("store", String(64), nullable=False),
    Column("card_id", String(64), nullable=False),
    Column("posted_at_ms", BigInteger, nullable=False),
    Column("reverses", String(96), ForeignKey("ledger_transactions.txn_id")),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("txn_id", String(96), ForeignKey("ledger_transactions.txn_id"), nullable=False),
    Column("account", String(160), nullable=False),
    Column("asset", String(80), nullable=False),
    # Signed: debit positive, credit negative. Per transaction and asset the sum is 0.
    Column("amount", BigInteger, nullable=False),
)
Index("ix_entries_account", ledger_entries.c.account, ledger_entries.c.asset)
Index("ix_entries_txn", ledger_entries.c.txn_id)

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


# --- enrolment and operators (issue 5) -------------------------------------------------

operators = Table(
    "operators",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String(255), nullable=False),  # argon2id, never the password
    Column("role", String(16), nullable=False, server_default="admin"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at_ms", BigInteger, nullable=False),
)

enrolment_tokens = Table(
    "enrolment_tokens",
    metadata,
    # SHA-256 of the token: a database dump does not let anyone enrol a device.
    Column("token_hash", String(64), primary_key=True),
    Column("store", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("used_at_ms", BigInteger),
    Column("device_id", String(64)),
)

device_certificates = Table(
    "device_certificates",
    metadata,
    # Decimal serial of an MQTT client certificate HQ's device CA issued to a device.
    Column("serial", String(64), primary_key=True),
    Column("device_id", String(64), ForeignKey("devices.device_id"), nullable=False),
    Column("issued_at_ms", BigInteger, nullable=False),
    Column("not_after_ms", BigInteger, nullable=False),
    Column("revoked_at_ms", BigInteger),
)
Index("ix_device_certificates_device", device_certificates.c.device_id)

device_events = Table(
    "device_events",
    metadata,
    # Append-only audit of a device's life: enrolled, keys rolled, revoked.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("event", String(16), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("at_ms", BigInteger, nullable=False),
)
Index("ix_device_events_device", device_events.c.device_id)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def open_engine(url: str) -> Engine:
    """Engine for ``sqlite:///path`` (WAL, fsync on commit) or ``postgresql+psycopg://``."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    return engine
