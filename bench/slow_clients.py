"""Benchmark (f): slow clients against the deployment (nginx from deploy/ in front of `casestudies
serve`, 2 sync workers, PostgreSQL).

Rounds alternate: wrk appending over 16 connections alone, then the same while ``BENCH_SLOW_STALLED``
(200) other connections dawdle (half send their headers a line every 4 s, half start a chunked
body and never finish it; each reconnects when the proxy cuts it off). Figures: append
throughput loaded / unloaded (target >= 0.80) and the appends' p99 under load (target < 100 ms).
For contrast, the same load against `serve` with no proxy and a handful of dawdlers.

Run alone: ``.venv/bin/python -m bench slow``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.common import (
    RESULTS,
    CpuMeter,
    Crowd,
    env_float,
    env_int,
    free_port,
    fresh_db,
    log,
    quiet_service_logging,
    sa_url,
)
from bench.http_append import (
    _precreate_streams,
    _stop,
    _wait_listening,
    ensure_wrk,
    run_wrk,
)
from bench.proxy import nginx_binary, nginx_in_front


class Dawdlers(Crowd):
    """``count`` slow connections to ``port``, kept open (reconnecting when cut) until stopped."""

    def __init__(self, port: int, count: int):
        super().__init__(count)
        self.port = port
        self.cut = 0

    def _one(self, index: int) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    if index % 2:
                        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    else:
                        sock.sendall(b"POST /case-studies/x/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                     b"chunked\r\nContent-Type: application/json\r\n\r\n5\r\n{\"ty\r\n")
                    sock.settimeout(4.0)
                    while not self.stop.is_set():
                        try:
                            sock.recv(4096)  # returns once the proxy has closed the connection
                            break
                        except TimeoutError:
                            if index % 2:
                                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass
            if not self.stop.is_set():
                self.cut += 1  # the proxy hung up on it
            self.stop.wait(0.1)


def run() -> dict:
    seconds = env_float("BENCH_SLOW_SECONDS", 10)
    rounds = env_int("BENCH_SLOW_ROUNDS", 2)
    stalled = env_int("BENCH_SLOW_STALLED", 200)
    streams, connections = 1000, 16
    wrk = ensure_wrk()
    if wrk is None or nginx_binary() is None:
        msg = "wrk or nginx is not installed (apt-get install -y wrk nginx); skipping the slow-client benchmark"
        log(msg)
        return {"skipped": msg}
    quiet_service_logging()
    casestudies = str(Path(sys.executable).with_name("casestudies"))
    with fresh_db("slow") as db, tempfile.TemporaryDirectory() as folder:
        url = sa_url(db)
        env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", "LOG_LEVEL": "warning"}
        subprocess.run([casestudies, "db", "upgrade"], env=env, check=True, capture_output=True)
        key = subprocess.run([casestudies, "keys", "create", "--role", "writer", "--name", "bench"], env=env,
                             check=True, capture_output=True, text=True).stdout.split()[0]
        _precreate_streams(url, streams)
        api_port, proxy_port = free_port(), free_port()
        with open(Path(folder) / "serve.log", "w") as serve_log:
            server = subprocess.Popen([casestudies, "serve", "--port", str(api_port), "--workers", "2",
                                       "--no-projectors", "--no-notifications"], env=env, stdout=serve_log,
                                      stderr=subprocess.STDOUT)
        try:
            _wait_listening(api_port, server)
            with nginx_in_front(f"127.0.0.1:{api_port}", Path(folder), proxy_port):
                meter = lambda: CpuMeter(server.pid, [db])  # noqa: E731
                run_wrk(wrk, proxy_port, 3, key, streams, 1, connections, meter())  # warm-up
                runs: dict[str, list[dict]] = {"alone": [], "with_slow": []}
                for r in range(rounds):
                    alone = run_wrk(wrk, proxy_port, seconds, key, streams, 1, connections, meter())
                    with Dawdlers(proxy_port, stalled) as dawdlers:
                        threading.Event().wait(1.0)
                        loaded = run_wrk(wrk, proxy_port, seconds, key, streams, 1, connections, meter())
                    runs["alone"].append(alone)
                    runs["with_slow"].append(loaded)
                    log(f"round {r + 1}: alone {alone['rps']:.0f} req/s p99 {alone['latency_us']['p99'] / 1e3:.1f} ms; "
                        f"with {stalled} slow connections {loaded['rps']:.0f} req/s p99 "
                        f"{loaded['latency_us']['p99'] / 1e3:.1f} ms (statuses {loaded['statuses']}, socket errors "
                        f"{loaded['socket_errors']}; the proxy cut {dawdlers.cut} slow connections)")
            few = env_int("BENCH_SLOW_BARE_STALLED", 6)
            with Dawdlers(api_port, few):
                threading.Event().wait(1.0)
                bare = run_wrk(wrk, api_port, seconds, key, streams, 1, connections, CpuMeter(server.pid, [db]))
            log(f"no proxy, {few} slow connections: {bare['rps']:.0f} req/s, p99 {bare['latency_us']['p99'] / 1e3:.0f} ms, "
                f"socket errors {bare['socket_errors']}")
        finally:
            _stop(server)
    ratio = sum(r["rps"] for r in runs["with_slow"]) / sum(r["rps"] for r in runs["alone"])
    p99 = max(r["latency_us"]["p99"] for r in runs["with_slow"]) / 1e3
    RESULTS.mkdir(parents=True, exist_ok=True)
    return {"stalled": stalled, "seconds": seconds, "rounds": runs, "ratio": ratio, "p99_ms_with_slow": p99,
            "bare": {"stalled": few, **bare}}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2, default=str))
