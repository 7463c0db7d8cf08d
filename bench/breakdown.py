"""Diagnostic for (a) and (c): where the time of one append request goes, in-process.

Not a target, an explanation. One process, one client, PostgreSQL, Flask's test client (so no
gunicorn and no socket to the client, but the real app and the real database). We send N
quote_added requests round-robin over 200 streams and attribute each request's time, measured
with both the wall clock and this process' CPU clock (``time.process_time``; the PostgreSQL
backend's CPU is not in it), to the steps below by wrapping them for the duration of the run
(nothing in service/ is changed):

  authenticate     KeyStore.authenticate (a good key is remembered for KEY_CACHE_SECONDS)
  append           EventStore.append, of which:
    read state       the SELECT of the record's state row (psycopg, prepared)
    write            the one conditional statement that moves the state row and inserts the
                     event (psycopg, prepared; autocommit, so it includes the commit)
    digest / from_dict / apply / state_row   the request digest, parsing the state row,
                     the state machine, and serialising the record
    other            the rest: pool checkout, building parameters, log line, ...
  rest of request  Flask + werkzeug test client, pydantic validation, request log line, JSON

The store's state cache is off here (STATE_CACHE_SIZE=0), so every append reads the state:
that is what an append costs when another worker wrote the stream last.

Then, for scale, the same with bench/bare_app.py (one INSERT) and one ``SELECT 1`` through
SQLAlchemy on a pooled autocommit connection.

Run alone: ``.venv/bin/python -m bench.breakdown``.
"""
from __future__ import annotations

import collections
import json
import os
import time

from bench.common import COMMITTED, PG_URL, QUOTE, env_int, fresh_db, log, quiet_service_logging, sa_url

STREAMS = 200


