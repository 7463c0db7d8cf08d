"""Benchmark (d): the read side at scale - projecting live and rebuilding, the reads, memory.

d1  Live vs rebuild. The store is loaded without its newest 10 % of events and rebuilt; the
    rest is then loaded and projected live (``ProjectionRunner.catch_up``, batch by batch, from
    the checkpoint the rebuild left) in a fresh interpreter. In the same run, the rebuild of the
    whole store. Figure: live CPU seconds per event / rebuild CPU seconds per event (target <= 2).
d2  Stream length. 40 records at version 10 and 40 at version 1,000; rounds of one new event
    for each record of a group, projected by a runner that holds nothing in memory (it reads
    what the projections hold for each record, as after a restart), the two groups alternated.
    Figure: CPU per event at version 1,000 / at version 10 (target: about 1).
d3  Rebuild vs raw read: the rebuild's own query and cursor projecting nothing, before and after
    the rebuild. Figure: rebuild events/s / raw read events/s (target >= 0.5).
d4  The reads over HTTP, on the rebuilt store, served as an operator would (``casestudies serve
    --workers 2``, projections already caught up so their helper is off): pages of the stuck
    list now and at a past time (first pages, following cursors, filtered by CSM, code and
    status), the weekly report now and for last week, the pipeline, blockers, and the whole stuck
    list as CSV. Figures: p50/p99 per kind, answer sizes; afterwards the peak RSS (VmHWM) of
    every gunicorn process.
d5  Peak RSS of every measuring process (rebuild, live catch-up) from ``ru_maxrss``, checked
    against VmHWM.

Every measured step runs in a fresh interpreter (``python -m bench.projections --child KIND
URL``) after its database's files were read into the OS page cache. The data: see dataset.py.
``BENCH_PROJ_RECORDS`` sets the size (10,000 by default; 100,000 for the large run).

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
import urllib.parse
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    PG_URL,
    RESULTS,
    ROOT,
    children,
    env_int,
    free_port,
    fresh_db,
    log,
    pct,
    quiet_service_logging,
    sa_url,
)
from bench.dataset import load_url, make_dataset

LIVE_SHARE = 0.10  # the newest events, projected live after a rebuild of the rest
LENGTH_STREAMS = 40  # records in each group of d2
LENGTH_ROUNDS = 10


# -- the measured processes ----------------------------------------------------------------
def _child(kind: str, url: str) -> dict:
    """Runs in a fresh interpreter: connect, do ``kind``, report time, CPU and peak RSS."""
    quiet_service_logging()
    from sqlalchemy import select, text

    from service.bootstrap import build
    from service.config import Settings
    from service.events.db import transaction
    from service.events.event import EVENT_COLUMNS, stored_event
    from service.events.tables import events

    services = build(Settings(database_url=url, personal_data_key=os.environ["PERSONAL_DATA_KEY"]))
    with services.engine.connect() as conn:
        conn.execute(text("select 1"))
    out: dict[str, Any] = {"kind": kind}
    if kind == "length":
        out.update(_stream_length(services))
    else:
        cpu0, t0 = _cpu(), time.perf_counter()
        if kind == "raw":  # the rebuild's own query and cursor, projecting nothing
            with transaction(services.engine, isolation="REPEATABLE READ", write=False) as reader:
                query = (select(*EVENT_COLUMNS).where(services.feed.readable())
                         .order_by(events.c.stream_id, events.c.version))
                count = 0
                for row in reader.execution_options(stream_results=True, yield_per=2000).execute(query):
                    stored_event(row)
                    count += 1
            out["events"] = count
        elif kind == "rebuild":
            counted = [0]
            services.runner.rebuilder.rebuild(total=lambda n: counted.__setitem__(0, n))
            out["events"] = counted[0]
        elif kind == "live":
            out["events"] = services.runner.catch_up()
        elif kind != "baseline":
            raise SystemExit(f"unknown child kind {kind}")
        out["seconds"] = time.perf_counter() - t0
        out["cpu_s"] = _cpu() - cpu0
        if out.get("events"):
            out["events_per_s"] = out["events"] / out["seconds"]
            out["cpu_us_per_event"] = 1e6 * out["cpu_s"] / out["events"]
    out.update(peak_memory())
    services.engine.dispose()
    return out


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stream_length(services) -> dict:
    """d2, in the child: build the two groups, then alternate rounds of one event per record."""
    from service.events.event import NewEvent
    from service.projections.runner import ProjectionRunner

    store = services.store
    committed = {"account": {"id": "acc-1", "name": "Acme"}, "csm": "Dana",
                 "champion": {"name": "Jo", "title": "VP"}, "use_case": "onboarding", "close_date": "2026-10-01"}

    def metric(n: int) -> NewEvent:
        return NewEvent("metrics_recorded", {"kind": "current", "metrics": {"m": n}})

    groups = {"v10": [f"short-{i}" for i in range(LENGTH_STREAMS)],
              "v1000": [f"long-{i}" for i in range(LENGTH_STREAMS)]}
    for name, length in (("v10", 10), ("v1000", 1000)):
        for stream_id in groups[name]:
            store.append(stream_id, [NewEvent("committed", committed), NewEvent("started", {})], actor="bench")
            for start in range(3, length + 1, 100):
                store.append(stream_id, [metric(n) for n in range(start, min(start + 100, length + 1))],
                             actor="bench")
    services.runner.catch_up()
    samples: dict[str, list[float]] = {"v10": [], "v1000": []}
    n = 10_000
    for _round in range(LENGTH_ROUNDS):
        for name in ("v10", "v1000"):
            for stream_id in groups[name]:
                n += 1
                store.append(stream_id, [metric(n)], actor="bench")
            runner = ProjectionRunner(services.engine, services.feed, services.runner.projectors)  # holds nothing
            cpu0 = _cpu()
            projected = runner.catch_up()
            samples[name].append(1e6 * (_cpu() - cpu0) / projected)
    out = {name: {"cpu_us_per_event_median": sorted(values)[len(values) // 2], "rounds_us": values}
           for name, values in samples.items()}
    out["ratio"] = out["v1000"]["cpu_us_per_event_median"] / out["v10"]["cpu_us_per_event_median"]
    return out


def peak_memory(pid: int | str = "self") -> dict[str, float]:
    """Peak RSS in MiB: ``ru_maxrss`` (this process only) and the kernel's VmHWM.

    Linux keeps ``ru_maxrss`` across exec, so a child forked from a bigger process reports the
    parent's peak; VmHWM belongs to the process' own address space only."""
    out = {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024} if pid == "self" else {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["vmhwm_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _cpu_ticks() -> tuple[int, int, int, int]:
    """(busy, steal, iowait, total) ticks of the whole machine from /proc/stat; busy includes steal."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, values[7], values[4], sum(values)


