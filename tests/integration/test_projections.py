"""Projections on SQLite and PostgreSQL: a fixture pipeline whose every figure is worked out by hand,
and every read held against a full replay of what had been recorded by then.

The pipeline (business dates; the report is for the week ending 2026-11-20 12:00 UTC, so
"the week before" is 2026-11-13 12:00). Every event happens at 09:00 UTC and is recorded then.

| id             | CSM | story                                                                        |
|----------------|-----|------------------------------------------------------------------------------|
| ns-late        | Ana | committed 10-01, never started                  -> stuck not_started_too_long |
| ip-idle        | Ana | committed 09-01, started 09-02, baseline 09-05  -> stuck no_activity          |
| ip-nobase      | Ben | committed 11-01, started 11-02                  -> stuck missing_baseline     |
| await-long     | Ben | committed 10-01, started 10-05, metrics 10-06, NPS 9 10-07 (a candidate),     |
|                |     | approval asked of marketing+legal 10-20, marketing granted 10-25              |
|                |     |                                                 -> stuck awaiting_approval    |
| hold-overdue   | Ana | committed 09-01, started 09-02, held 09-10 to revisit 10-01                   |
|                |     |                                                 -> stuck hold_revisit_overdue |
| hold-norevisit | Ben | committed 09-01, held 09-15, no revisit date    -> stuck hold_without_revisit |
| pub-week       | Ana | committed 08-01, started 08-11, metrics 08-20, NPS 8 08-21, approval asked    |
|                |     | 10-01, granted 10-05, published 11-18           -> published this week       |
| changes        | Ben | committed 11-10, started 11-11, metrics 11-12, approval asked of legal        |
|                |     | 11-13, legal asked for changes 11-16                                          |
| new-cand       | Ana | committed 11-01, started 11-02, baseline 11-03, current 11-15, NPS 9 11-17    |
|                |     |                                                 -> a new candidate            |
| declined       | Ben | committed 10-01, declined 11-14                                               |
"""
from __future__ import annotations

import csv
import io
import os
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

from bench.dataset import load_url, make_dataset
from service import create_app
from service.api.representation import record_json
from service.bootstrap import build
from service.config import Settings
from service.domain import StuckThresholds
from service.domain.reporting import BLOCKER_CODES
from service.domain.stuck import STUCK_CODES
from service.events.db import transaction
from service.events.event import NewEvent
from service.events.feed import Feed, NotYetReadable
from service.events.store import EventStore
from service.projections.checkpoints import NAME, ProjectionFailed
from service.projections.projectors import projectors
from service.projections.rebuild import ProjectionBusy
from service.projections.runner import ProjectionRunner
from service.projections.tables import pipeline_records, projection_checkpoints
from service.reports.weekly import to_html, to_markdown
from tests import oracle
from tests.conftest import BACKENDS, PERSONAL_DATA_KEY, auth, new_database, settle

AS_OF = datetime(2026, 11, 20, 12, tzinfo=UTC)
BASELINE = {"kind": "baseline", "metrics": {"tickets_per_day": 100}}
CURRENT = {"kind": "current", "metrics": {"tickets_per_day": 150}}
LIMITS = StuckThresholds()
# Four past times the fixture is read at as it was known then, and "now" (after every event).
PAST = [datetime(2026, 9, 12, 12, tzinfo=UTC), datetime(2026, 10, 22, 12, tzinfo=UTC),
        datetime(2026, 11, 14, 12, tzinfo=UTC), datetime(2026, 11, 17, 12, tzinfo=UTC)]


def day(month: int, dom: int) -> datetime:
    return datetime(2026, month, dom, 9, tzinfo=UTC)


def committed(csm: str, name: str) -> dict:
    return {"account": {"id": f"acc-{name}", "name": name}, "csm": csm,
            "champion": {"name": "Jo Park", "title": "VP"}, "use_case": "support", "close_date": "2026-07-01"}


