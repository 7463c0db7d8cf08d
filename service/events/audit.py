"""What auditors ask of the store: approval histories, chain checks, and digests kept outside."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable, Iterator

from sqlalchemy import Engine, and_, bindparam, func, select, tuple_

from service import cursors
from service.domain.approvals import APPROVAL_EVENT_TYPES, Round, approval_rounds
from service.events.integrity import FORMAT as CHAIN_FORMAT
from service.events.integrity import ChainCheck, canonical_json, canonical_time, check_chain
from service.events.schemas import is_valid_stream_id
from service.events.store import EVENT_COLUMNS, EventStore, StoredEvent, stored_event
from service.events.tables import UTCDateTime, case_studies, events
from service.times import utcnow

DIGEST_FORMAT = "casestudies-digest/1"
DECISION_TYPES = ("approval_requested", "approval_granted", "changes_requested")


class DigestError(ValueError):
    """A digest file that cannot be used: not ours, or altered since it was written."""


@dataclass(frozen=True)
class DigestFinding:
    """One stream whose stored history no longer matches what a digest recorded."""

    stream_id: str
    problem: str
    version: int | None = None
    expected_hash: str | None = None
    found_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.stream_id, "problem": self.problem, "version": self.version,
                "expected_hash": self.expected_hash, "found_hash": self.found_hash}


@dataclass(frozen=True)
class ApprovalRow:
    """One request or answer in the approval history across records."""

    event: StoredEvent
    csm: str | None
    account: dict | None
    round_number: int | None
    took_seconds: float | None


class Audit:
    """Approval history, chain verification and digests over one store."""

    def __init__(self, engine: Engine, store: EventStore):
        self.engine = engine
        self.store = store

    # -- approval history ----------------------------------------------------------------
    def rounds(self, stream_id: str, *, as_of: datetime | None = None) -> list[Round] | None:
        """The record's approval rounds as recorded by ``as_of``; None when it did not exist then."""
        stream = self.store.load(stream_id, recorded_until=as_of)
        return approval_rounds(stream) if stream else None

    def approval_rows(self, *, start: datetime | None, end: datetime | None, csm: str | None = None,
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

    def count_approval_rows(self, *, start: datetime | None, end: datetime | None, csm: str | None) -> int:
        """How many requests and answers a period holds (before any role filter)."""
        query = (select(func.count()).select_from(events.join(case_studies, case_studies.c.id == events.c.stream_id))
                 .where(*self._period(start, end, csm)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def iter_approval_rows(self, **filters: Any) -> Iterator[ApprovalRow]:
        """Every row of a period, page by page (constant memory)."""
        cursor = None
        while True:
            page, cursor = self.approval_rows(**filters, limit=500, cursor=cursor)
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

    # -- chains --------------------------------------------------------------------------
    def verify(self, stream_id: str) -> ChainCheck | None:
        """Recompute one stream's chain and hold its head against the state table's."""
        heads = self._state_heads(stream_id)
        stream = self.store.load(stream_id)
        if not stream and stream_id not in heads:
            return None
        return _against_state(check_chain(stream_id, stream), heads.get(stream_id))

    def verify_all(self, *, progress: Callable[[int], None] | None = None) -> Iterator[ChainCheck]:
        """Recompute every stream's chain, one stream at a time (``progress`` gets events done), and
        hold each head against the state table's; a record whose events are all gone is reported too."""
        heads = self._state_heads()
        for stream_id, stream in self.store.streams():
            yield _against_state(check_chain(stream_id, stream), heads.pop(stream_id, None))
            if progress:
                progress(len(stream))
        for stream_id, (version, head) in sorted(heads.items()):
            yield _against_state(check_chain(stream_id, []), (version, head))

    def event_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(events)).scalar_one()

    def _state_heads(self, stream_id: str | None = None) -> dict[str, tuple[int, str]]:
        """The state table's version and head hash, by record (all records, or one)."""
        query = select(case_studies.c.id, case_studies.c.version, case_studies.c.head_hash)
        if stream_id is not None:
            query = query.where(case_studies.c.id == stream_id)
        with self.engine.connect() as conn:
            return {row.id: (row.version, row.head_hash) for row in conn.execute(query)}

    # -- digests -------------------------------------------------------------------------
    def digest(self, *, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """The verified head of every stream, for an auditor to keep outside the system.

        Raises DigestError when a chain is already broken: a digest vouches only for history
        that checks out.
        """
        heads, broken, total = [], [], 0
        for check in self.verify_all(progress=progress):
            total += check.events
            if not check.intact:
                broken.append(check)
            heads.append({"id": check.stream_id, "version": check.version, "head_hash": check.head_hash})
        if broken:
            raise DigestError("chains are broken, so no digest was written: " + ", ".join(
                f"{c.stream_id} at version {c.broken_version}" for c in broken[:10]))
        body = {"format": DIGEST_FORMAT, "chain_format": CHAIN_FORMAT, "created_at": canonical_time(utcnow()),
                "stream_count": len(heads), "event_count": total, "streams": heads}
        return {**body, "sha256": _sha256(body)}

    def check_digest(self, document: dict[str, Any], *,
                     progress: Callable[[int], None] | None = None) -> tuple[list[DigestFinding], int]:
        """Streams whose history no longer leads to the head a digest recorded, and how many streams
        were checked. Raises DigestError for a file that is not a digest or was altered."""
        if not isinstance(document, dict) or document.get("format") != DIGEST_FORMAT:
            raise DigestError(f"not a {DIGEST_FORMAT} file")
        body = {key: value for key, value in document.items() if key != "sha256"}
        try:
            altered = document.get("sha256") != _sha256(body)
        except (TypeError, ValueError):
            altered = True
        if altered:
            raise DigestError("the digest file was altered after it was written (its sha256 does not match)")
        _check_shape(document)
        findings: list[DigestFinding] = []
        for head in document["streams"]:
            stream = self.store.load(head["id"], to_version=head["version"])
            if progress:
                progress(len(stream))
            if not stream:
                findings.append(DigestFinding(head["id"], "the stream is missing", head["version"],
                                              head["head_hash"], None))
                continue
            check = check_chain(head["id"], stream)
            if not check.intact:
                findings.append(DigestFinding(head["id"], f"chain broken: {check.problem}", check.broken_version,
                                              check.expected_hash, check.found_hash))
            elif check.version < head["version"]:
                findings.append(DigestFinding(head["id"], "events are missing", head["version"], head["head_hash"],
                                              None))
            elif check.head_hash != head["head_hash"]:
                findings.append(DigestFinding(head["id"], "history was rewritten since the digest", head["version"],
                                              head["head_hash"], check.head_hash))
        return findings, len(document["streams"])


def _against_state(check: ChainCheck, state: tuple[int, str] | None) -> ChainCheck:
    """A chain that checks out must also end where the state table says the record is."""
    if not check.intact or state is None:
        return check
    version, head = state
    if version != check.version:
        return ChainCheck(check.stream_id, False, check.events, check.version, check.head_hash, check.version + 1,
                          f"events are missing: the record is at version {version}, the stream ends at "
                          f"{check.version}", head, check.head_hash)
    if head != check.head_hash:
        return ChainCheck(check.stream_id, False, check.events, check.version, check.head_hash, check.version,
                          "the state table's head hash differs from the chain's", check.head_hash, head)
    return check


def _sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _check_shape(document: dict[str, Any]) -> None:
    """Refuse a digest whose sha256 checks out but whose content is not what ``digest`` writes."""
    streams = document.get("streams")
    ok = (isinstance(streams, list) and isinstance(document.get("created_at"), str)
          and type(document.get("event_count")) is int and all(_is_head(head) for head in streams))
    if not ok:
        raise DigestError(f"not a {DIGEST_FORMAT} file: its streams, versions or hashes are malformed")


def _is_head(head: Any) -> bool:
    return (isinstance(head, dict) and isinstance(head.get("id"), str) and is_valid_stream_id(head["id"])
            and type(head.get("version")) is int and 1 <= head["version"] < 2**31
            and isinstance(head.get("head_hash"), str) and len(head["head_hash"]) == 64)


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
