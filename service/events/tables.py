"""The tables, as SQLAlchemy Core sees them. Alembic migrations create them; a test checks they agree."""
from __future__ import annotations

from datetime import UTC
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.types import UserDefinedType

from service.domain import CaseStudy


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on both databases (SQLite keeps naive UTC text that sorts correctly)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonDocument = JSON().with_variant(JSONB(), "postgresql")
Position = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid

# Ids sort and compare byte by byte on PostgreSQL, as they do on SQLite, whatever the server's locale.
StreamId = String(128).with_variant(String(128, collation="C"), "postgresql")



class Xid8(UserDefinedType):
    """PostgreSQL's 64-bit transaction id; the feed reads it as text and compares it cast back."""

    cache_ok = True

    def get_col_spec(self, **kw):
        return "xid8"


# The writing transaction of each event on PostgreSQL (0 on SQLite, whose writers take turns):
# the global feed hands out only events whose transaction is older than every running one.
TxId = Integer().with_variant(Xid8(), "postgresql")
ischema_names.setdefault("xid8", Xid8)  # so that reflecting the table (schema checks) knows it

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("stream_id", StreamId, nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("data", JsonDocument, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("correlation_id", String(128)),
    Column("causation_id", String(128)),
    Column("request_digest", String(64), nullable=False),
    Column("on_behalf_of", String(200)),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("tx", TxId, nullable=False),
    UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
    UniqueConstraint("event_id", name="uq_events_event_id"),
    Index("ix_events_tx_position", "tx", "position"),
    sqlite_autoincrement=True,
)

case_studies = Table(
    "case_studies",
    metadata,
    Column("id", StreamId, primary_key=True),
    Column("status", String(40), nullable=False),
    Column("version", Integer, nullable=False),
    Column("csm", String(200)),
    Column("account_id", String(200)),
    Column("account_name", String(200)),
    Column("committed_at", UTCDateTime),
    Column("entered_status_at", UTCDateTime),
    Column("last_activity_at", UTCDateTime),
    Column("state", JSON(), nullable=False),  # read and written whole; see the migration
    Column("head_hash", String(64), nullable=False),
    Index("ix_case_studies_status", "status"),
    Index("ix_case_studies_csm", "csm"),
    Index("ix_case_studies_account_id", "account_id"),
    postgresql_with={"fillfactor": 70, "toast_tuple_target": 8160},
)


# When stored events were sealed anew (personal data encrypted in events stored before the service
# sealed it: migration 0006), their hashes changed: each event's old and new hash are kept here,
# bound by the signed receipt in ``reseals``, so that a digest taken before still checks out.
chain_reseals = Table(
    "chain_reseals",
    metadata,
    Column("stream_id", StreamId, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("old_hash", String(64), nullable=False),
    Column("new_hash", String(64), nullable=False),
    Column("reseal_id", String(36), nullable=False),
)

reseals = Table(
    "reseals",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("receipt", JSON(), nullable=False),
)


STATE_COLUMNS = tuple(column.name for column in case_studies.c if column.name != "id")


def state_row(record: CaseStudy, head_hash: str) -> dict[str, Any]:
    """The state table's columns but ``id`` for ``record``, whose chain ends at ``head_hash``.

    The one place that fills them: the writers name the columns this gives."""
    return {
        "status": record.state,
        "version": record.version,
        "csm": record.csm,
        "account_id": record.account["id"] if record.account else None,
        "account_name": record.account["name"] if record.account else None,
        "committed_at": record.committed_at,
        "entered_status_at": record.entered_status_at,
        "last_activity_at": record.last_activity_at,
        "state": record.to_dict(),
        "head_hash": head_hash,
    }
