"""Shared helpers: fresh PostgreSQL databases, quiet logging, payloads, statistics."""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import uuid
from pathlib import Path
from typing import Iterator

import psycopg

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


def quiet_service_logging() -> None:
    """Configure the service's JSON logging (as in production) but write it to /dev/null.

    The store logs one line per appended event; we keep that cost in the measurement and only
    throw the output away.
    """
    from service.logs import configure_logging

    real = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - kept open for the process' lifetime
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
