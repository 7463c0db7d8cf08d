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

import hashlib
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

import structlog
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Connection, Engine, delete, except_, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from service.events.db import is_sqlite, transaction
from service.events.feed import Feed, Lag, Mark
from service.events.projectors import EventNotProjected, Projector, Rows, project
from service.events.store import EVENT_COLUMNS, StoredEvent, group_streams, stored_event
from service.events.tables import events, projection_checkpoints
from service.times import utcnow

log = structlog.get_logger("casestudies.projections")

SCRATCH_GENERATION = -1  # where verify rebuilds (one verify or rebuild per projector at a time)
FLUSH_ROWS = 5_000  # rows a rebuild buffers before writing them
DELETE_CHUNK = 2_000  # records whose old rows one transaction deletes after a swap


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


class ProjectionBusy(Exception):
    """Another rebuild or verify of the projector is running."""


@dataclass(frozen=True)
class Difference:
    """A row the live model and a fresh rebuild disagree on (None: that side has no such row)."""

    projector: str
    table: str
    key: dict[str, Any]
    live: dict[str, Any] | None
    rebuilt: dict[str, Any] | None


@dataclass(frozen=True)
class VerifyResult:
    checked_to: Mark
    differences: list[Difference]
    skipped: int  # records that changed while verify ran, left for the next run


