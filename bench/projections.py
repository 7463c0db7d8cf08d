"""Benchmark (d): projections at scale - rebuild rate and memory, and the reporting endpoints.

d1  Rebuild: ``Rebuilder.rebuild()`` (every projector, one pass over the whole store) of ~
    1,000,000 events (100,000 case studies) on PostgreSQL and on SQLite, each run in a fresh
    subprocess that reports its events/s and its peak RSS (``ru_maxrss``). In the same run the
    *raw read* of the events table: the rebuild's own streaming query (same condition, same
    order, ``stream_results`` with ``yield_per=2000``, one StoredEvent per row) projecting
    nothing - the ceiling a rebuild cannot beat. The rebuild's memory should not grow with the
    store: the same rebuild of 100,000 events (the first 10,000 case studies) gives a second
    peak, and a subprocess that only imports and connects gives the baseline.

d2  Endpoints: GET /projections/stuck and GET /projections/pipeline at 100,000 records over
    real HTTP against the served app (``casestudies serve --workers 2 --no-projectors``) on the
    rebuilt PostgreSQL database (and SQLite): sequential requests from one client after a
    warm-up; p50/p99 latency.

The data: 100,000 legal streams (~10 events each, final statuses mixed as a real pipeline's,
business times over the past 12 months), decided through the domain's state machine, hashed
and chained as the store does, and bulk-loaded in time order (COPY on PostgreSQL, one
executemany transaction on SQLite) with each record's state row.

Run alone: ``.venv/bin/python -m bench.projections``.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

from bench.common import (
    PG_URL,
    RESULTS,
    ROOT,
    env_int,
    fresh_db,
    log,
    median,
    pct,
    quiet_service_logging,
    sa_url,
)

# -- the data ------------------------------------------------------------------------------
# Final status of each case study, as a share of all (a pipeline a year into its life).
STATUS_MIX = (("not_started", 0.12), ("in_progress", 0.30), ("awaiting_customer_approval", 0.15),
              ("published", 0.25), ("on_hold", 0.10), ("declined", 0.08))
OPEN = ("not_started", "in_progress", "awaiting_customer_approval", "on_hold")
CSMS = [f"{first} {last}" for first, last in zip(
    ("Dana", "Robin", "Sam", "Alex", "Jordan", "Casey", "Morgan", "Riley", "Avery", "Quinn", "Jamie", "Taylor",
     "Drew", "Kai", "Noor", "Ines", "Mateo", "Yuki", "Lena", "Omar", "Priya", "Tomas", "Hana", "Felix",
     "Zara", "Ivan", "Maya", "Leo", "Sofia", "Ravi", "Elif", "Nils", "Aiko", "Bruno", "Chloe", "Dev",
     "Esme", "Finn", "Gia", "Hugo"),
    ("Lee", "Park", "Kim", "Chen", "Garcia", "Novak", "Smith", "Silva", "Rossi", "Muller", "Khan", "Haddad",
     "Sato", "Berg", "Costa", "Dubois", "Ivanova", "Jensen", "Kowalski", "Lopez", "Meyer", "Nakamura",
     "Olsen", "Patel", "Quiroga", "Reyes", "Santos", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz",
     "Zhang", "Abe", "Brown", "Cruz", "Diaz", "Evans", "Fischer"))]
ACTORS = ("crm-sync", "csm-portal", "marketing-tool", "ops-script")
USE_CASES = ("faster onboarding", "fewer support tickets", "lower cloud spend", "shorter sales cycle",
             "self-serve reporting", "fraud detection", "warehouse automation", "field service scheduling")
INDUSTRIES = ("a major airline", "a European bank", "a national retailer", "a hospital network")
METRICS = (("onboarding_days", True), ("tickets_per_week", True), ("monthly_cost_usd", True),
           ("nps_internal", False), ("orders_per_hour", False), ("uptime_pct", False))
QUOTE_TEXTS = ("We onboard in a week now.", "Support tickets dropped by half in one quarter.",
               "It paid for itself before the first renewal.", "Our analysts finally trust the numbers.",
               "The rollout took days, not months.", "Our team would not go back.")
HOLD_REASONS = ("customer reorg", "legal review paused", "champion on leave", "budget freeze")
DECLINE_REASONS = ("new CEO says no", "competitive concerns", "no executive sponsor", "backed out")
CHANGE_COMMENTS = ("remove the revenue figure", "use our new logo", "shorter, please", "anonymise the team names")
ROLES = ("marketing", "legal", "executive_sponsor")


class _Plan:
    """The events of one case study, chosen so that the state machine accepts every one."""

    def __init__(self, rng: random.Random, index: int):
        self.rng = rng
        self.index = index
        self.events: list[tuple[str, dict]] = []
        self.csm = rng.choice(CSMS)
        self.has_baseline = False
        self.metrics = rng.sample(METRICS, rng.randint(1, 3))
        self.base = {name: round(rng.uniform(20, 500), 1) for name, _lower in self.metrics}

    def add(self, event_type: str, data: dict | None = None) -> None:
        self.events.append((event_type, data or {}))

    def committed(self) -> None:
        rng = self.rng
        account = rng.randrange(30_000)
        data: dict[str, Any] = {
            "account": {"id": f"acc-{account:05d}", "name": f"Customer {account} Inc"},
            "csm": self.csm,
            "champion": {"name": f"Champion {rng.randrange(90_000)}", "title": rng.choice(
                ("VP Operations", "Head of Support", "CTO", "Director of Finance"))},
            "use_case": rng.choice(USE_CASES),
            "close_date": f"202{rng.randint(5, 6)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "anonymized": False,
            "msa_restricted": False,
        }
        if rng.random() < 0.3:
            data["deal_id"] = f"D-{rng.randrange(10**6):06d}"
        if rng.random() < 0.1:
            data["msa_restricted"] = True
            if rng.random() < 0.5:
                data["anonymized"] = True
                data["industry_description"] = rng.choice(INDUSTRIES)
        if rng.random() < 0.4:
            data["champion"]["email"] = f"champion{self.index}@example.com"
        self.add("committed", data)

    def metrics_event(self, kind: str) -> None:
        rng = self.rng
        if kind == "baseline":
            values = dict(self.base)
        else:  # mostly better than the baseline, by 0-60 %, sometimes a little worse
            values = {}
            for name, lower in self.metrics:
                change = rng.uniform(-0.1, 0.6)
                values[name] = round(self.base[name] * ((1 - change * 0.8) if lower else (1 + change)), 1)
        data: dict[str, Any] = {"kind": kind, "metrics": values,
                                "lower_is_better": [name for name, lower in self.metrics if lower]}
        self.add("metrics_recorded", data)
        self.has_baseline |= kind == "baseline"

    def activity(self, count: int) -> None:
        """Events allowed in every live status: metrics, quotes, NPS, the odd reassignment."""
        rng = self.rng
        for _ in range(count):
            roll = rng.random()
            if not self.has_baseline and roll < 0.5:
                self.metrics_event("baseline")
            elif roll < 0.45:
                self.metrics_event("current")
            elif roll < 0.75:
                self.add("quote_added", {"text": rng.choice(QUOTE_TEXTS), "speaker": f"Speaker {rng.randrange(999)}"})
            elif roll < 0.93:
                self.add("nps_recorded", {"score": rng.choices(range(11), weights=(1,) * 6 + (2, 3, 5, 5, 4))[0],
                                          "respondent": f"Respondent {rng.randrange(999)}"})
            else:
                self.csm = rng.choice([c for c in CSMS if c != self.csm])
                self.add("reassigned", {"csm": self.csm})

    def approval_round(self, outcome: str) -> None:
        """approval_requested and answers; ``outcome``: changes, partial (still awaiting), all."""
        rng = self.rng
        approvers = rng.sample(ROLES, rng.randint(1, 3))
        self.add("approval_requested", {"approvers": approvers,
                                        "draft_url": f"https://docs.example/d/{self.index}-{len(self.events)}"})
        answering = approvers if outcome == "all" else approvers[:rng.randint(0, len(approvers) - 1)]
        for role in answering:
            if rng.random() < 0.3:
                self.activity(1)
            self.add("approval_granted", {"role": role, "approver": f"Approver {rng.randrange(999)}"})
        if outcome == "changes":
            pending = [role for role in approvers if role not in answering]
            self.add("changes_requested", {"role": pending[0], "comment": rng.choice(CHANGE_COMMENTS),
                                           "approver": f"Approver {rng.randrange(999)}"})

    def hold(self, resume: bool) -> None:
        data = {"reason": self.rng.choice(HOLD_REASONS)}
        if self.rng.random() < 0.5:
            data["revisit_on"] = f"202{self.rng.randint(6, 7)}-{self.rng.randint(1, 12):02d}-15"
        self.add("held", data)
        if resume:
            self.add("resumed")

    # paths to each status -----------------------------------------------------------------
    def to_not_started(self) -> None:
        self.committed()
        self.activity(self.rng.randint(0, 3))
        if self.rng.random() < 0.05:
            self.hold(resume=True)

    def to_in_progress(self) -> None:
        rng = self.rng
        self.committed()
        self.activity(rng.randint(0, 1))
        self.add("started")
        self.activity(rng.randint(2, 8))
        if rng.random() < 0.25:
            self.approval_round("changes")
            self.activity(rng.randint(1, 3))
        if rng.random() < 0.1:
            self.hold(resume=True)

    def to_awaiting(self) -> None:
        self.to_in_progress()
        self.approval_round(self.rng.choice(("partial", "partial", "all")))
        self.activity(self.rng.randint(0, 1))

    def to_published(self) -> None:
        rng = self.rng
        self.to_in_progress()
        self.approval_round("all")
        self.add("published", {"url": f"https://example.com/stories/{self.index}"})
        if rng.random() < 0.5:
            self.add("shared_with_champion", {"formats": rng.sample(["pdf", "link", "slides"], rng.randint(1, 3))})
        for _ in range(rng.randint(0, 3)):
            self.add("views_reported", {"views": rng.randrange(50, 20_000)})

    def build(self, status: str) -> list[tuple[str, dict]]:
        rng = self.rng
        if status == "on_hold" or status == "declined":
            before = rng.choices(("not_started", "in_progress", "awaiting_customer_approval", "on_hold"),
                                 weights=(2, 6, 2, 0 if status == "on_hold" else 2))[0]
            if before == "on_hold":
                self.to_in_progress()
                self.hold(resume=False)
            else:
                self.build(before)
            if status == "on_hold":
                self.hold(resume=False)
                self.activity(rng.randint(0, 1))
            else:
                self.add("declined", {"reason": rng.choice(DECLINE_REASONS)})
        else:
            {"not_started": self.to_not_started, "in_progress": self.to_in_progress,
             "awaiting_customer_approval": self.to_awaiting, "published": self.to_published}[status]()
        return self.events


def stream_id_of(index: int) -> str:
    return f"cs-{index:06d}"


def generate(records: int, seed: int, now: datetime) -> Iterator[tuple[int, list[tuple], tuple]]:
    """Each case study's event rows and its state row, decided through the domain's state machine.

    Event rows are the events table's columns but ``position`` and ``tx``, JSON as text; the
    state row is the state table's. Every event goes through ``apply`` as an append would, so a
    stream the domain refuses stops the benchmark here rather than in the rebuild.
    """
    import orjson

    from service.domain.machine import apply
    from service.domain.model import CaseStudy, PendingEvent
    from service.events.chain import GENESIS, event_hash
    from service.events.event import NewEvent
    from service.events.store import state_row

    rng = random.Random(seed)
    statuses = [s for s, _ in STATUS_MIX]
    weights = [w for _, w in STATUS_MIX]
    year = timedelta(days=365)
    for index in range(records):
        stream_id = stream_id_of(index)
        status = rng.choices(statuses, weights)[0]
        plan = _Plan(rng, index).build(status)
        start = now - year * rng.uniform(0.003, 1.0)  # committed some time in the past 12 months
        span = min((now - start).total_seconds(), rng.uniform(5, 240) * 86_400) - 60
        if status in OPEN and rng.random() < 0.5:  # half the open records were worked on lately
            span = max(span, (now - start).total_seconds() - rng.uniform(0, 20) * 86_400)
        offsets = sorted(rng.uniform(1, span) for _ in range(len(plan) - 1))
        times = [start] + [start + timedelta(seconds=s) for s in offsets]
        actor = rng.choice(ACTORS)
        record = CaseStudy(id=stream_id)
        head = GENESIS
        rows = []
        for version, ((event_type, data), occurred_at) in enumerate(zip(plan, times), start=1):
            apply(record, PendingEvent(event_type, data, version, occurred_at, occurred_at))
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            digest = NewEvent(event_type, data, occurred_at=occurred_at).digest(stream_id)
            prev, head = head, event_hash(
                stream_id=stream_id, version=version, type=event_type, data=data, actor=actor,
                on_behalf_of=None, recorded_at=occurred_at, occurred_at=occurred_at, event_id=event_id,
                correlation_id=None, causation_id=None, prev_hash=head)
            rows.append((event_id, stream_id, version, event_type, orjson.dumps(data).decode(), actor,
                         occurred_at, occurred_at, None, None, digest, None, prev, head))
        state = state_row(record, head)
        yield index, rows, (stream_id, state["status"], state["version"], state["csm"], state["account_id"],
                            state["account_name"], state["committed_at"], state["entered_status_at"],
                            state["last_activity_at"], state["state_json"], state["head_hash"])


# -- loading -------------------------------------------------------------------------------
EVENT_COPY_COLUMNS = ("event_id", "stream_id", "version", "type", "data", "actor", "recorded_at", "occurred_at",
                      "correlation_id", "causation_id", "request_digest", "on_behalf_of", "prev_hash", "hash")
STATE_COPY_COLUMNS = ("id", "status", "version", "csm", "account_id", "account_name", "committed_at",
                      "entered_status_at", "last_activity_at", "state", "head_hash")


def make_dataset(records: int, seed: int) -> tuple[list[tuple], list[tuple], dict]:
    """Every event row (sorted by business time, the order they would have been appended in)
    and every state row, with counts by type and status."""
    now = datetime.now(UTC)
    events: list[tuple] = []
    states: list[tuple] = []
    by_status: dict[str, int] = {}
    t0 = time.perf_counter()
    for index, rows, state in generate(records, seed, now):
        events.extend(rows)
        states.append(state)
        by_status[state[1]] = by_status.get(state[1], 0) + 1
        if (index + 1) % 20_000 == 0:
            log(f"  generated {index + 1:,} case studies, {len(events):,} events "
                f"({time.perf_counter() - t0:.0f} s)")
    events.sort(key=lambda row: row[7])  # positions follow time, as when they were appended live
    by_type: dict[str, int] = {}
    for row in events:
        by_type[row[3]] = by_type.get(row[3], 0) + 1
    return events, states, {"records": records, "events": len(events), "seed": seed,
                            "generated_at": now.isoformat(), "by_status": by_status, "by_type": by_type}


def _migrate(url: str) -> None:
    from service import migrations
    from service.events.backends import make_engine

    engine = make_engine(url)
    migrations.upgrade(engine)
    engine.dispose()


def load_postgres(dbname: str, events: list[tuple], states: list[tuple]) -> float:
    """COPY the rows in (one transaction), then VACUUM ANALYZE as autovacuum would in time."""
    import psycopg

    _migrate(sa_url(dbname))
    t0 = time.perf_counter()
    with psycopg.connect(f"{PG_URL}/{dbname}") as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY events ({', '.join(EVENT_COPY_COLUMNS)}) FROM STDIN") as copy:
                for row in events:
                    copy.write_row(row)
            with cur.copy(f"COPY case_studies ({', '.join(STATE_COPY_COLUMNS)}) FROM STDIN") as copy:
                for row in states:
                    copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE) events")
        conn.execute("VACUUM (ANALYZE) case_studies")
    return time.perf_counter() - t0


def _sqlite_time(value: datetime | None) -> str | None:
    # what the service's UTCDateTime column stores on SQLite: naive UTC text
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def load_sqlite(path: str, events: list[tuple], states: list[tuple]) -> float:
    """executemany in one transaction, through the sqlite3 module."""
    _migrate(f"sqlite:///{path}")
    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        f"INSERT INTO events ({', '.join(EVENT_COPY_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COPY_COLUMNS))})",
        (row[:6] + (_sqlite_time(row[6]), _sqlite_time(row[7])) + row[8:] for row in events))
    conn.executemany(
        f"INSERT INTO case_studies ({', '.join(STATE_COPY_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(STATE_COPY_COLUMNS))})",
        (row[:6] + tuple(_sqlite_time(v) for v in row[6:9]) + row[9:] for row in states))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t0


# -- the measured processes ----------------------------------------------------------------
def _child(kind: str, url: str) -> dict:
    """Runs in a fresh interpreter: connect, do ``kind``, report time and peak RSS."""
    quiet_service_logging()
    from sqlalchemy import select, text

    from service.bootstrap import build
    from service.config import Settings
    from service.events.db import transaction
    from service.events.event import EVENT_COLUMNS, stored_event
    from service.events.tables import events

    services = build(Settings(database_url=url))
    with services.engine.connect() as conn:
        conn.execute(text("select 1"))
    out: dict[str, Any] = {"kind": kind}
    done = [0]
    next_log = [200_000]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] >= next_log[0]:
            log(f"    {kind}: {done[0]:,} events")
            next_log[0] += 200_000

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    if kind == "raw":
        # the rebuild's own query and cursor, projecting nothing
        with transaction(services.engine, isolation="REPEATABLE READ", write=False) as reader:
            query = (select(*EVENT_COLUMNS).where(services.feed.readable())
                     .order_by(events.c.stream_id, events.c.version))
            result = reader.execution_options(stream_results=True, yield_per=2000).execute(query)
            count = 0
            for row in result:
                stored_event(row)
                count += 1
        done[0] = count
    elif kind == "rebuild":
        mark = services.runner.rebuilder.rebuild(progress=progress)
        out["mark_position"] = mark.position
    elif kind == "profile":
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        services.runner.rebuilder.rebuild(progress=progress)
        profiler.disable()
        out["seconds"] = time.perf_counter() - t0
        stats = pstats.Stats(profiler)
        rows = []
        for (filename, line, name), (cc, nc, tt, ct, _callers) in stats.stats.items():
            where = filename.replace(str(ROOT) + "/", "")
            where = where.split("site-packages/")[-1]
            rows.append({"function": f"{where}:{line}({name})", "calls": nc, "tottime_s": round(tt, 3),
                         "cumtime_s": round(ct, 3)})
        out["top_cumulative"] = sorted(rows, key=lambda r: -r["cumtime_s"])[:40]
        out["top_tottime"] = sorted(rows, key=lambda r: -r["tottime_s"])[:25]
    elif kind != "baseline":
        raise SystemExit(f"unknown child kind {kind}")
    seconds = time.perf_counter() - t0
    out.setdefault("seconds", seconds)
    out["events"] = done[0]
    if kind in ("raw", "rebuild"):
        out["events_per_s"] = done[0] / seconds
    if kind in ("rebuild", "profile"):
        out["projection_rows"] = _projection_rows(services)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime - cpu0
    out.update(peak_memory())
    services.engine.dispose()
    return out


def peak_memory() -> dict[str, float]:
    """This process' peak RSS in MiB: ``ru_maxrss``, and the kernel's VmHWM to check it.

    Linux keeps ``ru_maxrss`` across exec: a child forked from a process that was bigger reports
    the parent's peak. VmHWM belongs to the process' own address space only. The two agree
    when the parent is the smaller (see ``run``: the parent never holds the data).
    """
    out = {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["vmhwm_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _projection_rows(services) -> dict[str, int]:
    from sqlalchemy import func, select

    from service.events.db import transaction

    counts = {}
    with transaction(services.engine, write=False) as conn:
        for projector in services.runner.projectors.values():
            generation = services.runner.checkpoints.get(conn, projector.name).generation
            for table in projector.tables:
                counts[table.name] = conn.execute(select(func.count()).select_from(table)
                                                  .where(table.c.generation == generation)).scalar_one()
    return counts


def _cpu_ticks() -> tuple[int, int, int, int]:
    """(busy, steal, iowait, total) ticks of the whole machine from /proc/stat; busy includes steal."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, values[7], values[4], sum(values)


