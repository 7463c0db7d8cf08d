"""Benchmark (e): batched appends - 10 events per EventStore.append vs one event per call.

Store level (EventStore.append, one client), on PostgreSQL (the target) and on SQLite
(reported). Each side runs in its own fresh database, on its own streams, and appends
round-robin over STREAMS existing streams so that no stream grows huge. Every event carries
its own event_id (uuid4), as a back-fill from a CRM would, on both sides, so both pay the
same idempotency cost (the unique index on event_id). Events alternate metrics_recorded
(overwrites one key) and quote_added (the record keeps its latest 20 quotes), both legal on
any live record, so the state document stays the same size. Alternated single, batch,
single, batch after a warm-up of each. Target (PostgreSQL): batch events/s >= 3x single.

Reference row, "PostgreSQL itself": raw psycopg 3 in autocommit on a fresh database with the
same migrated events table (same columns, unique indexes and tx default), no state row, no
domain: one ``INSERT ... VALUES`` row per statement vs 10 rows in one statement read from
``jsonb_to_recordset`` (the shape the store's write uses), and 10 rows in one multi-row
``INSERT ... VALUES`` (once per round, for comparison). Afterwards every side's stored event
count is checked against what it appended.

A cProfile of a few seconds of batched, then of single appends on PostgreSQL follows (top
functions by own and cumulative time per event; not a timed figure; BENCH_BATCH_PROFILE=0
skips it).

Run alone: ``.venv/bin/python -m bench.batch_append``.
"""
from __future__ import annotations

import cProfile
import json
import pstats
import shutil
import tempfile
import time
from uuid import uuid4

from bench.common import (
    COMMITTED,
    PG_URL,
    QUOTE,
    env_float,
    env_int,
    fresh_db,
    log,
    metrics,
    quiet_service_logging,
    sa_url,
)

TARGET = 3.0


def _payload(n: int) -> tuple[str, dict]:
    """The n-th event: metrics_recorded and quote_added in turn (legal on any live record)."""
    return ("metrics_recorded", metrics(n)) if n % 2 == 0 else ("quote_added", QUOTE)


def _timed(op, seconds: float) -> dict:
    """Call ``op`` until ``seconds`` have passed; op(n) returns the events it appended."""
    calls = events = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        events += op(calls)
        calls += 1
        now = time.perf_counter()
        if now >= end:
            break
    elapsed = now - start
    return {"appends": calls, "events": events, "seconds": elapsed, "events_per_s": events / elapsed,
            "appends_per_s": calls / elapsed, "mean_latency_ms": 1000 * elapsed / calls}


def _alternate(sides: dict, seconds: float, warmup: float, rounds: int, label: str) -> dict[str, list[dict]]:
    """Warm-up of each side, then the sides in turn, ``rounds`` times."""
    for op in sides.values():
        _timed(op, warmup)
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, op in sides.items():
            result = _timed(op, seconds)
            runs[name].append(result)
            log(f"  {label} round {r + 1} {name}: {result['events_per_s']:.0f} events/s "
                f"({result['mean_latency_ms']:.3f} ms/append)")
    return runs


def _total(rs: list[dict]) -> dict:
    events = sum(r["events"] for r in rs)
    calls = sum(r["appends"] for r in rs)
    secs = sum(r["seconds"] for r in rs)
    return {"events_per_s": events / secs, "events": events, "appends": calls,
            "per_round_events_per_s": [round(r["events_per_s"], 1) for r in rs],
            "mean_latency_ms": 1000 * secs / calls}


def _compare(runs: dict[str, list[dict]], a: str, b: str) -> dict:
    """Totals of both sides, b/a over all rounds and per round."""
    ta, tb = _total(runs[a]), _total(runs[b])
    return {a: ta, b: tb, "ratio": tb["events_per_s"] / ta["events_per_s"],
            "per_round_ratio": [round(y["events_per_s"] / x["events_per_s"], 2)
                                for x, y in zip(runs[a], runs[b])]}


# -- the store ---------------------------------------------------------------------------
class Side:
    """One EventStore on its own database, appending ``batch`` events per call over its streams."""

    def __init__(self, url: str, batch: int, streams: int, name: str):
        from service import migrations
        from service.config import Settings
        from service.events.backends import make_engine
        from service.events.event import NewEvent
        from service.events.store import EventStore

        self.NewEvent = NewEvent
        self.batch = batch
        self.engine = make_engine(url)
        migrations.upgrade(self.engine)
        self.store = EventStore(self.engine, cache_size=Settings.from_env().state_cache_size)
        self.streams = [f"{name}-{i}" for i in range(streams)]
        for stream_id in self.streams:
            self.store.append(stream_id, [NewEvent("committed", COMMITTED, event_id=str(uuid4()))],
                              actor="bench-setup")
        self.appended = 0

    def op(self, n: int) -> int:
        base = n * self.batch
        new = [self.NewEvent(*_payload(base + i), event_id=str(uuid4())) for i in range(self.batch)]
        self.store.append(self.streams[n % len(self.streams)], new, actor="bench")
        self.appended += self.batch
        return self.batch

    def stored(self) -> int:
        from sqlalchemy import func, select

        from service.events.tables import events

        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(events)
                                .where(events.c.actor == "bench")).scalar_one()

    def close(self) -> None:
        self.engine.dispose()


