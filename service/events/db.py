"""Engines for SQLite and PostgreSQL with the settings each needs for a correct event store."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import orjson
from psycopg.types.json import set_json_loads
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use psycopg 3 for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url``; for SQLite, creates the file's folder and turns on WAL."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    # Autocommit by default: most work is one statement (a read, or an append's single write),
    # and BEGIN/COMMIT would add two round trips to each. Work that needs a transaction asks
    # for one with transaction() below.
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, isolation_level="AUTOCOMMIT",
                           json_serializer=_orjson_text, json_deserializer=orjson.loads)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # The append path reads jsonb through psycopg directly: parse it with orjson too.
        set_json_loads(orjson.loads, dbapi_connection)  # json and jsonb

    return engine


def _orjson_text(value) -> str:
    return orjson.dumps(value).decode()


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        # A writer takes the write lock up front, so two writers never deadlock upgrading
        # a read lock; readers stay on a plain deferred transaction.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("writer") else "BEGIN")

    return engine


@contextmanager
def transaction(engine: Engine, *, isolation: str = "READ COMMITTED", write: bool = True) -> Iterator[Connection]:
    """A real transaction on either database; on SQLite a writing one holds the write lock from the start."""
    with engine.connect() as conn:
        if is_sqlite(engine):
            conn.execution_options(writer=write)
        else:
            conn.execution_options(isolation_level=isolation)
        with conn.begin():
            yield conn


def is_sqlite(engine: Engine) -> bool:
    """True for the embedded database."""
    return engine.dialect.name == "sqlite"
