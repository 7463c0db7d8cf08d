"""The dispatcher: delivers the outbox to Slack and to webhook subscribers, at least once.

A dispatcher claims the oldest due message just before sending it, by giving it a lease and a
token (a short transaction; with SKIP LOCKED on PostgreSQL, so several dispatchers share the
work), sends it outside any transaction, and marks it, if its token still holds the lease,
sent, or failed with its next attempt after an exponential back-off, or dead after the
configured number of attempts. A 429 from a receiver pauses everything for that receiver until
its ``Retry-After`` has passed (for every dispatcher: the rate-limited message carries the wait)
and does not count as an attempt. A dispatcher that dies
between sending and marking leaves the message pending: once its lease runs out it is sent
again. Delivery is therefore at least once; a receiver recognises a repeat by the CloudEvents
``id`` (Slack cannot, so a crash in that window can post one message twice).

It also looks for records that have become stuck (time passing makes them so, not an event)
and announces each finding once, in one Slack message per scan, and deletes delivered messages
once they are older than ``NOTIFY_RETENTION_DAYS`` (their payloads name people and customers):
in small batches, each its own short transaction, so that no purge holds locks for long. Dead
messages stay until an admin retries or discards them; pending ones are never purged.
"""
from __future__ import annotations

import email.utils
import hashlib
import hmac
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Callable

import httpx
import orjson
import structlog
from sqlalchemy import Engine, and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from service.config import DeliverySettings
from service.events.db import is_sqlite, transaction
from service.events.errors import unavailable_reason
from service.links import Links
from service.notifications.messages import records_stuck_message
from service.notifications.outbox import MESSAGE_COLUMNS, Message, message
from service.notifications.subscriptions import Subscriptions
from service.notifications.tables import outbox, stuck_announcements
from service.notifications.targets import TargetRefused, TargetUnresolved, guarded_transport
from service.projections.queries import Projections, StuckItem
from service.rounds import keep_going
from service.times import utcnow

log = structlog.get_logger("casestudies.notifications")

SIGNATURE_HEADER = "X-Casestudies-Signature"
USER_AGENT = "casestudies-dispatcher/1"
DELIVERIES_PER_TURN = 10  # messages a turn of the loop delivers before it looks at the stuck scan again
MIN_RATE_LIMIT_WAIT = 1.0  # seconds, even for "Retry-After: 0"
PURGE_EVERY_SECONDS = 60.0  # how often the loop looks for delivered messages past their retention
PURGE_BATCH = 500  # rows one purge transaction deletes
PURGE_BATCHES_PER_TURN = 20  # then the loop delivers again before it purges on (a backlog waits its turn)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,9}", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def backoff(attempts: int, base_seconds: float, max_seconds: float) -> timedelta:
    """Exponential back-off after ``attempts`` failed attempts: base, 2 x base, 4 x base, … capped."""
    return timedelta(seconds=min(base_seconds * 2 ** max(attempts - 1, 0), max_seconds))


@dataclass(frozen=True)
class Claimed:
    """A message this dispatcher holds the lease on, and the token that proves it."""

    message: Message
    token: str


@dataclass(frozen=True)
class Attempt:
    """How one send went: ``status`` is the receiver's HTTP status (None: no answer)."""

    ok: bool
    status: int | None
    error: str | None
    wait_seconds: float | None = None  # the receiver asked us to wait this long (429)
    final: bool = False  # no later attempt can succeed


