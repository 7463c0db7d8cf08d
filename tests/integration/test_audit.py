"""For auditors: approval history, tamper evidence, digests, and a store the database keeps append-only.

Run on SQLite and on PostgreSQL alike.
"""
from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError
from structlog.testing import capture_logs

from service import migrations
from service.cli import main as cli
from service.events.chain import GENESIS, hash_of
from service.events.event import NewEvent
from service.events.store import EventStore
from service.events.tables import UTCDateTime
from tests.conftest import auth, problem, unique_id
from tests.factories import COMMITTED

ROUNDS = [
    ("committed", COMMITTED, "2026-10-01T09:00:00Z"),
    ("started", {}, "2026-10-02T09:00:00Z"),
    ("approval_requested", {"approvers": ["marketing", "legal"], "draft_url": "https://d.example/1"},
     "2026-10-03T09:00:00Z"),
    ("approval_granted", {"role": "marketing", "approver": "Sam Lee"}, "2026-10-04T09:00:00Z"),
    ("changes_requested", {"role": "legal", "comment": "remove the revenue figure"}, "2026-10-08T09:00:00Z"),
    ("approval_requested", {"approvers": ["legal"]}, "2026-10-10T09:00:00Z"),
    ("approval_granted", {"role": "legal", "approver": "Kim Ode"}, "2026-10-12T21:00:00Z"),
    ("published", {"url": "https://example.com/s"}, "2026-10-13T09:00:00Z"),
]


def make_history(client, key, *, csm=None, on_behalf_of="Dana Whitfield") -> str:
    stream = unique_id("audit")
    for event_type, data, at in ROUNDS:
        data = {**data, "csm": csm} if csm and event_type == "committed" else data
        body = {"type": event_type, "data": data, "occurred_at": at, "on_behalf_of": on_behalf_of}
        answer = client.post(f"/case-studies/{stream}/events", json=body, headers=auth(key))
        assert answer.status_code == 201, answer.get_json()
    return stream


def test_the_approval_history_shows_every_round_who_answered_when_and_how_it_ended(client, keys, services):
    stream = make_history(client, keys["writer"])
    answer = client.get(f"/case-studies/{stream}/approvals", headers=auth(keys["auditor"])).get_json()
    first, second = answer["rounds"]
    writer = services.keys.authenticate(keys["writer"]).name
    assert first["approvers"] == ["marketing", "legal"] and first["draft_url"] == "https://d.example/1"
    assert first["requested"]["actor"] == writer and first["requested"]["on_behalf_of"] == "Dana Whitfield"
    assert first["requested"]["occurred_at"].startswith("2026-10-03T09:00:00")
    assert first["requested"]["recorded_at"] > first["requested"]["occurred_at"]
    assert [(d["role"], d["decision"], d["approver"], d["comment"], d["took_days"]) for d in first["decisions"]] == [
        ("marketing", "granted", "Sam Lee", None, 1.0),
        ("legal", "changes_requested", None, "remove the revenue figure", 5.0)]
    assert first["outcome"] == "changes_requested" and first["ended"]["version"] == 5
    assert second["outcome"] == "published" and second["decisions"][0]["took_days"] == 2.5
    assert second["pending"] == []


def test_the_history_as_of_a_moment_answers_what_was_known_then(client, keys, services):
    stream = make_history(client, keys["writer"])
    stored = services.store.load(stream)
    just_after_second_request = stored[5].recorded_at  # version 6: the second approval_requested
    then = client.get(f"/case-studies/{stream}/approvals", query_string={"as_of": just_after_second_request.isoformat()},
                      headers=auth(keys["auditor"])).get_json()
    assert [r["outcome"] for r in then["rounds"]] == ["changes_requested", "open"]
    assert [p["role"] for p in then["rounds"][1]["pending"]] == ["legal"]
    before = client.get(f"/case-studies/{stream}/approvals", query_string={"as_of": "2020-01-01"},
                        headers=auth(keys["auditor"]))
    problem(before, 404, "not_found")
    record_then = client.get(f"/case-studies/{stream}", query_string={"as_of": just_after_second_request.isoformat()},
                             headers=auth(keys["auditor"])).get_json()
    assert record_then["status"] == "awaiting_customer_approval" and record_then["version"] == 6


