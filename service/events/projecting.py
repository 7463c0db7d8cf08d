"""Running projectors: follow the feed with a checkpoint, rebuild, verify, and say how far each is.

Catching up reads a batch of the feed after a projector's checkpoint and, in one transaction
holding the checkpoint row, replaces the rows of every record the batch touches (projected
from that record's events up to the batch) and moves the checkpoint. Either both happen or
neither, so a projector that stops anywhere resumes from its checkpoint with no row missed or
doubled, and running a batch twice gives the same rows.

A rebuild projects every stream of one snapshot of the store, one stream in memory at a time,
into the next generation of the tables, which readers do not see; one update then makes it
the live generation, with the checkpoint at the snapshot's high-water mark, and the old
generation is deleted. Verify rebuilds into a scratch generation up to the live checkpoint and
compares the two.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

import structlog
from psycopg.types.json import Jsonb
from sqlalchemy import JSON,  Connection, Engine, delete, except_, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from service.events.db import transaction
from service.events.feed import Feed, Lag, Mark
from service.events.projectors import Projector, Rows, project
from service.events.store import EVENT_COLUMNS, StoredEvent, stored_event
from service.events.tables import events, projection_checkpoints, utcnow

log = structlog.get_logger("casestudies.projections")

SCRATCH_GENERATION = -1  # where verify rebuilds
FLUSH_ROWS = 5_000  # rows a rebuild buffers before writing them


@dataclass(frozen=True)
class Checkpoint:
    """How far a projector has read, which generation of its tables is live, and its last error."""

    name: str
    generation: int
    position: int
    event_recorded_at: datetime | None
    updated_at: datetime | None
    last_error: str | None
    error_position: int | None
    error_at: datetime | None

    @property
    def failing(self) -> bool:
        """True while the checkpoint has not got past the event that last failed."""
        return self.error_position is not None and self.error_position > self.position

    def mark(self) -> Mark:
        return Mark(self.position, self.event_recorded_at)


class ProjectionFailed(Exception):
    """A projector could not project a stream; nothing of the batch was written."""

    def __init__(self, name: str, position: int, stream_id: str, error: Exception):
        super().__init__(f"{name}: stream {stream_id} (event at position {position}): "
                         f"{type(error).__name__}: {error}")
        self.name, self.position, self.stream_id = name, position, stream_id


@dataclass(frozen=True)
class Difference:
    """A row the live model and a fresh rebuild disagree on (None: that side has no such row)."""

    projector: str
    table: str
    key: dict[str, Any]
    live: dict[str, Any] | None
    rebuilt: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"projector": self.projector, "table": self.table, "key": self.key,
                "live": self.live, "rebuilt": self.rebuilt}


@dataclass(frozen=True)
class VerifyResult:
    checked_to: Mark
    differences: list[Difference]
    skipped: int  # records that changed while verify ran, left for the next run


def _new_checkpoint(name: str) -> Checkpoint:
    return Checkpoint(name, 1, 0, None, None, None, None, None)


class ProjectionRunner:
    """Keeps the projectors' tables in step with the feed."""

    def __init__(self, engine: Engine, feed: Feed, projectors: dict[str, Projector], *,
                 clock: Callable[[], datetime] = utcnow, batch: int = 500):
        self.engine = engine
        self.feed = feed
        self.projectors = projectors
        self.clock = clock
        self.batch = batch

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, conn: Connection, name: str, *, lock: bool = False) -> Checkpoint:
        """The projector's checkpoint (a new projector's is at the start, generation 1)."""
        query = select(projection_checkpoints).where(projection_checkpoints.c.name == name)
        row = conn.execute(query.with_for_update() if lock else query).first()
        return Checkpoint(**row._mapping) if row else _new_checkpoint(name)

    def ensure_checkpoints(self) -> None:
        """Give every projector a checkpoint row, so that it can be locked."""
        for name in self.projectors:
            try:
                with transaction(self.engine) as conn:
                    if conn.execute(select(projection_checkpoints.c.name)
                                    .where(projection_checkpoints.c.name == name)).first() is None:
                        conn.execute(projection_checkpoints.insert().values(
                            name=name, generation=1, position=0, updated_at=self.clock()))
            except IntegrityError:
                pass  # another process made it first

    def _names(self, names: Iterable[str] | None) -> list[str]:
        chosen = list(names) if names else list(self.projectors)
        unknown = [name for name in chosen if name not in self.projectors]
        if unknown:
            raise KeyError(f"no projector named {', '.join(unknown)}; there are {', '.join(self.projectors)}")
        return chosen

    # -- following the feed ---------------------------------------------------------------
    def catch_up(self, names: Iterable[str] | None = None, *, max_batches: int | None = None) -> dict[str, int]:
        """Project what the feed has after each checkpoint; the events read per projector.

        Raises ProjectionFailed (after recording it) when a projector cannot project an event."""
        chosen = self._names(names)
        self.ensure_checkpoints()
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
        """Project one batch of the feed for ``name``; the number of events it read."""
        projector = self.projectors[name]
        try:
            with transaction(self.engine) as conn:
                checkpoint = self.checkpoint(conn, name, lock=True)
                page = self.feed.read_in(conn, after=checkpoint.position, limit=self.batch)
                if not page.events:
                    return 0
                last = page.events[-1]
                stream_rows = self._project_batch(conn, projector, page.events)
                _replace(conn, projector, checkpoint.generation, stream_rows)
                conn.execute(update(projection_checkpoints).where(projection_checkpoints.c.name == name)
                             .values(position=last.position, event_recorded_at=last.recorded_at,
                                     updated_at=self.clock()))
        except ProjectionFailed as failure:
            self._record_error(failure)
            log.error("projection_failed", projector=name, position=failure.position,
                      stream_id=failure.stream_id, error=str(failure))
            raise
        log.info("projection_advanced", projector=name, position=last.position, events=len(page.events),
                 records=len(stream_rows))
        return len(page.events)

    def _project_batch(self, conn: Connection, projector: Projector,
                       batch: Sequence[StoredEvent]) -> dict[str, Rows]:
        """Each touched record's rows, projected from its events up to the last one in ``batch``."""
        upto: dict[str, int] = {}
        first_position: dict[str, int] = {}
        for event in batch:
            upto[event.stream_id] = max(upto.get(event.stream_id, 0), event.version)
            first_position.setdefault(event.stream_id, event.position)
        streams: dict[str, list[StoredEvent]] = {stream_id: [] for stream_id in upto}
        for row in conn.execute(select(*EVENT_COLUMNS).where(events.c.stream_id.in_(list(upto)))
                                .order_by(events.c.stream_id, events.c.version)):
            event = stored_event(row)
            if event.version <= upto[event.stream_id]:
                streams[event.stream_id].append(event)
        out: dict[str, Rows] = {}
        for stream_id, stream in streams.items():
            try:
                out[stream_id] = project(stream_id, stream, [projector])[projector.name]
            except Exception as error:  # any failure to project is reported with its event
                raise ProjectionFailed(projector.name, first_position[stream_id], stream_id, error) from error
        return out

    def _record_error(self, failure: ProjectionFailed) -> None:
        with transaction(self.engine) as conn:
            conn.execute(update(projection_checkpoints).where(projection_checkpoints.c.name == failure.name)
                         .values(last_error=str(failure)[:2000], error_position=failure.position,
                                 error_at=self.clock()))

    def run(self, stop: threading.Event, *, poll_seconds: float = 1.0, max_backoff: float = 60.0) -> None:
        """Follow the feed until ``stop`` is set; a failing projector is retried with backoff."""
        self.ensure_checkpoints()
        retry_at: dict[str, float] = {}
        backoff: dict[str, float] = {}
        while not stop.is_set():
            progressed = False
            for name in self.projectors:
                if retry_at.get(name, 0.0) > time.monotonic():
                    continue
                try:
                    progressed |= self.step(name) > 0
                    backoff.pop(name, None)
                except (ProjectionFailed, DBAPIError) as error:
                    delay = min(max_backoff, backoff.get(name, poll_seconds / 2) * 2)
                    backoff[name], retry_at[name] = delay, time.monotonic() + delay
                    if isinstance(error, DBAPIError):
                        log.warning("projection_database_error", projector=name, retry_in=delay,
                                    error=str(error.orig).splitlines()[0] if error.orig else str(error))
            if not progressed:
                stop.wait(poll_seconds)

    # -- rebuild and verify ---------------------------------------------------------------
    def rebuild(self, names: Iterable[str] | None = None, *,
                progress: Callable[[int], None] | None = None, total: Callable[[int], None] | None = None) -> Mark:
        """Project the whole store afresh and swap the result in; the mark it was rebuilt to."""
        chosen = [self.projectors[name] for name in self._names(names)]
        self.ensure_checkpoints()
        with transaction(self.engine) as conn:
            generations = {p.name: self._unused_generation(conn, p) for p in chosen}
        mark = self._write_generation(chosen, generations, upto=None, progress=progress, total=total)
        with transaction(self.engine) as conn:
            old = {}
            for projector in chosen:
                old[projector.name] = self.checkpoint(conn, projector.name, lock=True).generation
                conn.execute(update(projection_checkpoints)
                             .where(projection_checkpoints.c.name == projector.name)
                             .values(generation=generations[projector.name], position=mark.position,
                                     event_recorded_at=mark.recorded_at, updated_at=self.clock(),
                                     last_error=None, error_position=None, error_at=None))
        with transaction(self.engine) as conn:
            for projector in chosen:
                _drop_generation(conn, projector, old[projector.name])
        log.info("projections_rebuilt", projectors=[p.name for p in chosen], position=mark.position)
        return mark

    def verify(self, names: Iterable[str] | None = None, *,
               progress: Callable[[int], None] | None = None,
               total: Callable[[int], None] | None = None) -> dict[str, VerifyResult]:
        """Rebuild each projector into scratch tables up to its checkpoint and compare with the live rows."""
        results = {}
        self.ensure_checkpoints()
        for name in self._names(names):
            projector = self.projectors[name]
            with transaction(self.engine, write=False) as conn:
                start = self.checkpoint(conn, name)
            with transaction(self.engine) as conn:
                _drop_generation(conn, projector, SCRATCH_GENERATION)
            try:
                self._write_generation([projector], {name: SCRATCH_GENERATION}, upto=start.position,
                                       progress=progress, total=total)
                results[name] = self._compare(projector, start)
            finally:
                with transaction(self.engine) as conn:
                    _drop_generation(conn, projector, SCRATCH_GENERATION)
        return results

    def _unused_generation(self, conn: Connection, projector: Projector) -> int:
        """The next generation, cleared of anything an interrupted rebuild left behind."""
        generation = self.checkpoint(conn, projector.name).generation + 1
        _drop_generation(conn, projector, generation)
        return generation

    def _write_generation(self, chosen: Sequence[Projector], generations: dict[str, int], *, upto: int | None,
                          progress: Callable[[int], None] | None,
                          total: Callable[[int], None] | None) -> Mark:
        """Project every stream of one snapshot (up to feed position ``upto``) into ``generations``."""
        pending: dict[str, dict[str, Rows]] = {p.name: {} for p in chosen}
        buffered = 0

        def flush() -> None:
            nonlocal buffered
            with transaction(self.engine) as writer:
                for projector in chosen:
                    _insert(writer, projector, generations[projector.name], pending[projector.name])
                    pending[projector.name] = {}
            buffered = 0

        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as reader:
            mark = self.feed.head_in(reader) if upto is None else Mark(upto, None)  # verify reports its own
            condition = self.feed.readable() if upto is None else self.feed.until(reader, upto)
            if total is not None:
                total(reader.execute(select(func.count()).select_from(events).where(condition)).scalar_one())
            query = select(*EVENT_COLUMNS).where(condition).order_by(events.c.stream_id, events.c.version)
            result = reader.execution_options(stream_results=True, yield_per=2000).execute(query)
            for stream_id, stream in _streams(stored_event(row) for row in result):
                rows = project(stream_id, stream, chosen)
                for projector in chosen:
                    pending[projector.name][stream_id] = rows[projector.name]
                    buffered += sum(len(table_rows) for table_rows in rows[projector.name].values())
                if buffered >= FLUSH_ROWS:
                    flush()
                if progress is not None:
                    progress(len(stream))
        flush()
        return mark

    def _compare(self, projector: Projector, start: Checkpoint) -> VerifyResult:
        with transaction(self.engine) as conn:
            now = self.checkpoint(conn, projector.name, lock=True)  # holds the runner off while comparing
            changed: set[str] = set()
            if now.position != start.position:
                moved = select(events.c.stream_id).distinct().where(
                    self.feed.until(conn, now.position), ~self.feed.until(conn, start.position))
                changed = set(conn.execute(moved).scalars())
            differences: list[Difference] = []
            for table in projector.tables:
                differences.extend(_differences(conn, projector.name, table, now.generation, changed))
        return VerifyResult(start.mark(), differences, len(changed))

    # -- reading --------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Each projector's checkpoint, lag (events and seconds) and last error."""
        now = self.clock()
        out = []
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            head = self.feed.head_in(conn)
            for name, projector in self.projectors.items():
                checkpoint = self.checkpoint(conn, name)
                lag: Lag = self.feed.lag(conn, checkpoint.position)
                out.append({
                    "name": name,
                    "description": projector.description,
                    "generation": checkpoint.generation,
                    "checkpoint": checkpoint.mark().to_dict(),
                    "updated_at": checkpoint.updated_at.isoformat() if checkpoint.updated_at else None,
                    "head": head.to_dict(),
                    "lag_events": lag.events,
                    "lag_seconds": round((now - lag.oldest).total_seconds(), 3) if lag.oldest else 0.0,
                    "failing": checkpoint.failing,
                    "last_error": None if checkpoint.last_error is None else {
                        "message": checkpoint.last_error,
                        "position": checkpoint.error_position,
                        "at": checkpoint.error_at.isoformat() if checkpoint.error_at else None,
                    },
                })
        return out