PIPELINE: dict[str, list[tuple[str, dict, datetime]]] = {
    "ns-late": [("committed", committed("Ana", "Nimbus"), day(10, 1))],
    "ip-idle": [("committed", committed("Ana", "Ibex"), day(9, 1)), ("started", {}, day(9, 2)),
                ("metrics_recorded", BASELINE, day(9, 5))],
    "ip-nobase": [("committed", committed("Ben", "Iris"), day(11, 1)), ("started", {}, day(11, 2))],
    "await-long": [("committed", committed("Ben", "Atlas"), day(10, 1)), ("started", {}, day(10, 5)),
                   ("metrics_recorded", BASELINE, day(10, 6)), ("metrics_recorded", CURRENT, day(10, 6)),
                   ("nps_recorded", {"score": 9}, day(10, 7)),
                   ("approval_requested", {"approvers": ["marketing", "legal"]}, day(10, 20)),
                   ("approval_granted", {"role": "marketing", "approver": "Sam"}, day(10, 25))],
    "hold-overdue": [("committed", committed("Ana", "Halo"), day(9, 1)), ("started", {}, day(9, 2)),
                     ("held", {"reason": "customer reorg", "revisit_on": "2026-10-01"}, day(9, 10))],
    "hold-norevisit": [("committed", committed("Ben", "Hera"), day(9, 1)),
                       ("held", {"reason": "budget freeze"}, day(9, 15))],
    "pub-week": [("committed", committed("Ana", "Polar"), day(8, 1)), ("started", {}, day(8, 11)),
                 ("metrics_recorded", BASELINE, day(8, 20)), ("metrics_recorded", CURRENT, day(8, 20)),
                 ("nps_recorded", {"score": 8}, day(8, 21)),
                 ("approval_requested", {"approvers": ["marketing"]}, day(10, 1)),
                 ("approval_granted", {"role": "marketing", "approver": "Sam"}, day(10, 5)),
                 ("published", {"url": "https://example.com/polar"}, day(11, 18))],
    "changes": [("committed", committed("Ben", "Cobalt"), day(11, 10)), ("started", {}, day(11, 11)),
                ("metrics_recorded", BASELINE, day(11, 12)), ("metrics_recorded", CURRENT, day(11, 12)),
                ("approval_requested", {"approvers": ["legal"]}, day(11, 13)),
                ("changes_requested", {"role": "legal", "comment": "drop the revenue figure"}, day(11, 16))],
    "new-cand": [("committed", committed("Ana", "Nova"), day(11, 1)), ("started", {}, day(11, 2)),
                 ("metrics_recorded", BASELINE, day(11, 3)), ("metrics_recorded", CURRENT, day(11, 15)),
                 ("nps_recorded", {"score": 9}, day(11, 17))],
    "declined": [("committed", committed("Ben", "Dune"), day(10, 1)),
                 ("declined", {"reason": "new CEO"}, day(11, 14))],
}


def load(store_engine, names=None) -> None:
    """Append the fixture's events in the order they happened, each recorded when it happened."""
    steps = sorted((at, stream_id, index) for stream_id, events in PIPELINE.items()
                   if names is None or stream_id in names for index, (_, _, at) in enumerate(events))
    for at, stream_id, index in steps:
        event_type, data, _ = PIPELINE[stream_id][index]
        EventStore(store_engine, clock=lambda at=at: at).append(
            stream_id, [NewEvent(event_type, data, occurred_at=at)], actor="fixture")
    settle(Feed(store_engine))


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory):
    """A fresh database per backend holding only the fixture pipeline, projected."""
    with new_database(request, request.param, tmp_path_factory.mktemp("projections"), pool_size=10) as db:
        services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=db.url, log_format="json"), engine=db.engine)
        load(db.engine)
        services.runner.catch_up()
        reader = services.keys.create(f"reader-{request.param}", "reader")
        writer = services.keys.create(f"writer-{request.param}", "writer")
        client = create_app(services=services).test_client()
        yield services, client, auth(reader), auth(writer)


