"""The record list, read from the state table: the projection the store keeps in each append's write."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, or_, select

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


class Records:
    """The record list, from the state table (always current)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def page(self, *, status: str | None = None, csm: str | None = None,
             account: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """Records ordered by id, filtered, one page at a time (keyset pagination)."""
        query = select(case_studies.c.state).order_by(case_studies.c.id).limit(limit + 1)
        if status:
            query = query.where(case_studies.c.status == status)
        if csm:
            query = query.where(case_studies.c.csm == csm)
        if account:
            query = query.where(or_(case_studies.c.account_id == account,
                                    case_studies.c.account_name == account))
        if cursor:
            query = query.where(case_studies.c.id > decode_record_cursor(cursor))
        with self.engine.connect() as conn:
            records = [CaseStudy.from_dict(row.state) for row in conn.execute(query)]
        more = len(records) > limit
        records = records[:limit]
        return Page(records, cursors.encode([records[-1].id]) if more else None)
