"""The last step of an append: write the decided events and the new state row, atomically,
only if the record is still at the version the decision was made on.

PostgreSQL does it in one statement, so an append costs two round trips (read the state,
write) with no explicit transaction: a data-modifying CTE moves the state row from the old
version to the new one and inserts the events only if that row moved. SQLite has no
data-modifying CTEs; it runs the same two writes in one ``BEGIN IMMEDIATE`` transaction,
which costs nothing there since the database is in-process.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import orjson
import psycopg
from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.events.db import transaction
from service.events.errors import DatabaseUnavailable
from service.events.tables import case_studies, events

# Runs inside the write's transaction with the positions the events were given.
AfterWrite = Callable[[Connection, list[int]], None]

STATE_COLUMNS = ("status", "version", "csm", "account_id", "account_name", "committed_at",
                 "entered_status_at", "last_activity_at", "state")


class LostRace(Exception):
    """The record moved (or was created) between the read and the write; nothing was written."""


class PostgresWriter:
    """One data-modifying statement per append; a transaction only when handlers must join it.

    The read and the write of an append go straight to psycopg on a pooled connection: they
    are the service's hottest statements, and SQLAlchemy's execution layer cost about as much
    CPU as the database itself. Both statements are fixed, so psycopg prepares them once per
    connection.
    """

    def __init__(self, engine: Engine):
        self.engine = engine  # autocommit by default (see db.make_engine)

    def transaction(self):
        """A transaction for a locked read-decide-write."""
        return transaction(self.engine)

    def read_state(self, stream_id: str) -> dict[str, Any] | None:
        """The record's state document, or None for a new stream."""
        with _driver_connection(self.engine) as conn:
            row = conn.execute(_PG_READ_STATE, (stream_id,)).fetchone()
        return row[0] if row else None

    def write(self, conn: Connection | None, stream_id: str, version_before: int,
              rows: Sequence[dict[str, Any]], state: dict[str, Any], actor: str, recorded_at,
              after_write: AfterWrite | None) -> list[int]:
        params = {**state, "id": stream_id, "old_version": version_before, "actor": actor,
                  "recorded_at": recorded_at, "state": state["state_json"],
                  "events": _json([{**row, "occurred_at": row["occurred_at"].isoformat()} for row in rows])}
        statement = _PG_CREATE if version_before == 0 else _PG_MOVE
        if conn is not None:
            positions = self._execute(conn.connection.driver_connection, statement, params)
            if after_write is not None:
                after_write(conn, positions)
        elif after_write is None:
            with _driver_connection(self.engine) as own:
                positions = self._execute(own, statement, params)
        else:
            with transaction(self.engine) as own:
                positions = self._execute(own.connection.driver_connection, statement, params)
                after_write(own, positions)
        return positions

    @staticmethod
    def _execute(driver_conn, statement: str, params: dict[str, Any]) -> list[int]:
        try:
            returned = driver_conn.execute(statement, params).fetchall()
        except psycopg.IntegrityError:
            raise LostRace() from None
        if not returned:
            raise LostRace()
        return [position for position, _version in sorted(returned, key=lambda row: row[1])]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@contextmanager
def _driver_connection(engine: Engine) -> Iterator[psycopg.Connection]:
    """A pooled psycopg connection (autocommit); a broken one is discarded, not pooled again."""
    pooled = engine.raw_connection()
    try:
        yield pooled.driver_connection
    except psycopg.OperationalError as error:
        pooled.invalidate()
        raise DatabaseUnavailable(str(error).splitlines()[0] if str(error) else "connection lost") from None
    finally:
        pooled.close()


_PG_READ_STATE = "SELECT state FROM case_studies WHERE id = %s"
_PG_EVENTS = (
    "INSERT INTO events (event_id, stream_id, version, type, data, actor, recorded_at, occurred_at, "
    "correlation_id, causation_id, request_digest) "
    "SELECT v.event_id, claimed.id, v.version, v.type, v.data, %(actor)s, %(recorded_at)s, v.occurred_at, "
    "v.correlation_id, v.causation_id, v.request_digest "
    "FROM claimed CROSS JOIN jsonb_to_recordset(%(events)s::jsonb) AS v(event_id varchar, version integer, "
    "type varchar, data jsonb, occurred_at timestamptz, correlation_id varchar, causation_id varchar, "
    "request_digest varchar) "
    "ORDER BY v.version RETURNING position, version")