def get(world, path: str, **query):
    _services, client, reader, _writer = world
    response = client.get(path, query_string=query, headers=reader)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def rows_of(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def every_page(world, path: str, *, limit: int = 1000, **query) -> list[dict]:
    """Every item of a paged answer, following next_cursor."""
    items, cursor = [], None
    while True:
        page = get(world, path, limit=limit, **query, **({"cursor": cursor} if cursor else {})).get_json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# -- the weekly review's questions, worked out by hand ------------------------------------------
def test_every_stuck_rule_fires_on_the_fixture(world):
    answer = get(world, "/projections/stuck", as_of=AS_OF.isoformat()).get_json()
    assert {(item["id"], item["code"]) for item in answer["items"]} == {
        ("ns-late", "not_started_too_long"), ("ip-idle", "no_activity"), ("ip-nobase", "missing_baseline"),
        ("await-long", "awaiting_approval_too_long"), ("hold-overdue", "hold_revisit_overdue"),
        ("hold-norevisit", "hold_without_revisit_date")}
    assert {item["code"] for item in answer["items"]} == set(STUCK_CODES)
    waiting = next(item for item in answer["items"] if item["id"] == "await-long")
    assert waiting["reason"] == "waiting 31 days on legal"
    # Ana's first, longest stuck first: hold-overdue from 10-02 (the day after its revisit date),
    # ns-late from 10-15, ip-idle from 09-26 + ... (idle since 09-05, 21 days: 09-26).
    assert [item["id"] for item in answer["items"]] == ["ip-idle", "hold-overdue", "ns-late", "hold-norevisit",
                                                        "await-long", "ip-nobase"]
    assert answer["projection"]["name"] == "projections" and answer["projection"]["position"] > 0


def test_the_stuck_list_pages_and_filters_by_csm_code_and_status_and_streams_csv(world):
    pages, cursor, seen = 0, None, []
    while True:
        page = get(world, "/projections/stuck", as_of=AS_OF.isoformat(), limit=4,
                   **({"cursor": cursor} if cursor else {})).get_json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 2 and len(seen) == 6 == len(set(seen))
    only = get(world, "/projections/stuck", as_of=AS_OF.isoformat(), csm="Ben", status="on_hold").get_json()
    assert [i["id"] for i in only["items"]] == ["hold-norevisit"]
    coded = get(world, "/projections/stuck", as_of=AS_OF.isoformat(), code="missing_baseline").get_json()
    assert [i["id"] for i in coded["items"]] == ["ip-nobase"]
    as_csv = get(world, "/projections/stuck", as_of=AS_OF.isoformat(), format="csv")
    assert [row["id"] for row in rows_of(as_csv)] == seen
    assert as_csv.headers["X-Projection-Position"] == str(page["projection"]["position"])


def test_blockers_name_what_stands_between_each_record_and_publication(world):
    answer = get(world, "/projections/blockers").get_json()
    found = {(item["id"], item["code"], item["subject"]) for item in answer["items"]}
    missing_both = {"ns-late", "ip-nobase", "hold-overdue", "hold-norevisit"}
    assert found == {
        *((i, "missing_baseline_metrics", None) for i in missing_both),
        *((i, "missing_current_metrics", None) for i in missing_both | {"ip-idle"}),
        ("await-long", "approval_pending", "legal"),
        ("changes", "changes_requested", "legal"),
        ("hold-overdue", "on_hold", None), ("hold-norevisit", "on_hold", None)}
    assert {code for _, code, _ in found} == set(BLOCKER_CODES) - {"unassigned_csm"}  # unit-tested
    assert answer["records"] == 7
    pending = next(item for item in answer["items"] if item["code"] == "approval_pending")
    assert pending["since"] == day(10, 20).isoformat()

    by_csm = get(world, "/projections/blockers", csm="Ben", code="on_hold").get_json()
    assert [item["id"] for item in by_csm["items"]] == ["hold-norevisit"]
    as_csv = get(world, "/projections/blockers", format="csv")
    assert len(rows_of(as_csv)) == len(answer["items"])
    assert as_csv.headers["X-Projection-Position"] == str(answer["projection"]["position"])


def test_blockers_as_known_at_a_past_moment_are_those_that_held_then(world):
    answer = get(world, "/projections/blockers", as_of="2026-11-14T12:00:00Z", code="approval_pending").get_json()
    assert {(item["id"], item["subject"]) for item in answer["items"]} == {("changes", "legal"),
                                                                            ("await-long", "legal")}
    asked = next(item for item in answer["items"] if item["id"] == "changes")
    assert asked["days"] == 1  # blocked from 11-13 09:00 to the as_of
    # changes asked for changes on 11-16: its approval no longer pends, now
    now = get(world, "/projections/blockers", code="approval_pending").get_json()
    assert [item["id"] for item in now["items"]] == ["await-long"]


def test_cycle_times_give_median_and_p90_per_quarter_for_each_stage_and_approver_role(world):
    answer = get(world, "/projections/cycle-times").get_json()
    quarters = {q["quarter"]: q for q in answer["quarters"]}
    assert set(quarters) == {"2026-Q3", "2026-Q4"}
    # committed -> started, by the quarter it started: Q3 ip-idle 1, hold-overdue 1, pub-week 10;
    # Q4 await-long 4, ip-nobase 1, changes 1, new-cand 1.
    assert quarters["2026-Q3"]["stages"]["committed_to_started"] == {"count": 3, "median_days": 1.0,
                                                                     "p90_days": 8.2}
    assert quarters["2026-Q4"]["stages"]["committed_to_started"] == {"count": 4, "median_days": 1.0,
                                                                     "p90_days": 3.1}
    # committed -> approval requested: await-long 19, pub-week 61, changes 3 (all in Q4).
    assert quarters["2026-Q4"]["stages"]["committed_to_approval_requested"] == {
        "count": 3, "median_days": 19.0, "p90_days": 52.6}
    assert quarters["2026-Q4"]["stages"]["committed_to_published"] == {"count": 1, "median_days": 109.0,
                                                                       "p90_days": 109.0}
    # marketing answered await-long in 5 days and pub-week in 4; legal asked changes after 3.
    assert quarters["2026-Q4"]["approver_roles"] == {
        "legal": {"count": 1, "median_days": 3.0, "p90_days": 3.0},
        "marketing": {"count": 2, "median_days": 4.5, "p90_days": 4.9}}
    assert answer["overall"]["stages"]["committed_to_started"]["count"] == 7

    only_ana = get(world, "/projections/cycle-times", csm="Ana", **{"from": "2026-10-01"}).get_json()
    assert only_ana["overall"]["stages"]["committed_to_started"]["count"] == 1  # new-cand
    as_csv = rows_of(get(world, "/projections/cycle-times", format="csv"))
    assert {"quarter": "2026-Q4", "kind": "approver_role", "name": "marketing", "count": "2",
            "median_days": "4.5", "p90_days": "4.9"} in as_csv


def test_candidates_are_records_with_enough_kpi_improvement_and_a_promoter_nps(world):
    answer = get(world, "/projections/candidates").get_json()
    assert [(i["id"], i["candidate_since"]) for i in answer["items"]] == [
        ("new-cand", day(11, 17).isoformat()), ("await-long", day(10, 7).isoformat()),
        ("pub-week", day(8, 21).isoformat())]
    assert answer["items"][0]["kpi_improvement_pct"] == 50.0 and answer["items"][0]["nps"] == 9
    assert answer["kpi_improvement_threshold_pct"] == 20.0
    new = get(world, "/projections/candidates", since="2026-11-13").get_json()
    assert [i["id"] for i in new["items"]] == ["new-cand"]
    assert [r["id"] for r in rows_of(get(world, "/projections/candidates", format="csv"))] == [
        "new-cand", "await-long", "pub-week"]


def test_the_pipeline_counts_the_fixture_by_status_and_csm(world):
    answer = get(world, "/projections/pipeline").get_json()
    assert answer["by_status"] == {"not_started": 1, "in_progress": 4, "awaiting_customer_approval": 1,
                                   "published": 1, "on_hold": 2, "declined": 1}
    assert answer["by_csm"]["Ana"]["in_progress"] == 2 and answer["by_csm"]["Ben"]["declined"] == 1
    before = get(world, "/projections/pipeline", as_of="2026-10-02T00:00:00Z").get_json()  # as known then
    assert before["total"] == 7 and before["by_status"]["published"] == 0  # 3 were committed later
    assert answer["projection"]["name"] == "projections"


def test_the_weekly_report_sums_up_the_review_for_the_fixture(world):
    report = get(world, "/reports/weekly", as_of=AS_OF.isoformat()).get_json()
    assert {s: (c["now"], c["week_before"], c["change"]) for s, c in report["counts"].items()} == {
        "not_started": (1, 2, -1), "in_progress": (4, 3, 1), "awaiting_customer_approval": (1, 3, -2),
        "published": (1, 0, 1), "on_hold": (2, 2, 0), "declined": (1, 0, 1)}
    assert report["stuck"]["count"] == 6 and report["stuck"]["records"] == 6
    assert report["stuck"]["by_csm"] == {
        "Ana": {"count": 3, "hold_revisit_overdue": 1, "no_activity": 1, "not_started_too_long": 1},
        "Ben": {"count": 3, "awaiting_approval_too_long": 1, "hold_without_revisit_date": 1, "missing_baseline": 1}}
    assert report["stuck"]["list"].endswith("/projections/stuck?as_of=2026-11-20T12%3A00%3A00%2B00%3A00")
    assert report["blocking_publication"]["records"] == 7
    assert report["blocking_publication"]["by_code"] == {
        "approval_pending": 1, "changes_requested": 1, "missing_baseline_metrics": 4,
        "missing_current_metrics": 5, "on_hold": 2}
    assert report["new_candidates"]["count"] == 1 and [c["id"] for c in report["new_candidates"]["items"]] == [
        "new-cand"]
    assert [(p["id"], p["days_from_commitment"]) for p in report["published"]["items"]] == [("pub-week", 109.0)]
    assert report["cycle_times"]["quarter"] == "2026-Q4"
    assert report["cycle_times"]["this_quarter"]["committed_to_published"]["median_days"] == 109.0
    assert report["projection"]["position"] > 0

    markdown = to_markdown(report)
    assert "# Case study weekly review, week ending 2026-11-20" in markdown
    assert "| Awaiting Customer Approval | 1 | 3 | -2 |" in markdown
    assert "## Stuck (6 findings, 6 records)" in markdown and "| Ana | 3 |" in markdown
    assert "**new-cand** (Nova, CSM Ana): tickets_per_day +50 %, NPS 9" in markdown
    page = to_html(report)
    assert '<h2 id="stuck">Stuck (6 in 6 records)</h2>' in page and "Every one, with its reason" in page


def test_stored_html_and_markdown_in_the_weekly_report_stay_text_in_markdown_as_in_html(world):
    report = get(world, "/reports/weekly", as_of=AS_OF.isoformat()).get_json()
    hostile = "<script>alert(1)</script> [click](javascript:alert(1)) ![x](http://t.example/p.png) *a*|b"
    report["stuck"]["by_csm"] = {hostile: {"count": 1}}
    report["new_candidates"]["items"][0].update(id=hostile, account_name=hostile, csm=hostile, best_metric=hostile)
    markdown = to_markdown(report)
    for raw in ("<script>", "](javascript:", "![x](", "*a*", "a|b"):
        assert raw not in markdown, raw
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in markdown and "\\[click\\]" in markdown
    page = to_html(report)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("path", ["/reports/weekly", "/projections/blockers", "/projections/stuck"])
def test_a_reference_time_out_of_range_is_400_not_500(world, path):
    _services, client, reader, _writer = world
    answer = client.get(path, query_string={"as_of": "0001-01-01"}, headers=reader)
    assert answer.status_code == 400 and answer.get_json()["code"] == "invalid_parameter"


def test_the_weekly_report_is_served_as_json_markdown_and_html(world):
    as_json = get(world, "/reports/weekly", as_of=AS_OF.isoformat()).get_json()
    assert as_json["stuck"]["count"] == 6
    markdown = get(world, "/reports/weekly", as_of=AS_OF.isoformat(), format="md")
    assert markdown.mimetype == "text/markdown" and "## What blocks publication (7 records)" in markdown.get_data(
        as_text=True)
    _services, client, reader, _writer = world
    page = client.get("/reports/weekly", query_string={"as_of": AS_OF.isoformat()},
                      headers={**reader, "Accept": "text/html"})
    assert page.mimetype == "text/html" and "<table>" in page.get_data(as_text=True)


def test_blockers_page_through_every_row_once_in_json_and_csv(world):
    whole = get(world, "/projections/blockers").get_json()
    seen, cursor, pages = [], None, 0
    while True:
        page = get(world, "/projections/blockers", limit=4, **({"cursor": cursor} if cursor else {})).get_json()
        seen += [(i["id"], i["code"], i["subject"]) for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [(i["id"], i["code"], i["subject"]) for i in whole["items"]] and pages == 4  # 13 rows
    first = get(world, "/projections/blockers", limit=4, format="csv")
    assert len(rows_of(first)) == 4 and 'rel="next"' in first.headers["Link"]
    _services, client, reader, _writer = world
    bad = client.get("/projections/blockers", query_string={"cursor": "bm9wZQ"}, headers=reader)
    assert bad.status_code == 400 and bad.get_json()["code"] == "invalid_parameter"


# -- every read equals a full replay of what had been recorded by then ----------------------------
def replayed_streams(services) -> dict[str, list]:
    return dict(services.store.streams())


def assert_reads_equal_replay(world, streams: dict[str, list], known_at: datetime | None) -> None:
    """Every read, as known at ``known_at`` (None: now), against a replay of the events recorded by then."""
    histories = oracle.replay_known(streams, known_at)
    query = {"as_of": known_at.isoformat()} if known_at else {}
    reference = known_at or datetime.now(UTC)
    records = every_page(world, "/case-studies", limit=500, **query)
    assert records == [record_json(histories[i].record, 20.0) for i in sorted(histories)]
    pipeline = get(world, "/projections/pipeline", **query).get_json()
    assert {k: pipeline[k] for k in ("total", "by_status", "by_csm")} == oracle.pipeline(histories)
    stuck = every_page(world, "/projections/stuck", as_of=reference.isoformat())
    assert stuck == oracle.stuck(histories, reference, LIMITS)
    blockers = every_page(world, "/projections/blockers", **query)
    expected = oracle.open_blockers(histories, reference)
    key = lambda i: (i["csm"] or "", i["since"], i["id"], i["code"], i["subject"] or "")  # noqa: E731
    assert sorted(blockers, key=key) == expected and [i["id"] for i in blockers] == [i["id"] for i in expected]
    cycle = get(world, "/projections/cycle-times", **query).get_json()
    assert {k: cycle[k] for k in ("quarters", "overall")} == oracle.cycle_times(histories)
    candidates = get(world, "/projections/candidates", **query).get_json()
    assert candidates["items"] == oracle.candidates(histories)
    report = get(world, "/reports/weekly", as_of=reference.isoformat()).get_json()
    expected_report = oracle.weekly(histories, reference, LIMITS)
    assert {k: report[k] for k in ("counts", "total", "cycle_times")} == {
        k: expected_report[k] for k in ("counts", "total", "cycle_times")}
    for section in ("stuck", "blocking_publication"):
        assert {k: v for k, v in report[section].items() if k != "list"} == expected_report[section]
    for section in ("new_candidates", "published"):
        assert report[section]["count"] == expected_report[section]["count"]
        assert [item["id"] for item in report[section]["items"]] == expected_report[section]["first"]


def test_the_record_list_as_known_at_a_past_time_pages_filters_and_names_its_position(world):
    histories = oracle.replay_known(replayed_streams(world[0]), PAST[1])
    bens = sorted(i for i, h in histories.items() if h.record.csm == "Ben")
    first = get(world, "/case-studies", as_of=PAST[1].isoformat(), csm="Ben", limit=2).get_json()
    assert [item["id"] for item in first["items"]] == bens[:2] and len(bens) > 2
    assert first["as_of"] == PAST[1].isoformat() and first["projection"]["position"] > 0
    _services, client, reader, _writer = world
    second = client.get(first["next"], headers=reader).get_json()  # the link keeps as_of and the filter
    assert [item["id"] for item in second["items"]] == bens[2:4]


@pytest.mark.parametrize("known_at", [None, *PAST], ids=["now", *(t.date().isoformat() for t in PAST)])
def test_the_fixture_reads_as_a_replay_of_what_was_recorded_by_then(world, known_at):
    assert_reads_equal_replay(world, replayed_streams(world[0]), known_at)


GENERATED = 2_000
GENERATED_SEED = int(os.environ.get("GENERATED_SEED", "20261123"))  # another seed tries other data


@pytest.fixture(scope="module", params=BACKENDS)
def generated(request, tmp_path_factory):
    """A generated store of GENERATED case studies (each event recorded when it happened), projected
    live batch by batch from an empty checkpoint."""
    events, states, _ = make_dataset(GENERATED, seed=GENERATED_SEED)
    with new_database(request, request.param, tmp_path_factory.mktemp("generated"), pool_size=10) as db:
        load_url(db.url, events, states)
        services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=db.url, log_format="json"), engine=db.engine)
        assert services.runner.catch_up() == len(events)
        reader = services.keys.create(f"reader-{request.param}", "reader")
        client = create_app(services=services).test_client()
        yield services, client, auth(reader), None


