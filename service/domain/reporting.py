"""What reporting asks of a record's history: what blocks publication, how long stages take,
when it became a candidate, and its status over time.

Each question is a *fold*: it is shown every event of one stream with the record as it stands
just after it (``replay_steps``), and then says what it found. Folds are pure, so projectors,
rebuilds and tests all get the same answer from the same events.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

from service.domain.approvals import approval_rounds
from service.domain.model import CaseStudy, Event, Status
from service.domain.readiness import readiness

BLOCKER_CODES: tuple[str, ...] = (
    "approval_pending",
    "changes_requested",
    "on_hold",
    "missing_baseline_metrics",
    "missing_current_metrics",
    "unassigned_csm",
)

# Days from the commitment to the first time each later milestone happened.
STAGES: dict[str, str] = {
    "committed_to_started": "started",
    "committed_to_approval_requested": "approval_requested",
    "committed_to_published": "published",
}

_CLOSED = (Status.NEW.value, Status.PUBLISHED.value, Status.DECLINED.value)
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Blocker:
    """One thing standing between a record and publication."""

    code: str
    subject: str  # what it is about within the record (an approver role), or ""
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.code, self.subject


def blockers(record: CaseStudy) -> list[Blocker]:
    """What blocks publication of ``record`` now (nothing once published or declined)."""
    if record.state in _CLOSED:
        return []
    found: list[Blocker] = []
    if not record.csm:
        found.append(Blocker("unassigned_csm", "", "no CSM is assigned"))
    if record.state == Status.ON_HOLD.value:
        revisit = f", to be revisited on {record.revisit_on}" if record.revisit_on else ", no revisit date"
        found.append(Blocker("on_hold", "", f"on hold: {record.hold_reason}{revisit}",
                             {"hold_reason": record.hold_reason, "revisit_on": record.revisit_on,
                              "held_from": record.held_from}))
    if record.state == Status.AWAITING_CUSTOMER_APPROVAL.value:
        for role in record.pending_approvers():
            found.append(Blocker("approval_pending", role, f"approval pending from {role}",
                                 {"round": record.approval_round, "draft_url": record.draft_url}))
    if record.changes_requested and record.state != Status.AWAITING_CUSTOMER_APPROVAL.value:
        change = record.changes_requested
        found.append(Blocker("changes_requested", change["role"],
                             f"{change['role']} asked for changes: {change['comment']}",
                             {"round": change["round"], "comment": change["comment"],
                              "approver": change.get("approver")}))
    if not record.metrics["baseline"]:
        found.append(Blocker("missing_baseline_metrics", "", "no baseline metrics: improvement cannot be shown"))
    if not record.metrics["current"]:
        found.append(Blocker("missing_current_metrics", "", "no current metrics: improvement cannot be shown"))
    return found


@dataclass
class Interval:
    """Something that held from ``since`` until ``until`` (None: it still holds), in business time."""

    value: Any
    since: datetime
    until: datetime | None = None


class BlockerHistory:
    """Every blocker a record has had, with when it started and when it was cleared."""

    def __init__(self) -> None:
        self.intervals: list[Interval] = []
        self._open: dict[tuple[str, str], Interval] = {}

    def step(self, event: Event, record: CaseStudy) -> None:
        now = {blocker.key: blocker for blocker in blockers(record)}
        for key, interval in list(self._open.items()):
            if now.get(key) != interval.value:
                interval.until = event.occurred_at
                del self._open[key]
        for key, blocker in now.items():
            if key not in self._open:
                self._open[key] = Interval(blocker, event.occurred_at)
                self.intervals.append(self._open[key])


class StatusHistory:
    """The record's (status, CSM) over time."""

    def __init__(self) -> None:
        self.intervals: list[Interval] = []

    def step(self, event: Event, record: CaseStudy) -> None:
        value = (record.state, record.csm)
        if self.intervals and self.intervals[-1].value == value:
            return
        if self.intervals:
            self.intervals[-1].until = event.occurred_at
        self.intervals.append(Interval(value, event.occurred_at))


class Milestones:
    """When the record was committed, and first started, asked for approval and published."""

    def __init__(self) -> None:
        self.first: dict[str, datetime] = {}

    def step(self, event: Event, record: CaseStudy) -> None:
        self.first.setdefault(event.type, event.occurred_at)

    def stages(self) -> list[tuple[str, datetime, datetime, float]]:
        """(stage, from, to, days) for each stage the record has completed."""
        committed = self.first.get("committed")
        if committed is None:
            return []
        return [(stage, committed, self.first[event_type], days_between(committed, self.first[event_type]))
                for stage, event_type in STAGES.items() if event_type in self.first]


@dataclass(frozen=True)
class ApproverTime:
    round: int
    role: str
    decision: str
    requested_at: datetime
    decided_at: datetime
    days: float


def approver_times(events: Sequence[Event]) -> list[ApproverTime]:
    """How long each approver role took to answer, per approval round."""
    return [ApproverTime(r.number, d.role, d.decision, r.requested.occurred_at, d.step.occurred_at,
                         round(d.took_seconds / SECONDS_PER_DAY, 4))
            for r in approval_rounds(events) for d in r.decisions]


class CandidateHistory:
    """Whether the record is a candidate (DOMAIN.md readiness) and since when it has been one."""

    def __init__(self, kpi_threshold_pct: float) -> None:
        self.threshold = kpi_threshold_pct
        self.since: datetime | None = None

    def step(self, event: Event, record: CaseStudy) -> None:
        candidate = readiness(record, self.threshold).candidate
        if candidate and self.since is None:
            self.since = event.occurred_at
        elif not candidate:
            self.since = None


def days_between(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() / SECONDS_PER_DAY, 4)


def quarter_of(moment: datetime) -> str:
    """``2026-Q3`` for a time in July, August or September 2026."""
    return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile of ``values`` by linear interpolation between closest ranks
    (what PostgreSQL's percentile_cont and a spreadsheet's PERCENTILE give); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    value = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return round(value, 2)


def summarise(values: Iterable[float]) -> dict[str, Any]:
    """Count, median and 90th percentile of day counts."""
    values = list(values)
    return {"count": len(values), "median_days": percentile(values, 0.5), "p90_days": percentile(values, 0.9)}
