"""The weekly review's question "which are stuck?": one finding per rule a record breaks.

Each rule says two things, so that a database can answer the question without judging every record:
from when it holds while the record stays as it is (``starts``: a record committed at t is
``not_started_too_long`` after t + 14 days), and what a person is told when it does (``finding``).
A record breaks a rule at a reference time exactly when that time is later than the rule's start.
Rules read only the record's ``StuckFacts``, which projections keep beside each start.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Callable

from service.domain.model import APPROVER_ROLES, CaseStudy, Status


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


_TIMES = ("committed_at", "entered_status_at", "last_activity_at")
_NO_FACTS: dict[str, Any] = {"csm": None, "committed_at": None, "entered_status_at": None, "last_activity_at": None,
                             "last_event_type": None, "pending_approvers": [], "has_baseline": False,
                             "revisit_on": None, "hold_reason": None}


@dataclass(frozen=True)
class StuckFacts:
    """What the stuck rules read of a record."""

    state: str
    csm: str | None
    committed_at: datetime | None
    entered_status_at: datetime | None
    last_activity_at: datetime | None
    last_event_type: str | None
    pending_approvers: tuple[str, ...]
    has_baseline: bool
    revisit_on: str | None
    hold_reason: str | None

    @classmethod
    def of(cls, record: CaseStudy) -> "StuckFacts":
        return cls(record.state, record.csm, record.committed_at, record.entered_status_at, record.last_activity_at,
                   record.last_event_type, tuple(record.pending_approvers()), bool(record.metrics["baseline"]),
                   record.revisit_on, record.hold_reason)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in _TIMES:
            out[name] = out[name].isoformat() if out[name] else None
        out["pending_approvers"] = list(self.pending_approvers)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "StuckFacts":
        values = dict(raw)
        for name in _TIMES:
            values[name] = datetime.fromisoformat(values[name]) if values[name] else None
        values["pending_approvers"] = tuple(role for role in APPROVER_ROLES if role in values["pending_approvers"])
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return list(value) if isinstance(value, tuple) else value


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _after(moment: datetime | None, days: int) -> datetime | None:
    return None if moment is None else moment + timedelta(days=days)


def _start_of_day_after(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), time.min, tzinfo=UTC)


@dataclass(frozen=True)
class Rule:
    """A stuck rule for records in ``status``: named by its code."""

    code: str
    status: str
    starts: Callable[[StuckFacts, StuckThresholds], datetime | None]  # None: it cannot hold as the record is
    finding: Callable[[StuckFacts, datetime, StuckThresholds], StuckFinding]  # once it holds, at a time
    reads: tuple[str, ...]  # the facts ``finding`` reads (all a projection need keep for it)

    def facts(self, facts: StuckFacts) -> dict[str, Any]:
        """What ``finding`` needs of ``facts``, as JSON."""
        return {name: _plain(getattr(facts, name)) for name in self.reads}

    def finding_from(self, kept: dict[str, Any], as_of: datetime, limits: StuckThresholds) -> StuckFinding:
        """The finding, from what ``facts`` kept."""
        return self.finding(StuckFacts.from_dict({**_NO_FACTS, **kept, "state": self.status}), as_of, limits)


def _not_started(r: StuckFacts, as_of: datetime, limits: StuckThresholds) -> StuckFinding:
    in_status = as_of - r.entered_status_at
    return StuckFinding("not_started_too_long",
                        f"committed {_plural((as_of - r.committed_at).days, 'day')} ago; {r.csm} (CSM) has not started",
                        r.entered_status_at, in_status.days, {"csm": r.csm, "threshold_days": limits.not_started_days})


def _no_activity(r: StuckFacts, as_of: datetime, limits: StuckThresholds) -> StuckFinding:
    idle = as_of - r.last_activity_at
    return StuckFinding("no_activity", f"no activity for {_plural(idle.days, 'day')} since {r.last_event_type}",
                        r.last_activity_at, idle.days,
                        {"last_event_type": r.last_event_type, "threshold_days": limits.no_activity_days})


def _missing_baseline(r: StuckFacts, as_of: datetime, limits: StuckThresholds) -> StuckFinding:
    return StuckFinding("missing_baseline", "no baseline metrics: improvement cannot be shown",
                        r.entered_status_at, (as_of - r.entered_status_at).days,
                        {"threshold_days": limits.missing_baseline_days})


def _awaiting(r: StuckFacts, as_of: datetime, limits: StuckThresholds) -> StuckFinding:
    in_status = as_of - r.entered_status_at
    pending = list(r.pending_approvers)
    return StuckFinding("awaiting_approval_too_long",
                        f"waiting {_plural(in_status.days, 'day')} on {', '.join(pending) or 'publication'}",
                        r.entered_status_at, in_status.days,
                        {"pending_approvers": pending, "threshold_days": limits.awaiting_approval_days})


def _revisit_overdue(r: StuckFacts, as_of: datetime, limits: StuckThresholds) -> StuckFinding:
    overdue = (as_of.date() - date.fromisoformat(r.revisit_on)).days
    return StuckFinding("hold_revisit_overdue",
                        f"hold to be revisited on {r.revisit_on}, {_plural(overdue, 'day')} overdue "
                        f"(reason: {r.hold_reason})",
                        r.entered_status_at, overdue, {"revisit_on": r.revisit_on, "hold_reason": r.hold_reason})


def _without_revisit(r: StuckFacts, as_of: datetime, limits: StuckThresholds) -> StuckFinding:
    in_status = as_of - r.entered_status_at
    return StuckFinding("hold_without_revisit_date", f"on hold for {_plural(in_status.days, 'day')} with no revisit date",
                        r.entered_status_at, in_status.days,
                        {"hold_reason": r.hold_reason, "threshold_days": limits.hold_without_revisit_days})


_MICROSECOND = timedelta(microseconds=1)

# DOMAIN.md's table, in its order. Time in a status counts from ``entered_status_at`` (the
# occurred_at of the event that entered it); a rule holds when more than its days have passed.
RULES: tuple[Rule, ...] = (
    Rule("not_started_too_long", Status.NOT_STARTED.value,
         lambda r, limits: _after(r.entered_status_at, limits.not_started_days), _not_started,
         ("csm", "committed_at", "entered_status_at")),
    Rule("no_activity", Status.IN_PROGRESS.value,
         lambda r, limits: _after(r.last_activity_at, limits.no_activity_days), _no_activity,
         ("last_activity_at", "last_event_type")),
    Rule("awaiting_approval_too_long", Status.AWAITING_CUSTOMER_APPROVAL.value,
         lambda r, limits: _after(r.entered_status_at, limits.awaiting_approval_days), _awaiting,
         ("entered_status_at", "pending_approvers")),
    # overdue from the start of the day after the revisit date (the last moment before it is the start)
    Rule("hold_revisit_overdue", Status.ON_HOLD.value,
         lambda r, limits: _start_of_day_after(r.revisit_on) - _MICROSECOND if r.revisit_on else None,
         _revisit_overdue, ("entered_status_at", "revisit_on", "hold_reason")),
    Rule("hold_without_revisit_date", Status.ON_HOLD.value,
         lambda r, limits: None if r.revisit_on else _after(r.entered_status_at, limits.hold_without_revisit_days),
         _without_revisit, ("entered_status_at", "hold_reason")),
    Rule("missing_baseline", Status.IN_PROGRESS.value,
         lambda r, limits: None if r.has_baseline else _after(r.entered_status_at, limits.missing_baseline_days),
         _missing_baseline, ("entered_status_at",)),
)
STUCK_CODES: tuple[str, ...] = tuple(rule.code for rule in RULES)
RULE_OF: dict[str, Rule] = {rule.code: rule for rule in RULES}
_BY_STATUS: dict[str, tuple[Rule, ...]] = {
    status.value: tuple(rule for rule in RULES if rule.status == status.value) for status in Status}


def stuck_starts(facts: StuckFacts, limits: StuckThresholds) -> dict[str, datetime]:
    """For each rule that can hold for the record as it is, the moment after which it holds."""
    if facts.entered_status_at is None:
        return {}
    starts = {}
    for rule in _BY_STATUS[facts.state]:
        start = rule.starts(facts, limits)
        if start is not None:
            starts[rule.code] = start
    return starts


def stuck_findings(record: CaseStudy | StuckFacts, as_of: datetime, limits: StuckThresholds) -> list[StuckFinding]:
    """Every stuck rule the record breaks at ``as_of``."""
    facts = record if isinstance(record, StuckFacts) else StuckFacts.of(record)
    return [RULE_OF[code].finding(facts, as_of, limits)
            for code, start in stuck_starts(facts, limits).items() if as_of > start]
