"""The notification tables: webhook subscriptions, the outbox every message goes through, and the
stuck findings already announced."""
from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, String, Table, Text, UniqueConstraint

from service.events.tables import Position, StreamId, UTCDateTime, metadata

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("url", String(2048), nullable=False),
    Column("types", JSON(), nullable=False),  # event types, or ["*"] for all
    Column("secret", String(200), nullable=False),  # signs each delivery, so it is kept as given
    Column("created_at", UTCDateTime, nullable=False),
    Column("removed_at", UTCDateTime),  # kept, so that its deliveries stay explained
)

# A message written in the same transaction as what causes it, delivered by the dispatcher.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Position, primary_key=True, autoincrement=True),
    Column("destination", String(20), nullable=False),  # slack | webhook
    Column("subscription_id", Integer),  # the webhook's subscription
    Column("kind", String(40), nullable=False),  # record_created | records_stuck | new_candidate | event
    Column("stream_id", StreamId),
    Column("event_id", String(36)),
    Column("dedupe_key", String(200), nullable=False),
    Column("payload", JSON(), nullable=False),  # the body to send, as it was when written
    Column("status", String(10), nullable=False),  # pending | sent | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime),  # a dispatcher is sending it until then
    Column("lease_token", String(32)),  # which claim holds the lease: only it may mark the message
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("last_status", Integer),  # the receiver's HTTP status on the last attempt
    Column("last_error", Text),
    UniqueConstraint("dedupe_key", name="uq_outbox_dedupe_key"),
    Index("ix_outbox_due", "status", "next_attempt_at"),
    sqlite_autoincrement=True,
)

# Stuck findings already announced, so each is announced once: (record, rule, since) is one episode.
stuck_announcements = Table(
    "stuck_announcements",
    metadata,
    Column("stream_id", StreamId, primary_key=True),
    Column("code", String(40), primary_key=True),
    Column("since", UTCDateTime, primary_key=True),
    Column("announced_at", UTCDateTime, nullable=False),
)
