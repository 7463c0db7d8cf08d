"""What blocks publication, status over time, cycle times and candidates, from events alone."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.domain import replay
from service.domain.machine import replay_steps
from service.domain.model import CaseStudy
from service.domain.reporting import (
    BlockerHistory,
    CandidateHistory,
    Milestones,
    StatusHistory,
    approver_times,
    blockers,
    percentile,
    quarter_of,
    summarise,
)
from service.events.event import StoredEvent
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


def fold(folder, stream):
    for event, record in replay_steps("r-1", stream):
        folder.step(event, record)
    return folder


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


def test_blocker_history_opens_and_closes_each_blocker_at_the_events_that_did_it():
    history = fold(BlockerHistory(), events(
        ("committed", COMMITTED, 0), ("started", {}, 1), (*BASELINE, 3),
        ("held", {"reason": "reorg"}, 5), ("resumed", {}, 9), (*CURRENT, 12)))
    spans = {(i.value.code, i.since, i.until) for i in history.intervals}
    assert spans == {("missing_baseline_metrics", at(0), at(3)), ("missing_current_metrics", at(0), at(12)),
                     ("on_hold", at(5), at(9))}


def test_status_history_records_each_status_and_csm_with_its_business_times():
    history = fold(StatusHistory(), events(
        ("committed", COMMITTED, 0), ("started", {}, 2), (*BASELINE, 3), ("reassigned", {"csm": "Robin"}, 4),
        ("declined", {"reason": "no"}, 10)))
    assert [(i.value, i.since, i.until) for i in history.intervals] == [
        (("not_started", "Dana"), at(0), at(2)), (("in_progress", "Dana"), at(2), at(4)),
        (("in_progress", "Robin"), at(4), at(10)), (("declined", "Robin"), at(10), None)]


def test_stages_run_from_the_commitment_to_the_first_time_each_milestone_happened():
    stream = events(("committed", COMMITTED, 0), ("started", {}, 1.5),
                    ("approval_requested", {"approvers": ["legal"]}, 10),
                    ("changes_requested", {"role": "legal", "comment": "shorter"}, 13),
                    ("approval_requested", {"approvers": ["legal"]}, 20),
                    ("approval_granted", {"role": "legal", "approver": "Lee"}, 21),
                    ("published", {"url": "https://x.example/s"}, 30))
    milestones = fold(Milestones(), stream)
    assert milestones.stages() == [("committed_to_started", at(0), at(1.5), 1.5),
                                   ("committed_to_approval_requested", at(0), at(10), 10.0),
                                   ("committed_to_published", at(0), at(30), 30.0)]
    assert [(t.round, t.role, t.decision, t.days) for t in approver_times(stream)] == [
        (1, "legal", "changes_requested", 3.0), (2, "legal", "granted", 1.0)]


def test_a_record_becomes_a_candidate_when_kpis_improve_enough_and_nps_is_a_promoter():
    history = fold(CandidateHistory(20.0), events(
        ("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 2), ("nps_recorded", {"score": 7}, 3),
        ("nps_recorded", {"score": 9}, 4), ("quote_added", {"text": "great", "speaker": "Jo"}, 5)))
    assert history.since == at(4)
    fold_lost = fold(CandidateHistory(20.0), events(
        ("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 2), ("nps_recorded", {"score": 9}, 3),
        ("nps_recorded", {"score": 6}, 4)))
    assert fold_lost.since is None
    declined = fold(CandidateHistory(20.0), events(
        ("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 2), ("nps_recorded", {"score": 9}, 3),
        ("declined", {"reason": "new CEO"}, 4)))
    assert declined.since is None
    assert fold(CandidateHistory(60.0), events(("committed", COMMITTED, 0), (*BASELINE, 1), (*CURRENT, 2),
                                               ("nps_recorded", {"score": 10}, 3))).since is None


def test_percentiles_interpolate_between_closest_ranks():
    assert percentile([], 0.5) is None
    assert percentile([7], 0.9) == 7
    assert percentile([1, 10, 1], 0.5) == 1
    assert percentile([1, 1, 10], 0.9) == 8.2
    assert percentile([4, 5], 0.9) == 4.9
    assert summarise([3, 1, 2, 4]) == {"count": 4, "median_days": 2.5, "p90_days": 3.7}


@pytest.mark.parametrize("month,quarter", [(1, "2026-Q1"), (3, "2026-Q1"), (4, "2026-Q2"), (9, "2026-Q3"),
                                           (12, "2026-Q4")])
def test_quarters_are_calendar_quarters(month, quarter):
    assert quarter_of(datetime(2026, month, 15, tzinfo=UTC)) == quarter
