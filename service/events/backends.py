"""The database backends, chosen by the URL: each one's engine, and the writer an append uses.

A writer opens a session per attempt (``optimistic``: no lock; ``locked``: the record's row lock
held from the read to the commit); the store asks a session for the record's state and then
to write the decided events, the new state row and the participant's rows, all or none.
"""
from __future__ import annotations

from typing import Any, ContextManager, Protocol, Sequence

from sqlalchemy import Engine, Table
from sqlalchemy.engine import make_url

from service.events.db import normalise_url
from service.events.event import Decided
from service.events.postgres import PostgresWriter, make_postgres_engine
from service.events.sqlite import SqliteWriter, make_sqlite_engine


class Session(Protocol):
    def read_state(self, stream_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """The record's state document and head hash (None, None for a new record)."""

    def write(self, stream_id: str, version_before: int, decided: Sequence[Decided], state: dict[str, Any],
              state_json: str, companion: Sequence[dict[str, Any]]) -> list[int]:
        """Write and return the events' positions, in order; raises LostRace if the record moved."""


class Writer(Protocol):
    def optimistic(self) -> ContextManager[Session]: ...

    def locked(self) -> ContextManager[Session]: ...


def make_engine(url: str, *, pool_size: int = 5, statement_timeout: float = 0) -> Engine:
    """An engine for ``url`` with the settings its database needs for a correct event store;
    ``statement_timeout`` (seconds) bounds each statement on PostgreSQL (SQLite has no such bound)."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return make_sqlite_engine(url, parsed.database)
    return make_postgres_engine(url, pool_size=pool_size, statement_timeout=statement_timeout)


def writer_for(engine: Engine, companion: Table | None = None) -> Writer:
    """The writer for the engine's database; ``companion`` is the participant's table, if any."""
    return (SqliteWriter if engine.dialect.name == "sqlite" else PostgresWriter)(engine, companion)
