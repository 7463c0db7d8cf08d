"""Benchmark (a): the full append path over HTTP vs a bare Flask + psycopg INSERT endpoint.

Three servers, each served by gunicorn with 2 sync workers on PostgreSQL and driven by wrk with
16 connections and the same Lua script (post_events.lua): each request POSTs one quote_added
event to /case-studies/<id>/events, round-robin over pre-created streams. They run side by side
and are measured in turn (bare, ours, ours without helpers, bare, ...) after a warm-up of each,
so drift of the machine hits all. Ours is the real service: ``casestudies db upgrade``,
``casestudies keys create``, ``casestudies serve`` as a user runs it (the projections and
notifications helpers on), and once more with ``--no-projectors --no-notifications``. Every
request is a valid event the service must accept with 201; afterwards the number of stored
quote_added events is checked against the number of 201 responses.

With the helpers on, a round ends only when the projections have caught up with what it wrote:
the time they take after wrk stops counts in the round (and their CPU in its CPU figures), so the
figure is the rate the whole service sustains, not one that leaves a backlog behind.

Run alone: ``.venv/bin/python -m bench.http_append``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.common import (
    COMMITTED,
    PG_URL,
    QUOTE,
    RESULTS,
    ROOT,
    CpuMeter,
    env_float,
    env_int,
    free_port,
    fresh_db,
    log,
    quiet_service_logging,
    sa_url,
)

BENCH_DIR = ROOT / "bench"
LUA = BENCH_DIR / "post_events.lua"
STREAM_PREFIX = "http"


def ensure_wrk() -> str | None:
    """The path of wrk, installing it with apt-get when we are root and it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing; installing it with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        return shutil.which("wrk")
    return None


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start listening")


