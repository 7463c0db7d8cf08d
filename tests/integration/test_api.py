"""The HTTP contract of API.md through the real app, on SQLite and on PostgreSQL."""
from __future__ import annotations

import csv
import io
import uuid

import pytest
from structlog.testing import capture_logs

from tests.conftest import auth, problem, project, unique_id
from tests.factories import COMMITTED, PATHS, VALID_DATA


def post(client, key, stream, body, **headers):
    return client.post(f"/case-studies/{stream}/events", json=body, headers={**auth(key), **headers})


def make(client, key, status: str, **committed) -> str:
    stream = unique_id(status)
    for event_type, data in PATHS[status]:
        data = {**data, **committed} if event_type == "committed" else data
        assert post(client, key, stream, {"type": event_type, "data": data}).status_code == 201
    return stream


# -- the whole path ------------------------------------------------------------------------
def test_a_case_study_goes_from_commitment_to_publication(client, keys):
    writer, stream = keys["writer"], unique_id("acme")
    created = post(client, writer, stream, {"type": "committed", "data": COMMITTED})
    assert created.status_code == 201
    assert created.headers["ETag"] == '"1"' and created.headers["Location"] == f"/case-studies/{stream}"
    body = created.get_json()
    assert body["id"] == stream and body["version"] == 1 and body["status"] == "not_started"
    uuid.UUID(body["event_id"])
    steps = [("started", {}), ("approval_requested", {"approvers": ["marketing", "legal"]}),
             ("approval_granted", {"role": "marketing", "approver": "Sam Lee"}),
             ("approval_granted", {"role": "legal", "approver": "Kim Ode"}),
             ("published", {"url": "https://example.com/stories/acme"})]
    for version, (event_type, data) in enumerate(steps, start=2):
        answer = post(client, writer, stream, {"type": event_type, "data": data, "expected_version": version - 1})
        assert answer.status_code == 201, answer.get_json()
        assert answer.get_json()["version"] == version
    record = client.get(f"/case-studies/{stream}", headers=auth(keys["reader"]))
    assert record.status_code == 200 and record.headers["ETag"] == '"6"'
    state = record.get_json()
    assert state["status"] == "published" and state["status_label"] == "Published"
    assert state["approvals"] == {"marketing": "granted", "legal": "granted"}
    assert state["account"] == COMMITTED["account"] and state["csm"] == "Dana"
    assert state["allowed_events"] == ["reassigned", "metrics_recorded", "quote_added", "nps_recorded",
                                       "shared_with_champion", "views_reported"]
    assert state["published_url"] == "https://example.com/stories/acme"
    stream_events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["auditor"])).get_json()
    assert [e["type"] for e in stream_events["events"]] == ["committed"] + [t for t, _ in steps]
    assert len({e["actor"] for e in stream_events["events"]}) == 1
    first = stream_events["events"][0]
    assert set(first) == {"position", "event_id", "stream_id", "version", "type", "data", "actor",
                          "recorded_at", "occurred_at", "correlation_id", "causation_id", "on_behalf_of",
                          "prev_hash", "hash"}


def test_the_actor_is_the_key_name_never_the_body(client, keys, services):
    stream = make(client, keys["writer"], "not_started")
    events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["admin"])).get_json()["events"]
    writer_name = next(k.name for k in services.keys.list() if k.role == "writer" and
                       services.keys.authenticate(keys["writer"]).name == k.name)
    assert events[0]["actor"] == writer_name
    refused = post(client, keys["writer"], stream, {"type": "started", "actor": "mallory"})
    problem(refused, 422, "invalid_event")


def test_if_none_match_with_the_current_etag_answers_304(client, keys):
    stream = make(client, keys["writer"], "in_progress")
    fresh = client.get(f"/case-studies/{stream}", headers={**auth(keys["reader"]), "If-None-Match": '"2"'})
    assert fresh.status_code == 304
    stale = client.get(f"/case-studies/{stream}", headers={**auth(keys["reader"]), "If-None-Match": '"1"'})
    assert stale.status_code == 200


def test_as_of_answers_what_had_been_recorded_by_then(client, keys):
    stream = make(client, keys["writer"], "in_progress")
    events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["admin"])).get_json()["events"]
    first_recorded = events[0]["recorded_at"]
    then = client.get(f"/case-studies/{stream}", query_string={"as_of": first_recorded},
                      headers=auth(keys["reader"]))
    assert then.status_code == 200
    assert then.get_json()["status"] == "not_started" and then.get_json()["version"] == 1
    before = client.get(f"/case-studies/{stream}", query_string={"as_of": "2020-01-01"},
                        headers=auth(keys["reader"]))
    problem(before, 404, "not_found")


