"""Reporting: the pipeline, what is stuck, what blocks publication, cycle times, candidates, and
how far the projections have read.

Every answer says which position of the feed it reflects (``projection``, or the X-Projection
headers of CSV), and ``as_of`` asks what was known at a past time. ``min_position`` (a position
an append was answered with) waits, briefly, until the projections have read it.
"""
from __future__ import annotations

import io
import sys
from typing import Iterator

from flask import Blueprint, Response, request, stream_with_context, url_for

from service.access.roles import PROJECTION_READERS
from service.api import params, services
from service.api import responses as doc
from service.api.auth import requires
from service.api.limits import costly
from service.api.openapi import describe
from service.domain import STATUS_LABELS, STUCK_CODES
from service.domain.reporting import BLOCKER_CODES, STAGES
from service.projections.queries import Answer, StuckItem, View
from service.spreadsheets import write_csv
from service.times import iso

bp = Blueprint("projections", __name__)

AS_OF, MIN_POSITION = params.AS_OF, params.MIN_POSITION


def _view(as_of=None, min_position: int = 0):
    return services().projections.view(as_of=as_of, min_position=min_position or None)


def _csv(answer: Answer, header: list[str], rows, filename: str) -> Response:
    """A CSV answer; how far the projections had read goes in headers."""
    response = params.csv_response(header, rows, filename)
    return _marked(response, answer)


def _marked(response: Response, answer: Answer) -> Response:
    response.headers["X-Projection"] = "projections"
    response.headers["X-Projection-Position"] = str(answer.read_to.position)
    response.headers["X-Projection-Recorded-At"] = iso(answer.read_to.recorded_at) or ""
    return response


def _next(endpoint: str, keep: tuple[str, ...], **values) -> str:
    given = {key: value for key, value in request.args.items() if key in keep}
    return url_for(endpoint, **given, **values)


@bp.get("/projections/pipeline")
@describe(responses={200: doc.Pipeline}, csv=True, errors=("projection_behind", "unknown_position"))
@requires(*PROJECTION_READERS)
@costly
@params.accepts(params.FORMAT, AS_OF, MIN_POSITION)
def pipeline(fmt, as_of, min_position):
    """Counts by status, and by CSM and status (JSON or CSV)."""
    with _view(as_of, min_position) as view:
        answer = view.pipeline()
    if params.wants_csv(fmt):
        return pipeline_csv(answer)
    return {**answer.value, "as_of": iso(as_of), "projection": answer.projection()}


def pipeline_csv(answer: Answer) -> Response:
    """The pipeline's counts as CSV: a row per CSM, and the total."""
    counts, statuses = answer.value, list(STATUS_LABELS)
    rows = [[csm, *(by[s] for s in statuses), sum(by.values())] for csm, by in counts["by_csm"].items()]
    rows.append(["(all)", *(counts["by_status"][s] for s in statuses), counts["total"]])
    return _csv(answer, ["csm", *statuses, "total"], rows, "pipeline.csv")


BLOCKER_COLUMNS = ["id", "status", "csm", "account_name", "code", "subject", "reason", "since", "days", "details"]


def blocker_items(view: View, rows: list[dict]) -> list[dict]:
    """Blocker rows as clients see them, with the days blocked up to the view's reference time."""
    return [{"id": row["id"], "status": row["status"], "csm": row["csm"], "account_name": row["account_name"],
             "code": row["code"], "subject": row["subject"] or None, "reason": row["reason"],
             "since": iso(row["since"]), "days": max(0, (view.reference - row["since"]).days), "details": row["details"]}
            for row in rows]


@bp.get("/projections/blockers")
@describe(responses={200: doc.Items}, csv=True, errors=("projection_behind", "unknown_position"))
@requires(*PROJECTION_READERS)
@costly
@params.accepts(params.FORMAT, AS_OF, params.CSM, params.OneOf("code", "only blockers of this kind", BLOCKER_CODES),
                params.Number("limit", "blockers per page", default=1000, low=1, high=10_000), params.CURSOR,
                MIN_POSITION)
