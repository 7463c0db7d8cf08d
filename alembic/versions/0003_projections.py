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
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_projections"
down_revision = "0002_audit"
branch_labels = None
depends_on = None

# The same types as service/events/tables.py, spelled out so this revision never changes.
STREAM_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
UTC_TIME = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")


def _generation() -> sa.Column:
    return sa.Column("generation", sa.Integer, primary_key=True)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # A constant default first (no table rewrite, and the append-only triggers do not fire),
        # then the default every new row gets.
        op.execute("ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT '0'")
        op.execute("ALTER TABLE events ALTER COLUMN tx SET DEFAULT pg_current_xact_id()")
    else:
        # A plain ADD COLUMN: no table rebuild, so AUTOINCREMENT and the triggers stay as they are.
        op.execute("ALTER TABLE events ADD COLUMN tx INTEGER NOT NULL DEFAULT 0")
    op.execute("CREATE INDEX ix_events_tx_position ON events (tx, position)")

    op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("event_recorded_at", UTC_TIME),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("failing", sa.Boolean, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_position", sa.BigInteger),
        sa.Column("last_error_at", UTC_TIME),
    )
    op.create_table(
        "proj_pipeline_records", _generation(),
        sa.Column("id", STREAM_ID, primary_key=True),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("csm", sa.String(200)),
    )
    op.create_index("ix_proj_pipeline_records_status_csm", "proj_pipeline_records", ["generation", "status", "csm"])
    op.create_table(
        "proj_status_history", _generation(),
        sa.Column("id", STREAM_ID, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("csm", sa.String(200)),
        sa.Column("from_at", UTC_TIME, nullable=False),
        sa.Column("to_at", UTC_TIME),
    )
    op.create_index("ix_proj_status_history_from", "proj_status_history", ["generation", "from_at"])
    op.create_table(
        "proj_blockers", _generation(),
        sa.Column("id", STREAM_ID, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(60), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("csm", sa.String(200)),
        sa.Column("account_name", sa.String(200)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", JSON_DOCUMENT, nullable=False),
        sa.Column("since", UTC_TIME, nullable=False),
        sa.Column("until", UTC_TIME),
    )
    op.create_index("ix_proj_blockers_open", "proj_blockers", ["generation", "until", "code"])
    op.create_table(
        "proj_cycle_stages", _generation(),
        sa.Column("id", STREAM_ID, primary_key=True),
        sa.Column("stage", sa.String(40), primary_key=True),
        sa.Column("csm", sa.String(200)),
        sa.Column("from_at", UTC_TIME, nullable=False),
        sa.Column("to_at", UTC_TIME, nullable=False),
        sa.Column("days", sa.Float, nullable=False),
    )
    op.create_index("ix_proj_cycle_stages_to", "proj_cycle_stages", ["generation", "to_at"])
    op.create_table(
        "proj_approver_times", _generation(),
        sa.Column("id", STREAM_ID, primary_key=True),
        sa.Column("round", sa.Integer, primary_key=True),
        sa.Column("role", sa.String(40), primary_key=True),
        sa.Column("csm", sa.String(200)),
        sa.Column("decision", sa.String(40), nullable=False),
        sa.Column("requested_at", UTC_TIME, nullable=False),
        sa.Column("decided_at", UTC_TIME, nullable=False),
        sa.Column("days", sa.Float, nullable=False),
    )
    op.create_index("ix_proj_approver_times_decided", "proj_approver_times", ["generation", "decided_at"])
    op.create_table(
        "proj_candidates", _generation(),
        sa.Column("id", STREAM_ID, primary_key=True),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("csm", sa.String(200)),
        sa.Column("account_name", sa.String(200)),
        sa.Column("kpi_improvement_pct", sa.Float),
        sa.Column("best_metric", sa.String(200)),
        sa.Column("nps", sa.Integer),
        sa.Column("msa_clear", sa.Boolean, nullable=False),
        sa.Column("candidate", sa.Boolean, nullable=False),
        sa.Column("candidate_since", UTC_TIME),
    )
    op.create_index("ix_proj_candidates_candidate", "proj_candidates", ["generation", "candidate"])


def downgrade() -> None:
    for table in ("proj_candidates", "proj_approver_times", "proj_cycle_stages", "proj_blockers",
                  "proj_status_history", "proj_pipeline_records", "projection_checkpoints"):
        op.drop_table(table)
    op.execute("DROP INDEX ix_events_tx_position")
    op.execute("ALTER TABLE events DROP COLUMN tx")