_PG_STATE_VALUES = ("%(status)s, %(version)s, %(csm)s, %(account_id)s, %(account_name)s, %(committed_at)s, "
                    "%(entered_status_at)s, %(last_activity_at)s, %(state)s::jsonb")
# A new stream: the events go in only if this statement created the state row.
_PG_CREATE = (
    "WITH claimed AS (INSERT INTO case_studies (id, status, version, csm, account_id, account_name, "
    f"committed_at, entered_status_at, last_activity_at, state) VALUES (%(id)s, {_PG_STATE_VALUES}) "
    f"ON CONFLICT (id) DO NOTHING RETURNING id) {_PG_EVENTS}")
# An existing stream: the events go in only if the row was still at the version decided on.
_PG_MOVE = (
    f"WITH claimed AS (UPDATE case_studies SET (status, version, csm, account_id, account_name, committed_at, "
    f"entered_status_at, last_activity_at, state) = ({_PG_STATE_VALUES}) "
    f"WHERE id = %(id)s AND version = %(old_version)s RETURNING id) {_PG_EVENTS}")


# Bound parameters may not share a column's name in SQLAlchemy's insert()/update().
_SQLITE_CLAIM_NEW = insert(case_studies).values(
    id=bindparam("p_id"), **{column: bindparam(f"p_{column}") for column in STATE_COLUMNS})
_SQLITE_CLAIM_MOVE = (update(case_studies)
                      .where(case_studies.c.id == bindparam("p_id"),
                             case_studies.c.version == bindparam("p_old_version"))
                      .values(**{column: bindparam(f"p_{column}") for column in STATE_COLUMNS}))
_SQLITE_INSERT_EVENT = insert(events).returning(events.c.position)
_SQLITE_READ_STATE = select(case_studies.c.state).where(case_studies.c.id == bindparam("p_id"))


class SqliteWriter:
    """The same writes as two statements in one BEGIN IMMEDIATE transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def transaction(self):
        """BEGIN IMMEDIATE: the write lock is held from the read on."""
        return transaction(self.engine)

    def read_state(self, stream_id: str) -> dict[str, Any] | None:
        """The record's state document, or None for a new stream."""
        with self.engine.connect() as conn:
            row = conn.execute(_SQLITE_READ_STATE, {"p_id": stream_id}).first()
        return row.state if row else None

    def write(self, conn: Connection | None, stream_id: str, version_before: int,
              rows: Sequence[dict[str, Any]], state: dict[str, Any], actor: str, recorded_at,
              after_write: AfterWrite | None) -> list[int]:
        if conn is None:
            with self.transaction() as own:
                return self.write(own, stream_id, version_before, rows, state, actor, recorded_at, after_write)
        claim = {"p_id": stream_id, "p_old_version": version_before,
                 **{f"p_{column}": state[column] for column in STATE_COLUMNS}}
        try:
            if version_before == 0:
                conn.execute(_SQLITE_CLAIM_NEW, claim)
            elif conn.execute(_SQLITE_CLAIM_MOVE, claim).rowcount != 1:
                raise LostRace()
            positions = [conn.execute(_SQLITE_INSERT_EVENT, {
                **row, "stream_id": stream_id, "actor": actor, "recorded_at": recorded_at,
            }).scalar_one() for row in rows]
        except IntegrityError:
            raise LostRace() from None
        if after_write is not None:
            after_write(conn, positions)
        return positions


def writer_for(engine: Engine) -> PostgresWriter | SqliteWriter:
    """The writer for the engine's database."""
    return SqliteWriter(engine) if engine.dialect.name == "sqlite" else PostgresWriter(engine)