class MachineMeter:
    """How busy the whole machine was during a window, and how much CPU the hypervisor took
    (steal): on a shared VM, steal slows every figure down without showing in our processes."""

    def __enter__(self) -> "MachineMeter":
        self._start = _cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        busy, steal, iowait, total = (b - a for a, b in zip(self._start, _cpu_ticks()))
        self.result = {"busy_pct": round(100 * busy / max(total, 1), 1),
                       "steal_pct": round(100 * steal / max(total, 1), 1),
                       "iowait_pct": round(100 * iowait / max(total, 1), 1)}


def prewarm(url: str) -> float:
    """Read the database's files into the OS page cache, so that no measurement starts cold.

    The data set is written minutes before it is read, and on our VM the page cache does not
    keep it that long (the first SQLite read ran at a quarter of the speed of the second, the
    machine waiting on the disk). PostgreSQL: ``pg_prewarm(..., 'read')`` of every table and
    index; SQLite: the file read through. Returns the seconds it took (not part of any figure).
    """
    t0 = time.perf_counter()
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal"):
            path = url.removeprefix("sqlite:///") + suffix
            if os.path.exists(path):
                with open(path, "rb") as f:
                    while f.read(1 << 20):
                        pass
    else:
        import psycopg

        dbname = url.rsplit("/", 1)[1]
        with psycopg.connect(f"{PG_URL}/{dbname}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            conn.execute("SELECT sum(pg_prewarm(c.oid::regclass, 'read')) FROM pg_class c "
                         "JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 't')")
    return time.perf_counter() - t0


