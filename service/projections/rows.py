"""Writing what a pass projected: row versions, and what the projections hold for each record.

A rebuild writes into an empty generation, so it only adds rows. A live batch first ends the
versions its changes replace (``valid_to`` = the recorded time of the first change; a version that
would end where it began was never visible, and is deleted), then adds the new ones, all in the
batch's transaction. Each step is one statement per table whatever the batch's size: on
PostgreSQL a join against the batch's keys sent as one JSON document, and COPY for new rows; on
SQLite, which runs in-process, the driver's own executemany.
"""
from __future__ import annotations

from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Iterable, Sequence

import orjson
from sqlalchemy import JSON, Boolean, Connection, DateTime, Integer, Table, select
from sqlalchemy.types import TypeDecorator

from service.projections.projectors import Changes, stored
from service.projections.tables import record_states


def key_columns(table: Table) -> list[str]:
    """A projection table's key: its primary key but the generation and the version's start."""
    return [str(c.name) for c in table.primary_key.columns if c.name not in ("generation", "valid_from")]


class Layout:
    """A table's columns but the generation, in table order (key, then the version's times, then the
    values, for a versioned table), and how each is written."""

    def __init__(self, table: Table):
        self.table = table
        self.keys = key_columns(table)
        self.columns = [str(column.name) for column in table.c if column.name != "generation"]
        self.values = [name for name in self.columns if name not in (*self.keys, "valid_from", "valid_to")]
        self.kinds = [_kind(table.c[name]) for name in self.columns]
        self._values = itemgetter(*self.values) if len(self.values) > 1 else (lambda row: (row[self.values[0]],))

    def version_rows(self, changes: Changes) -> list[tuple]:
        """Every version ``changes`` make in this table, as tuples in column order."""
        values = self._values
        return [(*key, valid_from, valid_to, *values(row))
                for key, _first, versions in changes.versions(self.table) for valid_from, valid_to, row in versions]


_LAYOUTS: dict[Table, Layout] = {}


def layout(table: Table) -> Layout:
    found = _LAYOUTS.get(table)
    if found is None:
        found = _LAYOUTS[table] = Layout(table)
    return found


def new_rows(changes: Changes, table: Table) -> list[dict[str, Any]]:
    """Every version ``changes`` make in ``table``, as rows by column name."""
    columns = layout(table).columns
    return [dict(zip(columns, row)) for row in layout(table).version_rows(changes)]


def add_rows(conn: Connection, table: Table, generation: int, rows: list[tuple]) -> None:
    """Add rows (tuples in the order of ``layout(table).columns``) to ``generation`` of ``table``."""
    if not rows:
        return
    shape = layout(table)
    names = ", ".join(shape.columns)
    if conn.dialect.name == "postgresql":
        as_json = [index for index, kind in enumerate(shape.kinds) if kind == "json"]
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table.name} (generation, {names}) FROM STDIN") as copy:
            write = copy.write_row
            if not as_json:
                for row in rows:
                    write((generation, *row))
            else:
                for row in rows:
                    row = list(row)
                    for index in as_json:
                        row[index] = _json_text(row[index])
                    write((generation, *row))
        return
    converted = [(index, _SQLITE[kind]) for index, kind in enumerate(shape.kinds) if kind in _SQLITE]

    def to_sqlite(row: tuple) -> list:
        row = [generation, *row]
        for index, convert in converted:
            row[index + 1] = convert(row[index + 1])
        return row

    conn.connection.driver_connection.executemany(
        f"INSERT INTO {table.name} (generation, {names}) VALUES (?{', ?' * len(shape.columns)})",
        [to_sqlite(row) for row in rows])


