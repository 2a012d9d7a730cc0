"""Writing many rows at once, the way ingest needs to keep up with the broker.

SQLAlchemy's per-row parameter handling cost more than the database itself, so these
helpers go straight to the driver: one compiled statement and executemany, or
PostgreSQL's COPY.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.expression import Executable

T = TypeVar("T")


def dialect_insert(conn: Connection):
    """The INSERT construct of the connection's dialect (it has ON CONFLICT)."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def chunks(items: list[T], size: int) -> Iterable[list[T]]:
    """``items`` in slices of at most ``size`` (SQLite allows 999 parameters)."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


_BULK: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}


def bulk_execute(conn: Connection, name: str, make: Callable[[], Executable],
                 rows: list[dict[str, Any]]) -> None:
    """Run one statement for many rows straight through the driver's executemany.

    Ingest writes thousands of rows a second; SQLAlchemy's per-row parameter handling
    cost more than the database itself. The statement (whose parameters must all be
    ``bindparam``s named like the row keys) is compiled once per dialect and ``name``.
    """
    if not rows:
        return
    key = (conn.dialect.name, name)
    cached = _BULK.get(key)
    if cached is None:
        compiled = make().compile(dialect=conn.dialect)
        cached = _BULK[key] = (str(compiled), tuple(compiled.positiontup or ())
                               if compiled.positional else None)
    sql, order = cached
    params = [tuple(r[k] for k in order) for r in rows] if order is not None else rows
    conn.exec_driver_sql(sql, params)


def copy_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows: PostgreSQL's COPY (one round trip, no per-row statement),
    elsewhere the driver's executemany. Every row has the same keys."""
    if not rows:
        return
    columns = list(rows[0])
    if conn.dialect.name != "postgresql":
        bulk_execute(conn, f"insert:{table.name}:{','.join(columns)}",
                     lambda: insert(table).values({c: bindparam(c) for c in columns}), rows)
        return
    if not conn.in_transaction():
        conn.begin()  # so that the caller's commit covers what the driver does below
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])
