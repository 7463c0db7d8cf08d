"""Checkpoints: how far each projector has read the feed, which generation of its tables is live,
and its last error; one row per projector, which a batch or a swap holds while it writes."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from service.events.db import transaction
from service.events.feed import Mark
from service.projections.projectors import EventNotProjected
from service.projections.tables import projection_checkpoints
from service.times import utcnow


@dataclass(frozen=True)
class Checkpoint:
    """How far a projector has read, which generation of its tables is live, and its last error."""

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
    """A projector could not project an event; nothing of the batch was written."""

    def __init__(self, name: str, failure: EventNotProjected):
        super().__init__(f"{name}: {failure}")
        self.name, self.position, self.stream_id = name, failure.event.position, failure.event.stream_id



def _new_checkpoint(name: str) -> Checkpoint:
    return Checkpoint(name, 1, 0, None, None, False, None, None, None)


class Checkpoints:
    """The checkpoint rows of the projectors ``names``."""

    def __init__(self, engine: Engine, names: Iterable[str], *, clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.names = tuple(names)
        self.clock = clock

    def get(self, conn: Connection, name: str, *, lock: bool = False) -> Checkpoint:
        """The projector's checkpoint (a new projector's is at the start, generation 1)."""
        query = select(projection_checkpoints).where(projection_checkpoints.c.name == name)
        row = conn.execute(query.with_for_update() if lock else query).first()
        return Checkpoint(**row._mapping) if row else _new_checkpoint(name)

    def ensure(self) -> None:
        """Give every projector a checkpoint row, so that it can be locked."""
        for name in self.names:
            try:
                with transaction(self.engine) as conn:
                    if conn.execute(select(projection_checkpoints.c.name)
                                    .where(projection_checkpoints.c.name == name)).first() is None:
                        conn.execute(projection_checkpoints.insert().values(
                            name=name, generation=1, position=0, updated_at=self.clock(), failing=False))
            except IntegrityError:
                pass  # another process made it first

    def now(self, name: str) -> Checkpoint:
        """The projector's checkpoint, read in a transaction of its own."""
        with transaction(self.engine, write=False) as conn:
            return self.get(conn, name)

    def record_error(self, failure: ProjectionFailed) -> None:
        """Mark the projector failing, with the error and the event it failed on."""
        with transaction(self.engine) as conn:
            conn.execute(update(projection_checkpoints).where(projection_checkpoints.c.name == failure.name)
                         .values(failing=True, last_error=str(failure)[:2000],
                                 last_error_position=failure.position, last_error_at=self.clock()))