def apply_changes(conn: Connection, table: Table, generation: int, changes: Changes) -> None:
    """Write a live batch's changes to ``table``: end the versions they replace, then add the new ones."""
    names = key_columns(table)
    ends = [(key, first) for key, first, _rows in changes.versions(table)]
    if not ends:
        return
    ids = sorted({key[0] for key, _ in ends})
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        types = ", ".join(f"{name} {_PG_TYPES[_kind(table.c[name])]}" for name in names)
        driver.execute(
            f"UPDATE {table.name} AS t SET valid_to = v.valid_to "
            f"FROM jsonb_to_recordset(%s::jsonb) AS v({types}, valid_to timestamptz) "
            f"WHERE t.generation = %s AND {' AND '.join(f't.{n} = v.{n}' for n in names)} AND t.valid_to IS NULL",
            (_json([{**dict(zip(names, key)), "valid_to": first} for key, first in ends]), generation))
        driver.execute(f"DELETE FROM {table.name} WHERE generation = %s AND id = ANY(%s) AND valid_from = valid_to",
                       (generation, ids))
    else:
        # "(valid_to IS NULL) = 1": the key finds the row; written plainly, SQLite (which keeps no
        # statistics here) may pick a partial "now" index instead and scan every open row.
        driver.executemany(
            f"UPDATE {table.name} SET valid_to = ? WHERE generation = ? AND "
            f"{' AND '.join(f'{n} = ?' for n in names)} AND (valid_to IS NULL) = 1",
            [(_sqlite_time(first), generation, *key) for key, first in ends])
        driver.executemany(f"DELETE FROM {table.name} WHERE generation = ? AND id = ? AND valid_from = valid_to",
                           [(generation, stream_id) for stream_id in ids])
    add_rows(conn, table, generation, layout(table).version_rows(changes))


def load_states(conn: Connection, generation: int, stream_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What the projections hold for each of these records (those they have seen)."""
    query = (select(record_states.c.id, record_states.c.state)
             .where(record_states.c.generation == generation, record_states.c.id.in_(list(stream_ids))))
    return {row.id: row.state for row in conn.execute(query)}


def state_json(held: dict[str, Any]) -> str:
    """What the projections hold for a record (``fold``'s result), as it is written."""
    return _json(stored(held))


def save_states(conn: Connection, generation: int, states: Iterable[tuple[str, int, str]]) -> None:
    """Keep what the projections hold for each record, (id, version, ``state_json``), added or replaced."""
    states = list(states)
    if not states:
        return
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        document = "[" + ",".join(f'{{"id":{_json(i)},"version":{v},"state":{s}}}' for i, v, s in states) + "]"
        driver.execute(
            "INSERT INTO proj_record_states (generation, id, version, state) "
            "SELECT %s, s.id, s.version, s.state FROM jsonb_to_recordset(%s::jsonb) AS s(id text, version int, state jsonb) "
            "ON CONFLICT (generation, id) DO UPDATE SET version = excluded.version, state = excluded.state",
            (generation, document))
    else:
        driver.executemany(
            "INSERT INTO proj_record_states (generation, id, version, state) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (generation, id) DO UPDATE SET version = excluded.version, state = excluded.state",
            [(generation, i, v, s) for i, v, s in states])


def add_states(conn: Connection, generation: int, states: Iterable[tuple[str, int, str]]) -> None:
    """Add what the projections hold for records new to ``generation`` (a rebuild's), (id, version,
    ``state_json``)."""
    add_rows(conn, record_states, generation, list(states))


def _kind(column) -> str:
    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, DateTime):
        return "time"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, Integer):
        return "int"
    return "other"


def _json(value: Any) -> str:
    """JSON as the projections write it: keys sorted, so that equal documents are equal text."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _sqlite_time(value: datetime | None) -> str | None:
    """A time as the UTCDateTime column keeps it on SQLite: naive UTC text that sorts."""
    return None if value is None else value.astimezone(UTC).isoformat(" ", "microseconds")[:26]


_PG_TYPES = {"int": "integer", "other": "text", "time": "timestamptz", "bool": "boolean", "json": "jsonb"}
def _json_text(value: Any) -> str:
    """A JSON column's value as text: as it is if it is JSON text already (``state_json``)."""
    return value if isinstance(value, str) else _json(value)


_SQLITE = {"json": _json_text, "time": _sqlite_time, "bool": lambda value: None if value is None else int(value)}
