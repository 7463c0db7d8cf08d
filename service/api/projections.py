"""Reporting: the pipeline, what is stuck, what blocks publication, cycle times, candidates,
and how far each projector has read."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response, request, url_for

from service.access.roles import PROJECTION_READERS
from service.api import params, services
from service.api import responses as doc
from service.api.auth import requires
from service.api.openapi import describe
from service.domain import STATUS_LABELS, STUCK_CODES
from service.domain.reporting import BLOCKER_CODES, STAGES
from service.projections.queries import Answer
from service.times import iso, utcnow

bp = Blueprint("projections", __name__)


def _csv(answer: Answer, header: list[str], rows, filename: str) -> Response:
    """A CSV answer; how far its projection had read goes in headers."""
    response = params.csv_response(header, rows, filename)
    response.headers["X-Projection"] = answer.projector
    response.headers["X-Projection-Position"] = str(answer.read_to.position)
    response.headers["X-Projection-Recorded-At"] = iso(answer.read_to.recorded_at) or ""
    return response


@bp.get("/projections/pipeline")
@describe(responses={200: doc.Pipeline}, csv=True)
@requires(*PROJECTION_READERS)
@params.accepts(params.FORMAT)
def pipeline(fmt):
    """Counts by status, and by CSM and status (JSON or CSV)."""
    as_csv = params.wants_csv(fmt)
    answer = services().projections.pipeline()
    counts = answer.value
    if as_csv:
        statuses = list(STATUS_LABELS)
        rows = [[csm, *(by[s] for s in statuses), sum(by.values())] for csm, by in counts["by_csm"].items()]
        rows.append(["(all)", *(counts["by_status"][s] for s in statuses), counts["total"]])
        return _csv(answer, ["csm", *statuses, "total"], rows, "pipeline.csv")
    return {**counts, "projection": answer.projection()}


BLOCKER_COLUMNS = ["id", "status", "csm", "account_name", "code", "subject", "reason", "since", "until", "days",
                   "details"]


def blocker_items(answer: Answer, reference: datetime) -> list[dict]:
    """Blocker rows as clients see them, with days blocked up to ``reference``."""
    return [{"id": row["id"], "status": row["status"], "csm": row["csm"], "account_name": row["account_name"],
             "code": row["code"], "subject": row["subject"] or None, "reason": row["reason"],
             "since": iso(row["since"]), "until": iso(row["until"]),
             "days": max(0, (min(row["until"] or reference, reference) - row["since"]).days), "details": row["details"]}
            for row in answer.value]


@bp.get("/projections/blockers")
@describe(responses={200: doc.Items}, csv=True)
@requires(*PROJECTION_READERS)
@params.accepts(params.FORMAT, params.AsOf("as_of", "what blocked publication then (business time)"), params.CSM,
                params.OneOf("code", "only blockers of this kind", BLOCKER_CODES),
                params.Number("limit", "blockers per page", default=1000, low=1, high=10_000), params.CURSOR)
def blockers(fmt, as_of, csm, code, limit: int, cursor):
    """What blocks publication, per record: now, or at business time ``as_of``."""
    as_csv = params.wants_csv(fmt)
    answer = services().projections.blockers(as_of=as_of, csm=csm, code=code, limit=limit, cursor=cursor)
    items = blocker_items(answer, as_of or utcnow())
    next_url = None
    if answer.next_cursor:
        given = {key: value for key, value in request.args.items() if key in ("as_of", "csm", "code", "format")}
        next_url = url_for("projections.blockers", **given, limit=limit, cursor=answer.next_cursor)
    if as_csv:
        response = _csv(answer, BLOCKER_COLUMNS, ([item[c] for c in BLOCKER_COLUMNS] for item in items),
                        "blockers.csv")
        if next_url:
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return response
    return {"as_of": iso(as_of), "count": len(items), "records": len({i["id"] for i in items}), "items": items,
            "next_cursor": answer.next_cursor, "next": next_url, "projection": answer.projection()}


@bp.get("/projections/cycle-times")
@describe(responses={200: doc.CycleTimes}, csv=True)
@requires(*PROJECTION_READERS)
@params.accepts(params.FORMAT, params.AsOf("from", "only stages that ended from then", date_is_start=True, arg="start"),
                params.AsOf("to", "only stages that ended by then", arg="end"), params.CSM)
def cycle_times(fmt, start, end, csm):
    """Days from commitment to each milestone and each approver role's answer time, per quarter."""
    as_csv = params.wants_csv(fmt)
    answer = services().projections.cycle_times(start=start, end=end, csm=csm)
    if as_csv:
        header = ["quarter", "kind", "name", "count", "median_days", "p90_days"]
        rows = []
        for quarter in [*answer.value["quarters"], {"quarter": "(all)", **answer.value["overall"]}]:
            for kind, group in (("stage", "stages"), ("approver_role", "approver_roles")):
                for name, figures in quarter[group].items():
                    rows.append([quarter["quarter"], kind, name, figures["count"], figures["median_days"],
                                 figures["p90_days"]])
        return _csv(answer, header, rows, "cycle-times.csv")
    return {"stages": {stage: f"days from committed to the first {event}" for stage, event in STAGES.items()},
            **answer.value, "projection": answer.projection()}


