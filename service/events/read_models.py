"""Queries over the projectors' tables. Every answer carries the mark its projector has read to.

Each query runs in one read transaction: the checkpoint (which generation is live, how far it
has read) and the rows come from the same snapshot, so a rebuild swapping generations in is
never seen half done.
"""
from __future__ import annotations

import base64
import binascii
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

import orjson
from sqlalchemy import Connection, Engine, and_, func, literal, or_, select, tuple_

from service.domain import STATUS_LABELS
from service.domain.reporting import STAGES, quarter_of, summarise
from service.events.db import transaction
from service.events.feed import Mark
from service.events.projecting import Checkpoint, ProjectionRunner
from service.events.projections import BadCursor
from service.events.tables import (
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


class ReadModels:
    """The reporting questions, answered from the projections."""

    def __init__(self, engine: Engine, runner: ProjectionRunner):
        self.engine = engine
        self.runner = runner

    @contextmanager
    def _reading(self, name: str) -> Iterator[tuple[Connection, Checkpoint]]:
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            yield conn, self.runner.checkpoint(conn, name)

    def read_to(self, name: str) -> Mark:
        """How far projector ``name`` has read."""
        with self._reading(name) as (_conn, checkpoint):
            return checkpoint.mark()

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
            stage_rows = conn.execute(_period(select(cycle_stages.c.stage, cycle_stages.c.to_at,
                                                     cycle_stages.c.days),
                                              cycle_stages, cycle_stages.c.to_at, checkpoint, start, end, csm)).all()
            role_rows = conn.execute(_period(select(approver_times.c.role, approver_times.c.decided_at,
                                                    approver_times.c.days),
                                             approver_times, approver_times.c.decided_at, checkpoint, start, end,
                                             csm)).all()
        stage_days: dict[tuple[str, str], list[float]] = {}
        role_days: dict[tuple[str, str], list[float]] = {}
        for name, moment, days in stage_rows:
            stage_days.setdefault((quarter_of(moment), name), []).append(days)
        for name, moment, days in role_rows:
            role_days.setdefault((quarter_of(moment), name), []).append(days)
        quarters = sorted({q for q, _ in stage_days} | {q for q, _ in role_days})
        roles = sorted({name for _, name in role_days})
        value = {
            "quarters": [{
                "quarter": quarter,
                "stages": {stage: summarise(stage_days.get((quarter, stage), [])) for stage in STAGES},
                "approver_roles": {role: summarise(role_days.get((quarter, role), [])) for role in roles},
            } for quarter in quarters],
            "overall": {
                "stages": {stage: summarise(d for (_, s), days in stage_days.items() if s == stage for d in days)
                           for stage in STAGES},
                "approver_roles": {role: summarise(d for (_, r), days in role_days.items() if r == role
                                                   for d in days) for role in roles},
            },
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
    raw = orjson.dumps([csm, since.isoformat(), stream_id, seq])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_blocker_cursor(cursor: str) -> tuple[str, datetime, str, int]:
    try:
        csm, since, stream_id, seq = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value = (csm, datetime.fromisoformat(since), stream_id, seq)
        valid = (isinstance(csm, str) and isinstance(stream_id, str) and type(seq) is int
                 and value[1].tzinfo is not None and _encode_blocker_cursor(*value) == cursor)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        valid = False
    if not valid:
        raise BadCursor("cursor is not one this service handed out")
    return value


def _period(query, table, moment, checkpoint: Checkpoint, start, end, csm):
    conditions = [table.c.generation == checkpoint.generation]
    if start is not None:
        conditions.append(moment >= start)
    if end is not None:
        conditions.append(moment <= end)
    if csm:
        conditions.append(table.c.csm == csm)
    return query.where(and_(*conditions))


def _counts(rows) -> dict[str, Any]:
    by_status = _zeros()
    by_csm: dict[str, dict[str, int]] = {}
    for csm, status, count in sorted(rows, key=lambda row: (row[0] or "", row[1])):
        by_status[status] += count
        by_csm.setdefault(csm or "", _zeros())[status] += count
    return {"total": sum(by_status.values()), "by_status": by_status, "by_csm": by_csm}