def generated_times(streams) -> list[datetime]:
    """Four past times spread over the store's history."""
    recorded = sorted(e.recorded_at for stream in streams.values() for e in stream)
    return [recorded[len(recorded) * n // 5] for n in (1, 2, 3, 4)]


def test_a_generated_store_reads_as_a_replay_live_and_after_a_rebuild(generated):
    services = generated[0]
    streams = replayed_streams(services)
    assert len(streams) == GENERATED
    times = [None, *generated_times(streams)]
    for known_at in times:  # projected live, batch by batch, from an empty checkpoint
        assert_reads_equal_replay(generated, streams, known_at)
    assert all(not result.differences for result in services.runner.rebuilder.verify().values())
    services.runner.rebuilder.rebuild()
    for known_at in times:
        assert_reads_equal_replay(generated, streams, known_at)


# -- keeping projections: checkpoints, restarts, rebuild, verify ------------------------------
@pytest.fixture(params=BACKENDS)
def empty(request, tmp_path):
    """A fresh migrated database with nothing projected."""
    with new_database(request, request.param, tmp_path, pool_size=10) as db:
        yield build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=db.url, log_format="json"), engine=db.engine)


def exploding(real: dict, event_type: str, message: str) -> dict:
    """The projectors ``real``, one of which fails on every event of ``event_type`` (a projector with a bug)."""
    from dataclasses import dataclass

    candidates = real["candidates"]

    @dataclass(frozen=True)
    class Exploding:
        name: str = candidates.name
        tables: tuple = candidates.tables
        description: str = candidates.description

        def step(self, state, event, record, changes):
            if event.type == event_type:
                raise RuntimeError(message)
            candidates.step(state, event, record, changes)

    return {**real, "candidates": Exploding()}


