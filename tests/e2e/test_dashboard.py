"""The dashboard as people use it: `casestudies serve` on loopback, Debian's chromium driven by
Playwright, on SQLite and PostgreSQL, with generated records behind every page.

Screenshots of every page are written to test-artifacts/dashboard/<backend>/ on each run.
"""
from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect

from bench.common import free_port
from bench.dataset import load_url, make_dataset
from tests.conftest import BACKENDS, new_database
from tests.e2e.conftest import call, cli, serving

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
RECORDS = 200
PAGES = {  # name: (path, the heading it shows)
    "board": ("/ui/board", "Pipeline"),
    "stuck": ("/ui/stuck", "Stuck and blockers"),
    "blockers": ("/ui/blockers", "Stuck and blockers"),
    "weekly": ("/ui/weekly", "Weekly review"),
    "cycle-times": ("/ui/cycle-times", "Cycle times and candidates"),
    "records": ("/ui/records", "Records"),
    "record": ("/ui/records/cs-000003", "Customer"),
    "life-cycle": ("/ui/life-cycle", "The life cycle of a case study"),
    "operations": ("/ui/operations", "Operations"),
}


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    """The service with RECORDS generated records and a key of each role, served over HTTP."""
    folder = tmp_path_factory.mktemp(f"dashboard-{request.param}")
    shutil.rmtree(ARTIFACTS / request.param, ignore_errors=True)  # this run's screenshots only
    with new_database(request, request.param, folder) as database:
        events, states, _ = make_dataset(RECORDS, seed=11)
        load_url(database.url, events, states)
        rebuilt = cli(database.url, "projections", "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        keys = {}
        for role in ("reader", "writer", "auditor", "admin"):
            made = cli(database.url, "keys", "create", "--role", role, "--name", f"{role}@example.com")
            assert made.returncode == 0, made.stderr
            keys[role] = made.stdout.strip()
        # a webhook receiver on loopback may be subscribed; a failed delivery is dead at once
        with serving(database.url, folder, env={"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32", "WEBHOOK_CACHE_SECONDS": "0",
                                                "NOTIFY_MAX_ATTEMPTS": "1"}) as served:
            yield {"backend": request.param, "base": served.base, "url": database.url, "keys": keys}


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)", pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield launched
        launched.close()


