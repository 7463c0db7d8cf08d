"""What reporting asks of a record: what blocks its publication, which stages of the cycle there
are, and the figures reports give (days between two times, quarters, percentiles).

The projectors (service/projections) fold a record's events through these rules one at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from service.domain.model import CaseStudy, Status

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


# Events after which what blocks publication cannot differ: they change nothing ``blockers`` reads.
LEAVE_BLOCKERS = frozenset(("quote_added", "nps_recorded", "shared_with_champion", "views_reported"))


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


def days_between(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() / SECONDS_PER_DAY, 4)


def quarter_of(moment: datetime) -> str:
    """``2026-Q3`` for a time in July, August or September 2026."""
    return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"


# The figures a summary of day counts gives: each a quantile, as a fraction (numerator, denominator).
QUANTILES: dict[str, tuple[int, int]] = {"median_days": (1, 2), "p90_days": (9, 10)}


def quantile_ranks(count: int, fraction: tuple[int, int]) -> tuple[int, int, float]:
    """The quantile of ``count`` ordered values lies between the values at these two 0-based ranks,
    the given share of the way from the first to the second (linear interpolation between closest
    ranks: what PostgreSQL's percentile_cont and a spreadsheet's PERCENTILE give). Exact arithmetic:
    the rank is ``numerator * (count - 1) / denominator``."""
    numerator, denominator = fraction
    position = numerator * (count - 1)
    low, part = divmod(position, denominator)
    return low, low + (1 if part else 0), part / denominator


def summary(count: int, at_rank: Callable[[int], float]) -> dict[str, Any]:
    """Count and QUANTILES of ``count`` day counts, given the value at any 0-based rank in order
    (only the ranks ``quantile_ranks`` names are asked for)."""
    values = []
    for fraction in QUANTILES.values():
        if not count:
            values.append(None)
            continue
        low, high, share = quantile_ranks(count, fraction)
        first = at_rank(low)
        values.append(first + (at_rank(high) - first) * share)
    return summary_of(count, values)


def summary_of(count: int, quantiles: Sequence[float | None]) -> dict[str, Any]:
    """The summary of ``count`` day counts whose QUANTILES (in order) are ``quantiles``, as reports show it."""
    return {"count": count, **{name: None if value is None else round(value, 2)
                               for name, value in zip(QUANTILES, quantiles)}}


def summarise(values: Iterable[float]) -> dict[str, Any]:
    """Count, median and 90th percentile of day counts."""
    ordered = sorted(values)
    return summary(len(ordered), ordered.__getitem__)
