"""Projections: a gap-safe global feed and the tables projectors keep from it.

Adds ``events.tx``: on PostgreSQL the id of the transaction that wrote the event
(``pg_current_xact_id()``), which the feed uses to hand out only events whose transaction
is older than every transaction still running (docs/feed.md); on SQLite, whose writers take
turns, it is 0 and the feed follows positions alone. Events stored before this revision were
all committed long ago: they get 0 too, so they come first, in position order.

Then the checkpoint table and the projection tables, each row tagged with the generation it
belongs to (see service/events/tables.py).

Revision ID: 0003_projections
Revises: 0002_audit
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

from service.events import tables

revision = "0003_projections"
down_revision = "0002_audit"
branch_labels = None
depends_on = None

PROJECTION_TABLES = (tables.projection_checkpoints, tables.pipeline_records, tables.status_history,
                     tables.blockers, tables.cycle_stages, tables.approver_times, tables.candidates)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # A constant default first (no table rewrite, and the append-only triggers do not fire),
        # then the default every new row gets.
        op.execute("ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT '0'")
        op.execute("ALTER TABLE events ALTER COLUMN tx SET DEFAULT pg_current_xact_id()")
    else:
        # A plain ADD COLUMN: no table rebuild, so AUTOINCREMENT and the triggers stay as they are.
        op.execute("ALTER TABLE events ADD COLUMN tx INTEGER NOT NULL DEFAULT 0")
    op.execute("CREATE INDEX ix_events_tx_position ON events (tx, position)")
    for table in PROJECTION_TABLES:
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(PROJECTION_TABLES):
        table.drop(bind)
    op.execute("DROP INDEX ix_events_tx_position")
    op.execute("ALTER TABLE events DROP COLUMN tx")
