"""The table of API keys: each key's name, role and SHA-256 hash, never the key itself."""
from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, UniqueConstraint

from service.events.tables import UTCDateTime, metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("role", String(20), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    UniqueConstraint("name", name="uq_api_keys_name"),
    UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
)
