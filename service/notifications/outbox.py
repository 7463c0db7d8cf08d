"""The transactional outbox: notifications are rows written with what causes them.

The planner is the event store's participant (wired in bootstrap.py): for each append it plans
a Slack message for a new record or a new candidate, and a CloudEvents delivery per matching
webhook subscription. The store writes those rows in the same transaction as the events (on
PostgreSQL, the same statement), so a message exists exactly when its event does, and a slow
or absent receiver never delays or undoes a write. The dispatcher (dispatcher.py) delivers
them, and deletes them some time after delivery; ``Outbox`` is how admins read, redrive and
discard them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import Engine, delete, func, select, update

from service import cursors
from service.domain import CANDIDACY_EVENTS, CaseStudy, readiness
from service.events.event import Decided
from service.links import Links
from service.notifications.messages import cloud_event, new_candidate_message, record_created_message
from service.notifications.subscriptions import Subscription, Subscriptions
from service.notifications.tables import outbox
from service.times import utcnow

DESTINATIONS = ("slack", "webhook")
STATUSES = ("pending", "sent", "dead")
MAX_MESSAGE_ID = 2**63 - 1  # the id column's range: a larger id names nothing


# -- what an append causes ---------------------------------------------------------------------
class OutboxPlanner:
    """The store's participant: the outbox rows each append writes in its transaction."""

    table = outbox

    def __init__(self, subscriptions: Subscriptions, *, slack: bool, links: Links, kpi_threshold_pct: float):
        self.subscriptions = subscriptions
        self.slack = slack
        self.links = links
        self.kpi_threshold_pct = kpi_threshold_pct

    def prepare(self) -> "OutboxPlan":
        """A plan for one append, made before the write takes its connection: the active
        subscriptions are looked up here (when the remembered ones are stale)."""
        return OutboxPlan(self, self.subscriptions.active())


class OutboxPlan:
    """The messages of one append."""

    def __init__(self, planner: OutboxPlanner, subscribers: Sequence[Subscription]):
        self.planner = planner
        self.subscribers = subscribers
        self.was_candidate: bool | None = None  # None: the events cannot make the record one

    def before(self, record: CaseStudy, event_types: Sequence[str]) -> None:
        """Note what the messages need to know of the record before the events: was it a candidate?"""
        if self.planner.slack and not CANDIDACY_EVENTS.isdisjoint(event_types):
            self.was_candidate = record.exists and readiness(record, self.planner.kpi_threshold_pct).candidate

    def rows(self, record: CaseStudy, events: Sequence[Decided]) -> list[dict[str, Any]]:
        """The outbox rows for ``events``, decided on ``record`` (as it stands after them)."""
        links, first, last = self.planner.links, events[0], events[-1]
        queued = []
        if self.planner.slack:
            if first.type == "committed":
                queued.append(_row(first, "slack", None, "record_created", f"slack:record_created:{record.id}",
                                   record_created_message(record, links)))
            if self.was_candidate is False:
                ready = readiness(record, self.planner.kpi_threshold_pct)
                if ready.candidate:
                    queued.append(_row(last, "slack", None, "new_candidate", f"slack:new_candidate:{last.event_id}",
                                       new_candidate_message(record, links, ready)))
        for subscription in self.subscribers:
            for event in events:
                if subscription.wants(event.type):
                    queued.append(_row(event, "webhook", subscription.id, "event",
                                       f"webhook:{subscription.id}:{event.event_id}", cloud_event(event, links)))
        return queued


def _row(event: Decided, destination: str, subscription_id: int | None, kind: str, dedupe_key: str,
         payload: dict[str, Any]) -> dict[str, Any]:
    """A pending outbox row, due when ``event`` is recorded."""
    return {"destination": destination, "subscription_id": subscription_id, "kind": kind,
            "stream_id": event.stream_id, "event_id": event.event_id, "dedupe_key": dedupe_key, "payload": payload,
            "status": "pending", "attempts": 0, "next_attempt_at": event.recorded_at,
            "created_at": event.recorded_at}