CANDIDATE_COLUMNS = ["id", "status", "csm", "account_name", "kpi_improvement_pct", "best_metric", "nps",
                     "candidate_since"]


@bp.get("/projections/candidates")
@describe(responses={200: doc.Items}, csv=True)
@requires(*PROJECTION_READERS)
@params.accepts(params.FORMAT, params.AsOf("since", "only records that became candidates from then",
                                           date_is_start=True), params.CSM)
def candidates(fmt, since, csm):
    """Records that meet the candidate rule (KPI improvement and NPS), newest candidates first."""
    as_csv = params.wants_csv(fmt)
    answer = services().projections.candidates(since=since, csm=csm)
    items = [{column: iso(row[column]) if column == "candidate_since" else row[column]
              for column in CANDIDATE_COLUMNS} for row in answer.value]
    if as_csv:
        return _csv(answer, CANDIDATE_COLUMNS, ([i[c] for c in CANDIDATE_COLUMNS] for i in items),
                    "candidates.csv")
    return {"kpi_improvement_threshold_pct": services().settings.candidate_kpi_improvement_pct, "count": len(items),
            "items": items, "projection": answer.projection()}


STATUS_COLUMNS = ["name", "generation", "position", "recorded_at", "lag_events", "lag_seconds", "failing",
                  "last_error", "last_error_position", "last_error_at"]


@bp.get("/projections/status")
@describe(responses={200: doc.ProjectorStatus}, csv=True)
@requires(*PROJECTION_READERS)
@params.accepts(params.FORMAT)
def status(fmt):
    """Each projector's checkpoint, its lag behind the feed in events and seconds, and its last error."""
    as_csv = params.wants_csv(fmt)
    status = services().runner.status()
    if as_csv:
        rows = [[p["name"], p["generation"], p["checkpoint"]["position"], p["checkpoint"]["recorded_at"],
                 p["lag_events"], p["lag_seconds"], p["failing"],
                 *((p["last_error"]["message"], p["last_error"]["position"], p["last_error"]["at"])
                   if p["last_error"] else (None, None, None))] for p in status["projectors"]]
        return params.csv_response(STATUS_COLUMNS, rows, "projections-status.csv")
    return status


@bp.get("/projections/stuck")
@describe(responses={200: doc.Items}, csv=True, errors=("stream_corrupt",))
@requires(*PROJECTION_READERS)
@params.accepts(params.FORMAT, params.AsOf("as_of", "the reference time (default now; a past one replays the store)"),
                params.CSM, params.OneOf("code", "only findings of this rule", STUCK_CODES))
def stuck(fmt, as_of, csm, code):
    """Stuck records at ``as_of`` (default now), each with a code, a reason and the details."""
    as_csv = params.wants_csv(fmt)
    now = utcnow()
    as_of = as_of or now
    rows = services().stuck.find(as_of=as_of, now=now, csm=csm, code=code)
    items = [{
        "id": row.record.id,
        "status": row.record.state,
        "csm": row.record.csm,
        "account": row.record.account,
        "code": row.finding.code,
        "reason": row.finding.reason,
        "since": row.finding.since.isoformat(),
        "days": row.finding.days,
        "details": row.finding.details,
    } for row in rows]
    if as_csv:
        header = ["id", "status", "csm", "account_id", "account_name", "code", "reason", "since", "days",
                  "details"]
        return params.csv_response(header, ([i["id"], i["status"], i["csm"], i["account"]["id"],
                                             i["account"]["name"], i["code"], i["reason"], i["since"],
                                             i["days"], i["details"]] for i in items), "stuck.csv")
    return {"as_of": as_of.isoformat(), "count": len(items), "items": items}
