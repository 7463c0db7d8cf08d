"""The projectors: each folds a record's events, one at a time, into versions of its rows.

A projector keeps a small state per record (JSON) between batches, beside the record as replay
leaves it, so that a record's next events are folded onto what the projection already holds:
never a replay from the first event. Each event is applied to the record through the domain's
one ``apply`` and then shown to every projector, which says which of its rows the event changed
(``Changes.put``) or ended (``Changes.end``). A version is valid from the event's ``recorded_at``
until the next change of the same row. The rules themselves are the domain's: what blocks
publication, readiness, the stuck rules, the stages of the cycle.

Projecting is a pure function of the events: a rebuild (every stream from its first event) and
the live runner (batch after batch, from the states kept) write the same rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Protocol, Sequence

from sqlalchemy import Table

from service.domain import CaseStudy, StuckThresholds, apply, readiness
from service.domain.errors import GuardFailed, StreamCorrupt, TransitionNotAllowed
from service.domain.readiness import READINESS_EVENTS
from service.domain.reporting import LEAVE_BLOCKERS, STAGES, blockers, days_between, quarter_of
from service.domain.stuck import RULE_OF, StuckFacts, stuck_starts
from service.events.event import StoredEvent
from service.projections.tables import (
    approver_times,
    candidates,
    cycle_stages,
    pipeline_records,
    status_history,
    stuck,
)
from service.projections.tables import (
    blockers as blockers_table,
)

Key = tuple  # a row's key columns, after the generation: (id,), (id, seq), ...


class Changes:
    """The row versions a pass makes, by table and key: each change at a recorded time, with the
    row's new values (None: the row ends)."""

    def __init__(self) -> None:
        self.by_table: dict[Table, dict[Key, list[tuple[datetime, dict[str, Any] | None]]]] = {}

    def put(self, table: Table, key: Key, at: datetime, values: dict[str, Any]) -> None:
        self.by_table.setdefault(table, {}).setdefault(key, []).append((at, values))

    def end(self, table: Table, key: Key, at: datetime) -> None:
        self.by_table.setdefault(table, {}).setdefault(key, []).append((at, None))

    def versions(self, table: Table) -> Iterable[tuple[Key, datetime, list[tuple[datetime, datetime | None,
                                                                          dict[str, Any]]]]]:
        """For each key the table's rows changed at: the recorded time of its first change (where the
        version before it, if any, ends) and the new versions as (valid_from, valid_to, values),
        ``valid_to`` chained from one to the next. A version that another replaced at the same
        recorded time was never visible: it is left out."""
        for key, changes in self.by_table.get(table, {}).items():
            versions = []
            last = len(changes) - 1
            for index, (at, values) in enumerate(changes):
                if values is None:
                    continue
                until = changes[index + 1][0] if index < last else None
                if until != at:
                    versions.append((at, until, values))
            yield key, changes[0][0], versions


class Projector(Protocol):
    """A named read model: its tables, and how an event changes its rows."""

    name: str
    tables: tuple[Table, ...]
    description: str

    def step(self, state: dict[str, Any], event: StoredEvent, record: CaseStudy, changes: Changes) -> None:
        """Fold ``event`` (the record as just after it) into ``state``, noting what changed."""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _account(record: CaseStudy) -> tuple[str | None, str | None]:
    return (record.account["id"], record.account["name"]) if record.account else (None, None)


@dataclass(frozen=True)
class PipelineProjector:
    """Records by status and CSM, and each record's (status, CSM) over business time."""

    name: str = "pipeline"
    tables: tuple[Table, ...] = (pipeline_records, status_history)
    description: str = "records by status and CSM, and each record's status over time"

    def step(self, state, event, record, changes):
        account_id, account_name = _account(record)
        row = [record.state, record.csm, account_id, account_name]
        if row != state.get("row"):
            changes.put(pipeline_records, (record.id,), event.recorded_at,
                        {"status": record.state, "csm": record.csm, "account_id": account_id,
                         "account_name": account_name})
            state["row"] = row
        last = state.get("interval")  # [seq, status, csm, from_at] of the interval the record is in
        if last is not None and last[1] == record.state and last[2] == record.csm:
            return
        seq = 1
        if last is not None:
            changes.put(status_history, (record.id, last[0]), event.recorded_at,
                        {"status": last[1], "csm": last[2], "from_at": _time(last[3]), "to_at": event.occurred_at})
            seq = last[0] + 1
        changes.put(status_history, (record.id, seq), event.recorded_at,
                    {"status": record.state, "csm": record.csm, "from_at": event.occurred_at, "to_at": None})
        state["interval"] = [seq, record.state, record.csm, event.occurred_at.isoformat()]