def measure_store(urls: dict[str, str], batch: int, streams: int, seconds: float, warmup: float,
                  rounds: int, label: str) -> dict:
    single = Side(urls["single"], 1, streams, "single")
    batched = Side(urls["batch"], batch, streams, "batch")
    runs = _alternate({"single": single.op, "batch": batched.op}, seconds, warmup, rounds, label)
    out = _compare(runs, "single", "batch")
    out["check"] = {name: {"appended": side.appended, "stored": side.stored()}
                    for name, side in (("single", single), ("batch", batched))}
    out["check"]["ok"] = all(c["appended"] == c["stored"] for c in out["check"].values())
    versions = [side.store.record(s).version for side in (single, batched) for s in side.streams]
    out["stream_versions_at_end"] = {"min": min(versions), "max": max(versions)}
    single.close()
    batched.close()
    out["target"] = TARGET
    out["met"] = out["ratio"] >= TARGET
    log(f"  {label}: single {out['single']['events_per_s']:.0f} ev/s, batch {out['batch']['events_per_s']:.0f} "
        f"ev/s, ratio {out['ratio']:.2f}x (per round {out['per_round_ratio']}); "
        f"stored events {'match' if out['check']['ok'] else 'DO NOT MATCH'} the appended ones")
    return out


def profile_appends(url: str, batch: int, streams: int, seconds: float, top: int = 20) -> dict:
    """cProfile of ``seconds`` of appends of ``batch`` events (after a short warm-up); top functions."""
    side = Side(url, batch, streams, "profile")
    _timed(side.op, 0.5)
    profiler = cProfile.Profile()
    profiler.enable()
    result = _timed(side.op, seconds)
    profiler.disable()
    side.close()
    stats = pstats.Stats(profiler)
    total = stats.total_tt

    def rows(key: str) -> list[dict]:
        stats.sort_stats(key)
        out = []
        for func in stats.fcn_list[:top]:
            cc, nc, tt, ct, _callers = stats.stats[func]
            filename, line, name = func
            short = filename.split("/site-packages/")[-1].split("/work/main/")[-1]
            out.append({"function": f"{short}:{line}({name})", "calls_per_event": round(nc / result["events"], 2),
                        "own_us_per_event": round(1e6 * tt / result["events"], 1),
                        "cumulative_us_per_event": round(1e6 * ct / result["events"], 1),
                        "own_pct": round(100 * tt / total, 1)})
        return out

    by_own = rows("tottime")
    log(f"  {batch} event(s) per append: {1e6 * total / result['events']:.0f} us profiled per event; "
        "top own time (us/event): " + ", ".join(f"{r['function'].rsplit('/', 1)[-1]} {r['own_us_per_event']}"
                                                 for r in by_own[:6]))
    return {"events": result["events"], "seconds": result["seconds"],
            "events_per_s_under_profiler": result["events_per_s"],
            "profiled_us_per_event": round(1e6 * total / result["events"], 1),
            "by_own_time": by_own, "by_cumulative_time": rows("cumulative")}


# -- PostgreSQL alone ----------------------------------------------------------------------
_RAW_COLUMNS = ("event_id, stream_id, version, type, data, actor, recorded_at, occurred_at, "
                "request_digest, prev_hash, hash")
_RAW_ROW = "(%s, %s, %s, %s, %s, %s, now(), now(), %s, %s, %s)"
_RAW_RECORDSET = (
    f"INSERT INTO events ({_RAW_COLUMNS}) SELECT v.event_id, v.stream_id, v.version, v.type, v.data, "
    "v.actor, now(), now(), v.request_digest, v.prev_hash, v.hash FROM jsonb_to_recordset(%s::jsonb) AS "
    "v(event_id varchar, stream_id varchar, version integer, type varchar, data jsonb, actor varchar, "
    "request_digest varchar, prev_hash varchar, hash varchar) RETURNING position")