class Dispatcher:
    """Claims, sends and marks outbox messages; scans for newly stuck records."""

    def __init__(self, engine: Engine, subscriptions: Subscriptions, projections: Projections,
                 settings: DeliverySettings, *, slack_webhook_url: str | None, links: Links,
                 clock: Callable[[], datetime] = utcnow, client: httpx.Client | None = None,
                 reveal: Callable[[bytes], bytes] | None = None):
        self.engine = engine
        # Bodies hold personal fields sealed; they are revealed as they leave (an erased person's
        # fields read as "erased on <date>").
        self.reveal = reveal or (lambda body: body)  # bootstrap.dispatcher always gives one
        self.subscriptions = subscriptions
        self.projections = projections
        self.settings = settings
        self._slack_webhook_url = slack_webhook_url  # a secret: kept out of reprs and logs
        self.links = links  # for the links in stuck announcements
        self.clock = clock
        self.client = client or httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False,
                                              headers={"User-Agent": USER_AGENT})
        # Webhooks go to addresses an admin chose: only to those the subscriptions' targets allow,
        # checked on the addresses connected to. (The Slack URL is the operator's own setting.)
        self.webhook_client = httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False,
                                           headers={"User-Agent": USER_AGENT},
                                           transport=guarded_transport(subscriptions.targets))

    # -- claiming and marking ------------------------------------------------------------------
    def claim(self) -> Claimed | None:
        """Lease the oldest due message to this dispatcher, just before sending it (None: nothing due).

        One at a time, so that a lease only has to outlast one send; the claim's token is what
        entitles this dispatcher, and no other, to mark the message afterwards."""
        now = self.clock()
        # A receiver that answered 429 gets nothing until its wait is over: the rate-limited
        # message carries the wait, for every dispatcher.
        limited = outbox.alias("limited")
        same_receiver = and_(limited.c.destination == outbox.c.destination,
                             or_(outbox.c.destination == "slack", limited.c.subscription_id == outbox.c.subscription_id))
        waiting = (select(limited.c.id).where(limited.c.status == "pending", limited.c.last_status == 429,
                                              limited.c.next_attempt_at > now, same_receiver))
        due = (select(outbox.c.id)
               .where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now,
                      or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now), ~waiting.exists())
               .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(1))
        token = uuid.uuid4().hex
        with transaction(self.engine) as conn:
            if not is_sqlite(self.engine):  # SQLite's writers take turns: no row locks to skip
                due = due.with_for_update(skip_locked=True)
            found = conn.execute(due).scalar()
            if found is None:
                return None
            row = conn.execute(update(outbox).where(outbox.c.id == found)
                               .values(lease_until=now + timedelta(seconds=self.settings.lease_seconds),
                                       lease_token=token)
                               .returning(*MESSAGE_COLUMNS)).one()
        return Claimed(message(row), token)

    def _mark(self, claimed: Claimed, **values) -> bool:
        """Record an attempt's outcome if this claim still holds the lease (False: it had run out
        and another dispatcher took the message)."""
        with transaction(self.engine) as conn:
            done = conn.execute(update(outbox).where(outbox.c.id == claimed.message.id, outbox.c.status == "pending",
                                                     outbox.c.lease_token == claimed.token)
                                .values(lease_until=None, lease_token=None, **values))
        return done.rowcount == 1

    # -- sending -----------------------------------------------------------------------------
    def send(self, item: Message) -> Attempt:
        """One attempt at delivering ``item`` (no retries here)."""
        if item.destination == "slack":
            if not self._slack_webhook_url:
                return Attempt(False, None, "SLACK_WEBHOOK_URL is not set for the dispatcher")
            return self._post(self.client, self._slack_webhook_url, self.reveal(orjson.dumps(item.payload)),
                              {"Content-Type": "application/json"})
        subscription = self.subscriptions.get(item.subscription_id) if item.subscription_id else None
        if subscription is None or subscription.removed_at is not None:
            return Attempt(False, None, "the webhook subscription was removed", final=True)
        body = self.reveal(orjson.dumps(item.payload))
        return self._post(self.webhook_client, subscription.url, body, {
            "Content-Type": "application/cloudevents+json; charset=utf-8",
            SIGNATURE_HEADER: sign(subscription.secret, int(time.time()), body),
        })

    def _post(self, client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        try:
            response = client.post(url, content=body, headers=headers)
        except TargetUnresolved as unresolved:  # DNS may answer later: an attempt like any failed one
            return Attempt(False, None, str(unresolved))
        except TargetRefused as refused:
            return Attempt(False, None, str(refused), final=True)
        except httpx.TimeoutException:
            return Attempt(False, None, f"no answer within {self.settings.timeout_seconds:g} s")
        except httpx.TransportError as error:
            return Attempt(False, None, f"could not connect: {type(error).__name__}")
        except httpx.InvalidURL:
            return Attempt(False, None, "the receiver's URL cannot be used", final=True)
        if 200 <= response.status_code < 300:
            return Attempt(True, response.status_code, None)
        # The status and its standard phrase only: what a receiver answers is never kept or logged.
        error = f"HTTP {response.status_code}" + (f" {_phrase(response.status_code)}" if _phrase(response.status_code) else "")
        if response.status_code == 429:
            wait = retry_after(response.headers.get("Retry-After"), self.clock())
            return Attempt(False, 429, error, wait_seconds=wait if wait is not None else self.settings.backoff_seconds)
        return Attempt(False, response.status_code, error)

    def deliver(self, claimed: Claimed) -> Attempt:
        """Send a claimed message once and record the outcome."""
        item = claimed.message
        try:
            attempt = self.send(item)
        except Exception as error:  # one message never stops the others; its outcome is recorded
            log.error("notification_send_error", id=item.id, error=type(error).__name__)
            attempt = Attempt(False, None, f"could not be sent: {type(error).__name__}")
        now = self.clock()
        fields = {"id": item.id, "destination": item.destination, "kind": item.kind, "stream_id": item.stream_id,
                  "subscription_id": item.subscription_id, "attempt": item.attempts + 1, "http_status": attempt.status}
        if attempt.ok:
            marked = self._mark(claimed, status="sent", sent_at=now, attempts=item.attempts + 1,
                                last_status=attempt.status, last_error=None)
            outcome = "notification_sent"
        elif attempt.wait_seconds is not None:  # rate limited: wait as asked, not an attempt against it
            wait = min(max(attempt.wait_seconds, MIN_RATE_LIMIT_WAIT), self.settings.backoff_max_seconds)
            until = now + timedelta(seconds=wait)
            marked = self._mark(claimed, next_attempt_at=until, last_status=429, last_error=attempt.error)
            outcome, fields["retry_in"] = "notification_rate_limited", wait
        elif attempt.final or item.attempts + 1 >= self.settings.max_attempts:
            marked = self._mark(claimed, status="dead", attempts=item.attempts + 1, last_status=attempt.status,
                                last_error=attempt.error)
            outcome, fields["error"] = "notification_dead", attempt.error
        else:
            delay = backoff(item.attempts + 1, self.settings.backoff_seconds, self.settings.backoff_max_seconds)
            marked = self._mark(claimed, attempts=item.attempts + 1, next_attempt_at=now + delay,
                                last_status=attempt.status, last_error=attempt.error)
            outcome, fields["error"], fields["retry_in"] = "notification_failed", attempt.error, delay.total_seconds()
        if not marked:  # the lease ran out mid-send: the message is another dispatcher's now
            log.warning("notification_lease_lost", outcome=outcome, **fields)
        elif outcome == "notification_dead":
            log.warning(outcome, **fields)
        else:
            log.info(outcome, **fields)
        return attempt

    def run_once(self, limit: int = DELIVERIES_PER_TURN) -> int:
        """Claim and deliver up to ``limit`` messages, one at a time; how many were tried."""
        tried = 0
        while tried < limit and (claimed := self.claim()) is not None:
            self.deliver(claimed)
            tried += 1
        return tried

    # -- stuck records ----------------------------------------------------------------------
    def scan_stuck(self) -> int:
        """Announce, in one Slack message, every stuck finding not announced before; how many."""
        if not self._slack_webhook_url:
            return 0
        now = self.clock()
        current = {(item.id, item.finding.code, item.finding.since): item for item in self._stuck_now(now)}
        insert_new = (sqlite_insert if is_sqlite(self.engine) else pg_insert)(stuck_announcements)
        keys = (stuck_announcements.c.stream_id, stuck_announcements.c.code, stuck_announcements.c.since)
        with transaction(self.engine) as conn:
            new = []
            ordered = list(current)
            for start in range(0, len(ordered), 500):
                chunk = [{"stream_id": s, "code": c, "since": t, "announced_at": now}
                         for s, c, t in ordered[start:start + 500]]
                new += [tuple(row) for row in conn.execute(
                    insert_new.values(chunk).on_conflict_do_nothing().returning(*keys))]
            # Findings that no longer hold are forgotten, so the table stays the size of the stuck list.
            # (Only rows announced before this scan: another dispatcher's scan may just have added some.)
            gone = [key for key in conn.execute(select(*keys).where(stuck_announcements.c.announced_at < now))
                    if tuple(key) not in current]
            for start in range(0, len(gone), 500):
                conn.execute(delete(stuck_announcements).where(tuple_(*keys).in_(gone[start:start + 500])))
            if new:
                order = {key: index for index, key in enumerate(ordered)}  # the stuck list's own order
                found = [current[key] for key in sorted(new, key=order.__getitem__)]
                conn.execute(insert(outbox).values(
                    destination="slack", kind="records_stuck", dedupe_key=f"slack:records_stuck:{now.isoformat()}",
                    payload=records_stuck_message(found, self.links),
                    status="pending", attempts=0, next_attempt_at=now, created_at=now))
        if new:
            log.info("stuck_announced", findings=len(new))
        return len(new)

    def _stuck_now(self, now: datetime) -> list[StuckItem]:
        """Every stuck finding at ``now``, in the stuck list's order."""
        found: list[StuckItem] = []
        with self.projections.view(now=now) as view:
            cursor = None
            while True:
                page = view.stuck(limit=1000, cursor=cursor)
                found += page.value
                if page.next_cursor is None:
                    return found
                cursor = page.next_cursor

    # -- retention -----------------------------------------------------------------------------
    def purge_delivered(self, now: datetime | None = None, *, batch_size: int = PURGE_BATCH,
                        max_batches: int | None = None) -> int:
        """Delete sent messages delivered more than ``retention_days`` before ``now``, ``batch_size``
        at a time (at most ``max_batches`` batches; None: until none is left); how many were deleted."""
        cutoff = (now or self.clock()) - timedelta(days=self.settings.retention_days)
        # Ordered by the due-time index (status, next_attempt_at): a message is sent after it was
        # due, so the oldest deliveries come first and each batch stops at its limit instead of
        # reading every sent row.
        due = (select(outbox.c.id).where(outbox.c.status == "sent", outbox.c.sent_at < cutoff)
               .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(batch_size))
        if not is_sqlite(self.engine):  # several dispatchers purge side by side, never waiting on each other
            due = due.with_for_update(skip_locked=True)
        deleted = batches = 0
        while max_batches is None or batches < max_batches:
            with transaction(self.engine) as conn:
                ids = list(conn.execute(due).scalars())
                if ids:
                    deleted += conn.execute(delete(outbox).where(outbox.c.id.in_(ids),
                                                                 outbox.c.status == "sent")).rowcount
            batches += 1
            if len(ids) < batch_size:
                break
        if deleted:
            log.info("outbox_purged", deleted=deleted, sent_before=cutoff.isoformat(),
                     retention_days=self.settings.retention_days)
        return deleted

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, poll_seconds: float = 1.0, max_backoff: float = 60.0,
            parent_pid: int | None = None, on_round: Callable[[], None] | None = None) -> None:
        """Deliver until ``stop`` is set (or process ``parent_pid`` is gone); scan for stuck records
        every ``stuck_scan_seconds`` (0: never) and purge delivered messages past their retention every
        ``PURGE_EVERY_SECONDS``. A database that cannot be reached is retried with backoff.
        ``on_round`` is called after each round that did not fail (idle ones too)."""
        next_scan = next_purge = time.monotonic()

        def work() -> bool:
            nonlocal next_scan, next_purge
            if self.settings.stuck_scan_seconds > 0 and time.monotonic() >= next_scan:
                self.scan_stuck()
                next_scan = time.monotonic() + self.settings.stuck_scan_seconds
            backlog = False
            if time.monotonic() >= next_purge:
                backlog = self.purge_delivered(max_batches=PURGE_BATCHES_PER_TURN) == \
                    PURGE_BATCH * PURGE_BATCHES_PER_TURN  # perhaps more: purge on after this turn's deliveries
                next_purge = time.monotonic() + (0 if backlog else PURGE_EVERY_SECONDS)
            return bool(self.run_once()) or backlog

        def failed(error: Exception, delay: float) -> None:
            if isinstance(error, DBAPIError):
                log.warning("notifications_database_error", retry_in=delay, error=unavailable_reason(error))
            else:
                log.exception("notifications_unexpected_error", retry_in=delay)

        keep_going(stop, work, poll_seconds=poll_seconds, max_backoff=max_backoff, failed=failed,
                   parent_pid=parent_pid, on_round=on_round)
        self.client.close()
        self.webhook_client.close()
