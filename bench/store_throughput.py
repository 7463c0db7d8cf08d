"""Benchmark (c): store-level append throughput on PostgreSQL.

c1  One client: our EventStore.append (one metrics_recorded event per call, on one existing
    stream) vs the ``eventsourcing`` library's PostgreSQL application recorder (an Application
    with PERSISTENCE_MODULE=eventsourcing.postgres saving one new event per call on one existing
    aggregate held in memory). Alternated (ours, theirs, ours, theirs) after a warm-up of each;
    each side in its own fresh database. Target: ours >= 2x theirs.

    Two reference rows, not part of the target, to explain the numbers:
      eventsourcing get+save  repository.get + one event + save per call, round-robin over 100
                              aggregates (the read-decide-write cycle, like our append does)
      raw psycopg floor       our append's SQL shape (BEGIN; SELECT state; INSERT event; UPDATE
                              state; COMMIT) written by hand with psycopg, no SQLAlchemy/domain

c2  Concurrency: 16 writer threads, each on its own stream, sharing one engine with
    pool_size=16, vs one writer thread on the same engine. Alternated 1, 16, 1, 16.
    Target: 16 >= 2x one. Reference row: 16 writer *processes* (each its own engine), which
    removes the GIL from the picture.

Run alone: ``.venv/bin/python -m bench.store_throughput``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from uuid import uuid4

from bench.common import (
    COMMITTED,
    PG_URL,
    CpuMeter,
    env_float,
    env_int,
    fresh_db,
    log,
    metrics,
    pg_parts,
    quiet_service_logging,
    sa_url,
)


def _timed(op, seconds: float) -> dict:
    """Call ``op`` until ``seconds`` have passed; events/s and mean latency."""
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        op(n)
        n += 1
        now = time.perf_counter()
        if now >= end:
            break
    elapsed = now - start
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed,
            "mean_latency_ms": 1000 * elapsed / n}


# -- ours --------------------------------------------------------------------------------
class Ours:
    def __init__(self, dbname: str, pool_size: int = 5):
        from service import migrations
        from service.config import Settings
        from service.events.backends import make_engine
        from service.events.event import NewEvent
        from service.events.store import EventStore

        self.NewEvent = NewEvent
        self.engine = make_engine(sa_url(dbname), pool_size=pool_size)
        migrations.upgrade(self.engine)
        self.store = EventStore(self.engine, cache_size=Settings.from_env().state_cache_size)

    def create(self, stream_id: str) -> None:
        self.store.append(stream_id, [self.NewEvent("committed", COMMITTED)], actor="bench")

    def append(self, stream_id: str, n: int) -> None:
        self.store.append(stream_id, [self.NewEvent("metrics_recorded", metrics(n))], actor="bench")

    def close(self) -> None:
        self.engine.dispose()


# -- eventsourcing -----------------------------------------------------------------------
def _es_app(dbname: str):
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class CaseStudy(Aggregate):
        @event("Committed")
        def __init__(self, data: dict):
            self.data = data
            self.metrics: dict = {}

        @event("MetricsRecorded")
        def record_metrics(self, kind: str, metrics: dict):
            self.metrics.update(metrics)

    parts = pg_parts()
    app = Application(env={
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": parts["host"],
        "POSTGRES_PORT": parts["port"],
        "POSTGRES_USER": parts["user"],
        "POSTGRES_PASSWORD": parts["password"],
    })
    return app, CaseStudy


def single_client(seconds: float, warmup: float, rounds: int) -> dict:
    with fresh_db("store_ours") as ours_db, fresh_db("store_es") as es_db, \
            fresh_db("store_raw") as raw_db:
        ours = Ours(ours_db)
        ours.create("single")
        app, EsCaseStudy = _es_app(es_db)
        aggregate = EsCaseStudy(COMMITTED)
        app.save(aggregate)

        def ours_op(n: int) -> None:
            ours.append("single", n)

        def es_op(n: int) -> None:
            aggregate.record_metrics(**metrics(n))
            app.save(aggregate)

        _timed(ours_op, warmup)
        _timed(es_op, warmup)
        runs: dict[str, list[dict]] = {"ours": [], "eventsourcing": []}
        for r in range(rounds):
            for name, op in (("ours", ours_op), ("eventsourcing", es_op)):
                result = _timed(op, seconds)
                runs[name].append(result)
                log(f"  single client round {r + 1} {name}: {result['events_per_s']:.0f} events/s "
                    f"({result['mean_latency_ms']:.3f} ms/append)")

        # reference: eventsourcing's read-decide-write cycle over 100 aggregates
        ids = []
        for _ in range(100):
            other = EsCaseStudy(COMMITTED)
            app.save(other)
            ids.append(other.id)

        def es_cycle(n: int) -> None:
            agg = app.repository.get(ids[n % len(ids)])
            agg.record_metrics(**metrics(n))
            app.save(agg)

        _timed(es_cycle, min(warmup, 1.0))
        cycle = _timed(es_cycle, seconds)
        log(f"  single client eventsourcing get+save: {cycle['events_per_s']:.0f} events/s")
        raw = _raw_floor(raw_db, seconds, warmup)
        log(f"  single client raw psycopg floor: {raw['events_per_s']:.0f} events/s")

        ours.close()
        app.close()

    def total(rs):
        events = sum(r["events"] for r in rs)
        secs = sum(r["seconds"] for r in rs)
        return {"events_per_s": events / secs, "events": events,
                "per_round_events_per_s": [round(r["events_per_s"], 1) for r in rs],
                "mean_latency_ms": 1000 * secs / events}

    o, e = total(runs["ours"]), total(runs["eventsourcing"])
    ratio = o["events_per_s"] / e["events_per_s"]
    return {"ours": o, "eventsourcing": e, "ratio": ratio, "target": 2.0, "met": ratio >= 2.0,
            "reference": {"eventsourcing_get_save_100_aggregates": cycle, "raw_psycopg_floor": raw}}


def _raw_floor(dbname: str, seconds: float, warmup: float) -> dict:
    """Our append's statements by hand: 5 round trips, state as jsonb, no ORM or domain."""
    import psycopg
    from psycopg.types.json import Jsonb

    from service import migrations
    from service.events.backends import make_engine

    engine = make_engine(sa_url(dbname))
    migrations.upgrade(engine)
    engine.dispose()
    conn = psycopg.connect(f"{PG_URL}/{dbname}")
    state = {"id": "raw", "state": "not_started", "version": 1, "metrics": {"current": {}}}
    with conn.transaction():
        conn.execute("insert into case_studies (id, status, version, state, head_hash) "
                     "values ('raw', 'not_started', 1, %s, %s)", (Jsonb(state), "0" * 64))

    def op(n: int) -> None:
        with conn.transaction():
            row = conn.execute("select state from case_studies where id = %s", ("raw",)).fetchone()
            doc = row[0]
            version = doc["version"] + 1
            doc["version"] = version
            doc["metrics"]["current"]["m"] = n
            now = time.time()
            conn.execute(
                "insert into events (event_id, stream_id, version, type, data, actor, recorded_at, "
                "occurred_at, request_digest, prev_hash, hash) values (%s, %s, %s, %s, %s, %s, "
                "to_timestamp(%s), to_timestamp(%s), %s, %s, %s) returning position",
                (str(uuid4()), "raw", version, "metrics_recorded", Jsonb(metrics(n)), "bench", now, now,
                 "0" * 64, "0" * 64, "0" * 64)).fetchone()[0]
            conn.execute("update case_studies set version = %s, state = %s "
                         "where id = %s and version = %s", (version, Jsonb(doc), "raw", version - 1))

    _timed(op, min(warmup, 1.0))
    result = _timed(op, seconds)
    conn.close()
    return result


