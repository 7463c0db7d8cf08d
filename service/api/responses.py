"""What the API answers, as the OpenAPI document describes it.

Requests are described by the schemas that validate them (service/events/schemas.py, deals.py
and the views' declared query parameters). Answers are built by the views; these models say
what they hold, and the property-based API test checks every answer against them, so a
description that drifts from the code fails the build.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from service.domain import STATUS_LABELS
from service.intake.deals import COMMITMENTS, DECISIONS
from service.notifications.outbox import DESTINATIONS, STATUSES

StatusName = Literal[tuple(STATUS_LABELS)]  # type: ignore[valid-type]
Json = dict[str, Any]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")  # answers may grow fields; clients ignore unknown ones


class ProblemDetails(_Answer):
    """RFC 9457 problem details with a stable ``code`` (and the facts named in the README)."""

    type: str
    title: str
    status: int
    detail: str
    code: str


class AppendedEvent(_Answer):
    version: int
    position: int
    event_id: str
    type: str


class Appended(_Answer):
    """The stored event (the last one, for a batch); ``events`` lists a batch's events."""

    id: str
    version: int
    position: int
    event_id: str
    status: StatusName
    events: list[AppendedEvent] | None = None


class Record(_Answer):
    """A record's current state (see the README for each field)."""

    id: str
    status: StatusName
    status_label: str
    version: int
    account: Json | None
    csm: str | None
    champion: Json | None
    use_case: str | None
    close_date: str | None
    approvals: Json
    allowed_events: list[str]
    committed_at: str | None
    entered_status_at: str | None
    last_activity_at: str | None
    metrics: Json
    readiness: Json
    as_of: str | None = None


class RecordPage(_Answer):
    items: list[Record]
    next_cursor: str | None
    next: str | None
    as_of: str | None = None  # with a past as_of, the time and how far the projections had read
    projection: ProjectionRead | None = None


class StreamEvent(_Answer):
    position: int
    event_id: str
    stream_id: str
    version: int
    type: str
    data: Json
    actor: str
    recorded_at: str
    occurred_at: str
    correlation_id: str | None
    causation_id: str | None
    on_behalf_of: str | None
    prev_hash: str
    hash: str


class EventsPage(_Answer):
    id: str
    events: list[StreamEvent]
    next: str | None


class FeedMark(_Answer):
    position: int
    recorded_at: str | None


class FeedEventsPage(_Answer):
    after: int
    count: int
    events: list[StreamEvent]
    next_after: int
    head: FeedMark


class ProjectionRead(_Answer):
    name: str
    position: int
    recorded_at: str | None


class Pipeline(_Answer):
    by_status: dict[str, int]
    by_csm: dict[str, dict[str, int]]
    total: int
    projection: ProjectionRead


class Items(_Answer):
    """A list answer: ``items`` (with ``count``, paging and the projection read where they apply)."""

    items: list[Json]


class CycleTimes(_Answer):
    stages: dict[str, str]
    quarters: list[Json]
    overall: Json
    projection: ProjectionRead


class ProjectorStatus(_Answer):
    head: FeedMark
    held_back: Json
    projectors: list[Json]


class WeeklyReport(_Answer):
    as_of: str


class Approvals(_Answer):
    id: str
    as_of: str | None
    rounds: list[Json]


class ChainVerdict(_Answer):
    id: str
    status: Literal["intact", "broken"]


class Machine(_Answer):
    """The life cycle: statuses, events with their transitions and guards, and a Mermaid diagram."""

    initial: str
    statuses: list[Json]
    events: list[Json]
    mermaid: str


class Health(_Answer):
    status: str


class HelperHealth(_Answer):
    """One helper: what its supervisor knows (when ``serve`` runs it) and how far behind its work is."""

    supervised: bool
    running: bool | None = None
    pid: int | None = None
    restarts: int | None = None
    started_at: str | None = None
    last_exit_code: int | None = None
    last_exit_at: str | None = None
    next_start_at: str | None = None
    last_progress_at: str | None = None
    progress_age_seconds: float | None = None
    lag_events: int | None = None
    lag_seconds: float | None = None
    failing: bool | None = None
    pending: int | None = None
    oldest_pending_age_seconds: float | None = None
    dead: int | None = None


class HealthDetails(_Answer):
    """``ok``, or ``degraded`` with the reasons: the database, a helper stopped or making no progress."""

    status: Literal["ok", "degraded"]
    reasons: list[str]
    database: dict[str, Any]
    helpers: dict[str, HelperHealth]


class DealDecision(_Answer):
    """What became of a deal: ``created`` (201), ``exists`` or ``not_created`` (200)."""

    decision: Literal[DECISIONS]  # type: ignore[valid-type]
    deal_id: str
    case_study_commitment: Literal[COMMITMENTS]  # type: ignore[valid-type]
    id: str | None
    reason: str
    status: StatusName | None = None
    status_label: str | None = None
    version: int | None = None
    url: str | None = None


class WebhookSubscription(_Answer):
    id: int
    url: str
    types: list[str]
    secret_fingerprint: str  # the start of the secret's SHA-256, never the secret
    created_at: str
    removed_at: str | None


class NewWebhookSubscription(WebhookSubscription):
    secret: str  # only in the answer that made it


class WebhookSubscriptions(_Answer):
    items: list[WebhookSubscription]


class Notification(_Answer):
    id: int
    destination: Literal[DESTINATIONS]  # type: ignore[valid-type]
    subscription_id: int | None
    kind: str
    stream_id: str | None
    event_id: str | None
    status: Literal[STATUSES]  # type: ignore[valid-type]
    attempts: int
    next_attempt_at: str | None
    created_at: str
    sent_at: str | None
    last_status: int | None
    last_error: str | None
    payload: Json


class Notifications(_Answer):
    items: list[Notification]
    next_cursor: str | None
    next: str | None
    counts: dict[str, dict[str, int]]
    oldest_pending_at: str | None


class ErasureReceipt(_Answer):
    """What an erasure did: the records and fields made unreadable, the outbox messages redacted or
    purged, the copies already delivered outside the service, when and by whom; signed."""

    id: str
    subject: str
    reason: str
    requested_by: str
    erased_at: str
    completed_at: str | None
    records: list[Json]
    outbox: Json
    beyond_reach: list[Json]


class PersonalData(_Answer):
    """Everything held about a person, decrypted: each record's fields, messages still waiting to be
    sent with their data, and the ids of erasure receipts about them."""

    asked_by: str
    subject: str | None
    records: list[Json]
    outbox: list[Json]
    erasures: list[str]