# -- writes: every refusal -------------------------------------------------------------------
def test_a_stale_expected_version_is_409_version_conflict(client, keys):
    stream = make(client, keys["writer"], "in_progress")
    body = problem(post(client, keys["writer"], stream, {"type": "held", "data": {"reason": "x"},
                                                          "expected_version": 1}), 409, "version_conflict")
    assert body["current_version"] == 2 and body["expected_version"] == 1


def test_if_match_carries_the_expected_version(client, keys):
    stream = make(client, keys["writer"], "in_progress")
    problem(post(client, keys["writer"], stream, {"type": "held", "data": {"reason": "x"}}, **{"If-Match": '"1"'}),
            409, "version_conflict")
    ok = post(client, keys["writer"], stream, {"type": "held", "data": {"reason": "x"}}, **{"If-Match": '"2"'})
    assert ok.status_code == 201 and ok.headers["ETag"] == '"3"'


def test_a_retry_with_the_same_event_id_answers_200_with_the_original_result(client, keys):
    stream, event_id = make(client, keys["writer"], "not_started"), str(uuid.uuid4())
    body = {"type": "started", "event_id": event_id}
    first = post(client, keys["writer"], stream, body)
    again = post(client, keys["writer"], stream, body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    by_header = post(client, keys["writer"], stream, {"type": "started"}, **{"Idempotency-Key": event_id})
    assert by_header.status_code == 200 and by_header.get_json() == first.get_json()
    events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["admin"])).get_json()["events"]
    assert len(events) == 2


def test_the_same_event_id_with_another_body_is_409_idempotency_conflict(client, keys):
    stream, event_id = make(client, keys["writer"], "not_started"), str(uuid.uuid4())
    assert post(client, keys["writer"], stream, {"type": "quote_added", "data": VALID_DATA["quote_added"],
                                                  "event_id": event_id}).status_code == 201
    problem(post(client, keys["writer"], stream, {"type": "quote_added", "event_id": event_id,
                                                   "data": {"text": "other", "speaker": "Jo"}}),
            409, "idempotency_conflict")


def test_committing_twice_is_409_already_exists(client, keys):
    stream = make(client, keys["writer"], "not_started")
    problem(post(client, keys["writer"], stream, {"type": "committed", "data": COMMITTED}), 409, "already_exists")


def test_an_event_on_a_stream_that_does_not_exist_is_404(client, keys):
    problem(post(client, keys["writer"], unique_id(), {"type": "started"}), 404, "not_found")


def test_an_event_the_status_does_not_allow_is_409_with_status_and_allowed_events(client, keys):
    stream = make(client, keys["writer"], "not_started")
    body = problem(post(client, keys["writer"], stream, {"type": "published", "data": VALID_DATA["published"]}),
                   409, "transition_not_allowed")
    assert body["current_status"] == "not_started"
    assert "started" in body["allowed_events"] and "published" not in body["allowed_events"]
    assert body["reason"]


def test_an_event_a_guard_refuses_is_409_guard_failed_with_the_reason(client, keys):
    stream = make(client, keys["writer"], "awaiting_customer_approval")
    body = problem(post(client, keys["writer"], stream, {"type": "published", "data": VALID_DATA["published"]}),
                   409, "guard_failed")
    assert body["reason"] == "cannot publish: approval pending from marketing"
    assert body["current_status"] == "awaiting_customer_approval"


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "teleported"}, "type"),
    ({"type": "approval_requested", "data": {"approvers": ["ceo"]}}, "data.approvers.0"),
    ({"type": "committed", "data": {**COMMITTED, "close_date": "yesterday"}}, "data.close_date"),
    ({"type": "started", "occurred_at": "2999-01-01T00:00:00Z"}, "occurred_at"),
    ([], ""),
    ([{"type": "started"}, {"type": "approval_requested", "data": {"approvers": ["ceo"]}}], "1.data.approvers.0"),
    ([{"type": "started"}, {"type": "teleported"}], "1.type"),
    ([{"type": "started"}, {"type": "held", "data": {"reason": "x"}, "expected_version": 2}],
     "1.expected_version"),
    ([{"type": "started", "occurred_at": "2999-01-01T00:00:00Z"}], "0.occurred_at"),
    ([{"type": "quote_added", "data": VALID_DATA["quote_added"]}] * 101, ""),
    ([{"type": "started", "event_id": "5b0b5ba2-5a55-4b8e-9f0e-1d1c2a3b4c5d"},
      {"type": "held", "data": {"reason": "x"}, "event_id": "5b0b5ba2-5a55-4b8e-9f0e-1d1c2a3b4c5d"}], "event_id"),
    ("just text", ""),
])
def test_invalid_events_are_422_naming_the_field(client, keys, body, field):
    stream = make(client, keys["writer"], "not_started")
    answer = problem(post(client, keys["writer"], stream, body), 422, "invalid_event")
    assert field in [e["field"] for e in answer["errors"]]


