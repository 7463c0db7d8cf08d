"""Benchmark (d): projections at scale - rebuild rate and memory, and the reporting endpoints.

d1  Rebuild: ``Rebuilder.rebuild()`` (every projector, one pass over the whole store) of ~
    1,000,000 events (100,000 case studies) on PostgreSQL and on SQLite, each run in a fresh
    subprocess that reports its events/s and its peak RSS (``ru_maxrss``). In the same run the
    *raw read* of the events table: the rebuild's own streaming query (same condition, same
    order, ``stream_results`` with ``yield_per=2000``, one StoredEvent per row) projecting
    nothing - the ceiling a rebuild cannot beat. The rebuild's memory should not grow with the
    store: the same rebuild of 100,000 events (the first 10,000 case studies) gives a second
    peak, and a subprocess that only imports and connects gives the baseline.

d2  Endpoints: GET /projections/stuck and GET /projections/pipeline at 100,000 records over
    real HTTP against the served app (``casestudies serve --workers 2 --no-projectors``) on the
    rebuilt PostgreSQL database (and SQLite): sequential requests from one client after a
    warm-up; p50/p99 latency.

The data: 100,000 legal streams (~10 events each, final statuses mixed as a real pipeline's,
business times over the past 12 months), decided through the domain's state machine, hashed
and chained as the store does, and bulk-loaded in time order (COPY on PostgreSQL, one
executemany transaction on SQLite) with each record's state row.

Run alone: ``.venv/bin/python -m bench.projections``.
"""
from __future__ import annotations

import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PG_URL,
    RESULTS,
    ROOT,
    env_int,
    fresh_db,
    log,
    median,
    pct,
    quiet_service_logging,
    sa_url,
)
from bench.dataset import (  # noqa: F401 (the data and loaders, shared with the tests)
    load_postgres,
    load_sqlite,
    make_dataset,
)


# -- the measured processes ----------------------------------------------------------------
def _child(kind: str, url: str) -> dict:
    """Runs in a fresh interpreter: connect, do ``kind``, report time and peak RSS."""
    quiet_service_logging()
    from sqlalchemy import select, text

    from service.bootstrap import build
    from service.config import Settings
    from service.events.db import transaction
    from service.events.event import EVENT_COLUMNS, stored_event
    from service.events.tables import events

    services = build(Settings(database_url=url))
    with services.engine.connect() as conn:
        conn.execute(text("select 1"))
    out: dict[str, Any] = {"kind": kind}
    done = [0]
    next_log = [200_000]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] >= next_log[0]:
            log(f"    {kind}: {done[0]:,} events")
            next_log[0] += 200_000

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    if kind == "raw":
        # the rebuild's own query and cursor, projecting nothing
        with transaction(services.engine, isolation="REPEATABLE READ", write=False) as reader:
            query = (select(*EVENT_COLUMNS).where(services.feed.readable())
                     .order_by(events.c.stream_id, events.c.version))
            result = reader.execution_options(stream_results=True, yield_per=2000).execute(query)
            count = 0
            for row in result:
                stored_event(row)
                count += 1
        done[0] = count
    elif kind == "rebuild":
        mark = services.runner.rebuilder.rebuild(progress=progress)
        out["mark_position"] = mark.position
    elif kind == "profile":
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        services.runner.rebuilder.rebuild(progress=progress)
        profiler.disable()
        out["seconds"] = time.perf_counter() - t0
        stats = pstats.Stats(profiler)
        rows = []
        for (filename, line, name), (cc, nc, tt, ct, _callers) in stats.stats.items():
            where = filename.replace(str(ROOT) + "/", "")
            where = where.split("site-packages/")[-1]
            rows.append({"function": f"{where}:{line}({name})", "calls": nc, "tottime_s": round(tt, 3),
                         "cumtime_s": round(ct, 3)})
        out["top_cumulative"] = sorted(rows, key=lambda r: -r["cumtime_s"])[:40]
        out["top_tottime"] = sorted(rows, key=lambda r: -r["tottime_s"])[:25]
    elif kind != "baseline":
        raise SystemExit(f"unknown child kind {kind}")
    seconds = time.perf_counter() - t0
    out.setdefault("seconds", seconds)
    out["events"] = done[0]
    if kind in ("raw", "rebuild"):
        out["events_per_s"] = done[0] / seconds
    if kind in ("rebuild", "profile"):
        out["projection_rows"] = _projection_rows(services)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime - cpu0
    out.update(peak_memory())
    services.engine.dispose()
    return out


