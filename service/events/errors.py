"""Storage outcomes a caller must handle, translated once from database errors."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from sqlalchemy.exc import OperationalError


class StoreError(Exception):
    """Base of the store's refusals."""


class StreamNotFound(StoreError):
    def __init__(self, stream_id: str):
        super().__init__(f"no case study with id {stream_id!r}")
        self.stream_id = stream_id


class StreamAlreadyExists(StoreError):
    def __init__(self, stream_id: str, version: int):
        super().__init__(f"case study {stream_id!r} already exists (version {version})")
        self.stream_id = stream_id
        self.version = version


class VersionConflict(StoreError):
    def __init__(self, stream_id: str, expected: int | None, actual: int):
        detail = (f"expected version {expected}, but the stream is at version {actual}"
                  if expected is not None else
                  f"the stream kept moving under concurrent writers (now at version {actual})")
        super().__init__(detail)
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class IdempotencyConflict(StoreError):
    def __init__(self, event_id: str, detail: str):
        super().__init__(detail)
        self.event_id = event_id


class DatabaseUnavailable(StoreError):
    """The database could not be reached or dropped the connection.

    Usually nothing was written; if the connection dropped while a write was committing, it
    may have been. A retry with the same event id is safe either way.
    """


class LostRace(Exception):
    """The record moved (or was created) between the read and the write; nothing was written."""


@contextmanager
def translated() -> Iterator[None]:
    """Database errors as the store's own: a connection refused, lost or reset is DatabaseUnavailable."""
    try:
        yield
    except (psycopg.OperationalError, OperationalError) as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()
        raise DatabaseUnavailable(reason[0] if reason else "connection lost") from None