def table_rows(engine, table) -> list[tuple]:
    with engine.connect() as conn:
        return sorted(tuple(map(str, row)) for row in conn.execute(select(table)))


def all_rows(services) -> dict[str, list[tuple]]:
    from service.projections.tables import PROJECTION_TABLES

    return {table.name: table_rows(services.engine, table) for table in PROJECTION_TABLES}


def test_a_runner_restarted_from_its_checkpoint_misses_and_doubles_no_row(empty):
    services = empty
    load(services.engine)
    engine = services.engine
    small = ProjectionRunner(engine, services.feed, projectors(20.0, LIMITS), batch=7)
    assert small.catch_up(max_batches=2) == 14  # then "the process dies"
    with engine.connect() as conn:
        assert small.checkpoints.get(conn).position == services.feed.read(after=0, limit=14).events[-1].position
    restarted = ProjectionRunner(engine, services.feed, projectors(20.0, LIMITS), batch=7)
    total = sum(len(steps) for steps in PIPELINE.values())
    assert restarted.catch_up() == total - 14
    assert restarted.catch_up() == 0
    live = all_rows(services)
    assert all(result.differences == [] for result in restarted.rebuilder.verify().values())
    ProjectionRunner(engine, services.feed, projectors(20.0, LIMITS)).rebuilder.rebuild()
    strip = lambda rows: sorted(row[1:] for row in rows)  # noqa: E731 - the generation column differs
    assert {t: strip(r) for t, r in all_rows(services).items()} == {t: strip(r) for t, r in live.items()}