def test_approvals_across_records_filter_by_period_csm_and_role_and_page(client, keys):
    csm = unique_id("csm")
    streams = {make_history(client, keys["writer"], csm=csm) for _ in range(2)}
    query = {"from": "2026-10-04", "to": "2026-10-12", "csm": csm, "limit": 3}
    items, url = [], "/audit/approvals"
    while url:
        page = client.get(url, query_string=query if url == "/audit/approvals" else None,
                          headers=auth(keys["auditor"])).get_json()
        items += page["items"]
        url = page["next"]
    # in [Oct 4, Oct 12 end of day): granted (4th), changes_requested (8th), requested (10th), granted (12th)
    assert len(items) == 8 and {i["id"] for i in items} == streams
    assert [i["event"] for i in items if i["id"] == min(streams)] == [
        "granted", "changes_requested", "requested", "granted"]
    assert [i["round"] for i in items if i["id"] == min(streams)] == [1, 1, 2, 2]
    assert all(i["csm"] == csm and i["on_behalf_of"] == "Dana Whitfield" for i in items)
    legal = client.get("/audit/approvals", query_string={"csm": csm, "role": "legal", "limit": 100},
                       headers=auth(keys["auditor"])).get_json()["items"]
    assert len(legal) == 8 and all("legal" in i["roles"] for i in legal)
    as_csv = client.get("/audit/approvals", query_string={"csm": csm, "role": "marketing", "format": "csv"},
                        headers=auth(keys["auditor"]))
    rows = sorted(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))), key=lambda r: (r["id"], int(r["version"])))
    assert [(r["event"], r["approver"], r["took_days"]) for r in rows] == [
        ("requested", "", ""), ("granted", "Sam Lee", "1.0")] * 2


@pytest.mark.parametrize("query", [{"from": "yesterday"}, {"from": "2026-10-05", "to": "2026-10-01"},
                                   {"role": "ceo"}, {"cursor": "nope"}, {"limit": 0}])
def test_bad_audit_parameters_are_400(client, keys, query):
    problem(client.get("/audit/approvals", query_string=query, headers=auth(keys["auditor"])), 400,
            "invalid_parameter")


@pytest.mark.parametrize("path", ["/case-studies/{id}/approvals", "/case-studies/{id}/verify", "/audit/approvals"])
@pytest.mark.parametrize("role", ["reader", "writer"])
def test_readers_and_writers_may_not_use_the_audit_endpoints(client, keys, path, role):
    stream = make_history(client, keys["writer"])
    problem(client.get(path.format(id=stream), headers=auth(keys[role])), 403, "forbidden")
    assert client.get(path.format(id=stream), headers=auth(keys["admin"])).status_code == 200


def test_verify_says_intact_with_the_head_hash(client, keys, services):
    stream = make_history(client, keys["writer"])
    answer = client.get(f"/case-studies/{stream}/verify", headers=auth(keys["auditor"])).get_json()
    stored = services.store.load(stream)
    assert answer == {"id": stream, "status": "intact", "events": 8, "version": 8, "head_hash": stored[-1].hash}
    assert stored[0].prev_hash == GENESIS and all(b.prev_hash == a.hash for a, b in zip(stored, stored[1:]))


# What each database is asked to do to stored events, and the triggers that refuse it (which a
# superuser could drop: the tamper tests below do, as such a person would).
TAMPERING = {"sqlite": ["UPDATE events SET data = '{}' WHERE stream_id = :s",
                        "UPDATE events SET actor = 'mallory' WHERE stream_id = :s",
                        "DELETE FROM events WHERE stream_id = :s"]}
