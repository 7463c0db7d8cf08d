"""Writing projection rows into a generation: COPY on PostgreSQL (a rebuild writes millions of rows),
inserts on SQLite; a batch replaces the rows of the records it touched."""
from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Connection, delete

from service.projections.projectors import Projector, Rows


def insert_rows(conn: Connection, projector: Projector, generation: int, stream_rows: dict[str, Rows]) -> None:
    """Add each record's rows (by record id) to ``generation`` of the projector's tables."""
    for table in projector.tables:
        rows = [row for rows in stream_rows.values() for row in rows.get(table, ())]
        if not rows:
            continue
        if conn.dialect.name == "postgresql":
            _copy(conn, table, generation, rows)
        else:
            conn.execute(table.insert(), [{**row, "generation": generation} for row in rows])


def _copy(conn: Connection, table, generation: int, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL's COPY, in the connection's transaction: a rebuild writes millions of rows,
    and row-by-row inserts cost more than projecting them."""
    columns = [column.name for column in table.c if column.name != "generation"]
    json_columns = {column.name for column in table.c if isinstance(column.type, JSON)}
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table.name} (generation, {', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([generation, *(Jsonb(row[c]) if c in json_columns else row[c] for c in columns)])


def replace_rows(conn: Connection, projector: Projector, generation: int, stream_rows: dict[str, Rows]) -> None:
    """Put each record's rows in place of the ones ``generation`` holds for it."""
    ids = list(stream_rows)
    for table in projector.tables:
        conn.execute(delete(table).where(table.c.generation == generation, table.c.id.in_(ids)))
    insert_rows(conn, projector, generation, stream_rows)
