"""The event store: one append-only table, optimistic concurrency and idempotent retries.

An append reads the record's row in the state table, lets the domain decide each new event
against it (never a replay of the whole stream), and writes the events together with the new
state row only if the row is still at the version the decision was made on (backends.py).
The database enforces it: the conditional write, ``unique(stream_id, version)``,
``unique(event_id)`` and the state table's primary key each refuse a second winner. A writer
that lost a race decides again on the new state, unless it asked for an expected version.

The store knows no capability. It has two seams, wired in bootstrap.py. A *participant* (the
outbox's planner) plans, for each append, rows of a table of its own, which the store writes
with the events in the same transaction (on PostgreSQL, the same statement), or not at all.
A *sealer* (personal data's) rewrites the events' data before they are decided: what the
domain decides on, the chain hashes and the tables keep is the sealed form.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator, Protocol, Sequence

import orjson
import structlog
from sqlalchemy import Connection, Engine, Table, bindparam, select

from service.domain import CaseStudy, DomainError, apply, replay
from service.domain.model import PendingEvent
from service.events.backends import writer_for
from service.events.chain import GENESIS, event_hash
from service.events.db import transaction
from service.events.errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    LostRace,
    StoreError,
    StreamAlreadyExists,
    StreamNotFound,
    VersionConflict,
    translated,
)
from service.events.event import EVENT_COLUMNS, Decided, NewEvent, StoredEvent, group_streams, stored_event
from service.events.tables import case_studies, events, state_row
from service.telemetry import APPEND_SECONDS, EVENTS_APPENDED
from service.times import utcnow

log = structlog.get_logger("casestudies.store")

MAX_ATTEMPTS = 5  # retries of an append without expected_version that lost a race


@dataclass(frozen=True)
class AppendResult:
    """What an append did: ``created`` is False when it answered a retry of stored events."""

    stream_id: str
    record: CaseStudy
    events: tuple[StoredEvent, ...]
    created: bool

    @property
    def version(self) -> int:
        return self.events[-1].version

    @property
    def position(self) -> int:
        return self.events[-1].position


class Plan(Protocol):
    """A participant's part in one append."""

    def before(self, record: CaseStudy, event_types: Sequence[str]) -> None:
        """Note what it needs of the record before the events are decided on it."""

    def rows(self, record: CaseStudy, events: Sequence[Decided]) -> list[dict[str, Any]]:
        """Rows of the participant's table that the append writes with ``events`` (the record as after them)."""


class Sealing(Protocol):
    """Rewrites the data of events before they are decided (personal fields become tokens)."""

    def seal(self, stream_id: str, new_events: Sequence[NewEvent],
             account_of: Callable[[], str | None]) -> Sequence[NewEvent]:
        """The events as they are to be stored; ``account_of`` gives the record's account id."""


class Participant(Protocol):
    """Writes rows of ``table`` in every append's transaction: the store's one seam.

    A row that conflicts with one already there (a unique key) is skipped, so a participant's
    rows can be idempotent by their own keys."""

    table: Table

    def prepare(self) -> Plan:
        """Called once per append before the write takes its connection (any lookup it needs goes here)."""


_SELECT_STATE = select(case_studies.c.state).where(case_studies.c.id == bindparam("id"))