TAMPERING["postgres"] = [*TAMPERING["sqlite"], "TRUNCATE events CASCADE"]  # SQLite has no TRUNCATE
APPEND_ONLY_TRIGGERS = {"sqlite": ["events_no_update", "events_no_delete"], "postgres": ["events_append_only ON events"]}


def test_the_database_refuses_to_change_or_remove_stored_events(database, client, keys):
    stream = make_history(client, keys["writer"])
    for statement in TAMPERING[database.backend]:
        with pytest.raises(DBAPIError, match="append-only"):
            with database.engine.connect() as conn:
                conn.execute(text(statement), {"s": stream})
                conn.commit()
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events WHERE stream_id = :s"), {"s": stream}).scalar() == 8


def test_refused_writes_are_logged_with_the_key_name_and_never_stored(client, keys, services):
    stream = make_history(client, keys["writer"])
    with capture_logs() as logs:
        client.post(f"/case-studies/{stream}/events", json={"type": "started"}, headers=auth(keys["writer"]))
        client.post(f"/case-studies/{stream}/events", json={"type": "started"}, headers=auth(keys["reader"]))
    refused = [line for line in logs if line["event"] == "write_refused"]
    names = {services.keys.authenticate(keys[r]).name for r in ("writer", "reader")}
    assert [r["code"] for r in refused] == ["transition_not_allowed", "forbidden"]
    assert {r["key"] for r in refused} == names
    assert len(services.store.load(stream)) == 8


# -- tampering, on a database of its own (the test drops the triggers as a superuser would) ----
def _drop_triggers(db) -> None:
    with db.engine.connect() as conn:
        for trigger in APPEND_ONLY_TRIGGERS[db.backend]:
            conn.execute(text(f"DROP TRIGGER {trigger}"))
        conn.commit()


def _populate(db) -> tuple[EventStore, str]:
    migrations.upgrade(db.engine)
    store = EventStore(db.engine)
    stream = "tamper-1"
    base = datetime(2026, 10, 1, 9, tzinfo=UTC)
    for i, (event_type, data, _) in enumerate(ROUNDS):
        store.append(stream, [NewEvent(event_type, data, occurred_at=base + timedelta(days=i))], actor="crm")
    store.append("other-1", [NewEvent("committed", COMMITTED)], actor="crm")
    return store, stream


