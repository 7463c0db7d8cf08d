"""What the service counts for /metrics: requests by route and status, appends' latency, and the
events appended by type.

The metrics are process-wide (prometheus_client's default registry). Under gunicorn, where
each worker is a process, ``casestudies serve`` sets PROMETHEUS_MULTIPROC_DIR before the
workers start, so that a scrape of any worker reports the sum over all of them.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPEND_SECONDS = Histogram(
    "casestudies_append_duration_seconds", "Time an append took in the event store, from the request "
    "to the committed write (refused appends included).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
EVENTS_APPENDED = Counter("casestudies_events_appended", "Events stored, by event type.", ["type"])
HTTP_REQUESTS = Counter("casestudies_http_requests", "HTTP requests answered, by route and status.",
                        ["method", "route", "status"])

# The helpers `casestudies serve` supervises (the projections worker, the outbox dispatcher).
HELPER_UP = Gauge("casestudies_helper_up", "1 while the supervised helper runs.", ["helper"],
                  multiprocess_mode="max")
HELPER_RESTARTS = Counter("casestudies_helper_restarts", "Times the supervisor started a helper again after it "
                          "exited.", ["helper"])
HELPER_PROGRESS = Gauge("casestudies_helper_last_progress_timestamp_seconds", "When the helper last finished a "
                        "round of its work (Unix time).", ["helper"], multiprocess_mode="max")
