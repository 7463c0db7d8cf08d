"""Statuses, event types and the record that replaying a stream produces."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Mapping, Protocol


class Status(str, Enum):
    """The playbook's statuses, plus ``new`` for a stream with no events yet."""

    NEW = "new"
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    AWAITING_CUSTOMER_APPROVAL = "awaiting_customer_approval"
    PUBLISHED = "published"
    ON_HOLD = "on_hold"
    DECLINED = "declined"


STATUS_LABELS: dict[str, str] = {
    Status.NOT_STARTED.value: "Not Started",
    Status.IN_PROGRESS.value: "In Progress",
    Status.AWAITING_CUSTOMER_APPROVAL.value: "Awaiting Customer Approval",
    Status.PUBLISHED.value: "Published",
    Status.ON_HOLD.value: "On Hold",
    Status.DECLINED.value: "Declined",
}

APPROVER_ROLES: tuple[str, ...] = ("marketing", "legal", "executive_sponsor")

EVENT_TYPES: tuple[str, ...] = (
    "committed",
    "started",
    "approval_requested",
    "approval_granted",
    "changes_requested",
    "published",
    "held",
    "resumed",
    "declined",
    "reassigned",
    "metrics_recorded",
    "quote_added",
    "nps_recorded",
    "shared_with_champion",
    "views_reported",
)

# Events the service itself appends, never a client: allowed in every status of a record, they
# change no status and count as no activity (an erasure does not move a record along).
SYSTEM_EVENT_TYPES: tuple[str, ...] = ("personal_data_erased",)


class Event(Protocol):
    """What replay needs of an event; the store's stored events satisfy it."""

    type: str
    data: Mapping[str, Any]
    version: int
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class PendingEvent:
    """An event being decided: not stored yet, so it has no position."""

    type: str
    data: Mapping[str, Any]
    version: int
    occurred_at: datetime
    recorded_at: datetime


# The record keeps the latest quotes only, so that its state, and with it the cost of an
# append, does not grow with the stream; every quote stays in the stream.
QUOTES_KEPT = 20

_DATETIME_FIELDS = ("committed_at", "entered_status_at", "last_activity_at", "approval_requested_at",
                    "published_at", "held_at")


@dataclass
class CaseStudy:
    """The current state of one case study, derived from its events.

    ``state`` is the attribute the shared state machine reads and writes.
    """

    id: str
    state: str = Status.NEW.value
    version: int = 0
    account: dict[str, str] | None = None
    csm: str | None = None
    champion: dict[str, str] | None = None
    use_case: str | None = None
    close_date: str | None = None
    deal_id: str | None = None
    anonymized: bool = False
    industry_description: str | None = None
    msa_restricted: bool = False
    committed_at: datetime | None = None
    entered_status_at: datetime | None = None
    last_activity_at: datetime | None = None
    last_event_type: str | None = None
    approval_round: int = 0
    approvals: dict[str, str] = field(default_factory=dict)
    approvers: dict[str, str] = field(default_factory=dict)
    approval_requested_at: datetime | None = None
    changes_requested: dict[str, Any] | None = None
    draft_url: str | None = None
    held_from: str | None = None
    held_at: datetime | None = None
    hold_reason: str | None = None
    revisit_on: str | None = None
    declined_reason: str | None = None
    published_url: str | None = None
    published_at: datetime | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=lambda: {"baseline": {}, "current": {}})
    lower_is_better: list[str] = field(default_factory=list)
    quotes: list[dict[str, str]] = field(default_factory=list)  # the latest QUOTES_KEPT
    quote_count: int = 0
    nps: dict[str, Any] | None = None
    shared_formats: list[str] = field(default_factory=list)
    views: int | None = None

    @property
    def status(self) -> str:
        return self.state

    @property
    def exists(self) -> bool:
        return self.state != Status.NEW.value

    def pending_approvers(self) -> list[str]:
        """Roles of the current round that have not answered yet, in the playbook's order."""
        return [role for role in APPROVER_ROLES if self.approvals.get(role) == "pending"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that ``from_dict`` turns back into an equal record."""
        out = {name: getattr(self, name) for name in _FIELD_NAMES}
        for name in _DATETIME_FIELDS:
            value = out[name]
            out[name] = value.isoformat() if value is not None else None
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "CaseStudy":
        """Rebuild a record from ``to_dict`` output."""
        values = dict(raw)
        for name in _DATETIME_FIELDS:
            if values.get(name) is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(CaseStudy))
