"""The database side of an append: read a record's state, then write the decided events, the
new state row and the participant's rows atomically, only if the record is still at the version
decided on.

PostgreSQL does the write in one statement, so an append costs at most two round trips
(read, write) on one pooled connection with no explicit transaction: a data-modifying CTE
moves the state row from the old version to the new one and inserts the events (and the
participant's rows) only if that row moved. These are the service's hottest statements, so
they go straight to psycopg (SQLAlchemy's execution layer cost about as much CPU as the
database); being fixed SQL, psycopg prepares them once per connection. SQLite has no
data-modifying CTEs: it runs the same writes in one ``BEGIN IMMEDIATE`` transaction, which
costs little in-process.

A session is one attempt's connection: ``optimistic`` reads without a lock (in autocommit),
``locked`` holds the record's row lock from the read to the commit.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

import orjson
import psycopg
from sqlalchemy import Connection, Engine, Table, bindparam, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from service.events.db import transaction
from service.events.errors import DatabaseUnavailable
from service.events.tables import STATE_COLUMNS, case_studies, events

if TYPE_CHECKING:
    from service.events.store import Decided


class LostRace(Exception):
    """The record moved (or was created) between the read and the write; nothing was written."""


class Session(Protocol):
    def read_state(self, stream_id: str) -> tuple[dict[str, Any] | None, str | None]: ...

    def write(self, stream_id: str, version_before: int, decided: Sequence[Decided], state: dict[str, Any],
              state_json: str, companion: Sequence[dict[str, Any]]) -> list[int]:
        """Write and return the events' positions, in order; raises LostRace if the record moved."""


def _filled_columns(table: Table) -> list[str]:
    """The columns a participant's rows fill: all but an autoincrementing key."""
    return [column.name for column in table.c if not (column.primary_key and column.autoincrement is True)]


# -- PostgreSQL ------------------------------------------------------------------------------
_PG_READ_STATE = "SELECT state, head_hash FROM case_studies WHERE id = %s"
_PG_LOCK_STATE = "SELECT state, head_hash FROM case_studies WHERE id = %s FOR UPDATE"
_PG_EVENTS = (
    "INSERT INTO events (event_id, stream_id, version, type, data, actor, recorded_at, occurred_at, "
    "correlation_id, causation_id, on_behalf_of, request_digest, prev_hash, hash) "
    "SELECT v.event_id, claimed.id, v.version, v.type, v.data, %(actor)s, %(recorded_at)s, v.occurred_at, "
    "v.correlation_id, v.causation_id, v.on_behalf_of, v.request_digest, v.prev_hash, v.hash "
    "FROM claimed CROSS JOIN jsonb_to_recordset(%(events)s::jsonb) AS v(event_id varchar, version integer, "
    "type varchar, data jsonb, occurred_at timestamptz, correlation_id varchar, causation_id varchar, "
    "on_behalf_of varchar, request_digest varchar, prev_hash varchar, hash varchar) "
    "ORDER BY v.version RETURNING position, version")
_PG_STATE_COLUMNS = ", ".join(STATE_COLUMNS)
_PG_STATE_VALUES = ", ".join(f"%({name})s::json" if name == "state" else f"%({name})s" for name in STATE_COLUMNS)
# A new stream: the events go in only if this statement created the state row.
_PG_CLAIM_NEW = (f"claimed AS (INSERT INTO case_studies (id, {_PG_STATE_COLUMNS}) VALUES (%(id)s, {_PG_STATE_VALUES}) "
                 f"ON CONFLICT (id) DO NOTHING RETURNING id)")
# An existing stream: the events go in only if the row was still at the version decided on.
_PG_CLAIM_MOVE = (f"claimed AS (UPDATE case_studies SET ({_PG_STATE_COLUMNS}) = ({_PG_STATE_VALUES}) "
                  f"WHERE id = %(id)s AND version = %(old_version)s RETURNING id)")


