"""(h) The dashboard's pages at scale: every page of /ui/ timed over HTTP against `casestudies serve`
on PostgreSQL with BENCH_UI_RECORDS generated records (default 10,000), one signed-in client asking
sequentially, each page's 95th percentile against the 100 ms target. The API answers each page is
built on are timed in the same run, side by side, for the ratio.

    python -m bench dashboard        (or: bench/run.sh dashboard)
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import PG_URL, ROOT, env_int, free_port, fresh_db, log, pct, sa_url
from bench.projections import MachineMeter, prewarm

TARGET_P95_MS = 100


def _load(url: str, records: int, seed: int) -> dict:
    """Runs in a subprocess: migrate, generate and load every event and state row."""
    from bench.dataset import _migrate, load_url, make_dataset

    _migrate(url)
    events, states, info = make_dataset(records, seed)
    info["load_s"] = load_url(url, events, states)
    info["events"] = len(events)
    return info


def _vacuum(dbname: str) -> None:
    """VACUUM ANALYZE the loaded and rebuilt tables, as autovacuum would in time: a store that has
    just been bulk-loaded and rebuilt has no visibility map yet, which no running service sees."""
    import psycopg

    with psycopg.connect(f"{PG_URL}/{dbname}", autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _cli(env: dict, *args: str) -> str:
    casestudies = str(Path(sys.executable).with_name("casestudies"))
    return subprocess.run([casestudies, *args], env=env, check=True, capture_output=True, text=True).stdout.strip()


def _signed_in(client, key: str) -> None:
    page = client.get("/ui/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = client.post("/ui/sign-in", data={"key": key, "csrf_token": token})
    if answer.status_code != 302:
        raise RuntimeError(f"sign-in answered {answer.status_code}")


def _pages(client, api, ids: list[str], now: datetime) -> dict[str, list[str]]:
    """The requests of each kind: several distinct ones where a page has filters or more pages."""
    past = (now - timedelta(days=30)).date().isoformat()
    last_week = (now - timedelta(days=7)).date().isoformat()
    stuck = api.get("/projections/stuck?limit=100").json()
    csms = [item["csm"] for item in stuck["items"]]
    busiest = max(set(csms), key=csms.count)
    accounts = [api.get(f"/case-studies/{i}").json()["account"]["name"] for i in ids[:5]]

    def next_pages(first: str, count: int) -> list[str]:
        paths, path = [first], first
        for _ in range(count):
            found = re.search(r'href="([^"]+)" rel="next"', client.get(path).text)
            if not found:
                break
            path = found.group(1).replace("&amp;", "&")
            paths.append(path)
        return paths

    return {
        "board": ["/ui/board", f"/ui/board?csm={busiest}", *(f"/ui/board?account={a}" for a in accounts[:3])],
        "board_as_of_past": [f"/ui/board?as_of={past}", f"/ui/board?as_of={past}&csm={busiest}"],
        "records": next_pages("/ui/records", 4) + ["/ui/records?status=in_progress", f"/ui/records?csm={busiest}"],
        "record": [f"/ui/records/{i}" for i in ids],
        "stuck": next_pages("/ui/stuck", 4) + ["/ui/stuck?sort=longest", "/ui/stuck?code=no_activity",
                                                f"/ui/stuck?csm={busiest}"],
        "stuck_as_of_past": [f"/ui/stuck?as_of={past}", f"/ui/stuck?as_of={past}&sort=longest"],
        "blockers": next_pages("/ui/blockers", 4) + ["/ui/blockers?sort=longest", "/ui/blockers?code=approval_pending"],
        "weekly": ["/ui/weekly"],
        "weekly_last_week": [f"/ui/weekly?week_ending={last_week}"],
        "cycle_times": ["/ui/cycle-times", f"/ui/cycle-times?csm={busiest}"],
        "life_cycle": ["/ui/life-cycle"],
        "operations": ["/ui/operations", "/ui/operations?status=sent"],
    }


API_COUNTERPARTS = {  # the API answer a page is built on, for the side-by-side ratio
    "board": "/projections/pipeline",
    "stuck": "/projections/stuck?limit=50",
    "blockers": "/projections/blockers?limit=50",
    "weekly": "/reports/weekly",
    "cycle_times": "/projections/cycle-times",
}


def _time(client, paths: list[str], requests: int) -> dict[str, Any]:
    for path in paths:  # warm-up: one of each
        answer = client.get(path)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[:300]}")
    samples, sizes = [], []
    with MachineMeter() as meter:
        for i in range(requests):
            path = paths[i % len(paths)]
            t = time.perf_counter()
            answer = client.get(path)
            samples.append((time.perf_counter() - t) * 1000)
            sizes.append(len(answer.content))
            if answer.status_code != 200:
                raise RuntimeError(f"GET {path} answered {answer.status_code}")
    return {"requests": requests, "distinct_requests": len(paths), "p50_ms": pct(samples, 50),
            "p95_ms": pct(samples, 95), "p99_ms": pct(samples, 99), "max_bytes": max(sizes), "machine": meter.result}


def _time_forms(client, ids: list[str], requests: int) -> dict[str, Any]:
    """Posting an event form (a quote) and following nothing: the append through the page."""
    samples = []
    for i in range(requests):
        stream_id = ids[i % len(ids)]
        page = client.get(f"/ui/records/{stream_id}").text
        if 'value="quote_added"' not in page:
            continue
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        version = re.search(r'name="expected_version" value="(\d+)"', page).group(1)
        t = time.perf_counter()
        answer = client.post(f"/ui/records/{stream_id}/events", data={
            "csrf_token": token, "type": "quote_added", "event_id": str(uuid.uuid4()), "expected_version": version,
            "text": "It paid for itself.", "speaker": "Kim Park"})
        samples.append((time.perf_counter() - t) * 1000)
        if answer.status_code != 303:
            raise RuntimeError(f"posting a form answered {answer.status_code}: {answer.text[:300]}")
    return {"requests": len(samples), "p50_ms": pct(samples, 50), "p95_ms": pct(samples, 95),
            "p99_ms": pct(samples, 99)}


def run() -> dict:
    import httpx

    from bench.http_append import _stop, _wait_listening

    records = env_int("BENCH_UI_RECORDS", 10_000)
    seed = env_int("BENCH_UI_SEED", 20261203)
    requests = env_int("BENCH_UI_REQUESTS", 100)
    results: dict[str, Any] = {"config": {"records": records, "seed": seed, "requests_per_page": requests,
                                          "target_p95_ms": TARGET_P95_MS}}
    with fresh_db("ui") as dbname:
        url = sa_url(dbname)
        log(f"generating and loading {records:,} case studies on PostgreSQL (not timed)")
        out = subprocess.run([sys.executable, "-m", "bench.dashboard", "--load", url, str(records), str(seed)],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
        results["data"] = json.loads(out.splitlines()[-1])
        env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", "LOG_LEVEL": "warning"}
        _cli(env, "projections", "rebuild")
        _vacuum(dbname)
        keys = {role: _cli(env, "keys", "create", "--role", role, "--name", f"bench-{role}").split()[0]
                for role in ("admin", "writer")}
        port = free_port()
        prewarm(url)
        server = subprocess.Popen([str(Path(sys.executable).with_name("casestudies")), "serve", "--port", str(port),
                                   "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_listening(port, server)
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=60) as admin, httpx.Client(base_url=base, timeout=60) as writer, \
                    httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {keys['admin']}"}) as api:
                _signed_in(admin, keys["admin"])
                _signed_in(writer, keys["writer"])
                rng = random.Random(seed)
                ids = [f"cs-{rng.randrange(records):06d}" for _ in range(50)]
                now = datetime.fromisoformat(results["data"]["generated_at"])
                pages = _pages(admin, api, ids, now)
                results["pages"] = {}
                for name, paths in pages.items():
                    results["pages"][name] = figures = _time(admin, paths, requests)
                    log(f"  {name}: p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms, p99 "
                        f"{figures['p99_ms']:.1f} ms over {requests} requests ({len(paths)} distinct), up to "
                        f"{figures['max_bytes'] / 1e3:.0f} kB")
                results["pages"]["record_as_writer"] = _time(writer, pages["record"], requests)
                results["form_post"] = _time_forms(writer, ids, requests)
                log(f"  posting an event form: p95 {results['form_post']['p95_ms']:.1f} ms")
                results["api"] = {}
                for name, path in API_COUNTERPARTS.items():
                    results["api"][name] = figures = _time(api, [path], requests)
                    page = results["pages"][name]
                    figures["page_to_api_p95"] = page["p95_ms"] / figures["p95_ms"]
                    log(f"  {name}: page p95 {page['p95_ms']:.1f} ms vs API {path} p95 {figures['p95_ms']:.1f} ms: "
                        f"{figures['page_to_api_p95']:.2f}x")
        finally:
            _stop(server)
    worst = max(results["pages"].values(), key=lambda figures: figures["p95_ms"])
    results["worst_p95_ms"] = worst["p95_ms"]
    results["met"] = all(figures["p95_ms"] < TARGET_P95_MS for figures in results["pages"].values()) and \
        results["form_post"]["p95_ms"] < TARGET_P95_MS
    return results


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--load":
        print(json.dumps(_load(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])), default=str), flush=True)
