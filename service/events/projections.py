"""Read models over the state table: the record list and the stuck list (always current)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Iterator

from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.sql.expression import ColumnElement

from service import cursors
from service.domain import CaseStudy, StuckFinding, StuckThresholds, stuck_findings
from service.domain.model import Status
from service.events.db import transaction
from service.events.schemas import is_valid_stream_id
from service.events.store import EventStore
from service.events.tables import case_studies


def _last_id(values: list) -> str:
    (last_id,) = values
    if not isinstance(last_id, str) or not is_valid_stream_id(last_id):
        raise ValueError(values)
    return last_id


@dataclass(frozen=True)
class Page:
    records: list[CaseStudy]
    next_cursor: str | None


@dataclass(frozen=True)
class StuckRow:
    record: CaseStudy
    finding: StuckFinding


class Projections:
    """Queries for the record list and the weekly review's questions."""

    def __init__(self, engine: Engine, store: EventStore, thresholds: StuckThresholds):
        self.engine = engine
        self.store = store
        self.thresholds = thresholds

    def list_records(self, *, status: str | None = None, csm: str | None = None,
                     account: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """Records ordered by id, filtered, one page at a time (keyset pagination)."""
        query = select(case_studies.c.state).order_by(case_studies.c.id).limit(limit + 1)
        if status:
            query = query.where(case_studies.c.status == status)
        if csm:
            query = query.where(case_studies.c.csm == csm)
        if account:
            query = query.where(or_(case_studies.c.account_id == account,
                                    case_studies.c.account_name == account))
        if cursor:
            query = query.where(case_studies.c.id > cursors.decode(cursor, _last_id))
        with self.engine.connect() as conn:
            records = [CaseStudy.from_dict(row.state) for row in conn.execute(query)]
        more = len(records) > limit
        records = records[:limit]
        return Page(records, cursors.encode([records[-1].id]) if more else None)

    def stuck(self, *, as_of: datetime, now: datetime, csm: str | None = None,
              code: str | None = None) -> list[StuckRow]:
        """Stuck records at ``as_of``: from the state table for now or later, by replay for the past."""
        if as_of < now:
            records: Iterable[CaseStudy] = (r for r in self.store.replay_all(recorded_until=as_of)
                                            if csm is None or r.csm == csm)
        else:
            records = self._open_records(csm, as_of)
        rows = [StuckRow(record, finding)
                for record in records
                for finding in stuck_findings(record, as_of, self.thresholds)
                if code is None or finding.code == code]
        rows.sort(key=lambda row: (row.record.csm or "", -row.finding.days, row.record.id))
        return rows

    def _may_be_stuck(self, as_of: datetime) -> ColumnElement[bool]:
        limits, c = self.thresholds, case_studies.c

        def before(days: int) -> datetime:
            return as_of - timedelta(days=days)

        return or_(
            and_(c.status == Status.NOT_STARTED.value, c.entered_status_at < before(limits.not_started_days)),
            and_(c.status == Status.IN_PROGRESS.value,
                 or_(c.last_activity_at < before(limits.no_activity_days),
                     c.entered_status_at < before(limits.missing_baseline_days))),
            and_(c.status == Status.AWAITING_CUSTOMER_APPROVAL.value,
                 c.entered_status_at < before(limits.awaiting_approval_days)),
            c.status == Status.ON_HOLD.value,  # revisit dates live in the state document
        )

    def _open_records(self, csm: str | None, as_of: datetime) -> Iterator[CaseStudy]:
        """Records some stuck rule may hold for at ``as_of``, judged from the state table's columns
        (a superset: the rules themselves decide), so that only those states are read and parsed."""
        query = select(case_studies.c.state).where(self._may_be_stuck(as_of))
        if csm:
            query = query.where(case_studies.c.csm == csm)
        with transaction(self.engine, write=False) as conn:  # a server-side cursor needs one
            # Fetched a thousand at a time (one row at a time costs more than the rules).
            for states in conn.execution_options(yield_per=1000).execute(query).scalars().partitions():
                for state in states:
                    yield CaseStudy.from_dict(state)
