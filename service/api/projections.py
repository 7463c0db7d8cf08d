"""Reporting: the pipeline by status and CSM, and the stuck list of the weekly review."""
from __future__ import annotations

from flask import Blueprint

from service.api import params, services
from service.api.auth import PROJECTION_READERS, requires
from service.domain import STATUS_LABELS, STUCK_CODES
from service.events.tables import utcnow

bp = Blueprint("projections", __name__)


@bp.get("/projections/pipeline")
@requires(*PROJECTION_READERS)
def pipeline():
    """Counts by status, and by CSM and status (JSON or CSV)."""
    as_csv = params.wants_csv()
    counts = services().projections.pipeline()
    if as_csv:
        statuses = list(STATUS_LABELS)
        rows = [[csm or "", *(by[s] for s in statuses), sum(by.values())]
                for csm, by in counts["by_csm"].items()]
        rows.append(["(all)", *(counts["by_status"][s] for s in statuses), counts["total"]])
        return params.csv_response(["csm", *statuses, "total"], rows, "pipeline.csv")
    return counts


@bp.get("/projections/stuck")
@requires(*PROJECTION_READERS)
def stuck():
    """Stuck records at ``as_of`` (default now), each with a code, a reason and the details."""
    as_csv = params.wants_csv()
    as_of = params.as_of()
    now = utcnow()
    as_of = as_of or now
    rows = services().projections.stuck(as_of=as_of, now=now, csm=params.text("csm"),
                                         code=params.choice("code", STUCK_CODES))
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