class _Probe:
    """Wrap callables to add their wall and CPU time to named buckets; undo on exit."""

    def __init__(self):
        self.wall = collections.Counter()
        self.cpu = collections.Counter()
        self.calls = collections.Counter()
        self.inside: collections.Counter = collections.Counter()  # buckets currently running
        self._undo = []

    def wrap(self, owner, attr: str, bucket, *, classmethod_: bool = False) -> None:
        """``bucket``: a name, or a function of this probe returning one at call time."""
        original = owner.__dict__[attr] if classmethod_ else getattr(owner, attr)
        func = original.__func__ if classmethod_ else original

        def wrapper(*args, **kwargs):
            name = bucket(self) if callable(bucket) else bucket
            self.inside[name] += 1
            c, w = time.process_time(), time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.cpu[name] += time.process_time() - c
                self.wall[name] += time.perf_counter() - w
                self.calls[name] += 1
                self.inside[name] -= 1

        setattr(owner, attr, classmethod(wrapper) if classmethod_ else wrapper)
        self._undo.append((owner, attr, original))

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()
        self.calls.clear()

    def undo(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


def _loop(fn, n: int) -> tuple[float, float]:
    for _ in range(min(100, n)):
        fn()
    c, w = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - w, time.process_time() - c


def run() -> dict:
    n = env_int("BENCH_BREAKDOWN_N", 1000)
    quiet_service_logging()
    import psycopg
    from sqlalchemy import text

    from service import create_app, migrations
    from service.access.keys import KeyStore
    from service.config import Settings
    from service.domain.model import CaseStudy
    from service.events import store as store_module
    from service.events.backends import make_engine
    from service.events.event import NewEvent
    from service.events.postgres import _PostgresSession
    from service.events.store import EventStore

    per_request: dict[str, dict] = {}
    with fresh_db("breakdown") as dbname:
        url = sa_url(dbname)
        engine = make_engine(url)
        migrations.upgrade(engine)
        key = KeyStore(engine).create("bench", "writer")
        store = EventStore(engine)
        for s in range(STREAMS):
            store.append(f"b-{s}", [NewEvent("committed", COMMITTED)], actor="bench")

        app = create_app(Settings.from_env({"DATABASE_URL": url, "LOG_FORMAT": "json", "STATE_CACHE_SIZE": "0"}))
        quiet_service_logging()  # create_app pointed logging at stdout again; send it to /dev/null
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        body = json.dumps({"type": "quote_added", "data": QUOTE}).encode()
        counter = iter(range(10**9))

        def request():
            response = client.post(f"/case-studies/b-{next(counter) % STREAMS}/events", data=body,
                                   headers=headers)
            assert response.status_code == 201, response.get_data(as_text=True)

        probe = _Probe()
        probe.wrap(KeyStore, "authenticate", "authenticate")
        probe.wrap(EventStore, "append", "append")
        probe.wrap(_PostgresSession, "read_state", "read state")
        probe.wrap(_PostgresSession, "write", "write")
        probe.wrap(NewEvent, "digest", "digest")
        probe.wrap(CaseStudy, "from_dict", "from_dict", classmethod_=True)
        probe.wrap(store_module, "apply", "apply")
        probe.wrap(store_module, "state_row", "state_row")
        try:
            for _ in range(100):
                request()
            probe.reset()
            c, w = time.process_time(), time.perf_counter()
            for _ in range(n):
                request()
            wall, cpu = time.perf_counter() - w, time.process_time() - c
        finally:
            probe.undo()

        def bucket(name: str) -> dict:
            return {"wall_us": 1e6 * probe.wall[name] / n, "cpu_us": 1e6 * probe.cpu[name] / n,
                    "calls_per_request": probe.calls[name] / n}

        per_request["request total"] = {"wall_us": 1e6 * wall / n, "cpu_us": 1e6 * cpu / n}
        for name in ("authenticate", "append", "read state", "write", "digest", "from_dict", "apply",
                     "state_row"):
            per_request[name] = bucket(name)
        inner = ("read state", "write", "digest", "from_dict", "apply", "state_row")
        per_request["append other"] = {
            k: per_request["append"][k] - sum(per_request[name][k] for name in inner)
            for k in ("wall_us", "cpu_us")}
        per_request["rest of request"] = {
            k: per_request["request total"][k] - per_request["append"][k] - per_request["authenticate"][k]
            for k in ("wall_us", "cpu_us")}

        # for scale: the bare app's request, and one SELECT 1 through SQLAlchemy
        os.environ["BARE_DATABASE_URL"] = f"{PG_URL}/{dbname}"
        from bench import bare_app
        with psycopg.connect(os.environ["BARE_DATABASE_URL"], autocommit=True) as conn:
            conn.execute(bare_app.TABLE_SQL)
        bare_client = bare_app.app.test_client()

        def bare_request():
            response = bare_client.post(f"/case-studies/b-{next(counter) % STREAMS}/events",
                                        data=body, headers=headers)
            assert response.status_code == 201

        wall, cpu = _loop(bare_request, n)
        per_request["bare app request total"] = {"wall_us": 1e6 * wall / n, "cpu_us": 1e6 * cpu / n}

        def select_one():
            with engine.connect() as conn:
                conn.execute(text("select 1")).scalar_one()

        wall, cpu = _loop(select_one, n)
        per_request["SQLAlchemy SELECT 1"] = {"wall_us": 1e6 * wall / n, "cpu_us": 1e6 * cpu / n}
        if bare_app._conn is not None:
            bare_app._conn.close()
        app.extensions["casestudies"].engine.dispose()
        engine.dispose()

    labels = {
        "request total": "our request, total",
        "authenticate": "  authenticate (key remembered after the first request)",
        "append": "  append",
        "read state": "    read the state row (SELECT, psycopg)",
        "write": "    write: one conditional statement (psycopg, autocommit)",
        "digest": "    NewEvent.digest",
        "from_dict": "    CaseStudy.from_dict (state row -> record)",
        "apply": "    apply (state machine + evolve)",
        "state_row": "    state_row (record -> columns + JSON)",
        "append other": "    other (pool checkout, parameters, log line)",
        "rest of request": "  rest (Flask, test client, validation, request log)",
        "bare app request total": "bare app request, total (one INSERT)",
        "SQLAlchemy SELECT 1": "SQLAlchemy SELECT 1 (pooled autocommit connection)",
    }
    for name, label in labels.items():
        r = per_request[name]
        log(f"  {label:60s} wall {r['wall_us']:6.0f} us  cpu {r['cpu_us']:6.0f} us")
    return {"n": n, "labels": labels, "per_request_us": {name: per_request[name] for name in labels}}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
