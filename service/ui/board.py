"""The pipeline board, the record list and the life cycle."""
from __future__ import annotations

from datetime import datetime

from flask import request, url_for

from service.access.roles import PROJECTION_READERS, RECORD_READERS
from service.api import services
from service.domain import STATUS_LABELS, CaseStudy, stuck_findings
from service.domain.machine import mermaid, table
from service.times import utcnow
from service.ui import web
from service.ui.web import bp, page, render

CARDS_PER_STATUS = 10
RECORDS_PAGE = 50


def card(record: CaseStudy, reference: datetime) -> dict:
    """What a board card or a list row shows of a record at ``reference``."""
    settings = services().settings
    entered = record.entered_status_at
    return {"id": record.id, "customer": (record.account or {}).get("name"), "csm": record.csm,
            "status": record.state, "days_in_status": max(0, (reference - entered).days) if entered else None,
            "stuck": [finding.code for finding in stuck_findings(record, reference, settings.stuck)]}


def _filters() -> dict:
    return {"csm": web.text("csm"), "account": web.text("account")}


@bp.get("/board")
@page(*PROJECTION_READERS)
def board():
    """One column per status: its count and the records longest in it, now or as known at a past time."""
    filters, as_of = _filters(), web.moment()
    now = utcnow()
    statuses = list(STATUS_LABELS)
    if as_of is None or as_of >= now:
        reference = now
        columns = [{"status": column.status, "count": column.count,
                    "cards": [card(record, now) for record in column.records]}
                   for column in services().records.board(statuses, **filters, per_status=CARDS_PER_STATUS)]
        position = None
    else:
        reference = as_of
        columns, position = _board_as_of(statuses, filters, as_of)
    raw_as_of = request.args.get("as_of") or ""
    csv = url_for("ui.board_csv", **({"as_of": raw_as_of} if raw_as_of else {}))
    return render("board.html", columns=columns, labels=STATUS_LABELS, filters=filters,
                  as_of=raw_as_of, reference=reference, csv=csv,
                  position=position, total=sum(column["count"] for column in columns),
                  more=CARDS_PER_STATUS)


def _board_as_of(statuses: list[str], filters: dict, as_of: datetime) -> tuple[list[dict], int]:
    """The board as known at ``as_of``: counts and ids from the projections' history, each card a
    replay of what had been recorded by then (the first records by id, longest in status first)."""
    wired = services()
    with wired.projections.view(as_of=as_of) as view:
        counts = view.status_counts(**filters)
        pages = {status: view.record_ids(status=status, **filters, limit=CARDS_PER_STATUS).value
                 for status in statuses}
    records = {record.id: record for record in
               wired.store.records_as_of([i for ids in pages.values() for i in ids], as_of)}
    columns = []
    for status in statuses:
        cards = [card(records[i], as_of) for i in pages[status] if i in records]
        cards.sort(key=lambda c: -(c["days_in_status"] or 0))
        columns.append({"status": status, "count": counts.value.get(status, 0), "cards": cards})
    return columns, counts.read_to.position


@bp.get("/records")
@page(*RECORD_READERS)
def records():
    """Every record, filtered by status, CSM and account, a page at a time."""
    filters = {"status": web.choice("status", STATUS_LABELS), **_filters()}
    limit = web.number("limit", RECORDS_PAGE, 1, 200)
    found = services().records.page(**filters, limit=limit, cursor=web.cursor())
    now = utcnow()
    rows = [card(record, now) for record in found.records]
    pages = web.page_links("ui.records", found.next_cursor, **filters, limit=limit)
    return render("records.html", rows=rows, filters=filters, labels=STATUS_LABELS, pages=pages)


@bp.get("/life-cycle")
@page(*RECORD_READERS)
def life_cycle():
    """The state diagram as the machine draws it, and its table of transitions."""
    return render("life_cycle.html", diagram=mermaid(web.choice("status", STATUS_LABELS)), rows=table(),
                  labels=STATUS_LABELS)