def peak_memory() -> dict[str, float]:
    """This process' peak RSS in MiB: ``ru_maxrss``, and the kernel's VmHWM to check it.

    Linux keeps ``ru_maxrss`` across exec: a child forked from a process that was bigger reports
    the parent's peak. VmHWM belongs to the process' own address space only. The two agree
    when the parent is the smaller (see ``run``: the parent never holds the data).
    """
    out = {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["vmhwm_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _projection_rows(services) -> dict[str, int]:
    from sqlalchemy import func, select

    from service.events.db import transaction

    counts = {}
    with transaction(services.engine, write=False) as conn:
        for projector in services.runner.projectors.values():
            generation = services.runner.checkpoints.get(conn, projector.name).generation
            for table in projector.tables:
                counts[table.name] = conn.execute(select(func.count()).select_from(table)
                                                  .where(table.c.generation == generation)).scalar_one()
    return counts


def _cpu_ticks() -> tuple[int, int, int, int]:
    """(busy, steal, iowait, total) ticks of the whole machine from /proc/stat; busy includes steal."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, values[7], values[4], sum(values)


class MachineMeter:
    """How busy the whole machine was during a window, and how much CPU the hypervisor took
    (steal): on a shared VM, steal slows every figure down without showing in our processes."""

    def __enter__(self) -> "MachineMeter":
        self._start = _cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        busy, steal, iowait, total = (b - a for a, b in zip(self._start, _cpu_ticks()))
        self.result = {"busy_pct": round(100 * busy / max(total, 1), 1),
                       "steal_pct": round(100 * steal / max(total, 1), 1),
                       "iowait_pct": round(100 * iowait / max(total, 1), 1)}


def prewarm(url: str) -> float:
    """Read the database's files into the OS page cache, so that no measurement starts cold.

    The data set is written minutes before it is read, and on our VM the page cache does not
    keep it that long (the first SQLite read ran at a quarter of the speed of the second, the
    machine waiting on the disk). PostgreSQL: ``pg_prewarm(..., 'read')`` of every table and
    index; SQLite: the file read through. Returns the seconds it took (not part of any figure).
    """
    t0 = time.perf_counter()
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal"):
            path = url.removeprefix("sqlite:///") + suffix
            if os.path.exists(path):
                with open(path, "rb") as f:
                    while f.read(1 << 20):
                        pass
    else:
        import psycopg

        dbname = url.rsplit("/", 1)[1]
        with psycopg.connect(f"{PG_URL}/{dbname}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            conn.execute("SELECT sum(pg_prewarm(c.oid::regclass, 'read')) FROM pg_class c "
                         "JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 't')")
    return time.perf_counter() - t0


def in_subprocess(*args: str) -> dict:
    """Run ``python -m bench.projections ARGS`` in a fresh interpreter and return its report,
    with how busy the machine was meanwhile. A measuring child's database is prewarmed first."""
    warm = prewarm(args[2]) if args[0] == "--child" else None
    with MachineMeter() as meter:
        out = subprocess.run([sys.executable, "-m", "bench.projections", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    report = json.loads(line.removeprefix("BENCH_JSON "))
    report["machine"] = meter.result
    if warm is not None:
        report["prewarm_s"] = round(warm, 2)
    return report


def _load_all(records: int, small: int, seed: int, pg_big: str, pg_small: str, sqlite_big: str,
              sqlite_small: str) -> dict:
    """Runs in a subprocess (the data set is big; the parent stays small): generate and load."""
    quiet_service_logging()
    t0 = time.perf_counter()
    events, states, info = make_dataset(records, seed)
    info["generate_s"] = time.perf_counter() - t0
    small_id = stream_id_of(small)
    small_events = [row for row in events if row[1] < small_id]
    small_states = [row for row in states if row[0] < small_id]
    info["small"] = {"records": len(small_states), "events": len(small_events)}
    log(f"  {info['events']:,} events in {records:,} case studies generated in {info['generate_s']:.0f} s; loading")
    info["load_s"] = {}
    for name, loader, target, rows in (
            ("postgresql", load_postgres, pg_big, (events, states)),
            ("postgresql_small", load_postgres, pg_small, (small_events, small_states)),
            ("sqlite", load_sqlite, sqlite_big, (events, states)),
            ("sqlite_small", load_sqlite, sqlite_small, (small_events, small_states))):
        info["load_s"][name] = loader(target, *rows)
        log(f"  loaded {len(rows[0]):,} events into {name} in {info['load_s'][name]:.1f} s")
    return info


# -- the endpoints over HTTP -----------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(conn: http.client.HTTPConnection, path: str, key: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read()
    if response.getheader("Connection", "").lower() == "close":
        conn.close()  # gunicorn's sync workers close after each response; the next request reconnects
    return response.status, body


def _analyze_projections(dbname: str) -> None:
    """What autovacuum's analyze would do soon after a rebuild (if it is on): give the planner
    statistics for the freshly written projection tables."""
    import psycopg

    with psycopg.connect(f"{PG_URL}/{dbname}", autocommit=True) as conn:
        for table in ("proj_pipeline_records", "proj_status_history", "proj_blockers", "proj_cycle_stages",
                      "proj_approver_times", "proj_candidates", "projection_checkpoints"):
            conn.execute(f"ANALYZE {table}")


def pg_setting(name: str) -> str:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        return conn.execute(f"SHOW {name}").fetchone()[0]


def endpoint_latency(url: str, label: str, requests: int, warmup: int, cap_seconds: float,
                     pg_dbname: str | None = None) -> dict:
    """Serve the app as an operator would and time sequential GETs of the two endpoints.

    On PostgreSQL the pipeline is timed twice: as the rebuild left its tables (no planner
    statistics unless autovacuum has analyzed them meanwhile), and after ANALYZE."""
    from bench.http_append import _stop, _wait_listening

    casestudies = str(Path(sys.executable).with_name("casestudies"))
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    subprocess.run([casestudies, "db", "upgrade"], env=env, check=True, capture_output=True)
    key = subprocess.run([casestudies, "keys", "create", "--role", "reader", "--name", "bench"],
                         env=env, check=True, capture_output=True, text=True).stdout.split()[0]
    help_text = subprocess.run([casestudies, "serve", "--help"], env=env, capture_output=True, text=True).stdout
    no_projectors = "--no-projectors" in help_text
    port = _free_port()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / f"projections-{label}-log.tmp"
    log_file = open(log_path, "w")  # noqa: SIM115
    server = subprocess.Popen(
        [casestudies, "serve", "--port", str(port), "--workers", "2",
         *(["--no-projectors"] if no_projectors else [])],
        env=env, stdout=log_file, stderr=subprocess.STDOUT)
    out: dict[str, Any] = {"no_projectors_flag": no_projectors, "prewarm_s": round(prewarm(url), 2)}
    try:
        try:
            _wait_listening(port, server)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; server log: {log_path.read_text()[-2000:]}") from None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        rounds = [("stuck", "/projections/stuck"), ("pipeline", "/projections/pipeline")]
        if pg_dbname is not None:
            rounds.append(("pipeline_after_analyze", "/projections/pipeline"))
        for name, path in rounds:
            if name == "pipeline_after_analyze":
                _analyze_projections(pg_dbname)
            for _ in range(warmup):
                status, body = _get(conn, path, key)
                if status != 200:
                    raise RuntimeError(f"GET {path} answered {status}: {body[:500]!r}")
            samples: list[float] = []
            statuses: dict[str, int] = {}
            start = time.perf_counter()
            with MachineMeter() as meter:
                while len(samples) < requests and time.perf_counter() - start < cap_seconds:
                    t = time.perf_counter()
                    status, body = _get(conn, path, key)
                    samples.append((time.perf_counter() - t) * 1000)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
            document = json.loads(body)
            out[name] = {"requests": len(samples), "statuses": statuses, "p50_ms": pct(samples, 50),
                         "p99_ms": pct(samples, 99), "median_ms": median(samples), "min_ms": min(samples),
                         "max_ms": max(samples), "mean_ms": sum(samples) / len(samples),
                         "response_bytes": len(body),
                         "capped_by_time": len(samples) < requests, "machine": meter.result}
            if name == "stuck":
                out[name]["items"] = document["count"]
                out[name]["records_with_findings"] = len({item["id"] for item in document["items"]})
            else:
                out[name]["total_records"] = document["total"]
                out[name]["by_status"] = document["by_status"]
            log(f"  {label} GET {path}{' (after ANALYZE)' if name.endswith('analyze') else ''}: "
                f"{len(samples)} requests, p50 {out[name]['p50_ms']:.1f} ms, "
                f"p99 {out[name]['p99_ms']:.1f} ms ({len(body):,} bytes, statuses {statuses}; machine "
                f"{meter.result['busy_pct']:.0f}% busy, steal {meter.result['steal_pct']:.0f}%, "
                f"iowait {meter.result['iowait_pct']:.0f}%)")
        conn.close()
    finally:
        _stop(server)
        log_file.close()
    return out


# -- the part ----------------------------------------------------------------------------------
def _steal(report: dict) -> str:
    m = report["machine"]
    return f" (machine {m['busy_pct']:.0f}% busy, steal {m['steal_pct']:.0f}%, iowait {m['iowait_pct']:.0f}%)"


def run() -> dict:
    records = env_int("BENCH_PROJ_RECORDS", 100_000)
    small = env_int("BENCH_PROJ_SMALL_RECORDS", 10_000)
    seed = env_int("BENCH_PROJ_SEED", 20261123)
    requests = env_int("BENCH_PROJ_REQUESTS", 200)
    warmup = env_int("BENCH_PROJ_WARMUP", 3)
    cap = float(os.environ.get("BENCH_PROJ_HTTP_SECONDS", 60))
    profile = os.environ.get("BENCH_PROJ_PROFILE", "1") not in ("0", "")
    results: dict[str, Any] = {"config": {"records": records, "small_records": small, "seed": seed,
                                          "requests": requests, "warmup_requests": warmup,
                                          "http_cap_seconds": cap, "yield_per": 2000}}
    folder = tempfile.mkdtemp(prefix="bench-projections-")
    sqlite_big, sqlite_small = f"{folder}/big.db", f"{folder}/small.db"
    try:
        with fresh_db("proj_big") as pg_big, fresh_db("proj_small") as pg_small:
            log(f"generating {records:,} case studies (seed {seed}) and loading them into 2 PostgreSQL "
                "databases and 2 SQLite files (not timed)")
            results["data"] = in_subprocess("--load", json.dumps(
                [records, small, seed, pg_big, pg_small, sqlite_big, sqlite_small]))
            urls = {"postgresql": (sa_url(pg_big), sa_url(pg_small)),
                    "sqlite": (f"sqlite:///{sqlite_big}", f"sqlite:///{sqlite_small}")}
            for backend, (big_url, small_url) in urls.items():
                log(f"rebuild on {backend}")
                r: dict[str, Any] = {"parent_ru_maxrss_mib": peak_memory()["ru_maxrss_mib"]}
                r["baseline"] = in_subprocess("--child", "baseline", big_url)
                r["raw_read"] = [in_subprocess("--child", "raw", big_url)]
                log(f"  raw read: {r['raw_read'][0]['events_per_s']:,.0f} events/s{_steal(r['raw_read'][0])}")
                r["rebuild"] = in_subprocess("--child", "rebuild", big_url)
                log(f"  rebuild of {r['rebuild']['events']:,} events: {r['rebuild']['events_per_s']:,.0f} events/s, "
                    f"peak RSS {r['rebuild']['ru_maxrss_mib']:.0f} MiB{_steal(r['rebuild'])}")
                r["raw_read"].append(in_subprocess("--child", "raw", big_url))
                log(f"  raw read again: {r['raw_read'][1]['events_per_s']:,.0f} events/s{_steal(r['raw_read'][1])}")
                r["rebuild_small"] = in_subprocess("--child", "rebuild", small_url)
                log(f"  rebuild of {r['rebuild_small']['events']:,} events: "
                    f"{r['rebuild_small']['events_per_s']:,.0f} events/s, "
                    f"peak RSS {r['rebuild_small']['ru_maxrss_mib']:.0f} MiB{_steal(r['rebuild_small'])}")
                raw_events = sum(x["events"] for x in r["raw_read"])
                raw_seconds = sum(x["seconds"] for x in r["raw_read"])
                r["raw_events_per_s"] = raw_events / raw_seconds
                r["ratio_rebuild_to_raw"] = r["rebuild"]["events_per_s"] / r["raw_events_per_s"]
                inherited = any(x["ru_maxrss_mib"] > x.get("vmhwm_mib", x["ru_maxrss_mib"]) + 1
                                for x in (r["baseline"], r["rebuild"], r["rebuild_small"]))
                r["ru_maxrss_inherited_from_parent"] = inherited
                which = "vmhwm_mib" if inherited else "ru_maxrss_mib"
                r["peak_rss_mib"] = {"baseline": r["baseline"][which], "rebuild_small": r["rebuild_small"][which],
                                     "rebuild": r["rebuild"][which], "measure": which}
                results[backend] = r
                if profile and backend == "postgresql":
                    log("  cProfile of a rebuild of the small database (not a timed figure)")
                    results["profile"] = in_subprocess("--child", "profile", small_url)
            results["endpoints"] = {}
            results["postgresql_settings"] = {name: pg_setting(name) for name in
                                              ("autovacuum", "work_mem", "shared_buffers", "server_version")}
            for backend, (big_url, _) in urls.items():
                log(f"endpoints over HTTP on {backend}, {records:,} records")
                results["endpoints"][backend] = endpoint_latency(
                    big_url, backend, requests, warmup, cap, pg_big if backend == "postgresql" else None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print("BENCH_JSON " + json.dumps(_child(sys.argv[2], sys.argv[3]), default=str), flush=True)
    elif len(sys.argv) == 3 and sys.argv[1] == "--load":
        print("BENCH_JSON " + json.dumps(_load_all(*json.loads(sys.argv[2])), default=str), flush=True)
    else:
        print(json.dumps(run(), indent=2))
