"""The OpenAPI document: every endpoint in it, and schemathesis finding nothing against the live app.

Schemathesis generates requests from the document (a bounded number per operation, derandomised
so that a run is repeatable) and sends them to the real app on a database of its own, with an
admin key; it fails on any 5xx and on any answer the document does not describe: an
undocumented status or content type, or a body that breaks its schema.
"""
from __future__ import annotations

import threading

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from service import create_app
from service.api.openapi import undocumented_views
from service.bootstrap import build
from service.config import Settings
from service.events.event import NewEvent
from tests.conftest import BACKENDS, PERSONAL_DATA_KEY, migrated_database
from tests.factories import COMMITTED

MAX_EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]  # a request the document forbids (an empty value, a wrong type) is refused


@pytest.fixture(scope="module", params=BACKENDS)
def live_app(request, tmp_path_factory):
    """The app on a database of its own (generated requests write to it), with an admin key."""
    with migrated_database(request, tmp_path_factory, "openapi") as db:
        services = build(Settings(personal_data_key=PERSONAL_DATA_KEY, database_url=db.url, log_format="json"), engine=db.engine)
        key = services.keys.create("schemathesis", "admin")
        services.store.append("acme-1", [NewEvent("committed", COMMITTED)], actor="seed")  # something to find
        stop = threading.Event()  # the projections follow the writes, as the served worker does
        follower = threading.Thread(target=services.runner.run, args=(stop,), kwargs={"poll_seconds": 0.02})
        follower.start()
        try:
            yield create_app(services=services), key
        finally:
            stop.set()
            follower.join()


@pytest.fixture(scope="module")
def api_schema(live_app):
    app, key = live_app
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    schema.config.update(headers={"Authorization": f"Bearer {key}"})
    schema.config.seed = 20261201
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none",
                                    modes=list(GenerationMode))  # requests the document allows, and ones it forbids
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_the_live_app_answers_as_its_document_says(case):
    case.call_and_validate(checks=CHECKS)


def test_every_endpoint_is_in_the_document_with_its_roles_and_errors(live_app):
    app, _ = live_app
    assert undocumented_views(app) == []
    document = app.test_client().get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    post = document["paths"]["/case-studies/{stream_id}/events"]["post"]
    assert post["x-roles"] == ["writer", "admin"] and post["security"] == [{"bearer": []}]
    assert {"201", "200", "401", "403", "404", "409", "413", "415", "422", "500", "503"} <= set(post["responses"])
    conflicts = post["responses"]["409"]["content"]["application/problem+json"]["schema"]["allOf"][1]
    assert set(conflicts["properties"]["code"]["enum"]) == {
        "already_exists", "version_conflict", "idempotency_conflict", "transition_not_allowed", "guard_failed"}
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert len(body["anyOf"]) == 2  # one event, or a batch of them
    assert "#/components/schemas/CommittedRequest" in str(body)
    stuck = document["paths"]["/projections/stuck"]["get"]
    assert [p["name"] for p in stuck["parameters"]] == ["format", "as_of", "csm", "code", "status", "limit", "cursor",
                                                         "min_position"]
    assert "text/csv" in stuck["responses"]["200"]["content"]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert document["paths"]["/integrations/deals"]["post"]["requestBody"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/Deal"}


def test_every_link_leads_to_an_operation_of_the_document(live_app):
    app, _ = live_app
    document = app.test_client().get("/openapi.json").get_json()
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    links = [link for path in document["paths"].values() for op in path.values()
             for answer in op["responses"].values() for link in answer.get("links", {}).values()]
    assert len(links) >= 9 and {link["operationId"] for link in links} <= operations


def test_the_stateful_phase_follows_the_links_between_operations(api_schema, live_app):
    """Schemathesis chains operations along the document's links (append, then read the record, its
    events, approvals and chain; a deal, then its record; a subscription, then read and remove it),
    with the same checks as above on every answer."""
    from hypothesis import HealthCheck
    from hypothesis import settings as hypothesis_settings

    machine = api_schema.as_state_machine()
    followed: list[str] = []
    original = machine.step

    def counting_step(self, input, *args, **kwargs):
        if getattr(input, "transition", None) is not None:
            followed.append(input.transition.id)
        return original(self, input, *args, **kwargs)

    def checked(self, response, case, additional_checks=None, **kwargs):
        case.validate_response(response, checks=CHECKS, recorder=self.recorder)

    machine.step = counting_step
    machine.validate_response = checked
    machine.run(settings=hypothesis_settings(max_examples=40, stateful_step_count=6, deadline=None, derandomize=True,
                                             database=None, suppress_health_check=list(HealthCheck)))
    assert len(set(followed)) >= 3, f"too few links between operations were followed: {sorted(set(followed))}"
