"""SQLite, the embedded default: its engine, and the append's reads and writes.

SQLite has no data-modifying CTEs: an append runs its writes in one ``BEGIN IMMEDIATE``
transaction, which costs little in-process. Its writers take turns, so positions are handed
out in commit order.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import orjson
from sqlalchemy import Connection, Engine, Table, bindparam, create_engine, event, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from service.events.db import transaction
from service.events.errors import LostRace
from service.events.event import Decided
from service.events.tables import STATE_COLUMNS, case_studies, events


def make_sqlite_engine(url: str, database: str | None) -> Engine:
    """An engine on the database file (its folder made if need be), in WAL mode."""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           json_serializer=lambda value: orjson.dumps(value).decode(), json_deserializer=orjson.loads)

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


# Bound parameters may not share a column's name in SQLAlchemy's insert()/update().
_SQLITE_CLAIM_NEW = insert(case_studies).values(
    id=bindparam("p_id"), **{column: bindparam(f"p_{column}") for column in STATE_COLUMNS})
_SQLITE_CLAIM_MOVE = (update(case_studies)
                      .where(case_studies.c.id == bindparam("p_id"),
                             case_studies.c.version == bindparam("p_old_version"))
                      .values(**{column: bindparam(f"p_{column}") for column in STATE_COLUMNS}))
# A batch's events in one statement ("insertmanyvalues"), positions in the order given.
_SQLITE_INSERT_EVENTS = insert(events).returning(events.c.position, sort_by_parameter_order=True)
_SQLITE_READ_STATE = (select(case_studies.c.state, case_studies.c.head_hash)
                      .where(case_studies.c.id == bindparam("p_id")))


class _SqliteSession:
    def __init__(self, writer: SqliteWriter, conn: Connection | None):
        self.writer = writer
        self.conn = conn  # None: read outside a transaction, write in a transaction of its own

    def read_state(self, stream_id: str) -> tuple[dict[str, Any] | None, str | None]:
        if self.conn is None:
            with self.writer.engine.connect() as conn:
                row = conn.execute(_SQLITE_READ_STATE, {"p_id": stream_id}).first()
        else:
            row = self.conn.execute(_SQLITE_READ_STATE, {"p_id": stream_id}).first()
        return (row.state, row.head_hash) if row else (None, None)

    def write(self, stream_id: str, version_before: int, decided: Sequence[Decided], state: dict[str, Any],
              state_json: str, companion: Sequence[dict[str, Any]]) -> list[int]:
        if self.conn is None:
            with transaction(self.writer.engine) as conn:
                return _SqliteSession(self.writer, conn).write(stream_id, version_before, decided, state,
                                                               state_json, companion)
        claim = {"p_id": stream_id, "p_old_version": version_before,
                 **{f"p_{column}": state[column] for column in STATE_COLUMNS}}
        try:
            if version_before == 0:
                self.conn.execute(_SQLITE_CLAIM_NEW, claim)
            elif self.conn.execute(_SQLITE_CLAIM_MOVE, claim).rowcount != 1:
                raise LostRace()
            positions = list(self.conn.execute(_SQLITE_INSERT_EVENTS, [_sqlite_event(e) for e in decided]).scalars())
            if companion:
                self.conn.execute(self.writer.insert_companion, list(companion))
        except IntegrityError:
            raise LostRace() from None
        return positions


def _sqlite_event(event: Decided) -> dict[str, Any]:
    return {"event_id": event.event_id, "stream_id": event.stream_id, "version": event.version, "type": event.type,
            "data": event.data, "actor": event.actor, "recorded_at": event.recorded_at,
            "occurred_at": event.occurred_at, "correlation_id": event.correlation_id,
            "causation_id": event.causation_id, "on_behalf_of": event.on_behalf_of,
            "request_digest": event.request_digest, "prev_hash": event.prev_hash, "hash": event.hash}


class SqliteWriter:
    def __init__(self, engine: Engine, companion: Table | None):
        self.engine = engine
        # A row that conflicts with one already there is skipped, as on PostgreSQL.
        self.insert_companion = sqlite_insert(companion).on_conflict_do_nothing() if companion is not None else None

    @contextmanager
    def optimistic(self) -> Iterator[_SqliteSession]:
        """Read outside a transaction; the write takes the write lock (BEGIN IMMEDIATE)."""
        yield _SqliteSession(self, None)

    @contextmanager
    def locked(self) -> Iterator[_SqliteSession]:
        """BEGIN IMMEDIATE: the write lock is held from the read on."""
        with transaction(self.engine) as conn:
            yield _SqliteSession(self, conn)