def test_a_batch_never_splits_one_append(empty):
    services = empty
    store = EventStore(services.engine)
    store.append("a", [NewEvent(t, d) for t, d, _ in PIPELINE["pub-week"]], actor="t")  # 8 events, one append
    settle(services.feed)
    runner = ProjectionRunner(services.engine, services.feed, projectors(20.0, LIMITS), batch=3)
    assert runner.step() == 8


def test_a_failing_projection_keeps_its_checkpoint_and_reports_the_event(empty):
    services = empty
    load(services.engine, {"ns-late", "ip-idle"})
    runner = services.runner
    runner.catch_up()
    before = runner.status()
    EventStore(services.engine).append(
        "ip-idle", [NewEvent("quote_added", {"text": "boom", "speaker": "Jo"}, occurred_at=day(9, 6))], actor="t")
    settle(services.feed)
    failing = ProjectionRunner(services.engine, services.feed,
                               exploding(runner.projectors, "quote_added", "cannot project this quote"))
    with pytest.raises(ProjectionFailed):
        failing.catch_up()
    status = failing.status()
    assert status["failing"] is True and status["lag_events"] == 1
    assert "cannot project this quote" in status["last_error"]["message"]
    quote = EventStore(services.engine).load("ip-idle")[-1]
    assert status["last_error"]["position"] == quote.position and status["checkpoint"] == before["checkpoint"]

    runner.catch_up()  # the fixed projector gets past it
    healed = runner.status()
    assert healed["failing"] is False and healed["lag_events"] == 0
    assert healed["last_error"] is not None  # the error stays visible after recovery