class MachineMeter:
    """How busy the whole machine was during a window, and how much the hypervisor took (steal)."""

    def __enter__(self) -> "MachineMeter":
        self._start = _cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        busy, steal, iowait, total = (b - a for a, b in zip(self._start, _cpu_ticks()))
        self.result = {"busy_pct": round(100 * busy / max(total, 1), 1),
                       "steal_pct": round(100 * steal / max(total, 1), 1),
                       "iowait_pct": round(100 * iowait / max(total, 1), 1)}


def prewarm(url: str) -> None:
    """Read the database's files into the OS page cache, so that no measurement starts cold."""
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal"):
            path = url.removeprefix("sqlite:///") + suffix
            if os.path.exists(path):
                with open(path, "rb") as f:
                    while f.read(1 << 20):
                        pass
        return
    import psycopg

    with psycopg.connect(f"{PG_URL}/{url.rsplit('/', 1)[1]}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.execute("SELECT sum(pg_prewarm(c.oid::regclass, 'read')) FROM pg_class c "
                     "JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 't')")


def in_subprocess(*args: str) -> dict:
    """``python -m bench.projections ARGS`` in a fresh interpreter; its report, with how busy the
    machine was meanwhile. A measuring child's database is prewarmed first."""
    if args[0] == "--child":
        prewarm(args[2])
    with MachineMeter() as meter:
        out = subprocess.run([sys.executable, "-m", "bench.projections", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    report = json.loads(line.removeprefix("BENCH_JSON "))
    report["machine"] = meter.result
    return report


def _load(records: int, seed: int, now: str | None, urls: list[str], part: str) -> dict:
    """Runs in a subprocess (the data set is big; the parent stays small): generate, then load
    ``part`` ("head": all but the newest LIVE_SHARE of the events, with every state row; "tail":
    the rest) into each of ``urls``."""
    quiet_service_logging()
    from service import migrations
    from service.events.backends import make_engine

    t0 = time.perf_counter()
    events, states, info = make_dataset(records, seed, now=datetime.fromisoformat(now) if now else None)
    info["generate_s"] = time.perf_counter() - t0
    cut = int(len(events) * (1 - LIVE_SHARE))
    rows, state_rows = (events[:cut], states) if part == "head" else (events[cut:], [])
    info.update(part=part, loaded_events=len(rows), load_s={})
    for url in urls:
        if part == "head":
            engine = make_engine(url)
            migrations.upgrade(engine)
            engine.dispose()
        info["load_s"][url.split(":")[0]] = load_url(url, rows, state_rows)
    return info


# -- the reads over HTTP -----------------------------------------------------------------------
def _get(conn: http.client.HTTPConnection, path: str, key: str, accept: str = "application/json"
         ) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}", "Accept": accept})
    response = conn.getresponse()
    body = response.read()
    if response.getheader("Connection", "").lower() == "close":
        conn.close()  # gunicorn's sync workers close after each response; the next request reconnects
    return response.status, body


def _path(path: str, **query: Any) -> str:
    given = {k: v for k, v in query.items() if v is not None}
    return f"{path}?{urllib.parse.urlencode(given)}" if given else path


def _stuck_pages(conn, key: str, as_of: str | None) -> list[str]:
    """The stuck-list requests of one kind: the first page, the next four by cursor, and the first
    page filtered by the busiest CSM, by each code and by each status that has findings."""
    status, body = _get(conn, _path("/projections/stuck", as_of=as_of), key)
    if status != 200:
        raise RuntimeError(f"stuck answered {status}: {body[:300]!r}")
    first = json.loads(body)
    paths = [_path("/projections/stuck", as_of=as_of)]
    page = first
    for _ in range(4):
        if not page.get("next_cursor"):
            break
        paths.append(_path("/projections/stuck", as_of=as_of, cursor=page["next_cursor"]))
        page = json.loads(_get(conn, paths[-1], key)[1])
    from service.domain import STUCK_CODES

    csms = [item["csm"] for item in first["items"] if item["csm"]]
    if csms:
        paths.append(_path("/projections/stuck", as_of=as_of, csm=max(set(csms), key=csms.count)))
    paths += [_path("/projections/stuck", as_of=as_of, code=code) for code in STUCK_CODES]
    statuses = sorted({item["status"] for item in first["items"]})
    paths += [_path("/projections/stuck", as_of=as_of, status=status) for status in statuses]
    return paths


def _gunicorn_rss(server_pid: int) -> dict[str, float]:
    """VmHWM (MiB) of every process `casestudies serve` runs: itself (the supervisor), gunicorn's
    arbiter (its child) and the arbiter's workers."""
    out = {"serve": peak_memory(server_pid).get("vmhwm_mib", 0.0)}
    for child in children(server_pid):
        grandchildren = children(child)
        if grandchildren:  # the arbiter: its children are the workers
            out["arbiter"] = peak_memory(child).get("vmhwm_mib", 0.0)
            for worker in grandchildren:
                out[f"worker {worker}"] = peak_memory(worker).get("vmhwm_mib", 0.0)
    return out


def reads_over_http(url: str, requests: int, now: datetime) -> dict:
    """Serve the store as an operator would and time the reads, one client, sequentially."""
    from bench.http_append import _stop, _wait_listening

    casestudies = str(Path(sys.executable).with_name("casestudies"))
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    key = subprocess.run([casestudies, "keys", "create", "--role", "reader", "--name", "bench"],
                         env=env, check=True, capture_output=True, text=True).stdout.split()[0]
    port = free_port()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / "projections-serve-log.tmp"
    prewarm(url)
    with open(log_path, "w") as log_file:
        server = subprocess.Popen([casestudies, "serve", "--port", str(port), "--workers", "2", "--no-projectors",
                                   "--no-notifications"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            try:
                _wait_listening(port, server)
            except RuntimeError as error:
                raise RuntimeError(f"{error}; server log: {log_path.read_text()[-2000:]}") from None
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            past = (now - timedelta(days=30)).isoformat()
            last_week = (now - timedelta(days=7)).isoformat()
            kinds = {
                "stuck_now": _stuck_pages(conn, key, None),
                "stuck_past": _stuck_pages(conn, key, past),
                "weekly_now": ["/reports/weekly"],
                "weekly_last_week": [_path("/reports/weekly", as_of=last_week)],
                "pipeline_now": ["/projections/pipeline"],
                "pipeline_past": [_path("/projections/pipeline", as_of=past)],
                "blockers_page": [_path("/projections/blockers", limit=100)],
                "records_past": [_path("/case-studies", as_of=past, limit=50)],
            }
            out: dict[str, Any] = {"past_as_of": past, "last_week_as_of": last_week}
            for name, paths in kinds.items():
                for path in paths:  # warm-up: one of each
                    status, body = _get(conn, path, key)
                    if status != 200:
                        raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
                samples, sizes = [], []
                with MachineMeter() as meter:
                    for i in range(requests):
                        path = paths[i % len(paths)]
                        t = time.perf_counter()
                        status, body = _get(conn, path, key)
                        samples.append((time.perf_counter() - t) * 1000)
                        sizes.append(len(body))
                        if status != 200:
                            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
                out[name] = {"requests": len(samples), "distinct_requests": len(paths), "p50_ms": pct(samples, 50),
                             "p99_ms": pct(samples, 99), "max_ms": max(samples), "max_bytes": max(sizes),
                             "machine": meter.result}
                log(f"  GET {name}: {len(samples)} requests over {len(paths)} kinds, p50 {out[name]['p50_ms']:.1f} ms, "
                    f"p99 {out[name]['p99_ms']:.1f} ms, up to {max(sizes):,} bytes "
                    f"(machine {meter.result['busy_pct']:.0f}% busy, steal {meter.result['steal_pct']:.0f}%)")
            t = time.perf_counter()
            status, body = _get(conn, "/projections/stuck?format=csv", key, accept="text/csv")
            out["stuck_csv"] = {"seconds": time.perf_counter() - t, "bytes": len(body),
                                "rows": body.count(b"\n") - 1, "status": status}
            log(f"  GET the whole stuck list as CSV: {out['stuck_csv']['rows']:,} rows, {len(body):,} bytes "
                f"in {out['stuck_csv']['seconds']:.2f} s")
            conn.close()
            out["rss_mib"] = _gunicorn_rss(server.pid)
            log(f"  peak RSS of the served processes after every read: "
                + ", ".join(f"{k} {v:.0f} MiB" for k, v in out["rss_mib"].items()))
        finally:
            _stop(server)
    return out


# -- the part ----------------------------------------------------------------------------------
def _steal(report: dict) -> str:
    m = report["machine"]
    return f" (machine {m['busy_pct']:.0f}% busy, steal {m['steal_pct']:.0f}%)"


def run() -> dict:
    records = env_int("BENCH_PROJ_RECORDS", 10_000)
    seed = env_int("BENCH_PROJ_SEED", 20261123)
    requests = env_int("BENCH_PROJ_REQUESTS", 200)
    backends = os.environ.get("BENCH_PROJ_BACKENDS", "postgresql,sqlite").split(",")
    results: dict[str, Any] = {"config": {"records": records, "seed": seed, "requests_per_kind": requests,
                                          "live_share": LIVE_SHARE, "backends": backends}}
    folder = tempfile.mkdtemp(prefix="bench-projections-")
    try:
        with fresh_db("proj") as pg_db, fresh_db("proj_length") as pg_length:
            urls = {"postgresql": sa_url(pg_db), "sqlite": f"sqlite:///{folder}/store.db"}
            urls = {name: url for name, url in urls.items() if name in backends}
            log(f"generating {records:,} case studies (seed {seed}); loading all but the newest "
                f"{LIVE_SHARE:.0%} of the events (not timed)")
            results["data"] = in_subprocess("--load", json.dumps([records, seed, None, list(urls.values()), "head"]))
            now = datetime.fromisoformat(results["data"]["generated_at"])
            for backend, url in urls.items():
                r: dict[str, Any] = {}
                log(f"{backend}: rebuild of the older events (not timed), then the newest projected live")
                in_subprocess("--child", "rebuild", url)
                in_subprocess("--load", json.dumps([records, seed, now.isoformat(), [url], "tail"]))
                r["live"] = in_subprocess("--child", "live", url)
                log(f"  live: {r['live']['events']:,} events, {r['live']['cpu_us_per_event']:.0f} CPU us/event, "
                    f"peak RSS {r['live']['ru_maxrss_mib']:.0f} MiB{_steal(r['live'])}")
                r["baseline"] = in_subprocess("--child", "baseline", url)
                r["raw_read"] = [in_subprocess("--child", "raw", url)]
                r["rebuild"] = in_subprocess("--child", "rebuild", url)
                r["raw_read"].append(in_subprocess("--child", "raw", url))
                raw_events = sum(x["events"] for x in r["raw_read"])
                r["raw_events_per_s"] = raw_events / sum(x["seconds"] for x in r["raw_read"])
                r["ratio_rebuild_to_raw"] = r["rebuild"]["events_per_s"] / r["raw_events_per_s"]
                r["ratio_live_to_rebuild_cpu"] = r["live"]["cpu_us_per_event"] / r["rebuild"]["cpu_us_per_event"]
                log(f"  rebuild of {r['rebuild']['events']:,} events: {r['rebuild']['events_per_s']:,.0f} events/s "
                    f"({r['rebuild']['cpu_us_per_event']:.0f} CPU us/event), raw read "
                    f"{r['raw_events_per_s']:,.0f} events/s: {r['ratio_rebuild_to_raw']:.2f}x; live / rebuild CPU "
                    f"{r['ratio_live_to_rebuild_cpu']:.2f}x; peak RSS {r['rebuild']['ru_maxrss_mib']:.0f} MiB"
                    f"{_steal(r['rebuild'])}")
                results[backend] = r
            if "postgresql" in urls:
                log("stream length: new events for records at version 10 and at version 1,000")
                length_url = sa_url(pg_length)
                in_subprocess("--migrate", length_url)
                results["stream_length"] = in_subprocess("--child", "length", length_url)
                log(f"  CPU per event at v1000 / at v10: {results['stream_length']['ratio']:.2f}x")
                log(f"reads over HTTP, PostgreSQL, {records:,} records")
                results["reads"] = reads_over_http(urls["postgresql"], requests, now)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def _migrate(url: str) -> dict:
    from service import migrations
    from service.events.backends import make_engine

    engine = make_engine(url)
    migrations.upgrade(engine)
    engine.dispose()
    return {}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print("BENCH_JSON " + json.dumps(_child(sys.argv[2], sys.argv[3]), default=str), flush=True)
    elif len(sys.argv) == 3 and sys.argv[1] == "--load":
        print("BENCH_JSON " + json.dumps(_load(*json.loads(sys.argv[2])), default=str), flush=True)
    elif len(sys.argv) == 3 and sys.argv[1] == "--migrate":
        print("BENCH_JSON " + json.dumps(_migrate(sys.argv[2])), flush=True)
    else:
        print(json.dumps(run(), indent=2))