def _pg_companion(table: Table) -> str:
    """The participant's rows go in with the events, in the same statement, only if the state row moved."""
    columns = _filled_columns(table)
    return (f"companion AS (INSERT INTO {table.name} ({', '.join(columns)}) "
            f"SELECT {', '.join('r.' + name for name in columns)} FROM claimed "
            f"CROSS JOIN jsonb_populate_recordset(NULL::{table.name}, %(companion)s::jsonb) AS r "
            f"ON CONFLICT DO NOTHING)")


class _PostgresSession:
    def __init__(self, driver: psycopg.Connection, statements: dict[tuple[bool, bool], str], locking: bool):
        self.driver = driver
        self.statements = statements  # (new stream?, participant rows?) -> statement
        self.locking = locking

    def read_state(self, stream_id: str) -> tuple[dict[str, Any] | None, str | None]:
        row = self.driver.execute(_PG_LOCK_STATE if self.locking else _PG_READ_STATE, (stream_id,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def write(self, stream_id: str, version_before: int, decided: Sequence[Decided], state: dict[str, Any],
              state_json: str, companion: Sequence[dict[str, Any]]) -> list[int]:
        first = decided[0]
        params = {**state, "state": state_json, "id": stream_id, "old_version": version_before,
                  "actor": first.actor, "recorded_at": first.recorded_at,
                  "events": orjson.dumps([_pg_event(event) for event in decided]).decode()}
        if companion:
            params["companion"] = orjson.dumps(companion).decode()
        try:
            returned = self.driver.execute(self.statements[version_before == 0, bool(companion)], params).fetchall()
        except psycopg.IntegrityError:
            raise LostRace() from None
        if not returned:
            raise LostRace()
        return [position for position, _version in sorted(returned, key=lambda row: row[1])]


def _pg_event(event: Decided) -> dict[str, Any]:
    return {"event_id": event.event_id, "version": event.version, "type": event.type, "data": event.data,
            "occurred_at": event.occurred_at.isoformat(), "correlation_id": event.correlation_id,
            "causation_id": event.causation_id, "on_behalf_of": event.on_behalf_of,
            "request_digest": event.request_digest, "prev_hash": event.prev_hash, "hash": event.hash}


def _unavailable(error: Exception) -> DatabaseUnavailable:
    return DatabaseUnavailable(str(error).splitlines()[0] if str(error) else "connection lost")


class PostgresWriter:
    def __init__(self, engine: Engine, companion: Table | None):
        self.engine = engine  # autocommit by default (see db.make_engine)
        self.statements = {
            (new, with_rows): "WITH " + ", ".join([_PG_CLAIM_NEW if new else _PG_CLAIM_MOVE,
                                                   *([_pg_companion(companion)] if with_rows else [])]) + " " + _PG_EVENTS
            for new in (True, False) for with_rows in ((False, True) if companion is not None else (False,))}

    @contextmanager
    def optimistic(self) -> Iterator[_PostgresSession]:
        """No lock and no transaction: the write is one statement."""
        pooled = self.engine.raw_connection()
        try:
            yield _PostgresSession(pooled.driver_connection, self.statements, locking=False)
        except psycopg.OperationalError as error:
            # A lost connection usually means the server restarted: drop this one and every
            # pooled one, so that the next requests do not each find a dead connection.
            pooled.invalidate()
            self.engine.dispose()
            raise _unavailable(error) from None
        finally:
            pooled.close()

    @contextmanager
    def locked(self) -> Iterator[_PostgresSession]:
        """A transaction holding the record's row lock from the read to the commit."""
        try:
            with transaction(self.engine) as conn:
                yield _PostgresSession(conn.connection.driver_connection, self.statements, locking=True)
        except psycopg.OperationalError as error:
            raise _unavailable(error) from None


# -- SQLite ----------------------------------------------------------------------------------
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


def writer_for(engine: Engine, companion: Table | None = None) -> PostgresWriter | SqliteWriter:
    """The writer for the engine's database; ``companion`` is the participant's table, if any."""
    return (SqliteWriter if engine.dialect.name == "sqlite" else PostgresWriter)(engine, companion)
