"""The projectors: each turns one stream's events into the rows its tables hold for that record.

A projector is a pure function of a stream (the folds of service/domain/reporting.py over
``replay_steps``), so projecting a record again gives the same rows: the runner replaces a
record's rows whenever the feed brings one of its events, and a rebuild projects every stream
once. Rows are given without ``generation``; whoever writes them adds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Table

from service.domain.machine import replay_steps
from service.domain.model import CaseStudy
from service.domain.readiness import readiness
from service.domain.reporting import (
    BlockerHistory,
    CandidateHistory,
    Milestones,
    StatusHistory,
    approver_times,
)
from service.events.event import StoredEvent
from service.projections.tables import (
    approver_times as approver_times_table,
)
from service.projections.tables import (
    blockers,
    candidates,
    cycle_stages,
    pipeline_records,
    status_history,
)

Rows = dict[Table, list[dict[str, Any]]]


class Fold:
    """Shown each event with the record just after it; then gives the record's rows."""

    def step(self, event: StoredEvent, record: CaseStudy) -> None: ...

    def rows(self, record: CaseStudy, events: Sequence[StoredEvent]) -> Rows: ...


@dataclass(frozen=True)
class Projector:
    """A named read model: its tables and how one stream becomes rows in them."""

    name: str
    tables: tuple[Table, ...]
    fold: Callable[[], Fold]
    description: str


def _account_name(record: CaseStudy) -> str | None:
    return record.account["name"] if record.account else None


class _PipelineFold(Fold):
    def __init__(self) -> None:
        self.history = StatusHistory()

    def step(self, event, record):
        self.history.step(event, record)

    def rows(self, record, events):
        return {
            pipeline_records: [{"id": record.id, "status": record.state, "csm": record.csm}],
            status_history: [{"id": record.id, "seq": seq, "status": interval.value[0], "csm": interval.value[1],
                              "from_at": interval.since, "to_at": interval.until}
                             for seq, interval in enumerate(self.history.intervals, start=1)],
        }


class _BlockersFold(Fold):
    def __init__(self) -> None:
        self.history = BlockerHistory()

    def step(self, event, record):
        self.history.step(event, record)

    def rows(self, record, events):
        return {blockers: [{"id": record.id, "seq": seq, "code": interval.value.code,
                            "subject": interval.value.subject, "status": record.state, "csm": record.csm,
                            "account_name": _account_name(record), "reason": interval.value.reason,
                            "details": interval.value.details, "since": interval.since,
                            "until": interval.until}
                           for seq, interval in enumerate(self.history.intervals, start=1)]}


class _CycleTimesFold(Fold):
    def __init__(self) -> None:
        self.milestones = Milestones()

    def step(self, event, record):
        self.milestones.step(event, record)

    def rows(self, record, events):
        return {
            cycle_stages: [{"id": record.id, "stage": stage, "csm": record.csm, "from_at": start, "to_at": end,
                            "days": days} for stage, start, end, days in self.milestones.stages()],
            approver_times_table: [{"id": record.id, "round": t.round, "role": t.role, "csm": record.csm,
                                    "decision": t.decision, "requested_at": t.requested_at,
                                    "decided_at": t.decided_at, "days": t.days}
                                   for t in approver_times(events)],
        }


class _CandidatesFold(Fold):
    def __init__(self, kpi_threshold_pct: float) -> None:
        self.threshold = kpi_threshold_pct
        self.history = CandidateHistory(kpi_threshold_pct)

    def step(self, event, record):
        self.history.step(event, record)

    def rows(self, record, events):
        ready = readiness(record, self.threshold)
        return {candidates: [{"id": record.id, "status": record.state, "csm": record.csm,
                              "account_name": _account_name(record),
                              "kpi_improvement_pct": ready.kpi_improvement_pct, "best_metric": ready.best_metric,
                              "nps": ready.nps, "msa_clear": ready.msa_clear,
                              "candidate": ready.candidate,
                              "candidate_since": self.history.since}]}


def projectors(kpi_threshold_pct: float) -> dict[str, Projector]:
    """Every projector by name, in the order they are run and listed."""
    return {p.name: p for p in (
        Projector("pipeline", (pipeline_records, status_history), _PipelineFold,
                  "records by status and CSM, and each record's status over time"),
        Projector("blockers", (blockers,), _BlockersFold,
                  "what blocks publication of each record, since when, and when it was cleared"),
        Projector("cycle_times", (cycle_stages, approver_times_table), _CycleTimesFold,
                  "days from commitment to each milestone, and each approver role's answer time"),
        Projector("candidates", (candidates,), lambda: _CandidatesFold(kpi_threshold_pct),
                  "readiness of each record and since when it has been a candidate"),
    )}


def choose(projectors: dict[str, Projector], names: Iterable[str] | None) -> list[str]:
    """The projectors named (all when ``names`` is empty); KeyError naming any that does not exist."""
    chosen = list(names) if names else list(projectors)
    unknown = [name for name in chosen if name not in projectors]
    if unknown:
        raise KeyError(f"no projector named {', '.join(unknown)}; there are {', '.join(projectors)}")
    return chosen


class EventNotProjected(Exception):
    """Projecting a stream failed at ``event`` (a stream the domain refuses, or a projector's bug)."""

    def __init__(self, event: StoredEvent, error: Exception):
        super().__init__(f"stream {event.stream_id}, version {event.version} ({event.type}) at position "
                         f"{event.position}: {type(error).__name__}: {error}")
        self.event = event


def project(stream_id: str, events: Sequence[StoredEvent], chosen: Sequence[Projector]) -> dict[str, Rows]:
    """The rows each chosen projector keeps for one stream (its events, oldest first).

    Raises EventNotProjected naming the event at which projecting failed."""
    folds = [projector.fold() for projector in chosen]
    record = CaseStudy(id=stream_id)
    done = 0
    try:
        for event, record in replay_steps(stream_id, events):
            for fold in folds:
                fold.step(event, record)
            done += 1
        return {projector.name: fold.rows(record, events) for projector, fold in zip(chosen, folds)}
    except Exception as error:  # whatever it is, it is reported with the event it happened at
        raise EventNotProjected(events[min(done, len(events) - 1)], error) from error
