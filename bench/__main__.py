"""Run the benchmarks end to end and print a summary:
``python -m bench [http] [length] [store] [batch] [breakdown] [projections]``.

With no arguments everything runs (about 14 minutes, 9 of them projections). Raw results go to
bench/results/latest.json.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

from bench.common import _TICK, RESULTS, ROOT, _busy_ticks, log, pg_admin

PARTS = ("http", "length", "store", "batch", "breakdown", "projections")


def _background_busy(seconds: float = 1.0) -> float:
    """Percent of the machine's CPU busy while we do nothing (someone else's work)."""
    b0 = _busy_ticks()
    time.sleep(seconds)
    return 100 * (_busy_ticks() - b0) / _TICK / (seconds * (os.cpu_count() or 1))


def _code_version() -> dict:
    """Which code was measured: HEAD, and whether service/ had uncommitted changes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"head": git("rev-parse", "--short", "HEAD"),
            "service_uncommitted_changes": bool(git("status", "--porcelain", "--", "service", "alembic"))}


def _preflight() -> None:
    try:
        with pg_admin() as conn:
            conn.execute("select 1")
    except Exception as error:  # noqa: BLE001 - tell the user, whatever it is
        sys.exit(f"cannot reach PostgreSQL ({error}); set BENCH_PG_URL, "
                 "e.g. postgresql://postgres@127.0.0.1:5432")


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def summary(results: dict) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    notes: list[str] = []
    http = results.get("http")
    if http and "skipped" not in http:
        b, o = http["bare"], http["ours"]
        rows.append(("(a) HTTP append, gunicorn 2 sync workers, wrk 16 conns",
                     f"bare {b['rps']:.0f} req/s, ours {o['rps']:.0f} req/s",
                     f"{http['ratio']:.2f}x", ">= 0.60x", _yes(http["met"])))
        rows.append(("    per round (bare / ours req/s)",
                     " ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(b["per_round_rps"], o["per_round_rps"])),
                     " ".join(f"{r:.2f}x" for r in http["per_round_ratio"])
                     + f" (best/best {http['ratio_best_rounds']:.2f}x)", "", ""))
        rows.append(("    non-2xx responses / socket errors",
                     f"bare {b['non_2xx']}/{b['socket_errors']}, ours {o['non_2xx']}/{o['socket_errors']}",
                     "", "", ""))
        rows.append(("    latency p50 / p99 (ms)",
                     f"bare {max(b['latency_p50_ms']):.1f}/{max(b['latency_p99_ms']):.1f}, "
                     f"ours {max(o['latency_p50_ms']):.1f}/{max(o['latency_p99_ms']):.1f}", "", "", ""))
        for name, side in (("bare", b), ("ours", o)):
            c = side["cpu_ms_per_request"]
            rows.append((f"    CPU ms/request, {name}",
                         f"server {c['server']:.2f}, postgres {c['postgres_backends'] + c['postgres_shared']:.2f}, "
                         f"wrk {c['load_generator']:.2f}, unattributed {c['other']:.2f}",
                         f"busy {side['machine_busy_pct']:.0f}%", "", ""))
        diff = http["ours_quote_events_stored"] - http["ours_201_responses"]
        notes.append(f"(a) ours: {http['ours_201_responses']} responses 201 counted by wrk, "
                     f"{http['ours_quote_events_stored']} quote_added events stored (difference {diff}: "
                     "requests in flight when wrk stopped, at most one per connection per run): "
                     + ("consistent" if http["stored_vs_201_consistent"] else "INCONSISTENT, check the logs"))
    elif http:
        rows.append(("(a) HTTP append", http["skipped"], "", ">= 0.60x", "skipped"))

    length = results.get("length")
    if length:
        for backend in ("postgresql", "sqlite"):
            for kind, label in (("metrics", "stream length only"), ("quotes", "state grows too")):
                r = length[backend][kind]
                target = "<= 1.2x" if kind == "metrics" else "(info)"
                met = _yes(r["ratio_median"] <= 1.2) if kind == "metrics" else ""
                rows.append((f"(b) v1000 vs v10, {backend}, {kind} ({label})",
                             f"median {r['short']['median_ms']:.2f} -> {r['long']['median_ms']:.2f} ms, "
                             f"p95 {r['short']['p95_ms']:.2f} -> {r['long']['p95_ms']:.2f} ms",
                             f"{r['ratio_median']:.2f}x (p95 {r['ratio_p95']:.2f}x)", target, met))

    store = results.get("store")
    if store:
        s = store["single_client"]
        rows.append(("(c1) one client: ours vs eventsourcing (PostgreSQL)",
                     f"ours {s['ours']['events_per_s']:.0f} ev/s, eventsourcing "
                     f"{s['eventsourcing']['events_per_s']:.0f} ev/s",
                     f"{s['ratio']:.2f}x", ">= 2.0x", _yes(s["met"])))
        ref = s["reference"]
        rows.append(("    reference: eventsourcing get+save / raw psycopg floor",
                     f"{ref['eventsourcing_get_save_100_aggregates']['events_per_s']:.0f} / "
                     f"{ref['raw_psycopg_floor']['events_per_s']:.0f} ev/s", "", "", ""))
        c = store["concurrency"]
        rows.append((f"(c2) {c['writers']} writer threads vs 1 (PostgreSQL, pool 16)",
                     f"1: {c['one']['events_per_s']:.0f} ev/s, {c['writers']}: {c['many']['events_per_s']:.0f} ev/s",
                     f"{c['ratio']:.2f}x", ">= 2.0x", _yes(c["met"])))
        p = c["reference"]
        rows.append((f"    reference: {c['writers']} writer processes",
                     f"{p['processes']['events_per_s']:.0f} ev/s (machine {p['processes']['machine_busy_pct']:.0f}% busy)",
                     f"{p['processes_ratio']:.2f}x", "", ""))

    batch = results.get("batch")
    if batch:
        size = batch["config"]["batch"]
        for backend in ("postgresql", "sqlite"):
            r = batch[backend]
            target = f">= {r['target']:.1f}x" if backend == "postgresql" else "(info)"
            rows.append((f"(e) {size} events per append vs 1 ({backend}, one client)",
                         f"single {r['single']['events_per_s']:.0f} ev/s, batch {r['batch']['events_per_s']:.0f} ev/s",
                         f"{r['ratio']:.2f}x", target, _yes(r["met"]) if backend == "postgresql" else ""))
            rows.append(("    per round (single / batch ev/s)",
                         " ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(r["single"]["per_round_events_per_s"],
                                                                     r["batch"]["per_round_events_per_s"])),
                         " ".join(f"{x:.2f}x" for x in r["per_round_ratio"]), "", ""))
            if not r["check"]["ok"]:
                notes.append(f"(e) {backend}: stored events do not match the appended ones: {r['check']}")
        raw = batch["raw_psycopg"]
        rows.append((f"    reference: PostgreSQL itself, raw psycopg, {size} rows per INSERT vs 1",
                     f"1 row {raw['single']['events_per_s']:.0f} ev/s, jsonb_to_recordset "
                     f"{raw['batch']['events_per_s']:.0f}, VALUES {raw['batch_multirow_values']['events_per_s']:.0f}",
                     f"{raw['ratio']:.2f}x / {raw['ratio_multirow_values']:.2f}x", "", ""))
        if not raw["check"]["ok"]:
            notes.append(f"(e) raw psycopg: stored rows do not match the inserted ones: {raw['check']}")

    bd = results.get("breakdown")
    if bd:
        us = bd["per_request_us"]
        rows.append(("(diag) one request in-process: ours / bare app",
                     f"CPU {us['request total']['cpu_us']:.0f} / {us['bare app request total']['cpu_us']:.0f} us, "
                     f"wall {us['request total']['wall_us']:.0f} / {us['bare app request total']['wall_us']:.0f} us",
                     "", "", ""))
        for key in ("authenticate", "read state", "write", "state_row", "append other", "rest of request"):
            rows.append((f"       {bd['labels'][key].strip()}",
                         f"CPU {us[key]['cpu_us']:.0f} us, wall {us[key]['wall_us']:.0f} us", "", "", ""))

    proj = results.get("projections")
    if proj:
        n = proj["data"]["events"]
        for backend in ("postgresql", "sqlite"):
            r = proj.get(backend)
            if not r:
                continue
            rows.append((f"(d1) rebuild of {n:,} events vs raw read, {backend}",
                         f"rebuild {r['rebuild']['events_per_s']:,.0f} ev/s, raw read {r['raw_events_per_s']:,.0f} ev/s",
                         f"{r['ratio_rebuild_to_raw']:.2f}x", "(info)", ""))
            m = r["peak_rss_mib"]
            rows.append((f"    peak RSS ({'VmHWM' if m['measure'] == 'vmhwm_mib' else 'ru_maxrss'}): "
                         "connected / small / full rebuild",
                         f"{m['baseline']:.0f} / {m['rebuild_small']:.0f} ({r['rebuild_small']['events']:,} ev) / "
                         f"{m['rebuild']:.0f} MiB ({r['rebuild']['events']:,} ev)",
                         f"+{m['rebuild'] - m['baseline']:.0f} MiB", "", ""))
            if "machine" in r["rebuild"]:
                rows.append(("    machine busy/steal/iowait: raw reads, full, small rebuild",
                             ", ".join(f"{x['machine']['busy_pct']:.0f}/{x['machine']['steal_pct']:.0f}/"
                                       f"{x['machine'].get('iowait_pct', 0):.0f}%"
                                       for x in (*r["raw_read"], r["rebuild"], r["rebuild_small"])),
                             "", "", ""))
        for backend, e in proj.get("endpoints", {}).items():
            for name in ("stuck", "pipeline", "pipeline_after_analyze"):
                x = e.get(name)
                if x is None:
                    continue
                size = f"{x['response_bytes'] / 1e6:.1f} MB" if x["response_bytes"] >= 1e5 else \
                    f"{x['response_bytes'] / 1e3:.1f} kB"
                label = "pipeline, after ANALYZE" if name == "pipeline_after_analyze" else name
                steal = f" (steal {x['machine']['steal_pct']:.0f}%)" if "machine" in x else ""
                rows.append((f"(d2) GET /projections/{label}, {backend}, {proj['config']['records']:,} records",
                             f"p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms{steal}",
                             f"{x['requests']} requests, {size}", "(info)", ""))
            if not e.get("no_projectors_flag", True):
                notes.append(f"(d2) {backend}: `casestudies serve` had no --no-projectors flag; "
                             "served with the projector beside it")
        settings = proj.get("postgresql_settings") or {}
        if settings.get("autovacuum") == "off":
            notes.append("(d2) autovacuum is off on this PostgreSQL server: the pipeline row 'after ANALYZE' "
                         "checks that the rebuild's own ANALYZE leaves nothing for autovacuum to do")
        if any(proj.get(b, {}).get("ru_maxrss_inherited_from_parent") for b in ("postgresql", "sqlite")):
            notes.append("(d1) ru_maxrss of a child was its parent's peak (Linux keeps it across exec): "
                         "peak RSS shown is VmHWM")

    widths = [max(len(r[i]) for r in rows + [("Benchmark", "Measured", "Ratio", "Target", "Met")])
              for i in range(5)]
    lines = []
    header = ("Benchmark", "Measured", "Ratio", "Target", "Met")
    for row in [header] + rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if row is header:
            lines.append("  ".join("-" * w for w in widths))
    code = results.get("code") or {}
    notes.append(f"code measured: HEAD {code.get('head') or '?'}"
                 + (" plus uncommitted changes in service/ or alembic/" if code.get("service_uncommitted_changes")
                    else ""))
    end = results.get("code_at_end")
    if end and end != code:
        notes.append(f"the code changed during the run: HEAD {end.get('head') or '?'} at the end"
                     + (" plus uncommitted changes" if end.get("service_uncommitted_changes") else "")
                     + "; parts run later measured newer code")
    if results.get("background_busy_pct") is not None:
        notes.append(f"background CPU before the run: {results['background_busy_pct']:.0f}% "
                     "(work not ours on this machine; high values make the figures noisier)")
    return "\n".join(lines + [""] + [f"note: {n}" for n in notes])


