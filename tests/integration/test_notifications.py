"""Slack notifications and outgoing webhooks through the outbox, on SQLite and PostgreSQL.

A real HTTP server on loopback (tests/receiver.py) stands in for Slack and for a webhook consumer.
"""
from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, event, func, insert, select
from structlog.testing import capture_logs

from service import create_app
from service.bootstrap import build, dispatcher
from service.cli import main as cli
from service.config import DeliverySettings, Settings
from service.domain import GuardFailed
from service.events.event import NewEvent
from service.notifications.dispatcher import SIGNATURE_HEADER
from service.notifications.outbox import MAX_MESSAGE_ID
from service.notifications.subscriptions import SubscriptionError
from service.notifications.tables import outbox, stuck_announcements, webhook_subscriptions
from service.times import utcnow
from tests.conftest import BACKENDS, PERSONAL_DATA_KEY, Database, auth, migrated_database, problem, project, unique_id
from tests.factories import COMMITTED
from tests.receiver import Receiver, Response

CLOSED_PORT_URL = "http://127.0.0.1:9/hook"  # discard: nothing listens there


@pytest.fixture(scope="module", params=BACKENDS)
def notify_db(request, tmp_path_factory):
    """A database of its own for this module: the outbox and subscriptions are global state."""
    with migrated_database(request, tmp_path_factory, "notify", pool_size=10) as db:
        yield db


@pytest.fixture(autouse=True)
def empty_outbox(notify_db):
    with notify_db.engine.begin() as conn:
        for table in (outbox, webhook_subscriptions, stuck_announcements):
            conn.execute(delete(table))
    yield


class Clock:
    """The real time plus an offset a test moves forward."""

    def __init__(self):
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


def wire(db: Database, slack_url: str | None = None, allowed: tuple[str, ...] = ("127.0.0.0/8",), **delivery):
    """The services and a dispatcher on ``db``; webhooks may go to the receivers on loopback unless
    ``allowed`` says otherwise."""
    delivery = {"backoff_seconds": 10, "timeout_seconds": 2, "lease_seconds": 30, **delivery}
    services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=db.url, log_format="json", webhook_cache_seconds=0,
                              public_base_url="https://cs.example.com", slack_webhook_url=slack_url,
                              webhook_allowed_networks=allowed, notify=DeliverySettings(**delivery)),
                     engine=db.engine)
    clock = Clock()
    sender = dispatcher(services)
    sender.clock = clock
    return services, sender, clock


def commit(services, stream: str | None = None, **overrides) -> str:
    stream = stream or unique_id("n")
    services.store.append(stream, [NewEvent("committed", {**COMMITTED, **overrides})], actor="crm-automation")
    return stream


def rows(db: Database) -> list:
    with db.engine.connect() as conn:
        return list(conn.execute(select(outbox).order_by(outbox.c.id)))


def test_a_new_record_is_announced_in_slack_with_customer_csm_and_link(notify_db):
    with Receiver() as slack:
        services, sender, _ = wire(notify_db, slack.url)
        stream = commit(services, account={"id": "a1", "name": "Acme <Air> & Co"})
        queued = rows(notify_db)
        assert [(r.destination, r.kind, r.stream_id, r.status) for r in queued] == [
            ("slack", "record_created", stream, "pending")]  # written with the event, before any delivery
        assert sender.run_once() == 1
        assert len(slack.received) == 1
        text = slack.received[0].json()["text"]
        assert "Acme &lt;Air&gt; &amp; Co" in text and "CSM Dana" in text
        assert f"<https://cs.example.com/case-studies/{stream}|{stream}>" in text
        assert slack.received[0].headers["content-type"] == "application/json"
        sent = rows(notify_db)[0]
        assert sent.status == "sent" and sent.attempts == 1 and sent.last_status == 200 and sent.sent_at
        assert sender.run_once() == 0  # nothing is sent twice


