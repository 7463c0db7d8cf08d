"""The one state machine shared by every record, and the replay that runs events through it.

The machine is built once at import. Events are fired through its event table
(``MACHINE.events[type].trigger(record, data=...)``), so records are never registered with it
and no per-record ``Machine`` is ever built.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Iterator, Mapping

from transitions import Machine, MachineError

from service.domain import guards
from service.domain.errors import GuardFailed, StreamCorrupt, TransitionNotAllowed
from service.domain.evolve import evolve
from service.domain.model import EVENT_TYPES, STATUS_LABELS, SYSTEM_EVENT_TYPES, CaseStudy, Event, Status

NEW = Status.NEW.value
NOT_STARTED = Status.NOT_STARTED.value
IN_PROGRESS = Status.IN_PROGRESS.value
AWAITING = Status.AWAITING_CUSTOMER_APPROVAL.value
PUBLISHED = Status.PUBLISHED.value
ON_HOLD = Status.ON_HOLD.value
DECLINED = Status.DECLINED.value

LIVE = [NOT_STARTED, IN_PROGRESS, AWAITING, PUBLISHED, ON_HOLD]  # every status but declined
HOLDABLE = [NOT_STARTED, IN_PROGRESS, AWAITING]

# dest=None is an internal transition: the event is legal but the status stays.
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "committed", "source": NEW, "dest": NOT_STARTED},
    {"trigger": "started", "source": NOT_STARTED, "dest": IN_PROGRESS},
    {"trigger": "approval_requested", "source": IN_PROGRESS, "dest": AWAITING},
    {"trigger": "approval_granted", "source": AWAITING, "dest": None,
     "conditions": [guards.APPROVAL_GRANTED]},
    {"trigger": "changes_requested", "source": AWAITING, "dest": IN_PROGRESS,
     "conditions": [guards.CHANGES_REQUESTED]},
    {"trigger": "published", "source": AWAITING, "dest": PUBLISHED, "conditions": [guards.ALL_GRANTED]},
    {"trigger": "held", "source": HOLDABLE, "dest": ON_HOLD},
    *({"trigger": "resumed", "source": ON_HOLD, "dest": status, "conditions": [guards.held_from(status)]}
      for status in HOLDABLE),
    {"trigger": "declined", "source": [NOT_STARTED, IN_PROGRESS, AWAITING, ON_HOLD], "dest": DECLINED},
    {"trigger": "reassigned", "source": LIVE, "dest": None, "conditions": [guards.DIFFERENT_CSM]},
    {"trigger": "metrics_recorded", "source": LIVE, "dest": None},
    {"trigger": "quote_added", "source": LIVE, "dest": None},
    {"trigger": "nps_recorded", "source": LIVE, "dest": None},
    {"trigger": "shared_with_champion", "source": PUBLISHED, "dest": None},
    {"trigger": "views_reported", "source": PUBLISHED, "dest": None},
    # Appended by an erasure of personal data, whatever the record's status.
    {"trigger": "personal_data_erased", "source": [*LIVE, DECLINED], "dest": None},
]

MACHINE = Machine(
    model=None,
    states=[status.value for status in Status],
    initial=NEW,
    transitions=TRANSITIONS,
    auto_transitions=False,
    send_event=True,
)

_ALLOWED: dict[str, list[str]] = {  # what a client may post: the service's own events are left out
    status.value: [name for name in MACHINE.get_triggers(status.value) if name not in SYSTEM_EVENT_TYPES]
    for status in Status
}
assert set(MACHINE.events) == {*EVENT_TYPES, *SYSTEM_EVENT_TYPES}, "the machine and EVENT_TYPES disagree"


def allowed_events(status: str) -> list[str]:
    """The event types a client may post in ``status``, as the machine allows (guards aside)."""
    return list(_ALLOWED[status])


def path_to(status: str) -> list[str]:
    """The fewest events that take a new record to ``status``, read from the machine's table (the
    first transition listed wins a tie): the history that back-filling a record writes."""
    paths: dict[str, list[str]] = {NEW: []}
    frontier = [NEW]
    while frontier and status not in paths:
        reached = []
        for source in frontier:
            for event_type, event in MACHINE.events.items():
                for transition in event.transitions.get(source, ()):
                    dest = transition.dest
                    if dest is not None and dest not in paths:
                        paths[dest] = [*paths[source], event_type]
                        reached.append(dest)
        frontier = reached
    if status not in paths:
        raise ValueError(f"no events lead to {status}")
    return paths[status]


def table() -> list[dict[str, Any]]:
    """The machine's table as data, one row per transition in the order declared: the event, the
    statuses it may come from, where it leads (None: the status stays) and the guards it passes."""
    return [{"event": event_type, "from": list(sources), "to": dest,
             "guards": [{"name": guard.__name__, "rule": guard.rule} for guard in conditions]}
            for event_type, sources, dest, conditions in _rows()]


def _rows() -> Iterator[tuple[str, list[str], str | None, list[guards.Guard]]]:
    for spec in TRANSITIONS:
        sources = spec["source"] if isinstance(spec["source"], list) else [spec["source"]]
        yield spec["trigger"], sources, spec["dest"], list(spec.get("conditions", ()))


@lru_cache(maxsize=len(Status) + 1)
def mermaid(current: str | None = None) -> str:
    """The machine drawn by ``transitions`` as a Mermaid state diagram, ``current`` highlighted."""
    from transitions.extensions import GraphMachine

    model = _Drawn()
    drawing = GraphMachine(model=model, states=[status.value for status in Status], initial=NEW,
                           transitions=TRANSITIONS, auto_transitions=False, graph_engine="mermaid",
                           show_conditions=True, title="Case study life cycle")
    drawing.set_state(current or NEW, model)
    diagram = model.get_graph(force_new=True).draw(None)
    return diagram if current else diagram.replace(f"Class {NEW} s_active", f"Class {NEW} s_default")


class _Drawn:
    """The one model the drawing machine needs; records are never registered with a machine."""


def _describe(status: str) -> str:
    return "a new record" if status == NEW else f"a record that is {STATUS_LABELS[status]}"


def _guard_reason(record: CaseStudy, event_type: str, data: Mapping[str, Any]) -> str:
    """The first reason a guard of the transitions open from the current status gives."""
    for transition in MACHINE.events[event_type].transitions[record.state]:
        for condition in transition.conditions:
            reason = condition.func.reason(record, data)
            if reason is not None:
                return reason
    return f"{event_type} is not allowed now"


def apply(record: CaseStudy, event: Event) -> CaseStudy:
    """Fire ``event`` on ``record`` through the shared machine and fold its data in, in place.

    Raises TransitionNotAllowed or GuardFailed, leaving ``record`` untouched, when the machine
    refuses; raises StreamCorrupt when the event's version does not follow the record's.
    """
    if event.version != record.version + 1:
        raise StreamCorrupt(
            f"stream {record.id}: event version {event.version} does not follow version {record.version}")
    status_before = record.state
    if record.last_activity_at is not None and event.occurred_at < record.last_activity_at:
        raise GuardFailed(
            event.type, status_before, allowed_events(status_before),
            f"occurred_at {event.occurred_at.isoformat()} is before the record's last event "
            f"({record.last_activity_at.isoformat()}); a record's events are kept in the order they happened")
    machine_event = MACHINE.events.get(event.type)
    if machine_event is None:
        raise TransitionNotAllowed(event.type, status_before, allowed_events(status_before),
                                   f"unknown event type {event.type!r}")
    try:
        fired = machine_event.trigger(record, data=event.data)
    except MachineError:
        raise TransitionNotAllowed(
            event.type, status_before, allowed_events(status_before),
            f"cannot apply {event.type} to {_describe(status_before)}") from None
    if not fired:
        raise GuardFailed(event.type, status_before, allowed_events(status_before),
                          _guard_reason(record, event.type, event.data))
    evolve(record, event, status_before)
    return record


def replay(stream_id: str, events: Iterable[Event]) -> CaseStudy:
    """The record that ``events`` (oldest first) produce; a pure function of its input."""
    record = CaseStudy(id=stream_id)
    for _event, record in replay_steps(stream_id, events):
        pass
    return record


def replay_steps(stream_id: str, events: Iterable[Event]) -> Iterator[tuple[Event, CaseStudy]]:
    """Each event with the record as it stands just after it (one record, changed in place)."""
    record = CaseStudy(id=stream_id)
    for event in events:
        try:
            apply(record, event)
        except (TransitionNotAllowed, GuardFailed) as refusal:
            raise StreamCorrupt(
                f"stream {stream_id}: stored event version {event.version} ({event.type}) "
                f"is refused on replay: {refusal.reason}") from refusal
        yield event, record