class Console:
    """What the page said on its console: errors and CSP refusals fail a test."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))


@pytest.fixture
def context(browser):
    made = browser.new_context(viewport={"width": 1280, "height": 900})
    made.set_default_timeout(15_000)
    yield made
    made.close()


def sign_in(context, site, role: str):
    page = context.new_page()
    console = Console(page)
    page.goto(site["base"] + "/ui/")
    page.fill("input[name=key]", site["keys"][role])
    page.click("form.sign-in button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/(board|records)$"))
    return page, console


def fresh(page, act) -> None:
    """Do ``act`` (a click that loads a page, in full or by htmx) and wait for the new page."""
    page.evaluate("document.querySelector('main').dataset.stale = '1'")
    act()
    page.wait_for_selector("main:not([data-stale])")


def shoot(page, site, name: str) -> None:
    """The whole page, and its first screen (what the README shows), as test artefacts."""
    folder = ARTIFACTS / site["backend"]
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    page.screenshot(path=str(folder / f"{name}-screen.png"))


def stream(site, stream_id: str) -> list[dict]:
    status, _, body = call(site["base"], "GET", f"/case-studies/{stream_id}/events", site["keys"]["auditor"])
    assert status == 200, body
    return body["events"]


# -- signing in ------------------------------------------------------------------------------------
def test_a_person_not_signed_in_is_sent_to_a_sign_in_form_with_one_field_named_key(context, site):
    page = context.new_page()
    page.goto(site["base"] + "/ui/stuck?csm=Dana+Lee")
    assert "/ui/sign-in" in page.url
    visible = page.locator("form.sign-in input:not([type=hidden])")
    assert visible.count() == 1 and visible.get_attribute("name") == "key"
    page.fill("input[name=key]", "csk_not-a-key")
    page.click("form.sign-in button[type=submit]")
    assert "unknown or has been revoked" in page.locator("[role=alert]").inner_text()
    page.fill("input[name=key]", site["keys"]["reader"])
    page.click("form.sign-in button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/stuck\?csm=Dana\+Lee$"))  # back where they were going
    cookie, = [c for c in context.cookies() if c["name"] == "casestudies_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
    assert site["keys"]["reader"] not in cookie["value"]


def test_signing_out_ends_the_session(context, site):
    page, _ = sign_in(context, site, "reader")
    fresh(page, page.locator("form.who button").click)
    assert page.url.endswith("/ui/sign-in")
    page.goto(site["base"] + "/ui/board")
    assert "/ui/sign-in" in page.url


def test_a_revoked_key_stops_working_on_the_next_page(context, site):
    name = f"revoked-{uuid.uuid4().hex[:8]}@example.com"
    key = cli(site["url"], "keys", "create", "--role", "reader", "--name", name).stdout.strip()
    page = context.new_page()
    page.goto(site["base"] + "/ui/sign-in")
    page.fill("input[name=key]", key)
    page.click("form.sign-in button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/board$"))
    assert cli(site["url"], "keys", "revoke", name).returncode == 0
    page.goto(site["base"] + "/ui/stuck")
    assert "/ui/sign-in" in page.url


# -- every page ------------------------------------------------------------------------------------
def visit(page, url: str, name: str) -> None:
    """Open a page and wait until it is whole: its charts drawn, its diagram rendered."""
    page.goto(url)
    if name == "cycle-times":
        expect(page.locator("canvas[data-drawn]")).to_have_count(4)
    if page.locator("pre.mermaid").count():
        page.wait_for_selector("pre.mermaid svg")


def serious_violations(page) -> list:
    """What axe-core finds of serious or critical impact on the page."""
    from axe_playwright_python.sync_playwright import Axe

    return [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
            for v in Axe().run(page).response["violations"] if v["impact"] in ("serious", "critical")]


def test_every_page_renders_with_data_is_accessible_and_quiet(context, site):
    page, console = sign_in(context, site, "admin")
    found = {}
    for name, (path, heading) in PAGES.items():
        visit(page, site["base"] + path, name)
        assert heading in page.locator("h1").inner_text(), name
        assert page.locator("td").count() > 0 or page.locator(".card").count() > 0, name
        shoot(page, site, name)
        if violations := serious_violations(page):
            found[name] = violations
    page.goto(site["base"] + "/ui/records/new")
    found.update({"new-record": v} if (v := serious_violations(page)) else {})
    assert found == {}
    assert console.errors == []


def test_on_a_phone_every_page_fits_the_screen_and_stays_accessible(browser, site):
    if site["backend"] != "sqlite":
        pytest.skip("the layout does not depend on the database: checked once, on SQLite")
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page, _ = sign_in(context, site, "admin")
        found, overflowing = {}, []
        for name, (path, _heading) in PAGES.items():
            visit(page, site["base"] + path, name)
            shoot(page, site, f"{name}-phone")
            if violations := serious_violations(page):
                found[name] = violations
            if page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth"):
                overflowing.append(name)
        assert found == {} and overflowing == []
    finally:
        context.close()


def test_the_board_counts_every_record_and_its_cards_show_customer_csm_days_and_stuck_codes(context, site):
    page, _ = sign_in(context, site, "reader")
    counts = [int(text) for text in page.locator(".column h2 .count").all_inner_texts()]
    assert len(counts) == 6 and sum(counts) == RECORDS
    card = page.locator(".card").first
    assert re.search(r"CSM: .+", card.inner_text()) and re.search(r"\d+ days in status", card.inner_text())
    assert page.locator(".card .badge.stuck").count() > 0
    # the board filtered by a CSM holds only that CSM's records
    csm = card.locator(".meta").first.inner_text().removeprefix("CSM: ")
    page.fill("input[name=csm]", csm)
    fresh(page, page.locator("form.filters button[type=submit]").click)
    assert "csm=" in page.url
    metas = page.locator(".card .meta").all_inner_texts()
    assert metas and all(text == f"CSM: {csm}" for text in metas if text.startswith("CSM:"))
    assert sum(int(t) for t in page.locator(".column h2 .count").all_inner_texts()) < RECORDS
    # as known at a past date: fewer records had been committed then
    page.goto(site["base"] + "/ui/board?as_of=" + datetime.now(UTC).replace(month=1, day=1).date().isoformat())
    assert sum(int(t) for t in page.locator(".column h2 .count").all_inner_texts()) < RECORDS
    # the same view as CSV, for the signed-in person (no key needed)
    csv = context.request.get(site["base"] + page.locator("a", has_text="Pipeline as CSV").get_attribute("href"))
    assert csv.ok and csv.headers["content-type"].startswith("text/csv")
    assert csv.text().splitlines()[0].startswith("csm,not_started,in_progress")


def test_the_stuck_list_is_grouped_by_csm_sortable_and_paginated(context, site):
    page, _ = sign_in(context, site, "reader")
    page.goto(site["base"] + "/ui/stuck")
    groups = page.locator("table caption").all_inner_texts()
    assert len(groups) > 1 and groups == sorted(groups)  # one table per CSM, in order
    assert page.locator("tbody tr").count() == 50 and page.locator("a[rel=next]").count() == 1
    def findings():
        return {(row.locator("td a").first.get_attribute("href"), row.locator("td:nth-child(3)").inner_text())
                for row in page.locator("tbody tr").all()}

    first_page = findings()
    fresh(page, page.locator("a[rel=next]").click)
    assert "cursor=" in page.url and findings() and findings().isdisjoint(first_page)
    page.goto(site["base"] + "/ui/stuck?sort=longest&code=no_activity")  # one rule: longest stuck, most days
    days = [int(t) for t in page.locator("tbody tr td:nth-child(6)").all_inner_texts()]
    assert len(days) > 1 and days == sorted(days, reverse=True)
    page.select_option("select[name=code]", "not_started_too_long")
    page.select_option("select[name=sort]", "csm")
    fresh(page, page.locator("form.filters button[type=submit]").click)
    assert "code=not_started_too_long" in page.url
    assert set(page.locator("tbody tr td:nth-child(3)").all_inner_texts()) == {"not_started_too_long"}


def test_the_records_list_pages_on(context, site):
    page, _ = sign_in(context, site, "writer")  # a writer lands on the records list
    assert page.url.endswith("/ui/records")
    first = page.locator("tbody tr td:first-child").all_inner_texts()
    assert len(first) == 50
    fresh(page, page.locator("a[rel=next]").click)
    assert "cursor=" in page.url
    second = page.locator("tbody tr td:first-child").all_inner_texts()
    assert second and second[0] > first[-1]


def test_the_weekly_review_answers_the_three_questions_and_moves_by_week(context, site):
    page, _ = sign_in(context, site, "reader")
    page.goto(site["base"] + "/ui/weekly")
    questions = page.locator(".question h2").all_inner_texts()
    assert questions == ["How many are in progress?", "Which are stuck?", "What's blocking publication?"]
    status, _, report = call(site["base"], "GET", "/reports/weekly", site["keys"]["auditor"])
    assert page.locator(".question .big").all_inner_texts() == [
        str(report["counts"]["in_progress"]["now"]), str(report["stuck"]["records"]),
        str(report["blocking_publication"]["records"])]
    ending = page.locator("input[name=week_ending]").input_value()
    fresh(page, page.locator("a", has_text="Week before").click)
    assert "week_ending=" in page.url
    assert page.locator("input[name=week_ending]").input_value() < ending


def test_charts_are_drawn_from_the_tables_beside_them(context, site):
    page, console = sign_in(context, site, "reader")
    page.goto(site["base"] + "/ui/cycle-times")
    expect(page.locator("canvas[data-drawn]")).to_have_count(4)
    for canvas in page.locator("canvas").all():
        assert canvas.get_attribute("role") == "img" and canvas.get_attribute("aria-label")
    assert page.locator("table.chart-data").count() == 4
    assert console.errors == []


def test_the_life_cycle_is_drawn_with_the_records_status_highlighted(context, site):
    page, console = sign_in(context, site, "reader")
    page.goto(site["base"] + "/ui/records/cs-000003")
    page.wait_for_selector("pre.mermaid svg")
    status = page.locator(".lead .status").inner_text().lower().replace(" ", "_")
    assert page.locator(f"pre.mermaid svg g.s_active[id*='{status}']").count() == 1
    assert console.errors == []


# -- acting from the page ---------------------------------------------------------------------------
def open_form(page, event_type: str, fields: dict[str, str] | None = None, checks: tuple[str, ...] = ()):
    """The record page's form for ``event_type``, opened and filled in (not sent)."""
    form = page.locator(f"details.event-form:has(input[name=type][value={event_type}])")
    form.locator("summary").click()
    for name, value in (fields or {}).items():
        control = form.locator(f"[name='{name}']")
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    for value in checks:
        form.locator(f"input[type=checkbox][value={value}]").check()
    return form