def main(argv: list[str]) -> None:
    parts = [a for a in argv if a in PARTS] or list(PARTS)
    unknown = [a for a in argv if a not in PARTS]
    if unknown:
        sys.exit(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    _preflight()
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}}
    results["code"] = _code_version()
    results["background_busy_pct"] = _background_busy()
    log(f"background CPU busy: {results['background_busy_pct']:.0f}%")
    t0 = time.perf_counter()
    if "http" in parts:
        from bench import http_append
        log("== (a) HTTP append vs bare Flask + psycopg")
        results["http"] = http_append.run()
    if "length" in parts:
        from bench import stream_length
        log("== (b) append latency vs stream length")
        results["length"] = stream_length.run()
    if "store" in parts:
        from bench import store_throughput
        log("== (c) store throughput")
        results["store"] = store_throughput.run()
    if "batch" in parts:
        from bench import batch_append
        log("== (e) batched appends: 10 events per append vs 1")
        results["batch"] = batch_append.run()
    if "breakdown" in parts:
        from bench import breakdown
        log("== diagnostic: CPU per step of one append request")
        results["breakdown"] = breakdown.run()
    if "projections" in parts:
        from bench import projections
        log("== (d) projections: rebuild rate and memory, reporting endpoints at scale")
        results["projections"] = projections.run()
    results["elapsed_s"] = time.perf_counter() - t0
    results["code_at_end"] = _code_version()  # a long run can outlive a commit: say so
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    print(summary(results))
    print(f"\nraw results: {RESULTS / 'latest.json'}  (total {results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
