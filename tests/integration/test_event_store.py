"""The event store's contract: one test class, run on SQLite and on PostgreSQL alike by a subclass each."""
from __future__ import annotations

import threading
import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from service.domain import GuardFailed, TransitionNotAllowed, replay
from service.events import postgres, sqlite
from service.events.db import transaction as real_transaction
from service.events.errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    StreamAlreadyExists,
    StreamNotFound,
    VersionConflict,
)
from service.events.event import NewEvent
from service.events.store import EventStore
from service.events.tables import events
from tests.conftest import unique_id
from tests.factories import COMMITTED, PATHS, VALID_DATA


def commit(store: EventStore, stream_id: str, **kw):
    return store.append(stream_id, [NewEvent("committed", COMMITTED, **kw)], actor="tests")


def count_events(store: EventStore, stream_id: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)
                            .where(events.c.stream_id == stream_id)).scalar_one()


class EventStoreContract:
    """What the event store promises on every database. Each backend's subclass gives its database
    (the ``db`` fixture) and ``backend``, the module whose transactions an append's commit goes through."""

    backend: ModuleType

    @pytest.fixture
    def store(self, db) -> EventStore:
        return EventStore(db.engine)

    def test_appended_events_are_numbered_from_1_and_read_back_with_every_field(self, store):
        stream = unique_id()
        first = commit(store, stream, correlation_id="deal-7")
        second = store.append(stream, [NewEvent("started", {})], actor="csm-tool", expected_version=1)
        assert (first.version, second.version) == (1, 2)
        assert second.position > first.position
        loaded = store.load(stream)
        assert [e.version for e in loaded] == [1, 2]
        assert loaded[0].data == COMMITTED and loaded[0].actor == "tests"
        assert loaded[0].correlation_id == "deal-7"
        assert loaded[1].actor == "csm-tool"
        assert loaded[0].recorded_at.tzinfo is not None and loaded[0].occurred_at == loaded[0].recorded_at
        assert second.record.state == "in_progress"


    def test_occurred_at_may_be_earlier_than_recorded_at_for_back_filled_history(self, store):
        stream = unique_id()
        then = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
        commit(store, stream, occurred_at=then)
        [event] = store.load(stream)
        assert event.occurred_at == then and event.recorded_at > then
        assert store.record(stream).committed_at == then


    def test_a_stale_expected_version_is_a_conflict_and_stores_nothing(self, store):
        stream = unique_id()
        commit(store, stream)
        store.append(stream, [NewEvent("started", {})], actor="t", expected_version=1)
        with pytest.raises(VersionConflict) as conflict:
            store.append(stream, [NewEvent("quote_added", VALID_DATA["quote_added"])], actor="t",
                         expected_version=1)
        assert (conflict.value.expected, conflict.value.actual) == (1, 2)
        assert count_events(store, stream) == 2


    def test_committing_an_existing_stream_is_refused(self, store):
        stream = unique_id()
        commit(store, stream)
        with pytest.raises(StreamAlreadyExists):
            commit(store, stream)


    def test_events_other_than_committed_need_an_existing_stream(self, store):
        with pytest.raises(StreamNotFound):
            store.append(unique_id(), [NewEvent("started", {})], actor="t")


    def test_a_refused_event_is_not_stored(self, store):
        stream = unique_id()
        commit(store, stream)
        with pytest.raises(TransitionNotAllowed):
            store.append(stream, [NewEvent("published", VALID_DATA["published"])], actor="t")
        assert count_events(store, stream) == 1
        assert store.record(stream).version == 1


    def test_a_retry_with_the_same_event_id_answers_the_original_result_and_stores_nothing(self, store):
        stream, event_id = unique_id(), str(uuid.uuid4())
        commit(store, stream)
        first = store.append(stream, [NewEvent("started", {}, event_id=event_id)], actor="t")
        store.append(stream, [NewEvent("quote_added", VALID_DATA["quote_added"])], actor="t")
        retry = store.append(stream, [NewEvent("started", {}, event_id=event_id)], actor="t", expected_version=2)
        assert retry.created is False and first.created is True
        assert (retry.version, retry.position, retry.events[0].event_id) == (2, first.position, event_id)
        assert retry.record.state == "in_progress" and retry.record.version == 2
        assert count_events(store, stream) == 3


    def test_the_same_event_id_with_another_body_is_an_idempotency_conflict(self, store):
        stream, event_id = unique_id(), str(uuid.uuid4())
        commit(store, stream)
        store.append(stream, [NewEvent("quote_added", VALID_DATA["quote_added"], event_id=event_id)], actor="t")
        other = {"text": "something else", "speaker": "Jo"}
        with pytest.raises(IdempotencyConflict):
            store.append(stream, [NewEvent("quote_added", other, event_id=event_id)], actor="t")
        with pytest.raises(IdempotencyConflict):  # same id on another stream
            elsewhere = unique_id()
            commit(store, elsewhere)
            store.append(elsewhere, [NewEvent("quote_added", VALID_DATA["quote_added"], event_id=event_id)],
                         actor="t")
        assert count_events(store, stream) == 2


    def test_a_batch_is_appended_all_or_none(self, store):
        stream = unique_id()
        with pytest.raises(GuardFailed):
            store.append(stream, [NewEvent("committed", COMMITTED), NewEvent("reassigned", {"csm": "Dana"})],
                         actor="t")
        assert count_events(store, stream) == 0 and store.record(stream) is None
        result = store.append(stream, [NewEvent(t, d) for t, d in PATHS["published"]], actor="t")
        assert result.version == 5 and result.record.state == "published"


    def test_writers_racing_with_expected_versions_win_exactly_once_per_version(self, store):
        stream = unique_id()
        commit(store, stream)
        threads, rounds = 8, 6
        wins: list[int] = []
        losses = Counter()
        barrier = threading.Barrier(threads)

        def writer(n: int) -> None:
            for r in range(rounds):
                barrier.wait()
                version = store.record(stream).version
                barrier.wait()  # every writer read the same version before any writes
                try:
                    result = store.append(stream, [NewEvent("quote_added", {"text": f"{n}/{r}", "speaker": "x"})],
                                          actor=f"w{n}", expected_version=version)
                    wins.append(result.version)
                except VersionConflict:
                    losses[r] += 1

        pool = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert sorted(wins) == list(range(2, 2 + rounds))  # exactly one winner per version
        assert sum(losses.values()) == (threads - 1) * rounds
        assert [e.version for e in store.load(stream)] == list(range(1, 2 + rounds))  # no gaps, no duplicates


    def test_writers_racing_without_expected_versions_all_land_with_no_gaps(self, store):
        stream = unique_id()
        commit(store, stream)
        threads, each = 8, 10
        errors = []

        def writer(n: int) -> None:
            for i in range(each):
                try:
                    store.append(stream, [NewEvent("quote_added", {"text": f"{n}/{i}", "speaker": "x"})],
                                 actor=f"w{n}")
                except Exception as error:  # collected: the assertion below shows any
                    errors.append(error)

        pool = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert errors == []
        loaded = store.load(stream)
        assert [e.version for e in loaded] == list(range(1, 2 + threads * each))
        assert len({e.position for e in loaded}) == len(loaded)
        assert store.record(stream).version == 1 + threads * each


    def test_racing_commits_of_one_new_stream_create_it_once(self, store):
        stream = unique_id()
        outcomes = []
        barrier = threading.Barrier(6)

        def writer() -> None:
            barrier.wait()
            try:
                commit(store, stream)
                outcomes.append("created")
            except StreamAlreadyExists:
                outcomes.append("exists")

        pool = [threading.Thread(target=writer) for _ in range(6)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert sorted(outcomes) == ["created"] + ["exists"] * 5
        assert count_events(store, stream) == 1


    def test_concurrent_retries_of_one_event_id_store_it_once(self, store):
        stream, event_id = unique_id(), str(uuid.uuid4())
        commit(store, stream)
        created = []
        barrier = threading.Barrier(6)

        def writer() -> None:
            barrier.wait()
            created.append(store.append(stream, [NewEvent("started", {}, event_id=event_id)], actor="t").created)

        pool = [threading.Thread(target=writer) for _ in range(6)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert sorted(created) == [False] * 5 + [True]
        assert count_events(store, stream) == 2


    def test_the_state_table_equals_a_full_replay(self, store):
        streams = {status: unique_id(status) for status in PATHS if status != "new"}
        for status, stream in streams.items():
            store.append(stream, [NewEvent(t, d) for t, d in PATHS[status]], actor="t")
        # more history on some, one event at a time, as clients would post it
        busy = streams["in_progress"]
        for step in [("metrics_recorded", {"kind": "baseline", "metrics": {"days": 30.5}}),
                     ("metrics_recorded", {"kind": "current", "metrics": {"days": 12}, "lower_is_better": ["days"]}),
                     ("nps_recorded", {"score": 9}), ("reassigned", {"csm": "Robin"}),
                     ("held", {"reason": "reorg", "revisit_on": "2027-02-01"}), ("resumed", {}),
                     ("approval_requested", {"approvers": ["legal", "marketing"]}),
                     ("changes_requested", {"role": "legal", "comment": "no revenue"})]:
            store.append(busy, [NewEvent(*step)], actor="t")
        for status, stream in streams.items():
            from_table = store.record(stream)
            from_replay = replay(stream, store.load(stream))
            assert from_table == from_replay, status
            assert from_table.state == (status if stream != busy else "in_progress")
        rebuilt = {r.id: r for r in store.replay_all() if r.id in streams.values()}
        assert rebuilt == {s: store.record(s) for s in streams.values()}


    def test_as_of_replays_only_what_had_been_recorded_by_then(self, db):
        clock = iter([datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=d) for d in range(10)])
        store = EventStore(db.engine, clock=lambda: next(clock))
        stream = unique_id()
        store.append(stream, [NewEvent("committed", COMMITTED)], actor="t")       # Nov 1
        store.append(stream, [NewEvent("started", {})], actor="t")                # Nov 2
        store.append(stream, [NewEvent("held", {"reason": "reorg"})], actor="t")  # Nov 3
        assert store.record_as_of(stream, datetime(2026, 10, 31, tzinfo=UTC)) is None
        assert store.record_as_of(stream, datetime(2026, 11, 2, 12, tzinfo=UTC)).state == "in_progress"
        assert store.record_as_of(stream, datetime(2026, 11, 3, tzinfo=UTC)).state == "on_hold"


    def test_a_store_that_remembers_a_stale_state_still_decides_on_the_current_one(self, db):
        here, elsewhere = EventStore(db.engine), EventStore(db.engine)  # two processes
        stream = unique_id()
        here.append(stream, [NewEvent("committed", COMMITTED)], actor="t")           # `here` remembers v1
        elsewhere.append(stream, [NewEvent("started", {})], actor="t")              # v2, unseen by `here`
        # allowed only in in_progress: refused on the remembered state, accepted on the real one
        result = here.append(stream, [NewEvent("approval_requested", {"approvers": ["legal"]})], actor="t")
        assert result.version == 3 and result.record.state == "awaiting_customer_approval"
        elsewhere.append(stream, [NewEvent("approval_granted", {"role": "legal", "approver": "Kim"})], actor="t")
        # accepted on the remembered state too: the write finds the row moved and decides again
        result = here.append(stream, [NewEvent("quote_added", VALID_DATA["quote_added"])], actor="t")
        assert result.version == 5 and result.record.approvals == {"legal": "granted"}
        with pytest.raises(VersionConflict):
            elsewhere.append(stream, [NewEvent("published", VALID_DATA["published"])], actor="t", expected_version=4)
        assert [e.version for e in here.load(stream)] == [1, 2, 3, 4, 5]
        assert here.record(stream) == replay(stream, here.load(stream))


    def test_a_state_whose_commit_failed_is_never_decided_on(self, db, monkeypatch):
        @contextmanager
        def commit_fails(engine, **kwargs):
            with real_transaction(engine, **kwargs) as conn:
                yield conn
                conn.get_transaction().rollback()  # the write ran; the commit never happens
            raise DatabaseUnavailable("connection lost while committing")

        store = EventStore(db.engine)
        monkeypatch.setattr(store._writer, "optimistic", store._writer.locked)  # every write in a transaction
        stream = unique_id()
        store.append(stream, [NewEvent("committed", COMMITTED)], actor="t")
        store.append(stream, [NewEvent("started", {})], actor="t")
        monkeypatch.setattr(self.backend, "transaction", commit_fails)
        with pytest.raises(DatabaseUnavailable):
            store.append(stream, [NewEvent("held", {"reason": "x"})], actor="t")
        monkeypatch.setattr(self.backend, "transaction", real_transaction)
        assert store.record(stream).state == "in_progress"
        # another process takes version 3, so a write decided on the uncommitted on_hold v3 would match
        EventStore(db.engine).append(stream, [NewEvent("quote_added", VALID_DATA["quote_added"])], actor="t")
        with pytest.raises(TransitionNotAllowed):  # decided on the stored in_progress, not the phantom on_hold
            store.append(stream, [NewEvent("resumed", {})], actor="t")
        result = store.append(stream, [NewEvent("approval_requested", {"approvers": ["legal"]})], actor="t")
        assert result.version == 4 and store.record(stream) == replay(stream, store.load(stream))


    def test_a_retry_of_an_event_the_state_machine_would_accept_again_is_still_answered_once(self, store):
        stream, event_id = unique_id(), str(uuid.uuid4())
        commit(store, stream)
        quote = NewEvent("quote_added", VALID_DATA["quote_added"], event_id=event_id)
        first = store.append(stream, [quote], actor="t")
        again = store.append(stream, [quote], actor="t")
        fresh = EventStore(store.engine).append(stream, [quote], actor="t")  # another process, no cache
        assert first.created and not again.created and not fresh.created
        assert again.position == fresh.position == first.position
        assert count_events(store, stream) == 2


class TestEventStoreOnSqlite(EventStoreContract):
    backend = sqlite

    @pytest.fixture
    def db(self, sqlite_database):
        return sqlite_database


class TestEventStoreOnPostgres(EventStoreContract):
    backend = postgres

    @pytest.fixture
    def db(self, postgres_database):
        return postgres_database

    @pytest.mark.parametrize("fresh_database", ["postgres"], indirect=True)
    def test_after_the_server_drops_every_connection_at_most_one_append_fails_and_none_is_lost(self, fresh_database):
        from sqlalchemy import create_engine, text

        from service import migrations
        from service.events.errors import DatabaseUnavailable

        migrations.upgrade(fresh_database.engine)
        store = EventStore(fresh_database.engine)
        streams = [unique_id() for _ in range(5)]
        for stream in streams:
            commit(store, stream)
        held = [fresh_database.engine.connect() for _ in range(5)]  # five connections in the pool
        for conn in held:
            conn.exec_driver_sql("SELECT 1")
            conn.close()
        name = fresh_database.engine.url.database
        killer = create_engine(fresh_database.engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with killer.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": name})
        killer.dispose()
        failures = 0
        for stream in streams:
            try:
                store.append(stream, [NewEvent("started", {})], actor="t")
            except (DatabaseUnavailable, OperationalError):
                failures += 1
                store.append(stream, [NewEvent("started", {})], actor="t")  # the retry a client would make
        assert failures <= 1
        assert all(store.record(s).state == "in_progress" and len(store.load(s)) == 2 for s in streams)
