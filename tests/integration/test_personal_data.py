"""Personal data on both databases: sealed at rest in every table, revealed on the way out, erased
with every chain intact, exported, and cleaned from the outbox."""
from __future__ import annotations

import html
import json
import threading
import uuid
from datetime import datetime
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from service import create_app, migrations
from service.audit.digests import check_digest, write_digest
from service.bootstrap import build, dispatcher
from service.config import DeliverySettings, Settings
from service.events.chain import check_chain
from service.events.event import NewEvent
from service.people.tables import data_subjects
from service.times import utcnow
from tests.conftest import BACKENDS, PERSONAL_DATA_KEY, auth, migrated_database, problem, project, unique_id
from tests.integration.test_dashboard import signed_in
from tests.receiver import Receiver


@pytest.fixture(scope="module", params=BACKENDS)
def people_db(request, tmp_path_factory):
    """A database of its own: webhook subscriptions and the outbox are global state."""
    with migrated_database(request, tmp_path_factory, "people", pool_size=10) as db:
        yield db


@pytest.fixture(scope="module")
def wired(people_db):
    services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=people_db.url, log_format="json",
                              webhook_cache_seconds=0, webhook_allowed_networks=("127.0.0.0/8",),
                              notify=DeliverySettings(backoff_seconds=10, timeout_seconds=2, lease_seconds=30)),
                     engine=people_db.engine)
    app = create_app(services=services)
    keys = {role: services.keys.create(f"{role}-{uuid.uuid4().hex[:6]}", role)
            for role in ("writer", "reader", "auditor", "admin")}
    return services, app, keys


def person() -> dict[str, str]:
    """A person no other test names: every value unique, so raw SQL can look for each."""
    tag = uuid.uuid4().hex[:10]
    return {"name": f"Zoë Quill {tag}", "title": f"Head of Ops {tag}", "email": f"zoe.{tag}@customer.example"}


def committed(account: str, champion: dict) -> dict:
    return {"account": {"id": account, "name": f"Customer {account}"}, "csm": "Dana", "champion": champion,
            "use_case": "faster onboarding", "close_date": "2026-10-01"}


def post(client, key, stream_id, event_type, data, status=201):
    answer = client.post(f"/case-studies/{stream_id}/events", json={"type": event_type, "data": data},
                         headers=auth(key))
    assert answer.status_code == status, answer.text
    return answer


def a_record_with_approval(client, key, champion, account, approver_name):
    """A record of ``account`` whose champion is ``champion``, taken to approval, with a quote by the
    champion and an answer from ``approver_name``."""
    stream = unique_id("pd")
    post(client, key, stream, "committed", committed(account, champion))
    post(client, key, stream, "started", {})
    post(client, key, stream, "quote_added", {"text": f"It works, says {champion['name']}", "speaker": champion["name"]})
    post(client, key, stream, "nps_recorded", {"score": 9, "respondent": champion["name"]})
    post(client, key, stream, "approval_requested", {"approvers": ["marketing", "legal"]})
    post(client, key, stream, "approval_granted", {"role": "marketing", "approver": approver_name})
    return stream


