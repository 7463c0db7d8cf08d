"""Benchmark (a): the full append path over HTTP vs a bare Flask + psycopg INSERT endpoint.

Both are served by gunicorn with 2 sync workers on PostgreSQL and driven by wrk with 16
connections and the same Lua script (post_events.lua): each request POSTs one quote_added
event to /case-studies/<id>/events, round-robin over pre-created streams. The two servers run
side by side and are measured alternately (bare, ours, bare, ours, ...) after a warm-up of
each, so drift of the machine hits both. Our server is the real one: ``casestudies db
upgrade``, ``casestudies keys create``, ``casestudies serve``; every request is a valid event
the service must accept with 201, and afterwards the number of stored quote_added events is
checked against the number of 201 responses.

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
    fresh_db,
    log,
    quiet_service_logging,
    sa_url,
)

BENCH_DIR = ROOT / "bench"
LUA = BENCH_DIR / "post_events.lua"
STREAM_PREFIX = "http"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            connections: int, meter: CpuMeter) -> dict:
    env = {**os.environ, "BENCH_KEY": key, "BENCH_STREAMS": str(streams),
           "BENCH_PREFIX": STREAM_PREFIX}
    with meter:
        out = subprocess.run(
            [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
             "-s", str(LUA), f"http://127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    result = json.loads(line.removeprefix("BENCH_JSON "))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
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
    with fresh_db("http_ours") as ours_db, fresh_db("http_bare") as bare_db:
        ours_url = sa_url(ours_db)
        env = {**os.environ, "DATABASE_URL": ours_url, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
        subprocess.run([casestudies, "db", "upgrade"], env=env, check=True, capture_output=True)
        key = subprocess.run([casestudies, "keys", "create", "--role", "writer", "--name", "bench"],
                             env=env, check=True, capture_output=True, text=True).stdout.split()[0]
        log(f"pre-creating {streams} streams")
        _precreate_streams(ours_url, streams)

        ours_port, bare_port = _free_port(), _free_port()
        # the service logs JSON lines (its own and gunicorn's) to stdout: keep them in a file
        ours_err = open(RESULTS / "http-ours-log.tmp", "w")  # noqa: SIM115
        bare_err = open(RESULTS / "http-bare-stderr.tmp", "w")  # noqa: SIM115
        ours = subprocess.Popen(
            [casestudies, "serve", "--port", str(ours_port), "--workers", str(workers)],
            env=env, stdout=ours_err, stderr=subprocess.STDOUT)
        bare_env = {**os.environ, "BARE_DATABASE_URL": f"{PG_URL}/{bare_db}"}
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_app", "--port", str(bare_port), "--workers", str(workers)],
            env=bare_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=bare_err)
        try:
            try:
                _wait_listening(ours_port, ours)
                _wait_listening(bare_port, bare)
            except RuntimeError as error:
                tails = {name: (RESULTS / f"http-{name}.tmp").read_text()[-2000:]
                         for name in ("ours-log", "bare-stderr")}
                raise RuntimeError(f"{error}; server stderr: {tails}") from None
            for port, name in ((ours_port, "ours"), (bare_port, "bare")):
                status, body = _post(port, f"{STREAM_PREFIX}-0", {"type": "quote_added", "data": QUOTE}, key)
                if status != 201:
                    raise RuntimeError(f"{name} server answered {status} to a valid event: {body}")
            sanity_quotes = 1

            servers = {"bare": bare_port, "ours": ours_port}
            meters = {"bare": lambda: CpuMeter(bare.pid, [bare_db]),
                      "ours": lambda: CpuMeter(ours.pid, [ours_db])}
            log(f"warm-up {warmup:g}s each")
            warm = {name: run_wrk(wrk, port, warmup, key, streams, threads, connections, meters[name]())
                    for name, port in servers.items()}
            runs: dict[str, list[dict]] = {"bare": [], "ours": []}
            for r in range(rounds):
                for name in ("bare", "ours"):
                    result = run_wrk(wrk, servers[name], seconds, key, streams, threads, connections,
                                     meters[name]())
                    runs[name].append(result)
                    cpu = result["cpu_ms_per_request"]
                    log(f"round {r + 1} {name}: {result['rps']:.0f} req/s, "
                        f"statuses {result['statuses']}, socket errors {result['socket_errors']}; "
                        f"CPU ms/request: server {cpu['server']:.2f}, postgres "
                        f"{cpu['postgres_backends'] + cpu['postgres_shared']:.2f}, wrk "
                        f"{cpu['load_generator']:.2f}, unattributed {cpu['other']:.2f}")
        finally:
            _stop(ours)
            _stop(bare)
            ours_err.close()
            bare_err.close()

        ours_201 = sum(r["statuses"].get("201", 0) for r in runs["ours"] + [warm["ours"]])
        stored_quotes = _count_quotes(ours_url) - sanity_quotes

    def total(name: str) -> dict:
        rs = runs[name]
        requests = sum(r["requests"] for r in rs)
        secs = sum(r["duration_us"] for r in rs) / 1e6
        return {"rps": requests / secs, "requests": requests,
                "per_round_rps": [round(r["rps"], 1) for r in rs],
                "non_2xx": sum(r["non_2xx"] for r in rs),
                "socket_errors": sum(r["socket_errors"] for r in rs),
                "statuses": [r["statuses"] for r in rs],
                "latency_p50_ms": [r["latency_us"]["p50"] / 1000 for r in rs],
                "latency_p99_ms": [r["latency_us"]["p99"] / 1000 for r in rs],
                "cpu_ms_per_request": {k: 1000 * sum(r["cpu_s"][k] for r in rs) / max(requests, 1)
                                       for k in rs[0]["cpu_s"]},
                "machine_busy_pct": 100 * sum(r["cpu_s"]["machine_busy"] for r in rs)
                / (secs * (os.cpu_count() or 1))}

    bare_total, ours_total = total("bare"), total("ours")
    ratio = ours_total["rps"] / bare_total["rps"]
    # every 201 is a stored event; a few more are stored than counted: the requests in flight
    # when wrk stops (at most one per connection per wrk run, warm-up included)
    in_flight = stored_quotes - ours_201
    consistent = 0 <= in_flight <= connections * (rounds + 1)
    return {
        "config": {"seconds": seconds, "warmup": warmup, "rounds": rounds, "streams": streams,
                   "connections": connections, "wrk_threads": threads, "gunicorn_workers": workers},
        "bare": bare_total,
        "ours": ours_total,
        "ratio": ratio,
        "per_round_ratio": [o["rps"] / b["rps"] for o, b in zip(runs["ours"], runs["bare"])],
        # interference from other work only ever slows a round down: best against best is the
        # figure least affected by it (the target is judged on ``ratio``, totals over all rounds)
        "ratio_best_rounds": max(r["rps"] for r in runs["ours"]) / max(r["rps"] for r in runs["bare"]),
        "ours_201_responses": ours_201,
        "ours_quote_events_stored": stored_quotes,
        "stored_vs_201_consistent": consistent,
        "target": 0.60,
        "met": ratio >= 0.60,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
