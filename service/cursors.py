"""Opaque page cursors: the last row's sort key as a JSON list, base64url without padding."""
from __future__ import annotations

import base64
import binascii
from typing import Any, Callable, TypeVar

import orjson

Key = TypeVar("Key")


class BadCursor(ValueError):
    """A pagination cursor this service did not hand out."""


def encode(values: list[Any]) -> str:
    """The cursor for a sort key of JSON values (times as ISO-8601 text)."""
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode(cursor: str, parse: Callable[[list[Any]], Key]) -> Key:
    """The sort key ``cursor`` carries, as ``parse`` reads it from the JSON list (raising ValueError,
    TypeError or IndexError for one of the wrong shape); BadCursor for anything not handed out here."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or encode(values) != cursor:
            raise ValueError(cursor)
        return parse(values)
    except (ValueError, TypeError, IndexError, OverflowError, binascii.Error):  # JSONDecodeError is a ValueError
        raise BadCursor("cursor is not one this service handed out") from None