# -- concurrency -------------------------------------------------------------------------
def _run_threads(ours: Ours, writers: int, seconds: float) -> dict:
    counts = [0] * writers
    barrier = threading.Barrier(writers + 1)
    end_box: list[float] = []

    def worker(i: int) -> None:
        stream_id = f"w-{i}"
        barrier.wait()
        end = end_box[0]
        n = 0
        while time.perf_counter() < end:
            ours.append(stream_id, n)
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    end_box.append(start + seconds)
    with CpuMeter(None, []) as meter:
        barrier.wait()
        for t in threads:
            t.join()
    elapsed = time.perf_counter() - start
    total = sum(counts)
    return {"writers": writers, "events": total, "seconds": elapsed, "events_per_s": total / elapsed,
            "mean_latency_ms": 1000 * elapsed * writers / max(total, 1),
            "machine_busy_pct": 100 * meter.cpu["machine_busy"] / (meter.seconds * (mp.cpu_count() or 1))}


def _process_writer(dbname: str, i: int, barrier, seconds: float, queue) -> None:
    quiet_service_logging()
    ours = Ours.__new__(Ours)
    from service.config import Settings
    from service.events.backends import make_engine
    from service.events.event import NewEvent
    from service.events.store import EventStore

    ours.NewEvent = NewEvent
    ours.engine = make_engine(sa_url(dbname), pool_size=1)
    ours.store = EventStore(ours.engine, cache_size=Settings.from_env().state_cache_size)
    ours.append(f"w-{i}", -1)  # connect before the clock starts
    barrier.wait()
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        ours.append(f"w-{i}", n)
        n += 1
    ours.close()
    queue.put(n)


