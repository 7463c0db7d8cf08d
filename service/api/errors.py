"""The one place where domain, store and HTTP errors become problem+json answers."""
from __future__ import annotations

import structlog
from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from service.api.params import MAX_BODY_BYTES
from service.api.problems import Problem
from service.cursors import BadCursor
from service.domain import GuardFailed, StreamCorrupt, TransitionNotAllowed
from service.events.errors import (
    IdempotencyConflict,
    StreamAlreadyExists,
    StreamNotFound,
    VersionConflict,
    unavailable,
    unavailable_reason,
)
from service.events.feed import UnknownPosition
from service.events.schemas import InvalidEvent, NotJson
from service.intake.deals import DealConflict, InvalidDeal
from service.people.subjects import PersonalDataKeyMissing
from service.projections.queries import ProjectionBehind

log = structlog.get_logger("casestudies.api")

DATABASE_RETRY_AFTER = 2  # seconds: a restarting PostgreSQL is usually back by then

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type"}


def to_problem(error: Exception) -> Problem:
    """Translate any exception raised while serving a request into a Problem."""
    match error:
        case Problem():
            return error
        case TransitionNotAllowed() | GuardFailed():
            code = "transition_not_allowed" if isinstance(error, TransitionNotAllowed) else "guard_failed"
            batch = {"event_index": error.event_index} if hasattr(error, "event_index") else {}
            return Problem(code, error.reason, current_status=error.current_status,
                           allowed_events=error.allowed_events, reason=error.reason,
                           event_type=error.event_type, **batch)
        case StreamNotFound():
            return Problem("not_found", str(error), id=error.stream_id)
        case StreamAlreadyExists():
            return Problem("already_exists", str(error), id=error.stream_id,
                           current_version=error.version)
        case VersionConflict():
            return Problem("version_conflict", str(error), id=error.stream_id,
                           expected_version=error.expected, current_version=error.actual)
        case IdempotencyConflict():
            return Problem("idempotency_conflict", str(error), event_id=error.event_id)
        case InvalidDeal():
            return Problem("invalid_deal", str(error), errors=error.errors)
        case DealConflict():
            return Problem("already_exists", str(error), id=error.stream_id)
        case InvalidEvent():
            return Problem("invalid_event", str(error), errors=error.errors)
        case NotJson():
            return Problem("malformed_json", f"the body is not valid JSON: {error}")
        case ProjectionBehind():
            problem = Problem("projection_behind", f"{error}; try again in a moment",
                              min_position=error.position, projection=error.reached.to_dict())
            problem.headers["Retry-After"] = "1"
            return problem
        case UnknownPosition():
            return Problem("unknown_position", f"{error}: pass a position an append was answered with",
                           parameter="min_position")
        case BadCursor():
            return Problem("invalid_parameter", str(error), parameter="cursor")
        case PersonalDataKeyMissing():
            log.error("personal_data_key_missing")
            return Problem("personal_data_key_missing", str(error))
        case StreamCorrupt():
            log.error("stream_corrupt", detail=str(error))
            return Problem("stream_corrupt", "a stored stream could not be replayed; "
                           "an operator has been told", request_id=_request_id())
        case _ if _malformed_http(error):
            return Problem("bad_request", "the request body is not well-formed HTTP/1.1 (its chunked framing)")
        case _ if unavailable(error):
            log.error("database_unavailable", error=unavailable_reason(error))
            problem = Problem("database_unavailable", "the database cannot answer now; try again in a moment")
            problem.headers["Retry-After"] = str(DATABASE_RETRY_AFTER)
            return problem
        case HTTPException():
            status = error.code or 500
            code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
            detail = error.description or error.name
            if error.code == 413:
                detail = f"the request body is larger than the {MAX_BODY_BYTES // 1024} KiB limit"
            problem = Problem(code, detail)
            if error.code == 405 and getattr(error, "valid_methods", None):
                problem.headers["Allow"] = ", ".join(error.valid_methods)
            return problem
    log.exception("unhandled_error")
    return Problem("internal_error", "something went wrong on our side; the request id "
                   "identifies it in our logs", request_id=_request_id())


def _malformed_http(error: Exception) -> bool:
    """A body the server could not read as HTTP (gunicorn raises it while the app reads the body)."""
    try:
        from gunicorn.http.errors import ParseException
    except ImportError:  # served by something else
        return False
    return isinstance(error, ParseException)


def _request_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")


def register(app: Flask) -> None:
    @app.errorhandler(Exception)
    def _handle(error: Exception):
        problem = to_problem(error)
        if request.method == "POST" and 400 <= problem.status < 500:
            # Refused writes are never stored; the log keeps who tried what and why it was refused.
            principal = g.get("principal")
            log.info("write_refused", code=problem.code, status=problem.status, reason=problem.detail,
                     key=principal.name if principal else None)
        return problem.response()
