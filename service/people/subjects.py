"""People (data subjects) and their keys, and the store's sealer, which encrypts the personal
fields of every event before it is decided, hashed and stored."""
from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import Connection, Engine, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.events.db import is_sqlite, transaction
from service.events.event import NewEvent
from service.events.schemas import PERSONAL_FIELDS
from service.people.keys import Keyring, keyed_hash, seal
from service.people.tables import data_subjects, subject_handles
from service.times import utcnow

CACHE_ENTRIES = 10_000
# Said as SQL: a subquery built by SQLAlchemy would not be correlated with the row in conflict.
_HELD_BY_ERASED = text("EXISTS (SELECT 1 FROM data_subjects s WHERE s.id = subject_handles.subject_id "
                       "AND s.wrapped_key IS NULL)")
RESOLVE_ATTEMPTS = 5  # a writer that lost the race to name a new person tries again, this often at most

# The person the first handle names (unless erased); else a new person (the id and wrapped key
# given); then every handle mapped to whichever it is, where no one else has it (a handle left to an
# erased person, by a writer that raced the erasure, is taken over). Only an erased person's handle
# is taken: a person made by a concurrent writer may not be visible yet to this statement. ``made`` says a new
# person was made, ``mapped`` which handles this statement mapped: a new person who did not get the
# first handle lost a race with another writer naming the same person.
_PG_RESOLVE = """
WITH found AS (
    SELECT s.id, s.wrapped_key FROM subject_handles h JOIN data_subjects s ON s.id = h.subject_id
    WHERE h.handle = (%(handles)s::text[])[1] AND s.wrapped_key IS NOT NULL),
made AS (
    INSERT INTO data_subjects (id, wrapped_key, created_at)
    SELECT %(id)s, %(wrapped)s, %(now)s WHERE NOT EXISTS (SELECT 1 FROM found) RETURNING id, wrapped_key),
chosen AS (SELECT id, wrapped_key, false AS made FROM found UNION ALL SELECT id, wrapped_key, true FROM made),
mapped AS (
    INSERT INTO subject_handles AS held (handle, subject_id)
    SELECT wanted, (SELECT id FROM chosen) FROM unnest(%(handles)s::text[]) AS wanted
    ON CONFLICT (handle) DO UPDATE SET subject_id = EXCLUDED.subject_id
    WHERE EXISTS (SELECT 1 FROM data_subjects s WHERE s.id = held.subject_id AND s.wrapped_key IS NULL)
    RETURNING handle)
SELECT chosen.id, chosen.wrapped_key, chosen.made, ARRAY(SELECT handle FROM mapped) AS mapped FROM chosen
"""


@dataclasses.dataclass(frozen=True)
class Opened:
    """A person's key as a reader finds it: the key, or when it was destroyed."""

    key: bytes | None
    erased_at: datetime | None