def submit(page, event_type: str, fields: dict[str, str] | None = None, checks: tuple[str, ...] = ()):
    fresh(page, open_form(page, event_type, fields, checks).locator("button[type=submit]").click)


def test_a_writer_takes_a_record_from_commitment_to_publication_through_the_forms(context, site):
    page, console = sign_in(context, site, "writer")
    stream_id = f"ui-{uuid.uuid4().hex[:10]}"
    page.locator("a.button", has_text="New record").click()
    page.wait_for_url(re.compile(r"/ui/records/new$"))
    for name, value in {"id": stream_id, "account.id": "acc-ui", "account.name": "<b>Acme</b> & Co",
                        "csm": "Dana Lee", "champion.name": "Kim Park", "champion.title": "VP Ops",
                        "use_case": "faster onboarding", "close_date": "2026-11-30"}.items():
        page.fill(f"[name='{name}']", value)
    page.click("form.event-form button[type=submit]")
    page.wait_for_url(re.compile(rf"/ui/records/{stream_id}$"))
    assert page.locator("h1").inner_text().startswith("<b>Acme</b> & Co")  # stored text is shown as text
    assert "Created" in page.locator(".messages").inner_text()
    submit(page, "started")
    submit(page, "approval_requested", checks=("marketing", "legal"))
    assert "Awaiting Customer Approval" in page.locator(".lead").inner_text()
    # publishing before every approver has granted is refused, with the reason
    submit(page, "published", {"url": "https://example.com/stories/acme"})
    refusal = page.locator(".refusal[role=alert]").inner_text()
    assert "approval pending from" in refusal and "legal" in refusal
    submit(page, "approval_granted", {"role": "marketing", "approver": "Mia"})
    submit(page, "approval_granted", {"role": "legal", "approver": "Lou"})
    submit(page, "published", {"url": "https://example.com/stories/acme"})
    assert "Published" in page.locator(".lead").inner_text()
    assert [e["type"] for e in stream(site, stream_id)] == [
        "committed", "started", "approval_requested", "approval_granted", "approval_granted", "published"]
    assert {e["actor"] for e in stream(site, stream_id)} == {"writer@example.com"}
    shoot(page, site, "record-published")
    # the refusal was answered 409, as the API answers it; nothing else went wrong
    assert [e for e in console.errors if "status of 409" not in e] == []