# -- batches: several events in one atomic append ------------------------------------------------
def test_a_batch_back_fills_a_history_in_one_append(client, keys):
    stream = unique_id("batch")
    batch = [{"type": "committed", "data": COMMITTED, "occurred_at": "2026-09-01T09:00:00Z"},
             {"type": "started", "occurred_at": "2026-09-03T09:00:00Z"},
             {"type": "metrics_recorded", "data": VALID_DATA["metrics_recorded"],
              "occurred_at": "2026-09-04T09:00:00Z", "correlation_id": "crm-backfill-1"}]
    answer = post(client, keys["writer"], stream, batch)
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["version"] == 3 and body["status"] == "in_progress" and answer.headers["ETag"] == '"3"'
    assert [(e["version"], e["type"]) for e in body["events"]] == [
        (1, "committed"), (2, "started"), (3, "metrics_recorded")]
    assert [e["position"] for e in body["events"]] == sorted(e["position"] for e in body["events"])
    stored = client.get(f"/case-studies/{stream}/events", headers=auth(keys["auditor"])).get_json()["events"]
    assert [e["occurred_at"][:10] for e in stored] == ["2026-09-01", "2026-09-03", "2026-09-04"]
    assert [e["event_id"] for e in stored] == [e["event_id"] for e in body["events"]]
    assert stored[2]["correlation_id"] == "crm-backfill-1"
    assert len({e["recorded_at"] for e in stored}) == 1  # one append


def test_a_batch_with_one_refused_event_stores_none_and_names_it(client, keys):
    stream = make(client, keys["writer"], "not_started")
    batch = [{"type": "started"}, {"type": "quote_added", "data": VALID_DATA["quote_added"]},
             {"type": "published", "data": VALID_DATA["published"]}]
    body = problem(post(client, keys["writer"], stream, batch), 409, "transition_not_allowed")
    assert body["event_index"] == 2 and body["event_type"] == "published"
    assert body["current_status"] == "in_progress"  # what the refused event met, after the ones before it
    record = client.get(f"/case-studies/{stream}", headers=auth(keys["reader"])).get_json()
    assert record["version"] == 1 and record["status"] == "not_started"
    new = unique_id("batch")
    problem(post(client, keys["writer"], new, [{"type": "committed", "data": COMMITTED},
                                               {"type": "reassigned", "data": {"csm": COMMITTED["csm"]}}]),
            409, "guard_failed")
    problem(client.get(f"/case-studies/{new}", headers=auth(keys["reader"])), 404, "not_found")


def test_a_batch_has_one_expected_version(client, keys):
    stream = make(client, keys["writer"], "in_progress")
    batch = [{"type": "quote_added", "data": VALID_DATA["quote_added"], "expected_version": 1},
             {"type": "nps_recorded", "data": {"score": 9}}]
    body = problem(post(client, keys["writer"], stream, batch), 409, "version_conflict")
    assert body["expected_version"] == 1 and body["current_version"] == 2
    problem(post(client, keys["writer"], stream, batch[1:], **{"If-Match": '"1"'}), 409, "version_conflict")
    batch[0]["expected_version"] = 2
    assert post(client, keys["writer"], stream, batch).status_code == 201
    assert post(client, keys["writer"], stream, [batch[1]], **{"If-Match": '"4"'}).get_json()["version"] == 5


