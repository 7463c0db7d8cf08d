"""A record's page (its state, what may happen next, readiness, the timeline, the approval rounds and
the integrity of its chain), and acting on it: every event a form, posted through the API's append path."""
from __future__ import annotations

import uuid
from dataclasses import replace

import orjson
import structlog
from flask import flash, g, redirect, request, url_for

from service.access.roles import AUDITORS, RECORD_READERS, WRITERS
from service.api import services
from service.api.case_studies import checked_stream_id, new_event
from service.api.errors import to_problem
from service.api.problems import Problem
from service.domain import APPROVER_ROLES, STATUS_LABELS, allowed_events, readiness
from service.domain.approvals import approval_rounds
from service.domain.machine import mermaid
from service.events.schemas import parse_event_request
from service.ui import web
from service.ui.forms import FORMS, FormError, data_from
from service.ui.web import bp, page, render

log = structlog.get_logger("casestudies.ui")

TIMELINE_PAGE = 100
REFUSALS = ("invalid_event", "version_conflict", "idempotency_conflict", "transition_not_allowed", "guard_failed",
            "already_exists", "not_found")


def _record_or_404(stream_id: str):
    checked_stream_id(stream_id)
    record = services().store.record(stream_id)
    if record is None:
        raise Problem("not_found", f"no case study with id {stream_id!r}", id=stream_id)
    return record


def _forms_for(record) -> list[dict]:
    """The events allowed in the record's status, each as a form; approval answers offer only the roles
    still pending."""
    forms = []
    for event_type in allowed_events(record.state):
        fields = FORMS[event_type]
        if event_type in ("approval_granted", "changes_requested"):
            pending = tuple(role for role in record.approvers if record.approvals.get(role) == "pending")
            fields = tuple(replace(field, options=pending or APPROVER_ROLES) if field.name == "role" else field
                           for field in fields)
        forms.append({"type": event_type, "fields": fields, "event_id": str(uuid.uuid4())})
    return forms


def _show(record, status: int = 200, refused: dict | None = None):
    stream_id = record.id
    wired = services()
    timeline = rounds = check = None
    if web.may(AUDITORS):
        events = wired.store.load(stream_id)
        rounds = approval_rounds(events)
        first = web.number("from_version", 1, 1, 2**31 - 1)
        timeline = {"events": [event for event in events if event.version >= first][:TIMELINE_PAGE],
                    "newer": (url_for("ui.record", stream_id=stream_id, from_version=first + TIMELINE_PAGE)
                              if len(events) >= first + TIMELINE_PAGE else None),
                    "total": len(events)}
        check = wired.verification.verify(stream_id, stream=events)
    return render("record.html", status, record=record, labels=STATUS_LABELS,
                  readiness=readiness(record, wired.settings.candidate_kpi_improvement_pct),
                  threshold=wired.settings.candidate_kpi_improvement_pct,
                  forms=_forms_for(record) if web.may(WRITERS) else [], refused=refused, timeline=timeline,
                  rounds=rounds, check=check, diagram=mermaid(record.state), allowed=allowed_events(record.state))


@bp.get("/records/<stream_id>")
@page(*RECORD_READERS)
def record(stream_id: str):
    """The record as it is now."""
    return _show(_record_or_404(stream_id))


def _append(stream_id: str, event_type: str, fields, *, expected_version: int | None):
    """Store the form's event through the API's append path; the same event id twice stores it once."""
    try:
        data = data_from(request.form, fields)
    except FormError as error:
        raise Problem("invalid_event", str(error), errors=[{"field": f"data.{error.field}", "message": error.message}])
    body = {"type": event_type, "data": data, "event_id": request.form.get("event_id") or None}
    if expected_version is not None:
        body["expected_version"] = expected_version
    parsed = parse_event_request(orjson.dumps(body))
    return services().store.append(stream_id, [new_event(parsed, str(parsed.event_id))], actor=g.principal.name,
                                   expected_version=parsed.expected_version)


def _refusal(error: Exception, event_type: str) -> dict:
    """A refused event as the form shows it: the reason, what is allowed now, and each field at fault."""
    problem = to_problem(error)
    if problem.code not in REFUSALS:
        raise error
    log.info("write_refused", code=problem.code, status=problem.status, reason=problem.detail, key=g.principal.name)
    hint = {"version_conflict": "Someone changed this record after you opened it: read it again below, then "
                                "send the form again if it still applies.",
            "idempotency_conflict": "This form was already sent with other values; open the record again for "
                                    "a fresh form."}.get(problem.code)
    errors = {item["field"].removeprefix("data."): item["message"] for item in problem.extra.get("errors", [])}
    return {"type": event_type, "code": problem.code, "title": problem.title, "detail": problem.detail,
            "hint": hint, "errors": errors, "status": problem.status, "sent": request.form}


@bp.post("/records/<stream_id>/events")
@page(*WRITERS)
def post_event(stream_id: str):
    """Append the event a form describes; a refusal shows the record again with the reason."""
    record = _record_or_404(stream_id)
    event_type = request.form.get("type")
    if event_type not in FORMS or event_type == "committed":
        raise Problem("invalid_event", "the form names no event that can be added to a record")
    expected = request.form.get("expected_version")
    try:
        result = _append(stream_id, event_type, FORMS[event_type],
                         expected_version=int(expected) if expected and expected.isdigit() else None)
    except Exception as error:  # noqa: BLE001 - a refusal is shown on the page; anything else is re-raised
        refused = _refusal(error, event_type)
        return _show(services().store.record(stream_id) or record, refused["status"], refused)
    stored = result.events[-1]
    flash(f"{'Stored' if result.created else 'Already stored (the form was sent twice)'}: {event_type}, "
          f"version {stored.version}; the record is now {STATUS_LABELS[result.record.state]}.")
    return redirect(url_for("ui.record", stream_id=stream_id), 303)


@bp.route("/records/new", methods=["GET", "POST"])
@page(*WRITERS)
def new_record():
    """A new record from its commitment: the id and the committed event's data."""
    form = {"type": "committed", "fields": FORMS["committed"], "event_id": str(uuid.uuid4())}
    if request.method == "GET":
        return render("new_record.html", form=form, refused=None, values={})
    stream_id = (request.form.get("id") or "").strip()
    try:
        checked_stream_id(stream_id)
        result = _append(stream_id, "committed", FORMS["committed"], expected_version=None)
    except Exception as error:  # noqa: BLE001 - a refusal is shown with the form; anything else is re-raised
        refused = _refusal(error, "committed")
        if "id" in refused["errors"] or refused["code"] == "already_exists":
            refused["errors"].setdefault("id", refused["detail"])
        form["event_id"] = request.form.get("event_id") or form["event_id"]
        return render("new_record.html", refused["status"], form=form, refused=refused, values=request.form)
    flash(f"{'Created' if result.created else 'Already created (the form was sent twice)'}: {stream_id}.")
    return redirect(url_for("ui.record", stream_id=stream_id), 303)
