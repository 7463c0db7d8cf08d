"""The global feed: every event of every stream, in an order a follower can never miss.

Positions come from a sequence, so on PostgreSQL a transaction can take position 10, commit
after another took 11 and committed: a reader that had gone past 11 would never see 10. The
feed therefore orders events by (writing transaction id, position) and hands out only events
whose transaction is older than the oldest transaction still running when the read's snapshot
was taken (``pg_snapshot_xmin(pg_current_snapshot())``). Every such transaction has ended, so
nothing can later appear before what was handed out, and writers take no lock for it. Within
a transaction events keep position order, and a stream's later version is always written by a
later transaction (it needs the committed earlier one to decide on), so each stream's events
come in version order. The reasoning, and what it costs, is in docs/feed.md.

SQLite's writers take turns (one write transaction at a time), so positions are handed out in
commit order; there ``tx`` is 0 and the order is the position order.

A follower passes the position of the last event it has read (``after``); the feed finds that
event's transaction and continues from there.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import BigInteger, Connection, Engine, Text, cast, func, literal, select, text, true, tuple_
from sqlalchemy.sql.expression import ColumnElement

from service.events.db import is_sqlite, transaction
from service.events.event import EVENT_COLUMNS, StoredEvent, stored_event
from service.events.tables import Xid8, events


class UnknownPosition(ValueError):
    """``after`` names a position at which no event is stored."""

    def __init__(self, position: int):
        super().__init__(f"no event is stored at position {position}")
        self.position = position


class NotYetReadable(ValueError):
    """``after`` names an event the feed has not handed out yet (an older transaction is still open)."""

    def __init__(self, position: int):
        super().__init__(f"the event at position {position} is not in the feed yet: a transaction that "
                         "began before it is still open")
        self.position = position


@dataclass(frozen=True)
class Mark:
    """A place in the feed: the event at ``position`` and when it was recorded (0/None: the start)."""

    position: int
    recorded_at: datetime | None

    def to_dict(self) -> dict:
        return {"position": self.position,
                "recorded_at": self.recorded_at.isoformat() if self.recorded_at else None}


@dataclass(frozen=True)
class FeedPage:
    events: list[StoredEvent]
    next_after: int  # pass as ``after`` to continue
    head: Mark  # the last event a follower may read now (the high-water mark)


@dataclass(frozen=True)
class Lag:
    events: int  # committed events after the mark, readable or held back
    oldest: datetime | None  # when the oldest of them was recorded
    held_back: int  # of those, how many an open older transaction keeps out of the feed for now


_START = (0, 0)  # (tx, position) before every event


class Feed:
    """Reads the events table in the feed's order, never past the high-water mark."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sqlite = is_sqlite(engine)

    def read(self, *, after: int = 0, limit: int = 100, types: Sequence[str] | None = None) -> FeedPage:
        """Up to ``limit`` events after position ``after`` (optionally of ``types`` only)."""
        with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
            return self.read_in(conn, after=after, limit=limit, types=types)

    def read_in(self, conn: Connection, *, after: int = 0, limit: int = 100,
                types: Sequence[str] | None = None) -> FeedPage:
        """``read`` on a connection whose transaction gives one snapshot for the whole answer."""
        start = self._cursor(conn, after)
        query = (select(*EVENT_COLUMNS).where(self._after(start), self.readable())
                 .order_by(events.c.tx, events.c.position).limit(limit))
        if types:
            query = query.where(events.c.type.in_(list(types)))
        page = [stored_event(row) for row in conn.execute(query)]
        head = self.head(conn)
        if len(page) == limit:
            next_after = page[-1].position
        else:  # everything readable was scanned: continue from the high-water mark
            next_after = head.position if head.position else after
        return FeedPage(page, next_after, head)

    def head(self, conn: Connection | None = None) -> Mark:
        """The high-water mark: the last event a follower may read now (in the snapshot of ``conn``'s
        transaction, when given)."""
        if conn is None:
            with transaction(self.engine, isolation="REPEATABLE READ", write=False) as conn:
                return self.head(conn)
        row = conn.execute(select(events.c.position, events.c.recorded_at).where(self.readable())
                           .order_by(events.c.tx.desc(), events.c.position.desc()).limit(1)).first()
        return Mark(row.position, row.recorded_at) if row else Mark(0, None)

    def lag(self, conn: Connection, after: int) -> Lag:
        """How many committed events come after position ``after`` (whether the feed hands them out
        yet or an open transaction holds them back), and when the oldest was recorded."""
        after_mark = self._after(self._cursor(conn, after))
        count, held_back, oldest = conn.execute(
            select(func.count(), func.count().filter(~self.readable()), func.min(events.c.recorded_at))
            .where(after_mark)).one()
        return Lag(count, oldest, held_back)

    def oldest_open_writer(self, conn: Connection) -> dict | None:
        """On PostgreSQL, the open transaction that holds the feed back, if one does."""
        if self.sqlite:
            return None
        row = conn.execute(text(
            "SELECT pid, datname, state, xact_start FROM pg_stat_activity "
            "WHERE backend_xid IS NOT NULL AND backend_xid::text::bigint = "
            "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296) LIMIT 1")).first()
        if row is None:
            return None
        return {"pid": row.pid, "database": row.datname, "state": row.state,
                "started_at": row.xact_start.isoformat() if row.xact_start else None}

    def readable(self) -> ColumnElement[bool]:
        """The condition an event must meet to be handed out in the current snapshot."""
        if self.sqlite:
            return true()
        return events.c.tx < func.pg_snapshot_xmin(func.pg_current_snapshot())

    # -- the SQL --------------------------------------------------------------------------
    def _cursor(self, conn: Connection, after: int) -> tuple[int, int]:
        if after == 0:
            return _START
        row = conn.execute(select(self._tx_value(), self.readable()).where(events.c.position == after)).first()
        if row is None:
            raise UnknownPosition(after)
        if not row[1]:
            raise NotYetReadable(after)
        return int(row[0]), after

    def _tx_value(self):
        return events.c.tx if self.sqlite else cast(cast(events.c.tx, Text), BigInteger)

    def _key(self, start: tuple[int, int]):
        """Both sides of a comparison in the feed's order, for a (tx, position) cursor."""
        tx, position = start
        if self.sqlite:
            return events.c.position, literal(position)
        return tuple_(events.c.tx, events.c.position), tuple_(cast(literal(str(tx)), Xid8()), literal(position))

    def _after(self, start: tuple[int, int]) -> ColumnElement[bool]:
        column, cursor = self._key(start)
        return column > cursor

    def until(self, conn: Connection, position: int) -> ColumnElement[bool]:
        """The condition an event must meet to come at or before position ``position`` in the feed."""
        column, cursor = self._key(self._cursor(conn, position))
        return column <= cursor
