"""Opening HQ's database: an engine on SQLite (WAL, fsync) or PostgreSQL, migrated.

Every HQ process opens its database here, so every process works on the newest schema
(see :mod:`hq_server.db.migrations`); ``onecard hq migrate`` does the same explicitly.
"""

from __future__ import annotations

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """Engine for ``sqlite:///path`` (WAL, fsync on commit) or ``postgresql+psycopg://``.

    The schema is brought to the newest Alembic revision (``hq_server/db/migrations``) unless
    ``migrate`` is False; ``onecard hq migrate`` does the same explicitly.
    """
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if migrate:
        from hq_server.db.migrations import upgrade

        upgrade(engine)
    return engine
