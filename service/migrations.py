"""Schema migrations through Alembic, the only way the schema is made."""
from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's config pointing at this project's scripts (and at ``engine`` when given)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision``."""
    config = alembic_config()
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            conn.execution_options(isolation_level="READ COMMITTED")  # DDL in transactions
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()


def metadata() -> MetaData:
    """Every table the code uses: each package declares its own on the event store's MetaData."""
    from service.access import tables as access_tables  # noqa: F401 (each declares its tables)
    from service.events.tables import metadata as shared
    from service.notifications import tables as notification_tables  # noqa: F401
    from service.projections import tables as projection_tables  # noqa: F401

    return shared


@cache
def head_revision() -> str:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