def test_a_refused_write_queues_nothing_and_an_unconfigured_slack_queues_nothing(notify_db):
    services, _, _ = wire(notify_db, CLOSED_PORT_URL)
    stream = commit(services)
    with pytest.raises(GuardFailed):
        services.store.append(stream, [NewEvent("reassigned", {"csm": COMMITTED["csm"]})], actor="x")
    with pytest.raises(Exception):
        commit(services, stream)  # already exists
    assert len(rows(notify_db)) == 1
    quiet, _, _ = wire(notify_db, None)
    commit(quiet)
    assert len(rows(notify_db)) == 1


def test_slack_being_down_never_blocks_or_undoes_a_write(notify_db):
    services, sender, _ = wire(notify_db, CLOSED_PORT_URL)
    stream = commit(services)
    services.store.append(stream, [NewEvent("started", {})], actor="csm-tool")
    assert services.store.record(stream).version == 2
    sender.run_once()
    (row,) = rows(notify_db)
    assert row.status == "pending" and row.attempts == 1 and "could not connect" in row.last_error
    assert services.store.record(stream).version == 2


def test_a_failed_delivery_is_retried_with_exponential_back_off(notify_db):
    with Receiver(Response(500, body=b"oops"), Response(503), Response(200)) as slack:
        services, sender, clock = wire(notify_db, slack.url)
        commit(services)
        before = utcnow()
        sender.run_once()
        after = utcnow()
        first = rows(notify_db)[0]
        assert (first.status, first.attempts, first.last_status, first.last_error) == ("pending", 1, 500, "HTTP 500 Internal Server Error")
        assert before + timedelta(seconds=10) <= first.next_attempt_at <= after + timedelta(seconds=10)
        assert sender.run_once() == 0  # not due yet
        clock.offset = timedelta(seconds=11)
        sender.run_once()
        second = rows(notify_db)[0]
        assert second.attempts == 2 and second.last_status == 503
        assert timedelta(seconds=19) < second.next_attempt_at - clock() <= timedelta(seconds=20)  # doubled
        clock.offset += timedelta(seconds=21)
        sender.run_once()
        assert rows(notify_db)[0].status == "sent" and len(slack.received) == 3


def test_a_429_waits_as_long_as_retry_after_says_and_pauses_that_receiver(notify_db):
    with Receiver(Response(429, {"Retry-After": "30"}), Response(200)) as slack:
        services, sender, clock = wire(notify_db, slack.url)
        commit(services)
        commit(services)
        before = utcnow()
        assert sender.run_once() == 1  # both claimed; the second is not tried once Slack said 429
        after = utcnow()
        assert len(slack.received) == 1
        limited, untried = rows(notify_db)
        assert (limited.status, limited.last_status, limited.attempts) == ("pending", 429, 0)  # not held against it
        assert before + timedelta(seconds=30) <= limited.next_attempt_at <= after + timedelta(seconds=30)
        assert (untried.status, untried.attempts, untried.lease_until) == ("pending", 0, None)
        commit(services)
        assert sender.run_once() == 0  # Slack is paused: nothing goes to it, not even a new message
        _, other, _ = wire(notify_db, slack.url)
        assert other.run_once() == 0  # nor from another dispatcher: the pending messages' due times moved
        assert len(slack.received) == 1
        clock.offset = timedelta(seconds=31)
        assert sender.run_once() == 3
        assert {r.status for r in rows(notify_db)} == {"sent"} and len(slack.received) == 4


