"""The projections' tables and their checkpoints.

Every projection row carries the generation it belongs to: readers see only the generation
named in projection_checkpoints, so a rebuild writes the next one beside it and swaps it in
with one update.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, Text

from service.events.tables import JsonDocument, StreamId, UTCDateTime, metadata

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),  # the last event read (0: none)
    Column("event_recorded_at", UTCDateTime),  # when that event was recorded
    Column("updated_at", UTCDateTime, nullable=False),
    Column("failing", Boolean, nullable=False),  # the last batch failed (cleared by one that succeeds)
    Column("last_error", Text),
    Column("last_error_position", BigInteger),  # the event it failed on
    Column("last_error_at", UTCDateTime),
)


def _generation() -> Column:
    return Column("generation", Integer, primary_key=True)


pipeline_records = Table(
    "proj_pipeline_records",
    metadata,
    _generation(),
    Column("id", StreamId, primary_key=True),
    Column("status", String(40), nullable=False),
    Column("csm", String(200)),
    Index("ix_proj_pipeline_records_status_csm", "generation", "status", "csm"),
)

status_history = Table(
    "proj_status_history",
    metadata,
    _generation(),
    Column("id", StreamId, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("status", String(40), nullable=False),
    Column("csm", String(200)),
    Column("from_at", UTCDateTime, nullable=False),  # business time the record entered it
    Column("to_at", UTCDateTime),  # business time it left (NULL: still there)
    Index("ix_proj_status_history_from", "generation", "from_at"),
)

blockers = Table(
    "proj_blockers",
    metadata,
    _generation(),
    Column("id", StreamId, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("code", String(40), nullable=False),
    Column("subject", String(60), nullable=False),
    Column("status", String(40), nullable=False),
    Column("csm", String(200)),
    Column("account_name", String(200)),
    Column("reason", Text, nullable=False),
    Column("details", JsonDocument, nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("until", UTCDateTime),  # NULL: still blocking
    Index("ix_proj_blockers_open", "generation", "until", "code"),
)

cycle_stages = Table(
    "proj_cycle_stages",
    metadata,
    _generation(),
    Column("id", StreamId, primary_key=True),
    Column("stage", String(40), primary_key=True),
    Column("csm", String(200)),
    Column("from_at", UTCDateTime, nullable=False),
    Column("to_at", UTCDateTime, nullable=False),
    Column("days", Float, nullable=False),
    Index("ix_proj_cycle_stages_to", "generation", "to_at"),
)

approver_times = Table(
    "proj_approver_times",
    metadata,
    _generation(),
    Column("id", StreamId, primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("role", String(40), primary_key=True),
    Column("csm", String(200)),
    Column("decision", String(40), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("days", Float, nullable=False),
    Index("ix_proj_approver_times_decided", "generation", "decided_at"),
)

candidates = Table(
    "proj_candidates",
    metadata,
    _generation(),
    Column("id", StreamId, primary_key=True),
    Column("status", String(40), nullable=False),
    Column("csm", String(200)),
    Column("account_name", String(200)),
    Column("kpi_improvement_pct", Float),
    Column("best_metric", String(200)),
    Column("nps", Integer),
    Column("msa_clear", Boolean, nullable=False),
    Column("candidate", Boolean, nullable=False),
    Column("candidate_since", UTCDateTime),  # business time it last became a candidate
    Index("ix_proj_candidates_candidate", "generation", "candidate"),
)