def test_an_invalid_form_names_the_field_at_fault_and_keeps_what_was_typed(context, site):
    page, _ = sign_in(context, site, "writer")
    page.goto(site["base"] + "/ui/records/cs-000003")
    form = page.locator("details.event-form:has(input[name=type][value=nps_recorded])")
    form.locator("summary").click()
    form.locator("[name=score]").evaluate("e => { e.removeAttribute('max'); e.value = '11'; }")
    form.locator("[name=respondent]").fill("Pat")
    fresh(page, form.locator("button[type=submit]").click)
    assert page.locator(".field-error").inner_text().startswith("Input should be less than or equal to 10")
    assert page.locator("details[open] [name=respondent]").input_value() == "Pat"


def test_a_double_submit_stores_one_event(context, site):
    page, _ = sign_in(context, site, "writer")
    page.goto(site["base"] + "/ui/records/cs-000003")
    before = len(stream(site, "cs-000003"))
    form = open_form(page, "quote_added", {"text": "It paid for itself.", "speaker": "Kim Park"})
    fields = {name: form.locator(f"input[name={name}]").input_value()
              for name in ("csrf_token", "type", "event_id", "expected_version")}
    fresh(page, form.locator("button[type=submit]").dblclick)
    # the same form sent again, as a browser resends it
    again = context.request.post(site["base"] + "/ui/records/cs-000003/events", form={
        **fields, "text": "It paid for itself.", "speaker": "Kim Park"})
    assert again.ok and "Already stored" in again.text()
    after = stream(site, "cs-000003")
    assert len(after) == before + 1 and after[-1]["event_id"] == fields["event_id"]


