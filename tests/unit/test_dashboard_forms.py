"""The dashboard's event forms are the event schemas: every field of every event type has a control,
and what a person types comes back as the data the API would have been sent."""
from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest
from werkzeug.datastructures import MultiDict

from service.events.schemas import DATA_SCHEMAS, InvalidEvent, parse_event_request
from service.ui import assets
from service.ui.forms import FORMS, FormError, data_from
from tests.factories import VALID_DATA

FULL = {**VALID_DATA,
        "committed": {**VALID_DATA["committed"], "champion": {"name": "Jo", "title": "CTO", "email": "jo@acme.test"},
                      "deal_id": "D-1", "anonymized": True, "industry_description": "a major airline",
                      "msa_restricted": False},
        "metrics_recorded": {"kind": "current", "metrics": {"onboarding_days": 7.5, "tickets": 120},
                             "lower_is_better": ["onboarding_days", "tickets"]},
        "approval_granted": {"role": "legal", "approver": "Lou", "comment": "fine\nby us"}}


def typed(fields, data: dict, form: MultiDict) -> MultiDict:
    """What a person fills in to send ``data``."""
    for field in fields:
        key = field.name.rsplit(".", 1)[-1]
        if key not in data:
            continue
        value = data[key]
        if field.widget == "group":
            typed(field.fields, value, form)
        elif field.widget == "checkboxes":
            for item in value:
                form.add(field.name, item)
        elif field.widget == "checkbox":
            if value:
                form.add(field.name, "on")
        elif field.widget == "list":
            form.add(field.name, ", ".join(value))
        elif field.widget == "pairs":
            form.add(field.name, "\n".join(f"{name} = {number}" for name, number in value.items()))
        else:
            form.add(field.name, str(value))
    return form


@pytest.mark.parametrize("event_type", list(DATA_SCHEMAS))
def test_every_field_of_every_event_has_a_control_that_gives_its_data_back(event_type):
    sent = FULL[event_type]
    data = data_from(typed(FORMS[event_type], sent, MultiDict()), FORMS[event_type])
    if event_type == "committed":
        sent = {"anonymized": False, "msa_restricted": False, **sent}
    assert data == sent
    parse_event_request(orjson.dumps({"type": event_type, "data": data}))  # and the schema takes it


def test_empty_optional_fields_are_left_for_the_schema_to_judge():
    data = data_from(MultiDict({"reason": "  ", "revisit_on": ""}), FORMS["held"])
    assert data == {}
    with pytest.raises(InvalidEvent) as refused:
        parse_event_request(orjson.dumps({"type": "held", "data": data}))
    assert refused.value.errors[0]["field"] == "data.reason"


@pytest.mark.parametrize(("typed_in", "message"), [("tickets 120", "write each as name = number"),
                                                   ("tickets = many", "'many' is not a number")])
def test_metrics_that_cannot_be_read_name_the_line(typed_in, message):
    with pytest.raises(FormError) as refused:
        data_from(MultiDict({"kind": "baseline", "metrics": typed_in}), FORMS["metrics_recorded"])
    assert refused.value.field == "metrics" and message in refused.value.message


def test_a_number_field_refuses_words_and_keeps_its_bounds():
    [score, _] = FORMS["nps_recorded"]
    assert (score.widget, score.low, score.high) == ("number", 0, 10)
    with pytest.raises(FormError):
        data_from(MultiDict({"score": "nine"}), FORMS["nps_recorded"])


def test_the_served_browser_libraries_are_the_ones_package_json_pins():
    pinned = json.loads((Path(__file__).resolve().parents[2] / "package.json").read_text())["dependencies"]
    assert set(pinned) == set(assets.FILES)
    manifest_path = assets.VENDOR / "MANIFEST.json"
    if not manifest_path.exists():
        if os.environ.get("CI"):
            pytest.fail("`make assets` has not copied the dashboard's libraries (is npm installed?)")
        pytest.skip("`make assets` has not copied them (it needs npm)")
    manifest = json.loads(manifest_path.read_text())
    assert {package: entry["version"] for package, entry in manifest.items()} == pinned
    assert assets.installed()
    for files in assets.FILES.values():
        assert any(name.endswith("LICENSE.txt") for name in files.values())
