"""What every database backend shares: URLs, transactions, and which backend an engine is."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use psycopg 3 for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


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