def test_a_rebuild_equals_the_live_projection_and_readers_never_see_it_half_built(empty):
    services = empty
    load(services.engine)
    runner = services.runner
    runner.catch_up()
    live = all_rows(services)
    during: list[dict] = []

    def progress(_events):
        with services.projections.view() as view:
            during.append(view.pipeline().value)

    mark = runner.rebuilder.rebuild(progress=progress)
    assert during and all(seen["total"] == len(PIPELINE) for seen in during)  # the old generation, whole
    assert mark.position == services.feed.head().position
    strip = lambda rows: sorted(row[1:] for row in rows)  # noqa: E731 - the generation column differs
    assert {t: strip(r) for t, r in all_rows(services).items()} == {t: strip(r) for t, r in live.items()}
    with services.engine.connect() as conn:
        generations = conn.execute(select(pipeline_records.c.generation).distinct()).scalars().all()
    assert generations == [2]  # the old generation is gone
    assert all(not result.differences for result in runner.rebuilder.verify().values())


def test_verify_reports_a_live_row_that_differs_from_a_rebuild(empty):
    services = empty
    load(services.engine, {"ns-late", "declined"})
    runner = services.runner
    runner.catch_up()
    with transaction(services.engine) as conn:
        conn.execute(update(pipeline_records).where(pipeline_records.c.id == "ns-late").values(status="published"))
    [difference] = runner.rebuilder.verify(["pipeline"])["pipeline"].differences
    assert difference.table == "proj_pipeline_records" and difference.key["id"] == "ns-late"
    assert difference.live["status"] == "published" and difference.rebuilt["status"] == "not_started"


def test_status_shows_lag_in_events_and_seconds_until_the_projections_catch_up(empty):
    services = empty
    load(services.engine, {"ns-late"})
    services.runner.catch_up()
    EventStore(services.engine).append("declined", [NewEvent(t, d, occurred_at=at)
                                                    for t, d, at in PIPELINE["declined"]], actor="t")
    settle(services.feed)
    lagging = services.runner.status()
    assert lagging["lag_events"] == 2 and lagging["lag_seconds"] > 0
    services.runner.catch_up()
    caught_up = services.runner.status()
    assert caught_up["lag_events"] == 0 and caught_up["lag_seconds"] == 0


def test_the_worker_loop_follows_new_events_until_stopped(empty):
    services = empty
    stop = threading.Event()
    worker = threading.Thread(target=services.runner.run, args=(stop,), kwargs={"poll_seconds": 0.05})
    worker.start()
    try:
        load(services.engine, {"ns-late", "pub-week"})
        head = services.feed.head().position
        deadline = time.monotonic() + 10
        while services.runner.status()["checkpoint"]["position"] != head:
            assert time.monotonic() < deadline, "the worker did not catch up"
            stop.wait(0.05)
        with services.projections.view() as view:
            assert view.pipeline().value["total"] == 2
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()


def test_a_second_rebuild_or_verify_is_refused_while_one_runs(empty):
    services = empty
    load(services.engine, {"ns-late"})
    runner = services.runner
    runner.catch_up()
    with runner.rebuilder._exclusive():
        with pytest.raises(ProjectionBusy):
            runner.rebuilder.rebuild()
        with pytest.raises(ProjectionBusy):
            runner.rebuilder.verify(["pipeline"])
    assert runner.rebuilder.rebuild().position > 0