def test_a_form_without_its_csrf_token_is_refused_and_stores_nothing(context, site):
    page, _ = sign_in(context, site, "writer")
    page.goto(site["base"] + "/ui/records/cs-000003")
    before = len(stream(site, "cs-000003"))
    for token in ("", "forged"):
        refused = context.request.post(site["base"] + "/ui/records/cs-000003/events", form={
            "csrf_token": token, "type": "quote_added", "event_id": str(uuid.uuid4()), "text": "x", "speaker": "y"})
        assert refused.status == 400 and "CSRF" in refused.text()
    assert len(stream(site, "cs-000003")) == before
    # the key-authenticated API needs no token
    status, _, _ = call(site["base"], "POST", "/case-studies/cs-000003/events", site["keys"]["writer"],
                        {"type": "quote_added", "data": {"text": "via the API", "speaker": "Kim"}})
    assert status == 201


def test_a_reader_sees_no_forms_and_cannot_post_one(context, site):
    page, _ = sign_in(context, site, "reader")
    page.goto(site["base"] + "/ui/records/cs-000003")
    assert page.locator("form.event-form, details.event-form").count() == 0
    assert page.locator("a", has_text="New record").count() == 0
    token = page.locator("form.who input[name=csrf_token]").input_value()
    refused = context.request.post(site["base"] + "/ui/records/cs-000003/events", form={
        "csrf_token": token, "type": "quote_added", "event_id": str(uuid.uuid4()), "text": "x", "speaker": "y"})
    assert refused.status == 403
    page.goto(site["base"] + "/ui/operations")
    assert page.locator("h1").inner_text() == "This key's role may not do that"


def test_an_admin_retries_a_dead_message_from_the_operations_page(context, site):
    base, admin = site["base"], site["keys"]["admin"]
    nobody = f"http://127.0.0.1:{free_port()}/hooks/case-studies"  # nothing listens: delivery fails
    status, _, subscription = call(base, "POST", "/webhooks", admin, {"url": nobody, "types": ["quote_added"]})
    assert status == 201, subscription
    try:
        status, _, _ = call(base, "POST", "/case-studies/cs-000007/events", site["keys"]["writer"],
                            {"type": "quote_added", "data": {"text": "Dead on arrival.", "speaker": "Kim"}})
        assert status == 201
        deadline = time.monotonic() + 20
        while not (dead := [m for m in call(base, "GET", "/notifications?status=dead", admin)[2]["items"]
                            if m["stream_id"] == "cs-000007"]):
            assert time.monotonic() < deadline, "the message did not die"
            time.sleep(0.2)
        page, _ = sign_in(context, site, "admin")
        page.goto(base + "/ui/operations?status=dead")
        fresh(page, page.locator("button", has_text=f"Retry message {dead[0]['id']}").click)
        assert f"Notification {dead[0]['id']} is queued again" in page.locator(".messages").inner_text()
        assert call(base, "GET", f"/notifications/{dead[0]['id']}", admin)[2]["attempts"] <= 1
        shoot(page, site, "operations-retried")
    finally:
        call(base, "DELETE", f"/webhooks/{subscription['id']}", admin)


# -- for everyone ----------------------------------------------------------------------------------
def test_pages_read_and_forms_post_without_javascript(browser, site):
    context = browser.new_context(java_script_enabled=False)
    try:
        page, _ = sign_in(context, site, "writer")
        page.goto(site["base"] + "/ui/records/cs-000005")
        before = len(stream(site, "cs-000005"))
        form = open_form(page, "quote_added", {"text": "Works without scripts.", "speaker": "Kim Park"})
        form.locator("button[type=submit]").click()
        page.wait_for_url(re.compile(r"/ui/records/cs-000005$"))
        assert "Stored: quote_added" in page.locator(".messages").inner_text()
        assert len(stream(site, "cs-000005")) == before + 1
        page.locator("form.who button").click()
        page.wait_for_url(re.compile(r"/ui/sign-in$"))
        reader, _ = sign_in(context, site, "reader")
        reader.goto(site["base"] + "/ui/cycle-times")
        assert reader.locator("table.chart-data tbody tr").count() > 0
    finally:
        context.close()


def test_pages_send_a_strict_content_security_policy(context, site):
    page, _ = sign_in(context, site, "reader")
    response = page.goto(site["base"] + "/ui/board")
    headers = response.headers
    policy = headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    script_src = re.search(r"script-src ([^;]*)", policy).group(1)
    assert script_src.strip() == "'self'"
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert page.locator("script:not([src])").count() == 0
