"""Core tables: the append-only events table, the per-record state table, API keys.

Revision ID: 0001_core
Revises:
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
# Ids sort and compare byte by byte on PostgreSQL, as they do on SQLite, whatever the server's locale.
STREAM_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("stream_id", STREAM_ID, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", JSON_DOCUMENT, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("correlation_id", sa.String(128)),
        sa.Column("causation_id", sa.String(128)),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sqlite_autoincrement=True,
    )

    op.create_table(
        "case_studies",
        sa.Column("id", STREAM_ID, primary_key=True),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("csm", sa.String(200)),
        sa.Column("account_id", sa.String(200)),
        sa.Column("account_name", sa.String(200)),
        sa.Column("committed_at", TIMESTAMP),
        sa.Column("entered_status_at", TIMESTAMP),
        sa.Column("last_activity_at", TIMESTAMP),
        # The record's whole state, read and rewritten as one document on every append and never
        # searched inside (the columns above are what lists filter on): json keeps the text as
        # given, which PostgreSQL stores and returns without converting it.
        sa.Column("state", sa.JSON(), nullable=False),
        # Every append rewrites its record's row: room on the page lets PostgreSQL update it in
        # place (a HOT update) without touching the indexes when status, CSM and account stay.
        postgresql_with={"fillfactor": 70},
    )
    op.create_index("ix_case_studies_status", "case_studies", ["status"])
    op.create_index("ix_case_studies_csm", "case_studies", ["csm"])
    op.create_index("ix_case_studies_account_id", "case_studies", ["account_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("case_studies")
    op.drop_table("events")
