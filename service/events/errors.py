"""Storage outcomes a caller must handle, translated once from database errors."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator

import psycopg
from sqlalchemy import exc


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


# The ways a database says it cannot answer now, any of which a later retry may get past: a
# connection refused, reset or closed, an administrator's shutdown, a server starting or stopping,
# too many connections, a statement timeout, a serialization failure or deadlock (psycopg's
# OperationalError covers all of those), SQLite's "database is locked", and the pool's own timeout.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, sqlite3.OperationalError,
                exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError,
                DatabaseUnavailable)


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot answer now (so a retry later may succeed)."""
    if isinstance(error, _UNAVAILABLE):
        return True
    return isinstance(error, exc.DBAPIError) and (error.connection_invalidated or isinstance(error.orig, _UNAVAILABLE))


def unavailable_reason(error: BaseException) -> str:
    """The first line of the database's own message, for the log (never a query or its values)."""
    lines = str(getattr(error, "orig", None) or error).splitlines()
    return lines[0][:200] if lines and lines[0] else type(error).__name__


@contextmanager
def translated() -> Iterator[None]:
    """Database errors as the store's own: every way of being unavailable is DatabaseUnavailable."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as error:
        if not unavailable(error):
            raise
        raise DatabaseUnavailable(unavailable_reason(error)) from None
