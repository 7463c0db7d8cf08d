"""The transactional outbox: notifications are rows written with what causes them.

Appending an event asks the planner which messages it causes: a Slack message for a new record
or a new candidate, and a CloudEvents delivery per matching webhook subscription. The rows go
into the ``outbox`` table in the same transaction (on PostgreSQL, the same statement) as the
events, so a message exists exactly when its event does, and a slow or absent receiver never
delays or undoes a write. The dispatcher (dispatch.py) delivers them.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

import httpx
from sqlalchemy import Engine, func, insert, select, update

from service import cursors
from service.domain import EVENT_TYPES, CaseStudy, Readiness, readiness
from service.events.tables import outbox, webhook_subscriptions
from service.times import utcnow

DESTINATIONS = ("slack", "webhook")
STATUSES = ("pending", "sent", "dead")
CLOUDEVENT_TYPE_PREFIX = "com.casestudies.casestudy."
ALL_TYPES = "*"
CANDIDACY_EVENTS = frozenset(("metrics_recorded", "nps_recorded"))  # the events readiness follows
MAX_SUBSCRIPTION_ID = 2**31 - 1  # the id columns' ranges: a larger id names nothing
MAX_MESSAGE_ID = 2**63 - 1


@dataclass(frozen=True)
class DeliverySettings:
    """How the outbox is delivered (the NOTIFY_* and SLACK_WEBHOOK_URL settings)."""

    slack_webhook_url: str | None = field(default=None, repr=False)  # a secret: never logged
    max_attempts: int = 10
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    lease_seconds: float = 60.0
    stuck_scan_seconds: float = 3600.0


class SubscriptionError(ValueError):
    """A webhook subscription cannot be made or removed as asked."""


@dataclass(frozen=True)
class Subscription:
    id: int
    url: str
    types: tuple[str, ...]
    secret: str
    created_at: datetime
    removed_at: datetime | None

    def wants(self, event_type: str) -> bool:
        return ALL_TYPES in self.types or event_type in self.types

    @property
    def secret_fingerprint(self) -> str:
        """Tells secrets apart without showing any of one: the start of its SHA-256."""
        return hashlib.sha256(self.secret.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """As shown to admins: never the secret, only its fingerprint."""
        return {"id": self.id, "url": self.url, "types": list(self.types), "secret_fingerprint": self.secret_fingerprint,
                "created_at": self.created_at.isoformat(),
                "removed_at": self.removed_at.isoformat() if self.removed_at else None}


_URL = re.compile(r"^https?://[!-~]+$")


def checked_types(types: Iterable[str]) -> tuple[str, ...]:
    """Event types to subscribe to (``*`` for all), each one the service knows."""
    wanted = tuple(dict.fromkeys(t.strip() for t in types if t.strip()))
    if not wanted:
        raise SubscriptionError("give at least one event type, or * for all")
    unknown = [t for t in wanted if t != ALL_TYPES and t not in EVENT_TYPES]
    if unknown:
        raise SubscriptionError(f"unknown event types {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    return wanted


def _usable(url: str) -> bool:
    """The HTTP client can send to it (the pattern alone lets through e.g. ``http://[::1/x``)."""
    try:
        return bool(httpx.URL(url).host)
    except (httpx.InvalidURL, ValueError):
        return False


class Subscriptions:
    """Webhook subscriptions, and the active ones as writers see them.

    Writers remember the active subscriptions for ``cache_seconds``, so an append does not look
    them up; a subscription added or removed takes effect within that time in every process
    (at once in the one that changed it)."""

    def __init__(self, engine: Engine, *, cache_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._active: tuple[Subscription, ...] = ()
        self._fresh_until = float("-inf")
        self._lock = threading.Lock()

    def add(self, url: str, types: Iterable[str], secret: str | None = None) -> tuple[Subscription, str]:
        """Subscribe ``url`` to ``types``; returns it and its secret (generated when not given)."""
        url = url.strip()
        if not _URL.match(url) or len(url) > 2048 or not _usable(url):
            raise SubscriptionError("the URL must be an http:// or https:// URL of at most 2048 characters")
        wanted = checked_types(types)
        secret = secret if secret is not None else "whsec_" + secrets.token_urlsafe(32)
        if not 16 <= len(secret) <= 200 or not secret.isprintable():
            raise SubscriptionError("the secret must be 16-200 printable characters")
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(webhook_subscriptions).values(
                url=url, types=list(wanted), secret=secret, created_at=utcnow())
                .returning(webhook_subscriptions.c.id)).scalar_one()
        self._fresh_until = float("-inf")
        return self.get(new_id), secret

    def remove(self, subscription_id: int) -> Subscription:
        if not 0 < subscription_id <= MAX_SUBSCRIPTION_ID:
            raise SubscriptionError(f"no active webhook subscription {subscription_id}")
        now = utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(update(webhook_subscriptions)
                                .where(webhook_subscriptions.c.id == subscription_id,
                                       webhook_subscriptions.c.removed_at.is_(None))
                                .values(removed_at=now))
            if done.rowcount != 1:
                raise SubscriptionError(f"no active webhook subscription {subscription_id}")
            conn.execute(update(outbox).where(outbox.c.subscription_id == subscription_id,
                                              outbox.c.status == "pending")
                         .values(status="dead", last_error="the webhook subscription was removed",
                                 lease_until=None, lease_token=None))
        self._fresh_until = float("-inf")
        return self.get(subscription_id)

    def get(self, subscription_id: int) -> Subscription | None:
        if not 0 < subscription_id <= MAX_SUBSCRIPTION_ID:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(webhook_subscriptions)
                               .where(webhook_subscriptions.c.id == subscription_id)).first()
        return _subscription(row) if row else None

    def list(self, *, include_removed: bool = False) -> list[Subscription]:
        query = select(webhook_subscriptions).order_by(webhook_subscriptions.c.id)
        if not include_removed:
            query = query.where(webhook_subscriptions.c.removed_at.is_(None))
        with self.engine.connect() as conn:
            return [_subscription(row) for row in conn.execute(query)]

    def active(self) -> tuple[Subscription, ...]:
        """The active subscriptions, looked up at most every ``cache_seconds``."""
        now = self.clock()
        if now >= self._fresh_until:
            with self._lock:
                if now >= self._fresh_until:
                    self._active = tuple(self.list())
                    self._fresh_until = now + self.cache_seconds
        return self._active