def _streams(rows: Iterable[StoredEvent]) -> Iterable[tuple[str, list[StoredEvent]]]:
    current: list[StoredEvent] = []
    for event in rows:
        if current and current[0].stream_id != event.stream_id:
            yield current[0].stream_id, current
            current = []
        current.append(event)
    if current:
        yield current[0].stream_id, current


def _insert(conn: Connection, projector: Projector, generation: int, stream_rows: dict[str, Rows]) -> None:
    for table in projector.tables:
        rows = [row for rows in stream_rows.values() for row in rows.get(table, ())]
        if not rows:
            continue
        if conn.dialect.name == "postgresql":
            _copy(conn, table, generation, rows)
        else:
            conn.execute(table.insert(), [{**row, "generation": generation} for row in rows])


def _copy(conn: Connection, table, generation: int, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL's COPY, in the connection's transaction: a rebuild writes millions of rows,
    and row-by-row inserts cost more than projecting them."""
    columns = [column.name for column in table.c if column.name != "generation"]
    json_columns = {column.name for column in table.c if isinstance(column.type, JSON)}
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table.name} (generation, {', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([generation, *(Jsonb(row[c]) if c in json_columns else row[c] for c in columns)])


def _replace(conn: Connection, projector: Projector, generation: int, stream_rows: dict[str, Rows]) -> None:
    ids = list(stream_rows)
    for table in projector.tables:
        conn.execute(delete(table).where(table.c.generation == generation, table.c.id.in_(ids)))
    _insert(conn, projector, generation, stream_rows)


def _drop_generation(conn: Connection, projector: Projector, generation: int) -> None:
    for table in projector.tables:
        conn.execute(delete(table).where(table.c.generation == generation))


def _differences(conn: Connection, name: str, table, live_generation: int, skip: set[str]) -> list[Difference]:
    columns = [column for column in table.c if column.name != "generation"]
    key_names = [column.name for column in table.primary_key.columns if column.name != "generation"]

    def side(generation: int):
        query = select(*columns).where(table.c.generation == generation)
        return query.where(table.c.id.not_in(list(skip))) if skip else query

    live_only = conn.execute(except_(side(live_generation), side(SCRATCH_GENERATION))).mappings().all()
    rebuilt_only = conn.execute(except_(side(SCRATCH_GENERATION), side(live_generation))).mappings().all()
    found: dict[tuple, dict[str, Any]] = {}
    for label, rows in (("live", live_only), ("rebuilt", rebuilt_only)):
        for row in rows:
            key = tuple(row[k] for k in key_names)
            found.setdefault(key, {"live": None, "rebuilt": None})[label] = _plain(dict(row))
    return [Difference(name, table.name, dict(zip(key_names, key)), sides["live"], sides["rebuilt"])
            for key, sides in sorted(found.items(), key=lambda item: tuple(map(str, item[0])))]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
