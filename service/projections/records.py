"""The record list, read from the state table: the projection the store keeps in each append's write."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, or_, select

from service import cursors
from service.domain import CaseStudy
from service.events.schemas import is_valid_stream_id
from service.events.tables import case_studies


def _last_id(values: list) -> str:
    (last_id,) = values
    if not isinstance(last_id, str) or not is_valid_stream_id(last_id):
        raise ValueError(values)
    return last_id


def decode_record_cursor(cursor: str) -> str:
    """The id a record-list page ends with, from its cursor (ValueError if it is not one)."""
    return cursors.decode(cursor, _last_id)


@dataclass(frozen=True)
class Page:
    records: list[CaseStudy]
    next_cursor: str | None


@dataclass(frozen=True)
class Column:
    """One status of the board: how many records are in it, and those longest in it first."""

    status: str
    count: int
    records: list[CaseStudy]


def _filtered(query, csm: str | None, account: str | None):
    if csm:
        query = query.where(case_studies.c.csm == csm)
    if account:
        query = query.where(or_(case_studies.c.account_id == account, case_studies.c.account_name == account))
    return query


class Records:
    """The record list, from the state table (always current)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def board(self, statuses: list[str], *, csm: str | None = None, account: str | None = None,
              per_status: int = 10) -> list[Column]:
        """Each status's count and its ``per_status`` records longest in it, filtered; one snapshot."""
        table = case_studies
        with self.engine.connect() as conn:
            counts = dict(conn.execute(_filtered(select(table.c.status, func.count()).group_by(table.c.status),
                                                 csm, account)).all())
            columns = []
            for status in statuses:
                query = _filtered(select(table.c.state).where(table.c.status == status), csm, account)
                rows = conn.execute(query.order_by(table.c.entered_status_at, table.c.id).limit(per_status))
                columns.append(Column(status, counts.get(status, 0), [CaseStudy.from_dict(r.state) for r in rows]))
        return columns

    def page(self, *, status: str | None = None, csm: str | None = None,
             account: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """Records ordered by id, filtered, one page at a time (keyset pagination)."""
        query = select(case_studies.c.state).order_by(case_studies.c.id).limit(limit + 1)
        if status:
            query = query.where(case_studies.c.status == status)
        query = _filtered(query, csm, account)
        if cursor:
            query = query.where(case_studies.c.id > decode_record_cursor(cursor))
        with self.engine.connect() as conn:
            records = [CaseStudy.from_dict(row.state) for row in conn.execute(query)]
        more = len(records) > limit
        records = records[:limit]
        return Page(records, cursors.encode([records[-1].id]) if more else None)