def _run_processes(dbname: str, writers: int, seconds: float) -> dict:
    # fork: the children already have the modules imported; each makes its own engine
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(writers + 1)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_writer, args=(dbname, i, barrier, seconds, queue))
             for i in range(writers)]
    for p in procs:
        p.start()
    with CpuMeter(None, []) as meter:
        barrier.wait()  # every child is connected; all start their clocks now
        counts = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    elapsed = seconds
    total = sum(counts)
    return {"writers": writers, "events": total, "seconds": elapsed, "events_per_s": total / elapsed,
            "mean_latency_ms": 1000 * elapsed * writers / max(total, 1),
            "machine_busy_pct": 100 * meter.cpu["machine_busy"] / (meter.seconds * (mp.cpu_count() or 1))}


def concurrency(seconds: float, warmup: float, rounds: int, writers: int) -> dict:
    with fresh_db("store_conc") as dbname:
        ours = Ours(dbname, pool_size=max(16, writers))
        for i in range(writers):
            ours.create(f"w-{i}")
        _run_threads(ours, 1, warmup)
        _run_threads(ours, writers, warmup)
        runs: dict[int, list[dict]] = {1: [], writers: []}
        for r in range(rounds):
            for w in (1, writers):
                result = _run_threads(ours, w, seconds)
                runs[w].append(result)
                log(f"  {w:2d} writer thread(s) round {r + 1}: {result['events_per_s']:.0f} events/s "
                    f"(machine {result['machine_busy_pct']:.0f}% busy)")
        ours.close()
        procs = _run_processes(dbname, writers, seconds)
        log(f"  {writers} writer processes (reference): {procs['events_per_s']:.0f} events/s "
            f"(machine {procs['machine_busy_pct']:.0f}% busy)")

    def total(rs):
        events = sum(r["events"] for r in rs)
        secs = sum(r["seconds"] for r in rs)
        return {"events_per_s": events / secs, "events": events,
                "per_round_events_per_s": [round(r["events_per_s"], 1) for r in rs],
                "machine_busy_pct": sum(r["machine_busy_pct"] for r in rs) / len(rs)}

    one, many = total(runs[1]), total(runs[writers])
    ratio = many["events_per_s"] / one["events_per_s"]
    return {"writers": writers, "one": one, "many": many, "ratio": ratio, "target": 2.0,
            "met": ratio >= 2.0, "reference": {"processes": procs,
                                               "processes_ratio": procs["events_per_s"] / one["events_per_s"]}}


def run() -> dict:
    seconds = env_float("BENCH_STORE_SECONDS", 4)
    warmup = env_float("BENCH_STORE_WARMUP", 1)
    rounds = env_int("BENCH_STORE_ROUNDS", 2)
    writers = env_int("BENCH_STORE_WRITERS", 16)
    quiet_service_logging()
    log("store throughput: one client, ours vs eventsourcing")
    single = single_client(seconds, warmup, rounds)
    log(f"store throughput: {writers} writer threads vs one")
    conc = concurrency(seconds, warmup, rounds, writers)
    return {"config": {"seconds": seconds, "warmup": warmup, "rounds": rounds},
            "single_client": single, "concurrency": conc}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
