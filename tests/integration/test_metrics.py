"""/metrics in Prometheus text format, through the real app on both databases."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.events.event import NewEvent
from tests.conftest import auth, settle, unique_id
from tests.factories import COMMITTED


def scrape(client, *, fresh: bool = True) -> dict[tuple[str, tuple], float]:
    """A scrape's samples; ``fresh``: what the database says now, not what this process read a moment ago."""
    if fresh:
        client.application.extensions["casestudies_readings"].forget()
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.get_data(as_text=True))
            for sample in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_by_route_appends_by_type_and_time_appends(client, keys, services):
    before = scrape(client)
    stream = unique_id("m")
    for body in ({"type": "committed", "data": COMMITTED}, {"type": "started"}, {"type": "started"}):
        client.post(f"/case-studies/{stream}/events", json=body, headers=auth(keys["writer"]))
    client.post(f"/case-studies/{stream}/events", json=[{"type": "quote_added",
                                                         "data": {"text": "x", "speaker": "Jo"}}] * 2,
                headers=auth(keys["writer"]))
    after = scrape(client)
    route = "/case-studies/<stream_id>/events"
    assert value(after, "casestudies_http_requests_total", method="POST", route=route, status="201") - \
        value(before, "casestudies_http_requests_total", method="POST", route=route, status="201") == 3
    assert value(after, "casestudies_http_requests_total", method="POST", route=route, status="409") - \
        value(before, "casestudies_http_requests_total", method="POST", route=route, status="409") == 1
    for event_type, count in (("committed", 1), ("started", 1), ("quote_added", 2)):
        assert value(after, "casestudies_events_appended_total", type=event_type) - \
            value(before, "casestudies_events_appended_total", type=event_type) == count
    assert value(after, "casestudies_append_duration_seconds_count") - \
        value(before, "casestudies_append_duration_seconds_count") == 4  # the refused one too
    assert value(after, "casestudies_append_duration_seconds_bucket", le="+Inf") == \
        value(after, "casestudies_append_duration_seconds_count")
    assert value(after, "casestudies_metrics_database_up") == 1
    for method in ("BREW", "X" * 50):  # any method a client invents counts as "other", not as a new label
        client.open("/nowhere", method=method)
    methods = {dict(labels).get("method") for name, labels in scrape(client) if name == "casestudies_http_requests_total"}
    assert "BREW" not in methods and "other" in methods


def test_metrics_show_the_outbox_and_how_far_each_projector_lags(client, services):
    depth = services.outbox.depth()
    samples = scrape(client)
    for destination in ("slack", "webhook"):
        for state in ("pending", "sent", "dead"):
            assert value(samples, "casestudies_outbox_messages", destination=destination, status=state) == \
                depth.by_status[destination][state]
    assert ("casestudies_outbox_oldest_pending_age_seconds", ()) in samples
    catch_up(services)
    assert value(scrape(client), "casestudies_projection_lag_events", projector="pipeline") == 0
    services.store.append(unique_id("lag"), [NewEvent("committed", COMMITTED), NewEvent("started", {})], actor="t")
    settle(services.feed)
    lagging = scrape(client)
    assert value(lagging, "casestudies_projection_lag_events", projector="pipeline") == 2  # the two just appended
    assert value(lagging, "casestudies_projection_lag_seconds", projector="pipeline") > 0
    catch_up(services)
    caught_up = scrape(client)
    assert value(caught_up, "casestudies_projection_lag_events", projector="pipeline") == 0
    assert value(caught_up, "casestudies_projection_lag_seconds", projector="pipeline") == 0
    assert value(caught_up, "casestudies_projection_failing", projector="pipeline") == 0


def catch_up(services) -> None:
    settle(services.feed)
    services.runner.checkpoints.ensure()
    while services.runner.step():
        pass