def test_after_the_configured_attempts_a_message_is_dead_and_can_be_retried(notify_db, keys_for):
    with Receiver(Response(500)) as slack:
        services, sender, clock = wire(notify_db, slack.url, max_attempts=3)
        commit(services)
        for _ in range(3):
            sender.run_once()
            clock.offset += timedelta(hours=2)
        (dead,) = rows(notify_db)
        assert (dead.status, dead.attempts, dead.last_status) == ("dead", 3, 500)
        assert sender.run_once() == 0
        client, admin = keys_for(services)
        listed = client.get("/notifications?status=dead", headers=admin).get_json()
        assert [item["id"] for item in listed["items"]] == [dead.id]
        assert listed["counts"]["slack"]["dead"] == 1 and listed["items"][0]["last_error"] == "HTTP 500 Internal Server Error"
        assert client.get("/notifications?status=pending", headers=admin).get_json()["items"] == []
        retried = client.post(f"/notifications/{dead.id}/retry", headers=admin)
        assert retried.status_code == 200 and retried.get_json()["status"] == "pending"
        assert retried.get_json()["attempts"] == 0
        again = client.post(f"/notifications/{dead.id}/retry", headers=admin)
        assert again.status_code == 409 and again.get_json()["code"] == "not_dead"
        slack.responses = [Response(200)]
        assert sender.run_once() == 1 and rows(notify_db)[0].status == "sent"


@pytest.fixture
def keys_for():
    """A test client of an app on the given services, with an admin key."""
    def make(services):
        key = services.keys.create(f"admin-{uuid.uuid4().hex[:6]}", "admin")
        return create_app(services=services).test_client(), {"Authorization": f"Bearer {key}"}
    return make


def test_webhooks_get_signed_cloudevents_for_the_types_they_asked_for(notify_db):
    with Receiver() as consumer:
        services, sender, _ = wire(notify_db)
        subscription, secret = services.subscriptions.add(consumer.url, ["committed", "published"],
                                                          "s3cret-s3cret-s3cret")
        stream = commit(services)
        services.store.append(stream, [NewEvent("started", {})], actor="csm-tool")
        assert sender.run_once() == 1
        (delivery,) = consumer.received
        event = delivery.json()
        stored = services.store.load(stream)[0]
        assert event["specversion"] == "1.0" and event["id"] == stored.event_id
        assert event["type"] == "com.casestudies.casestudy.committed" and event["subject"] == stream
        assert event["source"] == "https://cs.example.com/case-studies"
        assert event["time"] == stored.occurred_at.isoformat() and event["datacontenttype"] == "application/json"
        assert event["data"]["data"] == services.people.opener().data(stored.data) == COMMITTED  # revealed as it leaves
        assert event["data"]["version"] == 1
        assert event["data"]["status"] == "not_started" and event["data"]["actor"] == "crm-automation"
        assert delivery.headers["content-type"].startswith("application/cloudevents+json")
        # the receiver's check: HMAC-SHA256 over "<timestamp>.<body>" with the shared secret
        parts = dict(part.split("=", 1) for part in delivery.headers[SIGNATURE_HEADER.lower()].split(","))
        expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + delivery.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(parts["v1"], expected)
        assert abs(int(parts["t"]) - utcnow().timestamp()) < 60
        wrong = hmac.new(b"another-secret", f"{parts['t']}.".encode() + delivery.body, hashlib.sha256).hexdigest()
        assert parts["v1"] != wrong


def test_a_batch_queues_one_delivery_per_event_in_its_transaction(notify_db):
    with Receiver() as consumer:
        services, sender, _ = wire(notify_db)
        services.subscriptions.add(consumer.url, ["*"], "s3cret-s3cret-s3cret")
        stream = unique_id("b")
        services.store.append(stream, [NewEvent("committed", COMMITTED), NewEvent("started", {}),
                                       NewEvent("held", {"reason": "reorg"})], actor="backfill")
        with pytest.raises(GuardFailed):
            services.store.append(stream, [NewEvent("resumed", {}), NewEvent("reassigned", {"csm": "Dana"})],
                                  actor="backfill")
        assert [r.kind for r in rows(notify_db)] == ["event"] * 3
        sender.run_once()
        assert [(d.json()["data"]["version"], d.json()["data"]["status"]) for d in consumer.received] == [
            (1, "not_started"), (2, "in_progress"), (3, "on_hold")]


