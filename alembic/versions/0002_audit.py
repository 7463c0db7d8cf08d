"""Audit: a hash chain over each stream, on_behalf_of, and an append-only events table.

Adds ``on_behalf_of``, ``prev_hash`` and ``hash`` to events and ``head_hash`` to the state
table, computes the chain for events already stored (see service/events/integrity.py for the
canonical form), then makes the database itself refuse to change stored events: on
PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE; on SQLite triggers refuse UPDATE
and DELETE.

Revision ID: 0002_audit
Revises: 0001_core
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

from service.events.chain import GENESIS, event_hash

revision = "0002_audit"
down_revision = "0001_core"
branch_labels = None
depends_on = None

# SQLite rebuilds a table to change a column's nullability; it must keep AUTOINCREMENT, so a
# position is never handed out twice.
EVENTS_TABLE_KWARGS = {"sqlite_autoincrement": True}

PG_FUNCTION = """
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % on events is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    with op.batch_alter_table("events", table_kwargs=EVENTS_TABLE_KWARGS) as batch:
        batch.add_column(sa.Column("on_behalf_of", sa.String(200)))
        batch.add_column(sa.Column("prev_hash", sa.String(64)))
        batch.add_column(sa.Column("hash", sa.String(64)))
    with op.batch_alter_table("case_studies") as batch:
        batch.add_column(sa.Column("head_hash", sa.String(64)))
    _chain_stored_events()
    with op.batch_alter_table("events", table_kwargs=EVENTS_TABLE_KWARGS) as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=False)
    with op.batch_alter_table("case_studies") as batch:
        batch.alter_column("head_hash", existing_type=sa.String(64), nullable=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute("CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
                   "FOR EACH ROW EXECUTE FUNCTION events_are_append_only()")
        op.execute("CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only()")
    else:
        op.execute("CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
                   "BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE on events is refused'); END")
        op.execute("CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
                   "BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE on events is refused'); END")


def _chain_stored_events() -> None:
    """Hash the events stored before this revision, stream by stream, oldest first."""
    bind = op.get_bind()
    events = sa.table("events", sa.column("position"), sa.column("event_id"), sa.column("stream_id"),
                      sa.column("version"), sa.column("type"), sa.column("data", sa.JSON()),
                      sa.column("actor"), sa.column("recorded_at", sa.DateTime(timezone=True)),
                      sa.column("occurred_at", sa.DateTime(timezone=True)), sa.column("correlation_id"),
                      sa.column("causation_id"), sa.column("prev_hash"), sa.column("hash"))
    states = sa.table("case_studies", sa.column("id"), sa.column("head_hash"))
    rows = bind.execute(sa.select(events).order_by(events.c.stream_id, events.c.version)).mappings().all()
    heads: dict[str, str] = {}
    for row in rows:
        prev = heads.get(row["stream_id"], GENESIS)
        digest = event_hash(stream_id=row["stream_id"], version=row["version"], type=row["type"],
                            data=row["data"], actor=row["actor"], on_behalf_of=None,
                            recorded_at=_utc(row["recorded_at"]), occurred_at=_utc(row["occurred_at"]),
                            event_id=row["event_id"], correlation_id=row["correlation_id"],
                            causation_id=row["causation_id"], prev_hash=prev)
        bind.execute(events.update().where(events.c.position == row["position"])
                     .values(prev_hash=prev, hash=digest))
        heads[row["stream_id"]] = digest
    for stream_id, head in heads.items():
        bind.execute(states.update().where(states.c.id == stream_id).values(head_hash=head))
    bind.execute(states.update().where(states.c.head_hash.is_(None)).values(head_hash=GENESIS))


def _utc(value):
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_no_truncate ON events")
        op.execute("DROP TRIGGER events_append_only ON events")
        op.execute("DROP FUNCTION events_are_append_only()")
    else:
        op.execute("DROP TRIGGER events_no_delete")
        op.execute("DROP TRIGGER events_no_update")
    with op.batch_alter_table("case_studies") as batch:
        batch.drop_column("head_hash")
    with op.batch_alter_table("events", table_kwargs=EVENTS_TABLE_KWARGS) as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("on_behalf_of")
