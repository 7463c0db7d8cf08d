"""Integrations: webhook subscriptions, the outbox of notifications, announced stuck findings.

Revision ID: 0004_integrations
Revises: 0003_projections
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_integrations"
down_revision = "0003_projections"
branch_labels = None
depends_on = None

# The same types as service/events/tables.py, spelled out so this revision never changes.
STREAM_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
UTC_TIME = sa.DateTime(timezone=True)
POSITION = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("types", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("removed_at", UTC_TIME),
    )
    op.create_table(
        "outbox",
        sa.Column("id", POSITION, primary_key=True, autoincrement=True),
        sa.Column("destination", sa.String(20), nullable=False),
        sa.Column("subscription_id", sa.Integer),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("stream_id", STREAM_ID),
        sa.Column("event_id", sa.String(36)),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTC_TIME, nullable=False),
        sa.Column("lease_until", UTC_TIME),
        sa.Column("lease_token", sa.String(32)),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("sent_at", UTC_TIME),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("dedupe_key", name="uq_outbox_dedupe_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])
    op.create_table(
        "stuck_announcements",
        sa.Column("stream_id", STREAM_ID, primary_key=True),
        sa.Column("code", sa.String(40), primary_key=True),
        sa.Column("since", UTC_TIME, primary_key=True),
        sa.Column("announced_at", UTC_TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stuck_announcements")
    op.drop_index("ix_outbox_due", "outbox")
    op.drop_table("outbox")
    op.drop_table("webhook_subscriptions")
