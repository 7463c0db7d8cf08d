"""A realistic store, generated: case studies whose events the domain's state machine accepts, spread
over the past year as a real pipeline's, and the loaders that put them in a database the way the
service would have written them (each event recorded when it happened).

Used by the benchmarks and by the tests that hold every read against a full replay.
"""
from __future__ import annotations

import random
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Iterator

from bench.common import PG_URL, log, sa_url

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
    from service.events.tables import state_row

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
                            state["last_activity_at"], orjson.dumps(state["state"]).decode(), state["head_hash"])


# -- loading -------------------------------------------------------------------------------
EVENT_COPY_COLUMNS = ("event_id", "stream_id", "version", "type", "data", "actor", "recorded_at", "occurred_at",
                      "correlation_id", "causation_id", "request_digest", "on_behalf_of", "prev_hash", "hash")
STATE_COPY_COLUMNS = ("id", "status", "version", "csm", "account_id", "account_name", "committed_at",
                      "entered_status_at", "last_activity_at", "state", "head_hash")


def make_dataset(records: int, seed: int, *, now: datetime | None = None) -> tuple[list[tuple], list[tuple], dict]:
    """Every event row (sorted by business time, the order they would have been appended in)
    and every state row, with counts by type and status; the same rows for the same arguments
    (``now``: when the data ends, default the clock's)."""
    now = now or datetime.now(UTC)
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
    _migrate(sa_url(dbname))
    return _load_postgres_conninfo(f"{PG_URL}/{dbname}", events, states)


def _load_postgres_conninfo(conninfo: str, events: list[tuple], states: list[tuple]) -> float:
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(conninfo) as conn:
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
    return _load_sqlite_file(path, events, states)


def _load_sqlite_file(path: str, events: list[tuple], states: list[tuple]) -> float:
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




def load_url(url: str, events: list[tuple], states: list[tuple]) -> float:
    """Load into the migrated database at ``url`` (a service URL): PostgreSQL by COPY, SQLite by
    executemany; the seconds it took."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _load_sqlite_file(parsed.database, events, states)
    return _load_postgres_conninfo(parsed.set(drivername="postgresql").render_as_string(hide_password=False),
                                   events, states)
