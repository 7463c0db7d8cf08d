"""Time as the service keeps it: aware UTC datetimes from the server clock, and reference times
read from text (query parameters, command options) the same way everywhere."""
from __future__ import annotations

import re
from datetime import UTC, date, datetime, time

# Reference times are kept within years a report can count weeks and quarters in.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 1, tzinfo=UTC)
FORMS = "an ISO-8601 date (2026-11-20) or time (2026-11-20T09:00:00Z)"
# The years every reading of a moment accepts whatever its offset (EARLIEST and LATEST less a day),
# as a pattern for documents that describe a moment's text (the OpenAPI document).
YEARS_PATTERN = r"^(190[1-9]|19[1-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE)


def utcnow() -> datetime:
    """The server clock, aware and in UTC."""
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO-8601 text for a time, None for none."""
    return value.isoformat() if value else None


def parse_moment(raw: str, *, date_is_start: bool = False) -> datetime:
    """An ISO-8601 time in UTC (no offset means UTC); a bare date means the end of that day, or its
    start with ``date_is_start``. Raises ValueError for anything else, or outside EARLIEST-LATEST."""
    try:
        if _DATE.fullmatch(raw):
            value = datetime.combine(date.fromisoformat(raw), time.min if date_is_start else time.max)
        elif _DATETIME.fullmatch(raw):
            value = datetime.fromisoformat(raw)
        else:
            raise ValueError(raw)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError(raw) from None
    if not EARLIEST <= value <= LATEST:
        raise ValueError(raw)
    return value
