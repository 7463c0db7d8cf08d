"""Query parameters and headers, parsed once with errors a client can act on."""
from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from datetime import datetime
from functools import wraps
from typing import Callable, Iterable, Sequence, TypeVar

from flask import Response, request
from pydantic import ValidationError

from service.api.problems import Problem
from service.domain import EVENT_TYPES, SYSTEM_EVENT_TYPES
from service.events.schemas import error_list
from service.spreadsheets import write_csv
from service.times import EARLIEST, FORMS, LATEST, YEARS_PATTERN, parse_moment

M = TypeVar("M")
MAX_BODY_BYTES = 64 * 1024  # a request body's limit, refused with 413 before it is parsed


def as_of(name: str = "as_of", *, date_is_start: bool = False) -> datetime | None:
    """A reference time (see ``times.parse_moment``); 400 ``invalid_parameter`` when malformed."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_moment(raw, date_is_start=date_is_start)
    except ValueError:
        hint = " (send + in an offset as %2B)" if re.search(r" \d{2}:?\d{2}$", raw) else ""
        raise Problem("invalid_parameter", f"{name} must be {FORMS}{hint}", parameter=name) from None


def json_body(what: str) -> bytes:
    """The request body, which must be sent as JSON (else 415), refused with 413 past the limit
    whether or not it has a Content-Length."""
    if not request.is_json:
        raise Problem("unsupported_media_type", f"send {what} as JSON (Content-Type: application/json)")
    body = request.get_data(cache=False)  # Werkzeug refuses a declared Content-Length over the limit
    if request.content_length is None:
        request.stream.read(1)  # a chunked body stops at the limit; reading past it raises 413
    return body


def json_model(model: type[M], what: str) -> M:
    """The JSON body validated by a pydantic ``model``; 422 ``invalid_request`` naming each field at fault."""
    try:
        return model.model_validate_json(json_body(what))
    except ValidationError as exc:
        errors = error_list(exc)
        first = errors[0]
        raise Problem("invalid_request", f"{first['field']}: {first['message']}" if first["field"]
                      else first["message"], errors=errors) from None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bounded_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if re.fullmatch(r"[0-9]{1,10}", raw) else None
    if value is None or not low <= value <= high:
        raise Problem("invalid_parameter", f"{name} must be a whole number from {low} to {high}",
                      parameter=name)
    return value


def choice(name: str, allowed: Sequence[str]) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise Problem("invalid_parameter", f"{name} must be one of: {', '.join(allowed)}",
                      parameter=name)
    return raw


def text(name: str, max_length: int = 200) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise Problem("invalid_parameter", f"{name} is longer than {max_length} characters",
                      parameter=name)
    if _CONTROL.search(raw):
        raise Problem("invalid_parameter", f"{name} must not contain control characters",
                      parameter=name)
    return raw


def wants_csv(fmt: str | None) -> bool:
    """``?format=csv`` (given as ``fmt``) or an Accept header that prefers text/csv to JSON."""
    if fmt is not None:
        return fmt == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


def csv_response(header: Sequence[str], rows: Iterable[Sequence], filename: str) -> Response:
    out = io.StringIO()
    write_csv(out, header, rows)
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# -- declared query parameters: one declaration validates a request and documents it (openapi.py) --
class Query(ABC):
    """A query parameter a view takes: parsed before the view runs, passed to it as ``arg``."""

    def __init__(self, name: str, description: str, *, arg: str | None = None):
        self.name = name
        self.description = description
        self.arg = arg or name

    @abstractmethod
    def parse(self):
        """The parameter's value in this request (None when absent, unless it has a default)."""

    @abstractmethod
    def schema(self) -> dict:
        """Its JSON Schema, as the OpenAPI document shows it."""

    def openapi(self) -> dict:
        return {"name": self.name, "in": "query", "required": False, "description": self.description,
                "schema": self.schema()}


