"""Deal intake from CRM workflow tools, on SQLite and PostgreSQL."""
from __future__ import annotations

import threading

import pytest

from tests.conftest import auth, problem, unique_id

DEAL = {
    "account_id": "0015g00000Acme", "account_name": "Acme Air", "owner": "Dana Whitfield",
    "close_date": "2026-10-01", "use_case": "cut onboarding from 30 to 7 days",
    "champion_name": "Jo Park", "champion_title": "VP Operations", "champion_email": "jo@acme.example",
    "case_study_commitment": "Accepted",
}


def post_deal(client, key, body):
    return client.post("/integrations/deals", json=body, headers=auth(key))


def test_an_accepted_deal_creates_a_not_started_record_with_the_deal_s_context(client, keys):
    deal_id = unique_id("8812")
    answer = post_deal(client, keys["writer"], {**DEAL, "deal_id": deal_id})
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["decision"] == "created" and body["id"] == f"deal-{deal_id}"
    assert body["status"] == "not_started" and body["version"] == 1
    assert body["url"].endswith(f"/case-studies/deal-{deal_id}")
    assert answer.headers["Location"] == f"/case-studies/deal-{deal_id}"
    record = client.get(f"/case-studies/deal-{deal_id}", headers=auth(keys["reader"])).get_json()
    assert record["account"] == {"id": "0015g00000Acme", "name": "Acme Air"}
    assert record["csm"] == "Dana Whitfield" and record["close_date"] == "2026-10-01"
    assert record["champion"] == {"name": "Jo Park", "title": "VP Operations", "email": "jo@acme.example"}
    events = client.get(f"/case-studies/deal-{deal_id}/events", headers=auth(keys["auditor"])).get_json()
    committed = events["events"][0]
    assert committed["data"]["deal_id"] == deal_id and committed["occurred_at"].startswith("2026-10-01T00:00:00")


