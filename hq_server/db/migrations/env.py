"""Alembic environment: always run from code with a connection handed in.

``hq_server.db.migrations.upgrade`` passes the connection through
``config.attributes["connection"]``; offline (SQL script) mode is not used.
"""

from __future__ import annotations

from alembic import context

from hq_server.db.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run HQ migrations through hq_server.db.migrations.upgrade() "
                       "or `onecard hq migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
