"""The Alembic migrations build exactly the schema that ``hq_server.db.tables`` declares.

A table or column added to ``schema.metadata`` without a migration (or the other way
round) makes :func:`test_migrated_schema_matches_metadata` fail on both stores.
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from hq_server.db.engine import open_engine
from hq_server.db.migrations import current_revisions, head_revisions, upgrade
from hq_server.db.tables import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def test_migrated_schema_matches_metadata(db_url):
    engine = open_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
        assert set(current_revisions(conn)) == set(head_revisions())
    assert diff == [], f"schema.py and the migrations disagree: {diff}"


def test_open_engine_twice_is_a_no_op(db_url):
    open_engine(db_url)
    engine = open_engine(db_url)  # already at head: nothing to do, nothing fails
    assert "ledger_entries" in inspect(engine).get_table_names()


def test_an_empty_database_is_empty_until_migrated(sqlite_url):
    engine = open_engine(sqlite_url, migrate=False)
    assert inspect(engine).get_table_names() == []
    upgrade(engine)
    assert {"records", "ledger_accounts", "anomalies"} <= set(inspect(engine).get_table_names())


@pytest.mark.parametrize("statement", [
    "UPDATE ledger_entries SET amount = amount + 1",
    "DELETE FROM ledger_entries",
    "UPDATE ledger_transactions SET store = 'elsewhere'",
    "DELETE FROM ledger_transactions",
])
def test_the_database_refuses_to_edit_the_ledger(db_url, statement):
    engine = open_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO ledger_accounts (account, asset, kind, credit_floor) "
                          "VALUES ('store:s1:cash', 'CNY', 'asset', false), "
                          "('card:c1:purse', 'CNY', 'liability', false)"))
        conn.execute(text("INSERT INTO ledger_transactions (txn_id, kind, store, posted_at_ms) "
                          "VALUES ('t1', 'recharge', 's1', 1)"))
        conn.execute(text("INSERT INTO ledger_entries (txn_id, account, asset, amount) VALUES "
                          "('t1', 'store:s1:cash', 'CNY', 100), ('t1', 'card:c1:purse', 'CNY', -100)"))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT SUM(amount), COUNT(*) FROM ledger_entries")).one() == (0, 2)


def test_postgresql_workers_starting_together_migrate_once(pg_url):
    """Two processes opening a fresh database at once: the advisory lock serialises them."""
    import threading

    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_engine(pg_url).dispose()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with create_engine(pg_url).connect() as conn:
        assert set(current_revisions(conn)) == set(head_revisions())