def test_a_rebuild_clears_what_an_interrupted_one_left_behind(empty):
    services = empty
    load(services.engine, {"ns-late", "declined"})
    runner = services.runner
    runner.catch_up()
    with transaction(services.engine) as conn:  # rows of a rebuild that died before its swap
        conn.execute(pipeline_records.insert().values(generation=2, id="ghost", valid_from=AS_OF,
                                                      status="published", csm="X"))
    runner.rebuilder.rebuild()
    with services.engine.connect() as conn:
        assert conn.execute(select(pipeline_records.c.id).where(pipeline_records.c.id == "ghost")).first() is None
    with services.projections.view() as view:
        assert view.pipeline().value["total"] == 2


def test_a_worker_that_finds_the_projections_at_the_start_of_a_full_store_rebuilds_them(empty):
    services = empty
    load(services.engine)
    stop = threading.Event()
    worker = threading.Thread(target=services.runner.run, args=(stop,), kwargs={"poll_seconds": 0.05})
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while services.runner.status()["lag_events"]:
            assert time.monotonic() < deadline, "the worker did not catch up"
            stop.wait(0.05)
    finally:
        stop.set()
        worker.join(10)
    with services.engine.connect() as conn:
        assert conn.execute(select(pipeline_records.c.generation).distinct()).scalars().all() == [2]
    with services.projections.view() as view:
        assert view.pipeline().value["total"] == len(PIPELINE)


@pytest.mark.parametrize("fresh_database", ["postgres"], indirect=True)
def test_status_shows_events_an_open_transaction_holds_back_and_who_holds_them(fresh_database):
    from service import migrations

    engine = fresh_database.engine
    migrations.upgrade(engine)
    services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=fresh_database.url, log_format="json"), engine=engine)
    load(engine, {"ns-late"})
    services.runner.catch_up()
    with engine.connect() as holder:
        holder.execution_options(isolation_level="READ COMMITTED")
        with holder.begin():
            holder.execute(select(func.pg_current_xact_id()))  # a transaction id, as a writer would take
            pid = holder.execute(select(func.pg_backend_pid())).scalar()
            appended = EventStore(engine).append(
                "declined", [NewEvent(t, d, occurred_at=at) for t, d, at in PIPELINE["declined"]], actor="fixture")
            status = oldest_writer_is(services, pid)  # once any older transaction on the server has ended
            assert status["held_back"]["events"] == 2  # the two appended after it began
            assert status["held_back"]["by_transaction"]["started_at"]
            assert status["lag_events"] == 2 and status["lag_seconds"] > 0
            with pytest.raises(NotYetReadable):
                services.feed.read(after=appended.position)
    settle(services.feed)
    assert services.runner.status()["held_back"] == {"events": 0, "by_transaction": None}
    assert services.feed.read(after=services.feed.head().position).events == []


def oldest_writer_is(services, pid: int, timeout: float = 15.0) -> dict:
    """The projections' status once the open writer holding the feed back is backend ``pid``.

    Transaction ids are server-wide: a writer in another database on the same server (another test
    worker) that began earlier holds the feed back first, until it ends."""
    deadline = time.monotonic() + timeout
    while True:
        status = services.runner.status()
        if (status["held_back"]["by_transaction"] or {}).get("pid") == pid:
            return status
        assert time.monotonic() < deadline, f"another transaction held the feed back: {status['held_back']}"
        time.sleep(0.02)


def test_a_rebuild_that_cannot_project_a_stream_keeps_the_live_projection_and_reports_the_event(empty):
    services = empty
    load(services.engine, {"ns-late", "ip-idle"})
    runner = services.runner
    runner.catch_up()
    broken = ProjectionRunner(services.engine, services.feed,
                              exploding(runner.projectors, "metrics_recorded", "cannot project metrics"))
    with pytest.raises(ProjectionFailed):
        broken.rebuilder.rebuild()
    status = runner.status()
    metrics = next(e for e in EventStore(services.engine).load("ip-idle") if e.type == "metrics_recorded")
    assert status["failing"] and status["last_error"]["position"] == metrics.position
    with services.projections.view() as view:
        assert status["generation"] == 1 and view.pipeline().value["total"] == 2

    stop = threading.Event()  # a worker meeting the same failure keeps running and retrying
    stop_after = threading.Timer(0.5, stop.set)
    stop_after.start()
    with transaction(services.engine) as conn:  # as if the projections were new: the worker rebuilds them
        conn.execute(update(projection_checkpoints).where(projection_checkpoints.c.name == NAME).values(position=0))
    broken.run(stop, poll_seconds=0.05)  # returns when stopped, having failed and retried meanwhile
    stop_after.join()
    status = runner.status()
    assert status["failing"] and status["checkpoint"]["position"] == 0
