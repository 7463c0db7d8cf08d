"""The approval history: each record's approval rounds, and requests and answers across records."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Iterator

from sqlalchemy import Engine, and_, bindparam, func, select, tuple_

from service import cursors
from service.domain.approvals import APPROVAL_EVENT_TYPES, Round, approval_rounds
from service.events.event import EVENT_COLUMNS, StoredEvent, stored_event
from service.events.store import EventStore
from service.events.tables import UTCDateTime, case_studies, events
from service.times import iso

DECISION_TYPES = ("approval_requested", "approval_granted", "changes_requested")


def took_days(seconds: float | None) -> float | None:
    """Seconds as days, to two decimals."""
    return None if seconds is None else round(seconds / 86400, 2)


@dataclass(frozen=True)
class ApprovalRow:
    """One request or answer in the approval history across records."""

    event: StoredEvent
    csm: str | None
    account: dict | None
    round_number: int | None
    took_seconds: float | None

    CSV_COLUMNS = ("id", "account_id", "account_name", "csm", "round", "event", "roles", "approver", "comment",
                   "actor", "on_behalf_of", "occurred_at", "recorded_at", "took_days", "version", "event_id")

    def to_dict(self) -> dict[str, Any]:
        """The row as the API and the JSON lines export give it."""
        event = self.event
        requested = event.type == "approval_requested"
        return {
            "id": event.stream_id,
            "account": self.account,
            "csm": self.csm,
            "round": self.round_number,
            "event": {"approval_requested": "requested", "approval_granted": "granted"}.get(event.type, event.type),
            "roles": list(event.data["approvers"]) if requested else [event.data["role"]],
            "approver": event.data.get("approver"),
            "comment": event.data.get("comment"),
            "draft_url": event.data.get("draft_url"),
            "actor": event.actor,
            "on_behalf_of": event.on_behalf_of,
            "occurred_at": iso(event.occurred_at),
            "recorded_at": iso(event.recorded_at),
            "took_days": took_days(self.took_seconds),
            "version": event.version,
            "event_id": event.event_id,
        }

    @staticmethod
    def csv_cells(item: dict[str, Any]) -> list[Any]:
        """The cells of CSV_COLUMNS for a row given as ``to_dict`` gives it."""
        account = item["account"] or {}
        return [item["id"], account.get("id"), account.get("name"), item["csm"], item["round"], item["event"],
                " ".join(item["roles"]), item["approver"], item["comment"], item["actor"], item["on_behalf_of"],
                item["occurred_at"], item["recorded_at"], item["took_days"], item["version"], item["event_id"]]


class ApprovalHistory:
    """Approval rounds and decisions, read from the streams."""

    def __init__(self, engine: Engine, store: EventStore):
        self.engine = engine
        self.store = store

    # -- approval history ----------------------------------------------------------------
    def rounds(self, stream_id: str, *, as_of: datetime | None = None) -> list[Round] | None:
        """The record's approval rounds as recorded by ``as_of``; None when it did not exist then."""
        stream = self.store.load(stream_id, recorded_until=as_of)
        return approval_rounds(stream) if stream else None

    def page(self, *, start: datetime | None, end: datetime | None, csm: str | None = None,
                      role: str | None = None, limit: int = 100,
                      cursor: str | None = None) -> tuple[list[ApprovalRow], str | None]:
        """Requests and answers whose business time lies in [start, end), oldest first, one page."""
        after = _decode_cursor(cursor) if cursor else None
        rows: list[tuple[StoredEvent, Any, Any]] = []
        scanned_to = after
        while len(rows) <= limit:
            batch = self._decision_events(start, end, csm, scanned_to, max(limit * 2, 200))
            if not batch:
                break
            for event, row_csm, account in batch:
                scanned_to = (event.occurred_at, event.position)
                if role is None or role in _roles_of(event):
                    rows.append((event, row_csm, account))
                    if len(rows) > limit:
                        break
        more = len(rows) > limit
        rows = rows[:limit]
        context = self._round_context({event.stream_id for event, _, _ in rows})
        page = [ApprovalRow(event, row_csm, account, *context.get(event.event_id, (None, None)))
                for event, row_csm, account in rows]
        next_cursor = _encode_cursor(rows[-1][0].occurred_at, rows[-1][0].position) if more else None
        return page, next_cursor

    def count(self, *, start: datetime | None, end: datetime | None, csm: str | None) -> int:
        """How many requests and answers a period holds (before any role filter)."""
        query = (select(func.count()).select_from(events.join(case_studies, case_studies.c.id == events.c.stream_id))
                 .where(*self._period(start, end, csm)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def rows(self, **filters: Any) -> Iterator[ApprovalRow]:
        """Every row of a period, page by page (constant memory)."""
        cursor = None
        while True:
            page, cursor = self.page(**filters, limit=500, cursor=cursor)
            yield from page
            if cursor is None:
                return

    @staticmethod
    def _period(start, end, csm) -> list:
        conditions = [events.c.type.in_(DECISION_TYPES)]
        if start is not None:
            conditions.append(events.c.occurred_at >= start)
        if end is not None:
            conditions.append(events.c.occurred_at < end)
        if csm is not None:
            conditions.append(case_studies.c.csm == csm)
        return conditions

    def _decision_events(self, start, end, csm, after, limit: int) -> list[tuple[StoredEvent, Any, Any]]:
        conditions = self._period(start, end, csm)
        if after is not None:
            conditions.append(tuple_(events.c.occurred_at, events.c.position)
                              > tuple_(bindparam("after_at", after[0], type_=UTCDateTime),
                                       bindparam("after_position", after[1])))
        query = (select(*EVENT_COLUMNS, case_studies.c.csm, case_studies.c.account_id, case_studies.c.account_name)
                 .select_from(events.join(case_studies, case_studies.c.id == events.c.stream_id))
                 .where(and_(*conditions))
                 .order_by(events.c.occurred_at, events.c.position).limit(limit))
        width = len(EVENT_COLUMNS)
        with self.engine.connect() as conn:
            return [(stored_event(row[:width]), row[width],
                     {"id": row[width + 1], "name": row[width + 2]} if row[width + 1] else None)
                    for row in conn.execute(query)]

    def _round_context(self, stream_ids: set[str]) -> dict[str, tuple[int, float | None]]:
        """For each request or answer on these streams: its round number and how long the answer took."""
        if not stream_ids:
            return {}
        query = (select(*EVENT_COLUMNS)
                 .where(events.c.stream_id.in_(stream_ids), events.c.type.in_(APPROVAL_EVENT_TYPES))
                 .order_by(events.c.stream_id, events.c.version))
        with self.engine.connect() as conn:
            loaded = [stored_event(row) for row in conn.execute(query)]
        by_stream: dict[str, list[StoredEvent]] = {}
        for event in loaded:
            by_stream.setdefault(event.stream_id, []).append(event)
        context: dict[str, tuple[int, float | None]] = {}
        for stream in by_stream.values():
            for round_ in approval_rounds(stream):
                context[round_.requested.event_id] = (round_.number, None)
                for decision in round_.decisions:
                    context[decision.step.event_id] = (round_.number, decision.took_seconds)
        return context


def _roles_of(event: StoredEvent) -> list[str]:
    if event.type == "approval_requested":
        return list(event.data.get("approvers", ()))
    return [event.data.get("role")]


def _encode_cursor(occurred_at: datetime, position: int) -> str:
    return cursors.encode([occurred_at.isoformat(), position])


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    def parse(values: list) -> tuple[datetime, int]:
        occurred_at, position = datetime.fromisoformat(values[0]), values[1]
        if occurred_at.tzinfo is None or type(position) is not int or not 0 <= position < 2**63 or len(values) != 2:
            raise ValueError(values)
        return occurred_at.astimezone(UTC), position

    return cursors.decode(cursor, parse)
