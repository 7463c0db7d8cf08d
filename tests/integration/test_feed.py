"""The global feed never skips an event, even when transactions commit out of position order."""
from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest
from sqlalchemy import insert

from service.events.chain import GENESIS
from service.events.db import transaction
from service.events.event import NewEvent
from service.events.feed import Feed, UnknownPosition
from service.events.store import EventStore
from service.events.tables import events
from service.times import utcnow
from tests.conftest import auth, new_database, settle, unique_id
from tests.factories import COMMITTED


def follow(feed: Feed, after: int, **kw) -> tuple[list, int]:
    """Everything the feed hands out after ``after``, page by page."""
    seen = []
    while True:
        page = feed.read(after=after, limit=kw.get("limit", 50), types=kw.get("types"))
        seen.extend(page.events)
        if page.next_after == after:
            return seen, after
        after = page.next_after


@contextmanager
def uncommitted_event(engine, stream_id: str) -> Iterator[None]:
    """A writer's transaction that has taken a position for an event of ``stream_id`` and not committed."""
    now = utcnow()
    with transaction(engine) as conn:
        conn.execute(insert(events).values(
            event_id=str(uuid.uuid4()), stream_id=stream_id, version=1, type="committed", data=COMMITTED,
            actor="tests", recorded_at=now, occurred_at=now, request_digest="0" * 64, prev_hash=GENESIS,
            hash="0" * 64))
        yield


class OutOfOrderCommitsContract:
    """A transaction that took an earlier position commits after a later one: a follower of the
    feed must still see both, in order. Each backend's subclass says what happens meanwhile."""

    backend: str

    def test_a_follower_never_misses_an_event_that_commits_after_a_later_position(self, request, tmp_path):
        with new_database(request, self.backend, tmp_path) as db:
            feed, store = Feed(db.engine), EventStore(db.engine)
            slow_stream, fast_stream = unique_id("slow"), unique_id("fast")
            warm = store.append(unique_id("warm"), [NewEvent("committed", COMMITTED)], actor="tests")
            settle(feed)  # another transaction on the same server may hold the feed back for a moment
            seen, after = follow(feed, 0)
            assert [e.position for e in seen] == [warm.position]
            fast_done = threading.Event()

            def fast_append():
                store.append(fast_stream, [NewEvent("committed", COMMITTED)], actor="tests")
                fast_done.set()

            fast = threading.Thread(target=fast_append)
            with uncommitted_event(db.engine, slow_stream):  # the slow writer holds its position
                fast.start()
                self.while_the_earlier_writer_is_open(feed, after, fast_done)
            fast.join(10)
            settle(feed)
            seen, _ = follow(feed, after)
            assert [e.stream_id for e in seen] == [slow_stream, fast_stream]
            self.after_both_commit(seen)

    def while_the_earlier_writer_is_open(self, feed: Feed, after: int, fast_done: threading.Event) -> None:
        raise NotImplementedError

    def after_both_commit(self, seen: list) -> None:
        pass


class TestOutOfOrderCommitsOnPostgres(OutOfOrderCommitsContract):
    backend = "postgres"

    def while_the_earlier_writer_is_open(self, feed, after, fast_done):
        # Appends to other streams are not held up: the later position commits first ...
        assert fast_done.wait(10)
        # ... and the feed does not hand it out while the earlier position may still commit.
        page = feed.read(after=after)
        assert page.events == [] and page.next_after == after

    def after_both_commit(self, seen):
        assert seen[0].position < seen[1].position  # the out-of-order commit really happened


class TestOutOfOrderCommitsOnSqlite(OutOfOrderCommitsContract):
    backend = "sqlite"

    def while_the_earlier_writer_is_open(self, feed, after, fast_done):
        # SQLite's writers take turns: the second waits for the first, so positions follow commits.
        assert not fast_done.wait(0.5)
        assert feed.read(after=after).events == []