def test_a_retried_batch_answers_the_original_result_and_stores_nothing(client, keys):
    stream = make(client, keys["writer"], "not_started")
    batch = [{"type": "started", "event_id": str(uuid.uuid4())},
             {"type": "quote_added", "data": VALID_DATA["quote_added"], "event_id": str(uuid.uuid4())}]
    first = post(client, keys["writer"], stream, batch)
    again = post(client, keys["writer"], stream, batch)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json()
    # part of a stored batch with a new event is not the same request
    problem(post(client, keys["writer"], stream, [batch[1], {"type": "nps_recorded", "data": {"score": 7},
                                                             "event_id": str(uuid.uuid4())}]),
            409, "idempotency_conflict")
    problem(post(client, keys["writer"], stream, [{**batch[1], "data": {"text": "other", "speaker": "Jo"}}]),
            409, "idempotency_conflict")
    problem(post(client, keys["writer"], stream, batch, **{"Idempotency-Key": str(uuid.uuid4())}),
            422, "invalid_event")
    events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["admin"])).get_json()["events"]
    assert [e["type"] for e in events] == ["committed", "started", "quote_added"]


def test_an_id_outside_the_allowed_form_is_422(client, keys):
    answer = problem(post(client, keys["writer"], "bad%20id", {"type": "committed", "data": COMMITTED}),
                     422, "invalid_event")
    assert answer["errors"][0]["field"] == "id"
    problem(post(client, keys["writer"], "x" * 129, {"type": "committed", "data": COMMITTED}), 422, "invalid_event")


def test_a_body_over_64_kib_is_413_and_is_not_parsed(client, keys):
    stream = make(client, keys["writer"], "not_started")
    huge = b'{"type":"quote_added","data":{"text":"' + b"x" * (64 * 1024) + b'","speaker":"Jo"}}'
    answer = client.post(f"/case-studies/{stream}/events", data=huge,
                         headers={**auth(keys["writer"]), "Content-Type": "application/json"})
    problem(answer, 413, "payload_too_large")


def test_a_body_not_sent_as_json_is_415_and_malformed_json_is_400(client, keys):
    stream = make(client, keys["writer"], "not_started")
    problem(client.post(f"/case-studies/{stream}/events", data="type=started",
                        headers={**auth(keys["writer"]), "Content-Type": "application/x-www-form-urlencoded"}),
            415, "unsupported_media_type")
    problem(client.post(f"/case-studies/{stream}/events", data="{not json",
                        headers={**auth(keys["writer"]), "Content-Type": "application/json"}),
            400, "malformed_json")


def test_an_integer_sent_as_a_number_without_a_fraction_is_that_integer(client, keys):
    stream = make(client, keys["writer"], "not_started")
    answer = post(client, keys["writer"], stream, {"type": "nps_recorded", "data": {"score": 9.0},
                                                   "expected_version": 1.0})
    assert answer.status_code == 201, answer.get_json()
    events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["auditor"])).get_json()["events"]
    assert events[-1]["data"]["score"] == 9 and isinstance(events[-1]["data"]["score"], int)
    problem(post(client, keys["writer"], stream, {"type": "nps_recorded", "data": {"score": 9.5}}),
            422, "invalid_event")


def test_refused_writes_store_nothing(client, keys):
    stream = make(client, keys["writer"], "in_progress")
    for body, status, code in [
            ({"type": "published", "data": VALID_DATA["published"]}, 409, "transition_not_allowed"),
            ({"type": "started"}, 409, "transition_not_allowed"),
            ({"type": "held", "data": {}}, 422, "invalid_event"),
            ({"type": "held", "data": {"reason": "x"}, "expected_version": 9}, 409, "version_conflict")]:
        problem(post(client, keys["writer"], stream, body), status, code)
    events = client.get(f"/case-studies/{stream}/events", headers=auth(keys["admin"])).get_json()["events"]
    assert len(events) == 2


def test_unknown_paths_and_methods_are_problems_too(client, keys):
    problem(client.get("/nowhere"), 404, "not_found")
    problem(client.delete(f"/case-studies/{unique_id()}", headers=auth(keys["admin"])), 405, "method_not_allowed")


# -- credentials and roles ---------------------------------------------------------------------
def test_no_key_or_an_unknown_key_is_401(client):
    problem(client.get("/case-studies"), 401, "unauthorized")
    problem(client.get("/case-studies", headers=auth("csk_not-a-key")), 401, "unauthorized")
    problem(client.get("/case-studies", headers={"Authorization": "Basic abc"}), 401, "unauthorized")