def _subscription(row: Any) -> Subscription:
    return Subscription(row.id, row.url, tuple(row.types), row.secret, row.created_at, row.removed_at)


# -- the messages ------------------------------------------------------------------------------
def slack_escape(text: str) -> str:
    """Text as Slack's mrkdwn shows it literally (``&``, ``<`` and ``>`` are its markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _customer(record: CaseStudy) -> str:
    return slack_escape(record.account["name"] if record.account else record.id)


def _link(url: str, label: str) -> str:
    return f"<{url}|{slack_escape(label)}>"


def record_created_message(record: CaseStudy, url: str) -> dict[str, Any]:
    """Playbook section 8: customer name, CSM assigned, link to the record."""
    csm = slack_escape(record.csm) if record.csm else "nobody yet"
    return {"text": f"New case study: *{_customer(record)}*, CSM {csm}. {_link(url, record.id)}"}


def new_candidate_message(record: CaseStudy, url: str, ready: Readiness) -> dict[str, Any]:
    csm = slack_escape(record.csm) if record.csm else "nobody yet"
    return {"text": f"New case study candidate: *{_customer(record)}*: {slack_escape(ready.best_metric or '')} "
                    f"{ready.kpi_improvement_pct:g}% better, NPS {ready.nps}; CSM {csm}. {_link(url, record.id)}"}


STUCK_LINES = 20  # records named in one stuck message; the rest are counted


def records_stuck_message(found: Sequence[tuple[CaseStudy, Any]], record_url: Callable[[str], str],
                          stuck_url: str) -> dict[str, Any]:
    """One message for the findings a scan found new: each record with its reason."""
    count = len(found)
    head = f"{count} case {'study' if count == 1 else 'studies'} became stuck:"
    lines = [f"• *{_customer(record)}* ({slack_escape(record.csm or 'no CSM')}): {slack_escape(finding.reason)} "
             f"{_link(record_url(record.id), record.id)}" for record, finding in found[:STUCK_LINES]]
    if count > STUCK_LINES:
        lines.append(f"…and {count - STUCK_LINES} more: {_link(stuck_url, 'the stuck list')}")
    return {"text": "\n".join([head, *lines])}


def cloud_event(source: str, stream_id: str, row: dict[str, Any], actor: str, recorded_at: datetime,
                status: str) -> dict[str, Any]:
    """A CloudEvents 1.0 event (structured JSON mode) for a stored event."""
    return {
        "specversion": "1.0",
        "id": row["event_id"],
        "source": source,
        "type": CLOUDEVENT_TYPE_PREFIX + row["type"],
        "subject": stream_id,
        "time": row["occurred_at"].isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "id": stream_id, "version": row["version"], "type": row["type"], "data": row["data"],
            "status": status, "actor": actor, "on_behalf_of": row["on_behalf_of"],
            "occurred_at": row["occurred_at"].isoformat(), "recorded_at": recorded_at.isoformat(),
            "correlation_id": row["correlation_id"], "causation_id": row["causation_id"],
        },
    }


# -- what an append causes ---------------------------------------------------------------------
class OutboxPlanner:
    """Decides, for an append, which outbox rows it writes (see EventStore)."""

    def __init__(self, subscriptions: Subscriptions, *, slack: bool, record_url: Callable[[str], str],
                 source: str, kpi_threshold_pct: float):
        self.subscriptions = subscriptions
        self.slack = slack
        self.record_url = record_url
        self.source = source
        self.kpi_threshold_pct = kpi_threshold_pct

    def subscribers(self) -> tuple[Subscription, ...]:
        """The active subscriptions, looked up (when the remembered ones are stale) before a write
        takes its connection; the write's plan uses these."""
        return self.subscriptions.active()

    def before(self, record: CaseStudy, event_types: Iterable[str]) -> bool | None:
        """What the plan needs to know of the record before the append: was it a candidate?
        None when the events cannot make it one (only metrics and NPS move readiness)."""
        if not self.slack or CANDIDACY_EVENTS.isdisjoint(event_types):
            return None
        return record.exists and readiness(record, self.kpi_threshold_pct).candidate

    def plan(self, was_candidate: bool | None, record: CaseStudy, rows: Sequence[dict[str, Any]],
             statuses: Sequence[str], actor: str, recorded_at: datetime,
             subscribers: Sequence[Subscription]) -> list[dict[str, Any]]:
        """The outbox rows (destination, subscription_id, kind, event_id, dedupe_key, payload)."""
        queued = []
        if self.slack:
            url = self.record_url(record.id)
            if rows[0]["type"] == "committed":
                queued.append(_row("slack", None, "record_created", rows[0]["event_id"],
                                   f"slack:record_created:{record.id}", record_created_message(record, url)))
            ready = readiness(record, self.kpi_threshold_pct) if was_candidate is False else None
            if ready is not None and ready.candidate:
                queued.append(_row("slack", None, "new_candidate", rows[-1]["event_id"],
                                   f"slack:new_candidate:{rows[-1]['event_id']}",
                                   new_candidate_message(record, url, ready)))
        for subscription in subscribers:
            for row, status in zip(rows, statuses):
                if subscription.wants(row["type"]):
                    queued.append(_row("webhook", subscription.id, "event", row["event_id"],
                                       f"webhook:{subscription.id}:{row['event_id']}",
                                       cloud_event(self.source, record.id, row, actor, recorded_at, status)))
        return queued


def _row(destination: str, subscription_id: int | None, kind: str, event_id: str | None, dedupe_key: str,
         payload: dict[str, Any]) -> dict[str, Any]:
    return {"destination": destination, "subscription_id": subscription_id, "kind": kind, "event_id": event_id,
            "dedupe_key": dedupe_key, "payload": payload}


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


def backoff(attempts: int, base_seconds: float, max_seconds: float) -> timedelta:
    """Exponential back-off after ``attempts`` failed attempts: base, 2 x base, 4 x base, … capped."""
    return timedelta(seconds=min(base_seconds * 2 ** max(attempts - 1, 0), max_seconds))