def _run(db, *args):
    return CliRunner().invoke(cli, list(args), env={"DATABASE_URL": db.url}, catch_exceptions=False)


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_an_edited_event_is_caught_at_its_version(fresh_database):
    store, stream = _populate(fresh_database)
    _drop_triggers(fresh_database)
    with fresh_database.engine.connect() as conn:
        conn.execute(text("UPDATE events SET data = :d WHERE stream_id = :s AND version = 4"),
                     {"d": '{"role": "marketing", "approver": "Someone Else"}', "s": stream})
        conn.commit()
    check = store.load(stream)
    found = _run(fresh_database, "audit", "verify", "--id", stream)
    assert found.exit_code == 1
    assert f"BROKEN {stream} at version 4: content does not match its hash" in found.output
    assert check[3].hash in found.output
    everything = _run(fresh_database, "audit", "verify")
    assert everything.exit_code == 1 and f"BROKEN {stream} at version 4" in everything.output
    assert "other-1" not in everything.output


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_a_stream_rewritten_and_rehashed_end_to_end_is_caught_by_the_digest(fresh_database, tmp_path):
    store, stream = _populate(fresh_database)
    digest = tmp_path / "digest.json"
    made = _run(fresh_database, "audit", "digest", "--output", str(digest))
    assert made.exit_code == 0, made.output
    assert _run(fresh_database, "audit", "verify", "--digest", str(digest)).exit_code == 0

    # rewrite who approved, then recompute every hash after it so the chain checks out again
    _drop_triggers(fresh_database)
    with fresh_database.engine.connect() as conn:
        conn.execute(text("UPDATE events SET data = :d WHERE stream_id = :s AND version = 4"),
                     {"d": '{"role": "marketing", "approver": "Someone Else"}', "s": stream})
        conn.commit()
        prev = GENESIS
        for event in store.load(stream):
            digest_of = hash_of(event, prev)
            conn.execute(text("UPDATE events SET prev_hash = :p, hash = :h WHERE event_id = :e"),
                         {"p": prev, "h": digest_of, "e": event.event_id})
            prev = digest_of
        conn.execute(text("UPDATE case_studies SET head_hash = :h WHERE id = :s"), {"h": prev, "s": stream})
        conn.commit()
    rehashed = _run(fresh_database, "audit", "verify")
    assert rehashed.exit_code == 0, rehashed.output  # the chain alone cannot tell
    caught = _run(fresh_database, "audit", "verify", "--digest", str(digest))
    assert caught.exit_code == 1
    assert f"BROKEN {stream}: history was rewritten since the digest" in caught.output
    assert "1 of 2 streams match the digest" in caught.output


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_a_digest_file_that_was_edited_is_refused(fresh_database, tmp_path):
    _populate(fresh_database)
    path = tmp_path / "digest.json"
    assert _run(fresh_database, "audit", "digest", "--output", str(path)).exit_code == 0
    document = orjson.loads(path.read_bytes())
    document["streams"][0]["head_hash"] = "0" * 64
    path.write_bytes(orjson.dumps(document))
    refused = _run(fresh_database, "audit", "verify", "--digest", str(path))
    assert refused.exit_code != 0 and "altered" in refused.output


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_export_writes_every_row_of_the_period_as_csv_or_jsonl(fresh_database, tmp_path):
    _populate(fresh_database)
    out = tmp_path / "approvals.csv"
    done = _run(fresh_database, "audit", "export", "--from", "2026-10-01", "--to", "2026-10-31", "-o", str(out))
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(out.open()))
    assert [r["event"] for r in rows] == ["requested", "granted", "changes_requested", "requested", "granted"]
    lines = _run(fresh_database, "audit", "export", "--role", "marketing", "--format", "jsonl").output
    items = [orjson.loads(line) for line in lines.splitlines() if line.startswith("{")]
    assert [(i["event"], i["approver"]) for i in items] == [("requested", None), ("granted", "Sam Lee")]


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_migrating_an_existing_store_chains_the_events_already_there(fresh_database):
    engine = fresh_database.engine
    migrations.upgrade(engine, "0001_core")
    now = datetime(2026, 9, 1, tzinfo=UTC)
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO case_studies (id, status, version, state) VALUES ('old', 'in_progress', 2, '{}')"))
        for version, kind in [(1, "committed"), (2, "started")]:
            conn.execute(text("INSERT INTO events (event_id, stream_id, version, type, data, actor, recorded_at, "
                              "occurred_at, request_digest) VALUES (:e, 'old', :v, :t, '{}', 'crm', :at, :at, '')")
                         .bindparams(bindparam("at", type_=UTCDateTime)),
                         {"e": str(uuid.uuid4()), "v": version, "t": kind, "at": now})
        conn.commit()
    migrations.upgrade(engine)
    store = EventStore(engine)
    stored = store.load("old")
    assert stored[0].prev_hash == GENESIS and stored[1].prev_hash == stored[0].hash
    assert stored[1].hash == hash_of(stored[1], stored[0].hash)
    with engine.connect() as conn:
        head = conn.execute(text("SELECT head_hash FROM case_studies WHERE id = 'old'")).scalar()
    assert head == stored[1].hash


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_verifying_everything_catches_removed_events_that_leave_each_chain_consistent(fresh_database, tmp_path):
    store, stream = _populate(fresh_database)
    _drop_triggers(fresh_database)
    with fresh_database.engine.connect() as conn:
        conn.execute(text("DELETE FROM events WHERE stream_id = :s AND version = 8"), {"s": stream})
        conn.execute(text("DELETE FROM events WHERE stream_id = 'other-1'"))
        conn.commit()
    found = _run(fresh_database, "audit", "verify")
    assert found.exit_code == 1
    assert f"BROKEN {stream} at version 8: events are missing: the record is at version 8" in found.output
    assert "BROKEN other-1 at version 1: events are missing" in found.output
    assert "2 of 2 streams are broken" in found.output
    refused = _run(fresh_database, "audit", "digest", "-o", str(tmp_path / "d.json"))
    assert refused.exit_code != 0 and "no digest was written" in refused.output