def test_a_revoked_key_stops_working_at_once(client, services):
    name = unique_id("temp")
    key = services.keys.create(name, "reader")
    assert client.get("/case-studies", headers=auth(key)).status_code == 200
    services.keys.revoke(name)
    problem(client.get("/case-studies", headers=auth(key)), 401, "unauthorized")


ROLE_MATRIX = [
    # (method, path, {role: expected status})
    ("POST", "/case-studies/{id}/events", {"writer": 201, "admin": 201, "reader": 403, "auditor": 403}),
    ("GET", "/case-studies/{id}", {"writer": 200, "reader": 200, "auditor": 200, "admin": 200}),
    ("GET", "/case-studies", {"writer": 200, "reader": 200, "auditor": 200, "admin": 200}),
    ("GET", "/case-studies/{id}/events", {"writer": 403, "reader": 403, "auditor": 200, "admin": 200}),
    ("GET", "/projections/pipeline", {"writer": 403, "reader": 200, "auditor": 200, "admin": 200}),
    ("GET", "/projections/stuck", {"writer": 403, "reader": 200, "auditor": 200, "admin": 200}),
    *(("GET", path, {"writer": 403, "reader": 200, "auditor": 200, "admin": 200})
      for path in ("/projections/blockers", "/projections/cycle-times", "/projections/candidates",
                   "/projections/status", "/reports/weekly", "/events")),
]


@pytest.mark.parametrize(("method", "path", "expected"), ROLE_MATRIX, ids=[f"{m} {p}" for m, p, _ in ROLE_MATRIX])
@pytest.mark.parametrize("role", ["writer", "reader", "auditor", "admin"])
def test_each_role_may_do_what_api_md_says_and_nothing_more(client, keys, method, path, expected, role):
    stream = make(client, keys["admin"], "not_started")
    url = path.format(id=stream)
    if method == "POST":
        answer = post(client, keys[role], stream, {"type": "quote_added", "data": VALID_DATA["quote_added"]})
    else:
        answer = client.get(url, headers=auth(keys[role]))
    if expected[role] == 403:
        problem(answer, 403, "forbidden")
    else:
        assert answer.status_code == expected[role], answer.get_json()


# -- reading lists and projections ------------------------------------------------------------
def test_the_list_filters_by_status_csm_and_account_and_pages_with_a_cursor(client, keys):
    csm = unique_id("csm")
    made = sorted(make(client, keys["writer"], "in_progress", csm=csm) for _ in range(5))
    other = make(client, keys["writer"], "not_started", csm=csm)
    seen, cursor = [], None
    while True:
        query = {"csm": csm, "status": "in_progress", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/case-studies", query_string=query, headers=auth(keys["reader"])).get_json()
        seen += [item["id"] for item in page["items"]]
        assert all(item["status"] == "in_progress" and item["csm"] == csm for item in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == made and other not in seen
    by_account = client.get("/case-studies", query_string={"csm": csm, "account": "Acme Air"},
                            headers=auth(keys["reader"])).get_json()
    assert len(by_account["items"]) == 6


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": "ten"}, {"status": "lost"}, {"cursor": "%%%"},
                                   {"as_of": "last tuesday"}])
def test_bad_query_parameters_are_400_not_500(client, keys, query):
    path = "/projections/stuck" if "as_of" in query else "/case-studies"
    problem(client.get(path, query_string=query, headers=auth(keys["admin"])), 400, "invalid_parameter")


def test_the_pipeline_counts_by_status_and_by_csm(client, keys, services):
    csm = unique_id("csm")
    for status in ["not_started", "not_started", "in_progress", "published", "declined"]:
        make(client, keys["writer"], status, csm=csm)
    project(services)
    answer = client.get("/projections/pipeline", headers=auth(keys["reader"])).get_json()
    assert answer["by_csm"][csm] == {"not_started": 2, "in_progress": 1, "awaiting_customer_approval": 0,
                                     "published": 1, "on_hold": 0, "declined": 1}
    assert answer["total"] == sum(answer["by_status"].values())
    as_csv = client.get("/projections/pipeline", headers={**auth(keys["reader"]), "Accept": "text/csv"})
    assert as_csv.mimetype == "text/csv"
    rows = {row["csm"]: row for row in csv.DictReader(io.StringIO(as_csv.get_data(as_text=True)))}
    assert rows[csm]["not_started"] == "2" and rows[csm]["total"] == "5"


