"""Rebuild and verify: project the whole store afresh into a generation readers do not see.

A rebuild folds every stream of one snapshot of the store from its first event, one stream in
memory at a time, into the next generation of every projection table; one update then makes it
the live generation, with the checkpoint at the snapshot's high-water mark, and the old
generation is deleted. Verify rebuilds into a scratch generation up to the live checkpoint and
compares the two, row version by row version. One rebuild or verify runs at a time.
"""
from __future__ import annotations

import hashlib
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

import structlog
from sqlalchemy import Connection, Engine, Table, delete, except_, func, select
from sqlalchemy.engine import make_url

from service.events.db import is_sqlite, transaction
from service.events.event import EVENT_COLUMNS, group_streams, stored_event
from service.events.feed import Feed, Mark
from service.events.tables import events
from service.projections.checkpoints import Checkpoint, Checkpoints, ProjectionFailed
from service.projections.projectors import Changes, EventNotProjected, Projector, choose, fold, start
from service.projections.rows import add_rows, add_states, layout, state_json
from service.projections.tables import PROJECTION_TABLES, record_states
from service.times import utcnow

log = structlog.get_logger("casestudies.projections")

SCRATCH_GENERATION = -1  # where verify rebuilds (one verify or rebuild at a time)
FLUSH_ROWS = 20_000  # rows a rebuild buffers before writing them
FLUSH_STATES = 2_000  # records whose held state a rebuild buffers before writing them
DELETE_CHUNK = 2_000  # records whose old rows one transaction deletes after a swap
HELD = "record_states"  # what verify calls what the projections hold for each record


class ProjectionBusy(Exception):
    """Another rebuild or verify is running."""


@dataclass(frozen=True)
class Difference:
    """A row the live projection and a fresh rebuild disagree on (None: that side has no such row)."""

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