def _new_checkpoint(name: str) -> Checkpoint:
    return Checkpoint(name, 1, 0, None, None, False, None, None, None)


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
                            name=name, generation=1, position=0, updated_at=self.clock(), failing=False))
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
        """Project one batch of the feed for ``name``; the number of events it read.

        The batch is read and projected in a read-only snapshot, then written in a short
        transaction that holds the checkpoint row, and only if nobody moved the checkpoint or
        swapped generations meanwhile: a writing transaction holds the feed back while it is open."""
        projector = self.projectors[name]
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            checkpoint = self.checkpoint(conn, name)
            page = self.feed.read_in(conn, after=checkpoint.position, limit=self.batch)
            if not page.events:
                return 0
            streams = self._streams_of(conn, page.events)
        try:
            stream_rows = {stream_id: project(stream_id, stream, [projector])[name]
                           for stream_id, stream in streams.items()}
        except EventNotProjected as error:
            failure = ProjectionFailed(name, error)
            self._record_error(failure)
            log.error("projection_failed", projector=name, position=failure.position,
                      stream_id=failure.stream_id, error=str(failure))
            raise failure from error
        last = page.events[-1]
        with transaction(self.engine) as conn:
            current = self.checkpoint(conn, name, lock=True)
            if (current.position, current.generation) != (checkpoint.position, checkpoint.generation):
                return 0  # another runner or a rebuild got there first; the next step starts from theirs
            _replace(conn, projector, checkpoint.generation, stream_rows)
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

    def _record_error(self, failure: ProjectionFailed) -> None:
        with transaction(self.engine) as conn:
            conn.execute(update(projection_checkpoints).where(projection_checkpoints.c.name == failure.name)
                         .values(failing=True, last_error=str(failure)[:2000],
                                 last_error_position=failure.position, last_error_at=self.clock()))

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
                        self.ensure_checkpoints()
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
            at_start = self.checkpoint(conn, name).position == 0 and self.feed.head_in(conn).position > 0
        if at_start:
            self.rebuild([name])
            return 1
        return self.step(name)

    # -- rebuild and verify ---------------------------------------------------------------
    def rebuild(self, names: Iterable[str] | None = None, *,
                progress: Callable[[int], None] | None = None, total: Callable[[int], None] | None = None) -> Mark:
        """Project the whole store afresh and swap the result in; the mark it was rebuilt to.

        Raises ProjectionBusy when another rebuild or verify of one of them is running."""
        chosen = [self.projectors[name] for name in self._names(names)]
        self.ensure_checkpoints()
        with ExitStack() as held:
            for projector in chosen:
                held.enter_context(self._exclusive(projector.name))
            generations = {}
            for projector in chosen:
                live = self._checkpoint_now(projector.name).generation
                self._drop_all_but(projector, live)  # what an interrupted rebuild or verify left
                generations[projector.name] = live + 1
            try:
                mark = self._write_generation(chosen, generations, upto=None, progress=progress, total=total)
            except ProjectionFailed as failure:
                for projector in chosen:
                    self._record_error(ProjectionFailed(projector.name, failure.__cause__))
                raise
            old = {}
            with transaction(self.engine) as conn:
                for projector in chosen:
                    old[projector.name] = self.checkpoint(conn, projector.name, lock=True).generation
                    conn.execute(update(projection_checkpoints)
                                 .where(projection_checkpoints.c.name == projector.name)
                                 .values(generation=generations[projector.name], position=mark.position,
                                         event_recorded_at=mark.recorded_at, updated_at=self.clock(),
                                         failing=False))
            for projector in chosen:
                self._drop_generation(projector, old[projector.name])
                self._analyze(projector)
        log.info("projections_rebuilt", projectors=[p.name for p in chosen], position=mark.position)
        return mark

    def verify(self, names: Iterable[str] | None = None, *,
               progress: Callable[[int], None] | None = None,
               total: Callable[[int], None] | None = None) -> dict[str, VerifyResult]:
        """Rebuild each projector into scratch tables up to its checkpoint and compare with the live rows.

        Raises ProjectionBusy when another rebuild or verify of one of them is running."""
        results = {}
        self.ensure_checkpoints()
        for name in self._names(names):
            projector = self.projectors[name]
            with self._exclusive(name):
                start = self._checkpoint_now(name)
                self._drop_all_but(projector, start.generation)
                try:
                    self._write_generation([projector], {name: SCRATCH_GENERATION}, upto=start.position,
                                           progress=progress, total=total)
                    results[name] = self._compare(projector, start)
                finally:
                    self._drop_generation(projector, SCRATCH_GENERATION)
        return results

    def _checkpoint_now(self, name: str) -> Checkpoint:
        with transaction(self.engine, write=False) as conn:
            return self.checkpoint(conn, name)

    @contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """Hold, for the block, the one right to rebuild or verify projector ``name``.

        PostgreSQL: a session advisory lock on a connection held for the block; SQLite: an
        exclusive lock on a file beside the database. Both go with the process if it dies."""
        if is_sqlite(self.engine):
            database = make_url(str(self.engine.url)).database
            if not database or database == ":memory:":
                yield
                return
            import fcntl

            with open(f"{database}.{name}.rebuild-lock", "w") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ProjectionBusy(f"a rebuild or verify of {name} is running") from None
                yield
            return
        key = int.from_bytes(hashlib.sha256(f"casestudies.projection.{name}".encode()).digest()[:8], "big",
                             signed=True)
        with self.engine.connect() as conn:  # autocommit: holding it opens no transaction
            if not conn.execute(select(func.pg_try_advisory_lock(key))).scalar():
                raise ProjectionBusy(f"a rebuild or verify of {name} is running")
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(key)))

    def _analyze(self, projector: Projector) -> None:
        """Give PostgreSQL's planner statistics for tables a rebuild has just filled, rather than
        leave queries planned for empty tables until autovacuum (if it is on) gets to them."""
        if is_sqlite(self.engine):
            return
        with self.engine.connect() as conn:  # autocommit: ANALYZE of each table on its own
            for table in projector.tables:
                conn.exec_driver_sql(f"ANALYZE {table.name}")

    def _drop_all_but(self, projector: Projector, live: int) -> None:
        with transaction(self.engine) as conn:
            for table in projector.tables:
                conn.execute(delete(table).where(table.c.generation != live))

    def _drop_generation(self, projector: Projector, generation: int) -> None:
        """Delete a generation's rows a chunk of records per transaction, so as not to hold the feed back."""
        for table in projector.tables:
            while True:
                with transaction(self.engine) as conn:
                    ids = select(table.c.id).where(table.c.generation == generation).limit(DELETE_CHUNK)
                    if conn.execute(delete(table).where(table.c.generation == generation,
                                                        table.c.id.in_(ids.scalar_subquery()))).rowcount == 0:
                        break

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
            for stream_id, stream in group_streams(stored_event(row) for row in result):
                try:
                    rows = project(stream_id, stream, chosen)
                except EventNotProjected as error:
                    raise ProjectionFailed(", ".join(p.name for p in chosen), error) from error
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
        # One read-only snapshot: the live rows and the checkpoint they were committed with agree,
        # and no lock is taken, so the runner keeps going.
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            now = self.checkpoint(conn, projector.name)
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
    def status(self) -> dict[str, Any]:
        """Each projector's checkpoint, lag (events and seconds) and last error, and the feed's head."""
        now = self.clock()
        out = []
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            head = self.feed.head_in(conn)
            held_back = 0
            for name, projector in self.projectors.items():
                checkpoint = self.checkpoint(conn, name)
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