def test_stuck_lists_records_with_code_reason_and_details_as_json_and_csv(client, keys, services):
    csm = unique_id("csm")
    stream = unique_id("late")
    assert post(client, keys["writer"], stream, {"type": "committed", "data": {**COMMITTED, "csm": csm},
                                                  "occurred_at": "2026-01-01T09:00:00Z"}).status_code == 201
    fresh = make(client, keys["writer"], "not_started", csm=csm)
    project(services)
    answer = client.get("/projections/stuck", query_string={"csm": csm}, headers=auth(keys["reader"])).get_json()
    assert [item["id"] for item in answer["items"]] == [stream]
    [item] = answer["items"]
    assert item["code"] == "not_started_too_long" and item["since"].startswith("2026-01-01")
    assert item["reason"].endswith(f"{csm} (CSM) has not started") and item["days"] > 14
    assert item["account"] == COMMITTED["account"] and item["status"] == "not_started"
    later = client.get("/projections/stuck", query_string={"csm": csm, "as_of": "2099-01-01",
                                                           "code": "not_started_too_long"},
                       headers=auth(keys["reader"])).get_json()
    assert {i["id"] for i in later["items"]} == {stream, fresh}
    as_csv = client.get("/projections/stuck", query_string={"csm": csm, "format": "csv"},
                        headers=auth(keys["reader"]))
    [row] = list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))
    assert row["id"] == stream and row["code"] == "not_started_too_long"