def test_a_removed_subscription_gets_nothing_more_and_its_queue_dies(notify_db):
    with Receiver() as consumer:
        services, sender, _ = wire(notify_db)
        subscription, _ = services.subscriptions.add(consumer.url, ["committed"], "s3cret-s3cret-s3cret")
        commit(services)
        services.subscriptions.remove(subscription.id)
        (row,) = rows(notify_db)  # dead at once, not when next tried
        assert row.status == "dead" and row.last_error == "the webhook subscription was removed"
        commit(services)
        assert sender.run_once() == 0 and consumer.received == []
        assert len(rows(notify_db)) == 1


def test_a_retry_after_of_zero_still_waits_a_second(notify_db):
    with Receiver(Response(429, {"Retry-After": "0"})) as slack:
        services, sender, _ = wire(notify_db, slack.url)
        commit(services)
        assert sender.run_once() == 1
        (row,) = rows(notify_db)
        assert row.next_attempt_at - utcnow() > timedelta(seconds=0.5) and row.attempts == 0


def test_a_url_the_http_client_cannot_use_kills_the_message_not_the_dispatcher(notify_db):
    services, sender, _ = wire(notify_db, "http://[::1/hook")  # passes the settings' check
    commit(services)
    commit(services)
    assert sender.run_once() == 2
    assert [(r.status, r.last_error) for r in rows(notify_db)] == [("dead", "the receiver's URL cannot be used")] * 2
    with pytest.raises(SubscriptionError):
        services.subscriptions.add("http://[::1/hook", ["*"], "s3cret-s3cret-s3cret")


def test_a_dispatcher_whose_lease_ran_out_cannot_mark_the_message(notify_db):
    services, first, clock = wire(notify_db, CLOSED_PORT_URL)
    _, second, second_clock = wire(notify_db, CLOSED_PORT_URL)
    commit(services)
    stale = first.claim()
    assert second.claim() is None  # leased
    second_clock.offset = timedelta(seconds=31)  # past the 30 s lease
    fresh = second.claim()
    assert fresh is not None and fresh.message.id == stale.message.id and fresh.token != stale.token
    assert not first._mark(stale, status="sent")
    assert second._mark(fresh, status="sent")
    assert rows(notify_db)[0].status == "sent"


