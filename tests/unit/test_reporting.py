"""What blocks publication, status over time, cycle times and candidates, from events alone: the
domain's rules, and the projectors that fold a record's events into row versions."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from service.domain import replay
from service.domain.machine import replay_steps
from service.domain.model import CaseStudy
from service.domain.reporting import blockers, quantile_ranks, quarter_of, summarise
from service.events.event import StoredEvent
from service.projections.projectors import (
    BlockersProjector,
    CandidatesProjector,
    Changes,
    CycleTimesProjector,
    PipelineProjector,
    fold,
    start,
)
from service.projections.rows import key_columns, new_rows
from tests.factories import COMMITTED

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
BASELINE = ("metrics_recorded", {"kind": "baseline", "metrics": {"tickets_per_day": 100}})
CURRENT = ("metrics_recorded", {"kind": "current", "metrics": {"tickets_per_day": 150}})


def at(day: float) -> datetime:
    return T0 + timedelta(days=day)


def events(*steps: tuple[str, dict, float]) -> list[StoredEvent]:
    """A stream of (type, data, day from T0) steps, as the store would give it."""
    return [StoredEvent(v, f"e{v}", "r-1", v, t, d, "crm", at(day), at(day), None, None, None, "", "")
            for v, (t, d, day) in enumerate(steps, start=1)]


def codes(record) -> list[tuple[str, str]]:
    return sorted(b.key for b in blockers(record))


def test_a_new_commitment_is_blocked_by_missing_baseline_and_current_metrics():
    record = replay("r-1", events(("committed", COMMITTED, 0)))
    assert codes(record) == [("missing_baseline_metrics", ""), ("missing_current_metrics", "")]


def test_each_pending_approver_blocks_until_it_grants():
    record = replay("r-1", events(("committed", COMMITTED, 0), ("started", {}, 1), (*BASELINE, 2), (*CURRENT, 3),
                                  ("approval_requested", {"approvers": ["marketing", "legal"]}, 4),
                                  ("approval_granted", {"role": "marketing", "approver": "Sam"}, 5)))
    [pending] = blockers(record)
    assert (pending.code, pending.subject, pending.reason) == ("approval_pending", "legal",
                                                               "approval pending from legal")
    assert pending.details["round"] == 1


def test_requested_changes_block_until_approval_is_asked_for_again():
    steps = [("committed", COMMITTED, 0), ("started", {}, 1), (*BASELINE, 2), (*CURRENT, 3),
             ("approval_requested", {"approvers": ["legal"]}, 4),
             ("changes_requested", {"role": "legal", "comment": "drop the revenue figure"}, 5)]
    [change] = blockers(replay("r-1", events(*steps)))
    assert change.code == "changes_requested" and "drop the revenue figure" in change.reason
    asked_again = events(*steps, ("approval_requested", {"approvers": ["legal"]}, 6))
    assert codes(replay("r-1", asked_again)) == [("approval_pending", "legal")]


def test_a_hold_blocks_with_its_reason_and_revisit_date():
    record = replay("r-1", events(("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 1),
                                  ("held", {"reason": "customer reorg", "revisit_on": "2027-01-15"}, 2)))
    [hold] = blockers(record)
    assert hold.code == "on_hold"
    assert hold.reason == "on hold: customer reorg, to be revisited on 2027-01-15"
    assert hold.details["held_from"] == "not_started"


def test_a_record_without_a_csm_is_blocked_as_unassigned():
    record = CaseStudy(id="r-1", state="in_progress", csm=None,
                       metrics={"baseline": {"a": 1}, "current": {"a": 2}})
    assert codes(record) == [("unassigned_csm", "")]


@pytest.mark.parametrize("final", [("published", {"url": "https://example.com/s"}),
                                   ("declined", {"reason": "no"})])
def test_published_and_declined_records_have_no_blockers(final):
    steps = [("committed", COMMITTED, 0), ("started", {}, 1), ("approval_requested", {"approvers": ["marketing"]}, 2),
             ("approval_granted", {"role": "marketing", "approver": "Sam"}, 3), (*final, 4)]
    assert blockers(replay("r-1", events(*steps))) == []


def project(projector, stream) -> tuple[dict, dict]:
    """Fold a stream through one projector: the rows it leaves in each table, by key (the versions of
    each, oldest first), and its state."""
    changes = Changes()
    held = fold("r-1", start("r-1"), stream, [projector], changes)
    rows = {table.name: {} for table in projector.tables}
    for table in projector.tables:
        for row in new_rows(changes, table):
            key = tuple(row[c] for c in key_columns(table))
            rows[table.name].setdefault(key, []).append(row)
    return rows, held["folds"][projector.name]


def test_a_blocker_is_a_row_from_the_event_that_opened_it_to_the_one_that_cleared_it():
    rows, _ = project(BlockersProjector(), events(
        ("committed", COMMITTED, 0), ("started", {}, 1), (*BASELINE, 3),
        ("held", {"reason": "reorg"}, 5), ("resumed", {}, 9), (*CURRENT, 12)))
    spans = {(versions[0]["code"], versions[0]["since"], versions[-1]["valid_to"])
             for versions in rows["proj_blockers"].values()}
    assert spans == {("missing_baseline_metrics", at(0), at(3)), ("missing_current_metrics", at(0), at(12)),
                     ("on_hold", at(5), at(9))}
    held = next(v for v in rows["proj_blockers"].values() if v[0]["code"] == "on_hold")
    assert [(v["status"], v["valid_from"], v["valid_to"]) for v in held] == [("on_hold", at(5), at(9))]


def test_status_history_records_each_status_and_csm_with_its_business_times():
    rows, _ = project(PipelineProjector(), events(
        ("committed", COMMITTED, 0), ("started", {}, 2), (*BASELINE, 3), ("reassigned", {"csm": "Robin"}, 4),
        ("declined", {"reason": "no"}, 10)))
    latest = [versions[-1] for _, versions in sorted(rows["proj_status_history"].items())]
    assert [((v["status"], v["csm"]), v["from_at"], v["to_at"]) for v in latest] == [
        (("not_started", "Dana"), at(0), at(2)), (("in_progress", "Dana"), at(2), at(4)),
        (("in_progress", "Robin"), at(4), at(10)), (("declined", "Robin"), at(10), None)]
    # an interval's first version, known while the record was in it, had no end yet
    assert rows["proj_status_history"][("r-1", 1)][0]["to_at"] is None
    assert [(v["status"], v["csm"]) for v in rows["proj_pipeline_records"][("r-1",)]] == [
        ("not_started", "Dana"), ("in_progress", "Dana"), ("in_progress", "Robin"), ("declined", "Robin")]


def test_stages_run_from_the_commitment_to_the_first_time_each_milestone_happened():
    stream = events(("committed", COMMITTED, 0), ("started", {}, 1.5),
                    ("approval_requested", {"approvers": ["legal"]}, 10),
                    ("changes_requested", {"role": "legal", "comment": "shorter"}, 13),
                    ("approval_requested", {"approvers": ["legal"]}, 20),
                    ("approval_granted", {"role": "legal", "approver": "Lee"}, 21),
                    ("published", {"url": "https://x.example/s"}, 30))
    rows, _ = project(CycleTimesProjector(), stream)
    assert sorted((k[1], v[-1]["from_at"], v[-1]["to_at"], v[-1]["days"]) for k, v in rows["proj_cycle_stages"].items()
                  ) == [("committed_to_approval_requested", at(0), at(10), 10.0),
                        ("committed_to_published", at(0), at(30), 30.0),
                        ("committed_to_started", at(0), at(1.5), 1.5)]
    assert sorted((k[1], k[2], v[-1]["decision"], v[-1]["days"]) for k, v in rows["proj_approver_times"].items()) == [
        (1, "legal", "changes_requested", 3.0), (2, "legal", "granted", 1.0)]


def candidate_since(threshold: float, *steps) -> datetime | None:
    rows, _ = project(CandidatesProjector(threshold), events(*steps))
    versions = rows["proj_candidates"].get(("r-1",))
    return versions[-1]["candidate_since"] if versions and versions[-1]["valid_to"] is None else None


def test_a_record_becomes_a_candidate_when_kpis_improve_enough_and_nps_is_a_promoter():
    assert candidate_since(20.0, ("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 2),
                           ("nps_recorded", {"score": 7}, 3), ("nps_recorded", {"score": 9}, 4),
                           ("quote_added", {"text": "great", "speaker": "Jo"}, 5)) == at(4)
    assert candidate_since(20.0, ("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 2),
                           ("nps_recorded", {"score": 9}, 3), ("nps_recorded", {"score": 6}, 4)) is None
    assert candidate_since(20.0, ("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 2),
                           ("nps_recorded", {"score": 9}, 3), ("declined", {"reason": "new CEO"}, 4)) is None
    assert candidate_since(60.0, ("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 2),
                           ("nps_recorded", {"score": 10}, 3)) is None


def test_percentiles_interpolate_between_closest_ranks():
    assert summarise([]) == {"count": 0, "median_days": None, "p90_days": None}
    assert summarise([7]) == {"count": 1, "median_days": 7, "p90_days": 7}
    assert summarise([1, 10, 1]) == {"count": 3, "median_days": 1, "p90_days": 8.2}
    assert summarise([5, 4]) == {"count": 2, "median_days": 4.5, "p90_days": 4.9}
    assert summarise([3, 1, 2, 4]) == {"count": 4, "median_days": 2.5, "p90_days": 3.7}


def test_quantile_ranks_name_the_two_closest_ranks_and_the_share_between_them():
    assert quantile_ranks(31, (9, 10)) == (27, 27, 0.0)
    assert quantile_ranks(12, (9, 10)) == (9, 10, 0.9)
    assert quantile_ranks(4, (1, 2)) == (1, 2, 0.5)


@pytest.mark.parametrize("month,quarter", [(1, "2026-Q1"), (3, "2026-Q1"), (4, "2026-Q2"), (9, "2026-Q3"),
                                           (12, "2026-Q4")])
def test_quarters_are_calendar_quarters(month, quarter):
    assert quarter_of(datetime(2026, month, 15, tzinfo=UTC)) == quarter


def test_the_events_said_to_leave_blockers_alone_never_change_them():
    from bench.dataset import make_dataset
    from service.domain.reporting import LEAVE_BLOCKERS

    events, _, _ = make_dataset(300, seed=7)
    streams: dict[str, list] = {}
    for position, row in enumerate(events, start=1):
        streams.setdefault(row[1], []).append(StoredEvent(position, row[0], row[1], row[2], row[3],
                                                          orjson.loads(row[4]), row[5], row[6], row[7], None, None,
                                                          None, row[12], row[13]))
    seen = set()
    for stream_id, stream in streams.items():
        before = []
        for event, record in replay_steps(stream_id, sorted(stream, key=lambda e: e.version)):
            now = blockers(record)
            if event.type in LEAVE_BLOCKERS:
                assert now == before, (stream_id, event.version, event.type)
                seen.add(event.type)
            before = now
    assert seen >= {"quote_added", "nps_recorded"}
