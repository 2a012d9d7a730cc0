"""HQ's tables (SQLAlchemy Core), shared by SQLite (embedded) and PostgreSQL.

The ledger tables are append-only: nothing here is ever updated or deleted except the
device registry's status and ingest progress columns.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

#: Named constraints, so Alembic migrations (batch mode on SQLite) can refer to them.
metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

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
    CheckConstraint("status IN ('posted', 'quarantined')", name="status"),
)
Index("ix_records_card", records.c.card_id, records.c.card_counter)

# Refused messages kept as evidence, capped per device (hq_server.ingest.quarantine.QuarantineLimits):
# the oldest rows of a device over its cap are deleted, and counted in quarantine_budget.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # The sender as its topic names it (the broker's ACL ties the topic to the client).
    Column("device_id", String(64)),
    Column("seq", BigInteger),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("wire", LargeBinary, nullable=False),
    Column("received_at_ms", BigInteger, nullable=False),
)
Index("ix_quarantine_device", quarantine.c.device_id, quarantine.c.id)

# Per device: its quarantine rate window, and what its caps made HQ drop (rows refused
# over the rate, oldest rows deleted over the count or byte cap).
quarantine_budget = Table(
    "quarantine_budget",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("window_start_ms", BigInteger, nullable=False, server_default="0"),
    Column("window_rows", BigInteger, nullable=False, server_default="0"),
    Column("dropped_rows", BigInteger, nullable=False, server_default="0"),
    Column("dropped_bytes", BigInteger, nullable=False, server_default="0"),
    Column("last_dropped_at_ms", BigInteger),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    # Derived from what caused it: "<device>#<seq>" for a record, "rev:<txn>" for a
    # reversal, "settle:<from>:<to>" for a settlement, so a retry can never post twice.
    Column("txn_id", String(96), primary_key=True),
    Column("device_id", String(64)),
    Column("seq", BigInteger),
    Column("kind", String(32), nullable=False),
    Column("store", String(64), nullable=False),
    Column("card_id", String(64)),
    Column("posted_at_ms", BigInteger, nullable=False),
    # A transaction is reversed at most once (unique), and only by a new transaction.
    Column("reverses", String(96), ForeignKey("ledger_transactions.txn_id"), unique=True),
    Column("memo", Text),
)
Index("ix_ledger_transactions_posted", ledger_transactions.c.posted_at_ms)

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    # One account holds one asset: entries reference (account, asset), so an entry in
    # another asset than its account's cannot be stored.
    Column("account", String(160), primary_key=True),
    Column("asset", String(80), nullable=False),
    # liability / asset / revenue / expense / settlement / memo (see hq_server.ledger.accounts)
    Column("kind", String(16), nullable=False),
    # TigerBeetle's debits_must_not_exceed_credits: a purse, a visit count or a points
    # balance can never go below zero, whatever the ingest code does.
    Column("credit_floor", Boolean, nullable=False),
    Column("debits", BigInteger, nullable=False, server_default="0"),
    Column("credits", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("account", "asset", name="uq_ledger_accounts_account_asset"),
    CheckConstraint("debits >= 0 AND credits >= 0", name="totals_non_negative"),
    CheckConstraint("NOT credit_floor OR debits <= credits", name="debits_within_credits"),
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
    ForeignKeyConstraint(["account", "asset"], ["ledger_accounts.account", "ledger_accounts.asset"],
                         name="fk_ledger_entries_account_ledger_accounts"),
    CheckConstraint("amount <> 0", name="amount_not_zero"),
)
Index("ix_entries_account", ledger_entries.c.account, ledger_entries.c.asset)
Index("ix_entries_txn", ledger_entries.c.txn_id)

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

card_reconciliation = Table(
    "card_reconciliation",
    metadata,
    # What HQ expects each card to hold, from the ledger, and what the card last said.
    Column("card_id", String(64), primary_key=True),
    # Ingest adds 1 for every record of the card; reconciliation notes what it has seen,
    # so a card is due again while touched > reconciled_touch (no lost wake-ups).
    Column("touched", BigInteger, nullable=False, server_default="0"),
    Column("reconciled_touch", BigInteger, nullable=False, server_default="0"),
    Column("expected_purse", BigInteger, nullable=False, server_default="0"),
    Column("expected_visits", Text, nullable=False, server_default="{}"),
    Column("expected_points", BigInteger, nullable=False, server_default="0"),
    Column("card_purse", BigInteger, nullable=False, server_default="0"),
    Column("card_visits", Text, nullable=False, server_default="{}"),
    Column("card_counter", BigInteger, nullable=False, server_default="0"),
    Column("open_anomalies", Integer, nullable=False, server_default="0"),
    Column("reconciled_at_ms", BigInteger),
)

anomalies = Table(
    "anomalies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Derived from kind, card and the records involved: found twice, stored once.
    Column("anomaly_key", String(255), nullable=False, unique=True),
    Column("card_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("summary", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON: the records and figures involved
    Column("detected_at_ms", BigInteger, nullable=False),
    Column("cleared_at_ms", BigInteger),
    CheckConstraint("severity IN ('low', 'medium', 'high')", name="severity"),
    CheckConstraint("status IN ('open', 'cleared')", name="status"),
)
Index("ix_anomalies_card", anomalies.c.card_id)

denylist_entries = Table(
    "denylist_entries",
    metadata,
    # Append-only: the version is the position in this log; a card's state is its latest
    # entry. Terminals get a snapshot and then deltas between versions.
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("card_id", String(64), nullable=False),
    Column("action", String(8), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    # When the card stopped being good (the loss report): uses after it are late hits.
    Column("effective_at_ms", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    CheckConstraint("action IN ('add', 'remove')", name="action"),
)
Index("ix_denylist_entries_card", denylist_entries.c.card_id)

device_presence = Table(
    "device_presence",
    metadata,
    # Fed by birth / death / heartbeat messages; one row per device.
    Column("device_id", String(64), ForeignKey("devices.device_id"), primary_key=True),
    Column("online", Boolean, nullable=False, server_default="0"),
    Column("bdseq", BigInteger, nullable=False, server_default="0"),
    Column("session_started_ms", BigInteger),
    Column("last_seen_ms", BigInteger),
    Column("went_offline_ms", BigInteger),
    Column("offline_reason", String(16)),
    Column("software_version", String(64)),
    Column("role", String(16)),
    Column("store", String(64)),
    Column("config_version", BigInteger),
    Column("denylist_version", BigInteger),
    Column("readers", Text),  # JSON {name: status}
    Column("outbox_depth", BigInteger),
    Column("oldest_unsent_age_ms", BigInteger),
    Column("last_ack_seq", BigInteger),
    Column("disk_free_bytes", BigInteger),
    Column("clock_offset_ms", BigInteger),
)


# --- enrolment and operators (issue 5) -------------------------------------------------

operators = Table(
    "operators",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String(255), nullable=False),  # argon2id, never the password
    Column("role", String(16), nullable=False, server_default="hq_admin"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at_ms", BigInteger, nullable=False),
    # issue 13: where the operator may act (``chain``, ``region:<id>``, ``store:<id>``)
    Column("scope", String(80), nullable=False, server_default="chain"),
    Column("display_name", String(200), nullable=False, server_default=""),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("updated_at_ms", BigInteger, nullable=True),
    Column("last_login_at_ms", BigInteger, nullable=True),
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

uid_credentials = Table(
    "uid_credentials",
    metadata,
    # UID-only credentials (ID cards, QR codes) HQ authorises online: see uid_credentials.py.
    Column("kind", String(16), nullable=False),  # em4100 | qr
    Column("credential", String(128), nullable=False),
    Column("holder", String(64), nullable=False),  # the member (or ticket) it belongs to
    Column("status", String(16), nullable=False, server_default="active"),
    Column("valid_from_ms", BigInteger, nullable=True),
    Column("valid_to_ms", BigInteger, nullable=True),
    Column("purposes", String(200), nullable=False, server_default="visit"),  # comma list
    Column("max_amount_fen", BigInteger, nullable=False, server_default="0"),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("kind", "credential"),
)



# --- business rules on records (issue 11) ----------------------------------------------

catalogues = Table(
    "catalogues",
    metadata,
    # The chain's catalogue as HQ holds it, versioned: a record is judged by the version
    # in force at its device time (see hq_server/catalogue/versions.py). Never updated.
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("effective_at_ms", BigInteger, nullable=False),
    Column("document", Text, nullable=False),  # Catalogue.to_dict() as JSON
    Column("created_at_ms", BigInteger, nullable=False),
)

rule_breaks = Table(
    "rule_breaks",
    metadata,
    # One row per rule a posted record broke; its value went to suspense:<device>.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("card_id", String(64), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("detected_at_ms", BigInteger, nullable=False),
    # Set when an operator released the device: counted no more towards holding it.
    Column("reviewed_at_ms", BigInteger),
    UniqueConstraint("device_id", "seq", "rule", name="uq_rule_breaks_record_rule"),
)
Index("ix_rule_breaks_card", rule_breaks.c.card_id)

card_spend = Table(
    "card_spend",
    metadata,
    # Per card, what was debited from it (purse and cash) and refunded onto it: a refund
    # is honoured only within what was debited. The check makes two workers that
    # refund the same card at once collide (one batch is retried) instead of both
    # refunding past the debits.
    Column("card_id", String(64), primary_key=True),
    Column("debited_fen", BigInteger, nullable=False, server_default="0"),
    Column("refunded_fen", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("refunded_fen <= debited_fen", name="refunds_within_debits"),
)


# Each store's terminal config as HQ holds it (issue 22): what a new terminal receives
# at enrolment and what ``hq push-config --store`` sends to every terminal of the store.
# One row per store; the document is the TerminalConfig JSON with its own version.
store_configs = Table(
    "store_configs",
    metadata,
    Column("store", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("document", Text, nullable=False),
    Column("updated_by", String(64), nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)


# Written by each HQ process's supervisor (hq_server.process.supervision), read by `hq status`
# and GET /health from other processes: one row per (process, component), overwritten
# at every beat. Not ledger data: rows of a retired worker may be deleted.
component_health = Table(
    "component_health",
    metadata,
    Column("process", String(64), nullable=False),
    Column("component", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("pid", Integer, nullable=True),
    Column("host", String(128), nullable=True),
    Column("started_at_ms", BigInteger, nullable=False),
    Column("last_beat_ms", BigInteger, nullable=False),
    Column("beat_every_ms", Integer, nullable=False),
    Column("restarts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("detail", Text, nullable=False, server_default="{}"),
    PrimaryKeyConstraint("process", "component"),
)


# --- operator actions and API safety (issue 13: members, operators, audit) -------------

# The chain's regions (大区) and stores (单店): managed by hq_server/chain; every scope
# check needs a store's region (hq_server/chain/places.py).
regions = Table(
    "regions",
    metadata,
    Column("region_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at_ms", BigInteger, nullable=False),
)

stores = Table(
    "stores",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("region_id", String(64), ForeignKey("regions.region_id"), nullable=True),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at_ms", BigInteger, nullable=False),
)
Index("stores_region", stores.c.region_id)

# The audit log (操作日志): one row per operator action, hash-chained; the database
# refuses to change or delete a row (triggers, see migration 0007).
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("operator", String(64), nullable=False),
    Column("role", String(32), nullable=False),
    Column("origin", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target_kind", String(32), nullable=False),
    Column("target_id", String(128), nullable=False),
    Column("before_json", Text, nullable=True),
    Column("after_json", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # The store the action's target belongs to (None: chain-level); scopes the log's
    # readers and is part of the row's hash (migration 0011).
    Column("store", String(64), nullable=True),
)
Index("audit_log_target", audit_log.c.target_kind, audit_log.c.target_id)
Index("audit_log_store", audit_log.c.store, audit_log.c.seq)
Index("audit_log_operator", audit_log.c.operator, audit_log.c.seq)

# The head of the audit chain: one row, locked by each append so the chain never forks.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Answers to POSTs sent with an Idempotency-Key, per operator (api/common.py).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("operator", String(64), nullable=False),
    Column("key", String(128), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=True),  # None while the first request runs
    Column("body_json", Text, nullable=True),
    Column("created_at_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("operator", "key"),
)


# --- the chain's stores in full, and the card registry (issue 13: chain and cards) ----
# Added to ``regions``/``stores`` by migration 0009 (see hq_server/chain/stores.py):
regions.append_column(Column("updated_at_ms", BigInteger, nullable=True))
stores.append_column(Column("address", Text, nullable=False, server_default=""))
stores.append_column(Column("phone", String(40), nullable=False, server_default=""))
# JSON: {"mon": ["06:00-22:00"], ..., "holidays": {"2026-10-01": []}} (hq_server/chain/hours.py)
stores.append_column(Column("opening_hours", Text, nullable=False, server_default="{}"))
stores.append_column(Column("updated_at_ms", BigInteger, nullable=True))
stores.append_column(Column("closed_at_ms", BigInteger, nullable=True))

# Every card HQ knows (卡片档案): kept current from ingested records (hq_server/cards).
cards = Table(
    "cards",
    metadata,
    Column("card_id", String(64), primary_key=True),
    Column("product", String(64), nullable=False, server_default=""),
    Column("member_id", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("issuing_store", String(64), nullable=True),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    CheckConstraint("state IN ('blank', 'issued', 'open', 'lost', 'blocked', 'frozen', "
                    "'recalled', 'replaced')", name="state"),
)
Index("cards_member", cards.c.member_id)
Index("cards_issuing_store", cards.c.issuing_store, cards.c.card_id)
Index("cards_state", cards.c.state, cards.c.card_id)

# The chip UIDs a card was seen with (a card may carry several: a replaced chip).
card_uids = Table(
    "card_uids",
    metadata,
    Column("uid", String(32), primary_key=True),
    Column("card_id", String(64), ForeignKey("cards.card_id"), nullable=False),
    Column("added_at_ms", BigInteger, nullable=False),
)
Index("card_uids_card", card_uids.c.card_id)

# Append-only: each change of a card's state, product, member or issuing store, and why.
card_history = Table(
    "card_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_id", String(64), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("event", String(32), nullable=False),
    Column("state_before", String(16), nullable=True),
    Column("state_after", String(16), nullable=False),
    # "record <device>#<seq>", "operator <name>", "denylist <version>"
    Column("source", String(128), nullable=False),
    Column("store", String(64), nullable=True),
    Column("detail", Text, nullable=False, server_default="{}"),
)
Index("card_history_card", card_history.c.card_id, card_history.c.id)
# The recycle bin (数据回收站): deleted members, products, operators, ... waiting to be
# restored or, after the retention period, purged by an administrator (hq_server/recycle).
recycle_bin = Table(
    "recycle_bin",
    metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("target_id", String(128), nullable=False),
    Column("label", String(200), nullable=False),
    Column("store", String(64), nullable=True),
    Column("region", String(64), nullable=True),
    Column("state", String(16), nullable=False),  # in_bin / restored / purged
    Column("deleted_at_ms", BigInteger, nullable=False),
    Column("deleted_by", String(64), nullable=False),
    Column("closed_at_ms", BigInteger, nullable=True),
    Column("closed_by", String(64), nullable=True),
    Column("snapshot_json", Text, nullable=True),
)
Index("recycle_bin_target", recycle_bin.c.kind, recycle_bin.c.target_id, recycle_bin.c.state)
Index("recycle_bin_state", recycle_bin.c.state, recycle_bin.c.entry_id)
# --- signing in (issue 13: operators, roles and scope) ----------------------------------

# Failed sign-ins per subject (``operator:<name>``, ``address:<ip>``, ``staff_card:<id>``):
# the back-off and lock-out of hq_server/operators/lockout.py. Unknown names get rows too,
# so a lock-out never tells which operator names exist.
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("subject", String(160), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_failure_at_ms", BigInteger, nullable=False),
    Column("last_failure_at_ms", BigInteger, nullable=False),
    Column("blocked_until_ms", BigInteger, nullable=True),
)

# Sessions: browser (cookie + CSRF token), cli (``onecard hq login``) and staff_card
# (handhelds). Only the SHA-256 of a session id is stored.
operator_sessions = Table(
    "operator_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("operator", String(64), ForeignKey("operators.username"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("csrf_token", String(64), nullable=True),
    Column("origin", String(128), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("issued_at_ms", BigInteger, nullable=False),  # of this id (rotation)
    Column("last_seen_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),  # absolute
    Column("idle_ms", BigInteger, nullable=False),
)
Index("operator_sessions_operator", operator_sessions.c.operator)

# API tokens for integrations: named, narrower than (or as wide as) their operator,
# stored hashed, shown once.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("operator", String(64), ForeignKey("operators.username"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("scope", String(80), nullable=False),
    Column("permissions", Text, nullable=True),  # space-separated; None: the role's
    Column("created_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=True),
    Column("last_used_at_ms", BigInteger, nullable=True),
    Column("revoked_at_ms", BigInteger, nullable=True),
)
Index("api_tokens_operator", api_tokens.c.operator)

# Staff cards (员工卡): a card id and a PIN sign an operator in on a handheld.
staff_cards = Table(
    "staff_cards",
    metadata,
    Column("card_id", String(64), primary_key=True),
    Column("operator", String(64), ForeignKey("operators.username"), nullable=False),
    Column("pin_hash", String(255), nullable=False),  # argon2id, never the PIN
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at_ms", BigInteger, nullable=False),
)

# The security log: sign-in successes and failures, lock-outs, sign-outs. Written by
# anyone who tries to sign in, so it is kept apart from the hash-chained audit log.
security_events = Table(
    "security_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("event", String(32), nullable=False),
    Column("subject", String(160), nullable=False),
    Column("address", String(64), nullable=False),
    Column("detail", String(200), nullable=False, server_default=""),
)
Index("security_events_at", security_events.c.at_ms)
# --- members (会员资料; hq_server/members) ----------------------------------------------

# One row per member. The profile columns are as operators typed them (text verbatim,
# dates as YYYY-MM-DD, mobile in E.164); beside them the indexed columns search uses
# (folded name, pinyin, initials, the digits of the mobile an operator types, the
# month of birth). Operator-defined fields live in custom_json: no migration per field.
# A deleted member keeps its row (status 'deleted', in the recycle bin); a merged one
# stays as a pointer to the member it was merged into (status 'merged').
members = Table(
    "members",
    metadata,
    Column("member_id", String(32), primary_key=True),  # member number, 会员编号
    Column("store_id", String(64), ForeignKey("stores.store_id"), nullable=True),
    Column("category", String(32)),
    Column("name", String(100), nullable=False),
    Column("name_on_card", String(50)),
    Column("gender", String(8)),
    Column("nationality", String(64)),
    Column("birthday", String(10)),
    Column("id_number", String(32)),
    Column("mobile", String(16)),
    Column("home_phone", String(32)),
    Column("home_address", String(300)),
    Column("home_postcode", String(16)),
    Column("billing_address", String(300)),
    Column("billing_postcode", String(16)),
    Column("email", String(254)),
    Column("company", String(200)),
    Column("title", String(100)),
    Column("company_phone", String(32)),
    Column("company_address", String(300)),
    Column("join_date", String(10)),
    Column("referrer_id", String(32), ForeignKey("members.member_id"), nullable=True),
    Column("vip_name", String(100)),
    Column("vip_birthday", String(10)),
    Column("vip_address", String(300)),
    Column("wedding_anniversary", String(10)),
    Column("habits", Text),
    Column("remark1", Text),
    Column("remark2", Text),
    Column("remark3", Text),
    Column("custom_json", Text, nullable=False, server_default="{}"),
    # search columns, derived from the profile (hq_server.members.profile.search_columns)
    Column("name_norm", String(100), nullable=False),
    Column("name_pinyin", String(200), nullable=False),
    Column("name_initials", String(100), nullable=False),
    Column("mobile_search", String(16)),
    Column("id_number_norm", String(32)),
    Column("birth_month", Integer),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("merged_into", String(32), ForeignKey("members.member_id"), nullable=True),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
    CheckConstraint("status IN ('active', 'deleted', 'merged')", name="status"),
    UniqueConstraint("mobile", name="uq_members_mobile"),
)
# Columns mostly empty are indexed where they hold a value: the planners' statistics of a
# column full of NULLs would otherwise make them scan the table for an equality.
_HAS = {c: members.c[c].isnot(None) for c in ("mobile_search", "id_number_norm",
                                               "referrer_id")}
Index("ix_members_mobile_search", members.c.mobile_search,
      postgresql_ops={"mobile_search": "varchar_pattern_ops"},
      sqlite_where=_HAS["mobile_search"], postgresql_where=_HAS["mobile_search"])
Index("ix_members_name_norm", members.c.name_norm,
      postgresql_ops={"name_norm": "varchar_pattern_ops"})
Index("ix_members_name_pinyin", members.c.name_pinyin,
      postgresql_ops={"name_pinyin": "varchar_pattern_ops"})
Index("ix_members_name_initials", members.c.name_initials,
      postgresql_ops={"name_initials": "varchar_pattern_ops"})
Index("ix_members_id_number", members.c.id_number_norm,
      sqlite_where=_HAS["id_number_norm"], postgresql_where=_HAS["id_number_norm"])
Index("ix_members_store", members.c.store_id, members.c.member_id)
Index("ix_members_join_date", members.c.join_date)
Index("ix_members_birth_month", members.c.birth_month)
Index("ix_members_referrer", members.c.referrer_id,
      sqlite_where=_HAS["referrer_id"], postgresql_where=_HAS["referrer_id"])

# The custom fields operators define (自定义字段); a retired field keeps its values.
member_fields = Table(
    "member_fields",
    metadata,
    Column("key", String(40), primary_key=True),
    Column("label", String(100), nullable=False),
    Column("type", String(16), nullable=False),
    Column("max_length", Integer, nullable=False),
    Column("choices_json", Text, nullable=False, server_default="[]"),
    Column("default_json", Text, nullable=True),
    Column("required", Boolean, nullable=False),
    Column("position", Integer, nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at_ms", BigInteger, nullable=False),
)

# A member's ledger (visits, spend, last transactions) is read by card: index the
# ledger's transactions by card and time.
Index("ix_ledger_transactions_card", ledger_transactions.c.card_id,
      ledger_transactions.c.posted_at_ms)
