"""PostgreSQL: its engine, and the append's reads and writes in the form this database runs fastest.

The append's write is one statement, so an append costs at most two round trips (read, write)
on one pooled connection with no explicit transaction: a data-modifying CTE moves the state row
from the old version to the new one and inserts the events (and the participant's rows) only
if that row moved. These are the service's hottest statements, so they go straight to psycopg
(SQLAlchemy's execution layer cost about as much CPU as the database); being fixed SQL,
psycopg prepares them once per connection.

A session is one attempt's connection: ``optimistic`` reads without a lock in autocommit,
``locked`` holds the record's row lock from the read to the commit.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.engine import make_url

from service.events.db import transaction
from service.events.errors import LostRace, translated
from service.events.event import Decided
from service.events.tables import STATE_COLUMNS

CONNECT_TIMEOUT = 5  # seconds: a database host that drops packets is "unavailable" well before a worker's timeout


def make_postgres_engine(url: str, *, pool_size: int = 5, statement_timeout: float = 0) -> Engine:
    """An engine in autocommit: most work is one statement (a read, or an append's single write),
    and BEGIN/COMMIT would add two round trips to each. Work that needs a transaction asks for
    one with ``db.transaction``. ``statement_timeout`` (seconds, 0: none) bounds every statement,
    for engines that serve requests."""
    query = make_url(url).query  # an operator's own connect_timeout and options are kept
    connect_args: dict = {"connect_timeout": query.get("connect_timeout", CONNECT_TIMEOUT)}
    if statement_timeout:
        given = query.get("options", "")
        connect_args["options"] = f"{given} -c statement_timeout={round(statement_timeout * 1000)}".strip()
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, isolation_level="AUTOCOMMIT",
                           pool_pre_ping=True, connect_args=connect_args,
                           json_serializer=_orjson_text, json_deserializer=orjson.loads)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # The append path reads jsonb through psycopg directly: parse it with orjson too.
        set_json_loads(orjson.loads, dbapi_connection)  # json and jsonb

    return engine


def _orjson_text(value) -> str:
    return orjson.dumps(value).decode()


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


def _filled_columns(table: Table) -> list[str]:
    """The columns a participant's rows fill: all but an autoincrementing key."""
    return [column.name for column in table.c if not (column.primary_key and column.autoincrement is True)]


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
        with translated():
            pooled = self.engine.raw_connection()
        try:
            yield _PostgresSession(pooled.driver_connection, self.statements, locking=False)
        except psycopg.OperationalError:
            # A lost connection usually means the server restarted: drop this one and every
            # pooled one, so that the next requests do not each find a dead connection. (A
            # statement timeout or a serialization failure leaves the connection sound.)
            if pooled.driver_connection.broken or pooled.driver_connection.closed:
                pooled.invalidate()
                self.engine.dispose()
            raise
        finally:
            pooled.close()

    @contextmanager
    def locked(self) -> Iterator[_PostgresSession]:
        """A transaction holding the record's row lock from the read to the commit."""
        with transaction(self.engine) as conn:
            yield _PostgresSession(conn.connection.driver_connection, self.statements, locking=True)


