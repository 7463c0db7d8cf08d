"""Following the feed: one pass over each batch folds its events into every projection.

A step reads a batch of the feed after the checkpoint, with what the projections hold for each
record the batch touches, in one read-only snapshot. It folds each record's new events onto that
(never replaying a stream from its first event), then, in one short transaction holding the
checkpoint row, writes the changed row versions and what the projections now hold, and moves the
checkpoint. Either all of it happens or none, so a runner that stops anywhere resumes from the
checkpoint with no row missed or doubled. A batch never splits one append's events.
"""
from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Callable

import orjson
import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from service.events.db import transaction
from service.events.errors import unavailable_reason
from service.events.event import StoredEvent
from service.events.feed import Feed, Mark
from service.projections.checkpoints import Checkpoints, ProjectionFailed
from service.projections.projectors import Changes, EventNotProjected, Projector, fold, start
from service.projections.rebuild import ProjectionBusy, Rebuilder
from service.projections.rows import apply_changes, load_states, save_states, state_json
from service.rounds import keep_going
from service.times import utcnow

log = structlog.get_logger("casestudies.projections")

HELD_IN_MEMORY = 20_000  # records whose projected state a runner keeps between batches
APPEND_MAX = 100  # events in one append (service/events/schemas.py's MAX_BATCH), so a batch can end with one


