"""The database side of an append: read a record's state, then write the decided events and
the new state row atomically, only if the record is still at the version decided on.

PostgreSQL does the write in one statement, so an append costs at most two round trips
(read, write) on one pooled connection with no explicit transaction: a data-modifying CTE
moves the state row from the old version to the new one and inserts the events only if that
row moved. These are the service's hottest statements, so they go straight to psycopg
(SQLAlchemy's execution layer cost about as much CPU as the database); being fixed SQL,
psycopg prepares them once per connection. SQLite has no data-modifying CTEs: it runs the
same writes in one ``BEGIN IMMEDIATE`` transaction, which costs little in-process.

A session is one attempt's connection: ``optimistic`` reads without a lock (in autocommit,
unless handlers must share the write's transaction), ``locked`` holds the record's row lock
from the read to the commit.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, Sequence

import orjson
import psycopg
from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from service.events.db import transaction
from service.events.errors import DatabaseUnavailable
from service.events.tables import case_studies, events, outbox

# Runs inside the write's transaction with the positions the events were given.
AfterWrite = Callable[[Connection, list[int]], None]

STATE_COLUMNS = ("status", "version", "csm", "account_id", "account_name", "committed_at",
                 "entered_status_at", "last_activity_at", "state", "head_hash")


class LostRace(Exception):
    """The record moved (or was created) between the read and the write; nothing was written."""


class Session(Protocol):
    def read_state(self, stream_id: str) -> tuple[dict[str, Any] | None, str | None]: ...

    def write(self, stream_id: str, version_before: int, rows: Sequence[dict[str, Any]],
              state: dict[str, Any], actor: str, recorded_at, after_write: AfterWrite | None,
              queued: Sequence[dict[str, Any]] = ()) -> list[int]: ...


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
_PG_STATE_COLUMNS = ("status, version, csm, account_id, account_name, committed_at, entered_status_at, "
                     "last_activity_at, state, head_hash")
_PG_STATE_VALUES = ("%(status)s, %(version)s, %(csm)s, %(account_id)s, %(account_name)s, %(committed_at)s, "
                    "%(entered_status_at)s, %(last_activity_at)s, %(state)s::json, %(head_hash)s")
# Outbox rows (outbox.py) go in with the events, in the same statement, only if the state row moved.
_PG_QUEUE = (
    "queued AS (INSERT INTO outbox (destination, subscription_id, kind, stream_id, event_id, dedupe_key, payload, "
    "status, attempts, next_attempt_at, created_at) "
    "SELECT o.destination, o.subscription_id, o.kind, claimed.id, o.event_id, o.dedupe_key, o.payload, "
    "'pending', 0, %(recorded_at)s, %(recorded_at)s "
    "FROM claimed CROSS JOIN jsonb_to_recordset(%(queued)s::jsonb) AS o(destination varchar, "
    "subscription_id integer, kind varchar, event_id varchar, dedupe_key varchar, payload json) "
    "ON CONFLICT (dedupe_key) DO NOTHING) ")
# A new stream: the events go in only if this statement created the state row.
_PG_CLAIM_NEW = (f"claimed AS (INSERT INTO case_studies (id, {_PG_STATE_COLUMNS}) VALUES (%(id)s, {_PG_STATE_VALUES}) "
                 f"ON CONFLICT (id) DO NOTHING RETURNING id) ")
# An existing stream: the events go in only if the row was still at the version decided on.
_PG_CLAIM_MOVE = (f"claimed AS (UPDATE case_studies SET ({_PG_STATE_COLUMNS}) = ({_PG_STATE_VALUES}) "
                  f"WHERE id = %(id)s AND version = %(old_version)s RETURNING id) ")
# (new stream?, outbox rows?) -> statement
_PG_WRITE = {(new, queue): f"WITH {_PG_CLAIM_NEW if new else _PG_CLAIM_MOVE}{', ' + _PG_QUEUE if queue else ''}"
                          f"{_PG_EVENTS}"
             for new in (True, False) for queue in (True, False)}


class _PostgresSession:
    def __init__(self, driver: psycopg.Connection, sa_conn: Connection | None, locking: bool):
        self.driver = driver
        self.sa_conn = sa_conn  # set when the session is a transaction handlers may join
        self.locking = locking

    def read_state(self, stream_id: str) -> tuple[dict[str, Any] | None, str | None]:
        row = self.driver.execute(_PG_LOCK_STATE if self.locking else _PG_READ_STATE, (stream_id,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def write(self, stream_id: str, version_before: int, rows: Sequence[dict[str, Any]],
              state: dict[str, Any], actor: str, recorded_at, after_write: AfterWrite | None,
              queued: Sequence[dict[str, Any]] = ()) -> list[int]:
        params = {**state, "id": stream_id, "old_version": version_before, "actor": actor,
                  "recorded_at": recorded_at, "state": state["state_json"],
                  "events": orjson.dumps([{**row, "occurred_at": row["occurred_at"].isoformat()}
                                          for row in rows]).decode()}
        if queued:
            params["queued"] = orjson.dumps(queued).decode()
        try:
            returned = self.driver.execute(_PG_WRITE[version_before == 0, bool(queued)], params).fetchall()
        except psycopg.IntegrityError:
            raise LostRace() from None
        if not returned:
            raise LostRace()
        positions = [position for position, _version in sorted(returned, key=lambda row: row[1])]
        if after_write is not None:
            after_write(self.sa_conn, positions)
        return positions


def _unavailable(error: Exception) -> DatabaseUnavailable:
    return DatabaseUnavailable(str(error).splitlines()[0] if str(error) else "connection lost")


class PostgresWriter:
    def __init__(self, engine: Engine):
        self.engine = engine  # autocommit by default (see db.make_engine)

    @contextmanager
    def optimistic(self, transactional: bool) -> Iterator[_PostgresSession]:
        """No lock, and no transaction unless handlers need one."""
        if transactional:
            with transaction(self.engine) as conn:
                yield _PostgresSession(conn.connection.driver_connection, conn, locking=False)
            return
        pooled = self.engine.raw_connection()
        try:
            yield _PostgresSession(pooled.driver_connection, None, locking=False)
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
                yield _PostgresSession(conn.connection.driver_connection, conn, locking=True)
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
_SQLITE_QUEUE = sqlite_insert(outbox).on_conflict_do_nothing(index_elements=["dedupe_key"])
_SQLITE_READ_STATE = (select(case_studies.c.state, case_studies.c.head_hash)
                      .where(case_studies.c.id == bindparam("p_id")))


class _SqliteSession:
    def __init__(self, engine: Engine, conn: Connection | None):
        self.engine = engine
        self.conn = conn  # None: read outside a transaction, write in a transaction of its own

    def read_state(self, stream_id: str) -> tuple[dict[str, Any] | None, str | None]:
        if self.conn is None:
            with self.engine.connect() as conn:
                row = conn.execute(_SQLITE_READ_STATE, {"p_id": stream_id}).first()
        else:
            row = self.conn.execute(_SQLITE_READ_STATE, {"p_id": stream_id}).first()
        return (row.state, row.head_hash) if row else (None, None)

    def write(self, stream_id: str, version_before: int, rows: Sequence[dict[str, Any]],
              state: dict[str, Any], actor: str, recorded_at, after_write: AfterWrite | None,
              queued: Sequence[dict[str, Any]] = ()) -> list[int]:
        if self.conn is None:
            with transaction(self.engine) as conn:
                return _SqliteSession(self.engine, conn).write(stream_id, version_before, rows, state, actor,
                                                               recorded_at, after_write, queued)
        claim = {"p_id": stream_id, "p_old_version": version_before,
                 **{f"p_{column}": state[column] for column in STATE_COLUMNS}}
        try:
            if version_before == 0:
                self.conn.execute(_SQLITE_CLAIM_NEW, claim)
            elif self.conn.execute(_SQLITE_CLAIM_MOVE, claim).rowcount != 1:
                raise LostRace()
            positions = list(self.conn.execute(_SQLITE_INSERT_EVENTS, [
                {**row, "stream_id": stream_id, "actor": actor, "recorded_at": recorded_at} for row in rows]).scalars())
            if queued:
                self.conn.execute(_SQLITE_QUEUE, [{**row, "stream_id": stream_id, "status": "pending", "attempts": 0,
                                                   "next_attempt_at": recorded_at, "created_at": recorded_at}
                                                  for row in queued])
        except IntegrityError:
            raise LostRace() from None
        if after_write is not None:
            after_write(self.conn, positions)
        return positions


class SqliteWriter:
    def __init__(self, engine: Engine):
        self.engine = engine

    @contextmanager
    def optimistic(self, transactional: bool) -> Iterator[_SqliteSession]:
        """Read outside a transaction; the write takes the write lock (BEGIN IMMEDIATE)."""
        yield _SqliteSession(self.engine, None)

    @contextmanager
    def locked(self) -> Iterator[_SqliteSession]:
        """BEGIN IMMEDIATE: the write lock is held from the read on."""
        with transaction(self.engine) as conn:
            yield _SqliteSession(self.engine, conn)


def writer_for(engine: Engine) -> PostgresWriter | SqliteWriter:
    """The writer for the engine's database."""
    return SqliteWriter(engine) if engine.dialect.name == "sqlite" else PostgresWriter(engine)
