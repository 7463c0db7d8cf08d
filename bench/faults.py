"""The fault suite: the service as deployed (nginx in front of `casestudies serve`, helpers on) on
a PostgreSQL cluster of its own (initdb and pg_ctl in a temporary folder, on a free port; never
the shared server), written to by retrying clients while faults are injected on a schedule:

* a gunicorn worker killed with SIGKILL, another with SIGTERM;
* PostgreSQL restarted, fast (clean shutdown) and immediate (crash), under load;
* the projections worker and the outbox dispatcher killed;
* slow clients dawdling at the proxy all along.

Every writer appends ``quote_added`` events with an event id of its own and retries the same id
until it gets a 2xx (as CRM automations do). Afterwards every acknowledged write is accounted for
by event id: stored once, at the version and position it was acknowledged with, no version
gaps; the status codes seen, and the seconds from each database restart to the first write
acknowledged after it. The helpers must have been restarted and the projections must match a
rebuild.

``python -m bench faults`` prints the figures; ``tests/e2e/test_faults.py`` runs it shorter and
asserts the accounting.
"""
from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.common import COMMITTED, QUOTE, Crowd, children, env_float, env_int, free_port, log
from bench.proxy import nginx_binary, nginx_in_front
from bench.slow_clients import Dawdlers


def _postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not versions:
        raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    return versions[-1].parent


class Cluster:
    """A PostgreSQL cluster of this run's own; run as the ``postgres`` user when we are root
    (initdb refuses root)."""

    def __init__(self, folder: Path):
        self.bin = _postgres_bin()
        self.data = folder / "data"
        self.port = free_port()
        self.log = folder / "postgres.log"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr or done.stdout}")
        return done

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._ctl("start")

    def _ctl(self, action: str, *extra: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off", action, *extra)

    def restart(self, mode: str) -> None:
        self._ctl("restart", "-m", mode)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)