class ProjectionRunner:
    """Keeps the projections' tables in step with the feed."""

    def __init__(self, engine: Engine, feed: Feed, projectors: dict[str, Projector], *,
                 clock: Callable[[], datetime] = utcnow, batch: int = 2000):
        self.engine = engine
        self.feed = feed
        self.projectors = projectors
        self.clock = clock
        self.batch = batch
        self.checkpoints = Checkpoints(engine, clock=clock)
        self.rebuilder = Rebuilder(engine, feed, projectors, self.checkpoints, clock=clock)
        # What this runner last wrote for each record (as the JSON it wrote: one object per record,
        # which keeps memory small and costs the garbage collector nothing), good while the checkpoint
        # is still the one it wrote with: a batch then reads only the records it has not.
        self._held: dict[str, str] = {}
        self._held_at: tuple[int, int] | None = None

    def catch_up(self, *, max_batches: int | None = None) -> int:
        """Project what the feed has after the checkpoint; the number of events read.

        Raises ProjectionFailed (after recording it) when an event cannot be projected."""
        self.checkpoints.ensure()
        done = batches = 0
        while max_batches is None or batches < max_batches:
            read = self.step()
            if not read:
                break
            done += read
            batches += 1
        return done

    def step(self) -> int:
        """Project one batch of the feed; the number of events it read.

        The batch is read and folded in a read-only snapshot, then written in a short transaction
        that holds the checkpoint row, and only if nobody moved the checkpoint or swapped
        generations meanwhile: a writing transaction holds the feed back while it is open."""
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            checkpoint = self.checkpoints.get(conn)
            batch = self._batch(conn, checkpoint.position)
            if not batch:
                return 0
            streams: dict[str, list[StoredEvent]] = {}
            for event in batch:
                streams.setdefault(event.stream_id, []).append(event)
            if self._held_at != (checkpoint.position, checkpoint.generation):
                self._forget()
            held = {stream_id: orjson.loads(self._held.pop(stream_id)) for stream_id in streams
                    if stream_id in self._held}
            held.update(load_states(conn, checkpoint.generation, [s for s in streams if s not in held]))
        changes = Changes()
        chosen = list(self.projectors.values())
        try:
            folded = [(stream_id, events[-1].version,
                       state_json(fold(stream_id, held.get(stream_id) or start(stream_id), events, chosen, changes)))
                      for stream_id, events in streams.items()]
        except EventNotProjected as error:
            self._forget()  # what was folded before the failure is not what is stored
            failure = ProjectionFailed(error)
            self.checkpoints.record_error(failure)
            log.error("projection_failed", position=failure.position, stream_id=failure.stream_id, error=str(failure))
            raise failure from error
        last = batch[-1]
        try:
            with transaction(self.engine) as conn:
                current = self.checkpoints.get(conn, lock=True)
                if (current.position, current.generation) != (checkpoint.position, checkpoint.generation):
                    self._forget()
                    return 0  # another runner or a rebuild got there first; the next step starts from theirs
                for table in changes.by_table:
                    apply_changes(conn, table, checkpoint.generation, changes)
                save_states(conn, checkpoint.generation, folded)
                self.checkpoints.move(conn, Mark(last.position, last.recorded_at))
        except BaseException:
            self._forget()
            raise
        self._remember(folded, (last.position, checkpoint.generation))
        log.info("projection_advanced", position=last.position, events=len(batch), records=len(streams))
        return len(batch)

    def _remember(self, folded: list[tuple[str, int, str]], at: tuple[int, int]) -> None:
        for stream_id, _version, held in folded:
            self._held[stream_id] = held
        while len(self._held) > HELD_IN_MEMORY:
            del self._held[next(iter(self._held))]
        self._held_at = at

    def _forget(self) -> None:
        self._held.clear()
        self._held_at = None

    def _batch(self, conn: Connection, after: int) -> list[StoredEvent]:
        """Up to ``batch`` events after position ``after``, and the rest of the append the last one
        belongs to: an append's events share a stream and a recorded time, and are read together."""
        page = self.feed.read_in(conn, after=after, limit=self.batch).events
        if len(page) < self.batch:
            return page
        last = page[-1]
        rest = self.feed.read_in(conn, after=last.position, limit=APPEND_MAX).events
        for event in rest:
            if (event.stream_id, event.recorded_at) != (last.stream_id, last.recorded_at):
                break
            page.append(event)
        return page

    def run(self, stop: threading.Event, *, poll_seconds: float = 1.0, max_backoff: float = 60.0,
            parent_pid: int | None = None, on_round: Callable[[], None] | None = None) -> None:
        """Follow the feed until ``stop`` is set (or process ``parent_pid`` is gone).

        Projections found at the start of a store that has events are rebuilt first (one pass
        over the store) rather than followed batch by batch. A failing batch, or a database that
        cannot be reached, is retried with backoff up to ``max_backoff`` seconds. ``on_round`` is
        called after each round that did not fail (idle ones too)."""
        ready = False

        def work() -> bool:
            nonlocal ready
            if not ready:
                self.checkpoints.ensure()
                ready = True
            return bool(self._advance())

        def failed(error: Exception, delay: float) -> None:
            if isinstance(error, DBAPIError):
                log.warning("projection_database_error", retry_in=delay, error=unavailable_reason(error))
            elif not isinstance(error, (ProjectionFailed, ProjectionBusy)):  # those are recorded already
                log.exception("projection_unexpected_error", retry_in=delay)

        keep_going(stop, work, poll_seconds=poll_seconds, max_backoff=max_backoff, failed=failed,
                   parent_pid=parent_pid, on_round=on_round)

    def _advance(self) -> int:
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            at_start = self.checkpoints.get(conn).position == 0 and self.feed.head(conn).position > 0
        if at_start:
            self.rebuilder.rebuild()
            return 1
        return self.step()

    def status(self) -> dict[str, Any]:
        """The checkpoint, the lag behind the feed (events and seconds), the last error, and the feed's head."""
        now = self.clock()
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            head = self.feed.head(conn)
            checkpoint = self.checkpoints.get(conn)
            lag = self.feed.lag(conn, checkpoint.position)
            blocker = self.feed.oldest_open_writer(conn) if lag.held_back else None
        shared = {
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
        }
        return {"head": head.to_dict(),
                "held_back": {"events": lag.held_back, "by_transaction": blocker},
                **shared,
                "projectors": [{"name": name, "description": projector.description, **shared}
                               for name, projector in self.projectors.items()]}