class AsOf(Query):
    """An ISO-8601 time or date (see ``as_of``)."""

    def __init__(self, name: str, description: str, *, date_is_start: bool = False, arg: str | None = None):
        super().__init__(name, description, arg=arg)
        self.date_is_start = date_is_start

    def parse(self):
        return as_of(self.name, date_is_start=self.date_is_start)

    def schema(self) -> dict:
        day = "its start" if self.date_is_start else "its end"
        return {"type": "string", "examples": ["2026-11-20", "2026-11-20T09:00:00Z"],
                "anyOf": [{"format": "date"}, {"format": "date-time"}], "pattern": YEARS_PATTERN,
                "description": f"ISO-8601 time (no offset: UTC) or date ({day}, UTC), years "
                               f"{EARLIEST.year + 1} to {LATEST.year - 1}"}


class Number(Query):
    def __init__(self, name: str, description: str, *, default: int, low: int, high: int):
        super().__init__(name, description)
        self.default, self.low, self.high = default, low, high

    def parse(self):
        return bounded_int(self.name, self.default, self.low, self.high)

    def schema(self) -> dict:
        return {"type": "integer", "minimum": self.low, "maximum": self.high, "default": self.default}


class OneOf(Query):
    def __init__(self, name: str, description: str, allowed: Sequence[str], *, arg: str | None = None):
        super().__init__(name, description, arg=arg)
        self.allowed = tuple(allowed)

    def parse(self):
        return choice(self.name, self.allowed)

    def schema(self) -> dict:
        return {"type": "string", "enum": list(self.allowed)}


class Text(Query):
    def __init__(self, name: str, description: str, *, max_length: int = 200):
        super().__init__(name, description)
        self.max_length = max_length

    def parse(self):
        return text(self.name, self.max_length)

    def schema(self) -> dict:
        return {"type": "string", "minLength": 1, "maxLength": self.max_length, "pattern": r"^[^\x00-\x1f\x7f]+$"}


RECORDED_TYPES = (*EVENT_TYPES, *SYSTEM_EVENT_TYPES)  # what the store holds: clients' events and the service's


class EventTypes(Query):
    """Event types, the parameter repeated or comma-separated."""

    def parse(self):
        types = [t for raw in request.args.getlist(self.name) for t in raw.split(",") if t]
        unknown = [t for t in types if t not in RECORDED_TYPES]
        if unknown:
            raise Problem("invalid_parameter", f"{self.name} must be event types ({', '.join(RECORDED_TYPES)}); "
                          f"unknown: {', '.join(unknown[:5])}"[:500], parameter=self.name)
        return types or None

    def schema(self) -> dict:
        return {"type": "array", "items": {"type": "string", "enum": list(RECORDED_TYPES)}}

    def openapi(self) -> dict:
        return {**super().openapi(), "style": "form", "explode": True}


FORMAT = OneOf("format", "json or csv; without it, the Accept header decides (text/csv for CSV)",
               ("json", "csv"), arg="fmt")
CSM = Text("csm", "only records of this CSM")
CURSOR = Text("cursor", "next_cursor of the page before", max_length=1000)
AS_OF = AsOf("as_of", "as known at this time (what had been recorded by then; default now)")
MIN_POSITION = Number("min_position", "answer only once the projections have read this position (one an append "
                      "was answered with); 503 with Retry-After if they do not within a moment",
                      default=0, low=0, high=9_999_999_999)


def accepts(*queries: Query) -> Callable:
    """Declare the query parameters a view takes; each is parsed (400 ``invalid_parameter`` when
    malformed or given empty, as in ``?limit=``) and passed to the view by its ``arg`` name, and the
    OpenAPI document lists them."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def parsed(*args, **kwargs):
            for query in queries:
                if "" in request.args.getlist(query.name):
                    raise Problem("invalid_parameter", f"{query.name} is empty: leave it out, or give it a value",
                                  parameter=query.name)
            return view(*args, **kwargs, **{query.arg: query.parse() for query in queries})

        parsed.query_params = queries
        return parsed

    return decorate
