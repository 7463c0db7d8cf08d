"""``GET /metrics``: Prometheus text format, open like the health checks.

Counters and histograms are kept by each process (summed over gunicorn's workers when
PROMETHEUS_MULTIPROC_DIR is set, as ``casestudies serve`` does); the outbox and projection
gauges are read from the database at scrape time, so they are the same whichever worker answers.
"""
from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from service.api.openapi import Body, describe
from service.bootstrap import Services
from service.times import utcnow

bp = Blueprint("metrics", __name__)



READINGS_CACHE_SECONDS = 5.0  # scrapes and health checks are open to all: each process reads at most this often


class Readings:
    """The outbox's depth and the projections' status, read from the database at most every
    ``READINGS_CACHE_SECONDS`` in this process (a failed read is not kept)."""

    def __init__(self, wired: Services, clock=time.monotonic):
        self.services = wired
        self.clock = clock
        self._lock = threading.Lock()
        self._kept: tuple[float, Any, dict] | None = None

    def read(self) -> tuple[Any, dict]:
        with self._lock:
            if self._kept is None or self.clock() >= self._kept[0]:
                depth, status = self.services.outbox.depth(), self.services.runner.status()
                self._kept = (self.clock() + READINGS_CACHE_SECONDS, depth, status)
            return self._kept[1], self._kept[2]

    def forget(self) -> None:
        """Read afresh next time."""
        with self._lock:
            self._kept = None


def readings() -> Readings:
    """This app's cached readings."""
    return current_app.extensions["casestudies_readings"]


class DatabaseGauges:
    """Outbox depth, the oldest pending message's age, and each projector's lag, read when scraped."""

    def __init__(self, source: Readings, clock=utcnow):
        self.source = source
        self.clock = clock

    def describe(self):
        return []  # keeps register() from collecting (and so from querying the database) at start

    def collect(self):
        up = GaugeMetricFamily("casestudies_metrics_database_up", "1 when the database gauges below could be read.")
        try:
            depth, status = self.source.read()
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        messages = GaugeMetricFamily("casestudies_outbox_messages", "Outbox messages by destination and status.",
                                     labels=["destination", "status"])
        for destination, counts in depth.by_status.items():
            for state, count in counts.items():
                messages.add_metric([destination, state], count)
        yield messages
        yield GaugeMetricFamily("casestudies_outbox_oldest_pending_age_seconds",
                                "Age of the oldest pending outbox message (0 when none is pending).",
                                value=_age(depth.oldest_pending_at, self.clock()))
        events = GaugeMetricFamily("casestudies_projection_lag_events", "Committed events a projector has not read.",
                                   labels=["projector"])
        seconds = GaugeMetricFamily("casestudies_projection_lag_seconds",
                                    "Age of the oldest event a projector has not read.", labels=["projector"])
        failing = GaugeMetricFamily("casestudies_projection_failing", "1 while a projector's last batch failed.",
                                    labels=["projector"])
        for row in status["projectors"]:
            events.add_metric([row["name"]], row["lag_events"])
            seconds.add_metric([row["name"]], row["lag_seconds"])
            failing.add_metric([row["name"]], 1 if row["failing"] else 0)
        yield from (events, seconds, failing)


def _age(since: datetime | None, now: datetime) -> float:
    return max((now - since).total_seconds(), 0.0) if since else 0.0


def registry_for(source: Readings) -> CollectorRegistry:
    """The registry a scrape renders: this process's metrics (or every worker's) and the database gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(DatabaseGauges(source))
    return registry


def register(app: Flask) -> None:
    app.extensions["casestudies_readings"] = Readings(app.extensions["casestudies"])
    app.extensions["casestudies_metrics"] = registry_for(app.extensions["casestudies_readings"])


@bp.get("/metrics")
@describe(responses={200: Body({"type": "string"}, "text/plain")}, tag="operations")
def metrics():
    """Prometheus text format."""
    return Response(generate_latest(current_app.extensions["casestudies_metrics"]), content_type=CONTENT_TYPE_LATEST)
