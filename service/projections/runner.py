"""Following the feed: each projector reads batches after its checkpoint and keeps its tables in step.

Catching up reads a batch of the feed after a projector's checkpoint and, in one transaction
holding the checkpoint row, replaces the rows of every record the batch touches (projected
from that record's events up to the batch) and moves the checkpoint. Either both happen or
neither, so a projector that stops anywhere resumes from its checkpoint with no row missed or
doubled, and running a batch twice gives the same rows.
"""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

import structlog
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import DBAPIError

from service.events.db import transaction
from service.events.event import EVENT_COLUMNS, StoredEvent, stored_event
from service.events.feed import Feed, Lag
from service.events.tables import events
from service.projections.checkpoints import Checkpoints, ProjectionFailed
from service.projections.projectors import EventNotProjected, Projector, choose, project
from service.projections.rebuild import ProjectionBusy, Rebuilder
from service.projections.rows import replace_rows
from service.projections.tables import projection_checkpoints
from service.times import utcnow

log = structlog.get_logger("casestudies.projections")


class ProjectionRunner:
    """Keeps the projectors' tables in step with the feed."""

    def __init__(self, engine: Engine, feed: Feed, projectors: dict[str, Projector], *,
                 clock: Callable[[], datetime] = utcnow, batch: int = 500):
        self.engine = engine
        self.feed = feed
        self.projectors = projectors
        self.clock = clock
        self.batch = batch
        self.checkpoints = Checkpoints(engine, projectors, clock=clock)
        self.rebuilder = Rebuilder(engine, feed, projectors, self.checkpoints, clock=clock)

    def catch_up(self, names: Iterable[str] | None = None, *, max_batches: int | None = None) -> dict[str, int]:
        """Project what the feed has after each checkpoint; the events read per projector.

        Raises ProjectionFailed (after recording it) when a projector cannot project an event."""
        chosen = choose(self.projectors, names)
        self.checkpoints.ensure()
        done = {name: 0 for name in chosen}
        for name in chosen:
            batches = 0
            while max_batches is None or batches < max_batches:
                read = self.step(name)
                if not read:
                    break
                done[name] += read
                batches += 1
        return done

    def step(self, name: str) -> int:
        """Project one batch of the feed for ``name``; the number of events it read.

        The batch is read and projected in a read-only snapshot, then written in a short
        transaction that holds the checkpoint row, and only if nobody moved the checkpoint or
        swapped generations meanwhile: a writing transaction holds the feed back while it is open."""
        projector = self.projectors[name]
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            checkpoint = self.checkpoints.get(conn, name)
            page = self.feed.read_in(conn, after=checkpoint.position, limit=self.batch)
            if not page.events:
                return 0
            streams = self._streams_of(conn, page.events)
        try:
            stream_rows = {stream_id: project(stream_id, stream, [projector])[name]
                           for stream_id, stream in streams.items()}
        except EventNotProjected as error:
            failure = ProjectionFailed(name, error)
            self.checkpoints.record_error(failure)
            log.error("projection_failed", projector=name, position=failure.position,
                      stream_id=failure.stream_id, error=str(failure))
            raise failure from error
        last = page.events[-1]
        with transaction(self.engine) as conn:
            current = self.checkpoints.get(conn, name, lock=True)
            if (current.position, current.generation) != (checkpoint.position, checkpoint.generation):
                return 0  # another runner or a rebuild got there first; the next step starts from theirs
            replace_rows(conn, projector, checkpoint.generation, stream_rows)
            conn.execute(update(projection_checkpoints).where(projection_checkpoints.c.name == name)
                         .values(position=last.position, event_recorded_at=last.recorded_at,
                                 updated_at=self.clock(), failing=False))
        log.info("projection_advanced", projector=name, position=last.position, events=len(page.events),
                 records=len(stream_rows))
        return len(page.events)

    @staticmethod
    def _streams_of(conn: Connection, batch: Sequence[StoredEvent]) -> dict[str, list[StoredEvent]]:
        """Each touched stream's events up to the last of its events in ``batch``."""
        upto: dict[str, int] = {}
        for event in batch:
            upto[event.stream_id] = max(upto.get(event.stream_id, 0), event.version)
        streams: dict[str, list[StoredEvent]] = {stream_id: [] for stream_id in upto}
        for row in conn.execute(select(*EVENT_COLUMNS).where(events.c.stream_id.in_(list(upto)))
                                .order_by(events.c.stream_id, events.c.version)):
            event = stored_event(row)
            if event.version <= upto[event.stream_id]:
                streams[event.stream_id].append(event)
        return streams

    def run(self, stop: threading.Event, *, poll_seconds: float = 1.0, max_backoff: float = 60.0,
            parent_pid: int | None = None) -> None:
        """Follow the feed until ``stop`` is set (or process ``parent_pid`` is gone).

        A projector found at the start of a store that has events is rebuilt first (one pass
        over the store) rather than followed event by event. A failing projector, or a database
        that cannot be reached, is retried with backoff up to ``max_backoff`` seconds."""
        retry_at: dict[str, float] = {}
        backoff: dict[str, float] = {}
        ready = False
        while not stop.is_set() and (parent_pid is None or os.getppid() == parent_pid):
            progressed = False
            for name in self.projectors:
                if retry_at.get(name, 0.0) > time.monotonic():
                    continue
                try:
                    if not ready:
                        self.checkpoints.ensure()
                        ready = True
                    progressed |= self._advance(name) > 0
                    backoff.pop(name, None)
                except Exception as error:  # the worker outlives any one failure; it retries with backoff
                    delay = min(max_backoff, backoff.get(name, poll_seconds / 2) * 2)
                    backoff[name], retry_at[name] = delay, time.monotonic() + delay
                    if isinstance(error, DBAPIError):
                        log.warning("projection_database_error", projector=name, retry_in=delay,
                                    error=str(error.orig).splitlines()[0] if error.orig else str(error))
                    elif not isinstance(error, (ProjectionFailed, ProjectionBusy)):
                        log.exception("projection_unexpected_error", projector=name, retry_in=delay)
            if not progressed:
                stop.wait(poll_seconds)

    def _advance(self, name: str) -> int:
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            at_start = self.checkpoints.get(conn, name).position == 0 and self.feed.head(conn).position > 0
        if at_start:
            self.rebuilder.rebuild([name])
            return 1
        return self.step(name)

    def status(self) -> dict[str, Any]:
        """Each projector's checkpoint, lag (events and seconds) and last error, and the feed's head."""
        now = self.clock()
        out = []
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            head = self.feed.head(conn)
            held_back = 0
            for name, projector in self.projectors.items():
                checkpoint = self.checkpoints.get(conn, name)
                lag: Lag = self.feed.lag(conn, checkpoint.position)
                held_back = max(held_back, lag.held_back)
                out.append({
                    "name": name,
                    "description": projector.description,
                    "generation": checkpoint.generation,
                    "checkpoint": checkpoint.mark().to_dict(),
                    "updated_at": checkpoint.updated_at.isoformat() if checkpoint.updated_at else None,
                    "lag_events": lag.events,
                    "lag_seconds": round(max(0.0, (now - lag.oldest).total_seconds()), 3) if lag.oldest else 0.0,
                    "failing": checkpoint.failing,
                    "last_error": None if checkpoint.last_error is None else {
                        "message": checkpoint.last_error,
                        "position": checkpoint.last_error_position,
                        "at": checkpoint.last_error_at.isoformat() if checkpoint.last_error_at else None,
                    },
                })
            blocker = self.feed.oldest_open_writer(conn) if held_back else None
        return {"head": head.to_dict(),
                "held_back": {"events": held_back, "by_transaction": blocker},
                "projectors": out}