# -- reading and redriving the outbox -----------------------------------------------------------
@dataclass(frozen=True)
class Message:
    id: int
    destination: str
    subscription_id: int | None
    kind: str
    stream_id: str | None
    event_id: str | None
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None
    last_status: int | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "destination": self.destination, "subscription_id": self.subscription_id,
                "kind": self.kind, "stream_id": self.stream_id, "event_id": self.event_id,
                "status": self.status, "attempts": self.attempts,
                "next_attempt_at": self.next_attempt_at.isoformat() if self.status == "pending" else None,
                "created_at": self.created_at.isoformat(),
                "sent_at": self.sent_at.isoformat() if self.sent_at else None,
                "last_status": self.last_status, "last_error": self.last_error, "payload": self.payload}


MESSAGE_COLUMNS = (outbox.c.id, outbox.c.destination, outbox.c.subscription_id, outbox.c.kind,
                   outbox.c.stream_id, outbox.c.event_id, outbox.c.payload, outbox.c.status, outbox.c.attempts,
                   outbox.c.next_attempt_at, outbox.c.created_at, outbox.c.sent_at, outbox.c.last_status,
                   outbox.c.last_error)


def message(row: Any) -> Message:
    return Message(*row)


@dataclass(frozen=True)
class Depth:
    by_status: dict[str, dict[str, int]]  # destination -> status -> count
    oldest_pending_at: datetime | None


class Outbox:
    """What the outbox holds: for the notifications endpoint, the CLI and the metrics."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def list(self, *, status: str | None = None, destination: str | None = None, limit: int = 100,
             cursor: str | None = None) -> tuple[list[Message], str | None]:
        """Messages oldest first, one page at a time (keyset pagination on the id)."""
        query = select(*MESSAGE_COLUMNS).order_by(outbox.c.id).limit(limit + 1)
        if status:
            query = query.where(outbox.c.status == status)
        if destination:
            query = query.where(outbox.c.destination == destination)
        if cursor:
            query = query.where(outbox.c.id > cursors.decode(cursor, lambda values: int(values[0])))
        with self.engine.connect() as conn:
            found = [message(row) for row in conn.execute(query)]
        more = len(found) > limit
        found = found[:limit]
        return found, (cursors.encode([found[-1].id]) if more else None)

    def get(self, message_id: int) -> Message | None:
        if not 0 < message_id <= MAX_MESSAGE_ID:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(*MESSAGE_COLUMNS).where(outbox.c.id == message_id)).first()
        return message(row) if row else None

    def retry(self, *, message_id: int | None = None, now: datetime | None = None) -> int:
        """Put dead messages (one, or all) back to pending, due now, with their attempts reset."""
        now = now or utcnow()
        query = update(outbox).where(outbox.c.status == "dead")
        if message_id is not None:
            query = query.where(outbox.c.id == message_id)
        with self.engine.begin() as conn:
            return conn.execute(query.values(status="pending", attempts=0, next_attempt_at=now,
                                             lease_until=None, lease_token=None)).rowcount

    def discard(self, message_id: int) -> Message | None:
        """Delete a dead message for good; the message as it was (None: no dead message has that id)."""
        if not 0 < message_id <= MAX_MESSAGE_ID:
            return None
        with self.engine.begin() as conn:
            row = conn.execute(delete(outbox).where(outbox.c.id == message_id, outbox.c.status == "dead")
                               .returning(*MESSAGE_COLUMNS)).first()
        return message(row) if row else None

    def depth(self) -> Depth:
        with self.engine.connect() as conn:
            counts: dict[str, dict[str, int]] = {d: {s: 0 for s in STATUSES} for d in DESTINATIONS}
            for destination, status, count in conn.execute(
                    select(outbox.c.destination, outbox.c.status, func.count())
                    .group_by(outbox.c.destination, outbox.c.status)):
                counts.setdefault(destination, {s: 0 for s in STATUSES})[status] = count
            oldest = conn.execute(select(func.min(outbox.c.created_at))
                                  .where(outbox.c.status == "pending")).scalar()
        return Depth(counts, oldest)