def _digest_with(tmp_path, change):
    from service.audit.digests import _sha256

    document = {"format": "casestudies-digest/1", "chain_format": "casestudies-chain/1",
                "created_at": "2026-11-23T00:00:00.000000Z", "stream_count": 1, "event_count": 1,
                "streams": [{"id": "tamper-1", "version": 1, "head_hash": "0" * 64}]}
    change(document)
    document = {**document, "sha256": _sha256(document)}
    path = tmp_path / "digest.json"
    path.write_bytes(orjson.dumps(document))
    return path


@pytest.mark.parametrize("change", [
    lambda d: d.pop("streams"), lambda d: d.pop("created_at"), lambda d: d.update(streams=5),
    lambda d: d.update(streams=[["tamper-1", 1]]), lambda d: d["streams"][0].pop("id"),
    lambda d: d["streams"][0].update(version="2"), lambda d: d["streams"][0].update(version=2**40),
    lambda d: d["streams"][0].update(id=5), lambda d: d.update(event_count="many"),
])
@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_a_malformed_digest_is_refused_with_a_reason_not_a_traceback(fresh_database, tmp_path, change):
    _populate(fresh_database)
    result = CliRunner().invoke(cli, ["audit", "verify", "--digest", str(_digest_with(tmp_path, change))],
                                env={"DATABASE_URL": fresh_database.url})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    # each file's sha256 checks out (it was recomputed after the change): its content is refused
    assert "not a casestudies-digest/1 file: its streams, versions or hashes are malformed" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("raw", [["2026-10-03T09:00:00", 1], ["2026-10-03T09:00:00+00:00", 10**30],
                                 ["0001-01-01T00:00:00+05:00", 1], ["2026-10-03T09:00:00+00:00", "1"]])
def test_a_crafted_audit_cursor_is_400(client, keys, raw):
    import base64
    import json

    cursor = base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode().rstrip("=")
    problem(client.get("/audit/approvals", query_string={"cursor": cursor}, headers=auth(keys["auditor"])),
            400, "invalid_parameter")


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_the_export_keeps_formulas_as_text_and_refuses_bad_periods(fresh_database, tmp_path):
    migrations.upgrade(fresh_database.engine)
    store = EventStore(fresh_database.engine)
    base = datetime(2026, 10, 1, tzinfo=UTC)
    for i, (kind, data) in enumerate([("committed", {**COMMITTED, "csm": "=cmd|' /C calc'!A0"}), ("started", {}),
                                      ("approval_requested", {"approvers": ["legal"]}),
                                      ("changes_requested", {"role": "legal", "comment": '=HYPERLINK("x")'})]):
        store.append("f-1", [NewEvent(kind, data, occurred_at=base + timedelta(days=i))], actor="crm")
    out = _run(fresh_database, "audit", "export").output
    assert "'=HYPERLINK" in out and "'=cmd" in out
    for args in (["--from", "0001-01-01T00:00:00+01:00"], ["--from", "2026-10-05", "--to", "2026-10-01"]):
        result = CliRunner().invoke(cli, ["audit", "export", *args], env={"DATABASE_URL": fresh_database.url})
        assert result.exit_code == 2 and "Traceback" not in result.output
