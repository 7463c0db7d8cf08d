"""The state machine, checked against DOMAIN.md's table for every (status, event) pair."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.domain import (
    EVENT_TYPES,
    CaseStudy,
    GuardFailed,
    StreamCorrupt,
    TransitionNotAllowed,
    allowed_events,
    apply,
    path_to,
    replay,
)
from service.domain.model import PendingEvent
from tests.factories import PATHS, VALID_DATA, data_for

T0 = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)

# DOMAIN.md's events table, written out by hand: the status each event leads to from each
# status, "=" for an event that keeps the status, absent for a refused pair.
N, I, A, P, H, D = ("not_started", "in_progress", "awaiting_customer_approval", "published",
                    "on_hold", "declined")
EXPECTED: dict[str, dict[str, str]] = {
    "new": {"committed": N},
    N: {"started": I, "held": H, "declined": D, "reassigned": "=", "metrics_recorded": "=",
        "quote_added": "=", "nps_recorded": "="},
    I: {"approval_requested": A, "held": H, "declined": D, "reassigned": "=",
        "metrics_recorded": "=", "quote_added": "=", "nps_recorded": "="},
    A: {"approval_granted": "=", "changes_requested": I, "published": "guard", "held": H,
        "declined": D, "reassigned": "=", "metrics_recorded": "=", "quote_added": "=",
        "nps_recorded": "="},
    P: {"reassigned": "=", "metrics_recorded": "=", "quote_added": "=", "nps_recorded": "=",
        "shared_with_champion": "=", "views_reported": "="},
    H: {"resumed": I, "declined": D, "reassigned": "=", "metrics_recorded": "=", "quote_added": "=",
        "nps_recorded": "="},
    D: {},
}


def event(event_type: str, data: dict, version: int, at: datetime = T0) -> PendingEvent:
    return PendingEvent(event_type, data, version, at, at)


def record_in(status: str) -> CaseStudy:
    return replay("r-1", [event(t, d, v) for v, (t, d) in enumerate(PATHS[status], start=1)])


CASES = [(status, event_type) for status in EXPECTED for event_type in EVENT_TYPES]


@pytest.mark.parametrize(("status", "event_type"), CASES, ids=[f"{s}-{e}" for s, e in CASES])
def test_every_status_and_event_pair_follows_the_domain_table(status, event_type):
    record = record_in(status)
    assert record.state == status
    expected = EXPECTED[status].get(event_type)
    data = data_for(status, event_type)
    if expected is None:
        with pytest.raises(TransitionNotAllowed) as refusal:
            apply(record, event(event_type, data, record.version + 1))
        assert refusal.value.current_status == status
        assert refusal.value.allowed_events == allowed_events(status)
        assert record.state == status and record.version == len(PATHS[status])
    elif expected == "guard":
        with pytest.raises(GuardFailed):
            apply(record, event(event_type, data, record.version + 1))
    else:
        apply(record, event(event_type, data, record.version + 1))
        assert record.state == (status if expected == "=" else expected)


@pytest.mark.parametrize("status", list(EXPECTED))
def test_the_machine_describes_the_events_allowed_in_each_status(status):
    assert set(allowed_events(status)) == set(EXPECTED[status])


def test_publishing_names_the_approvers_still_pending():
    record = replay("r", [event(t, d, v) for v, (t, d) in enumerate([
        ("committed", VALID_DATA["committed"]), ("started", {}),
        ("approval_requested", {"approvers": ["marketing", "legal", "executive_sponsor"]}),
        ("approval_granted", {"role": "marketing", "approver": "Sam"})], start=1)])
    with pytest.raises(GuardFailed) as refusal:
        apply(record, event("published", {"url": "https://x.example/s"}, 5))
    assert refusal.value.reason == "cannot publish: approval pending from legal, executive_sponsor"
    assert record.state == A and record.version == 4


def test_publishing_succeeds_once_every_requested_approver_has_granted():
    record = record_in(A)
    apply(record, event("approval_granted", {"role": "marketing", "approver": "Sam"}, 4))
    apply(record, event("published", {"url": "https://x.example/s"}, 5, T0 + timedelta(days=2)))
    assert record.state == P
    assert record.published_at == T0 + timedelta(days=2)
    assert record.approvers == {"marketing": "Sam"}


@pytest.mark.parametrize("event_type", ["approval_granted", "changes_requested"])
def test_an_approver_who_was_not_asked_cannot_answer(event_type):
    record = record_in(A)  # only marketing was asked
    data = {**VALID_DATA[event_type], "role": "legal"}
    with pytest.raises(GuardFailed) as refusal:
        apply(record, event(event_type, data, 4))
    assert "legal was not asked to approve" in refusal.value.reason


def test_an_approver_cannot_answer_twice():
    record = record_in(A)
    apply(record, event("approval_granted", {"role": "marketing", "approver": "Sam"}, 4))
    with pytest.raises(GuardFailed) as refusal:
        apply(record, event("approval_granted", {"role": "marketing", "approver": "Sam"}, 5))
    assert refusal.value.reason == "cannot grant approval: marketing has already answered (granted)"


def test_changes_requested_ends_the_round_and_a_new_request_starts_the_next():
    record = record_in(I)
    apply(record, event("approval_requested", {"approvers": ["marketing", "legal", "executive_sponsor"]}, 3))
    apply(record, event("approval_granted", {"role": "marketing", "approver": "Sam"}, 4))
    apply(record, event("changes_requested", {"role": "legal", "comment": "no revenue figures"}, 5))
    assert record.state == I
    assert record.approvals == {"marketing": "granted", "legal": "changes_requested"}  # nobody pending
    assert record.pending_approvers() == []
    assert record.changes_requested == {"round": 1, "role": "legal", "comment": "no revenue figures",
                                        "approver": None}
    apply(record, event("approval_requested", {"approvers": ["legal"]}, 6))
    assert record.state == A
    assert record.approvals == {"legal": "pending"} and record.changes_requested is None
    assert record.approval_round == 2


def test_reassigning_to_the_same_csm_is_refused_with_a_reason():
    record = record_in(N)
    with pytest.raises(GuardFailed) as refusal:
        apply(record, event("reassigned", {"csm": "Dana"}, 2))
    assert refusal.value.reason == "cannot reassign: Dana is already the CSM"


@pytest.mark.parametrize("held_from", [N, I, A])
def test_resuming_returns_to_the_status_the_record_was_held_from(held_from):
    record = record_in(held_from)
    apply(record, event("held", {"reason": "budget freeze"}, record.version + 1))
    assert record.state == H and record.held_from == held_from
    apply(record, event("resumed", {}, record.version + 1, T0 + timedelta(days=5)))
    assert record.state == held_from
    assert record.entered_status_at == T0 + timedelta(days=5)
    assert record.hold_reason is None and record.held_from is None


def test_time_in_status_counts_from_the_occurred_at_of_the_event_that_entered_it():
    events = [event("committed", VALID_DATA["committed"], 1, T0),
              event("started", {}, 2, T0 + timedelta(days=3)),
              event("quote_added", VALID_DATA["quote_added"], 3, T0 + timedelta(days=4))]
    record = replay("r", events)
    assert record.committed_at == T0
    assert record.entered_status_at == T0 + timedelta(days=3)
    assert record.last_activity_at == T0 + timedelta(days=4)
    assert record.last_event_type == "quote_added"


def test_a_refused_event_leaves_the_record_unchanged():
    record = record_in(I)
    before = record.to_dict()
    with pytest.raises(TransitionNotAllowed):
        apply(record, event("published", {"url": "https://x.example"}, 3))
    assert record.to_dict() == before


def test_replay_refuses_a_gap_in_versions():
    with pytest.raises(StreamCorrupt, match="version 3 does not follow version 1"):
        replay("r", [event("committed", VALID_DATA["committed"], 1), event("started", {}, 3)])


def test_replay_refuses_a_stored_event_the_machine_would_refuse():
    with pytest.raises(StreamCorrupt, match="is refused on replay"):
        replay("r", [event("committed", VALID_DATA["committed"], 1),
                     event("published", {"url": "https://x.example"}, 2)])


def test_replay_is_pure_the_same_events_give_equal_records():
    events = [event(t, d, v) for v, (t, d) in enumerate(PATHS[P], start=1)]
    assert replay("r", events) == replay("r", events)
    assert replay("r", events).to_dict() == CaseStudy.from_dict(replay("r", events).to_dict()).to_dict()


def test_records_are_never_registered_with_the_shared_machine():
    from service.domain.machine import MACHINE

    for _ in range(100):
        record_in(P)
    assert MACHINE.models == []


def test_an_event_may_not_have_happened_before_the_record_s_last_event():
    record = replay("r", [event("committed", VALID_DATA["committed"], 1, T0),
                          event("started", {}, 2, T0 + timedelta(days=5))])
    with pytest.raises(GuardFailed) as refusal:
        apply(record, event("quote_added", VALID_DATA["quote_added"], 3, T0 + timedelta(days=1)))
    assert "is before the record's last event" in refusal.value.reason
    apply(record, event("quote_added", VALID_DATA["quote_added"], 3, T0 + timedelta(days=5)))  # same time is fine
    assert record.version == 3


def test_metric_values_read_back_as_int_or_float_give_the_same_record():
    as_int = replay("r", [event("committed", VALID_DATA["committed"], 1),
                          event("metrics_recorded", {"kind": "baseline", "metrics": {"days": 30}}, 2)])
    as_float = replay("r", [event("committed", VALID_DATA["committed"], 1),
                            event("metrics_recorded", {"kind": "baseline", "metrics": {"days": 30.0}}, 2)])
    assert as_int == as_float and isinstance(as_int.metrics["baseline"]["days"], float)


@pytest.mark.parametrize("status", [status for status in EXPECTED if status != P])
def test_the_path_to_each_status_is_read_from_the_machine_and_leads_there(status):
    record = CaseStudy(id="r-1")
    for version, event_type in enumerate(path_to(status), start=1):
        apply(record, event(event_type, data_for(record.state, event_type), version))
    assert record.state == status


def test_paths_take_the_fewest_events_guards_aside():
    assert {status: path_to(status) for status in EXPECTED} == {
        "new": [], N: ["committed"], I: ["committed", "started"], A: ["committed", "started", "approval_requested"],
        P: ["committed", "started", "approval_requested", "published"],  # publishing needs approvals first
        H: ["committed", "held"],  # a record brought over on hold was held from Not Started
        D: ["committed", "declined"]}
