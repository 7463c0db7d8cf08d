"""The approval history of one record: each round of customer approvals, as its events tell it.

A round starts with ``approval_requested``; each requested role answers with
``approval_granted`` or ``changes_requested``; the round ends when changes are requested, the
story is published, or the record is declined. A hold pauses the round (it is ``held`` while
on hold) and ``resumed`` takes it up again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Protocol

APPROVAL_EVENT_TYPES = ("approval_requested", "approval_granted", "changes_requested", "published", "held",
                        "resumed", "declined")


class AuditedEvent(Protocol):
    """What the history needs of an event: the stored event satisfies it."""

    type: str
    data: Mapping[str, Any]
    version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    on_behalf_of: str | None
    event_id: str


@dataclass
class Step:
    """Who did something in the round, when (business time) and when it was recorded."""

    version: int
    event_id: str
    actor: str
    on_behalf_of: str | None
    occurred_at: datetime
    recorded_at: datetime


@dataclass
class Decision:
    """One approver's answer."""

    role: str
    decision: str  # granted | changes_requested
    approver: str | None
    comment: str | None
    step: Step
    took_seconds: float  # from the round's request to this answer, in business time


@dataclass
class Round:
    number: int
    approvers: list[str]
    draft_url: str | None
    requested: Step
    decisions: list[Decision] = field(default_factory=list)
    outcome: str = "open"  # open | held | changes_requested | published | declined
    ended: Step | None = None
    holds: list[dict[str, Any]] = field(default_factory=list)

    def pending(self) -> list[str]:
        """Requested roles that have not answered."""
        answered = {decision.role for decision in self.decisions}
        return [role for role in self.approvers if role not in answered]


def _step(event: AuditedEvent) -> Step:
    return Step(event.version, event.event_id, event.actor, event.on_behalf_of, event.occurred_at,
                event.recorded_at)


def approval_rounds(events: Iterable[AuditedEvent]) -> list[Round]:
    """Every approval round in ``events`` (a stream, oldest first; other event types are skipped)."""
    rounds: list[Round] = []
    current: Round | None = None
    for event in events:
        if event.type == "approval_requested":
            current = Round(len(rounds) + 1, list(event.data["approvers"]), event.data.get("draft_url"),
                            _step(event))
            rounds.append(current)
            continue
        if current is None or current.outcome in ("changes_requested", "published", "declined"):
            continue
        if event.type in ("approval_granted", "changes_requested"):
            granted = event.type == "approval_granted"
            took = (event.occurred_at - current.requested.occurred_at).total_seconds()
            current.decisions.append(Decision(event.data["role"], "granted" if granted else "changes_requested",
                                              event.data.get("approver"), event.data.get("comment"),
                                              _step(event), took))
            if not granted:
                current.outcome, current.ended = "changes_requested", _step(event)
        elif event.type == "published":
            current.outcome, current.ended = "published", _step(event)
        elif event.type == "declined":
            current.outcome, current.ended = "declined", _step(event)
        elif event.type == "held":
            current.outcome = "held"
            current.holds.append({"held": _step(event), "reason": event.data.get("reason"), "resumed": None})
        elif event.type == "resumed" and current.holds:
            current.outcome = "open"
            current.holds[-1]["resumed"] = _step(event)
    return rounds