@dataclass(frozen=True)
class BlockersProjector:
    """What blocks each record's publication now, and since when (a blocker that clears ends)."""

    name: str = "blockers"
    tables: tuple[Table, ...] = (blockers_table,)
    description: str = "what blocks publication of each record, and since when"

    def step(self, state, event, record, changes):
        if event.type in LEAVE_BLOCKERS and "head" in state:
            return
        now = {f"{blocker.code}/{blocker.subject}": blocker for blocker in blockers(record)}
        head = [record.state, record.csm, _account(record)[1]]
        moved = head != state.get("head")
        state["head"] = head
        opened = state.setdefault("open", {})  # key -> [seq, reason, details, since]
        for key in list(opened):
            seq, reason, details, since = opened[key]
            blocker = now.get(key)
            if blocker is None or blocker.reason != reason or blocker.details != details:
                changes.end(blockers_table, (record.id, seq), event.recorded_at)
                del opened[key]
            elif moved:
                changes.put(blockers_table, (record.id, seq), event.recorded_at, _blocker_row(blocker, since, head))
        for key, blocker in now.items():
            if key not in opened:
                state["seq"] = seq = state.get("seq", 0) + 1
                since = event.occurred_at.isoformat()
                opened[key] = [seq, blocker.reason, blocker.details, since]
                changes.put(blockers_table, (record.id, seq), event.recorded_at, _blocker_row(blocker, since, head))


def _blocker_row(blocker, since: str, head: list) -> dict[str, Any]:
    return {"code": blocker.code, "subject": blocker.subject, "status": head[0], "csm": head[1],
            "account_name": head[2], "reason": blocker.reason, "details": blocker.details, "since": _time(since)}


_STAGE_OF_EVENT = {event_type: stage for stage, event_type in STAGES.items()}


@dataclass(frozen=True)
class CycleTimesProjector:
    """Days from the commitment to the first of each later milestone, and each approver role's
    answer time in each round (from the round's request, holds included)."""

    name: str = "cycle_times"
    tables: tuple[Table, ...] = (cycle_stages, approver_times)
    description: str = "days from commitment to each milestone, and each approver role's answer time"

    def step(self, state, event, record, changes):
        first = state.setdefault("first", {})  # when the commitment and each stage's event first happened
        if event.type not in first and (event.type == "committed" or event.type in _STAGE_OF_EVENT):
            first[event.type] = event.occurred_at.isoformat()
            stage = _STAGE_OF_EVENT.get(event.type)
            committed = _time(first.get("committed"))
            if stage is not None and committed is not None:
                changes.put(cycle_stages, (record.id, stage), event.recorded_at,
                            {"from_at": committed, "to_at": event.occurred_at,
                             "days": days_between(committed, event.occurred_at),
                             "quarter": quarter_of(event.occurred_at)})
        current = state.get("round")  # [number, requested_at, open]
        if event.type == "approval_requested":
            state["round"] = [(current[0] if current else 0) + 1, event.occurred_at.isoformat(), True]
        elif current is not None and current[2]:
            if event.type in ("approval_granted", "changes_requested"):
                requested = _time(current[1])
                changes.put(approver_times, (record.id, current[0], event.data["role"]), event.recorded_at,
                            {"decision": "granted" if event.type == "approval_granted" else "changes_requested",
                             "requested_at": requested, "decided_at": event.occurred_at,
                             "days": round((event.occurred_at - requested).total_seconds() / 86_400, 4),
                             "quarter": quarter_of(event.occurred_at)})
            if event.type in ("changes_requested", "published", "declined"):
                current[2] = False  # the round is over