class Writers(Crowd):
    """``count`` clients, each appending to a record of its own through ``base`` and retrying
    the same event id until answered 2xx."""

    join_seconds = 60.0

    def __init__(self, base: str, key: str, count: int):
        super().__init__(count)
        self.base, self.key = base, key
        self.statuses: Counter = Counter()
        self.acknowledged: dict[str, tuple[str, int, int]] = {}  # event id -> (stream, version, position)
        self.mismatches: list[str] = []  # a retry answered differently from the first answer
        self.refused: list[str] = []  # a valid event answered 4xx: a defect
        self.acked_at: list[float] = []  # monotonic times of acknowledgements
        self._lock = threading.Lock()

    def _post(self, stream: str, body: dict) -> tuple[int | None, dict | None]:
        request = urllib.request.Request(f"{self.base}/case-studies/{stream}/events", data=json.dumps(body).encode(),
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 "Authorization": f"Bearer {self.key}"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, None
        except (OSError, http.client.HTTPException):  # no answer, or one cut short (a worker killed mid-answer)
            return None, None

    def _one(self, index: int) -> None:
        stream, first = f"fault-{index}-{uuid.uuid4().hex[:8]}", True
        while not self.stop.is_set():
            event_id = str(uuid.uuid4())
            body = ({"type": "committed", "data": COMMITTED} if first else {"type": "quote_added", "data": QUOTE})
            body["event_id"] = event_id
            answered = None
            while answered is None:  # the same id until it is answered; once started, finished
                status, document = self._post(stream, body)
                with self._lock:
                    self.statuses["no answer" if status is None else str(status)] += 1
                if status in (200, 201):
                    answered = (stream, document["version"], document["position"])
                elif status is not None and status < 500 and status != 429:
                    with self._lock:
                        self.refused.append(f"{stream} {event_id}: {status}")
                    return
                else:
                    time.sleep(0.2)
            with self._lock:
                known = self.acknowledged.get(event_id)
                if known is not None and known != answered:
                    self.mismatches.append(event_id)
                self.acknowledged[event_id] = answered
                self.acked_at.append(time.monotonic())
            first = False


def _helper(server: subprocess.Popen, mark: str) -> int:
    return next(pid for pid, command in children(server.pid).items() if mark in command)


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def _served(url: str, folder: Path, port: int) -> Iterator[subprocess.Popen]:
    casestudies = str(Path(sys.executable).with_name("casestudies"))
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", "LOG_LEVEL": "warning"}
    with open(folder / "serve.log", "w") as serve_log:
        server = subprocess.Popen([casestudies, "serve", "--port", str(port), "--workers", "2", "--timeout", "10"],
                                  env=env, stdout=serve_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}", "/readyz")["status"] == "ready":
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {(folder / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        server.terminate()
        server.wait(30)


def run(seconds: float | None = None, writers: int | None = None) -> dict:
    if nginx_binary() is None:
        log("nginx is not installed (apt-get install -y nginx); skipping the fault suite")
        return {"skipped": "nginx is not installed"}
    seconds = seconds or env_float("BENCH_FAULTS_SECONDS", 40)
    writers = writers or env_int("BENCH_FAULTS_WRITERS", 16)
    casestudies = str(Path(sys.executable).with_name("casestudies"))
    # the faults, at these fractions of the run
    schedule = [(0.10, "worker SIGKILL"), (0.20, "worker SIGTERM"), (0.30, "postgres restart fast"),
                (0.50, "postgres restart immediate"), (0.65, "projections helper SIGKILL"),
                (0.75, "notifications helper SIGKILL")]
    with tempfile.TemporaryDirectory(prefix="casestudies-faults-") as root:
        folder = Path(root)
        folder.chmod(0o755)  # the postgres user must reach its cluster's folder
        (folder / "pg").mkdir()
        (folder / "nginx").mkdir()
        cluster = Cluster(folder / "pg")
        cluster.start()
        try:
            env = {**os.environ, "DATABASE_URL": cluster.url, "LOG_FORMAT": "json"}
            subprocess.run([casestudies, "db", "upgrade"], env=env, check=True, capture_output=True)
            key = subprocess.run([casestudies, "keys", "create", "--role", "writer", "--name", "crm"], env=env,
                                 check=True, capture_output=True, text=True).stdout.split()[0]
            api_port = free_port()
            with _served(cluster.url, folder, api_port) as server, \
                    nginx_in_front(f"127.0.0.1:{api_port}", folder / "nginx", free_port()) as base:
                restarts: dict[str, float] = {}
                restarted: dict[str, float] = {}  # how long pg_ctl took to restart it
                with Dawdlers(int(base.rsplit(":", 1)[1]), 50), Writers(base, key, writers) as load:
                    started = time.monotonic()
                    for at, fault in schedule:
                        time.sleep(max(0.0, started + at * seconds - time.monotonic()))
                        log(f"fault at {time.monotonic() - started:.1f} s: {fault}")
                        if fault.startswith("worker"):
                            arbiter = _helper(server, "service.wsgi")
                            worker = min(children(arbiter))
                            os.kill(worker, signal.SIGKILL if fault.endswith("SIGKILL") else signal.SIGTERM)
                        elif fault.startswith("postgres"):
                            restarts[fault] = time.monotonic()
                            cluster.restart("fast" if "fast" in fault else "immediate")
                            restarted[fault] = round(time.monotonic() - restarts[fault], 2)
                        else:
                            group = fault.split()[0]
                            os.kill(_helper(server, f"service.cli {group} run"), signal.SIGKILL)
                    time.sleep(max(0.0, started + seconds - time.monotonic()))
                recovered = {fault: {"restart_took_s": restarted[fault],
                                     "longest_pause_in_writes_s": _longest_pause(load.acked_at, at, at + 15)}
                             for fault, at in restarts.items()}
                details = _wait_projected(base)
            verify = subprocess.run([casestudies, "projections", "verify"], env=env, capture_output=True, text=True)
            stored = _stored(cluster.url)
        finally:
            cluster.stop()
    return _account(load, stored, recovered, details, verify, seconds, writers)


def _longest_pause(times: list[float], start: float, end: float) -> float:
    """The longest time between two acknowledged writes (or ``start`` and the first) in [start, end]:
    how long clients saw no write succeed around a fault."""
    inside = [start] + [t for t in sorted(times) if start < t <= end]
    return round(max((b - a for a, b in zip(inside, inside[1:])), default=end - start), 2)


def _wait_projected(base: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        details = _get(base, "/healthz/details")
        if details["status"] == "ok" and details["helpers"]["projections"].get("lag_events") == 0:
            return details
        if time.monotonic() > deadline:
            return details
        time.sleep(1)


def _stored(url: str) -> list[tuple[str, str, int, int]]:
    from sqlalchemy import text

    from service.events.backends import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(
                "SELECT event_id, stream_id, version, position FROM events ORDER BY position"))]
    finally:
        engine.dispose()


def _account(load: Writers, stored: list, recovered: dict, details: dict, verify, seconds: float,
             writers: int) -> dict:
    by_id: dict[str, list[tuple[str, int, int]]] = {}
    versions: dict[str, list[int]] = {}
    for event_id, stream, version, position in stored:
        by_id.setdefault(event_id, []).append((stream, version, position))
        versions.setdefault(stream, []).append(version)
    lost = [e for e in load.acknowledged if e not in by_id]
    unacknowledged = [e for e in by_id if e not in load.acknowledged]
    doubled = [e for e, rows in by_id.items() if len(rows) > 1]
    moved = [e for e, answer in load.acknowledged.items() if e in by_id and by_id[e][0] != answer]
    gaps = [s for s, v in versions.items() if sorted(v) != list(range(1, len(v) + 1))]
    helpers = details.get("helpers", {})
    return {
        "seconds": seconds, "writers": writers,
        "acknowledged": len(load.acknowledged), "stored": len(stored),
        "stored_unacknowledged": len(unacknowledged), "valid_writes_refused": load.refused,
        "lost": len(lost), "stored_twice": len(doubled), "stored_elsewhere": len(moved),
        "retry_answered_differently": len(load.mismatches), "streams_with_gaps": len(gaps),
        "statuses": dict(sorted(load.statuses.items())),
        "database_restarts": recovered,
        "helper_restarts": {name: helper.get("restarts") for name, helper in helpers.items()},
        "health_at_end": details.get("status"), "projection_lag_at_end": helpers.get("projections", {}).get("lag_events"),
        "projections_match_a_rebuild": verify.returncode == 0,
        "verify_output": verify.stdout[-2000:],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
