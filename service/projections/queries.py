"""Queries over the projections' tables: the reporting questions, now or as known at any past time.

A question is asked of a ``View``: one read transaction, so the checkpoint (which generation is
live, how far the projections have read) and every row come from one snapshot. A rebuild swapping
generations in is never seen half done, and all the parts of one answer (the weekly report's
sections) reflect the same position of the feed, which the answer names. "As known at T" reads
each row's version valid at T (see tables.py); without a time, what is known now.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Sequence

from sqlalchemy import Connection, Engine, Table, and_, func, literal, or_, select, tuple_
from sqlalchemy.dialects import postgresql

from service import cursors
from service.domain import STATUS_LABELS, StuckThresholds
from service.domain.reporting import QUANTILES, STAGES, summarise, summary_of
from service.domain.stuck import RULE_OF, StuckFinding
from service.events.db import transaction
from service.events.feed import Feed, Mark, UnknownPosition
from service.projections.checkpoints import Checkpoint, Checkpoints
from service.projections.records import decode_record_cursor
from service.projections.tables import (
    approver_times,
    blockers,
    candidates,
    cycle_stages,
    pipeline_records,
    status_history,
    stuck,
)
from service.times import utcnow

WAIT_POLL_SECONDS = 0.05
EMPTY = summarise([])  # the summary of no day counts


class ProjectionBehind(Exception):
    """The projections have not reached the position a reader asked for within the time it may wait."""

    def __init__(self, position: int, reached: Mark, waited: float):
        super().__init__(f"the projections have read to position {reached.position}, not yet to {position} "
                         f"(waited {waited:g} s)")
        self.position, self.reached = position, reached


@dataclass(frozen=True)
class Answer:
    """Rows (or figures) from the projections, and how far they had read."""

    value: Any
    read_to: Mark
    next_cursor: str | None = None  # where the next page starts, for a paged answer

    def projection(self) -> dict[str, Any]:
        return {"name": "projections", **self.read_to.to_dict()}


@dataclass(frozen=True)
class StuckItem:
    """A stuck record on one rule, with the finding a person reads."""

    id: str
    status: str
    csm: str | None
    account: dict[str, str] | None
    finding: StuckFinding


def _zeros() -> dict[str, int]:
    return {status: 0 for status in STATUS_LABELS}


class Projections:
    """The reporting questions, answered from the projections' tables."""

    def __init__(self, engine: Engine, checkpoints: Checkpoints, feed: Feed, thresholds: StuckThresholds, *,
                 wait_seconds: float = 2.0):
        self.engine = engine
        self.checkpoints = checkpoints
        self.feed = feed
        self.thresholds = thresholds
        self.wait_seconds = wait_seconds

    @contextmanager
    def view(self, *, as_of: datetime | None = None, min_position: int | None = None,
             now: datetime | None = None) -> Iterator["View"]:
        """A view of the projections as known at ``as_of`` (default: ``now``, the clock's), once they have read
        ``min_position`` (a position an append was answered with): waits for that up to
        ``wait_seconds``, then raises ProjectionBehind; UnknownPosition for a position not stored."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
                checkpoint = self.checkpoints.get(conn)
                if min_position is None or min_position == 0 or self._reached(conn, checkpoint, min_position):
                    yield View(conn, checkpoint, self.thresholds, as_of, now or utcnow())
                    return
            if time.monotonic() >= deadline:
                raise ProjectionBehind(min_position, checkpoint.mark(), self.wait_seconds)
            time.sleep(WAIT_POLL_SECONDS)

    def _reached(self, conn: Connection, checkpoint: Checkpoint, position: int) -> bool:
        from service.events.tables import events

        found = conn.execute(select(events.c.position).where(events.c.position == position)).first()
        if found is None:
            raise UnknownPosition(position)
        if checkpoint.position == 0:
            return False
        return conn.execute(select(events.c.position).where(
            events.c.position == position, self.feed.until(conn, checkpoint.position))).first() is not None


class View:
    """The projections in one snapshot, as known at one time."""

    def __init__(self, conn: Connection, checkpoint: Checkpoint, thresholds: StuckThresholds,
                 as_of: datetime | None, now: datetime):
        self.conn = conn
        self.checkpoint = checkpoint
        self.thresholds = thresholds
        self.reference = as_of or now  # the time stuck rules are judged at
        self.known_at = as_of if as_of is not None and as_of < now else None  # None: what is known now

    def answer(self, value: Any, next_cursor: str | None = None) -> Answer:
        return Answer(value, self.checkpoint.mark(), next_cursor)

    def rows(self, table: Table) -> Any:
        """The condition for ``table``'s rows of the live generation, as known at this view's time."""
        live = table.c.generation == self.checkpoint.generation
        if self.known_at is None:
            return and_(live, table.c.valid_to.is_(None))
        return and_(live, table.c.valid_from <= self.known_at,
                    or_(table.c.valid_to.is_(None), table.c.valid_to > self.known_at))

    # -- the pipeline -----------------------------------------------------------------------
    def pipeline(self) -> Answer:
        """Counts by status, and by CSM and status."""
        table = pipeline_records
        rows = self.conn.execute(select(table.c.csm, table.c.status, func.count()).where(self.rows(table))
                                 .group_by(table.c.csm, table.c.status)).all()
        return self.answer(_counts(rows))

    def counts_at(self, moment: datetime) -> Answer:
        """Counts by status as they stood at business time ``moment``."""
        table = status_history
        rows = self.conn.execute(
            select(table.c.csm, table.c.status, func.count())
            .where(self.rows(table), table.c.from_at <= moment, or_(table.c.to_at.is_(None), table.c.to_at > moment))
            .group_by(table.c.csm, table.c.status)).all()
        return self.answer(_counts(rows))

    def status_counts(self, *, csm: str | None = None, account: str | None = None) -> Answer:
        """Records per status at this view's time, of one CSM or account (its id or name)."""
        table = pipeline_records
        query = select(table.c.status, func.count()).where(self.rows(table)).group_by(table.c.status)
        if csm:
            query = query.where(table.c.csm == csm)
        if account:
            query = query.where(or_(table.c.account_id == account, table.c.account_name == account))
        return self.answer(dict(self.conn.execute(query).all()))

    def record_ids(self, *, status: str | None = None, csm: str | None = None, account: str | None = None,
                   limit: int = 50, cursor: str | None = None) -> Answer:
        """The ids of the records in the pipeline at this view's time, filtered, ordered by id; one page
        (the record list as known at a past time)."""
        table = pipeline_records
        query = select(table.c.id).where(self.rows(table)).order_by(table.c.id).limit(limit + 1)
        if status:
            query = query.where(table.c.status == status)
        if csm:
            query = query.where(table.c.csm == csm)
        if account:
            query = query.where(or_(table.c.account_id == account, table.c.account_name == account))
        if cursor:
            query = query.where(table.c.id > decode_record_cursor(cursor))
        ids = list(self.conn.execute(query).scalars())
        more = len(ids) > limit
        ids = ids[:limit]
        return self.answer(ids, cursors.encode([ids[-1]]) if more else None)

    # -- what blocks publication ---------------------------------------------------------------
    def blockers(self, *, csm: str | None = None, code: str | None = None, limit: int | None = None,
                 cursor: str | None = None, order: str = "csm") -> Answer:
        """What blocks publication: ordered by CSM, since, record (``order`` "longest": by since,
        record); with ``limit``, one page, and ``next_cursor`` continues."""
        table = blockers
        by_csm = order == "csm"
        key = ((func.coalesce(table.c.csm, ""),) if by_csm else ()) + (table.c.since, table.c.id, table.c.seq)
        query = select(table).where(self.rows(table))
        if csm:
            query = query.where(table.c.csm == csm)
        if code:
            query = query.where(table.c.code == code)
        if cursor:
            query = query.where(_after(key, _decode_blocker_cursor(cursor, by_csm),
                                       ((table.c.csm,) if by_csm else ()) + (table.c.since, table.c.id, table.c.seq)))
        query = query.order_by(*key)
        if limit is not None:
            query = query.limit(limit + 1)
        rows = [dict(row) for row in self.conn.execute(query).mappings()]
        next_cursor = None
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = cursors.encode(([last["csm"] or ""] if by_csm else [])
                                         + [last["since"].isoformat(), last["id"], last["seq"]])
        return self.answer(rows, next_cursor)

    def blocked_counts(self) -> Answer:
        """Blockers counted by code and by CSM, and the records they block."""
        table = blockers
        rows = self.conn.execute(select(table.c.code, table.c.csm, func.count())
                                 .where(self.rows(table)).group_by(table.c.code, table.c.csm)).all()
        records = self.conn.execute(select(func.count(table.c.id.distinct())).where(self.rows(table))).scalar_one()
        return self.answer({"records": records, **_by_code_and_csm(rows)})

    # -- what is stuck ---------------------------------------------------------------------------
    def stuck(self, *, csm: str | None = None, code: str | None = None, status: str | None = None,
              limit: int = 100, cursor: str | None = None, order: str = "csm") -> Answer:
        """Records stuck at this view's reference time, one finding per rule: ordered by CSM, then the
        moment the rule began to hold (longest stuck first), record and rule (``order`` "longest":
        without the CSM); one page."""
        table = stuck
        by_csm = order == "csm"
        key = ((table.c.csm,) if by_csm else ()) + (table.c.holds_after, table.c.id, table.c.code)
        query = select(table).where(self.rows(table), table.c.holds_after < self.reference)
        if csm:
            query = query.where(table.c.csm == csm)
        if code:
            query = query.where(table.c.code == code)
        if status:
            query = query.where(table.c.status == status)
        if cursor:
            query = query.where(_after(key, _decode_stuck_cursor(cursor, by_csm), key))
        rows = self.conn.execute(query.order_by(*key).limit(limit + 1)).mappings().all()
        page = [StuckItem(row["id"], row["status"], row["csm"],
                          {"id": row["account_id"], "name": row["account_name"]} if row["account_id"] else None,
                          RULE_OF[row["code"]].finding_from(row["facts"], self.reference, self.thresholds))
                for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = cursors.encode(([last["csm"]] if by_csm else [])
                                         + [last["holds_after"].isoformat(), last["id"], last["code"]])
        return self.answer(page, next_cursor)

    def stuck_counts(self) -> Answer:
        """Stuck findings counted by code and by CSM, and the records they name."""
        table = stuck
        condition = and_(self.rows(table), table.c.holds_after < self.reference)
        rows = self.conn.execute(select(table.c.code, table.c.csm, func.count())
                                 .where(condition).group_by(table.c.code, table.c.csm)).all()
        records = self.conn.execute(select(func.count(table.c.id.distinct())).where(condition)).scalar_one()
        return self.answer({"records": records, **_by_code_and_csm(rows)})

    # -- cycle times, candidates, publications -----------------------------------------------------
    def cycle_times(self, *, start: datetime | None = None, end: datetime | None = None,
                    csm: str | None = None, quarter: str | None = None) -> Answer:
        """Median and 90th percentile days per quarter (of the stage's end) for each stage and approver
        role, and over all of them; ``quarter``: that quarter only (and over all)."""
        groups = {"stages": (cycle_stages, cycle_stages.c.stage, cycle_stages.c.to_at),
                  "approver_roles": (approver_times, approver_times.c.role, approver_times.c.decided_at)}
        filters = {"start": start, "end": end, "csm": csm}
        by_quarter = {group: self._summaries(*spec, **filters, by_quarter=True, quarter=quarter)
                      for group, spec in groups.items()}
        overall = {group: self._summaries(*spec, **filters, by_quarter=False) for group, spec in groups.items()}
        names = {"stages": list(STAGES),
                 "approver_roles": sorted({name for name, _quarter in overall["approver_roles"]})}
        quarters = sorted({quarter for found in by_quarter.values() for _name, quarter in found})
        return self.answer({
            "quarters": [{"quarter": quarter,
                          **{group: {name: by_quarter[group].get((name, quarter), EMPTY) for name in names[group]}
                             for group in groups}}
                         for quarter in quarters],
            "overall": {group: {name: overall[group].get((name, None), EMPTY) for name in names[group]}
                        for group in groups},
        })

    def _summaries(self, table: Table, name, moment, *, start, end, csm, by_quarter: bool,
                   quarter: str | None = None) -> dict[tuple[str, str | None], dict[str, Any]]:
        """The domain's summary of the day counts of each name (a stage or a role), per quarter or over
        all, within the filters. PostgreSQL computes the quantiles itself (percentile_cont is the
        domain's definition); SQLite, the embedded store, returns the day counts in order."""
        keys = [name, table.c.quarter] if by_quarter else [name]
        conditions = [self.rows(table)]
        if quarter is not None:
            conditions.append(table.c.quarter == quarter)
        if start is not None:
            conditions.append(moment >= start)
        if end is not None:
            conditions.append(moment <= end)
        if self.conn.dialect.name == "postgresql":
            groups = [key.collate("C") for key in keys]  # locale collations make this sort several times slower
            query = select(*groups, func.count(), func.percentile_cont(
                postgresql.array([numerator / denominator for numerator, denominator in QUANTILES.values()])
            ).within_group(table.c.days)).where(*conditions).group_by(*groups)
        else:
            query = select(*keys, table.c.days).where(*conditions).order_by(*keys, table.c.days)
        if csm:
            query = query.join(pipeline_records, and_(pipeline_records.c.id == table.c.id,
                                                      self.rows(pipeline_records))).where(pipeline_records.c.csm == csm)
        rows = self.conn.execute(query).all()
        if self.conn.dialect.name == "postgresql":
            return {(row[0], row[1] if by_quarter else None): summary_of(row[-2], row[-1]) for row in rows}
        days: dict[tuple[str, str | None], list[float]] = {}
        for row in rows:
            days.setdefault((row[0], row[1] if by_quarter else None), []).append(row[-1])
        return {key: summarise(values) for key, values in days.items()}

    def candidates(self, *, since: datetime | None = None, csm: str | None = None, limit: int | None = None) -> Answer:
        """Records that are candidates, newest first; ``since``: only those that became one from then on."""
        table = candidates
        query = select(table).where(self.rows(table))
        if since is not None:
            query = query.where(table.c.candidate_since >= since)
        if csm:
            query = query.where(table.c.csm == csm)
        query = query.order_by(table.c.candidate_since.desc(), table.c.id)
        if limit is not None:
            query = query.limit(limit)
        return self.answer([dict(row) for row in self.conn.execute(query).mappings()])

    def candidate_count(self, *, since: datetime | None = None) -> int:
        table = candidates
        query = select(func.count()).where(self.rows(table))
        if since is not None:
            query = query.where(table.c.candidate_since >= since)
        return self.conn.execute(query).scalar_one()

    def published_between(self, start: datetime, end: datetime, *, limit: int | None = None) -> Answer:
        """Records first published in [start, end), with how long they took from the commitment, and
        their CSM."""
        stages, records = cycle_stages, pipeline_records
        query = (select(stages.c.id, records.c.csm, stages.c.to_at, stages.c.days)
                 .join(records, and_(records.c.id == stages.c.id, self.rows(records)))
                 .where(self.rows(stages), stages.c.stage == "committed_to_published", stages.c.to_at >= start,
                        stages.c.to_at < end)
                 .order_by(stages.c.to_at, stages.c.id))
        if limit is not None:
            query = query.limit(limit)
        return self.answer([dict(row) for row in self.conn.execute(query).mappings()])

    def published_count(self, start: datetime, end: datetime) -> int:
        stages = cycle_stages
        return self.conn.execute(select(func.count()).where(
            self.rows(stages), stages.c.stage == "committed_to_published", stages.c.to_at >= start,
            stages.c.to_at < end)).scalar_one()


def _after(key: Sequence, values: Sequence, columns: Sequence):
    """Rows past a page's last one, in the order ``key``: the cursor's ``values`` typed as ``columns``."""
    return tuple_(*key) > tuple_(*(literal(value, type_=column.type) for value, column in zip(values, columns)))


def _decode_blocker_cursor(cursor: str, by_csm: bool = True) -> tuple:
    def parse(values: list) -> tuple:
        csm, (since, stream_id, seq) = (values[0] if by_csm else ""), values[-3:]
        since = datetime.fromisoformat(since)
        if not (len(values) == 3 + by_csm and isinstance(csm, str) and isinstance(stream_id, str)
                and type(seq) is int and since.tzinfo):
            raise ValueError(values)
        return ((csm,) if by_csm else ()) + (since, stream_id, seq)

    return cursors.decode(cursor, parse)


def _decode_stuck_cursor(cursor: str, by_csm: bool = True) -> tuple:
    def parse(values: list) -> tuple:
        csm, (holds_after, stream_id, code) = (values[0] if by_csm else ""), values[-3:]
        holds_after = datetime.fromisoformat(holds_after)
        if not (len(values) == 3 + by_csm and isinstance(csm, str) and isinstance(stream_id, str)
                and code in RULE_OF and holds_after.tzinfo):
            raise ValueError(values)
        return ((csm,) if by_csm else ()) + (holds_after, stream_id, code)

    return cursors.decode(cursor, parse)


def _counts(rows) -> dict[str, Any]:
    by_status = _zeros()
    by_csm: dict[str, dict[str, int]] = {}
    for csm, status, count in sorted(rows, key=lambda row: (row[0] or "", row[1])):
        by_status[status] += count
        by_csm.setdefault(csm or "", _zeros())[status] += count
    return {"total": sum(by_status.values()), "by_status": by_status, "by_csm": by_csm}


def _by_code_and_csm(rows) -> dict[str, Any]:
    """(code, csm, count) rows as counts by code, and by CSM (in all and by code)."""
    by_code: dict[str, int] = {}
    by_csm: dict[str, dict[str, int]] = {}
    for code, csm, count in rows:
        by_code[code] = by_code.get(code, 0) + count
        entry = by_csm.setdefault(csm or "", {"count": 0})
        entry["count"] += count
        entry[code] = entry.get(code, 0) + count
    return {"count": sum(by_code.values()), "by_code": dict(sorted(by_code.items())),
            "by_csm": dict(sorted(by_csm.items()))}