def blockers(fmt, as_of, csm, code, limit: int, cursor, min_position):
    """What blocks publication, per record, now or as known at ``as_of``; paged by ``cursor``."""
    with _view(as_of, min_position) as view:
        answer = view.blockers(csm=csm, code=code, limit=limit, cursor=cursor)
        items = blocker_items(view, answer.value)
    next_url = (_next("projections.blockers", ("as_of", "csm", "code", "format"), limit=limit,
                      cursor=answer.next_cursor) if answer.next_cursor else None)
    if params.wants_csv(fmt):
        response = blockers_csv(answer, items)
        if next_url:
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return response
    return {"as_of": iso(as_of), "count": len(items), "records": len({i["id"] for i in items}), "items": items,
            "next_cursor": answer.next_cursor, "next": next_url, "projection": answer.projection()}


def blockers_csv(answer: Answer, items: list[dict]) -> Response:
    return _csv(answer, BLOCKER_COLUMNS, ([item[c] for c in BLOCKER_COLUMNS] for item in items), "blockers.csv")


@bp.get("/projections/cycle-times")
@describe(responses={200: doc.CycleTimes}, csv=True, errors=("projection_behind", "unknown_position"))
@requires(*PROJECTION_READERS)
@costly
@params.accepts(params.FORMAT, params.AsOf("from", "only stages that ended from then", date_is_start=True, arg="start"),
                params.AsOf("to", "only stages that ended by then", arg="end"), params.CSM, AS_OF, MIN_POSITION)
def cycle_times(fmt, start, end, csm, as_of, min_position):
    """Days from commitment to each milestone and each approver role's answer time, per quarter."""
    with _view(as_of, min_position) as view:
        answer = view.cycle_times(start=start, end=end, csm=csm)
    if params.wants_csv(fmt):
        return cycle_times_csv(answer)
    return {"stages": {stage: f"days from committed to the first {event}" for stage, event in STAGES.items()},
            **answer.value, "projection": answer.projection()}


def cycle_times_csv(answer: Answer) -> Response:
    """Cycle times as CSV: a row per quarter (and "(all)"), kind and name."""
    header = ["quarter", "kind", "name", "count", "median_days", "p90_days"]
    rows = []
    for quarter in [*answer.value["quarters"], {"quarter": "(all)", **answer.value["overall"]}]:
        for kind, group in (("stage", "stages"), ("approver_role", "approver_roles")):
            for name, figures in quarter[group].items():
                rows.append([quarter["quarter"], kind, name, figures["count"], figures["median_days"],
                             figures["p90_days"]])
    return _csv(answer, header, rows, "cycle-times.csv")


CANDIDATE_COLUMNS = ["id", "status", "csm", "account_name", "kpi_improvement_pct", "best_metric", "nps",
                     "candidate_since"]


@bp.get("/projections/candidates")
@describe(responses={200: doc.Items}, csv=True, errors=("projection_behind", "unknown_position"))
@requires(*PROJECTION_READERS)
@costly
@params.accepts(params.FORMAT, params.AsOf("since", "only records that became candidates from then",
                                           date_is_start=True), params.CSM, AS_OF, MIN_POSITION)
def candidates(fmt, since, csm, as_of, min_position):
    """Records that meet the candidate rule (KPI improvement and NPS), newest candidates first."""
    with _view(as_of, min_position) as view:
        answer = view.candidates(since=since, csm=csm)
    items = candidate_items(answer)
    if params.wants_csv(fmt):
        return candidates_csv(answer, items)
    return {"kpi_improvement_threshold_pct": services().settings.candidate_kpi_improvement_pct, "count": len(items),
            "items": items, "projection": answer.projection()}


def candidate_items(answer: Answer) -> list[dict]:
    return [{column: iso(row[column]) if column == "candidate_since" else row[column]
             for column in CANDIDATE_COLUMNS} for row in answer.value]


def candidates_csv(answer: Answer, items: list[dict]) -> Response:
    return _csv(answer, CANDIDATE_COLUMNS, ([i[c] for c in CANDIDATE_COLUMNS] for i in items), "candidates.csv")


STATUS_COLUMNS = ["name", "generation", "position", "recorded_at", "lag_events", "lag_seconds", "failing",
                  "last_error", "last_error_position", "last_error_at"]