class Rebuilder:
    """Rebuilds and verifies the projections' tables from the whole store."""

    def __init__(self, engine: Engine, feed: Feed, projectors: dict[str, Projector], checkpoints: Checkpoints, *,
                 clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.feed = feed
        self.projectors = projectors
        self.checkpoints = checkpoints
        self.clock = clock

    def rebuild(self, *, progress: Callable[[int], None] | None = None,
                total: Callable[[int], None] | None = None) -> Mark:
        """Project the whole store afresh and swap the result in; the mark it was rebuilt to.

        Raises ProjectionBusy when another rebuild or verify is running."""
        self.checkpoints.ensure()
        with self._exclusive():
            live = self.checkpoints.now().generation
            self._drop_all_but(live)  # what an interrupted rebuild or verify left
            try:
                mark = self._write_generation(live + 1, upto=None, progress=progress, total=total)
            except ProjectionFailed as failure:
                self.checkpoints.record_error(failure)
                raise
            with transaction(self.engine) as conn:
                old = self.checkpoints.get(conn, lock=True).generation
                self.checkpoints.move(conn, mark, generation=live + 1)
            self._drop_generation(old)
            self._analyze()
        log.info("projections_rebuilt", position=mark.position)
        return mark

    def verify(self, names: Iterable[str] | None = None, *,
               progress: Callable[[int], None] | None = None,
               total: Callable[[int], None] | None = None) -> dict[str, VerifyResult]:
        """Rebuild into scratch tables up to the checkpoint and compare the chosen projectors' rows (and
        what the projections hold for each record) with the live ones.

        Raises ProjectionBusy when another rebuild or verify is running."""
        chosen = choose(self.projectors, names)
        self.checkpoints.ensure()
        with self._exclusive():
            begun = self.checkpoints.now()
            self._drop_all_but(begun.generation)
            try:
                self._write_generation(SCRATCH_GENERATION, upto=begun.position, progress=progress, total=total)
                return self._compare(chosen, begun)
            finally:
                self._drop_generation(SCRATCH_GENERATION)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold, for the block, the one right to rebuild or verify.

        PostgreSQL: a session advisory lock on a connection held for the block; SQLite: an
        exclusive lock on a file beside the database. Both go with the process if it dies."""
        if is_sqlite(self.engine):
            database = make_url(str(self.engine.url)).database
            if not database or database == ":memory:":
                yield
                return
            import fcntl

            with open(f"{database}.projections.rebuild-lock", "w") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ProjectionBusy("a rebuild or verify of the projections is running") from None
                yield
            return
        key = int.from_bytes(hashlib.sha256(b"casestudies.projections.rebuild").digest()[:8], "big", signed=True)
        with self.engine.connect() as conn:  # autocommit: holding it opens no transaction
            if not conn.execute(select(func.pg_try_advisory_lock(key))).scalar():
                raise ProjectionBusy("a rebuild or verify of the projections is running")
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(key)))

    def _analyze(self) -> None:
        """Give PostgreSQL's planner statistics for tables a rebuild has just filled, rather than
        leave queries planned for empty tables until autovacuum (if it is on) gets to them."""
        if is_sqlite(self.engine):
            return
        with self.engine.connect() as conn:  # autocommit: ANALYZE of each table on its own
            for table in PROJECTION_TABLES:
                conn.exec_driver_sql(f"ANALYZE {table.name}")

    def _drop_all_but(self, live: int) -> None:
        with transaction(self.engine) as conn:
            for table in PROJECTION_TABLES:
                conn.execute(delete(table).where(table.c.generation != live))

    def _drop_generation(self, generation: int) -> None:
        """Delete a generation's rows a chunk of records per transaction, so as not to hold the feed back."""
        for table in PROJECTION_TABLES:
            while True:
                with transaction(self.engine) as conn:
                    ids = (select(table.c.id).where(table.c.generation == generation).distinct()
                           .limit(DELETE_CHUNK))
                    if conn.execute(delete(table).where(table.c.generation == generation,
                                                        table.c.id.in_(ids.scalar_subquery()))).rowcount == 0:
                        break

    def _write_generation(self, generation: int, *, upto: int | None, progress: Callable[[int], None] | None,
                          total: Callable[[int], None] | None) -> Mark:
        """Fold every stream of one snapshot (up to feed position ``upto``) into ``generation``.

        The rows are written by a second thread, one buffer while the next is folded, so that the
        database's work on them overlaps this thread's."""
        chosen = list(self.projectors.values())
        shapes = [layout(table) for projector in chosen for table in projector.tables]
        pending: dict[Table, list[tuple]] = {shape.table: [] for shape in shapes}
        states: list[tuple[str, int, dict[str, Any]]] = []
        buffered = 0
        with _Writer(self.engine, generation) as writer:
            with transaction(self.engine, isolation="REPEATABLE READ", write=False) as reader:
                mark = self.feed.head(reader) if upto is None else Mark(upto, None)  # verify reports its own
                condition = self.feed.readable() if upto is None else self.feed.until(reader, upto)
                if total is not None:
                    total(reader.execute(select(func.count()).select_from(events).where(condition)).scalar_one())
                query = select(*EVENT_COLUMNS).where(condition).order_by(events.c.stream_id, events.c.version)
                result = reader.execution_options(stream_results=True, yield_per=2000).execute(query)
                for stream_id, stream in group_streams(stored_event(row) for row in result):
                    changes = Changes()
                    try:
                        held = fold(stream_id, start(stream_id), stream, chosen, changes)
                    except EventNotProjected as error:
                        raise ProjectionFailed(error) from error
                    for shape in shapes:
                        rows = shape.version_rows(changes)
                        pending[shape.table].extend(rows)
                        buffered += len(rows)
                    states.append((stream_id, stream[-1].version, state_json(held)))
                    if buffered >= FLUSH_ROWS or len(states) >= FLUSH_STATES:
                        writer.write(pending, states)
                        pending, states, buffered = {shape.table: [] for shape in shapes}, [], 0
                    if progress is not None:
                        progress(len(stream))
            writer.write(pending, states)
        return mark

    def _compare(self, names: list[str], begun: Checkpoint) -> dict[str, VerifyResult]:
        # One read-only snapshot: the live rows and the checkpoint they were committed with agree,
        # and no lock is taken, so the runner keeps going.
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            now = self.checkpoints.get(conn)
            changed: set[str] = set()
            if now.position != begun.position:
                moved = select(events.c.stream_id).distinct().where(
                    self.feed.until(conn, now.position), ~self.feed.until(conn, begun.position))
                changed = set(conn.execute(moved).scalars())
            results = {name: VerifyResult(begun.mark(), [d for table in self.projectors[name].tables
                                                         for d in _differences(conn, name, table, now.generation,
                                                                               changed)], len(changed))
                       for name in names}
            results[HELD] = VerifyResult(begun.mark(), _differences(conn, HELD, record_states, now.generation,
                                                                    changed), len(changed))
        return results


class _Writer:
    """Writes a rebuild's buffers into its generation from a thread of its own, one transaction per
    buffer, at most one buffer waiting. An error is raised in the rebuild's thread at its next
    ``write`` or at the end."""

    def __init__(self, engine: Engine, generation: int):
        self.engine, self.generation = engine, generation
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rebuild-writer", daemon=True)

    def __enter__(self) -> "_Writer":
        self.thread.start()
        return self

    def write(self, rows: dict[Table, list[tuple]], states: list[tuple[str, int, dict[str, Any]]]) -> None:
        self._raise()
        self.queue.put((rows, states))

    def __exit__(self, *exc) -> None:
        self.queue.put(None)
        self.thread.join()
        if exc[0] is None:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain: the rebuild stops at its next write
            rows, states = item
            try:
                with transaction(self.engine) as conn:
                    for table, table_rows in rows.items():
                        add_rows(conn, table, self.generation, table_rows)
                    add_states(conn, self.generation, states)
            except BaseException as error:  # raised again in the rebuild's thread
                self.error = error


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
