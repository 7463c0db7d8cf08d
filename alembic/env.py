"""Alembic environment: runs migrations on the engine the service would use, and compares the
migrated schema with the tables the code declares (``alembic check``)."""
from __future__ import annotations

from alembic import context

from service.config import Settings
from service.events.backends import make_engine
from service.migrations import metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            conn.execution_options(isolation_level="READ COMMITTED")  # DDL in one transaction
        _run(conn)
        conn.commit()
    engine.dispose()


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata(), render_as_batch=True,
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `casestudies db upgrade`")
run_migrations_online()
