"""Versioned projections: every projection row is a version valid over a span of recorded time, so
any past time is an indexed range query; what the projections hold for each record, so that a
batch folds a record's new events onto it; and the stuck rules' starts, so that the database
answers "which are stuck?".

The projection tables of 0003 are dropped and made anew (they hold nothing that the events do
not): the projections worker finds the new ones empty at position 0 and rebuilds them from the
store in one pass, as ``casestudies projections rebuild`` would. The checkpoint table stays; its
rows (one per projector) give way to the one checkpoint all projectors now share.

Revision ID: 0005_versioned_projections
Revises: 0004_integrations
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005_versioned_projections"
down_revision = "0004_integrations"
branch_labels = None
depends_on = None

# The same types as service/events/tables.py, spelled out so this revision never changes.
STREAM_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
UTC_TIME = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")
NOW = sa.text("valid_to IS NULL")

OLD = ("proj_pipeline_records", "proj_status_history", "proj_blockers", "proj_cycle_stages", "proj_approver_times",
       "proj_candidates")


def _versioned(name: str, keys: list[sa.Column], columns: list[sa.Column]) -> None:
    op.create_table(
        name,
        sa.Column("generation", sa.Integer, primary_key=True),
        *keys,
        sa.Column("valid_from", UTC_TIME, primary_key=True),
        sa.Column("valid_to", UTC_TIME),
        *columns,
    )


def _now(name: str, table: str, columns: list[str]) -> None:
    op.create_index(name, table, columns, postgresql_where=NOW, sqlite_where=NOW)


def _ended(table: str) -> None:
    op.create_index(f"ix_{table}_ended", table, ["generation", "valid_to"])


def upgrade() -> None:
    for table in OLD:
        op.drop_table(table)
    op.execute("DELETE FROM projection_checkpoints")

    op.create_table(
        "proj_record_states",
        sa.Column("generation", sa.Integer, primary_key=True),
        sa.Column("id", STREAM_ID, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", JSON_DOCUMENT, nullable=False),
    )
    _versioned("proj_pipeline_records", [sa.Column("id", STREAM_ID, primary_key=True)], [
        sa.Column("status", sa.String(40), nullable=False), sa.Column("csm", sa.String(200)),
        sa.Column("account_id", sa.String(200)), sa.Column("account_name", sa.String(200))])
    _now("ix_proj_pipeline_records_now", "proj_pipeline_records", ["generation", "status", "csm"])
    _ended("proj_pipeline_records")

    _versioned("proj_status_history", [sa.Column("id", STREAM_ID, primary_key=True),
                                       sa.Column("seq", sa.Integer, primary_key=True)], [
        sa.Column("status", sa.String(40), nullable=False), sa.Column("csm", sa.String(200)),
        sa.Column("from_at", UTC_TIME, nullable=False), sa.Column("to_at", UTC_TIME)])
    _ended("proj_status_history")

    _versioned("proj_blockers", [sa.Column("id", STREAM_ID, primary_key=True),
                                 sa.Column("seq", sa.Integer, primary_key=True)], [
        sa.Column("code", sa.String(40), nullable=False), sa.Column("subject", sa.String(60), nullable=False),
        sa.Column("status", sa.String(40), nullable=False), sa.Column("csm", sa.String(200)),
        sa.Column("account_name", sa.String(200)), sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", JSON_DOCUMENT, nullable=False), sa.Column("since", UTC_TIME, nullable=False)])
    _now("ix_proj_blockers_now", "proj_blockers", ["generation", "csm", "since", "id", "seq"])
    _now("ix_proj_blockers_now_code", "proj_blockers", ["generation", "code", "csm", "since", "id"])
    op.create_index("ix_proj_blockers_csm", "proj_blockers", ["generation", "csm", "since", "id", "seq"])
    _ended("proj_blockers")

    _versioned("proj_cycle_stages", [sa.Column("id", STREAM_ID, primary_key=True),
                                     sa.Column("stage", sa.String(40), primary_key=True)], [
        sa.Column("from_at", UTC_TIME, nullable=False), sa.Column("to_at", UTC_TIME, nullable=False),
        sa.Column("quarter", sa.String(7), nullable=False),
        sa.Column("days", sa.Float, nullable=False)])
    op.create_index("ix_proj_cycle_stages_to", "proj_cycle_stages", ["generation", "to_at"])

    _versioned("proj_approver_times", [sa.Column("id", STREAM_ID, primary_key=True),
                                       sa.Column("round", sa.Integer, primary_key=True),
                                       sa.Column("role", sa.String(40), primary_key=True)], [
        sa.Column("decision", sa.String(40), nullable=False), sa.Column("requested_at", UTC_TIME, nullable=False),
        sa.Column("decided_at", UTC_TIME, nullable=False), sa.Column("days", sa.Float, nullable=False),
        sa.Column("quarter", sa.String(7), nullable=False)])
    op.create_index("ix_proj_approver_times_decided", "proj_approver_times", ["generation", "decided_at"])

    _versioned("proj_candidates", [sa.Column("id", STREAM_ID, primary_key=True)], [
        sa.Column("status", sa.String(40), nullable=False), sa.Column("csm", sa.String(200)),
        sa.Column("account_name", sa.String(200)), sa.Column("kpi_improvement_pct", sa.Float),
        sa.Column("best_metric", sa.String(200)), sa.Column("nps", sa.Integer),
        sa.Column("msa_clear", sa.Boolean, nullable=False), sa.Column("candidate_since", UTC_TIME, nullable=False)])
    _now("ix_proj_candidates_now", "proj_candidates", ["generation", "candidate_since"])
    _ended("proj_candidates")

    _versioned("proj_stuck", [sa.Column("id", STREAM_ID, primary_key=True),
                              sa.Column("code", sa.String(40), primary_key=True)], [
        sa.Column("holds_after", UTC_TIME, nullable=False), sa.Column("status", sa.String(40), nullable=False),
        sa.Column("csm", sa.String(200)), sa.Column("account_id", sa.String(200)),
        sa.Column("account_name", sa.String(200)), sa.Column("facts", JSON_DOCUMENT, nullable=False)])
    _now("ix_proj_stuck_now", "proj_stuck", ["generation", "csm", "holds_after", "id", "code"])
    _now("ix_proj_stuck_now_code", "proj_stuck", ["generation", "code", "csm", "holds_after", "id"])
    _now("ix_proj_stuck_now_status", "proj_stuck", ["generation", "status", "csm", "holds_after", "id", "code"])
    op.create_index("ix_proj_stuck_csm", "proj_stuck", ["generation", "csm", "holds_after", "id", "code"])
    _ended("proj_stuck")


def downgrade() -> None:
    """Back to 0003's projection tables, empty: the older worker rebuilds them from the store."""
    for table in ("proj_stuck", "proj_candidates", "proj_approver_times", "proj_cycle_stages", "proj_blockers",
                  "proj_status_history", "proj_pipeline_records", "proj_record_states"):
        op.drop_table(table)
    op.execute("DELETE FROM projection_checkpoints")
    generation = lambda: sa.Column("generation", sa.Integer, primary_key=True)  # noqa: E731
    op.create_table("proj_pipeline_records", generation(), sa.Column("id", STREAM_ID, primary_key=True),
                    sa.Column("status", sa.String(40), nullable=False), sa.Column("csm", sa.String(200)))
    op.create_index("ix_proj_pipeline_records_status_csm", "proj_pipeline_records", ["generation", "status", "csm"])
    op.create_table("proj_status_history", generation(), sa.Column("id", STREAM_ID, primary_key=True),
                    sa.Column("seq", sa.Integer, primary_key=True), sa.Column("status", sa.String(40), nullable=False),
                    sa.Column("csm", sa.String(200)), sa.Column("from_at", UTC_TIME, nullable=False),
                    sa.Column("to_at", UTC_TIME))
    op.create_index("ix_proj_status_history_from", "proj_status_history", ["generation", "from_at"])
    op.create_table("proj_blockers", generation(), sa.Column("id", STREAM_ID, primary_key=True),
                    sa.Column("seq", sa.Integer, primary_key=True), sa.Column("code", sa.String(40), nullable=False),
                    sa.Column("subject", sa.String(60), nullable=False),
                    sa.Column("status", sa.String(40), nullable=False), sa.Column("csm", sa.String(200)),
                    sa.Column("account_name", sa.String(200)), sa.Column("reason", sa.Text, nullable=False),
                    sa.Column("details", JSON_DOCUMENT, nullable=False), sa.Column("since", UTC_TIME, nullable=False),
                    sa.Column("until", UTC_TIME))
    op.create_index("ix_proj_blockers_open", "proj_blockers", ["generation", "until", "code"])
    op.create_table("proj_cycle_stages", generation(), sa.Column("id", STREAM_ID, primary_key=True),
                    sa.Column("stage", sa.String(40), primary_key=True), sa.Column("csm", sa.String(200)),
                    sa.Column("from_at", UTC_TIME, nullable=False), sa.Column("to_at", UTC_TIME, nullable=False),
                    sa.Column("days", sa.Float, nullable=False))
    op.create_index("ix_proj_cycle_stages_to", "proj_cycle_stages", ["generation", "to_at"])
    op.create_table("proj_approver_times", generation(), sa.Column("id", STREAM_ID, primary_key=True),
                    sa.Column("round", sa.Integer, primary_key=True), sa.Column("role", sa.String(40), primary_key=True),
                    sa.Column("csm", sa.String(200)), sa.Column("decision", sa.String(40), nullable=False),
                    sa.Column("requested_at", UTC_TIME, nullable=False),
                    sa.Column("decided_at", UTC_TIME, nullable=False), sa.Column("days", sa.Float, nullable=False))
    op.create_index("ix_proj_approver_times_decided", "proj_approver_times", ["generation", "decided_at"])
    op.create_table("proj_candidates", generation(), sa.Column("id", STREAM_ID, primary_key=True),
                    sa.Column("status", sa.String(40), nullable=False), sa.Column("csm", sa.String(200)),
                    sa.Column("account_name", sa.String(200)), sa.Column("kpi_improvement_pct", sa.Float),
                    sa.Column("best_metric", sa.String(200)), sa.Column("nps", sa.Integer),
                    sa.Column("msa_clear", sa.Boolean, nullable=False),
                    sa.Column("candidate", sa.Boolean, nullable=False), sa.Column("candidate_since", UTC_TIME))
    op.create_index("ix_proj_candidates_candidate", "proj_candidates", ["generation", "candidate"])
