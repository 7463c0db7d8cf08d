"""The dashboard's contract without a browser, on both databases: what the session cookie holds, who
may open what, that bad input is a page and never a 500, and that pages agree with the API."""
from __future__ import annotations

import re
import uuid

import pytest

from service.access.roles import ROLES
from service.ui.web import NAVIGATION
from tests.conftest import auth, project, unique_id
from tests.factories import COMMITTED


def signed_in(app, key: str):
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/sign-in").text).group(1)
    answer = client.post("/ui/sign-in", data={"key": key, "csrf_token": token})
    assert answer.status_code == 302, answer.text
    return client


def token_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_the_session_cookie_holds_the_keys_id_and_nothing_of_the_key(app, keys, services):
    client = signed_in(app, keys["reader"])
    cookie = client.get_cookie("casestudies_session")
    held = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    principal = services.keys.authenticate(keys["reader"])
    assert held["key_id"] == principal.key_id and set(held) <= {"key_id", "_permanent", "csrf_token"}
    assert keys["reader"] not in cookie.value and cookie.http_only and cookie.same_site == "Lax"
    assert not cookie.secure


def test_the_cookie_is_secure_when_the_page_came_over_https(app, keys):
    client = app.test_client()
    page = client.get("/ui/sign-in", headers={"X-Forwarded-Proto": "https"})
    answer = client.post("/ui/sign-in", data={"key": keys["reader"], "csrf_token": token_of(page.text)},
                         headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in answer.headers["Set-Cookie"]


def test_a_forged_session_is_not_signed_in(app, keys):
    client = app.test_client()
    client.set_cookie("casestudies_session", "eyJrZXlfaWQiOjF9.forged.signature")
    answer = client.get("/ui/board")
    assert answer.status_code == 302 and answer.location.startswith("/ui/sign-in")


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_offered_the_pages_it_may_open_and_refused_the_others(app, keys, role):
    client = signed_in(app, keys[role])
    for endpoint, _label, roles in NAVIGATION:
        path = {"ui.board": "/ui/board", "ui.stuck": "/ui/stuck", "ui.weekly": "/ui/weekly",
                "ui.cycle_times": "/ui/cycle-times", "ui.records": "/ui/records", "ui.life_cycle": "/ui/life-cycle",
                "ui.operations": "/ui/operations"}[endpoint]
        answer = client.get(path)
        assert answer.status_code == (200 if role in roles else 403), (path, answer.text[:500])
        assert answer.mimetype == "text/html"
        nav = answer.text.split("</nav>")[0]
        assert (f'href="{path}"' in nav) == (role in roles)


def test_the_sign_in_form_goes_back_only_to_a_dashboard_page(app, keys):
    client = app.test_client()
    page = client.get("/ui/sign-in?next=https://evil.example/ui/board")
    assert "evil.example" not in page.text
    answer = client.post("/ui/sign-in", data={"key": keys["reader"], "csrf_token": token_of(page.text),
                                              "next": "//evil.example/ui/"})
    assert answer.location == "/ui/board"


@pytest.mark.parametrize("path", ["/ui/board?as_of=yesterday", "/ui/stuck?cursor=not-a-cursor",
                                  "/ui/stuck?code=bogus", "/ui/records?limit=100000", "/ui/weekly?week_ending=13-13",
                                  "/ui/blockers?sort=sideways", "/ui/records/no%20such%20id"])
def test_bad_input_is_a_page_that_says_what_is_wrong_never_a_500(app, keys, path):
    answer = signed_in(app, keys["admin"]).get(path)
    assert answer.status_code in (400, 422) and answer.mimetype == "text/html"
    assert 'role="alert"' in answer.text and "Traceback" not in answer.text


def test_a_record_that_does_not_exist_is_a_404_page(app, keys):
    answer = signed_in(app, keys["reader"]).get("/ui/records/nobody-here")
    assert answer.status_code == 404 and "no case study with id" in answer.text


def test_the_board_agrees_with_the_pipeline_projection(app, client, keys, services):
    stream_id = unique_id()
    assert client.post(f"/case-studies/{stream_id}/events", json={"type": "committed", "data": COMMITTED},
                       headers=auth(keys["writer"])).status_code == 201
    project(services)
    pipeline = client.get("/projections/pipeline", headers=auth(keys["reader"])).get_json()
    page = signed_in(app, keys["reader"]).get("/ui/board").text
    shown = {status: int(count) for status, count in re.findall(r'id="col-(\w+)">[^<]*<span class="count">(\d+)',
                                                                 page)}
    assert shown == pipeline["by_status"]


@pytest.mark.parametrize(("page", "header"), [
    ("/ui/board", "csm,not_started,"), ("/ui/stuck", "id,status,csm,account_id,"),
    ("/ui/blockers", "id,status,csm,account_name,code,"), ("/ui/cycle-times", "quarter,kind,name,"),
])
def test_each_csv_link_of_a_page_downloads_for_the_signed_in_person(app, keys, page, header):
    reader = signed_in(app, keys["reader"])
    links = re.findall(r'href="(/ui/[a-z-]+\.csv[^"]*)"', reader.get(page).text)
    assert links
    bodies = []
    for link in links:
        answer = reader.get(link.replace("&amp;", "&"))
        assert answer.status_code == 200 and answer.mimetype == "text/csv", link
        bodies.append(answer.text)  # read to the end, as a browser does (a streamed CSV holds its slot until then)
    assert bodies[0].startswith(header)
    assert app.test_client().get(links[0]).status_code == 302  # not signed in: to the sign-in page


def test_stored_text_is_escaped_on_every_page_that_shows_it(app, client, keys, services):
    stream_id = unique_id()
    hostile = "<script>alert(1)</script>"
    data = {**COMMITTED, "account": {"id": "acc-x", "name": hostile}, "use_case": hostile}
    assert client.post(f"/case-studies/{stream_id}/events", json={"type": "committed", "data": data},
                       headers=auth(keys["writer"])).status_code == 201
    project(services)
    reader = signed_in(app, keys["admin"])
    for path in (f"/ui/records/{stream_id}", f"/ui/records?account=acc-x", "/ui/board?account=acc-x"):
        page = reader.get(path).text
        assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path


def test_a_writer_form_posts_through_the_append_path_with_its_event_id(app, client, keys, services):
    stream_id = unique_id()
    assert client.post(f"/case-studies/{stream_id}/events", json={"type": "committed", "data": COMMITTED},
                       headers=auth(keys["writer"])).status_code == 201
    writer = signed_in(app, keys["writer"])
    page = writer.get(f"/ui/records/{stream_id}").text
    form = page[page.index('value="started"') - 400:]
    event_id = re.search(r'name="event_id" value="([^"]+)"', form).group(1)
    fields = {"csrf_token": token_of(page), "type": "started", "event_id": event_id, "expected_version": "1"}
    first = writer.post(f"/ui/records/{stream_id}/events", data=fields)
    again = writer.post(f"/ui/records/{stream_id}/events", data=fields)
    assert first.status_code == again.status_code == 303
    events = client.get(f"/case-studies/{stream_id}/events", headers=auth(keys["auditor"])).get_json()["events"]
    assert [e["type"] for e in events] == ["committed", "started"] and events[1]["event_id"] == event_id
    assert events[1]["actor"] == services.keys.authenticate(keys["writer"]).name
    # a form sent against an older version is refused, as the API refuses it
    stale = writer.post(f"/ui/records/{stream_id}/events", data={**fields, "event_id": str(uuid.uuid4()),
                                                                  "type": "held", "reason": "later"})
    assert stale.status_code == 409 and "Someone changed this record" in stale.text


def test_the_reporting_pages_take_a_costly_read_slot_like_the_api(app, keys):
    from service.api.limits import _take, slot_tag

    settings = app.extensions["casestudies"].settings
    principal = app.extensions["casestudies"].keys.authenticate(keys["auditor"])
    held = _take(slot_tag(settings.database_url, principal.name), settings.costly_reads_per_key)
    try:
        answer = signed_in(app, keys["auditor"]).get("/ui/stuck")
        assert answer.status_code == 429 and "costly read" in answer.text
    finally:
        held.close()


def test_longest_first_pages_through_every_finding_and_blocker_once(services, client, keys):
    for _ in range(3):  # records that are stuck and blocked, beside whatever other tests left
        stream_id = unique_id()
        assert client.post(f"/case-studies/{stream_id}/events", headers=auth(keys["writer"]), json=[
            {"type": "committed", "data": COMMITTED, "occurred_at": "2026-01-05T09:00:00Z"},
            {"type": "started", "occurred_at": "2026-01-06T09:00:00Z"},
            {"type": "approval_requested", "data": {"approvers": ["legal"]}, "occurred_at": "2026-01-07T09:00:00Z"},
        ]).status_code == 201
    project(services)

    def every(kind: str, order: str) -> list[tuple]:
        found, cursor = [], None
        with services.projections.view() as view:
            while True:
                answer = getattr(view, kind)(limit=7, cursor=cursor, order=order)
                found += [(item.id, item.finding.code) if kind == "stuck" else (item["id"], item["seq"])
                          for item in answer.value]
                if not (cursor := answer.next_cursor):
                    return found

    for kind in ("stuck", "blockers"):
        longest, by_csm = every(kind, "longest"), every(kind, "csm")
        assert len(longest) == len(set(longest)) and set(longest) == set(by_csm) and len(longest) >= 3
    with services.projections.view() as view:
        since = [row["since"] for row in view.blockers(order="longest").value]
    assert since == sorted(since)  # blocked longest first, whoever the CSM


def test_an_admin_discards_a_dead_message_from_the_operations_page(app, keys, database):
    from service.times import utcnow
    from tests.integration.test_notifications import queued

    dead, pending = queued(database, "dead", utcnow()), queued(database, "pending", utcnow())
    admin = signed_in(app, keys["admin"])
    page = admin.get("/ui/operations?status=dead&limit=1000").text
    assert f"Discard message {dead}" in page and f"Discard message {pending}" not in page
    gone = admin.post(f"/ui/operations/notifications/{dead}/discard", data={"csrf_token": token_of(page)})
    assert gone.status_code == 303 and f"Notification {dead} is discarded" in admin.get(gone.location).text
    assert admin.post(f"/ui/operations/notifications/{dead}/discard",
                      data={"csrf_token": token_of(page)}).status_code == 404
    refused = admin.post(f"/ui/operations/notifications/{pending}/discard", data={"csrf_token": token_of(page)})
    assert refused.status_code == 409 and "only dead ones are discarded" in refused.text
    reader = signed_in(app, keys["reader"])
    assert reader.post(f"/ui/operations/notifications/{pending}/discard",
                       data={"csrf_token": token_of(reader.get("/ui/records").text)}).status_code == 403
