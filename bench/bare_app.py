"""The baseline for benchmark (a): a bare Flask endpoint doing one psycopg INSERT per request.

Same route shape as the service's append endpoint and served the same way (gunicorn, sync
workers, through ``service.wsgi.serve`` itself), but nothing else: no auth, no
validation, no domain decision, no state row, no logging. Each worker keeps one autocommit
psycopg connection, opened lazily after the fork.

    BARE_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_bare \
        python -m bench.bare_app --port 8101 --workers 2          # creates its table if missing
"""
from __future__ import annotations

import argparse
import os

import psycopg
from flask import Flask, request

from service.wsgi import serve

TABLE_SQL = """
CREATE TABLE IF NOT EXISTS bare_events (
    position bigserial PRIMARY KEY,
    stream_id varchar(128) NOT NULL,
    data jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)"""
INSERT_SQL = "INSERT INTO bare_events (stream_id, data) VALUES (%s, %s::jsonb) RETURNING position"

app = Flask(__name__)
_conn: psycopg.Connection | None = None


def _connection() -> psycopg.Connection:
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["BARE_DATABASE_URL"], autocommit=True)
    return _conn


@app.post("/case-studies/<stream_id>/events")
def post_event(stream_id: str):
    body = request.get_data(cache=False).decode()
    position = _connection().execute(INSERT_SQL, (stream_id, body)).fetchone()[0]
    return {"id": stream_id, "position": position}, 201


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with psycopg.connect(os.environ["BARE_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(TABLE_SQL)
    # Served by the service's own gunicorn set-up, so only the app differs.
    serve(args.host, args.port, args.workers, load=lambda: app)


if __name__ == "__main__":
    main()