def every_table_as_text(engine) -> str:
    """Every row of every table in the database, as text (raw SQL, no model in between)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            names = [row[0] for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))]
        else:
            names = [row[0] for row in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))]
        return "\n".join(_as_text(row) for name in names for row in conn.execute(text(f'SELECT * FROM "{name}"')))


def _as_text(row) -> str:
    """A row's every value in full (a Row's repr shortens long values)."""
    return "\t".join(str(value) for value in row)


def test_no_personal_field_is_stored_in_clear_in_any_table(wired):
    services, app, keys = wired
    client = app.test_client()
    champion, approver = person(), person()
    with Receiver() as consumer:
        subscription, _ = services.subscriptions.add(consumer.url, ["*"], "s3cret-s3cret-s3cret")
        try:
            stream = a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), approver["name"])
            dispatcher(services).run_once()  # some messages delivered, so the history holds them too
        finally:
            services.subscriptions.remove(subscription.id)
    project(services)
    stored = every_table_as_text(services.engine)
    assert stream in stored and "pd1." in stored  # the data is there, sealed
    for value in (*champion.values(), approver["name"], "It works, says"):
        assert value not in stored, f"{value!r} is stored in clear"
    # What leaves the service is revealed: the API, and the webhook consumer.
    record = client.get(f"/case-studies/{stream}", headers=auth(keys["reader"])).get_json()
    assert record["champion"] == champion
    assert record["quotes"] == [{"text": f"It works, says {champion['name']}", "speaker": champion["name"]}]
    assert record["approvers"] == {"marketing": approver["name"]}
    assert record["nps"] == {"score": 9, "respondent": champion["name"]}
    assert any(champion["email"] in delivery.body.decode() for delivery in consumer.received)


def test_reading_answers_the_values_in_every_format(wired):
    services, app, keys = wired
    client = app.test_client()
    champion = {**person(), "name": 'Ann "=HYPERLINK" O\'Neil, <b>Jr</b>'}  # quotes, a formula, markup
    stream = a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), champion["name"])
    events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["auditor"])).get_json()["events"]
    assert events[0]["data"]["champion"] == champion
    rows = client.get("/audit/approvals?format=csv&role=marketing&limit=1000", headers=auth(keys["auditor"])).text
    assert '"Ann ""=HYPERLINK"" O\'Neil, <b>Jr</b>"' in rows  # one CSV cell, quoted
    page = signed_in(app, keys["auditor"]).get(f"/ui/records/{stream}").text
    assert html.escape(champion["name"]) in page and "<b>Jr</b>" not in page and "pd1." not in page


def test_erasing_a_champion_who_is_in_three_records(wired):
    services, app, keys = wired
    client = app.test_client()
    champion, colleague = person(), person()
    account = unique_id("acct")
    with Receiver() as consumer:
        subscription, _ = services.subscriptions.add(consumer.url, ["*"], "s3cret-s3cret-s3cret")
        try:
            # Three records name the champion; in the first she also answered an approval herself.
            streams = [a_record_with_approval(client, keys["writer"], champion, account, champion["name"]),
                       a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), colleague["name"]),
                       a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), colleague["name"])]
            other = a_record_with_approval(client, keys["writer"], colleague, account, colleague["name"])
            sender = dispatcher(services)
            sender.run_once(limit=5)  # five delivered (copies beyond reach); the rest wait in the outbox
        finally:
            services.subscriptions.remove(subscription.id)
    delivered = len(consumer.received)
    project(services)
    digest_before = write_digest(services.verification)

    before = client.get("/people", query_string={"email": champion["email"].upper()}, headers=auth(keys["auditor"]))
    assert before.status_code == 200
    exported = before.get_json()
    assert {record["id"] for record in exported["records"]} == set(streams)
    values = {(field["type"], field["field"], field["value"]) for r in exported["records"] for field in r["fields"]}
    assert ("committed", "champion.email", champion["email"]) in values
    assert ("approval_granted", "approver", champion["name"]) in values  # the same person, found by name
    assert ("quote_added", "text", f"It works, says {champion['name']}") in values

    for role in ("reader", "writer", "auditor"):
        problem(client.post("/people/erasure", json={"email": champion["email"], "reason": "Art. 17"},
                            headers=auth(keys[role])), 403, "forbidden")
    for role in ("reader", "writer"):
        problem(client.get("/people", query_string={"email": champion["email"]}, headers=auth(keys[role])),
                403, "forbidden")

    answer = client.post("/people/erasure", json={"email": champion["email"], "reason": "Art. 17, ticket 4411"},
                         headers=auth(keys["admin"]))
    assert answer.status_code == 201, answer.text
    receipt = answer.get_json()
    erased_on = f"erased on {utcnow().date().isoformat()}"
    assert {record["id"] for record in receipt["records"]} == set(streams)
    assert receipt["requested_by"].startswith("admin-") and receipt["reason"] == "Art. 17, ticket 4411"
    assert receipt["completed_at"] and receipt["key_destroyed"] and len(receipt["signature"]) == 64
    assert len(receipt["beyond_reach"]) == len(receipt["outbox"]["purged"]) >= 1
    assert len(receipt["beyond_reach"]) <= delivered
    assert all(copy["url"] == consumer.url for copy in receipt["beyond_reach"])
    assert champion["email"] not in answer.text and champion["name"] not in answer.text

    # The key is gone; every chain is intact, and a digest written before still checks out.
    with services.engine.connect() as conn:
        row = conn.execute(select(data_subjects).where(data_subjects.c.id == receipt["subject"])).one()
    assert row.wrapped_key is None and row.erased_at is not None
    assert all(check.intact for check in services.verification.verify_all())
    assert check_digest(services.store, digest_before)[0] == []
    stored = client.get(f"/case-studies/{streams[0]}/events?data=stored", headers=auth(keys["auditor"])).get_json()
    as_stored = [SimpleNamespace(**{**e, "recorded_at": datetime.fromisoformat(e["recorded_at"]),
                                    "occurred_at": datetime.fromisoformat(e["occurred_at"])}) for e in stored["events"]]
    assert check_chain(streams[0], as_stored).intact  # recomputed outside the service, from the API
    assert "pd1." in str(stored) and erased_on not in str(stored)
    assert check_digest(services.store, write_digest(services.verification))[0] == []

    # Every read path shows the placeholder; the colleague's record is untouched.
    project(services)
    for stream in streams:
        record = client.get(f"/case-studies/{stream}", headers=auth(keys["reader"])).get_json()
        assert record["champion"] == {"name": erased_on, "title": erased_on, "email": erased_on}
        assert record["quotes"][0]["speaker"] == erased_on and record["nps"]["respondent"] == erased_on
        events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["auditor"])).get_json()["events"]
        assert events[-1]["type"] == "personal_data_erased" and events[-1]["data"]["erasure"] == receipt["id"]
        assert champion["name"] not in str(events)
        assert client.get(f"/case-studies/{stream}/verify", headers=auth(keys["auditor"])).get_json()["status"] \
            == "intact"
        page = signed_in(app, keys["admin"]).get(f"/ui/records/{stream}")
        assert page.status_code == 200 and erased_on in page.text and champion["name"] not in page.text
    record = client.get(f"/case-studies/{streams[0]}", headers=auth(keys["reader"])).get_json()
    assert record["approvers"]["marketing"] == erased_on
    assert client.get(f"/case-studies/{other}", headers=auth(keys["reader"])).get_json()["champion"]["name"] \
        == colleague["name"]
    approvals = client.get("/audit/approvals?format=csv&limit=1000", headers=auth(keys["auditor"])).text
    assert erased_on in approvals and champion["name"] not in approvals
    for path in ("/projections/pipeline", "/projections/stuck", "/projections/blockers", "/reports/weekly",
                 "/projections/cycle-times", "/case-studies", "/projections/pipeline?format=csv"):
        answer = client.get(path, headers=auth(keys["admin"]))
        assert answer.status_code == 200 and champion["name"] not in answer.text, path
    assert client.get(f"/case-studies/{streams[1]}/approvals", headers=auth(keys["auditor"])).status_code == 200
    assert services.runner.rebuilder.verify()  # the projections agree with a rebuild

    # The outbox: sent copies purged, the rest redacted; nothing of hers left to send.
    assert f"pd1.{receipt['subject']}." not in _outbox_rows(services.engine)
    assert champion["email"] not in every_table_as_text(services.engine)

    # After: the export finds nothing but the receipt; a retry answers that receipt.
    after = client.get("/people", query_string={"email": champion["email"]}, headers=auth(keys["admin"])).get_json()
    assert after["records"] == [] and after["erasures"] == [receipt["id"]]
    again = client.post("/people/erasure", json={"email": champion["email"], "reason": "Art. 17, ticket 4411"},
                        headers=auth(keys["admin"]))
    assert again.status_code == 200 and again.get_json() == receipt
    assert client.get(f"/people/erasures/{receipt['id']}", headers=auth(keys["auditor"])).get_json() == receipt
    assert len(services.store.load(streams[0])) == 7  # one erasure event, not two


def _outbox_rows(engine) -> str:
    with engine.connect() as conn:
        return "\n".join(_as_text(row) for row in conn.execute(text("SELECT * FROM outbox")))


def test_a_person_without_email_is_found_by_name_within_the_account(wired):
    services, app, keys = wired
    client = app.test_client()
    champion = person()
    del champion["email"]
    account = unique_id("acct")
    stream = a_record_with_approval(client, keys["writer"], champion, account, "Someone Else")
    elsewhere = a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), "Someone Else")
    problem(client.get("/people", query_string={"name": champion["name"]}, headers=auth(keys["admin"])),
            400, "invalid_parameter")
    problem(client.post("/people/erasure", json={"email": "x@y.z", "name": "n", "reason": "r"},
                        headers=auth(keys["admin"])), 422, "invalid_request")
    answer = client.post("/people/erasure", json={"name": champion["name"].upper(), "account_id": account,
                                                  "reason": "left the customer"}, headers=auth(keys["admin"]))
    assert answer.status_code == 201 and [r["id"] for r in answer.get_json()["records"]] == [stream]
    # The same name in another account is another person, and is kept.
    assert client.get(f"/case-studies/{elsewhere}", headers=auth(keys["reader"])).get_json()["champion"]["name"] \
        == champion["name"]
    problem(client.post("/people/erasure", json={"email": "nobody@nowhere.example", "reason": "r"},
                        headers=auth(keys["admin"])), 404, "not_found")


def test_a_person_named_again_after_erasure_gets_a_new_key(wired):
    services, app, keys = wired
    client = app.test_client()
    champion = person()
    first = a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), "A B")
    client.post("/people/erasure", json={"email": champion["email"], "reason": "r"}, headers=auth(keys["admin"]))
    second = a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), "A B")
    assert client.get(f"/case-studies/{second}", headers=auth(keys["reader"])).get_json()["champion"] == champion
    assert client.get(f"/case-studies/{first}", headers=auth(keys["reader"])).get_json()["champion"]["name"] \
        .startswith("erased on ")


def test_a_key_destroyed_in_the_middle_of_a_projection_rebuild(wired):
    services, app, keys = wired
    client = app.test_client()
    champion = person()
    streams = [a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), "A B") for _ in range(3)]
    project(services)
    erased = threading.Event()

    def erase_once(_done: int) -> None:
        if not erased.is_set():
            erased.set()
            services.people.erase(_person(champion["email"]), reason="mid-rebuild", actor="test")

    services.runner.rebuilder.rebuild(progress=erase_once)
    assert erased.is_set()
    project(services)  # the erasure events, appended during the rebuild, are folded in after it
    assert services.runner.rebuilder.verify()
    for stream in streams:
        record = client.get(f"/case-studies/{stream}", headers=auth(keys["reader"])).get_json()
        assert record["champion"]["name"].startswith("erased on ")
    board = signed_in(app, keys["admin"]).get("/ui/board")
    assert board.status_code == 200 and champion["name"] not in board.text


def _person(email: str):
    from service.people.erasure import Person

    return Person(email=email)


def test_an_erasure_cut_short_is_finished_by_its_retry(wired):
    services, app, keys = wired
    client = app.test_client()
    champion = person()
    streams = [a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), "A B") for _ in range(2)]
    keeper = services.people
    real = keeper._complete
    keeper._complete = lambda receipt: receipt  # the process stops right after the key is destroyed
    try:
        receipt, erased = keeper.erase(_person(champion["email"]), reason="r", actor="test")
    finally:
        keeper._complete = real
    assert erased and receipt["completed_at"] is None
    assert [event.type for event in services.store.load(streams[0])][-1] == "approval_granted"
    assert client.get(f"/case-studies/{streams[0]}", headers=auth(keys["reader"])).get_json()["champion"]["name"] \
        .startswith("erased on ")  # unreadable already: the key went first
    finished, erased_now = keeper.erase(_person(champion["email"]), reason="r", actor="test")
    assert not erased_now and finished["id"] == receipt["id"] and finished["completed_at"]
    assert all(services.store.load(stream)[-1].type == "personal_data_erased" for stream in streams)
    again, _ = keeper.erase(_person(champion["email"]), reason="r", actor="test")
    assert again == finished and all(len(services.store.load(stream)) == 7 for stream in streams)


def test_stored_events_in_clear_are_sealed_by_the_migration_with_chains_and_digests_intact(request, tmp_path,
                                                                                          backend):
    from service.audit.verification import Verification
    from service.events.store import EventStore
    from tests.conftest import new_database

    with new_database(request, backend, tmp_path, migrated=False) as db:
        migrations.upgrade(db.engine, "0005_versioned_projections")
        before = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=db.url, log_format="json",
                                webhook_cache_seconds=0), engine=db.engine)
        before.subscriptions.add("https://93.184.215.14/hooks", ["*"], "s3cret-s3cret-s3cret")
        # as the service stored events before it sealed them, webhook messages with them
        plain = EventStore(db.engine, participant=before.store.participant)
        champion = person()
        stream = unique_id("old")
        plain.append(stream, [NewEvent("committed", committed("acct-old", champion))], actor="crm")
        plain.append(stream, [NewEvent("quote_added", {"text": "old words", "speaker": champion["name"]})],
                     actor="csm")
        plain.append(stream, [NewEvent("started", {})], actor="csm")
        other = unique_id("old")
        plain.append(other, [NewEvent("committed", committed("acct-other", person()))], actor="crm")
        digest = write_digest(Verification(db.engine, plain))
        assert champion["name"] in every_table_as_text(db.engine) and champion["name"] in _outbox_rows(db.engine)

        migrations.upgrade(db.engine)

        assert champion["name"] not in every_table_as_text(db.engine) and "old words" not in \
            every_table_as_text(db.engine)
        services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=db.url, log_format="json"),
                         engine=db.engine)
        assert all(check.intact for check in services.verification.verify_all())
        reseals = services.people.trusted_reseals()
        assert check_digest(services.store, digest, reseals=reseals)[0] == []  # old heads, followed through
        assert len(check_digest(services.store, digest)[0]) == 2  # without the signed reseals: rewritten
        with db.engine.connect() as conn:
            receipt = conn.execute(text("SELECT receipt FROM reseals")).scalar_one()
            resealed = conn.execute(text("SELECT count(*) FROM chain_reseals")).scalar_one()
        receipt = receipt if isinstance(receipt, dict) else json.loads(receipt)
        # every event of both streams: the first events changed, and the later ones are chained to them
        assert resealed == 4 and receipt["events_resealed"] == 4 and len(receipt["signature"]) == 64
        assert {head["id"] for head in receipt["streams"]} == {stream, other}
        with db.engine.begin() as conn:  # a reseal row edited by hand is not trusted, so it excuses nothing
            conn.execute(text("UPDATE chain_reseals SET old_hash = :h WHERE stream_id = :s AND version = 1"),
                         {"h": "f" * 64, "s": other})
        assert services.people.trusted_reseals() == {}
        assert len(check_digest(services.store, digest, reseals=services.people.trusted_reseals())[0]) == 2
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE chain_reseals SET old_hash = :h WHERE stream_id = :s AND version = 1"),
                         {"h": reseals[(other, 1)][0], "s": other})
        project(services)
        app = create_app(services=services)
        key = services.keys.create("auditor", "auditor")
        record = app.test_client().get(f"/case-studies/{stream}", headers=auth(key)).get_json()
        assert record["champion"] == champion and record["quotes"][0]["text"] == "old words"
        messages = services.outbox.list(limit=100)[0]
        assert len(messages) == 4 and "pd1." in str([m.payload for m in messages])  # one per event
        receipt, _ = services.people.erase(_person(champion["email"]), reason="r", actor="test")
        assert [r["id"] for r in receipt["records"]] == [stream]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def test_the_migration_refuses_to_leave_data_in_clear_without_a_master_key(request, tmp_path, backend,
                                                                           monkeypatch):
    from service.events.store import EventStore
    from tests.conftest import new_database

    with new_database(request, backend, tmp_path, migrated=False) as db:
        migrations.upgrade(db.engine, "0005_versioned_projections")
        EventStore(db.engine).append(unique_id("old"), [NewEvent("committed", committed("a", person()))], actor="x")
        monkeypatch.delenv("PERSONAL_DATA_KEY")
        with pytest.raises(RuntimeError, match="PERSONAL_DATA_KEY is not set"):
            migrations.upgrade(db.engine)


def test_without_a_master_key_events_naming_a_person_are_refused_and_others_stored(people_db):
    services = build(Settings(database_url=people_db.url, log_format="json"), engine=people_db.engine)
    client = create_app(services=services).test_client()
    key = services.keys.create(f"w-{uuid.uuid4().hex[:6]}", "writer")
    problem(client.post(f"/case-studies/{unique_id('nokey')}/events",
                        json={"type": "committed", "data": committed("a", person())}, headers=auth(key)),
            503, "personal_data_key_missing")


def test_writers_naming_the_same_new_person_at_once_give_her_one_key(wired):
    services, _app, _keys = wired
    for _ in range(5):
        champion = person()
        streams = [unique_id("race") for _ in range(4)]
        start = threading.Barrier(len(streams))
        failures = []

        def commit(stream: str) -> None:
            try:
                start.wait()
                services.store.append(stream, [NewEvent("committed", committed(unique_id("acct"), champion))],
                                      actor="crm")
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(error)

        threads = [threading.Thread(target=commit, args=(stream,)) for stream in streams]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        services.people.subjects._cache.clear()
        exported = services.people.export(_person(champion["email"]))
        assert sorted(record["id"] for record in exported["records"]) == sorted(streams)


def test_two_people_of_one_name_in_one_account_are_not_taken_for_one(wired):
    services, app, keys = wired
    client = app.test_client()
    account = unique_id("acct")
    first, second = person(), person()
    second["name"] = first["name"]  # same name, another email: another person
    one = a_record_with_approval(client, keys["writer"], first, account, "A B")
    two = a_record_with_approval(client, keys["writer"], second, account, "A B")
    exported = client.get("/people", query_string={"email": second["email"]}, headers=auth(keys["auditor"]))
    assert [record["id"] for record in exported.get_json()["records"]] == [two]
    client.post("/people/erasure", json={"email": first["email"], "reason": "r"}, headers=auth(keys["admin"]))
    assert client.get(f"/case-studies/{two}", headers=auth(keys["reader"])).get_json()["champion"] == second
    assert client.get(f"/case-studies/{one}", headers=auth(keys["reader"])).get_json()["champion"]["email"] \
        .startswith("erased on ")


def test_the_cli_exports_and_erases_a_person(wired, people_db):
    from click.testing import CliRunner

    from service.cli import main as cli

    services, app, keys = wired
    champion = person()
    stream = a_record_with_approval(app.test_client(), keys["writer"], champion, unique_id("acct"), "A B")

    def run(*args: str):
        return CliRunner().invoke(cli, ["people", *args], catch_exceptions=False,
                                  env={"DATABASE_URL": people_db.url, "PERSONAL_DATA_KEY": PERSONAL_DATA_KEY})

    before = run("export", "--email", champion["email"])
    assert before.exit_code == 0, before.output
    fields = {field["field"]: field["value"] for field in json.loads(before.stdout)["records"][0]["fields"]}
    assert fields["champion.email"] == champion["email"] and fields["speaker"] == champion["name"]
    assert run("erase", "--email", champion["email"]).exit_code == 2  # --reason is required
    assert run("erase", "--name", champion["name"], "--reason", "r").exit_code == 2  # a name needs --account
    erased = run("erase", "--email", champion["email"], "--reason", "Art. 17, ticket 9", "--actor", "dpo")
    receipt = json.loads(erased.stdout)
    assert erased.exit_code == 0 and [r["id"] for r in receipt["records"]] == [stream]
    assert receipt["requested_by"] == "dpo" and champion["email"] not in erased.stdout
    again = run("erase", "--email", champion["email"], "--reason", "Art. 17, ticket 9")
    assert again.exit_code == 0 and json.loads(again.stdout)["id"] == receipt["id"]
    assert json.loads(run("export", "--email", champion["email"]).stdout)["records"] == []
    assert run("export", "--email", "nobody@nowhere.example").exit_code == 1
    key = run("new-key").stdout.strip()
    assert Settings(personal_data_key=key).personal_data_key == key and key != run("new-key").stdout.strip()


def test_a_handle_left_to_an_erased_person_is_taken_over(wired):
    from sqlalchemy import insert as sql_insert

    from service.people.tables import subject_handles

    services, app, keys = wired
    client = app.test_client()
    champion, account = person(), unique_id("acct")
    a_record_with_approval(client, keys["writer"], champion, account, "A B")
    receipt, _ = services.people.erase(_person(champion["email"]), reason="r", actor="test")
    keyring = services.people.keyring
    # What a writer naming her while the erasure ran may leave behind:
    with services.engine.begin() as conn:
        for handle in (keyring.handle(name=champion["name"], account_id=account),
                       keyring.handle(email=champion["email"])):
            conn.execute(sql_insert(subject_handles).values(handle=handle, subject_id=receipt["subject"]))
    services.people.subjects._cache.clear()
    again = a_record_with_approval(client, keys["writer"], champion, account, "A B")
    record = client.get(f"/case-studies/{again}", headers=auth(keys["reader"])).get_json()
    assert record["champion"] == champion and record["quotes"][0]["speaker"] == champion["name"]
    exported = services.people.export(_person(champion["email"]))
    assert [r["id"] for r in exported["records"]] == [again] and exported["subject"] != receipt["subject"]


def test_a_request_digest_cannot_confirm_a_guess_of_an_erased_persons_data(wired):
    services, app, keys = wired
    client = app.test_client()
    champion = person()
    stream = a_record_with_approval(client, keys["writer"], champion, unique_id("acct"), "A B")
    quote = {"type": "quote_added", "data": {"text": "A guessable sentence.", "speaker": champion["name"]},
             "event_id": str(uuid.uuid4())}
    assert client.post(f"/case-studies/{stream}/events", json=quote, headers=auth(keys["writer"])).status_code == 201
    services.people.subjects._cache.clear()
    assert client.post(f"/case-studies/{stream}/events", json=quote, headers=auth(keys["writer"])).status_code == 200
    with services.engine.connect() as conn:
        stored = conn.execute(text("SELECT request_digest FROM events WHERE event_id = :id"),
                              {"id": quote["event_id"]}).scalar_one()
    guess = NewEvent("quote_added", quote["data"]).digest(stream)
    assert stored != guess  # the digest is over keyed hashes of the personal values, not the values


def test_a_deal_posted_again_after_its_champion_was_erased_does_not_name_her_again(wired):
    from tests.integration.test_deals import DEAL

    services, app, keys = wired
    client = app.test_client()
    champion = person()
    deal = {**DEAL, "deal_id": unique_id("deal"), "champion_name": champion["name"],
            "champion_title": champion["title"], "champion_email": champion["email"]}
    first = client.post("/integrations/deals", json=deal, headers=auth(keys["writer"]))
    assert first.status_code == 201
    client.post("/people/erasure", json={"email": champion["email"], "reason": "r"}, headers=auth(keys["admin"]))
    services.people.subjects._cache.clear()
    again = client.post("/integrations/deals", json=deal, headers=auth(keys["writer"]))  # the nightly re-import
    assert again.status_code == 200 and again.get_json()["decision"] == "exists"
    assert services.people.subjects.find(services.people.keyring.handle(email=champion["email"])) is None
