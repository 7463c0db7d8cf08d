"""Queries over the projectors' tables. Every answer carries the mark its projector has read to.

Each query runs in one read transaction: the checkpoint (which generation is live, how far it
has read) and the rows come from the same snapshot, so a rebuild swapping generations in is
never seen half done.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, and_, func, literal, or_, select, tuple_

from service import cursors
from service.domain import STATUS_LABELS
from service.domain.reporting import STAGES, quarter_of, summarise
from service.events.db import transaction
from service.events.feed import Mark
from service.projections.checkpoints import Checkpoint, Checkpoints
from service.projections.tables import (
    approver_times,
    blockers,
    candidates,
    cycle_stages,
    pipeline_records,
    status_history,
)


@dataclass(frozen=True)
class Answer:
    """Rows (or figures) from a projection, and how far that projection had read."""

    value: Any
    projector: str
    read_to: Mark
    next_cursor: str | None = None  # where the next page starts, for a paged answer

    def projection(self) -> dict[str, Any]:
        return {"name": self.projector, **self.read_to.to_dict()}


def _zeros() -> dict[str, int]:
    return {status: 0 for status in STATUS_LABELS}


class Projections:
    """The reporting questions, answered from the projections' tables."""

    def __init__(self, engine: Engine, checkpoints: Checkpoints):
        self.engine = engine
        self.checkpoints = checkpoints

    @contextmanager
    def _reading(self, name: str) -> Iterator[tuple[Connection, Checkpoint]]:
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            yield conn, self.checkpoints.get(conn, name)

    def pipeline(self) -> Answer:
        """Counts by status, and by CSM and status."""
        with self._reading("pipeline") as (conn, checkpoint):
            table = pipeline_records
            rows = conn.execute(select(table.c.csm, table.c.status, func.count())
                                .where(table.c.generation == checkpoint.generation)
                                .group_by(table.c.csm, table.c.status)).all()
        return Answer(_counts(rows), "pipeline", checkpoint.mark())

    def counts_at(self, moment: datetime) -> Answer:
        """Counts by status as they stood at business time ``moment``."""
        table = status_history
        with self._reading("pipeline") as (conn, checkpoint):
            rows = conn.execute(
                select(table.c.csm, table.c.status, func.count())
                .where(table.c.generation == checkpoint.generation, table.c.from_at <= moment,
                       or_(table.c.to_at.is_(None), table.c.to_at > moment))
                .group_by(table.c.csm, table.c.status)).all()
        return Answer(_counts(rows), "pipeline", checkpoint.mark())

    def blockers(self, *, as_of: datetime | None = None, csm: str | None = None, code: str | None = None,
                 limit: int | None = None, cursor: str | None = None) -> Answer:
        """What blocks publication: open blockers now, or those that held at business time ``as_of``.

        Ordered by CSM, since, record; with ``limit``, one page, and ``next_cursor`` continues."""
        table = blockers
        key = (func.coalesce(table.c.csm, ""), table.c.since, table.c.id, table.c.seq)
        with self._reading("blockers") as (conn, checkpoint):
            query = select(table).where(table.c.generation == checkpoint.generation)
            if as_of is None:
                query = query.where(table.c.until.is_(None))
            else:
                query = query.where(table.c.since <= as_of, or_(table.c.until.is_(None), table.c.until > as_of))
            if csm:
                query = query.where(table.c.csm == csm)
            if code:
                query = query.where(table.c.code == code)
            if cursor:
                query = query.where(tuple_(*key) > tuple_(*(literal(v, type_=c.type) for v, c in zip(
                    _decode_blocker_cursor(cursor), (table.c.csm, table.c.since, table.c.id, table.c.seq)))))
            query = query.order_by(*key)
            if limit is not None:
                query = query.limit(limit + 1)
            rows = [dict(row) for row in conn.execute(query).mappings()]
        next_cursor = None
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = _encode_blocker_cursor(last["csm"] or "", last["since"], last["id"], last["seq"])
        return Answer(rows, "blockers", checkpoint.mark(), next_cursor)

    def cycle_times(self, *, start: datetime | None = None, end: datetime | None = None,
                    csm: str | None = None) -> Answer:
        """Median and 90th percentile days per quarter (of the stage's end) for each stage and approver role."""
        with self._reading("cycle_times") as (conn, checkpoint):
            by_stage = _days_by_quarter(conn, cycle_stages, cycle_stages.c.stage, cycle_stages.c.to_at,
                                        checkpoint, start, end, csm)
            by_role = _days_by_quarter(conn, approver_times, approver_times.c.role, approver_times.c.decided_at,
                                       checkpoint, start, end, csm)
        groups = {"stages": {stage: by_stage.get(stage, {}) for stage in STAGES},
                  "approver_roles": dict(sorted(by_role.items()))}
        quarters = sorted({quarter for group in groups.values() for days in group.values() for quarter in days})
        value = {
            "quarters": [{"quarter": quarter,
                          **{name: {key: summarise(days.get(quarter, [])) for key, days in group.items()}
                             for name, group in groups.items()}}
                         for quarter in quarters],
            "overall": {name: {key: summarise(d for per_quarter in days.values() for d in per_quarter)
                               for key, days in group.items()}
                        for name, group in groups.items()},
        }
        return Answer(value, "cycle_times", checkpoint.mark())

    def candidates(self, *, since: datetime | None = None, csm: str | None = None) -> Answer:
        """Records that are candidates, newest first; ``since``: only those that became one from then on."""
        table = candidates
        with self._reading("candidates") as (conn, checkpoint):
            query = select(table).where(table.c.generation == checkpoint.generation, table.c.candidate.is_(True))
            if since is not None:
                query = query.where(table.c.candidate_since >= since)
            if csm:
                query = query.where(table.c.csm == csm)
            rows = [dict(row) for row in conn.execute(
                query.order_by(table.c.candidate_since.desc(), table.c.id)).mappings()]
        return Answer(rows, "candidates", checkpoint.mark())

    def published_between(self, start: datetime, end: datetime) -> Answer:
        """Records first published in [start, end), with how long they took from the commitment."""
        table = cycle_stages
        with self._reading("cycle_times") as (conn, checkpoint):
            rows = [dict(row) for row in conn.execute(
                select(table.c.id, table.c.csm, table.c.to_at, table.c.days)
                .where(table.c.generation == checkpoint.generation, table.c.stage == "committed_to_published",
                       table.c.to_at >= start, table.c.to_at < end)
                .order_by(table.c.to_at, table.c.id)).mappings()]
        return Answer(rows, "cycle_times", checkpoint.mark())


