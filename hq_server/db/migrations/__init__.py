"""HQ's schema migrations (Alembic), run from code.

``open_engine`` calls :func:`upgrade` so every HQ process works on the newest schema;
``onecard hq migrate`` does it explicitly. Several processes may start at once (ingest
workers): on PostgreSQL an advisory lock, on SQLite a lock file beside the database,
makes them migrate one after the other.

To add a table or column: change ``hq_server/db/tables.py`` and add a revision under
``versions/`` whose ``down_revision`` is the current head (``onecard hq migrate
--show``); ``tests/hq_server/test_ledger_migrations.py`` fails while the two disagree.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).parent
#: Arbitrary constant shared by every HQ process: the PostgreSQL advisory lock's key.
_PG_LOCK_KEY = 0x0C_A7D_0001


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def head_revisions() -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(conn: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(conn).get_current_heads())


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{os.path.abspath(database)}.migrate-lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(engine: Engine, target: str = "heads") -> None:
    """Bring the database to ``target`` (all heads by default), one process at a time."""
    if logging.getLogger("alembic").level == logging.NOTSET:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = alembic_config()
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
            try:
                if set(current_revisions(conn)) != set(head_revisions()) or target != "heads":
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, target)
                    conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    with _sqlite_file_lock(engine), engine.connect() as conn:
        if set(current_revisions(conn)) == set(head_revisions()) and target == "heads":
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)
        conn.commit()
