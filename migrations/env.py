"""Alembic environment of sweeper's own tables, configured from code (see sweeper.store.db).

sweeper passes an open connection in ``config.attributes["connection"]`` (already inside the
transaction that holds the schema lock). Only ``sweep_*`` tables are compared or touched: Optuna's
tables and its ``alembic_version`` share the database and are not ours.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from sweeper.store import db
from sweeper.store.models import Base

config = context.config
target_metadata = Base.metadata

OPTIONS = {
    "target_metadata": target_metadata,
    "version_table": db.VERSION_TABLE,
    "include_name": db.include_name,
    # SQLite cannot ALTER most things: batch mode rebuilds the table (foreign keys off meanwhile)
    "render_as_batch": True,
    # SQLite runs DDL in a transaction too, since sweeper's engine emits BEGIN itself
    "transactional_ddl": True,
    "compare_type": True,
}


def run_migrations_offline() -> None:
    """Print the SQL (``alembic upgrade --sql``) for a URL given as sqlalchemy.url."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sweeper's migrations need a connection or sqlalchemy.url")
    engine = db._create_engine(make_url(url), poolclass=NullPool, foreign_keys=False)
    try:
        with engine.connect() as conn:
            run_migrations(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