class Subjects:
    """Finds or makes the person behind a set of handles, and hands out their key.

    Writers remember a person's key for ``cache_seconds``: an append naming someone seen lately
    costs no extra round trip. Readers never use the remembered keys: they read the keys table
    each time, so that an erasure is seen by every process at once."""

    def __init__(self, engine: Engine, keyring: Keyring, *, cache_seconds: float = 30.0,
                 clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.keyring = keyring
        self.cache_seconds = cache_seconds
        self.clock = clock
        # handles (the strongest first, then the aliases written with them) -> (subject id, key, until)
        self._cache: dict[tuple[str, ...], tuple[str, bytes, float]] = {}
        self._lock = threading.Lock()
        self._insert = sqlite_insert if is_sqlite(engine) else pg_insert
        self._postgres = not is_sqlite(engine)

    # -- writing -------------------------------------------------------------------------
    def keys_for(self, people: Sequence[tuple[str, ...]]) -> list[tuple[str, bytes]]:
        """The (person id, key) of each person, given as their handles (the strongest first). A person
        is found by the strongest handle only (an email, else a name within an account), so two people
        of one name are never taken for one; the other handles are added as aliases where no one has
        them yet. A person not seen before gets a new id and key; a person with no handle is always new."""
        now = time.monotonic()
        found: dict[tuple[str, ...], tuple[str, bytes]] = {}
        with self._lock:
            for handles in people:
                entry = self._cache.get(handles) if handles else None
                if entry is not None and entry[2] > now:
                    found[handles] = entry[:2]
        missing = [handles for handles in dict.fromkeys(people) if handles not in found]
        if missing:
            if self._postgres:
                for handles in missing:
                    found[handles] = self._resolve_pg(handles)
            else:
                with transaction(self.engine) as conn:
                    for handles in missing:
                        found[handles] = self._resolve(conn, handles)
            with self._lock:
                if len(self._cache) > CACHE_ENTRIES:
                    self._cache.clear()
                for handles in missing:
                    if handles:
                        self._cache[handles] = (*found[handles], now + self.cache_seconds)
        return [found[handles] for handles in people]

    def _resolve_pg(self, handles: tuple[str, ...]) -> tuple[str, bytes]:
        """PostgreSQL: find the person or make them, and map every handle, in one statement sent in
        one round trip (a pipeline: BEGIN, SET LOCAL, the statement, COMMIT). It does not wait for
        the disk: the append that uses the key commits, and waits, after it, and PostgreSQL writes
        its log in order, so the person of every stored event is stored too."""
        pooled = self.engine.raw_connection()
        try:
            driver = pooled.driver_connection
            for _attempt in range(RESOLVE_ATTEMPTS):
                subject_id, key = self.keyring.new_subject()
                params = {"handles": list(handles), "id": subject_id, "wrapped": self.keyring.wrap(subject_id, key),
                          "now": self.clock()}
                try:
                    with driver.pipeline():
                        driver.execute("BEGIN")
                        driver.execute("SET LOCAL synchronous_commit = off")
                        cursor = driver.execute(_PG_RESOLVE, params)
                        driver.execute("COMMIT")
                except Exception:
                    if not driver.closed and driver.info.transaction_status != 0:  # not idle: end it
                        driver.rollback()
                    raise
                found_id, wrapped, made, mapped = cursor.fetchone()
                if not made:
                    return found_id, self.keyring.unwrap(found_id, wrapped)
                if not handles or handles[0] in mapped:
                    return subject_id, key
                # Another writer named the person first: theirs is the person; this one was never used.
                driver.execute("WITH gone AS (DELETE FROM subject_handles WHERE subject_id = %(id)s) "
                               "DELETE FROM data_subjects WHERE id = %(id)s", {"id": subject_id})
            raise RuntimeError(f"no person could be settled for a handle after {RESOLVE_ATTEMPTS} attempts")
        finally:
            pooled.close()

    def _resolve(self, conn: Connection, handles: tuple[str, ...]) -> tuple[str, bytes]:
        mapped = self._mapped(conn, handles[:1])
        chosen = next((mapped[h] for h in handles if h in mapped), None)
        if chosen is None:
            subject_id, key = self.keyring.new_subject()
            conn.execute(insert(data_subjects).values(id=subject_id, wrapped_key=self.keyring.wrap(subject_id, key),
                                                      created_at=self.clock()))
            if not handles:
                return subject_id, key
            self._map(conn, handles, subject_id)  # writers take turns on SQLite: no one else names her now
            chosen = self._mapped(conn, handles[:1])[handles[0]]
        subject_id, wrapped = chosen
        if len(handles) > 1:  # aliases: a champion with an email is also found by her name in her account
            self._map(conn, handles[1:], subject_id)
        return subject_id, self.keyring.unwrap(subject_id, wrapped)

    @staticmethod
    def _mapped(conn: Connection, handles: Iterable[str]) -> dict[str, tuple[str, str]]:
        rows = conn.execute(
            select(subject_handles.c.handle, data_subjects.c.id, data_subjects.c.wrapped_key)
            .join(data_subjects, data_subjects.c.id == subject_handles.c.subject_id)
            .where(subject_handles.c.handle.in_(list(handles)), data_subjects.c.wrapped_key.is_not(None)))
        return {row.handle: (row.id, row.wrapped_key) for row in rows}

    def _map(self, conn: Connection, handles: tuple[str, ...], subject_id: str) -> None:
        """Map each handle to the person, where no one else has it (as _PG_RESOLVE does)."""
        statement = self._insert(subject_handles).values([{"handle": h, "subject_id": subject_id} for h in handles])
        conn.execute(statement.on_conflict_do_update(index_elements=[subject_handles.c.handle],
                                                     set_={"subject_id": statement.excluded.subject_id},
                                                     where=_HELD_BY_ERASED))

    def forget(self, subject_id: str) -> None:
        """Drop a person's remembered key from this process (after their erasure)."""
        with self._lock:
            for handles in [h for h, entry in self._cache.items() if entry[0] == subject_id]:
                del self._cache[handles]

    # -- reading -------------------------------------------------------------------------
    def opened(self, subject_ids: Iterable[str]) -> dict[str, Opened]:
        """Each person's key as it stands in the keys table now (people not found are left out)."""
        ids = list(subject_ids)
        if not ids:
            return {}
        found: dict[str, Opened] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(select(data_subjects.c.id, data_subjects.c.wrapped_key, data_subjects.c.erased_at)
                                    .where(data_subjects.c.id.in_(ids[start:start + 500])))
                for row in rows:
                    key = self.keyring.unwrap(row.id, row.wrapped_key) if row.wrapped_key else None
                    found[row.id] = Opened(key, row.erased_at)
        return found

    def find(self, handle: str) -> str | None:
        """The person a handle names, unless they were erased."""
        with self.engine.connect() as conn:
            mapped = self._mapped(conn, [handle])
        return mapped[handle][0] if handle in mapped else None


def get_path(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = data
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def set_path(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    for part in path[:-1]:
        data[part] = dict(data[part])  # copied on the way down: the caller's data stays as it was
        data = data[part]
    data[path[-1]] = value


class Sealer:
    """The store's sealer: each personal field of an event becomes a token under its person's key
    before the event is decided, so the domain, the chain and every table see tokens only."""

    def __init__(self, subjects: Subjects):
        self.subjects = subjects
        self._accounts: dict[str, str | None] = {}  # stream id -> account id (it never changes)
        self._handles: dict[tuple[str, str, str | None], str] = {}  # (kind, value, account) -> handle

    def _handle(self, kind: str, value: str, account_id: str | None) -> str:
        found = self._handles.get((kind, value, account_id))
        if found is None:
            if len(self._handles) > CACHE_ENTRIES:
                self._handles.clear()
            keyring = self.subjects.keyring
            found = keyring.handle(email=value) if kind == "email" else keyring.handle(name=value, account_id=account_id)
            self._handles[kind, value, account_id] = found
        return found

    def seal(self, stream_id: str, new_events: Sequence[NewEvent],
             account_of: Callable[[], str | None]) -> Sequence[NewEvent]:
        """``new_events`` with their personal fields sealed (the same objects when they have none)."""
        if not any(event.type in PERSONAL_FIELDS for event in new_events):
            return new_events
        account = _Account(self._accounts, stream_id, new_events, account_of)
        people: list[tuple[str, ...]] = []
        plans = []  # (event index, fields of one person, index into people)
        for index, event in enumerate(new_events):
            for fields in _people_in(event):
                handles = []
                for field in fields:
                    value = get_path(event.data, field.path)
                    if field.identifies == "email" and value:
                        handles.insert(0, self._handle("email", value, None))
                    elif field.identifies == "name" and value:
                        handles.append(self._handle("name", value, account.id()))
                plans.append((index, fields, len(people)))
                people.append(tuple(handles))
        keys = self.subjects.keys_for(people)
        sealed = list(new_events)
        for index, fields, person in plans:
            subject_id, key = keys[person]
            data, digested = dict(sealed[index].data), dict(sealed[index].digested or sealed[index].data)
            for field in fields:
                value = get_path(data, field.path)
                if isinstance(value, str):
                    set_path(data, field.path, seal(subject_id, key, value))
                    set_path(digested, field.path, keyed_hash(key, value))
            sealed[index] = dataclasses.replace(sealed[index], data=data, digested=digested)
        return sealed


def _people_in(event: NewEvent) -> list[list[Any]]:
    """The personal fields of an event that hold a value, one list per person."""
    groups: dict[str, list[Any]] = {}
    for field in PERSONAL_FIELDS.get(event.type, ()):
        if get_path(event.data, field.path) is not None:
            groups.setdefault(field.whose, []).append(field)
    return list(groups.values())


class _Account:
    """The record's account id, looked up once and only if a name must be found within it."""

    def __init__(self, known: dict[str, str | None], stream_id: str, new_events: Sequence[NewEvent],
                 account_of: Callable[[], str | None]):
        self.known, self.stream_id, self.account_of = known, stream_id, account_of
        first = new_events[0]
        self.given = first.data["account"]["id"] if first.type == "committed" else None

    def id(self) -> str | None:
        if self.given is not None:  # a new record's: remembered only once it is stored
            return self.given
        if self.stream_id not in self.known:
            if len(self.known) > CACHE_ENTRIES:
                self.known.clear()
            self.known[self.stream_id] = self.account_of()
        return self.known[self.stream_id]


class PersonalDataKeyMissing(RuntimeError):
    """An event names a person, and no master key is configured to seal their data."""

    def __init__(self) -> None:
        super().__init__("PERSONAL_DATA_KEY is not set: events that name a person cannot be stored "
                         "(see the README, \"Personal data\")")


class Unkeyed:
    """The sealer of a service without a master key: events naming a person are refused, never
    stored in clear."""

    def seal(self, stream_id: str, new_events: Sequence[NewEvent],
             account_of: Callable[[], str | None]) -> Sequence[NewEvent]:
        if any(_people_in(event) for event in new_events):
            raise PersonalDataKeyMissing()
        return new_events
