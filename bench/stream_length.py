"""Benchmark (b): append latency on a long stream (version ~1,000) vs a short one (version ~10).

Store level (EventStore.append, one event per call, one client), on PostgreSQL and on SQLite.
An append grows the stream, so we time a *window* of appends: S short streams pre-grown to
version 10 and S long streams pre-grown to version 1,000, then W rounds of one append to each,
short and long interleaved (short-0, long-0, short-1, long-1, ...), so the short window covers
versions 11..10+W and the long one 1001..1000+W, and machine drift hits both alike.

Two event kinds, because the state row holds the record as one JSON document:

  metrics  metrics_recorded {"kind":"current","metrics":{"m":n}} - overwrites one key, so the
           state document has the same size at version 10 and 1,000: this isolates stream length.
  quotes   quote_added - appends to the record's quotes list, so at version 1,000 the state
           holds ~1,000 quotes: this shows what a growing state document costs.

The target (long/short <= 1.2x) is judged on the metrics kind's median; p95 is reported too.
Run alone: ``.venv/bin/python -m bench.stream_length``.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time

from bench.common import (
    COMMITTED,
    QUOTE,
    env_int,
    fresh_db,
    log,
    median,
    metrics,
    pct,
    quiet_service_logging,
    sa_url,
)

SHORT, LONG = 10, 1000
BATCH = 200  # events per append call while pre-growing (not timed)


def _event(kind: str, n: int):
    from service.events.event import NewEvent

    if kind == "metrics":
        return NewEvent("metrics_recorded", metrics(n))
    return NewEvent("quote_added", QUOTE)


def _grow(store, stream_id: str, kind: str, version: int) -> None:
    from service.events.event import NewEvent

    store.append(stream_id, [NewEvent("committed", COMMITTED)], actor="bench-setup")
    done = 1
    while done < version:
        size = min(BATCH, version - done)
        store.append(stream_id, [_event(kind, done + i) for i in range(size)], actor="bench-setup")
        done += size
    assert store.record(stream_id).version == version


def measure(url: str, streams: int, window: int) -> dict:
    from service import migrations
    from service.config import Settings
    from service.events.backends import make_engine
    from service.events.store import EventStore

    engine = make_engine(url)
    migrations.upgrade(engine)
    store = EventStore(engine, cache_size=Settings.from_env().state_cache_size)
    out = {}
    for kind in ("metrics", "quotes"):
        t0 = time.perf_counter()
        short = [f"{kind}-short-{i}" for i in range(streams)]
        long_ = [f"{kind}-long-{i}" for i in range(streams)]
        for s, l in zip(short, long_):
            _grow(store, s, kind, SHORT)
            _grow(store, l, kind, LONG)
        setup_s = time.perf_counter() - t0
        # one untimed append per stream: warms the statement caches and the pages we touch
        for s, l in zip(short, long_):
            store.append(s, [_event(kind, 0)], actor="bench")
            store.append(l, [_event(kind, 0)], actor="bench")
        lat = {"short": [], "long": []}
        for r in range(window):
            for s, l in zip(short, long_):
                for name, stream_id in (("short", s), ("long", l)):
                    event = _event(kind, r)
                    t = time.perf_counter()
                    store.append(stream_id, [event], actor="bench")
                    lat[name].append((time.perf_counter() - t) * 1000)
        versions = {"short": store.record(short[0]).version, "long": store.record(long_[0]).version}
        state_bytes = {name: len(json.dumps(store.record(ids[0]).to_dict()))
                       for name, ids in (("short", short), ("long", long_))}
        res = {}
        for name in ("short", "long"):
            res[name] = {"samples": len(lat[name]), "median_ms": median(lat[name]),
                         "p95_ms": pct(lat[name], 95), "mean_ms": sum(lat[name]) / len(lat[name]),
                         "versions_timed": f"{versions[name] - window + 1}..{versions[name]}",
                         "state_json_bytes": state_bytes[name]}
        res["ratio_median"] = res["long"]["median_ms"] / res["short"]["median_ms"]
        res["ratio_p95"] = res["long"]["p95_ms"] / res["short"]["p95_ms"]
        res["setup_s"] = setup_s
        out[kind] = res
        log(f"  {kind:7s}: v~{SHORT} median {res['short']['median_ms']:.3f} ms p95 "
            f"{res['short']['p95_ms']:.3f} ms | v~{LONG} median {res['long']['median_ms']:.3f} ms "
            f"p95 {res['long']['p95_ms']:.3f} ms | ratio median {res['ratio_median']:.2f}x "
            f"p95 {res['ratio_p95']:.2f}x")
    engine.dispose()
    return out


def run() -> dict:
    streams = env_int("BENCH_LEN_STREAMS", 20)
    window = env_int("BENCH_LEN_WINDOW", 30)
    quiet_service_logging()
    results = {"config": {"streams_per_class": streams, "appends_per_stream": window,
                          "short_version": SHORT, "long_version": LONG}}
    log("stream length on PostgreSQL")
    with fresh_db("length") as dbname:
        results["postgresql"] = measure(sa_url(dbname), streams, window)
    log("stream length on SQLite")
    folder = tempfile.mkdtemp(prefix="bench-length-")
    try:
        results["sqlite"] = measure(f"sqlite:///{folder}/bench.db", streams, window)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for backend in ("postgresql", "sqlite"):
        results[backend]["met"] = results[backend]["metrics"]["ratio_median"] <= 1.2
    results["target"] = 1.2
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