def test_two_dispatchers_with_a_slow_receiver_still_send_each_message_once(notify_db):
    with Receiver(on_request=lambda _: time.sleep(0.3)) as consumer:
        services, first, _ = wire(notify_db, lease_seconds=2, timeout_seconds=0.5)
        _, second, _ = wire(notify_db, lease_seconds=2, timeout_seconds=0.5)
        services.subscriptions.add(consumer.url, ["committed"], "s3cret-s3cret-s3cret")
        for _ in range(8):
            commit(services)
        threads = [threading.Thread(target=lambda s=s: [None for _ in iter(s.run_once, 0)]) for s in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ids = [d.json()["id"] for d in consumer.received]
        assert len(ids) == 8 and len(set(ids)) == 8  # 2.4 s of sending, over 2 s leases: none sent twice
        assert {(r.status, r.attempts) for r in rows(notify_db)} == {("sent", 1)}


def test_two_dispatchers_share_the_queue_without_sending_anything_twice(notify_db):
    with Receiver() as consumer:
        services, first, _ = wire(notify_db)
        _, second, _ = wire(notify_db)
        services.subscriptions.add(consumer.url, ["committed"], "s3cret-s3cret-s3cret")
        for _ in range(30):
            commit(services)
        barrier = threading.Barrier(2)

        def drain(sender):
            barrier.wait()
            while sender.run_once():
                pass

        threads = [threading.Thread(target=drain, args=(s,)) for s in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ids = [d.json()["id"] for d in consumer.received]
        assert len(ids) == 30 and len(set(ids)) == 30
        assert {r.status for r in rows(notify_db)} == {"sent"}


def test_a_record_that_becomes_stuck_is_announced_once(notify_db):
    with Receiver() as slack:
        services, sender, _ = wire(notify_db, slack.url)
        old = unique_id("stale")
        services.store.append(old, [NewEvent("committed", COMMITTED, occurred_at=utcnow() - timedelta(days=30))],
                              actor="crm")
        commit(services)  # new, not stuck
        project(services)  # the scan reads the stuck list, a projection
        sender.run_once()
        slack.received.clear()
        assert sender.scan_stuck() == 1
        assert sender.scan_stuck() == 0  # already announced
        sender.run_once()
        (message,) = slack.received
        text = message.json()["text"]
        assert text.startswith("1 case study became stuck:") and old in text and "has not started" in text
        services.store.append(old, [NewEvent("started", {})], actor="csm")
        project(services)
        assert sender.scan_stuck() == 0
        with notify_db.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(stuck_announcements)).scalar() == 0


def test_a_record_that_becomes_a_candidate_is_announced(notify_db):
    with Receiver() as slack:
        services, sender, _ = wire(notify_db, slack.url)
        stream = commit(services)
        for event in (NewEvent("started", {}),
                      NewEvent("metrics_recorded", {"kind": "baseline", "metrics": {"tickets": 100}}),
                      NewEvent("metrics_recorded", {"kind": "current", "metrics": {"tickets": 150}}),
                      NewEvent("nps_recorded", {"score": 9}),
                      NewEvent("nps_recorded", {"score": 10})):
            services.store.append(stream, [event], actor="csm")
        assert [r.kind for r in rows(notify_db)] == ["record_created", "new_candidate"]
        sender.run_once()
        text = slack.received[1].json()["text"]
        assert text.startswith("New case study candidate: *Acme Air*: tickets 50% better, NPS 9")


INTERNAL_TARGETS = [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook", "http://10.1.2.3/hook", "http://172.16.0.9/hook",
    "http://192.168.1.1/hook", "http://100.64.0.1/hook", "http://0.0.0.0/hook", "http://0x7f000001/hook",
    "http://2130706433/hook", "http://127.1/hook", "http://[fe80::1]/hook", "http://224.0.0.1/hook",
    "http://[64:ff9b::7f00:1]/hook", "http://[2002:7f00:1::]/hook", "http://[::7f00:1]/hook",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
]


@pytest.mark.parametrize("url", INTERNAL_TARGETS)
def test_webhooks_to_internal_addresses_are_refused_however_they_are_spelled(notify_db, url, keys_for):
    services, _, _ = wire(notify_db, allowed=())
    with pytest.raises(SubscriptionError):
        services.subscriptions.add(url, ["*"], "s3cret-s3cret-s3cret")
    client, admin = keys_for(services)
    refused = client.post("/webhooks", headers=admin, json={"url": url, "types": ["*"]})
    assert refused.status_code == 422, refused.get_json()
    assert "internal address" in refused.get_json()["detail"] or "cannot" in refused.get_json()["detail"]
    assert services.subscriptions.list() == []


def test_a_public_address_may_be_subscribed_and_an_allowed_network_too(notify_db):
    services, _, _ = wire(notify_db, allowed=("10.1.0.0/16",))
    services.subscriptions.add("https://93.184.215.14/hook", ["*"], "s3cret-s3cret-s3cret")
    services.subscriptions.add("http://10.1.2.3/hook", ["*"], "s3cret-s3cret-s3cret")
    with pytest.raises(SubscriptionError):
        services.subscriptions.add("http://10.2.0.1/hook", ["*"], "s3cret-s3cret-s3cret")
    assert len(services.subscriptions.list()) == 2


def test_a_target_that_became_internal_is_refused_at_delivery_and_never_reached(notify_db):
    """As after a DNS change (rebinding) or a narrowed allow-list: the address connected to is what counts."""
    with Receiver() as consumer:
        services, _, _ = wire(notify_db)  # loopback allowed when subscribing
        services.subscriptions.add(consumer.url, ["committed"], "s3cret-s3cret-s3cret")
        _, sender, _ = wire(notify_db, allowed=())  # a dispatcher for which it is not
        commit(services)
        assert sender.run_once() == 1
        (row,) = rows(notify_db)
        assert row.status == "dead" and "internal address" in row.last_error
        assert consumer.received == []


def test_a_failed_delivery_keeps_the_status_never_the_receiver_s_answer(notify_db, capsys):
    secret_answer = b"db password is hunter2; internal host db-7.corp"
    with Receiver(Response(500, body=secret_answer)) as consumer:
        services, sender, _ = wire(notify_db)
        services.subscriptions.add(consumer.url, ["committed"], "s3cret-s3cret-s3cret")
        commit(services)
        sender.run_once()
    (row,) = rows(notify_db)
    assert (row.last_status, row.last_error) == (500, "HTTP 500 Internal Server Error")
    assert b"hunter2" not in capsys.readouterr().out.encode()


def test_a_receiver_whose_name_does_not_resolve_at_delivery_is_tried_again_later(notify_db):
    services, sender, clock = wire(notify_db, allowed=("10.9.0.0/16",))
    services.subscriptions.add("http://10.9.0.1/hook", ["committed"], "s3cret-s3cret-s3cret")
    with notify_db.engine.begin() as conn:  # as if its name stopped resolving after it was added
        conn.execute(webhook_subscriptions.update().values(url="http://no-such-host.invalid/hook"))
    commit(services)
    assert sender.run_once() == 1
    (row,) = rows(notify_db)
    assert (row.status, row.attempts) == ("pending", 1) and "cannot be resolved" in row.last_error


# -- retention and discarding ----------------------------------------------------------------------
PERSONAL_PAYLOAD = {"text": "New case study: *Acme Air*, CSM Dana Whitfield"}


def queued(db: Database, status: str, now: datetime, *, sent_days_ago: float | None = None) -> int:
    """An outbox row in ``status``, written 60 days before ``now`` (and sent ``sent_days_ago``); its id."""
    written = now - timedelta(days=60)
    with db.engine.begin() as conn:
        return conn.execute(insert(outbox).values(
            destination="slack", kind="record_created", stream_id=unique_id("r"), dedupe_key=f"test:{uuid.uuid4()}",
            payload=PERSONAL_PAYLOAD, status=status, attempts=0 if status == "pending" else 1,
            next_attempt_at=written, created_at=written,
            sent_at=now - timedelta(days=sent_days_ago) if sent_days_ago is not None else None,
        ).returning(outbox.c.id)).scalar_one()


def test_sent_messages_older_than_the_retention_are_purged_in_batches_and_pending_and_dead_stay(notify_db):
    _, sender, _ = wire(notify_db, retention_days=30)
    now = utcnow()
    old = [queued(notify_db, "sent", now, sent_days_ago=31 + i) for i in range(7)]
    kept = [queued(notify_db, "sent", now, sent_days_ago=29.9), queued(notify_db, "sent", now, sent_days_ago=1),
            queued(notify_db, "pending", now), queued(notify_db, "dead", now)]  # written 60 days ago, never sent
    deletes = []

    def count_deletes(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE FROM OUTBOX"):
            deletes.append(statement)

    event.listen(notify_db.engine, "before_cursor_execute", count_deletes)
    try:
        with capture_logs() as logs:
            assert sender.purge_delivered(now=now, batch_size=3) == len(old)
    finally:
        event.remove(notify_db.engine, "before_cursor_execute", count_deletes)
    assert len(deletes) == 3  # 3 + 3 + 1, each its own transaction
    assert [r.id for r in rows(notify_db)] == kept
    (line,) = [entry for entry in logs if entry["event"] == "outbox_purged"]
    assert line["deleted"] == len(old) and line["retention_days"] == 30
    assert "Dana" not in repr(logs)  # counts, never payloads
    with capture_logs() as logs:
        assert sender.purge_delivered(now=now, batch_size=3) == 0
    assert not [entry for entry in logs if entry["event"] == "outbox_purged"]  # nothing deleted, nothing said


def test_a_purge_may_stop_after_some_batches_and_the_retention_is_configurable(notify_db):
    _, sender, _ = wire(notify_db, retention_days=0.5)
    now = utcnow()
    old = [queued(notify_db, "sent", now, sent_days_ago=1) for _ in range(5)]
    young = queued(notify_db, "sent", now, sent_days_ago=0.25)
    assert sender.purge_delivered(now=now, batch_size=2, max_batches=2) == 4
    assert [r.id for r in rows(notify_db)] == [old[-1], young]
    assert sender.purge_delivered(now=now) == 1
    assert [r.id for r in rows(notify_db)] == [young]


def test_the_dispatcher_loop_purges_delivered_messages(notify_db):
    _, sender, _ = wire(notify_db)  # the default retention: 30 days
    now = utcnow()
    queued(notify_db, "sent", now, sent_days_ago=45)
    recent = queued(notify_db, "sent", now, sent_days_ago=2)
    stop = threading.Event()
    sender.run(stop, poll_seconds=0.01, on_round=stop.set)  # one round
    assert [r.id for r in rows(notify_db)] == [recent]


def test_an_admin_discards_a_dead_message_and_only_a_dead_one(notify_db, keys_for):
    services, _, _ = wire(notify_db)
    now = utcnow()
    dead, pending, sent = (queued(notify_db, "dead", now), queued(notify_db, "pending", now),
                           queued(notify_db, "sent", now, sent_days_ago=1))
    client, admin = keys_for(services)
    for role in ("reader", "writer", "auditor"):
        key = services.keys.create(f"{role}-{uuid.uuid4().hex[:6]}", role)
        problem(client.delete(f"/notifications/{dead}", headers=auth(key)), 403, "forbidden")
    discarded = client.delete(f"/notifications/{dead}", headers=admin)
    assert discarded.status_code == 200
    body = discarded.get_json()
    assert (body["id"], body["status"], body["payload"]) == (dead, "dead", PERSONAL_PAYLOAD)  # as it was
    assert [r.id for r in rows(notify_db)] == [pending, sent]
    problem(client.delete(f"/notifications/{dead}", headers=admin), 404, "not_found")  # gone
    for refused, status in ((pending, "pending"), (sent, "sent")):
        conflict = problem(client.delete(f"/notifications/{refused}", headers=admin), 409, "not_dead")
        assert conflict["status_now"] == status
    for unknown in (MAX_MESSAGE_ID, MAX_MESSAGE_ID + 1, 0):
        problem(client.delete(f"/notifications/{unknown}", headers=admin), 404, "not_found")
    assert [r.id for r in rows(notify_db)] == [pending, sent]
    assert services.outbox.discard(pending) is None and services.outbox.discard(-1) is None


def test_the_cli_discards_a_dead_message_and_refuses_others(notify_db):
    now = utcnow()
    dead, pending = queued(notify_db, "dead", now), queued(notify_db, "pending", now)

    def discard(message_id: int):
        return CliRunner().invoke(cli, ["notifications", "discard", str(message_id)],
                                  env={"DATABASE_URL": notify_db.url})

    done = discard(dead)
    assert done.exit_code == 0 and f"message {dead} discarded" in done.output
    assert [r.id for r in rows(notify_db)] == [pending]
    again = discard(dead)
    assert again.exit_code == 1 and f"no message {dead}" in again.output
    refused = discard(pending)
    assert refused.exit_code == 1 and "is pending; only dead ones are discarded" in refused.output
    assert [r.id for r in rows(notify_db)] == [pending]
