"""RFC 9457 problem details, each with a stable ``code``."""
from __future__ import annotations

from typing import Any

from flask import Response, json

PROBLEM_JSON = "application/problem+json"

TITLES: dict[str, str] = {
    "bad_request": "Bad request",
    "invalid_parameter": "Invalid query parameter",
    "unknown_position": "Not a position of the feed",
    "position_not_readable": "Position not readable yet",
    "unauthorized": "Missing or invalid API key",
    "forbidden": "This key's role may not do that",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "not_acceptable": "Not acceptable",
    "version_conflict": "Version conflict",
    "idempotency_conflict": "Event id already used for another event",
    "already_exists": "Case study already exists",
    "transition_not_allowed": "Event not allowed in the current status",
    "guard_failed": "Event refused by a guard",
    "payload_too_large": "Request body too large",
    "unsupported_media_type": "Request body is not JSON",
    "invalid_event": "Invalid event",
    "invalid_deal": "Invalid deal",
    "invalid_request": "Invalid request body",
    "not_dead": "Notification is not dead",
    "internal_error": "Internal error",
    "stream_corrupt": "Stored stream cannot be replayed",
    "database_unavailable": "Database unavailable",
    "not_ready": "Service not ready",
}


# The HTTP status each code is answered with (the OpenAPI document groups codes by it).
STATUS_OF: dict[str, int] = {
    "bad_request": 400, "invalid_parameter": 400, "unknown_position": 400, "position_not_readable": 400,
    "unauthorized": 401, "forbidden": 403, "not_found": 404, "method_not_allowed": 405, "not_acceptable": 406,
    "version_conflict": 409, "idempotency_conflict": 409, "already_exists": 409, "transition_not_allowed": 409,
    "guard_failed": 409, "not_dead": 409, "payload_too_large": 413, "unsupported_media_type": 415,
    "invalid_event": 422, "invalid_deal": 422, "invalid_request": 422,
    "internal_error": 500, "stream_corrupt": 500, "database_unavailable": 503, "not_ready": 503,
}


class Problem(Exception):
    """An error answer: raise it anywhere in a request and the error handler renders it."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> Response:
        body = {
            "type": f"/problems/{self.code}",
            "title": TITLES.get(self.code, self.code.replace("_", " ").capitalize()),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }
        response = Response(json.dumps(body) + "\n", status=self.status, mimetype=PROBLEM_JSON)
        response.headers.update(self.headers)
        if self.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="casestudies"'
        return response