class Raw:
    """psycopg 3, autocommit, inserting ``batch`` event rows per statement into a migrated events table."""

    def __init__(self, dbname: str, streams: int, name: str):
        import psycopg
        from psycopg.types.json import Jsonb

        from service import migrations
        from service.events.backends import make_engine

        self.Jsonb = Jsonb
        engine = make_engine(sa_url(dbname))
        migrations.upgrade(engine)
        engine.dispose()
        self.conn = psycopg.connect(f"{PG_URL}/{dbname}", autocommit=True)
        self.streams = [f"{name}-{i}" for i in range(streams)]
        self.versions = [0] * streams
        self.appended = 0

    def _rows(self, n: int, batch: int) -> tuple[str, list[tuple]]:
        k = n % len(self.streams)
        stream_id, v = self.streams[k], self.versions[k]
        self.versions[k] = v + batch
        rows = []
        for i in range(batch):
            kind, data = _payload(n * batch + i)
            rows.append((str(uuid4()), stream_id, v + i + 1, kind, data, "bench", "0" * 64, "0" * 64, "0" * 64))
        return stream_id, rows

    def single(self, n: int) -> int:
        _, rows = self._rows(n, 1)
        row = rows[0]
        self.conn.execute(f"INSERT INTO events ({_RAW_COLUMNS}) VALUES {_RAW_ROW} RETURNING position",
                          (*row[:4], self.Jsonb(row[4]), *row[5:])).fetchall()
        self.appended += 1
        return 1

    def recordset(self, batch: int):
        import orjson

        keys = ("event_id", "stream_id", "version", "type", "data", "actor", "request_digest", "prev_hash", "hash")

        def op(n: int) -> int:
            _, rows = self._rows(n, batch)
            self.conn.execute(_RAW_RECORDSET, (orjson.dumps([dict(zip(keys, row)) for row in rows]).decode(),)
                              ).fetchall()
            self.appended += batch
            return batch
        return op

    def values(self, batch: int):
        statement = (f"INSERT INTO events ({_RAW_COLUMNS}) VALUES {', '.join([_RAW_ROW] * batch)} "
                     "RETURNING position")

        def op(n: int) -> int:
            _, rows = self._rows(n, batch)
            params = [p for row in rows for p in (*row[:4], self.Jsonb(row[4]), *row[5:])]
            self.conn.execute(statement, params).fetchall()
            self.appended += batch
            return batch
        return op

    def stored(self) -> int:
        return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self.conn.close()


def measure_raw(batch: int, streams: int, seconds: float, warmup: float, rounds: int) -> dict:
    with fresh_db("batch_raw1") as db1, fresh_db("batch_rawn") as dbn, fresh_db("batch_rawv") as dbv:
        one, many, values = Raw(db1, streams, "raw1"), Raw(dbn, streams, "rawn"), Raw(dbv, streams, "rawv")
        sides = {"single": one.single, "batch": many.recordset(batch), "batch_values": values.values(batch)}
        runs = _alternate(sides, seconds, warmup, rounds, "raw psycopg")
        out = _compare(runs, "single", "batch")
        values_total = _total(runs["batch_values"])
        out["batch_multirow_values"] = values_total
        out["ratio_multirow_values"] = values_total["events_per_s"] / out["single"]["events_per_s"]
        out["check"] = {name: {"appended": raw.appended, "stored": raw.stored()}
                        for name, raw in (("single", one), ("batch", many), ("batch_values", values))}
        out["check"]["ok"] = all(c["appended"] == c["stored"] for c in out["check"].values())
        for raw in (one, many, values):
            raw.close()
    log(f"  raw psycopg: single {out['single']['events_per_s']:.0f} ev/s, jsonb_to_recordset "
        f"{out['batch']['events_per_s']:.0f} ev/s ({out['ratio']:.2f}x), multi-row VALUES "
        f"{values_total['events_per_s']:.0f} ev/s ({out['ratio_multirow_values']:.2f}x)")
    return out


def run() -> dict:
    seconds = env_float("BENCH_BATCH_SECONDS", 4)
    warmup = env_float("BENCH_BATCH_WARMUP", 1)
    rounds = env_int("BENCH_BATCH_ROUNDS", 2)
    batch = env_int("BENCH_BATCH_SIZE", 10)
    streams = env_int("BENCH_BATCH_STREAMS", 50)
    profile = env_int("BENCH_BATCH_PROFILE", 1)
    quiet_service_logging()
    results: dict = {"config": {"seconds": seconds, "warmup": warmup, "rounds": rounds, "batch": batch,
                                "streams_per_side": streams}}
    log(f"batch append on PostgreSQL: {batch} events per append vs 1")
    with fresh_db("batch_one") as one_db, fresh_db("batch_many") as many_db:
        results["postgresql"] = measure_store({"single": sa_url(one_db), "batch": sa_url(many_db)},
                                              batch, streams, seconds, warmup, rounds, "postgresql")
    log(f"batch append on SQLite: {batch} events per append vs 1")
    folder = tempfile.mkdtemp(prefix="bench-batch-")
    try:
        results["sqlite"] = measure_store({"single": f"sqlite:///{folder}/single.db",
                                           "batch": f"sqlite:///{folder}/batch.db"},
                                          batch, streams, seconds, warmup, rounds, "sqlite")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    log(f"PostgreSQL itself: raw psycopg, {batch} rows per INSERT vs 1")
    results["raw_psycopg"] = measure_raw(batch, streams, seconds, warmup, rounds)
    if profile:
        results["profile_postgresql"] = {}
        for name, size in (("batch", batch), ("single", 1)):
            log(f"profile of {name} appends on PostgreSQL")
            with fresh_db("batch_prof") as prof_db:
                results["profile_postgresql"][name] = profile_appends(sa_url(prof_db), size, streams,
                                                                     min(seconds, 3))
    results["target"] = TARGET
    results["met"] = results["postgresql"]["met"]
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
