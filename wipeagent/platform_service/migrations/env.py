"""Alembic environment for the platform database (run by `db.migrate`, or by `alembic`
with `-x url=...`). Online mode only: the platform migrates a live database."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from wipeagent.platform_service.db import metadata

config = context.config
url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
    "sqlalchemy.url")
if not url:
    raise SystemExit("no database URL (use wipeagent platform migrate --database URL)")
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table.
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