def decide(record: CaseStudy, head_hash: str, new_events: Sequence[NewEvent], digests: Sequence[str], *,
           actor: str, now: datetime) -> list[Decided]:
    """Let the domain decide each event on ``record`` (changed in place) and chain it after ``head_hash``.

    Raises the domain's refusal, naming which event of a batch it was (``event_index``)."""
    decided: list[Decided] = []
    prev_hash = head_hash
    for index, (event, digest) in enumerate(zip(new_events, digests)):
        pending = PendingEvent(event.type, event.data, record.version + 1, event.occurred_at or now, now)
        try:
            apply(record, pending)
        except DomainError as refusal:
            if len(new_events) > 1:
                refusal.event_index = index
            raise
        event_id = event.event_id or str(uuid.uuid4())
        hashed = event_hash(
            stream_id=record.id, version=pending.version, type=event.type, data=event.data, actor=actor,
            on_behalf_of=event.on_behalf_of, recorded_at=now, occurred_at=pending.occurred_at, event_id=event_id,
            correlation_id=event.correlation_id, causation_id=event.causation_id, prev_hash=prev_hash)
        decided.append(Decided(event_id, record.id, pending.version, event.type, event.data, actor, now,
                               pending.occurred_at, event.correlation_id, event.causation_id, event.on_behalf_of,
                               digest, prev_hash, hashed, record.state))
        prev_hash = hashed
    return decided


def _check_expectations(record: CaseStudy, first_type: str, expected_version: int | None) -> None:
    """Only ``committed`` starts a stream, nothing else does, and an expected version must be the record's."""
    if first_type == "committed":
        if record.exists:
            raise StreamAlreadyExists(record.id, record.version)
    elif not record.exists:
        raise StreamNotFound(record.id)
    if expected_version is not None and expected_version != record.version:
        raise VersionConflict(record.id, expected_version, record.version)


