"""The weekly review's question "which are stuck?": one finding per rule a record breaks."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from service.domain.model import CaseStudy, Status

STUCK_CODES: tuple[str, ...] = (
    "not_started_too_long",
    "no_activity",
    "awaiting_approval_too_long",
    "hold_revisit_overdue",
    "hold_without_revisit_date",
    "missing_baseline",
)


@dataclass(frozen=True)
class StuckThresholds:
    """Days after which each rule fires (DOMAIN.md defaults)."""

    not_started_days: int = 14
    no_activity_days: int = 21
    awaiting_approval_days: int = 10
    hold_without_revisit_days: int = 30
    missing_baseline_days: int = 7


@dataclass(frozen=True)
class StuckFinding:
    """One broken rule: a code for machines, a sentence for people, and the facts behind both."""

    code: str
    reason: str
    since: datetime
    days: int
    details: dict[str, Any] = field(default_factory=dict)


def _days(delta: timedelta) -> int:
    return delta.days


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def stuck_findings(record: CaseStudy, as_of: datetime, limits: StuckThresholds) -> list[StuckFinding]:
    """Every stuck rule ``record`` breaks at ``as_of``; time in a status runs from ``entered_status_at``."""
    status = record.state
    entered = record.entered_status_at
    if entered is None:
        return []
    in_status = as_of - entered
    found: list[StuckFinding] = []
    if status == Status.NOT_STARTED.value and in_status > timedelta(days=limits.not_started_days):
        days = _days(as_of - record.committed_at)
        found.append(StuckFinding(
            "not_started_too_long",
            f"committed {_plural(days, 'day')} ago; {record.csm} (CSM) has not started",
            entered, _days(in_status), {"csm": record.csm, "threshold_days": limits.not_started_days}))
    if status == Status.IN_PROGRESS.value:
        idle = as_of - record.last_activity_at
        if idle > timedelta(days=limits.no_activity_days):
            found.append(StuckFinding(
                "no_activity",
                f"no activity for {_plural(_days(idle), 'day')} since {record.last_event_type}",
                record.last_activity_at, _days(idle),
                {"last_event_type": record.last_event_type, "threshold_days": limits.no_activity_days}))
        if not record.metrics["baseline"] and in_status > timedelta(days=limits.missing_baseline_days):
            found.append(StuckFinding(
                "missing_baseline", "no baseline metrics: improvement cannot be shown",
                entered, _days(in_status), {"threshold_days": limits.missing_baseline_days}))
    if (status == Status.AWAITING_CUSTOMER_APPROVAL.value
            and in_status > timedelta(days=limits.awaiting_approval_days)):
        pending = record.pending_approvers()
        found.append(StuckFinding(
            "awaiting_approval_too_long",
            f"waiting {_plural(_days(in_status), 'day')} on {', '.join(pending) or 'publication'}",
            entered, _days(in_status),
            {"pending_approvers": pending, "threshold_days": limits.awaiting_approval_days}))
    if status == Status.ON_HOLD.value:
        if record.revisit_on is not None:
            revisit = date.fromisoformat(record.revisit_on)
            overdue = (as_of.date() - revisit).days
            if overdue > 0:
                found.append(StuckFinding(
                    "hold_revisit_overdue",
                    f"hold to be revisited on {record.revisit_on}, {_plural(overdue, 'day')} overdue "
                    f"(reason: {record.hold_reason})",
                    entered, overdue, {"revisit_on": record.revisit_on, "hold_reason": record.hold_reason}))
        elif in_status > timedelta(days=limits.hold_without_revisit_days):
            found.append(StuckFinding(
                "hold_without_revisit_date",
                f"on hold for {_plural(_days(in_status), 'day')} with no revisit date",
                entered, _days(in_status),
                {"hold_reason": record.hold_reason, "threshold_days": limits.hold_without_revisit_days}))
    return found