def in_subprocess(*args: str) -> dict:
    """Run ``python -m bench.projections ARGS`` in a fresh interpreter and return its report,
    with how busy the machine was meanwhile. A measuring child's database is prewarmed first."""
    warm = prewarm(args[2]) if args[0] == "--child" else None
    with MachineMeter() as meter:
        out = subprocess.run([sys.executable, "-m", "bench.projections", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    report = json.loads(line.removeprefix("BENCH_JSON "))
    report["machine"] = meter.result
    if warm is not None:
        report["prewarm_s"] = round(warm, 2)
    return report


def _load_all(records: int, small: int, seed: int, pg_big: str, pg_small: str, sqlite_big: str,
              sqlite_small: str) -> dict:
    """Runs in a subprocess (the data set is big; the parent stays small): generate and load."""
    quiet_service_logging()
    t0 = time.perf_counter()
    events, states, info = make_dataset(records, seed)
    info["generate_s"] = time.perf_counter() - t0
    small_id = stream_id_of(small)
    small_events = [row for row in events if row[1] < small_id]
    small_states = [row for row in states if row[0] < small_id]
    info["small"] = {"records": len(small_states), "events": len(small_events)}
    log(f"  {info['events']:,} events in {records:,} case studies generated in {info['generate_s']:.0f} s; loading")
    info["load_s"] = {}
    for name, loader, target, rows in (
            ("postgresql", load_postgres, pg_big, (events, states)),
            ("postgresql_small", load_postgres, pg_small, (small_events, small_states)),
            ("sqlite", load_sqlite, sqlite_big, (events, states)),
            ("sqlite_small", load_sqlite, sqlite_small, (small_events, small_states))):
        info["load_s"][name] = loader(target, *rows)
        log(f"  loaded {len(rows[0]):,} events into {name} in {info['load_s'][name]:.1f} s")
    return info


# -- the endpoints over HTTP -----------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(conn: http.client.HTTPConnection, path: str, key: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read()
    if response.getheader("Connection", "").lower() == "close":
        conn.close()  # gunicorn's sync workers close after each response; the next request reconnects
    return response.status, body


def _analyze_projections(dbname: str) -> None:
    """What autovacuum's analyze would do soon after a rebuild (if it is on): give the planner
    statistics for the freshly written projection tables."""
    import psycopg

    with psycopg.connect(f"{PG_URL}/{dbname}", autocommit=True) as conn:
        for table in ("proj_pipeline_records", "proj_status_history", "proj_blockers", "proj_cycle_stages",
                      "proj_approver_times", "proj_candidates", "projection_checkpoints"):
            conn.execute(f"ANALYZE {table}")


def pg_setting(name: str) -> str:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        return conn.execute(f"SHOW {name}").fetchone()[0]


def endpoint_latency(url: str, label: str, requests: int, warmup: int, cap_seconds: float,
                     pg_dbname: str | None = None) -> dict:
    """Serve the app as an operator would and time sequential GETs of the two endpoints.

    On PostgreSQL the pipeline is timed twice: as the rebuild left its tables (no planner
    statistics unless autovacuum has analyzed them meanwhile), and after ANALYZE."""
    from bench.http_append import _stop, _wait_listening

    casestudies = str(Path(sys.executable).with_name("casestudies"))
    env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    subprocess.run([casestudies, "db", "upgrade"], env=env, check=True, capture_output=True)
    key = subprocess.run([casestudies, "keys", "create", "--role", "reader", "--name", "bench"],
                         env=env, check=True, capture_output=True, text=True).stdout.split()[0]
    help_text = subprocess.run([casestudies, "serve", "--help"], env=env, capture_output=True, text=True).stdout
    no_projectors = "--no-projectors" in help_text
    port = _free_port()
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / f"projections-{label}-log.tmp"
    log_file = open(log_path, "w")  # noqa: SIM115
    server = subprocess.Popen(
        [casestudies, "serve", "--port", str(port), "--workers", "2",
         *(["--no-projectors"] if no_projectors else [])],
        env=env, stdout=log_file, stderr=subprocess.STDOUT)
    out: dict[str, Any] = {"no_projectors_flag": no_projectors, "prewarm_s": round(prewarm(url), 2)}
    try:
        try:
            _wait_listening(port, server)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; server log: {log_path.read_text()[-2000:]}") from None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        rounds = [("stuck", "/projections/stuck"), ("pipeline", "/projections/pipeline")]
        if pg_dbname is not None:
            rounds.append(("pipeline_after_analyze", "/projections/pipeline"))
        for name, path in rounds:
            if name == "pipeline_after_analyze":
                _analyze_projections(pg_dbname)
            for _ in range(warmup):
                status, body = _get(conn, path, key)
                if status != 200:
                    raise RuntimeError(f"GET {path} answered {status}: {body[:500]!r}")
            samples: list[float] = []
            statuses: dict[str, int] = {}
            start = time.perf_counter()
            with MachineMeter() as meter:
                while len(samples) < requests and time.perf_counter() - start < cap_seconds:
                    t = time.perf_counter()
                    status, body = _get(conn, path, key)
                    samples.append((time.perf_counter() - t) * 1000)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
            document = json.loads(body)
            out[name] = {"requests": len(samples), "statuses": statuses, "p50_ms": pct(samples, 50),
                         "p99_ms": pct(samples, 99), "median_ms": median(samples), "min_ms": min(samples),
                         "max_ms": max(samples), "mean_ms": sum(samples) / len(samples),
                         "response_bytes": len(body),
                         "capped_by_time": len(samples) < requests, "machine": meter.result}
            if name == "stuck":
                out[name]["items"] = document["count"]
                out[name]["records_with_findings"] = len({item["id"] for item in document["items"]})
            else:
                out[name]["total_records"] = document["total"]
                out[name]["by_status"] = document["by_status"]
            log(f"  {label} GET {path}{' (after ANALYZE)' if name.endswith('analyze') else ''}: "
                f"{len(samples)} requests, p50 {out[name]['p50_ms']:.1f} ms, "
                f"p99 {out[name]['p99_ms']:.1f} ms ({len(body):,} bytes, statuses {statuses}; machine "
                f"{meter.result['busy_pct']:.0f}% busy, steal {meter.result['steal_pct']:.0f}%, "
                f"iowait {meter.result['iowait_pct']:.0f}%)")
        conn.close()
    finally:
        _stop(server)
        log_file.close()
    return out


# -- the part ----------------------------------------------------------------------------------
def _steal(report: dict) -> str:
    m = report["machine"]
    return f" (machine {m['busy_pct']:.0f}% busy, steal {m['steal_pct']:.0f}%, iowait {m['iowait_pct']:.0f}%)"


def run() -> dict:
    records = env_int("BENCH_PROJ_RECORDS", 100_000)
    small = env_int("BENCH_PROJ_SMALL_RECORDS", 10_000)
    seed = env_int("BENCH_PROJ_SEED", 20261123)
    requests = env_int("BENCH_PROJ_REQUESTS", 200)
    warmup = env_int("BENCH_PROJ_WARMUP", 3)
    cap = float(os.environ.get("BENCH_PROJ_HTTP_SECONDS", 60))
    profile = os.environ.get("BENCH_PROJ_PROFILE", "1") not in ("0", "")
    results: dict[str, Any] = {"config": {"records": records, "small_records": small, "seed": seed,
                                          "requests": requests, "warmup_requests": warmup,
                                          "http_cap_seconds": cap, "yield_per": 2000}}
    folder = tempfile.mkdtemp(prefix="bench-projections-")
    sqlite_big, sqlite_small = f"{folder}/big.db", f"{folder}/small.db"
    try:
        with fresh_db("proj_big") as pg_big, fresh_db("proj_small") as pg_small:
            log(f"generating {records:,} case studies (seed {seed}) and loading them into 2 PostgreSQL "
                "databases and 2 SQLite files (not timed)")
            results["data"] = in_subprocess("--load", json.dumps(
                [records, small, seed, pg_big, pg_small, sqlite_big, sqlite_small]))
            urls = {"postgresql": (sa_url(pg_big), sa_url(pg_small)),
                    "sqlite": (f"sqlite:///{sqlite_big}", f"sqlite:///{sqlite_small}")}
            for backend, (big_url, small_url) in urls.items():
                log(f"rebuild on {backend}")
                r: dict[str, Any] = {"parent_ru_maxrss_mib": peak_memory()["ru_maxrss_mib"]}
                r["baseline"] = in_subprocess("--child", "baseline", big_url)
                r["raw_read"] = [in_subprocess("--child", "raw", big_url)]
                log(f"  raw read: {r['raw_read'][0]['events_per_s']:,.0f} events/s{_steal(r['raw_read'][0])}")
                r["rebuild"] = in_subprocess("--child", "rebuild", big_url)
                log(f"  rebuild of {r['rebuild']['events']:,} events: {r['rebuild']['events_per_s']:,.0f} events/s, "
                    f"peak RSS {r['rebuild']['ru_maxrss_mib']:.0f} MiB{_steal(r['rebuild'])}")
                r["raw_read"].append(in_subprocess("--child", "raw", big_url))
                log(f"  raw read again: {r['raw_read'][1]['events_per_s']:,.0f} events/s{_steal(r['raw_read'][1])}")
                r["rebuild_small"] = in_subprocess("--child", "rebuild", small_url)
                log(f"  rebuild of {r['rebuild_small']['events']:,} events: "
                    f"{r['rebuild_small']['events_per_s']:,.0f} events/s, "
                    f"peak RSS {r['rebuild_small']['ru_maxrss_mib']:.0f} MiB{_steal(r['rebuild_small'])}")
                raw_events = sum(x["events"] for x in r["raw_read"])
                raw_seconds = sum(x["seconds"] for x in r["raw_read"])
                r["raw_events_per_s"] = raw_events / raw_seconds
                r["ratio_rebuild_to_raw"] = r["rebuild"]["events_per_s"] / r["raw_events_per_s"]
                inherited = any(x["ru_maxrss_mib"] > x.get("vmhwm_mib", x["ru_maxrss_mib"]) + 1
                                for x in (r["baseline"], r["rebuild"], r["rebuild_small"]))
                r["ru_maxrss_inherited_from_parent"] = inherited
                which = "vmhwm_mib" if inherited else "ru_maxrss_mib"
                r["peak_rss_mib"] = {"baseline": r["baseline"][which], "rebuild_small": r["rebuild_small"][which],
                                     "rebuild": r["rebuild"][which], "measure": which}
                results[backend] = r
                if profile and backend == "postgresql":
                    log("  cProfile of a rebuild of the small database (not a timed figure)")
                    results["profile"] = in_subprocess("--child", "profile", small_url)
            results["endpoints"] = {}
            results["postgresql_settings"] = {name: pg_setting(name) for name in
                                              ("autovacuum", "work_mem", "shared_buffers", "server_version")}
            for backend, (big_url, _) in urls.items():
                log(f"endpoints over HTTP on {backend}, {records:,} records")
                results["endpoints"][backend] = endpoint_latency(
                    big_url, backend, requests, warmup, cap, pg_big if backend == "postgresql" else None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print("BENCH_JSON " + json.dumps(_child(sys.argv[2], sys.argv[3]), default=str), flush=True)
    elif len(sys.argv) == 3 and sys.argv[1] == "--load":
        print("BENCH_JSON " + json.dumps(_load_all(*json.loads(sys.argv[2])), default=str), flush=True)
    else:
        print(json.dumps(run(), indent=2))