class EventStore:
    """Append to and read from the events table; keeps the state table in step."""

    def __init__(self, engine: Engine, *, participant: Participant | None = None, sealer: Sealing | None = None,
                 clock: Callable[[], datetime] = utcnow, cache_size: int = 10_000):
        self.engine = engine
        self.participant = participant
        self.sealer = sealer
        self.clock = clock
        self._writer = writer_for(engine, participant.table if participant else None)
        self.cache_size = cache_size
        # State documents (as JSON text) this process wrote last, by stream id: an append to a
        # stream this process wrote before skips the read. A stale entry is harmless: the
        # conditional write refuses it, and a refusal decided on it is decided again on a fresh read.
        self._states: dict[str, tuple[str, str]] = {}  # stream id -> (state JSON, head hash)
        self._states_lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------
    def append(self, stream_id: str, new_events: Sequence[NewEvent], *, actor: str,
               expected_version: int | None = None) -> AppendResult:
        """Decide and store ``new_events`` on ``stream_id``, all or none.

        Raises StreamNotFound, StreamAlreadyExists, VersionConflict, IdempotencyConflict,
        or the domain's TransitionNotAllowed / GuardFailed; nothing is stored when it raises.
        A request whose event ids are already stored with the same content is answered with
        the original result (``created`` False) instead, whatever has happened since.
        """
        if not new_events:
            raise ValueError("append needs at least one event")
        with APPEND_SECONDS.time():
            result = self._append(stream_id, new_events, actor, expected_version)
        if result.created:
            for event in result.events:
                EVENTS_APPENDED.labels(event.type).inc()
        return result

    def _append(self, stream_id: str, new_events: Sequence[NewEvent], actor: str,
                expected_version: int | None) -> AppendResult:
        if self.sealer is not None:
            with translated():
                new_events = self.sealer.seal(stream_id, new_events, lambda: self._account_of(stream_id))
        digests = [event.digest(stream_id) for event in new_events]  # of what was asked (personal values keyed)
        plan = self.participant.prepare() if self.participant is not None else None
        attempt, use_cache = 0, True
        while attempt < MAX_ATTEMPTS:
            cached = self._states.get(stream_id) if use_cache else None
            try:
                # The first try reads without a lock (or not at all, from the cache); a writer
                # that lost a race tries again holding the record's row lock, so writers of one
                # busy stream queue up.
                result, remembered = self._attempt(stream_id, new_events, digests, actor, expected_version,
                                                   cached=cached, locked=attempt > 0, plan=plan)
            except LostRace:
                self._forget(stream_id)
                use_cache = False
                if cached is not None:
                    continue  # only the cache was stale: read afresh, still without a lock
                # Another writer got in first, or this is a retry racing its own first attempt.
                repeated = self._repeated(stream_id, new_events, digests)
                if repeated is not None:
                    return repeated
                attempt += 1
                continue
            except DatabaseUnavailable:
                self._forget(stream_id)  # the outcome is unknown: the next append reads afresh
                raise
            except (StoreError, DomainError):
                if cached is not None:  # decided on a remembered state: decide again on a fresh one
                    self._forget(stream_id)
                    use_cache = False
                    continue
                # A retry of stored events is refused on today's state; answer it as the original.
                repeated = self._repeated(stream_id, new_events, digests)
                if repeated is not None:
                    return repeated
                raise
            except BaseException:
                self._forget(stream_id)
                raise
            # Remembered only now that the write is committed: a state whose transaction failed
            # must never be decided on.
            self._remember(stream_id, remembered)
            for event in result.events:
                log.info("event_appended", stream_id=stream_id, version=event.version, type=event.type,
                         position=event.position, event_id=event.event_id, actor=actor)
            return result
        current = self.record(stream_id)
        raise VersionConflict(stream_id, expected_version, current.version if current else 0)

    def _attempt(self, stream_id: str, new_events: Sequence[NewEvent], digests: list[str], actor: str,
                 expected_version: int | None, *, cached: tuple[str, str] | None, locked: bool,
                 plan: Plan | None) -> tuple[AppendResult, tuple[str, str]]:
        """Read the state row, let the domain decide, write if the record has not moved meanwhile.

        Returns the result and the state to remember once the write is committed."""
        with translated(), (self._writer.locked() if locked else self._writer.optimistic()) as session:
            if cached is not None:
                state, head_hash = orjson.loads(cached[0]), cached[1]
            else:
                state, head_hash = session.read_state(stream_id)
            record = CaseStudy.from_dict(state) if state else CaseStudy(id=stream_id)
            version_before = record.version
            _check_expectations(record, new_events[0].type, expected_version)
            if plan is not None:
                plan.before(record, [event.type for event in new_events])
            decided = decide(record, head_hash or GENESIS, new_events, digests, actor=actor, now=self.clock())
            companion = plan.rows(record, decided) if plan is not None else []
            state = state_row(record, decided[-1].hash)
            state_json = orjson.dumps(state["state"]).decode()
            positions = session.write(stream_id, version_before, decided, state, state_json, companion)
        stored = tuple(event.stored(position) for event, position in zip(decided, positions))
        return AppendResult(stream_id, record, stored, created=True), (state_json, decided[-1].hash)

    def _account_of(self, stream_id: str) -> str | None:
        """The record's account id, for the sealer; StreamNotFound for a record that does not exist."""
        with self.engine.connect() as conn:
            row = conn.execute(select(case_studies.c.account_id).where(case_studies.c.id == stream_id)).first()
        if row is None:
            raise StreamNotFound(stream_id)
        return row.account_id

    def _remember(self, stream_id: str, entry: tuple[str, str]) -> None:
        if not self.cache_size:
            return
        with self._states_lock:
            self._states.pop(stream_id, None)
            if len(self._states) >= self.cache_size:
                del self._states[next(iter(self._states))]
            self._states[stream_id] = entry

    def _forget(self, stream_id: str) -> None:
        with self._states_lock:
            self._states.pop(stream_id, None)

    def _repeated(self, stream_id: str, new_events: Sequence[NewEvent],
                  digests: list[str]) -> AppendResult | None:
        """The original result when every event id was stored before with the same content."""
        ids = [event.event_id for event in new_events if event.event_id]
        if not ids:
            return None
        with self.engine.connect() as conn:
            found = {row.event_id: row for row in conn.execute(
                select(events.c.event_id, events.c.stream_id, events.c.version, events.c.request_digest)
                .where(events.c.event_id.in_(ids)))}
        if not found:
            return None
        for event, digest in zip(new_events, digests):
            row = found.get(event.event_id) if event.event_id else None
            if row is None:
                raise IdempotencyConflict(
                    next(iter(found)), "some events of this request were stored before and some were not")
            if row.stream_id != stream_id or row.request_digest != digest:
                raise IdempotencyConflict(
                    event.event_id,
                    f"event id {event.event_id} was already used for a different event "
                    f"(stream {row.stream_id}, version {row.version})")
        versions = {found[event.event_id].version for event in new_events}
        stream = self.load(stream_id, to_version=max(versions))
        stored = tuple(event for event in stream if event.version in versions)
        return AppendResult(stream_id, replay(stream_id, stream), stored, created=False)

    # -- reading -------------------------------------------------------------------------
    def load(self, stream_id: str, *, recorded_until: datetime | None = None, from_version: int = 1,
             to_version: int | None = None, limit: int | None = None) -> list[StoredEvent]:
        """The stream's events, oldest first, optionally cut at a recording time or version."""
        with self.engine.connect() as conn:
            return self._load(conn, stream_id, recorded_until=recorded_until,
                              from_version=from_version, to_version=to_version, limit=limit)

    @staticmethod
    def _load(conn: Connection, stream_id: str, *, recorded_until: datetime | None = None,
              from_version: int = 1, to_version: int | None = None,
              limit: int | None = None) -> list[StoredEvent]:
        query = (select(*EVENT_COLUMNS)
                 .where(events.c.stream_id == stream_id, events.c.version >= from_version)
                 .order_by(events.c.version))
        if recorded_until is not None:
            query = query.where(events.c.recorded_at <= recorded_until)
        if to_version is not None:
            query = query.where(events.c.version <= to_version)
        if limit is not None:
            query = query.limit(limit)
        return [stored_event(row) for row in conn.execute(query)]

    def record(self, stream_id: str) -> CaseStudy | None:
        """The record from the state table (read-your-writes after an append)."""
        with self.engine.connect() as conn:
            row = conn.execute(_SELECT_STATE, {"id": stream_id}).first()
        return CaseStudy.from_dict(row.state) if row else None

    def record_as_of(self, stream_id: str, as_of: datetime) -> CaseStudy | None:
        """The record as known at ``as_of``: a replay of what had been recorded by then."""
        stream = self.load(stream_id, recorded_until=as_of)
        return replay(stream_id, stream) if stream else None

    def records_as_of(self, stream_ids: Sequence[str], as_of: datetime) -> list[CaseStudy]:
        """Records as known at ``as_of``, in the order given (a page of the record list at a past time):
        a replay of each one's events recorded by then, read in one query."""
        query = (select(*EVENT_COLUMNS)
                 .where(events.c.stream_id.in_(list(stream_ids)), events.c.recorded_at <= as_of)
                 .order_by(events.c.stream_id, events.c.version))
        with self.engine.connect() as conn:
            found = dict(group_streams(stored_event(row) for row in conn.execute(query)))
        return [replay(stream_id, found[stream_id]) for stream_id in stream_ids if stream_id in found]

    def replay_all(self, *, recorded_until: datetime | None = None) -> Iterator[CaseStudy]:
        """Every record rebuilt from the events alone, one stream at a time, in stream id order."""
        for stream_id, stream in self.streams(recorded_until=recorded_until):
            yield replay(stream_id, stream)

    def streams(self, *, recorded_until: datetime | None = None, stream_id: str | None = None,
                batch: int = 2000) -> Iterator[tuple[str, list[StoredEvent]]]:
        """Each stream's events, oldest first, one stream in memory at a time, in stream id order.

        The walk reads one snapshot of the store (a read transaction), however long it takes.
        """
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            query = select(*EVENT_COLUMNS).order_by(events.c.stream_id, events.c.version)
            if recorded_until is not None:
                query = query.where(events.c.recorded_at <= recorded_until)
            if stream_id is not None:
                query = query.where(events.c.stream_id == stream_id)
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            yield from group_streams(stored_event(row) for row in result)
