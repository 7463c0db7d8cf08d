"""The weekly review's question "which are stuck?": one finding per rule a record breaks."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable

from service.domain.model import CaseStudy, Status


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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# Each rule: a record in the rule's status, judged at ``as_of``; a finding, or None. Time in a status
# runs from ``entered_status_at`` (the occurred_at of the event that entered it).
def not_started_too_long(record: CaseStudy, as_of: datetime, limits: StuckThresholds) -> StuckFinding | None:
    """Not started too long after the commitment."""
    in_status = as_of - record.entered_status_at
    if in_status <= timedelta(days=limits.not_started_days):
        return None
    days = (as_of - record.committed_at).days
    return StuckFinding("not_started_too_long",
                        f"committed {_plural(days, 'day')} ago; {record.csm} (CSM) has not started",
                        record.entered_status_at, in_status.days,
                        {"csm": record.csm, "threshold_days": limits.not_started_days})


def no_activity(record: CaseStudy, as_of: datetime, limits: StuckThresholds) -> StuckFinding | None:
    """In progress with no event for too long."""
    idle = as_of - record.last_activity_at
    if idle <= timedelta(days=limits.no_activity_days):
        return None
    return StuckFinding("no_activity",
                        f"no activity for {_plural(idle.days, 'day')} since {record.last_event_type}",
                        record.last_activity_at, idle.days,
                        {"last_event_type": record.last_event_type, "threshold_days": limits.no_activity_days})


def missing_baseline(record: CaseStudy, as_of: datetime, limits: StuckThresholds) -> StuckFinding | None:
    """In progress too long with no baseline metrics."""
    in_status = as_of - record.entered_status_at
    if record.metrics["baseline"] or in_status <= timedelta(days=limits.missing_baseline_days):
        return None
    return StuckFinding("missing_baseline", "no baseline metrics: improvement cannot be shown",
                        record.entered_status_at, in_status.days, {"threshold_days": limits.missing_baseline_days})


def awaiting_approval_too_long(record: CaseStudy, as_of: datetime, limits: StuckThresholds) -> StuckFinding | None:
    """Waiting too long on the customer's approvers."""
    in_status = as_of - record.entered_status_at
    if in_status <= timedelta(days=limits.awaiting_approval_days):
        return None
    pending = record.pending_approvers()
    return StuckFinding("awaiting_approval_too_long",
                        f"waiting {_plural(in_status.days, 'day')} on {', '.join(pending) or 'publication'}",
                        record.entered_status_at, in_status.days,
                        {"pending_approvers": pending, "threshold_days": limits.awaiting_approval_days})


def hold_revisit_overdue(record: CaseStudy, as_of: datetime, limits: StuckThresholds) -> StuckFinding | None:
    """On hold past the date it was to be revisited."""
    if record.revisit_on is None:
        return None
    overdue = (as_of.date() - date.fromisoformat(record.revisit_on)).days
    if overdue <= 0:
        return None
    return StuckFinding("hold_revisit_overdue",
                        f"hold to be revisited on {record.revisit_on}, {_plural(overdue, 'day')} overdue "
                        f"(reason: {record.hold_reason})",
                        record.entered_status_at, overdue,
                        {"revisit_on": record.revisit_on, "hold_reason": record.hold_reason})


def hold_without_revisit_date(record: CaseStudy, as_of: datetime, limits: StuckThresholds) -> StuckFinding | None:
    """On hold too long with no date to revisit it."""
    in_status = as_of - record.entered_status_at
    if record.revisit_on is not None or in_status <= timedelta(days=limits.hold_without_revisit_days):
        return None
    return StuckFinding("hold_without_revisit_date",
                        f"on hold for {_plural(in_status.days, 'day')} with no revisit date",
                        record.entered_status_at, in_status.days,
                        {"hold_reason": record.hold_reason, "threshold_days": limits.hold_without_revisit_days})


Rule = Callable[[CaseStudy, datetime, StuckThresholds], "StuckFinding | None"]

# The rules each status is judged by, in the order findings are listed (DOMAIN.md's table).
RULES: dict[str, tuple[Rule, ...]] = {
    Status.NOT_STARTED.value: (not_started_too_long,),
    Status.IN_PROGRESS.value: (no_activity, missing_baseline),
    Status.AWAITING_CUSTOMER_APPROVAL.value: (awaiting_approval_too_long,),
    Status.ON_HOLD.value: (hold_revisit_overdue, hold_without_revisit_date),
}
# A rule's code is its name.
STUCK_CODES: tuple[str, ...] = tuple(rule.__name__ for rules in RULES.values() for rule in rules)


def stuck_findings(record: CaseStudy, as_of: datetime, limits: StuckThresholds) -> list[StuckFinding]:
    """Every stuck rule ``record`` breaks at ``as_of``."""
    if record.entered_status_at is None:
        return []
    found = (rule(record, as_of, limits) for rule in RULES.get(record.state, ()))
    return [finding for finding in found if finding is not None]
