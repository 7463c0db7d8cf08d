"""The stuck list: which records break a stuck rule at a reference time, and why.

For now or later it reads the state table (only the records some rule may hold for); for a past
time it replays what had been recorded by then. The rules themselves are the domain's.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Iterator

from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.sql.expression import ColumnElement

from service.domain import CaseStudy, Status, StuckFinding, StuckThresholds, stuck_findings
from service.events.db import transaction
from service.events.store import EventStore
from service.events.tables import case_studies


@dataclass(frozen=True)
class StuckRow:
    record: CaseStudy
    finding: StuckFinding


class StuckList:
    """Stuck records with their findings."""

    def __init__(self, engine: Engine, store: EventStore, thresholds: StuckThresholds):
        self.engine = engine
        self.store = store
        self.thresholds = thresholds

    def find(self, *, as_of: datetime, now: datetime, csm: str | None = None,
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