def _post(port: int, stream_id: str, body: dict, key: str) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/case-studies/{stream_id}/events",
        data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # gunicorn's arbiter stops its workers
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_wrk(wrk: str, port: int, seconds: float, key: str, streams: int, threads: int,
            connections: int, meter: CpuMeter, settle=None) -> dict:
    """One wrk run; ``settle`` (if given) runs after it inside the measured window and returns the
    seconds it waited for the server's helpers to finish what the run left them."""
    env = {**os.environ, "BENCH_KEY": key, "BENCH_STREAMS": str(streams),
           "BENCH_PREFIX": STREAM_PREFIX}
    with meter:
        out = subprocess.run(
            [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
             "-s", str(LUA), f"http://127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, check=True).stdout
        settled = settle() if settle is not None else 0.0
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    result = json.loads(line.removeprefix("BENCH_JSON "))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["settle_s"] = settled
    result["duration_us"] += settled * 1e6
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["wrk_rps"] = float(rps.group(1)) if rps else None
    result["non_2xx"] = sum(n for s, n in result["statuses"].items() if not s.startswith("2"))
    result["socket_errors"] = sum(result["errors"][k] for k in ("connect", "read", "write", "timeout"))
    result["cpu_s"] = meter.cpu
    result["cpu_ms_per_request"] = {k: 1000 * v / max(result["requests"], 1) for k, v in meter.cpu.items()}
    return result


def _precreate_streams(url: str, streams: int) -> None:
    """Commit ``streams`` records through the store (not timed)."""
    from service.events.backends import make_engine
    from service.events.event import NewEvent
    from service.events.store import EventStore

    engine = make_engine(url)
    store = EventStore(engine)
    for n in range(streams):
        store.append(f"{STREAM_PREFIX}-{n}", [NewEvent("committed", COMMITTED)], actor="bench-setup")
    engine.dispose()


def _count_quotes(url: str) -> int:
    from sqlalchemy import text

    from service.events.backends import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text("select count(*) from events where type = 'quote_added'")).scalar_one()
    engine.dispose()
    return count


def projections_settled(dbname: str, timeout: float = 120.0) -> float:
    """Wait until the projections of ``dbname`` have read every stored event; the seconds waited."""
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(f"{PG_URL}/{dbname}", autocommit=True) as conn:
        while time.perf_counter() - t0 < timeout:
            head = conn.execute("select coalesce(max(position), 0) from events").fetchone()[0]
            read = conn.execute("select coalesce(max(position), 0) from projection_checkpoints").fetchone()[0]
            if read >= head:
                return time.perf_counter() - t0
            time.sleep(0.02)
    raise RuntimeError(f"the projections of {dbname} did not catch up within {timeout:g} s")


SIDES = ("bare", "ours", "plain")  # plain: ours without the helpers
LABELS = {"bare": "bare Flask + psycopg", "ours": "casestudies serve (helpers on)",
          "plain": "casestudies serve --no-projectors --no-notifications"}
TARGETS = {"ours": 0.50, "plain": 0.60}


def run() -> dict:
    seconds = env_float("BENCH_HTTP_SECONDS", 10)
    warmup = env_float("BENCH_HTTP_WARMUP", 3)
    rounds = env_int("BENCH_HTTP_ROUNDS", 2)
    streams = env_int("BENCH_HTTP_STREAMS", 1000)
    connections = env_int("BENCH_HTTP_CONNECTIONS", 16)
    threads = env_int("BENCH_WRK_THREADS", 1)
    workers = env_int("BENCH_HTTP_WORKERS", 2)

    wrk = ensure_wrk()
    if wrk is None:
        msg = "wrk is not installed (apt-get install -y wrk); skipping the HTTP benchmark"
        log(msg)
        return {"skipped": msg}

    quiet_service_logging()
    casestudies = str(Path(sys.executable).with_name("casestudies"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with fresh_db("http_ours") as ours_db, fresh_db("http_plain") as plain_db, fresh_db("http_bare") as bare_db:
        dbs = {"ours": ours_db, "plain": plain_db, "bare": bare_db}
        keys, servers, procs, logs = {}, {}, {}, []
        for side, flags in (("ours", []), ("plain", ["--no-projectors", "--no-notifications"])):
            url = sa_url(dbs[side])
            env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
            subprocess.run([casestudies, "db", "upgrade"], env=env, check=True, capture_output=True)
            keys[side] = subprocess.run([casestudies, "keys", "create", "--role", "writer", "--name", "bench"],
                                        env=env, check=True, capture_output=True, text=True).stdout.split()[0]
            log(f"pre-creating {streams} streams for {side}")
            _precreate_streams(url, streams)
            servers[side] = free_port()
            # the service logs JSON lines (its own and gunicorn's) to stdout: keep them in a file
            logs.append(open(RESULTS / f"http-{side}-log.tmp", "w"))  # noqa: SIM115
            procs[side] = subprocess.Popen(
                [casestudies, "serve", "--port", str(servers[side]), "--workers", str(workers), *flags],
                env=env, stdout=logs[-1], stderr=subprocess.STDOUT)
        keys["bare"] = keys["ours"]
        servers["bare"] = free_port()
        logs.append(open(RESULTS / "http-bare-log.tmp", "w"))  # noqa: SIM115
        procs["bare"] = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_app", "--port", str(servers["bare"]), "--workers", str(workers)],
            env={**os.environ, "BARE_DATABASE_URL": f"{PG_URL}/{bare_db}"}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=logs[-1])
        try:
            try:
                for side in SIDES:
                    _wait_listening(servers[side], procs[side])
            except RuntimeError as error:
                tails = {side: (RESULTS / f"http-{side}-log.tmp").read_text()[-2000:] for side in SIDES}
                raise RuntimeError(f"{error}; server logs: {tails}") from None
            for side in SIDES:
                status, body = _post(servers[side], f"{STREAM_PREFIX}-0", {"type": "quote_added", "data": QUOTE},
                                     keys[side])
                if status != 201:
                    raise RuntimeError(f"{side} server answered {status} to a valid event: {body}")
            settle = {"ours": lambda: projections_settled(ours_db)}
            meters = {side: (lambda side=side: CpuMeter(procs[side].pid, [dbs[side]])) for side in SIDES}
            log(f"warm-up {warmup:g}s each")
            warm = {side: run_wrk(wrk, servers[side], warmup, keys[side], streams, threads, connections,
                                  meters[side](), settle.get(side)) for side in SIDES}
            runs: dict[str, list[dict]] = {side: [] for side in SIDES}
            for r in range(rounds):
                for side in SIDES:
                    result = run_wrk(wrk, servers[side], seconds, keys[side], streams, threads, connections,
                                     meters[side](), settle.get(side))
                    runs[side].append(result)
                    cpu = result["cpu_ms_per_request"]
                    log(f"round {r + 1} {side}: {result['rps']:.0f} req/s"
                        + (f" (projections caught up {result['settle_s']:.2f} s after wrk stopped)"
                           if side in settle else "")
                        + f", statuses {result['statuses']}, socket errors {result['socket_errors']}; "
                        f"CPU ms/request: server {cpu['server']:.2f}, postgres "
                        f"{cpu['postgres_backends'] + cpu['postgres_shared']:.2f}, wrk "
                        f"{cpu['load_generator']:.2f}, unattributed {cpu['other']:.2f}")
        finally:
            for proc in procs.values():
                _stop(proc)
            for handle in logs:
                handle.close()

        stored = {side: _count_quotes(sa_url(dbs[side])) - 1 for side in ("ours", "plain")}  # -1: the sanity POST
        answered = {side: sum(r["statuses"].get("201", 0) for r in runs[side] + [warm[side]])
                    for side in ("ours", "plain")}

    def total(side: str) -> dict:
        rs = runs[side]
        requests = sum(r["requests"] for r in rs)
        secs = sum(r["duration_us"] for r in rs) / 1e6
        return {"label": LABELS[side], "rps": requests / secs, "requests": requests,
                "per_round_rps": [round(r["rps"], 1) for r in rs],
                "settle_s": [round(r["settle_s"], 3) for r in rs],
                "non_2xx": sum(r["non_2xx"] for r in rs),
                "socket_errors": sum(r["socket_errors"] for r in rs),
                "statuses": [r["statuses"] for r in rs],
                "latency_p50_ms": [r["latency_us"]["p50"] / 1000 for r in rs],
                "latency_p99_ms": [r["latency_us"]["p99"] / 1000 for r in rs],
                "cpu_ms_per_request": {k: 1000 * sum(r["cpu_s"][k] for r in rs) / max(requests, 1)
                                       for k in rs[0]["cpu_s"]},
                "machine_busy_pct": 100 * sum(r["cpu_s"]["machine_busy"] for r in rs)
                / (secs * (os.cpu_count() or 1))}

    out = {"config": {"seconds": seconds, "warmup": warmup, "rounds": rounds, "streams": streams,
                      "connections": connections, "wrk_threads": threads, "gunicorn_workers": workers}}
    out.update({side: total(side) for side in SIDES})
    for side, target in TARGETS.items():
        ratio = out[side]["rps"] / out["bare"]["rps"]
        # every 201 is a stored event; a few more are stored than counted: the requests in flight
        # when wrk stops (at most one per connection per wrk run, warm-up included)
        in_flight = stored[side] - answered[side]
        out[side].update({
            "ratio": ratio,
            "per_round_ratio": [o["rps"] / b["rps"] for o, b in zip(runs[side], runs["bare"])],
            # interference from other work only ever slows a round down: best against best is the
            # figure least affected by it (the target is judged on ``ratio``, totals over all rounds)
            "ratio_best_rounds": max(r["rps"] for r in runs[side]) / max(r["rps"] for r in runs["bare"]),
            "responses_201": answered[side], "quote_events_stored": stored[side],
            "stored_vs_201_consistent": 0 <= in_flight <= connections * (rounds + 1),
            "target": target, "met": ratio >= target})
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
