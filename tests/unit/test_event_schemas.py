"""Event data is validated before the state machine sees it; errors name the field."""
from __future__ import annotations

import json

import pytest

from service.domain import EVENT_TYPES
from service.events.schemas import InvalidEvent, NotJson, parse_event_request
from tests.factories import VALID_DATA


def parse(body):
    return parse_event_request(json.dumps(body).encode())


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_accepts_its_documented_data(event_type):
    parsed = parse({"type": event_type, "data": VALID_DATA[event_type]})
    assert parsed.type == event_type


def field_of(body) -> list[str]:
    with pytest.raises(InvalidEvent) as invalid:
        parse(body)
    return [e["field"] for e in invalid.value.errors]


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "teleported"}, "type"),
    ({"data": {}}, "type"),
    ({"type": "committed", "data": {**VALID_DATA["committed"], "close_date": "2026-02-30"}}, "data.close_date"),
    ({"type": "committed", "data": {k: v for k, v in VALID_DATA["committed"].items() if k != "csm"}}, "data.csm"),
    ({"type": "committed", "data": {**VALID_DATA["committed"], "anonymized": True}}, "data"),
    ({"type": "approval_requested", "data": {"approvers": []}}, "data.approvers"),
    ({"type": "approval_requested", "data": {"approvers": ["ceo"]}}, "data.approvers.0"),
    ({"type": "approval_requested", "data": {"approvers": ["legal", "legal"]}}, "data.approvers"),
    ({"type": "nps_recorded", "data": {"score": 11}}, "data.score"),
    ({"type": "nps_recorded", "data": {"score": "9"}}, "data.score"),
    ({"type": "views_reported", "data": {"views": -1}}, "data.views"),
    ({"type": "published", "data": {"url": "javascript:alert(1)"}}, "data.url"),
    ({"type": "quote_added", "data": {"text": "x" * 4001, "speaker": "Jo"}}, "data.text"),
    ({"type": "reassigned", "data": {"csm": ""}}, "data.csm"),
    ({"type": "started", "data": {"surprise": 1}}, "data.surprise"),
    ({"type": "started", "event_id": "not-a-uuid"}, "event_id"),
    ({"type": "started", "occurred_at": "2026-11-20T09:00:00"}, "occurred_at"),
    ({"type": "started", "expected_version": -1}, "expected_version"),
    ({"type": "started", "actor": "someone-else"}, "actor"),
])
def test_invalid_events_name_the_field_at_fault(body, field):
    assert field in field_of(body)


def test_a_body_that_is_not_json_is_told_apart_from_an_invalid_event():
    with pytest.raises(NotJson):
        parse_event_request(b"{not json")


def test_data_is_normalised_for_storage():
    parsed = parse({"type": "held", "data": {"reason": "  reorg  ", "revisit_on": "2027-01-02"}})
    assert parsed.data.model_dump(mode="json", exclude_none=True) == {"reason": "reorg",
                                                                      "revisit_on": "2027-01-02"}


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "reassigned", "data": {"csm": "a\u0000b"}}, "data.csm"),
    ({"type": "quote_added", "data": {"text": "x\u0000y", "speaker": "Jo"}}, "data.text"),
    ({"type": "metrics_recorded", "data": {"kind": "baseline", "metrics": {"a\u0001": 1}}}, "data.metrics.a\u0001.[key]"),
    ({"type": "metrics_recorded", "data": {"kind": "baseline", "metrics": {"x": 1e300}}}, "data.metrics.x"),
    ({"type": "quote_added", "data": VALID_DATA["quote_added"], "occurred_at": "0001-01-01T00:00:00+01:00"},
     "occurred_at"),
    ({"type": "committed", "data": {"account": "x"}}, "data.account"),
    ({"type": "started", "data": None}, "data"),
])
def test_control_characters_out_of_range_values_and_wrong_shapes_are_refused(body, field):
    assert field in field_of(body)


def test_line_breaks_are_allowed_in_texts_but_not_in_names():
    parsed = parse({"type": "quote_added", "data": {"text": "first line\nsecond line", "speaker": "Jo"}})
    assert parsed.data.text == "first line\nsecond line"
    assert "data.speaker" in field_of({"type": "quote_added", "data": {"text": "x", "speaker": "Jo\nPark"}})


@pytest.mark.parametrize("stream_id", ["ok", "acme-2026-q3", "a.b:c_d", "x" * 128])
def test_stream_ids_of_the_allowed_form_are_accepted(stream_id):
    from service.events.schemas import is_valid_stream_id

    assert is_valid_stream_id(stream_id)


@pytest.mark.parametrize("stream_id", ["", "x" * 129, "bad id", "nl\n", "é", ".", "..", "a/b"])
def test_stream_ids_outside_the_allowed_form_are_refused(stream_id):
    from service.events.schemas import is_valid_stream_id

    assert not is_valid_stream_id(stream_id)
