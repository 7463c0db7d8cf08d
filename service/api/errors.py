"""The one place where domain, store and HTTP errors become problem+json answers."""
from __future__ import annotations

import structlog
from flask import Flask, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from service.api.problems import Problem
from service.domain import GuardFailed, StreamCorrupt, TransitionNotAllowed
from service.events.errors import (
    IdempotencyConflict,
    StreamAlreadyExists,
    StreamNotFound,
    VersionConflict,
)
from service.events.projections import BadCursor
from service.events.schemas import InvalidEvent, NotJson

log = structlog.get_logger("casestudies.api")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type"}


def _refused(problem: Problem, reason: str) -> Problem:
    """Log a refused write with its reason; nothing of it is stored."""
    if request.method == "POST":
        log.info("write_refused", code=problem.code, status=problem.status, reason=reason)
    return problem


def to_problem(error: Exception) -> Problem:
    """Translate any exception raised while serving a request into a Problem."""
    match error:
        case Problem():
            return error
        case TransitionNotAllowed() | GuardFailed():
            code = "transition_not_allowed" if isinstance(error, TransitionNotAllowed) else "guard_failed"
            return _refused(Problem(409, code, error.reason, current_status=error.current_status,
                                    allowed_events=error.allowed_events, reason=error.reason,
                                    event_type=error.event_type), error.reason)
        case StreamNotFound():
            return _refused(Problem(404, "not_found", str(error), id=error.stream_id), str(error))
        case StreamAlreadyExists():
            return _refused(Problem(409, "already_exists", str(error), id=error.stream_id,
                                    current_version=error.version), str(error))
        case VersionConflict():
            return _refused(Problem(409, "version_conflict", str(error), id=error.stream_id,
                                    expected_version=error.expected, current_version=error.actual),
                            str(error))
        case IdempotencyConflict():
            return _refused(Problem(409, "idempotency_conflict", str(error), event_id=error.event_id),
                            str(error))
        case InvalidEvent():
            return _refused(Problem(422, "invalid_event", str(error), errors=error.errors), str(error))
        case NotJson():
            return _refused(Problem(415, "unsupported_media_type", f"the body is not valid JSON: {error}"),
                            "not json")
        case BadCursor():
            return Problem(400, "invalid_parameter", str(error), parameter="cursor")
        case StreamCorrupt():
            log.error("stream_corrupt", detail=str(error))
            return Problem(500, "stream_corrupt", "a stored stream could not be replayed; "
                           "an operator has been told", request_id=_request_id())
        case OperationalError():
            log.error("database_unavailable", error=type(error.orig).__name__ if error.orig else None)
            return Problem(503, "database_unavailable", "the database cannot be reached; try again")
        case HTTPException():
            code = _HTTP_CODES.get(error.code or 500, "bad_request")
            detail = error.description or error.name
            if error.code == 413:
                detail = "the request body is larger than the 64 KiB limit"
            problem = Problem(error.code or 500, code, detail)
            return _refused(problem, detail) if error.code == 413 else problem
    log.exception("unhandled_error")
    return Problem(500, "internal_error", "something went wrong on our side; the request id "
                   "identifies it in our logs", request_id=_request_id())


def _request_id() -> str | None:
    return structlog.contextvars.get_contextvars().get("request_id")


def register(app: Flask) -> None:
    @app.errorhandler(Exception)
    def _handle(error: Exception):
        return to_problem(error).response()
