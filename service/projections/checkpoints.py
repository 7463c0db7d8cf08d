"""The checkpoint: how far the projections have read the feed, which generation of their tables is
live, and the last error. All projectors share it: one pass folds each batch into all of them, so
every answer, whichever tables it reads, reflects one position of the feed. A batch or a swap
holds its row while it writes."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from service.events.db import transaction
from service.events.feed import Mark
from service.projections.projectors import EventNotProjected
from service.projections.tables import projection_checkpoints
from service.times import utcnow

NAME = "projections"  # the checkpoint's row


@dataclass(frozen=True)
class Checkpoint:
    """How far the projections have read, which generation of their tables is live, and the last error."""

    name: str
    generation: int
    position: int
    event_recorded_at: datetime | None
    updated_at: datetime | None
    failing: bool  # the last batch failed; cleared when a batch succeeds
    last_error: str | None  # kept after recovery, for the record
    last_error_position: int | None  # the event it failed on
    last_error_at: datetime | None

    def mark(self) -> Mark:
        return Mark(self.position, self.event_recorded_at)


class ProjectionFailed(Exception):
    """An event could not be projected; nothing of its batch was written."""

    def __init__(self, failure: EventNotProjected):
        super().__init__(str(failure))
        self.position, self.stream_id = failure.event.position, failure.event.stream_id


class Checkpoints:
    """The projections' checkpoint row."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.clock = clock

    def get(self, conn: Connection, *, lock: bool = False) -> Checkpoint:
        """The checkpoint (before the first batch: at the start, generation 1)."""
        query = select(projection_checkpoints).where(projection_checkpoints.c.name == NAME)
        row = conn.execute(query.with_for_update() if lock else query).first()
        return Checkpoint(**row._mapping) if row else Checkpoint(NAME, 1, 0, None, None, False, None, None, None)

    def ensure(self) -> None:
        """Make the checkpoint row, so that it can be locked."""
        try:
            with transaction(self.engine) as conn:
                if conn.execute(select(projection_checkpoints.c.name)
                                .where(projection_checkpoints.c.name == NAME)).first() is None:
                    conn.execute(projection_checkpoints.insert().values(
                        name=NAME, generation=1, position=0, updated_at=self.clock(), failing=False))
        except IntegrityError:
            pass  # another process made it first

    def now(self) -> Checkpoint:
        """The checkpoint, read in a transaction of its own."""
        with transaction(self.engine, write=False) as conn:
            return self.get(conn)

    def move(self, conn: Connection, mark: Mark, *, generation: int | None = None) -> None:
        """Move the checkpoint to ``mark`` (and to another generation), clearing ``failing``."""
        values = {"position": mark.position, "event_recorded_at": mark.recorded_at, "updated_at": self.clock(),
                  "failing": False}
        if generation is not None:
            values["generation"] = generation
        conn.execute(update(projection_checkpoints).where(projection_checkpoints.c.name == NAME).values(**values))

    def record_error(self, failure: ProjectionFailed) -> None:
        """Mark the projections failing, with the error and the event it failed on."""
        with transaction(self.engine) as conn:
            conn.execute(update(projection_checkpoints).where(projection_checkpoints.c.name == NAME)
                         .values(failing=True, last_error=str(failure)[:2000],
                                 last_error_position=failure.position, last_error_at=self.clock()))
