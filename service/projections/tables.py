"""The projections' tables, their checkpoint, and what they hold for each record between batches.

Two kinds of time run through these tables. Business time (``since``, ``from_at``, ``to_at``) is
when things happened. Recorded time says what the service knew: every row is one *version*, valid
from the ``recorded_at`` of the event that made it (``valid_from``) until the one that changed or
ended it (``valid_to``; NULL while it holds). "As known at T" is ``valid_from <= T < valid_to``,
so any past time is an indexed range query, and "now" is ``valid_to IS NULL``.

Every row also carries the generation it belongs to: readers see only the generation named in
the checkpoint, so a rebuild writes the next one beside it and swaps it in with one update.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, Text, text

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

_NOW = text("valid_to IS NULL")  # the partial indexes that answer "now"


def _now(name: str, *columns: str) -> Index:
    return Index(name, *columns, postgresql_where=_NOW, sqlite_where=_NOW)


def _ended(table: str) -> Index:
    """For a table whose rows end: the versions that ended after a time T, which with the "now" rows
    are what was valid at T (so a read as known last week visits those, not all of history)."""
    return Index(f"ix_{table}_ended", "generation", "valid_to")


def _versioned(name: str, keys: list[Column], columns: list[Column], *indexes: Index) -> Table:
    """A projection table: generation and key, then one row per version of what the key holds."""
    return Table(
        name, metadata,
        Column("generation", Integer, primary_key=True),
        *keys,
        Column("valid_from", UTCDateTime, primary_key=True),  # recorded: the event that made this version
        Column("valid_to", UTCDateTime),  # recorded: the event that changed or ended it (NULL: it holds)
        *columns,
        *indexes,
    )


# What the projections hold for each record at the checkpoint: the record (as replay leaves it)
# and each projector's own state, so that a record's next events are folded onto them.
record_states = Table(
    "proj_record_states",
    metadata,
    Column("generation", Integer, primary_key=True),
    Column("id", StreamId, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", JsonDocument, nullable=False),
)

pipeline_records = _versioned(
    "proj_pipeline_records",
    [Column("id", StreamId, primary_key=True)],
    [Column("status", String(40), nullable=False), Column("csm", String(200)), Column("account_id", String(200)),
     Column("account_name", String(200))],
    _now("ix_proj_pipeline_records_now", "generation", "status", "csm"),
    _ended("proj_pipeline_records"),
)

status_history = _versioned(
    "proj_status_history",
    [Column("id", StreamId, primary_key=True), Column("seq", Integer, primary_key=True)],
    [Column("status", String(40), nullable=False), Column("csm", String(200)),
     Column("from_at", UTCDateTime, nullable=False),  # business time the record entered it
     Column("to_at", UTCDateTime)],  # business time it left (NULL: still there)
    _ended("proj_status_history"),
)

# Open blockers only: a blocker that clears ends its row.
blockers = _versioned(
    "proj_blockers",
    [Column("id", StreamId, primary_key=True), Column("seq", Integer, primary_key=True)],
    [Column("code", String(40), nullable=False), Column("subject", String(60), nullable=False),
     Column("status", String(40), nullable=False), Column("csm", String(200)), Column("account_name", String(200)),
     Column("reason", Text, nullable=False), Column("details", JsonDocument, nullable=False),
     Column("since", UTCDateTime, nullable=False)],  # business time it began
    _now("ix_proj_blockers_now", "generation", "csm", "since", "id", "seq"),
    _now("ix_proj_blockers_now_code", "generation", "code", "csm", "since", "id"),
    Index("ix_proj_blockers_csm", "generation", "csm", "since", "id", "seq"),
    _ended("proj_blockers"),
)

cycle_stages = _versioned(
    "proj_cycle_stages",
    [Column("id", StreamId, primary_key=True), Column("stage", String(40), primary_key=True)],
    [Column("from_at", UTCDateTime, nullable=False), Column("to_at", UTCDateTime, nullable=False),
     Column("quarter", String(7), nullable=False),  # of to_at, as reports group it (2026-Q3)
     Column("days", Float, nullable=False)],
    Index("ix_proj_cycle_stages_to", "generation", "to_at"),
)

approver_times = _versioned(
    "proj_approver_times",
    [Column("id", StreamId, primary_key=True), Column("round", Integer, primary_key=True),
     Column("role", String(40), primary_key=True)],
    [Column("decision", String(40), nullable=False), Column("requested_at", UTCDateTime, nullable=False),
     Column("decided_at", UTCDateTime, nullable=False), Column("days", Float, nullable=False),
     Column("quarter", String(7), nullable=False)],  # of decided_at
    Index("ix_proj_approver_times_decided", "generation", "decided_at"),
)

candidates = _versioned(
    "proj_candidates",
    [Column("id", StreamId, primary_key=True)],
    [Column("status", String(40), nullable=False), Column("csm", String(200)), Column("account_name", String(200)),
     Column("kpi_improvement_pct", Float), Column("best_metric", String(200)), Column("nps", Integer),
     Column("msa_clear", Boolean, nullable=False),
     Column("candidate_since", UTCDateTime, nullable=False)],  # business time it last became one
    _now("ix_proj_candidates_now", "generation", "candidate_since"),
    _ended("proj_candidates"),
)

# For each record and stuck rule that can hold for it as it is: the moment after which it holds
# (``holds_after``), and the facts the rule's sentence is made from.
stuck = _versioned(
    "proj_stuck",
    [Column("id", StreamId, primary_key=True), Column("code", String(40), primary_key=True)],
    [Column("holds_after", UTCDateTime, nullable=False), Column("status", String(40), nullable=False),
     Column("csm", String(200)), Column("account_id", String(200)), Column("account_name", String(200)),
     Column("facts", JsonDocument, nullable=False)],
    _now("ix_proj_stuck_now", "generation", "csm", "holds_after", "id", "code"),
    _now("ix_proj_stuck_now_code", "generation", "code", "csm", "holds_after", "id"),
    _now("ix_proj_stuck_now_status", "generation", "status", "csm", "holds_after", "id", "code"),
    Index("ix_proj_stuck_csm", "generation", "csm", "holds_after", "id", "code"),  # as known at a past time
    _ended("proj_stuck"),
)

PROJECTION_TABLES = (record_states, pipeline_records, status_history, blockers, cycle_stages, approver_times,
                     candidates, stuck)