def test_the_same_deal_posted_again_answers_the_same_record_and_stores_nothing(client, keys):
    deal = {**DEAL, "deal_id": unique_id("d")}
    first = post_deal(client, keys["writer"], deal)
    # a tool's retry, with the CRM's field edited in between
    again = post_deal(client, keys["writer"], {**deal, "use_case": "edited later"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["decision"] == "exists" and again.get_json()["id"] == first.get_json()["id"]
    events = client.get(f"/case-studies/{first.get_json()['id']}/events", headers=auth(keys["admin"]))
    assert len(events.get_json()["events"]) == 1


def test_concurrent_posts_of_one_deal_create_one_record(app, keys):
    deal = {**DEAL, "deal_id": unique_id("race")}
    barrier, answers = threading.Barrier(8), []

    def send():
        client = app.test_client()
        barrier.wait()
        answer = post_deal(client, keys["writer"], deal)
        answers.append((answer.status_code, answer.get_json()))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in answers) == [200] * 7 + [201]
    assert {body["id"] for _, body in answers} == {f"deal-{deal['deal_id']}"}
    assert sorted(body["decision"] for _, body in answers) == ["created"] + ["exists"] * 7
    events = app.test_client().get(f"/case-studies/deal-{deal['deal_id']}/events", headers=auth(keys["admin"]))
    assert [e["type"] for e in events.get_json()["events"]] == ["committed"]


@pytest.mark.parametrize(("commitment", "decision_reason"), [
    ("declined", "declined"), ("Not discussed", "not discussed"), ("NOT_DISCUSSED", "not discussed"),
    ("not-discussed", "not discussed"),
])
def test_other_commitments_answer_what_was_decided_and_store_nothing(client, keys, commitment, decision_reason):
    deal_id = unique_id("no")
    answer = post_deal(client, keys["writer"], {"deal_id": deal_id, "case_study_commitment": commitment})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["decision"] == "not_created" and body["id"] is None and decision_reason in body["reason"]
    assert body["case_study_commitment"] in ("declined", "not_discussed")
    problem(client.get(f"/case-studies/deal-{deal_id}", headers=auth(keys["reader"])), 404, "not_found")


def test_a_declined_repost_of_an_accepted_deal_leaves_its_record_and_says_so(client, keys):
    deal = {**DEAL, "deal_id": unique_id("d")}
    created = post_deal(client, keys["writer"], deal).get_json()
    answer = post_deal(client, keys["writer"], {"deal_id": deal["deal_id"], "case_study_commitment": "Declined"})
    body = answer.get_json()
    assert answer.status_code == 200 and body["decision"] == "not_created"
    assert body["id"] == created["id"] and body["status"] == "not_started" and "exists already" in body["reason"]


def test_tools_send_text_for_everything_and_blank_for_unset(client, keys):
    deal_id = unique_id("zap")
    answer = post_deal(client, keys["writer"], {
        **DEAL, "deal_id": deal_id, "close_date": "1759276800000",  # HubSpot: epoch milliseconds
        "champion_email": "", "msa_restricted": "true", "industry_description": "a major airline",
        "owner": "", "csm": "Dana Whitfield"})
    assert answer.status_code == 201, answer.get_json()
    record = client.get(f"/case-studies/deal-{deal_id}", headers=auth(keys["reader"])).get_json()
    assert record["close_date"] == "2025-10-01" and "email" not in record["champion"]
    assert record["readiness"]["msa_clear"] is False
    numeric = post_deal(client, keys["writer"], {**DEAL, "deal_id": 9_000_000_000 + hash(deal_id) % 10**6,
                                                 "close_date": "2026-10-01T23:30:00-02:00"})
    assert numeric.status_code == 201
    stored = client.get(numeric.headers["Location"], headers=auth(keys["reader"])).get_json()
    assert stored["close_date"] == "2026-10-01"  # the day where the time was given, not its UTC date
    whole = post_deal(client, keys["writer"], {**DEAL, "deal_id": float(8_000_000_000 + hash(deal_id) % 10**6)})
    assert whole.status_code == 201 and whole.get_json()["id"] == f"deal-{8_000_000_000 + hash(deal_id) % 10**6}"


@pytest.mark.parametrize(("body", "fields"), [
    ({**DEAL, "deal_id": "x1", "case_study_commitment": "maybe"}, {"case_study_commitment"}),
    ({**DEAL, "deal_id": "x1", "close_date": "10/01/2026"}, {"close_date"}),
    ({**DEAL, "deal_id": "x1", "dealname": "Acme renewal"}, {"dealname"}),
    ({**DEAL, "deal_id": "x1", "account_name": "", "use_case": None}, {"account_name", "use_case"}),
    ({**DEAL, "deal_id": "x1", "champion_email": "not an address"}, {"champion_email"}),
    ({**DEAL, "deal_id": "x1", "csm": "Robin"}, {""}),  # owner and csm disagree
    ({**DEAL, "case_study_commitment": "accepted"}, {"deal_id"}),
    ({**DEAL, "deal_id": "x1", "anonymized": "yes"}, {"industry_description"}),
    ({**DEAL, "deal_id": "x1", "status": "on_hold"}, {"hold_reason"}),
    ({**DEAL, "deal_id": "x1", "status": "published"}, {"status"}),
    ([DEAL], {""}),
    ({**DEAL, "deal_id": 8812.5}, {"deal_id"}),
    ({**DEAL, "deal_id": "x1", "close_date": "9999-12-31T23:00:00-05:00", "status": "in_progress",
      "status_since": "0001-01-01T00:00:00+05:00"}, {"status_since"}),
])
def test_a_bad_deal_is_422_naming_each_field_and_stores_nothing(client, keys, body, fields):
    answer = problem(post_deal(client, keys["writer"], body), 422, "invalid_deal")
    assert {error["field"] for error in answer["errors"]} == fields
    problem(client.get("/case-studies/deal-x1", headers=auth(keys["reader"])), 404, "not_found")


def test_deal_intake_needs_a_writer_and_json(client, keys):
    problem(post_deal(client, keys["reader"], {**DEAL, "deal_id": "r1"}), 403, "forbidden")
    problem(client.post("/integrations/deals", json=DEAL), 401, "unauthorized")
    problem(client.post("/integrations/deals", data="deal_id=1", headers={
        **auth(keys["writer"]), "Content-Type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type")
    problem(client.post("/integrations/deals", data="{nope", headers={
        **auth(keys["writer"]), "Content-Type": "application/json"}), 400, "malformed_json")


def test_a_record_made_by_hand_under_a_deal_s_id_is_not_taken_for_that_deal(client, keys):
    deal_id = unique_id("hand")
    made = client.post(f"/case-studies/deal-{deal_id}/events", json={"type": "committed", "data": {
        "account": {"id": "a", "name": "Other"}, "csm": "Robin", "champion": {"name": "X", "title": "Y"},
        "use_case": "z", "close_date": "2026-01-01"}}, headers=auth(keys["writer"]))
    assert made.status_code == 201
    for commitment in ("Accepted", "Declined"):
        problem(post_deal(client, keys["writer"], {**DEAL, "deal_id": deal_id, "case_study_commitment": commitment}),
                409, "already_exists")


def test_a_deal_id_outside_the_id_form_gets_a_stable_hashed_record_id(client, keys):
    deal_id = "Opp #" + unique_id("sf") + " / Q3"
    first = post_deal(client, keys["writer"], {**DEAL, "deal_id": deal_id}).get_json()
    again = post_deal(client, keys["writer"], {**DEAL, "deal_id": deal_id}).get_json()
    assert first["id"].startswith("deal-") and len(first["id"]) == 45 and again["id"] == first["id"]


def test_a_deal_can_back_fill_where_a_record_kept_elsewhere_stands(client, keys):
    deal_id = unique_id("bf")
    answer = post_deal(client, keys["writer"], {**DEAL, "deal_id": deal_id, "status": "Awaiting Customer Approval",
                                                "status_since": "2026-10-20", "approvers": "Marketing; legal"})
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["status"] == "awaiting_customer_approval"
    events = client.get(f"/case-studies/deal-{deal_id}/events", headers=auth(keys["auditor"])).get_json()["events"]
    assert [(e["type"], e["occurred_at"][:10]) for e in events] == [
        ("committed", "2026-10-01"), ("started", "2026-10-20"), ("approval_requested", "2026-10-20")]
    assert events[2]["data"]["approvers"] == ["marketing", "legal"]