@bp.get("/projections/status")
@describe(responses={200: doc.ProjectorStatus}, csv=True)
@requires(*PROJECTION_READERS)
@params.accepts(params.FORMAT)
def status(fmt):
    """How far the projections have read, their lag behind the feed in events and seconds, and the last error."""
    status = services().runner.status()
    if params.wants_csv(fmt):
        rows = [[p["name"], p["generation"], p["checkpoint"]["position"], p["checkpoint"]["recorded_at"],
                 p["lag_events"], p["lag_seconds"], p["failing"],
                 *((p["last_error"]["message"], p["last_error"]["position"], p["last_error"]["at"])
                   if p["last_error"] else (None, None, None))] for p in status["projectors"]]
        return params.csv_response(STATUS_COLUMNS, rows, "projections-status.csv")
    return status


STUCK_COLUMNS = ["id", "status", "csm", "account_id", "account_name", "code", "reason", "since", "days", "details"]
CSV_PAGE = 1000


def stuck_item(item: StuckItem) -> dict:
    return {"id": item.id, "status": item.status, "csm": item.csm, "account": item.account,
            "code": item.finding.code, "reason": item.finding.reason, "since": item.finding.since.isoformat(),
            "days": item.finding.days, "details": item.finding.details}


def _stuck_cells(item: dict) -> list:
    account = item["account"] or {}
    return [item["id"], item["status"], item["csm"], account.get("id"), account.get("name"), item["code"],
            item["reason"], item["since"], item["days"], item["details"]]


@bp.get("/projections/stuck")
@describe(responses={200: doc.Items}, csv=True, errors=("projection_behind", "unknown_position"))
@requires(*PROJECTION_READERS)
@costly
@params.accepts(params.FORMAT, params.AsOf("as_of", "the reference time: default now; a past time answers as "
                                                    "known then"),
                params.CSM, params.OneOf("code", "only findings of this rule", STUCK_CODES),
                params.OneOf("status", "only records in this status", list(STATUS_LABELS)),
                params.Number("limit", "findings per page (JSON)", default=100, low=1, high=1000), params.CURSOR,
                MIN_POSITION)
def stuck(fmt, as_of, csm, code, status, limit: int, cursor, min_position):
    """Stuck records at ``as_of`` (default now), each with a code, a reason and the details; paged by
    ``cursor`` (CSV: every row, streamed)."""
    filters = {"csm": csm, "code": code, "status": status}
    if params.wants_csv(fmt):
        return stuck_csv(as_of, filters, cursor, min_position)
    with _view(as_of, min_position) as view:
        answer = view.stuck(**filters, limit=limit, cursor=cursor)
        reference = view.reference
    items = [stuck_item(item) for item in answer.value]
    next_url = (_next("projections.stuck", ("as_of", "csm", "code", "status"), limit=limit,
                      cursor=answer.next_cursor) if answer.next_cursor else None)
    return {"as_of": reference.isoformat(), "count": len(items), "items": items, "next_cursor": answer.next_cursor,
            "next": next_url, "projection": answer.projection()}


def stuck_csv(as_of, filters: dict, cursor=None, min_position=0) -> Response:
    """Every stuck row from ``cursor`` on, written page by page as the client reads (one snapshot)."""
    projections = services().projections
    opened = projections.view(as_of=as_of, min_position=min_position or None)
    view = opened.__enter__()  # held until the last page is written (or the client goes)
    try:
        first = view.stuck(**filters, limit=CSV_PAGE, cursor=cursor)
    except BaseException:
        opened.__exit__(*sys.exc_info())
        raise

    def rows() -> Iterator[str]:
        try:
            page = first
            yield _lines(STUCK_COLUMNS, [])
            while True:
                yield _lines(None, [_stuck_cells(stuck_item(item)) for item in page.value])
                if page.next_cursor is None:
                    return
                page = view.stuck(**filters, limit=CSV_PAGE, cursor=page.next_cursor)
        finally:
            opened.__exit__(None, None, None)

    response = Response(stream_with_context(rows()), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="stuck.csv"'
    return _marked(response, first)


def _lines(header, rows) -> str:
    out = io.StringIO()
    write_csv(out, header, rows)
    return out.getvalue()