def _encode_blocker_cursor(csm: str, since: datetime, stream_id: str, seq: int) -> str:
    return cursors.encode([csm, since.isoformat(), stream_id, seq])


def _decode_blocker_cursor(cursor: str) -> tuple[str, datetime, str, int]:
    def parse(values: list) -> tuple[str, datetime, str, int]:
        csm, since, stream_id, seq = values
        since = datetime.fromisoformat(since)
        if not (isinstance(csm, str) and isinstance(stream_id, str) and type(seq) is int and since.tzinfo):
            raise ValueError(values)
        return csm, since, stream_id, seq

    return cursors.decode(cursor, parse)


def _days_by_quarter(conn: Connection, table, name, moment, checkpoint: Checkpoint, start, end,
                     csm) -> dict[str, dict[str, list[float]]]:
    """Day counts by name (a stage or a role), then by the quarter of ``moment``, within the filters."""
    conditions = [table.c.generation == checkpoint.generation]
    if start is not None:
        conditions.append(moment >= start)
    if end is not None:
        conditions.append(moment <= end)
    if csm:
        conditions.append(table.c.csm == csm)
    out: dict[str, dict[str, list[float]]] = {}
    for key, at, days in conn.execute(select(name, moment, table.c.days).where(and_(*conditions))):
        out.setdefault(key, {}).setdefault(quarter_of(at), []).append(days)
    return out


def _counts(rows) -> dict[str, Any]:
    by_status = _zeros()
    by_csm: dict[str, dict[str, int]] = {}
    for csm, status, count in sorted(rows, key=lambda row: (row[0] or "", row[1])):
        by_status[status] += count
        by_csm.setdefault(csm or "", _zeros())[status] += count
    return {"total": sum(by_status.values()), "by_status": by_status, "by_csm": by_csm}