# -- operations and logs -----------------------------------------------------------------------
def test_health_and_readiness_need_no_key(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_each_request_logs_one_line_with_its_request_id_which_is_echoed(client, keys):
    stream = make(client, keys["writer"], "not_started")
    with capture_logs() as logs:
        answer = post(client, keys["writer"], stream, {"type": "started"}, **{"X-Request-Id": "req-123"})
    assert answer.headers["X-Request-Id"] == "req-123"
    requests = [line for line in logs if line["event"] == "request"]
    assert len(requests) == 1
    assert requests[0]["status"] == 201 and requests[0]["method"] == "POST" and "duration_ms" in requests[0]
    assert requests[0]["key"].startswith("writer-")
    [appended] = [line for line in logs if line["event"] == "event_appended"]
    assert (appended["stream_id"], appended["version"], appended["type"]) == (stream, 2, "started")
    assert keys["writer"] not in repr(logs)  # no secrets in logs


def test_a_refused_write_is_logged_with_its_reason(client, keys):
    stream = make(client, keys["writer"], "not_started")
    with capture_logs() as logs:
        post(client, keys["writer"], stream, {"type": "published", "data": VALID_DATA["published"]})
    [refused] = [line for line in logs if line["event"] == "write_refused"]
    assert refused["code"] == "transition_not_allowed" and "cannot apply published" in refused["reason"]


def test_the_event_stream_pages_by_version_with_a_next_link(client, keys):
    stream = make(client, keys["writer"], "published")  # 5 events
    first = client.get(f"/case-studies/{stream}/events", query_string={"limit": 2},
                       headers=auth(keys["auditor"])).get_json()
    assert [e["version"] for e in first["events"]] == [1, 2]
    second = client.get(first["next"], headers=auth(keys["auditor"])).get_json()
    assert [e["version"] for e in second["events"]] == [3, 4]
    last = client.get(second["next"], headers=auth(keys["auditor"])).get_json()
    assert [e["version"] for e in last["events"]] == [5] and last["next"] is None
    problem(client.get(f"/case-studies/{unique_id()}/events", query_string={"from_version": 3},
                       headers=auth(keys["auditor"])), 404, "not_found")


def test_a_chunked_body_over_64_kib_is_413_and_nothing_is_stored(client, keys):
    stream = make(client, keys["writer"], "not_started")
    padded = (b'{"type":"quote_added","data":{"text":"x","speaker":"Jo"}}' + b" " * (200 * 1024) + b"GARBAGE")
    answer = client.post(f"/case-studies/{stream}/events", input_stream=io.BytesIO(padded),
                         headers={**auth(keys["writer"]), "Content-Type": "application/json",
                                  "Transfer-Encoding": "chunked"},
                         environ_overrides={"wsgi.input_terminated": True})
    problem(answer, 413, "payload_too_large")
    small = b'{"type":"quote_added","data":{"text":"x","speaker":"Jo"}}'
    fine = client.post(f"/case-studies/{stream}/events", input_stream=io.BytesIO(small),
                       headers={**auth(keys["writer"]), "Content-Type": "application/json",
                                "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})
    assert fine.status_code == 201 and fine.get_json()["version"] == 2


@pytest.mark.parametrize("path", ["/case-studies?csm=%00", "/case-studies?account=a%01b", "/case-studies?cursor=AAAA",
                                  "/projections/stuck?csm=%00",
                                  "/projections/stuck?as_of=0001-01-01T00:00:00%2B01:00",
                                  "/projections/stuck?as_of=9999-12-31T23:59:59-01:00",
                                  "/projections/stuck?as_of=20261120", "/case-studies?limit=%EF%BC%91",
                                  "/case-studies?limit=%2B5"])
def test_hostile_query_parameters_are_400_on_every_database(client, keys, path):
    problem(client.get(path, headers=auth(keys["admin"])), 400, "invalid_parameter")


@pytest.mark.parametrize("body", [
    {"type": "reassigned", "data": {"csm": "a\u0000b"}},
    {"type": "quote_added", "data": {"text": "x\u0000y", "speaker": "Jo"}},
    {"type": "metrics_recorded", "data": {"kind": "baseline", "metrics": {"x\u0000": 1}}},
    {"type": "metrics_recorded", "data": {"kind": "current", "metrics": {"x": 1e300}}},
    {"type": "quote_added", "data": {"text": "x", "speaker": "Jo"}, "occurred_at": "0001-01-01T00:00:00+01:00"},
])
def test_values_one_database_could_not_store_are_422_on_every_database(client, keys, body):
    stream = make(client, keys["writer"], "not_started")
    problem(post(client, keys["writer"], stream, body), 422, "invalid_event")


@pytest.mark.parametrize("stream", ["nl-test%0A", "x" * 128 + "%0A", ".", "..", "caf%C3%A9"])
def test_ids_with_a_trailing_newline_or_outside_the_form_are_422(client, keys, stream):
    answer = client.post(f"/case-studies/{stream}/events", json={"type": "committed", "data": COMMITTED},
                         headers=auth(keys["writer"]))
    problem(answer, 422, "invalid_event")


def test_the_next_link_carries_only_known_parameters(client, keys):
    csm = unique_id("csm")
    for _ in range(2):
        make(client, keys["writer"], "not_started", csm=csm)
    page = client.get("/case-studies", query_string={"csm": csm, "limit": 1, "_external": 1, "_method": "POST",
                                                     "_anchor": "x"}, headers=auth(keys["reader"]))
    assert page.status_code == 200
    nxt = page.get_json()["next"]
    assert nxt.startswith("/case-studies?") and "_" not in nxt.split("?")[1].replace("next_", "")
    assert "csm=" + csm in nxt and "limit=1" in nxt


def test_a_weak_if_none_match_also_answers_304(client, keys):
    stream = make(client, keys["writer"], "not_started")
    answer = client.get(f"/case-studies/{stream}", headers={**auth(keys["reader"]), "If-None-Match": 'W/"1"'})
    assert answer.status_code == 304


def test_405_names_the_allowed_methods(client, keys):
    answer = client.put(f"/case-studies/{unique_id()}/events", headers=auth(keys["admin"]))
    problem(answer, 405, "method_not_allowed")
    assert "POST" in answer.headers["Allow"]


def test_a_non_ascii_digit_is_not_a_version(client, keys):
    stream = make(client, keys["writer"], "not_started")
    problem(post(client, keys["writer"], stream, {"type": "started"}, **{"If-Match": '"\u0663"'}), 422, "invalid_event")


def test_every_refused_write_is_logged_with_its_code(client, keys):
    stream = make(client, keys["writer"], "not_started")
    with capture_logs() as logs:
        client.post(f"/case-studies/{stream}/events", data="x", headers={**auth(keys["writer"]),
                                                                         "Content-Type": "text/plain"})
        post(client, keys["reader"], stream, {"type": "started"})
        post(client, keys["writer"], stream, {"type": "started", "occurred_at": "2999-01-01T00:00:00Z"})
    assert [line["code"] for line in logs if line["event"] == "write_refused"] == [
        "unsupported_media_type", "forbidden", "invalid_event"]


def test_an_event_dated_before_the_record_s_last_event_is_refused(client, keys):
    stream = make(client, keys["writer"], "in_progress")
    body = problem(post(client, keys["writer"], stream, {"type": "quote_added", "data": VALID_DATA["quote_added"],
                                                          "occurred_at": "2020-01-01T00:00:00Z"}),
                   409, "guard_failed")
    assert "before the record's last event" in body["reason"]


def test_the_same_instant_in_another_offset_is_the_same_retry(client, keys):
    stream, event_id = unique_id(), str(uuid.uuid4())
    post(client, keys["writer"], stream, {"type": "committed", "data": COMMITTED,
                                          "occurred_at": "2026-11-01T10:00:00Z"})
    first = post(client, keys["writer"], stream, {"type": "started", "event_id": event_id,
                                                  "occurred_at": "2026-11-20T10:00:00Z"})
    again = post(client, keys["writer"], stream, {"type": "started", "event_id": event_id,
                                                  "occurred_at": "2026-11-20T11:00:00+01:00"})
    assert (first.status_code, again.status_code) == (201, 200)


def test_stuck_as_of_a_past_moment_replays_what_was_known_then(client, keys, services):
    csm = unique_id("csm")
    stream = unique_id("late")
    post(client, keys["writer"], stream, {"type": "committed", "data": {**COMMITTED, "csm": csm},
                                          "occurred_at": "2026-01-01T09:00:00Z"})
    between = services.store.load(stream)[0].recorded_at
    assert post(client, keys["writer"], stream, {"type": "started"}).status_code == 201
    project(services)
    # now it is in progress and not stuck; just after the commit was recorded it was not started,
    # committed 2026-01-01, and so already stuck
    now = client.get("/projections/stuck", query_string={"csm": csm}, headers=auth(keys["reader"])).get_json()
    assert now["items"] == []
    then = client.get("/projections/stuck", query_string={"csm": csm, "as_of": between.isoformat()},
                      headers=auth(keys["reader"])).get_json()
    assert [(i["id"], i["code"], i["status"]) for i in then["items"]] == [(stream, "not_started_too_long",
                                                                           "not_started")]


def test_a_revoked_key_stops_working_once_the_key_cache_expires(database):
    from service.access.keys import KeyStore

    now = [1000.0]
    elsewhere = KeyStore(database.engine, cache_seconds=5, clock=lambda: now[0])  # another process
    revoker = KeyStore(database.engine)
    name = unique_id("cached")
    key = revoker.create(name, "reader")
    assert elsewhere.authenticate(key).name == name
    revoker.revoke(name)
    now[0] += 4.9
    assert elsewhere.authenticate(key) is not None  # still remembered, within the documented window
    now[0] += 0.2
    assert elsewhere.authenticate(key) is None
    assert elsewhere.authenticate("csk_unknown") is None


def test_revoking_through_the_same_process_takes_effect_at_once(database):
    from service.access.keys import KeyStore

    keys = KeyStore(database.engine, cache_seconds=60)
    name = unique_id("cached")
    key = keys.create(name, "reader")
    assert keys.authenticate(key) is not None
    keys.revoke(name)
    assert keys.authenticate(key) is None


def test_a_client_reads_its_own_write_by_passing_the_position_its_append_answered(client, keys, services,
                                                                                monkeypatch):
    import threading

    csm = unique_id("csm")
    appended = post(client, keys["writer"], unique_id("own"), {"type": "committed", "data": {**COMMITTED, "csm": csm}})
    position = appended.get_json()["position"]
    ask = {"min_position": position, "csm": csm}
    monkeypatch.setattr(services.projections, "wait_seconds", 0.2)
    behind = client.get("/projections/pipeline", query_string=ask, headers=auth(keys["reader"]))
    assert problem(behind, 503, "projection_behind")["min_position"] == position
    assert behind.headers["Retry-After"] == "1"
    monkeypatch.setattr(services.projections, "wait_seconds", 10.0)
    worker = threading.Timer(0.3, project, args=(services,))  # the projections get there while the read waits
    worker.start()
    answer = client.get("/projections/pipeline", query_string=ask, headers=auth(keys["reader"]))
    worker.join()
    assert answer.status_code == 200 and answer.get_json()["by_csm"][csm]["not_started"] == 1
    assert answer.get_json()["projection"]["position"] >= position
    problem(client.get("/projections/stuck", query_string={"min_position": 9_999_999_999},
                       headers=auth(keys["reader"])), 400, "unknown_position")
