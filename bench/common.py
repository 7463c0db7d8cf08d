"""Shared helpers: fresh PostgreSQL databases, quiet logging, payloads, statistics."""
from __future__ import annotations

import base64
import contextlib
import os
import re
import resource
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import psycopg

# The master key of personal data for every benchmark and the servers and commands it starts
# (a fresh one per run: benchmark databases are dropped afterwards).
os.environ.setdefault("PERSONAL_DATA_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# Admin connection to the server (no database part); override with BENCH_PG_URL.
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")

COMMITTED = {
    "account": {"id": "acc-1", "name": "Acme"},
    "csm": "Dana",
    "champion": {"name": "Jo", "title": "VP"},
    "use_case": "faster onboarding",
    "close_date": "2026-10-01",
}
QUOTE = {"text": "It made onboarding twice as fast for our whole team.", "speaker": "Jo"}


def metrics(n: int) -> dict:
    """A metrics_recorded payload that overwrites one key, so the record's state does not grow."""
    return {"kind": "current", "metrics": {"m": n}}


def pg_admin() -> psycopg.Connection:
    return psycopg.connect(f"{PG_URL}/postgres", autocommit=True)


def pg_parts() -> dict[str, str]:
    """Host/port/user/password of PG_URL, for libraries configured by parts (eventsourcing)."""
    info = psycopg.conninfo.conninfo_to_dict(f"{PG_URL}/postgres")
    return {"host": info.get("host", "127.0.0.1"), "port": str(info.get("port", "5432")),
            "user": info.get("user", "postgres"), "password": info.get("password", "")}


def create_db(prefix: str) -> str:
    """Create a fresh, uniquely named database and return its name."""
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_db(name: str) -> None:
    with pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_db(prefix: str) -> Iterator[str]:
    name = create_db(prefix)
    try:
        yield name
    finally:
        drop_db(name)


def sa_url(dbname: str) -> str:
    """The SQLAlchemy URL the service uses for ``dbname``."""
    return PG_URL.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{dbname}"


_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - kept open (and referenced) for the process' lifetime


def quiet_service_logging() -> None:
    """Configure the service's JSON logging (as in production) but write it to /dev/null.

    The store logs one line per appended event; we keep that cost in the measurement and only
    throw the output away.
    """
    from service.logs import configure_logging

    real = sys.stdout
    sys.stdout = _DEVNULL
    try:
        configure_logging("json", "info")
    finally:
        sys.stdout = real


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- CPU accounting from /proc (Linux) ----------------------------------------------------
_BACKEND = re.compile(r"\(\d+\)|\[local\]")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, cpu ticks user+system, cmdline) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), cmdline)
    return table


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` and their command lines (a zombie has none: left out)."""
    return {child: cmdline for child, (ppid, _ticks, cmdline) in _proc_table().items() if ppid == pid and cmdline}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Crowd:
    """``count`` threads, each running ``self._one(index)`` until ``self.stop`` is set: started when
    the block is entered, stopped and joined (``join_seconds`` each) when it ends."""

    join_seconds = 10.0

    def __init__(self, count: int):
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._one, args=(i,), daemon=True) for i in range(count)]

    def _one(self, index: int) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(self.join_seconds)


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle


class CpuMeter:
    """CPU seconds spent during a window by: a server's process tree, the PostgreSQL backends
    serving given databases, PostgreSQL's shared background processes, and everything else on
    the machine (``other``: anything not ours, e.g. someone else's test run, shows up here)."""

    def __init__(self, server_pid: int | None, dbnames: list[str]):
        self.server_pid = server_pid
        self.dbnames = dbnames

    def _classify(self, table) -> dict[str, int]:
        tree = set()
        if self.server_pid is not None:
            tree.add(self.server_pid)
            changed = True
            while changed:
                changed = False
                for pid, (ppid, _, _) in table.items():
                    if ppid in tree and pid not in tree:
                        tree.add(pid)
                        changed = True
        out = {"server": 0, "postgres_backends": 0, "postgres_shared": 0, "me": 0}
        for pid, (_, ticks, cmd) in table.items():
            if pid in tree:
                out["server"] += ticks
            elif pid == os.getpid():
                out["me"] += ticks
            elif cmd.startswith("postgres:") or "/bin/postgres " in cmd:
                if _BACKEND.search(cmd):  # a client connection: "postgres: 15/main: user db host(port) ..."
                    if any(f" {db} " in cmd for db in self.dbnames):
                        out["postgres_backends"] += ticks
                else:  # postmaster, walwriter, checkpointer, autovacuum, ...
                    out["postgres_shared"] += ticks
        return out

    def __enter__(self) -> "CpuMeter":
        self._t0 = time.perf_counter()
        self._busy0 = _busy_ticks()
        self._procs0 = self._classify(_proc_table())
        self._children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc) -> None:
        procs1 = self._classify(_proc_table())
        busy1 = _busy_ticks()
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.seconds = time.perf_counter() - self._t0
        cpu = {k: (procs1[k] - self._procs0[k]) / _TICK for k in procs1}
        cpu["load_generator"] = ((children1.ru_utime - self._children0.ru_utime)
                                 + (children1.ru_stime - self._children0.ru_stime))
        cpu["machine_busy"] = (busy1 - self._busy0) / _TICK
        cpu["other"] = max(0.0, cpu["machine_busy"] - sum(
            cpu[k] for k in ("server", "postgres_backends", "postgres_shared", "me", "load_generator")))
        self.cpu = cpu
