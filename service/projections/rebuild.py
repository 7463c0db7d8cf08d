"""Rebuild and verify: project the whole store afresh into a generation readers do not see.

A rebuild projects every stream of one snapshot of the store, one stream in memory at a time,
into the next generation of the tables; one update then makes it the live generation, with the
checkpoint at the snapshot's high-water mark, and the old generation is deleted. Verify
rebuilds into a scratch generation up to the live checkpoint and compares the two. One rebuild
or verify per projector runs at a time.
"""
from __future__ import annotations

import hashlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

import structlog
from sqlalchemy import Connection, Engine, delete, except_, func, select, update
from sqlalchemy.engine import make_url

from service.events.db import is_sqlite, transaction
from service.events.event import EVENT_COLUMNS, group_streams, stored_event
from service.events.feed import Feed, Mark
from service.events.tables import events
from service.projections.checkpoints import Checkpoint, Checkpoints, ProjectionFailed
from service.projections.projectors import EventNotProjected, Projector, Rows, choose, project
from service.projections.rows import insert_rows
from service.projections.tables import projection_checkpoints
from service.times import utcnow

log = structlog.get_logger("casestudies.projections")

SCRATCH_GENERATION = -1  # where verify rebuilds (one verify or rebuild per projector at a time)
FLUSH_ROWS = 5_000  # rows a rebuild buffers before writing them
DELETE_CHUNK = 2_000  # records whose old rows one transaction deletes after a swap


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


class Rebuilder:
    """Rebuilds and verifies the projectors' tables from the whole store."""

    def __init__(self, engine: Engine, feed: Feed, projectors: dict[str, Projector], checkpoints: Checkpoints, *,
                 clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.feed = feed
        self.projectors = projectors
        self.checkpoints = checkpoints
        self.clock = clock

    def rebuild(self, names: Iterable[str] | None = None, *,
                progress: Callable[[int], None] | None = None, total: Callable[[int], None] | None = None) -> Mark:
        """Project the whole store afresh and swap the result in; the mark it was rebuilt to.

        Raises ProjectionBusy when another rebuild or verify of one of them is running."""
        chosen = [self.projectors[name] for name in choose(self.projectors, names)]
        self.checkpoints.ensure()
        with ExitStack() as held:
            for projector in chosen:
                held.enter_context(self._exclusive(projector.name))
            generations = {}
            for projector in chosen:
                live = self.checkpoints.now(projector.name).generation
                self._drop_all_but(projector, live)  # what an interrupted rebuild or verify left
                generations[projector.name] = live + 1
            try:
                mark = self._write_generation(chosen, generations, upto=None, progress=progress, total=total)
            except ProjectionFailed as failure:
                for projector in chosen:
                    self.checkpoints.record_error(ProjectionFailed(projector.name, failure.__cause__))
                raise
            old = {}
            with transaction(self.engine) as conn:
                for projector in chosen:
                    old[projector.name] = self.checkpoints.get(conn, projector.name, lock=True).generation
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
        self.checkpoints.ensure()
        for name in choose(self.projectors, names):
            projector = self.projectors[name]
            with self._exclusive(name):
                start = self.checkpoints.now(name)
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
            return self.checkpoints.get(conn, name)

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
                    insert_rows(writer, projector, generations[projector.name], pending[projector.name])
                    pending[projector.name] = {}
            buffered = 0

        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as reader:
            mark = self.feed.head(reader) if upto is None else Mark(upto, None)  # verify reports its own
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
            now = self.checkpoints.get(conn, projector.name)
            changed: set[str] = set()
            if now.position != start.position:
                moved = select(events.c.stream_id).distinct().where(
                    self.feed.until(conn, now.position), ~self.feed.until(conn, start.position))
                changed = set(conn.execute(moved).scalars())
            differences: list[Difference] = []
            for table in projector.tables:
                differences.extend(_differences(conn, projector.name, table, now.generation, changed))
        return VerifyResult(start.mark(), differences, len(changed))


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