@dataclass(frozen=True)
class CandidatesProjector:
    """The records that are candidates (DOMAIN.md's rule), since when, and their readiness: a row
    while the record is one, ended when it stops being one."""

    kpi_threshold_pct: float
    name: str = "candidates"
    tables: tuple[Table, ...] = (candidates,)
    description: str = "records that are candidates, since when, and their readiness"

    def step(self, state, event, record, changes):
        if event.type in READINESS_EVENTS or "ready" not in state:
            ready = readiness(record, self.kpi_threshold_pct)
            state["ready"] = [ready.kpi_improvement_pct, ready.best_metric, ready.nps, ready.msa_clear,
                              ready.candidate]
        if not state["ready"][4]:
            if state.pop("row", None) is not None:
                changes.end(candidates, (record.id,), event.recorded_at)
            return
        since = state["row"][-1] if state.get("row") else event.occurred_at.isoformat()
        row = [record.state, record.csm, _account(record)[1], *state["ready"][:4], since]
        if row != state.get("row"):
            state["row"] = row
            changes.put(candidates, (record.id,), event.recorded_at, {
                "status": row[0], "csm": row[1], "account_name": row[2], "kpi_improvement_pct": row[3],
                "best_metric": row[4], "nps": row[5], "msa_clear": row[6], "candidate_since": _time(since)})


@dataclass(frozen=True)
class StuckProjector:
    """For each stuck rule that can hold for a record as it is: the moment after which it holds."""

    thresholds: StuckThresholds
    name: str = "stuck"
    tables: tuple[Table, ...] = (stuck,)
    description: str = "when each stuck rule starts to hold for each record, as it stands"

    def step(self, state, event, record, changes):
        facts = StuckFacts.of(record)
        starts = stuck_starts(facts, self.thresholds)
        rows = state.setdefault("rows", {})  # code -> [holds_after, status, csm, account_id, account_name, facts]
        for code in list(rows):
            if code not in starts:
                changes.end(stuck, (record.id, code), event.recorded_at)
                del rows[code]
        for code, start in starts.items():
            row = [start.isoformat(), record.state, record.csm, *_account(record), RULE_OF[code].facts(facts)]
            if row != rows.get(code):
                rows[code] = row
                changes.put(stuck, (record.id, code), event.recorded_at, {
                    "holds_after": start, "status": row[1], "csm": row[2], "account_id": row[3],
                    "account_name": row[4], "facts": row[5]})


def projectors(kpi_threshold_pct: float, thresholds: StuckThresholds) -> dict[str, Projector]:
    """Every projector by name, in the order they are run and listed."""
    return {p.name: p for p in (PipelineProjector(), BlockersProjector(), CycleTimesProjector(),
                                CandidatesProjector(kpi_threshold_pct), StuckProjector(thresholds))}


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


def start(stream_id: str) -> dict[str, Any]:
    """What the projections hold for a record they have not seen."""
    return {"record": None, "folds": {}}


def stored(held: dict[str, Any]) -> dict[str, Any]:
    """What the projections hold for a record, as it is written (JSON): ``fold`` leaves the record
    as an object, so that a runner keeping it in memory folds the next events onto it directly."""
    record = held["record"]
    return {**held, "record": record.to_dict() if isinstance(record, CaseStudy) else record}


def fold(stream_id: str, held: dict[str, Any], events: Sequence[StoredEvent],
         chosen: Sequence[Projector], changes: Changes) -> dict[str, Any]:
    """Fold ``events`` (the record's next ones, oldest first) onto what the projections ``held`` for it.

    Returns what they hold afterwards. Raises EventNotProjected naming the event that failed."""
    record = held["record"]
    if not isinstance(record, CaseStudy):
        record = CaseStudy.from_dict(record) if record else CaseStudy(id=stream_id)
    states = {projector.name: held["folds"].setdefault(projector.name, {}) for projector in chosen}
    for event in events:
        try:
            try:
                apply(record, event)
            except (TransitionNotAllowed, GuardFailed) as refusal:
                raise StreamCorrupt(f"stream {stream_id}: stored event version {event.version} ({event.type}) "
                                    f"is refused on replay: {refusal.reason}") from refusal
            for projector in chosen:
                projector.step(states[projector.name], event, record, changes)
        except Exception as error:  # whatever it is, it is reported with the event it happened at
            raise EventNotProjected(event, error) from error
    held["record"] = record
    return held
