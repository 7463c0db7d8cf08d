"""Stuck rules (DOMAIN.md's table, with its default thresholds) and readiness."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.domain import StuckThresholds, readiness, replay, stuck_findings
from service.domain.model import PendingEvent
from tests.factories import COMMITTED

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
LIMITS = StuckThresholds()


def build(*steps: tuple[str, dict, int]):
    """A record from (type, data, day offset from T0) steps."""
    events = [PendingEvent(t, d, v, T0 + timedelta(days=day), T0 + timedelta(days=day))
              for v, (t, d, day) in enumerate(steps, start=1)]
    return replay("r-1", events)


def codes(record, day: float) -> list[str]:
    return [f.code for f in stuck_findings(record, T0 + timedelta(days=day), LIMITS)]


def test_not_started_for_more_than_14_days_is_stuck_and_names_the_csm():
    record = build(("committed", COMMITTED, 0))
    assert codes(record, 14) == []
    [finding] = stuck_findings(record, T0 + timedelta(days=30), LIMITS)
    assert finding.code == "not_started_too_long"
    assert finding.reason == "committed 30 days ago; Dana (CSM) has not started"
    assert finding.days == 30 and finding.since == T0


def test_in_progress_with_no_event_for_more_than_21_days_is_stuck():
    record = build(("committed", COMMITTED, 0), ("started", {}, 1),
                   ("metrics_recorded", {"kind": "baseline", "metrics": {"x": 1}}, 2))
    assert codes(record, 23) == []
    [finding] = stuck_findings(record, T0 + timedelta(days=27), LIMITS)
    assert finding.code == "no_activity"
    assert finding.reason == "no activity for 25 days since metrics_recorded"


def test_in_progress_for_more_than_7_days_without_baseline_metrics_is_stuck():
    record = build(("committed", COMMITTED, 0), ("started", {}, 1))
    assert codes(record, 8) == []
    [finding] = stuck_findings(record, T0 + timedelta(days=9), LIMITS)
    assert finding.code == "missing_baseline"
    assert finding.reason == "no baseline metrics: improvement cannot be shown"


def test_awaiting_approval_for_more_than_10_days_names_the_pending_approvers():
    record = build(("committed", COMMITTED, 0), ("started", {}, 1),
                   ("approval_requested", {"approvers": ["marketing", "legal", "executive_sponsor"]}, 2),
                   ("approval_granted", {"role": "marketing", "approver": "Sam"}, 3))
    assert codes(record, 12) == []
    [finding] = stuck_findings(record, T0 + timedelta(days=14), LIMITS)
    assert finding.code == "awaiting_approval_too_long"
    assert finding.reason == "waiting 12 days on legal, executive_sponsor"
    assert finding.details["pending_approvers"] == ["legal", "executive_sponsor"]


def test_a_hold_whose_revisit_date_has_passed_is_overdue():
    record = build(("committed", COMMITTED, 0),
                   ("held", {"reason": "customer reorg", "revisit_on": "2026-10-01"}, 1))
    assert codes(record, 30) == []  # 2026-10-01 itself
    [finding] = stuck_findings(record, datetime(2026, 11, 23, 12, tzinfo=UTC), LIMITS)
    assert finding.code == "hold_revisit_overdue"
    assert finding.reason == "hold to be revisited on 2026-10-01, 53 days overdue (reason: customer reorg)"


def test_a_hold_without_revisit_date_for_more_than_30_days_is_stuck():
    record = build(("committed", COMMITTED, 0), ("held", {"reason": "budget"}, 0))
    assert codes(record, 30) == []
    [finding] = stuck_findings(record, T0 + timedelta(days=45), LIMITS)
    assert finding.code == "hold_without_revisit_date"
    assert finding.reason == "on hold for 45 days with no revisit date"


@pytest.mark.parametrize("final", [("published", {"url": "https://x.example"}), ("declined", {"reason": "no"})])
def test_published_and_declined_records_are_never_stuck(final):
    steps = [("committed", COMMITTED, 0), ("started", {}, 0)]
    if final[0] == "published":
        steps += [("approval_requested", {"approvers": ["legal"]}, 0),
                  ("approval_granted", {"role": "legal", "approver": "Lee"}, 0)]
    record = build(*steps, (*final, 0))
    assert codes(record, 400) == []


def test_thresholds_are_configuration():
    record = build(("committed", COMMITTED, 0))
    assert stuck_findings(record, T0 + timedelta(days=3), StuckThresholds(not_started_days=2))


def metrics(kind, values, lower=()):
    return ("metrics_recorded", {"kind": kind, "metrics": values, "lower_is_better": list(lower)}, 1)


def test_a_candidate_needs_kpi_improvement_over_the_threshold_and_nps_of_8():
    record = build(("committed", COMMITTED, 0), metrics("baseline", {"tickets": 100, "days": 30}, ["days"]),
                   metrics("current", {"tickets": 110, "days": 21}, ["days"]),
                   ("nps_recorded", {"score": 8}, 2))
    ready = readiness(record, 20.0)
    assert ready.kpi_improvement_pct == 30.0 and ready.best_metric == "days"
    assert ready.candidate
    assert not readiness(record, 31.0).candidate


def test_nps_below_8_is_not_a_candidate():
    record = build(("committed", COMMITTED, 0), metrics("baseline", {"x": 10}), metrics("current", {"x": 20}),
                   ("nps_recorded", {"score": 7}, 2))
    assert readiness(record, 20.0).kpi_improvement_pct == 100.0
    assert not readiness(record, 20.0).candidate


def test_an_msa_restriction_blocks_candidacy_unless_anonymized():
    restricted = {**COMMITTED, "msa_restricted": True}
    steps = [metrics("baseline", {"x": 10}), metrics("current", {"x": 20}), ("nps_recorded", {"score": 9}, 2)]
    assert not readiness(build(("committed", restricted, 0), *steps), 20).candidate
    anonymized = {**restricted, "anonymized": True, "industry_description": "a major airline"}
    assert readiness(build(("committed", anonymized, 0), *steps), 20).candidate


def test_a_declined_record_is_never_a_candidate_however_good_its_figures():
    steps = [("committed", COMMITTED, 0), metrics("baseline", {"x": 10}), metrics("current", {"x": 20}),
             ("nps_recorded", {"score": 9}, 2)]
    assert readiness(build(*steps), 20).candidate
    declined = readiness(build(*steps, ("declined", {"reason": "new CEO says no"}, 3)), 20)
    assert declined.kpi_improvement_pct == 100.0 and declined.nps == 9 and not declined.candidate


def test_an_improvement_too_large_to_represent_is_not_reported():
    record = build(("committed", COMMITTED, 0), metrics("baseline", {"x": 1e-300}), metrics("current", {"x": 1e15}))
    assert readiness(record, 20).kpi_improvement_pct is None


@pytest.mark.parametrize("steps", [
    [("committed", COMMITTED, 0)],
    [("committed", COMMITTED, 0), ("started", {}, 1)],
    [("committed", COMMITTED, 0), ("started", {}, 1), metrics("baseline", {"x": 1})],
    [("committed", COMMITTED, 0), ("started", {}, 1), ("approval_requested", {"approvers": ["legal"]}, 2)],
    [("committed", COMMITTED, 0), ("held", {"reason": "reorg", "revisit_on": "2026-09-20"}, 1)],
    [("committed", COMMITTED, 0), ("held", {"reason": "reorg"}, 1)],
], ids=["not_started", "in_progress", "with_baseline", "awaiting", "held_with_date", "held_without_date"])
def test_a_rule_holds_exactly_after_the_moment_it_starts(steps):
    from service.domain.stuck import StuckFacts, stuck_starts

    record = build(*steps)
    facts = StuckFacts.of(record)
    starts = stuck_starts(facts, LIMITS)
    assert starts, "every open status has a rule that can hold"
    for code, start in starts.items():
        assert code not in [f.code for f in stuck_findings(record, start, LIMITS)]
        assert code in [f.code for f in stuck_findings(record, start + timedelta(microseconds=1), LIMITS)]
    assert StuckFacts.from_dict(facts.to_dict()) == facts
