"""The service as a user runs it: the CLI migrates and makes keys, gunicorn serves over HTTP."""
from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import PERSONAL_DATA_KEY
from tests.e2e.conftest import call, cli
from tests.factories import COMMITTED


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_a_new_user_migrates_makes_keys_and_walks_a_record_to_publication(served):
    url, base, log_path, _ = served
    made = cli(url, "keys", "create", "--role", "writer", "--name", "crm-automation")
    assert made.returncode == 0, made.stderr
    writer = made.stdout.strip()
    auditor = cli(url, "keys", "create", "--role", "auditor", "--name", "audit").stdout.strip()
    assert cli(url, "keys", "create", "--role", "writer", "--name", "crm-automation").returncode != 0

    steps = [("committed", COMMITTED), ("started", {}), ("approval_requested", {"approvers": ["legal"]}),
             ("approval_granted", {"role": "legal", "approver": "Kim"}),
             ("published", {"url": "https://example.com/s/1"})]
    for version, (event_type, data) in enumerate(steps, start=1):
        status, headers, body = call(base, "POST", "/case-studies/acme-2026-q3/events", writer,
                                     {"type": event_type, "data": data},
                                     {"X-Request-Id": f"walk-{version}"})
        assert status == 201, body
        assert headers["ETag"] == f'"{version}"' and headers["X-Request-Id"] == f"walk-{version}"
    status, _, record = call(base, "GET", "/case-studies/acme-2026-q3", writer)
    assert status == 200 and record["status"] == "published"
    status, _, stream = call(base, "GET", "/case-studies/acme-2026-q3/events", auditor)
    assert {e["actor"] for e in stream["events"]} == {"crm-automation"}
    status, _, error = call(base, "POST", "/case-studies/acme-2026-q3/events", writer, {"type": "started"})
    assert status == 409 and error["code"] == "transition_not_allowed"

    # a chunked body has no Content-Length; past 64 KiB it is refused all the same
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    padded = [b'{"type":"quote_added","data":{"text":"x","speaker":"Jo"}}', b" " * (100 * 1024), b"GARBAGE"]
    connection.request("POST", "/case-studies/acme-2026-q3/events", body=iter(padded), encode_chunked=True,
                       headers={"Authorization": f"Bearer {writer}", "Content-Type": "application/json"})
    refused = connection.getresponse()
    assert refused.status == 413 and json.loads(refused.read())["code"] == "payload_too_large"
    connection.close()
    assert call(base, "GET", "/case-studies/acme-2026-q3", writer)[2]["version"] == 5

    listed = cli(url, "keys", "list").stdout
    assert "crm-automation\twriter" in listed and writer not in listed
    assert cli(url, "keys", "revoke", "crm-automation").returncode == 0
    deadline = time.monotonic() + 3  # workers remember a good key for KEY_CACHE_SECONDS (1 s here)
    while (answer := call(base, "GET", "/case-studies/acme-2026-q3", writer))[0] == 200:
        assert time.monotonic() < deadline, "a revoked key kept working past the key cache window"
        time.sleep(0.1)
    assert answer[0] == 401 and answer[2]["code"] == "unauthorized"

    time.sleep(0.2)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request" and line["request_id"].startswith("walk-")]
    assert [r["request_id"] for r in requests] == [f"walk-{v}" for v in range(1, 6)]
    assert all(r["key"] == "crm-automation" and r["status"] == 201 for r in requests)
    appended = [line for line in lines if line.get("event") == "event_appended"]
    assert [(a["stream_id"], a["version"], a["type"]) for a in appended] == [
        ("acme-2026-q3", v, t) for v, (t, _) in enumerate(steps, start=1)]
    assert writer not in log_path.read_text()


@pytest.mark.parametrize("fresh_database", ["sqlite", "postgres"], indirect=True)
def test_the_projections_worker_beside_the_server_keeps_reports_current(served):
    url, base, log_path, _ = served
    writer = cli(url, "keys", "create", "--role", "writer", "--name", "crm").stdout.strip()
    reader = cli(url, "keys", "create", "--role", "reader", "--name", "reporting").stdout.strip()
    for event_type in ("committed", "started"):
        data = COMMITTED if event_type == "committed" else {}
        assert call(base, "POST", "/case-studies/beta-1/events", writer, {"type": event_type, "data": data})[0] == 201
    deadline = time.monotonic() + 15
    while (pipeline := call(base, "GET", "/projections/pipeline", reader)[2])["by_status"]["in_progress"] != 1:
        assert time.monotonic() < deadline, "the projections worker did not catch up"
        time.sleep(0.1)
    assert pipeline["projection"]["position"] == 2
    while any(p["lag_events"] for p in call(base, "GET", "/projections/status", reader)[2]["projectors"]):
        assert time.monotonic() < deadline, "the projections worker did not catch up"
        time.sleep(0.1)

    rebuilt = cli(url, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt pipeline, blockers, cycle_times, candidates, stuck to position 2" in rebuilt.stdout
    verified = cli(url, "projections", "verify", "blockers")
    assert verified.returncode == 0 and "blockers: matches a rebuild to position 2" in verified.stdout
    assert cli(url, "projections", "verify", "nonsense").returncode == 2
    listed = cli(url, "projections", "status")
    assert listed.stdout == ("projections (pipeline, blockers, cycle_times, candidates, stuck): position 2 of 2, "
                             "0 events / 0.0 s behind\n")
    page = cli(url, "report", "weekly", "--format", "html")
    assert page.returncode == 0 and "<h1>Case study weekly review" in page.stdout
    markdown = cli(url, "report", "weekly", "--as-of", "2026-01-01")
    assert "week ending 2026-01-01" in markdown.stdout and "| **Total** | 0 | 0 | |" in markdown.stdout

    time.sleep(0.2)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    # The worker found the projections at the start of a store with events (it rebuilt them), or
    # followed the feed batch by batch from the start: either way it read both events.
    positions = [line["position"] for line in lines if line.get("event") in ("projections_rebuilt",
                                                                              "projection_advanced")]
    assert positions and max(positions) == 2


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_readyz_says_not_ready_until_the_database_is_migrated(fresh_database, tmp_path):
    from service import create_app
    from service.config import Settings

    app = create_app(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=fresh_database.url, log_format="json"))
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503 and answer.get_json()["code"] == "not_ready"
    assert "casestudies db upgrade" in answer.get_json()["detail"]


@pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True)
def test_metrics_add_up_every_gunicorn_worker(served):
    from prometheus_client.parser import text_string_to_metric_families

    url, base, _, _ = served
    writer = cli(url, "keys", "create", "--role", "writer", "--name", "crm").stdout.strip()
    for n in range(12):  # spread over both workers by gunicorn
        assert call(base, "POST", f"/case-studies/m-{n}/events", writer, {"type": "committed", "data": COMMITTED})[0] == 201

    def committed_count() -> float:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "casestudies_events_appended_total" and sample.labels == {"type": "committed"})

    assert [committed_count() for _ in range(6)] == [12.0] * 6  # whichever worker answers
