"""The personal data tables. Unlike the events, they are not append-only: erasing a person
destroys their key here."""
from __future__ import annotations

from sqlalchemy import JSON, Column, Index, String, Table, Text

from service.events.tables import UTCDateTime, metadata

# One row per person (data subject). ``wrapped_key`` is the person's AES-256 key, itself encrypted
# under the master key; erasure sets it to NULL and keeps the row, so that a sealed field reads
# "erased on <date>" rather than nothing.
data_subjects = Table(
    "data_subjects",
    metadata,
    Column("id", String(32), primary_key=True),  # random: nothing about the person
    Column("wrapped_key", String(100)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("erased_at", UTCDateTime),
)

# How a person is asked for, as a keyed hash (HMAC-SHA256 under a key derived from the master key):
# by email, or by name within an account. The same person named again gets the same key.
subject_handles = Table(
    "subject_handles",
    metadata,
    Column("handle", String(64), primary_key=True),
    Column("subject_id", String(32), nullable=False),
    Index("ix_subject_handles_subject_id", "subject_id"),
)

# Erasure receipts, kept: what was erased where, when, by whom and why. No personal data.
erasures = Table(
    "erasures",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("subject_id", String(32), nullable=False),
    Column("handle", String(64), nullable=False),  # the request's, so that a retry finds its receipt
    Column("requested_by", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("erased_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),  # NULL while streams and the outbox are still being updated
    Column("receipt", JSON(), nullable=False),
    Index("ix_erasures_handle", "handle"),
    Index("ix_erasures_subject_id", "subject_id"),
)
