"""Personal data: people and their keys, erasure receipts, and the sealing of what was stored in clear.

Makes the tables of people (``data_subjects``: each person's key, wrapped under the master key),
of the handles they are found by (keyed hashes of an email, or of a name within an account), of
erasure receipts, and of chain reseals. Then, if any stored event holds a personal field in
clear, seals it under its person's key with the master key from PERSONAL_DATA_KEY (refusing to
run without one), re-chains the streams that changes and records every old and new hash with a
signed receipt: see service/people/stored.py and the README's "Personal data".

Revision ID: 0006_personal_data
Revises: 0005_versioned_projections
Create Date: 2026-12-03
"""
import os

import sqlalchemy as sa
from alembic import op

revision = "0006_personal_data"
down_revision = "0005_versioned_projections"
branch_labels = None
depends_on = None

STREAM_ID = sa.String(128).with_variant(sa.String(128, collation="C"), "postgresql")
UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "data_subjects",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("wrapped_key", sa.String(100)),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("erased_at", UTC_TIME),
    )
    op.create_table(
        "subject_handles",
        sa.Column("handle", sa.String(64), primary_key=True),
        sa.Column("subject_id", sa.String(32), nullable=False),
    )
    op.create_index("ix_subject_handles_subject_id", "subject_handles", ["subject_id"])
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("handle", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("erased_at", UTC_TIME, nullable=False),
        sa.Column("completed_at", UTC_TIME),
        sa.Column("receipt", sa.JSON(), nullable=False),
    )
    op.create_index("ix_erasures_handle", "erasures", ["handle"])
    op.create_index("ix_erasures_subject_id", "erasures", ["subject_id"])
    op.create_table(
        "chain_reseals",
        sa.Column("stream_id", STREAM_ID, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("old_hash", sa.String(64), nullable=False),
        sa.Column("new_hash", sa.String(64), nullable=False),
        sa.Column("reseal_id", sa.String(36), nullable=False),
    )
    op.create_table(
        "reseals",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("receipt", sa.JSON(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # A record's state grows with sealed fields (ciphertext does not compress): keep state rows
        # of up to a page in line and uncompressed, rather than compressing each write past 2 kB.
        op.execute("ALTER TABLE case_studies SET (toast_tuple_target = 8160)")
    _seal_what_is_in_clear()


def _seal_what_is_in_clear() -> None:
    from service.people.stored import in_clear, seal_stored

    bind = op.get_bind()
    if not in_clear(bind):
        return
    key = os.environ.get("PERSONAL_DATA_KEY")
    if not key:
        raise RuntimeError("stored events hold personal data in clear, and PERSONAL_DATA_KEY is not set: set the "
                           "master key (`casestudies people new-key` makes one) and migrate again")
    seal_stored(bind, key)


def downgrade() -> None:
    people = op.get_bind().execute(sa.text("SELECT count(*) FROM data_subjects")).scalar()
    if people:
        raise RuntimeError(f"refusing to downgrade: dropping data_subjects would destroy the keys of {people} "
                           "people, and with them every personal field stored (sealed fields stay sealed)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE case_studies RESET (toast_tuple_target)")
    for name in ("reseals", "chain_reseals", "erasures", "subject_handles", "data_subjects"):
        op.drop_table(name)
