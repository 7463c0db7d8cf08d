"""The last step of an append: write the decided events and the new state row, atomically,
only if the record is still at the version the decision was made on.

PostgreSQL does it in one statement, so an append costs two round trips (read the state,
write) with no explicit transaction: a data-modifying CTE moves the state row from the old
version to the new one and inserts the events only if that row moved. SQLite has no
data-modifying CTEs; it runs the same two writes in one ``BEGIN IMMEDIATE`` transaction,
which costs nothing there since the database is in-process.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from sqlalchemy import Connection, Engine, TextClause, bindparam, insert, text, update
from sqlalchemy.exc import IntegrityError

from service.events.db import transaction
from service.events.tables import case_studies, events

# Runs inside the write's transaction with the positions the events were given.
AfterWrite = Callable[[Connection, list[int]], None]

STATE_COLUMNS = ("status", "version", "csm", "account_id", "account_name", "committed_at",
                 "entered_status_at", "last_activity_at", "state")
EVENT_COLUMNS = ("event_id", "version", "type", "data", "occurred_at", "correlation_id", "causation_id",
                 "request_digest")


class LostRace(Exception):
    """The record moved (or was created) between the read and the write; nothing was written."""


class PostgresWriter:
    """One data-modifying statement per append; a transaction only when handlers must join it."""

    def __init__(self, engine: Engine):
        self.engine = engine  # autocommit by default (see db.make_engine)
        self._statements: dict[tuple[int, bool], TextClause] = {}

    def transaction(self):
        """A transaction for a locked read-decide-write."""
        return transaction(self.engine)

    def write(self, conn: Connection | None, stream_id: str, version_before: int,
              rows: Sequence[dict[str, Any]], state: dict[str, Any], actor: str, recorded_at,
              after_write: AfterWrite | None) -> list[int]:
        params: dict[str, Any] = {"id": stream_id, "old_version": version_before, "actor": actor,
                                  "recorded_at": recorded_at,
                                  **{column: state[column] for column in STATE_COLUMNS}}
        params["state"] = json.dumps(state["state"], separators=(",", ":"))
        for i, row in enumerate(rows):
            for column in EVENT_COLUMNS:
                params[f"{column}_{i}"] = row[column]
            params[f"data_{i}"] = json.dumps(row["data"], separators=(",", ":"))
        statement = self._statement(len(rows), version_before == 0)
        try:
            if conn is not None:
                positions = self._positions(conn.execute(statement, params).all())
                if after_write is not None:
                    after_write(conn, positions)
            elif after_write is None:
                with self.engine.connect() as own:
                    positions = self._positions(own.execute(statement, params).all())
            else:
                with transaction(self.engine) as own:
                    positions = self._positions(own.execute(statement, params).all())
                    after_write(own, positions)
        except IntegrityError:
            raise LostRace() from None
        return positions

    @staticmethod
    def _positions(returned) -> list[int]:
        if not returned:
            raise LostRace()
        return [position for position, _version in sorted(returned, key=lambda row: row[1])]

    def _statement(self, count: int, new_stream: bool) -> TextClause:
        key = (count, new_stream)
        if key not in self._statements:
            self._statements[key] = text(_postgres_sql(count, new_stream))
        return self._statements[key]


def _postgres_sql(count: int, new_stream: bool) -> str:
    if new_stream:
        claim = (
            "INSERT INTO case_studies (id, status, version, csm, account_id, account_name, committed_at, "
            "entered_status_at, last_activity_at, state) VALUES (:id, :status, :version, :csm, :account_id, "
            ":account_name, :committed_at, :entered_status_at, :last_activity_at, CAST(:state AS jsonb)) "
            "ON CONFLICT (id) DO NOTHING RETURNING id")
    else:
        claim = (
            "UPDATE case_studies SET status = :status, version = :version, csm = :csm, "
            "account_id = :account_id, account_name = :account_name, committed_at = :committed_at, "
            "entered_status_at = :entered_status_at, last_activity_at = :last_activity_at, "
            "state = CAST(:state AS jsonb) WHERE id = :id AND version = :old_version RETURNING id")
    values = ", ".join(
        f"(CAST(:event_id_{i} AS varchar), CAST(:version_{i} AS integer), CAST(:type_{i} AS varchar), "
        f"CAST(:data_{i} AS jsonb), CAST(:occurred_at_{i} AS timestamptz), "
        f"CAST(:correlation_id_{i} AS varchar), CAST(:causation_id_{i} AS varchar), "
        f"CAST(:request_digest_{i} AS varchar))"
        for i in range(count))
    return (
        f"WITH claimed AS ({claim}) "
        "INSERT INTO events (event_id, stream_id, version, type, data, actor, recorded_at, occurred_at, "
        "correlation_id, causation_id, request_digest) "
        "SELECT v.event_id, claimed.id, v.version, v.type, v.data, :actor, :recorded_at, v.occurred_at, "
        "v.correlation_id, v.causation_id, v.request_digest "
        f"FROM claimed CROSS JOIN (VALUES {values}) AS v({', '.join(EVENT_COLUMNS)}) "
        "ORDER BY v.version RETURNING position, version")


# Bound parameters may not share a column's name in SQLAlchemy's insert()/update().
_SQLITE_CLAIM_NEW = insert(case_studies).values(
    id=bindparam("p_id"), **{column: bindparam(f"p_{column}") for column in STATE_COLUMNS})
_SQLITE_CLAIM_MOVE = (update(case_studies)
                      .where(case_studies.c.id == bindparam("p_id"),
                             case_studies.c.version == bindparam("p_old_version"))
                      .values(**{column: bindparam(f"p_{column}") for column in STATE_COLUMNS}))
_SQLITE_INSERT_EVENT = insert(events).returning(events.c.position)


class SqliteWriter:
    """The same writes as two statements in one BEGIN IMMEDIATE transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def transaction(self):
        """BEGIN IMMEDIATE: the write lock is held from the read on."""
        return transaction(self.engine)

    def write(self, conn: Connection | None, stream_id: str, version_before: int,
              rows: Sequence[dict[str, Any]], state: dict[str, Any], actor: str, recorded_at,
              after_write: AfterWrite | None) -> list[int]:
        if conn is None:
            with self.transaction() as own:
                return self.write(own, stream_id, version_before, rows, state, actor, recorded_at, after_write)
        claim = {"p_id": stream_id, "p_old_version": version_before,
                 **{f"p_{column}": value for column, value in state.items()}}
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
