"""RFC 9457 problem details, each with a stable ``code``."""
from __future__ import annotations

from typing import Any

from flask import Response, json

PROBLEM_JSON = "application/problem+json"

# Every problem code: the HTTP status it is answered with, and its title. The one place either is said.
PROBLEMS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "Bad request"),
    "malformed_json": (400, "Request body is not valid JSON"),
    "invalid_parameter": (400, "Invalid query parameter"),
    "unknown_position": (400, "Not a position of the feed"),
    "position_not_readable": (400, "Position not readable yet"),
    "unauthorized": (401, "Missing or invalid API key"),
    "forbidden": (403, "This key's role may not do that"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "not_acceptable": (406, "Not acceptable"),
    "version_conflict": (409, "Version conflict"),
    "idempotency_conflict": (409, "Event id already used for another event"),
    "already_exists": (409, "Case study already exists"),
    "transition_not_allowed": (409, "Event not allowed in the current status"),
    "guard_failed": (409, "Event refused by a guard"),
    "not_dead": (409, "Notification is not dead"),
    "payload_too_large": (413, "Request body too large"),
    "uri_too_long": (414, "Request line too long"),
    "unsupported_media_type": (415, "Request body is not JSON"),
    "invalid_event": (422, "Invalid event"),
    "invalid_deal": (422, "Invalid deal"),
    "invalid_request": (422, "Invalid request body"),
    "too_many_requests": (429, "Too many costly reads at once"),
    "headers_too_large": (431, "Request headers too large"),
    "internal_error": (500, "Internal error"),
    "stream_corrupt": (500, "Stored stream cannot be replayed"),
    "database_unavailable": (503, "Database unavailable"),
    "personal_data_key_missing": (503, "Personal data cannot be stored: no master key"),
    "not_ready": (503, "Service not ready"),
    "projection_behind": (503, "Projections not there yet"),
    "service_unavailable": (503, "Service unavailable"),  # answered by the proxy (deploy/) when the API is not
}


class Problem(Exception):
    """An error answer: raise it anywhere in a request and the error handler renders it."""

    def __init__(self, code: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status, self.title = PROBLEMS[code]
        self.code = code
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def document(self) -> dict[str, Any]:
        """The problem+json body."""
        return {"type": f"/problems/{self.code}", "title": self.title, "status": self.status,
                "detail": self.detail, "code": self.code, **self.extra}

    def response(self) -> Response:
        response = Response(json.dumps(self.document()) + "\n", status=self.status, mimetype=PROBLEM_JSON)
        response.headers.update(self.headers)
        if self.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="casestudies"'
        return response
