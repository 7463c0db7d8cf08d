"""Query parameters and headers, parsed once with errors a client can act on."""
from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, time
from typing import Iterable, Sequence

from flask import Response, request

from service.api.problems import Problem


def as_of(name: str = "as_of") -> datetime | None:
    """An ISO-8601 time; naive means UTC, and a bare date means the end of that day (UTC)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        if len(raw) == 10:
            value = datetime.combine(datetime.fromisoformat(raw).date(), time.max)
        else:
            value = datetime.fromisoformat(raw)
    except ValueError:
        raise Problem(400, "invalid_parameter",
                      f"{name} must be an ISO-8601 date or time, e.g. 2026-11-20T09:00:00Z",
                      parameter=name) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def bounded_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise Problem(400, "invalid_parameter", f"{name} must be a whole number from {low} to {high}",
                      parameter=name)
    return value


def choice(name: str, allowed: Sequence[str]) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise Problem(400, "invalid_parameter", f"{name} must be one of: {', '.join(allowed)}",
                      parameter=name)
    return raw


def text(name: str, max_length: int = 200) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise Problem(400, "invalid_parameter", f"{name} is longer than {max_length} characters",
                      parameter=name)
    return raw


def wants_csv() -> bool:
    """``?format=csv`` or an Accept header that prefers text/csv to JSON."""
    fmt = choice("format", ("json", "csv"))
    if fmt is not None:
        return fmt == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    value = str(value)
    # A cell that a spreadsheet would run as a formula is kept as text.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_response(header: Sequence[str], rows: Iterable[Sequence], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