def test_the_feed_pages_through_every_event_once_and_filters_by_type(services):
    feed = Feed(services.store.engine)
    start = feed.head().position
    streams = [unique_id("feed") for _ in range(5)]
    for stream in streams:
        services.store.append(stream, [NewEvent("committed", COMMITTED), NewEvent("started", {})], actor="tests")
    settle(feed)
    seen, after = follow(feed, start, limit=3)
    mine = [(e.stream_id, e.version) for e in seen if e.stream_id in streams]
    assert mine == [(stream, version) for stream in streams for version in (1, 2)]
    assert after == feed.head().position

    started, _ = follow(feed, start, limit=2, types=["started"])
    assert [e.stream_id for e in started if e.stream_id in streams] == streams
    assert {e.type for e in started} == {"started"}


def test_a_follower_at_the_head_gets_nothing_and_keeps_its_place(services):
    feed = Feed(services.store.engine)
    head = feed.head()
    page = feed.read(after=head.position)
    assert page.events == [] and page.next_after == head.position and page.head == head


def test_continuing_from_a_position_no_event_has_is_refused(services):
    feed = Feed(services.store.engine)
    with pytest.raises(UnknownPosition):
        feed.read(after=feed.head().position + 1_000_000)


def test_get_events_pages_the_feed_with_the_position_to_continue_from(client, keys, services):
    start = services.feed.head().position
    stream = unique_id("http-feed")
    services.store.append(stream, [NewEvent("committed", COMMITTED), NewEvent("started", {})], actor="tests")
    settle(services.feed)
    first = client.get("/events", query_string={"after": start, "limit": 1}, headers=auth(keys["reader"])).get_json()
    assert first["count"] == 1 and first["events"][0]["stream_id"] == stream
    assert first["events"][0]["type"] == "committed" and first["next_after"] == first["events"][0]["position"]
    rest = client.get("/events", query_string={"after": first["next_after"], "type": "started,committed"},
                      headers=auth(keys["auditor"])).get_json()
    assert [(e["stream_id"], e["version"]) for e in rest["events"]] == [(stream, 2)]
    assert rest["next_after"] == rest["head"]["position"] == rest["events"][-1]["position"]
    assert set(rest["events"][0]) >= {"position", "event_id", "stream_id", "version", "type", "data", "actor",
                                      "recorded_at", "occurred_at", "hash"}


@pytest.mark.parametrize(("query", "code"), [
    ({"after": -1}, "invalid_parameter"), ({"after": "x"}, "invalid_parameter"), ({"limit": 0}, "invalid_parameter"),
    ({"limit": 1001}, "invalid_parameter"), ({"type": "exploded"}, "invalid_parameter"),
    ({"after": 9_999_999_999}, "unknown_position")])
def test_bad_feed_parameters_are_400_with_a_code(client, keys, query, code):
    answer = client.get("/events", query_string=query, headers=auth(keys["reader"]))
    assert answer.status_code == 400 and answer.mimetype == "application/problem+json"
    assert answer.get_json()["code"] == code


def test_projection_status_lists_every_projector_with_checkpoint_lag_and_error(client, keys, services):
    settle(services.feed)
    services.runner.catch_up()
    services.store.append(unique_id("lag"), [NewEvent("committed", COMMITTED)], actor="tests")
    settle(services.feed)
    answer = client.get("/projections/status", headers=auth(keys["reader"])).get_json()
    assert [p["name"] for p in answer["projectors"]] == ["pipeline", "blockers", "cycle_times", "candidates", "stuck"]
    assert answer["lag_events"] == 1 and answer["failing"] is False  # one checkpoint, which every projector shares
    assert all(p["lag_events"] == 1 and p["checkpoint"] == answer["checkpoint"] for p in answer["projectors"])
    assert answer["head"]["position"] == services.feed.head().position
    as_csv = client.get("/projections/status", query_string={"format": "csv"}, headers=auth(keys["reader"]))
    assert as_csv.mimetype == "text/csv" and as_csv.get_data(as_text=True).count("\r\n") == 6
