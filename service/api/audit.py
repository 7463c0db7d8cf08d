"""For auditors: approval history per record and across records, and integrity checks."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, request, url_for

from service.access.roles import AUDITORS
from service.api import params, services
from service.api import responses as doc
from service.api.auth import requires
from service.api.case_studies import checked_stream_id
from service.api.openapi import describe
from service.api.problems import Problem
from service.audit.approvals import ApprovalRow, took_days
from service.domain import APPROVER_ROLES
from service.domain.approvals import Round, Step
from service.times import iso, utcnow

bp = Blueprint("audit", __name__)

def _step(step: Step | None) -> dict | None:
    if step is None:
        return None
    return {"version": step.version, "event_id": step.event_id, "actor": step.actor,
            "on_behalf_of": step.on_behalf_of, "occurred_at": iso(step.occurred_at),
            "recorded_at": iso(step.recorded_at)}


def round_json(round_: Round, reference: datetime) -> dict:
    """One approval round: the request, each answer and how long it took, how the round ended."""
    waiting = took_days((reference - round_.requested.occurred_at).total_seconds())
    return {
        "round": round_.number,
        "approvers": round_.approvers,
        "draft_url": round_.draft_url,
        "requested": _step(round_.requested),
        "decisions": [{"role": d.role, "decision": d.decision, "approver": d.approver, "comment": d.comment,
                       **_step(d.step), "took_days": took_days(d.took_seconds)} for d in round_.decisions],
        "pending": [{"role": role, "waiting_days": waiting} for role in round_.pending()]
        if round_.outcome in ("open", "held") else [],
        "outcome": round_.outcome,
        "ended": _step(round_.ended),
        "holds": [{"reason": hold["reason"], "held": _step(hold["held"]), "resumed": _step(hold["resumed"])}
                  for hold in round_.holds],
    }


@bp.get("/case-studies/<stream_id>/approvals")
@describe(responses={200: doc.Approvals}, errors=("invalid_event", "not_found"), tag="audit")
@requires(*AUDITORS)
@params.accepts(params.AsOf("as_of", "the rounds as recorded by then"))
def approvals(stream_id: str, as_of):
    """Every approval round of one record, as recorded by ``as_of`` (default now)."""
    checked_stream_id(stream_id)
    rounds = services().approvals.rounds(stream_id, as_of=as_of)
    if rounds is None:
        raise Problem("not_found", f"no case study with id {stream_id!r}"
                      + (f" had been recorded by {as_of.isoformat()}" if as_of else ""), id=stream_id)
    reference = as_of or utcnow()
    return {"id": stream_id, "as_of": iso(as_of), "rounds": [round_json(r, reference) for r in rounds]}


@bp.get("/case-studies/<stream_id>/verify")
@describe(responses={200: doc.ChainVerdict}, errors=("invalid_event", "not_found"), tag="audit")
@requires(*AUDITORS)
def verify(stream_id: str):
    """Recompute the record's hash chain: "intact" with the head hash, or the first broken link."""
    checked_stream_id(stream_id)
    check = services().verification.verify(stream_id)
    if check is None:
        raise Problem("not_found", f"no case study with id {stream_id!r}", id=stream_id)
    return check.to_dict()


@bp.get("/audit/approvals")
@describe(responses={200: doc.Items}, csv=True, tag="audit")
@requires(*AUDITORS)
@params.accepts(params.FORMAT, params.AsOf("from", "from this business time (a date: its start)", date_is_start=True,
                                           arg="start"),
                params.AsOf("to", "before this business time (a date: through its end)", arg="end"), params.CSM,
                params.OneOf("role", "only this approver role", APPROVER_ROLES),
                params.Number("limit", "rows per page", default=100, low=1, high=1000),
                params.Text("cursor", "next_cursor of the page before", max_length=400))
def approvals_across_records(fmt, start, end, csm, role, limit: int, cursor):
    """Approval requests and answers in a period across records, oldest first, paginated; CSV too."""
    as_csv = params.wants_csv(fmt)
    if start is not None and end is not None and end <= start:
        raise Problem("invalid_parameter", "to must be later than from", parameter="to")
    filters = {"start": start, "end": end, "csm": csm, "role": role}
    rows, cursor = services().approvals.page(**filters, limit=limit, cursor=cursor)
    items = [row.to_dict() for row in rows]
    next_url = None
    if cursor:
        given = {key: value for key, value in request.args.items()
                 if key in ("from", "to", "csm", "role", "format")}
        next_url = url_for("audit.approvals_across_records", **given, limit=limit, cursor=cursor)
    if as_csv:
        response = params.csv_response(ApprovalRow.CSV_COLUMNS, (ApprovalRow.csv_cells(item) for item in items),
                                       "approvals.csv")
        if next_url:
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return response
    return {"items": items, "next_cursor": cursor, "next": next_url}
