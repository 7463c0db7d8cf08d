"""One log line per request, with a request id that is echoed back to the client."""
from __future__ import annotations

import re
import time
import uuid

import structlog
from flask import Flask, g, request

from service.telemetry import HTTP_REQUESTS

log = structlog.get_logger("casestudies.request")

REQUEST_ID_HEADER = "X-Request-Id"
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))  # others count as "other"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def register(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if _SAFE_ID.match(supplied) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        g.request_id = request_id
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = request_id
        principal = g.get("principal")
        started = g.get("started")
        HTTP_REQUESTS.labels(request.method if request.method in _METHODS else "other",
                             request.url_rule.rule if request.url_rule else "unmatched",
                             str(response.status_code)).inc()
        log.info("request", method=request.method, path=request.path, status=response.status_code,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2) if started else None,
                 key=principal.name if principal else None)
        return response
