"""Webhook subscriptions: which URLs get which event types, with the secret that signs each delivery."""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

import httpx
from sqlalchemy import Engine, insert, select, update

from service.domain import EVENT_TYPES, SYSTEM_EVENT_TYPES
from service.notifications.tables import outbox, webhook_subscriptions
from service.notifications.targets import Targets
from service.times import utcnow

ALL_TYPES = "*"
MAX_SUBSCRIPTION_ID = 2**31 - 1  # the id column's range: a larger id names nothing


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
    unknown = [t for t in wanted if t != ALL_TYPES and t not in (*EVENT_TYPES, *SYSTEM_EVENT_TYPES)]
    if unknown:
        raise SubscriptionError(f"unknown event types {', '.join(unknown)}; "
                                f"known: {', '.join((*EVENT_TYPES, *SYSTEM_EVENT_TYPES))}")
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

    def __init__(self, engine: Engine, *, cache_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 targets: Targets | None = None):
        self.engine = engine
        self.targets = targets or Targets()
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
        if (refused := self.targets.refusal(url)) is not None:
            raise SubscriptionError(refused)
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
