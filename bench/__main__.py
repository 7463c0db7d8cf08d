"""Run the benchmarks end to end and print a summary:
``python -m bench [http] [length] [store] [batch] [breakdown] [projections] [slow] [faults] [dashboard]
[personal]``.

With no arguments everything runs. Raw results go to bench/results/latest.json. Raw results go to
bench/results/latest.json.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import time

from bench.common import _TICK, RESULTS, ROOT, _busy_ticks, log, pg_admin

# Each part: its module (whose run() gives its results) and its heading, in the order they run.
RUNS = {
    "http": ("http_append", "(a) HTTP append vs bare Flask + psycopg"),
    "length": ("stream_length", "(b) append latency vs stream length"),
    "store": ("store_throughput", "(c) store throughput"),
    "batch": ("batch_append", "(e) batched appends: 10 events per append vs 1"),
    "breakdown": ("breakdown", "diagnostic: CPU per step of one append request"),
    "projections": ("projections", "(d) projections: rebuild rate and memory, reporting endpoints at scale"),
    "slow": ("slow_clients", "(f) slow clients against the proxy in front of serve"),
    "faults": ("faults", "(g) the fault suite: workers, PostgreSQL and helpers killed under load"),
    "dashboard": ("dashboard", "(h) the dashboard's pages at scale, on PostgreSQL"),
    "personal": ("personal_data", "(i) sealing personal data: the store's append with and without it"),
}
PARTS = tuple(RUNS)


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
        b = http["bare"]
        for side in ("ours", "plain"):
            o = http[side]
            rows.append((f"(a) HTTP append: {o['label']} vs bare, gunicorn 2 sync workers, wrk 16 conns",
                         f"bare {b['rps']:.0f} req/s, ours {o['rps']:.0f} req/s",
                         f"{o['ratio']:.2f}x", f">= {o['target']:.2f}x", _yes(o["met"])))
            rows.append(("    per round (bare / ours req/s)",
                         " ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(b["per_round_rps"], o["per_round_rps"])),
                         " ".join(f"{r:.2f}x" for r in o["per_round_ratio"])
                         + f" (best/best {o['ratio_best_rounds']:.2f}x)", "", ""))
            if any(o["settle_s"]):
                rows.append(("    projections caught up after wrk stopped (s, counted in the round)",
                             ", ".join(f"{x:.2f}" for x in o["settle_s"]), "", "", ""))
            rows.append(("    non-2xx responses / socket errors, latency p50 / p99 (ms)",
                         f"{o['non_2xx']}/{o['socket_errors']}, {max(o['latency_p50_ms']):.1f}/"
                         f"{max(o['latency_p99_ms']):.1f}", "", "", ""))
            diff = o["quote_events_stored"] - o["responses_201"]
            notes.append(f"(a) {side}: {o['responses_201']} responses 201 counted by wrk, "
                         f"{o['quote_events_stored']} quote_added events stored (difference {diff}: requests in "
                         "flight when wrk stopped, at most one per connection per run): "
                         + ("consistent" if o["stored_vs_201_consistent"] else "INCONSISTENT, check the logs"))
        for side in ("bare", "ours", "plain"):
            c = http[side]["cpu_ms_per_request"]
            rows.append((f"    CPU ms/request, {side}",
                         f"server {c['server']:.2f}, postgres {c['postgres_backends'] + c['postgres_shared']:.2f}, "
                         f"wrk {c['load_generator']:.2f}, unattributed {c['other']:.2f}",
                         f"busy {http[side]['machine_busy_pct']:.0f}%", "", ""))
    elif http:
        rows.append(("(a) HTTP append", http["skipped"], "", ">= 0.50x / 0.60x", "skipped"))

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

    slow = results.get("slow")
    if slow and "skipped" not in slow:
        alone = sum(r["rps"] for r in slow["rounds"]["alone"]) / len(slow["rounds"]["alone"])
        loaded = sum(r["rps"] for r in slow["rounds"]["with_slow"]) / len(slow["rounds"]["with_slow"])
        rows.append((f"(f) appends with {slow['stalled']} slow connections open / alone, nginx + serve",
                     f"{loaded:.0f} vs {alone:.0f} req/s", f"{slow['ratio']:.2f}x", ">= 0.80x",
                     _yes(slow["ratio"] >= 0.8)))
        rows.append(("(f) appends' p99 with the slow connections open", f"{slow['p99_ms_with_slow']:.1f} ms", "",
                      "< 100 ms", _yes(slow["p99_ms_with_slow"] < 100)))
        bare = slow["bare"]
        rows.append((f"    no proxy, {bare['stalled']} slow connections (for contrast)",
                     f"{bare['rps']:.0f} req/s, p99 {bare['latency_us']['p99'] / 1e3:.0f} ms, socket errors "
                     f"{bare['socket_errors']}", "", "", ""))

    faults = results.get("faults")
    if faults and "skipped" not in faults:
        rows.append((f"(g) fault suite, {faults['writers']} writers, {faults['seconds']:g} s",
                     f"{faults['acknowledged']:,} acknowledged, {faults['stored']:,} stored; lost {faults['lost']}, "
                     f"twice {faults['stored_twice']}, gaps {faults['streams_with_gaps']}", str(faults["statuses"]),
                     "0 lost / doubled / gaps", _yes(faults["lost"] == faults["stored_twice"] ==
                                                      faults["streams_with_gaps"] == 0)))

    ui = results.get("dashboard")
    if ui:
        n = ui["config"]["records"]
        for name, x in ui["pages"].items():
            rows.append((f"(h) page {name.replace('_', ' ')}, PostgreSQL, {n:,} records",
                         f"p50 {x['p50_ms']:.1f} ms, p95 {x['p95_ms']:.1f} ms, up to {x['max_bytes'] / 1e3:.0f} kB",
                         f"{x['requests']} requests ({x['distinct_requests']} distinct)", "p95 < 100 ms",
                         _yes(x["p95_ms"] < 100)))
        form = ui["form_post"]
        rows.append(("(h) posting an event form", f"p50 {form['p50_ms']:.1f} ms, p95 {form['p95_ms']:.1f} ms",
                     f"{form['requests']} requests", "p95 < 100 ms", _yes(form["p95_ms"] < 100)))
        for name, x in ui["api"].items():
            rows.append((f"    page {name.replace('_', ' ')} / the API answer it shows, p95",
                         f"{ui['pages'][name]['p95_ms']:.1f} / {x['p95_ms']:.1f} ms", f"{x['page_to_api_p95']:.2f}x",
                         "(info)", ""))

    sealing = results.get("personal")
    if sealing:
        labels = {"i1_nps_known_person": "nps_recorded, a person seen before (one sealed field)",
                  "i1w_quote_20_quotes_kept": "quote_added on a record keeping 20 quotes (worst case)",
                  "i2_committed_new_person": "committed with a new champion (her key made)",
                  "i3_no_personal_field": "metrics_recorded (nothing to seal)"}
        for case, label in labels.items():
            x = sealing[case]
            target = x.get("target")
            rows.append((f"(i) store append, sealed vs today's, PostgreSQL: {label}",
                         f"today {x['plain']['events_per_s']:.0f} ev/s, sealed {x['sealed']['events_per_s']:.0f} ev/s",
                         f"{x['ratio']:.2f}x (median round {x['median_round_ratio']:.2f}x)",
                         f">= {target:.2f}x" if target else "(info)", _yes(x["met"]) if target else ""))

    proj = results.get("projections")
    if proj:
        n = proj["config"]["records"]
        for backend in ("postgresql", "sqlite"):
            r = proj.get(backend)
            if not r:
                continue
            live, rebuild = r["live"], r["rebuild"]
            rows.append((f"(d1) live projection vs rebuild, CPU per event, {backend}, {n:,} records",
                         f"live {live['cpu_us_per_event']:.0f} us ({live['events']:,} ev), rebuild "
                         f"{rebuild['cpu_us_per_event']:.0f} us ({rebuild['events']:,} ev)",
                         f"{r['ratio_live_to_rebuild_cpu']:.2f}x", "<= 2.0x", _yes(r["ratio_live_to_rebuild_cpu"] <= 2)))
            rows.append((f"(d3) rebuild vs raw read of the same rows, {backend}",
                         f"rebuild {rebuild['events_per_s']:,.0f} ev/s, raw read {r['raw_events_per_s']:,.0f} ev/s",
                         f"{r['ratio_rebuild_to_raw']:.2f}x", ">= 0.50x", _yes(r["ratio_rebuild_to_raw"] >= 0.5)))
            peak = max(live.get("vmhwm_mib", live["ru_maxrss_mib"]), rebuild.get("vmhwm_mib", rebuild["ru_maxrss_mib"]))
            rows.append((f"(d5) peak RSS (VmHWM): connected / live / rebuild, {backend}",
                         f"{r['baseline'].get('vmhwm_mib', 0):.0f} / {live.get('vmhwm_mib', 0):.0f} / "
                         f"{rebuild.get('vmhwm_mib', 0):.0f} MiB", f"{peak:.0f} MiB", "<= 200 MB",
                         _yes(peak * 1.048576 <= 200)))
        length = proj.get("stream_length")
        if length:
            rows.append(("(d2) live CPU per new event at version 1,000 vs 10 (PostgreSQL)",
                         f"v10 {length['v10']['cpu_us_per_event_median']:.0f} us, "
                         f"v1000 {length['v1000']['cpu_us_per_event_median']:.0f} us",
                         f"{length['ratio']:.2f}x", "about 1x", _yes(length["ratio"] <= 1.2)))
        reads = proj.get("reads")
        if reads:
            targets = {"stuck_now": 25, "stuck_past": 50, "weekly_now": 200 if n <= 10_000 else None,
                       "weekly_last_week": 1000}
            for name in ("stuck_now", "stuck_past", "weekly_now", "weekly_last_week", "pipeline_now",
                         "pipeline_past", "blockers_page", "records_past"):
                x = reads.get(name)
                if x is None:
                    continue
                target = targets.get(name)
                rows.append((f"(d4) GET {name.replace('_', ' ')}, PostgreSQL, {n:,} records",
                             f"p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms, up to {x['max_bytes'] / 1e3:.0f} kB",
                             f"{x['requests']} requests ({x['distinct_requests']} distinct)",
                             f"p99 <= {target} ms" if target else "(info)",
                             _yes(x["p99_ms"] <= target) if target else ""))
            if "weekly_now" in reads:
                rows.append(("    weekly report answer size", f"{reads['weekly_now']['max_bytes'] / 1e3:.0f} kB",
                             "", "<= 200 KB", _yes(reads["weekly_now"]["max_bytes"] <= 200_000)))
            csv = reads["stuck_csv"]
            rows.append(("(d4) the whole stuck list as CSV, streamed",
                         f"{csv['rows']:,} rows, {csv['bytes'] / 1e6:.1f} MB in {csv['seconds']:.2f} s", "", "(info)", ""))
            rss = reads["rss_mib"]
            rows.append(("(d5) peak RSS of gunicorn after every read (arbiter, workers)",
                         ", ".join(f"{v:.0f}" for v in rss.values()) + " MiB", f"{max(rss.values()):.0f} MiB",
                         "<= 200 MB", _yes(max(rss.values()) * 1.048576 <= 200)))

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
    for part in (part for part in PARTS if part in parts):  # in their own order, whatever argv's
        module, title = RUNS[part]
        log(f"== {title}")
        results[part] = importlib.import_module(f"bench.{module}").run()
    results["elapsed_s"] = time.perf_counter() - t0
    results["code_at_end"] = _code_version()  # a long run can outlive a commit: say so
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    print(summary(results))
    print(f"\nraw results: {RESULTS / 'latest.json'}  (total {results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
