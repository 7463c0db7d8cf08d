"""Case study records: post events, read the current state, the stream, and the list."""
from __future__ import annotations

import re
import uuid
from datetime import timedelta

from flask import Blueprint, Response, g, request, url_for

from service.access.roles import AUDITORS, RECORD_READERS, WRITERS
from service.api import params, services
from service.api import responses as doc
from service.api.auth import requires
from service.api.openapi import Body, describe
from service.api.people import keep_sealed
from service.api.problems import Problem
from service.api.representation import record_json
from service.domain import STATUS_LABELS
from service.events.event import NewEvent
from service.events.schemas import EVENT_BODY, is_batch, is_valid_stream_id, parse_event_batch, parse_event_request
from service.links import record_path
from service.times import utcnow

bp = Blueprint("case_studies", __name__)

MAX_CLOCK_SKEW = timedelta(minutes=5)
EVENTS_PAGE = 1000


def checked_stream_id(stream_id: str) -> str:
    """``stream_id`` if it has the allowed form; otherwise a 422 naming the id."""
    if not is_valid_stream_id(stream_id):
        raise Problem("invalid_event", "the id must be 1-128 characters of A-Z a-z 0-9 . _ : -",
                      errors=[{"field": "id", "message": "must match [A-Za-z0-9._:-]{1,128}"}])
    return stream_id


def _invalid(field: str, message: str) -> Problem:
    return Problem("invalid_event", f"{field}: {message}", errors=[{"field": field, "message": message}])


IF_MATCH = r'^(W/)?("[0-9]{1,10}"|[0-9]{1,10})$'  # a version, as an entity tag or bare
UUID_TEXT = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def _expected_version(body_value: int | None) -> int | None:
    header = request.headers.get("If-Match")
    if header is None:
        return body_value
    if not re.fullmatch(IF_MATCH, header):
        raise _invalid("If-Match", 'must be a version in quotes, e.g. "2"')
    raw = header.removeprefix("W/").strip('"')
    if body_value is not None and body_value != int(raw):
        raise _invalid("expected_version", "differs from the If-Match header")
    return int(raw)


def _event_id(body_value) -> str | None:
    header = request.headers.get("Idempotency-Key")
    body_id = str(body_value) if body_value is not None else None
    if header is None:
        return body_id
    if not re.fullmatch(UUID_TEXT, header):
        raise _invalid("Idempotency-Key", "must be a UUID (8-4-4-4-12 hexadecimal digits)")
    header_id = str(uuid.UUID(header))
    if body_id is not None and body_id != header_id:
        raise _invalid("event_id", "differs from the Idempotency-Key header")
    return header_id


def _etag(version: int) -> str:
    return f'"{version}"'


@bp.post("/case-studies/<stream_id>/events")
@describe(responses={201: Body(doc.Appended, description="stored"),
                     200: Body(doc.Appended, description="a retry of stored events: the original result")},
          body=EVENT_BODY,
          errors=("invalid_event", "not_found", "already_exists", "version_conflict", "idempotency_conflict",
                  "transition_not_allowed", "guard_failed", "stream_corrupt"),
          links={201: {"record": ("case_studies.get_record", {"stream_id": "$request.path.stream_id"}),
                       "events": ("case_studies.get_events", {"stream_id": "$request.path.stream_id"}),
                       "approvals": ("audit.approvals", {"stream_id": "$request.path.stream_id"}),
                       "verify": ("audit.verify", {"stream_id": "$request.path.stream_id"}),
                       "next_event": ("case_studies.post_event", {"stream_id": "$request.path.stream_id"})}},
          headers=(("If-Match", 'the expected version, e.g. "2" (or expected_version in the body)', IF_MATCH),
                   ("Idempotency-Key", "the event id, a UUID (one event only; a batch carries event_id on each)",
                    UUID_TEXT)))
@requires(*WRITERS)
def post_event(stream_id: str):
    """Append one event, or a JSON array of events all or none, to a case study's stream."""
    checked_stream_id(stream_id)
    body = params.json_body("the event")
    batch = is_batch(body)
    if batch:
        requests = parse_event_batch(body)
        if request.headers.get("Idempotency-Key") is not None:
            raise _invalid("Idempotency-Key", "a batch carries an event_id on each event instead")
        for index, later in enumerate(requests[1:], start=1):
            if later.expected_version is not None:
                raise _invalid(f"{index}.expected_version", "only the first event of a batch carries the "
                               "batch's expected_version (or send If-Match)")
        new_events = [new_event(item, str(item.event_id) if item.event_id else None, field=f"{index}.")
                      for index, item in enumerate(requests)]
        ids = [event.event_id for event in new_events if event.event_id]
        if len(set(ids)) != len(ids):
            raise _invalid("event_id", "each event of a batch needs its own event_id")
    else:
        requests = [parse_event_request(body)]
        new_events = [new_event(requests[0], _event_id(requests[0].event_id))]
    result = services().store.append(stream_id, new_events, actor=g.principal.name,
                                     expected_version=_expected_version(requests[0].expected_version))
    stored = result.events[-1]
    response = {"id": stream_id, "version": stored.version, "position": stored.position,
                "event_id": stored.event_id, "status": result.record.state}
    if batch:
        response["events"] = [{"version": event.version, "position": event.position, "event_id": event.event_id,
                               "type": event.type} for event in result.events]
    headers = {"ETag": _etag(result.record.version), "Location": request.script_root + record_path(stream_id)}
    return response, (201 if result.created else 200), headers


def new_event(event, event_id: str | None, field: str = "") -> NewEvent:
    """The store's NewEvent for a validated request, refusing an occurred_at in the future."""
    if event.occurred_at is not None and event.occurred_at > utcnow() + MAX_CLOCK_SKEW:
        raise _invalid(f"{field}occurred_at", "is in the future; occurred_at is when it happened")
    return NewEvent(type=event.type, data=event.data.model_dump(mode="json", exclude_none=True),
                    event_id=event_id, occurred_at=event.occurred_at, correlation_id=event.correlation_id,
                    causation_id=event.causation_id, on_behalf_of=event.on_behalf_of)


@bp.get("/case-studies/<stream_id>")
@describe(responses={200: doc.Record, 304: None}, errors=("invalid_event", "not_found", "stream_corrupt"),
          headers=(("If-None-Match", "an ETag from before: 304 while the record is at that version"),))
@requires(*RECORD_READERS)
@params.accepts(params.AsOf("as_of", "the state as known then: a replay of what had been recorded by then"))
def get_record(stream_id: str, as_of):
    """The current state of one case study, or its state as known at ``as_of``."""
    checked_stream_id(stream_id)
    store = services().store
    record = store.record_as_of(stream_id, as_of) if as_of else store.record(stream_id)
    if record is None:
        detail = f"no case study with id {stream_id!r}" + (f" had been recorded by {as_of.isoformat()}"
                                                            if as_of else "")
        raise Problem("not_found", detail, id=stream_id)
    etag = _etag(record.version)
    if not as_of and request.if_none_match.contains_weak(str(record.version)):
        return Response(status=304, headers={"ETag": etag})
    body = record_json(record, services().settings.candidate_kpi_improvement_pct)
    if as_of:
        body["as_of"] = as_of.isoformat()
    return body, 200, {"ETag": etag}


@bp.get("/case-studies/<stream_id>/events")
@describe(responses={200: doc.EventsPage}, errors=("invalid_event", "not_found"))
@requires(*AUDITORS)
@params.accepts(params.Number("from_version", "the first version to return", default=1, low=1, high=2**31 - 1),
                params.Number("limit", "events per page", default=EVENTS_PAGE, low=1, high=EVENTS_PAGE),
                params.OneOf("data", "revealed (default): personal fields in clear, or as erased; stored: "
                             "as stored and hashed (sealed), to recompute the chain outside the service",
                             ("revealed", "stored"), arg="form"))
def get_events(stream_id: str, from_version: int, limit: int, form):
    """The stream, oldest first, every field of each event; paged by version."""
    checked_stream_id(stream_id)
    if form == "stored":
        keep_sealed()
    store = services().store
    events = store.load(stream_id, from_version=from_version, limit=limit + 1)
    if not events and (from_version == 1 or store.record(stream_id) is None):
        raise Problem("not_found", f"no case study with id {stream_id!r}", id=stream_id)
    more = len(events) > limit
    events = events[:limit]
    next_url = (url_for("case_studies.get_events", stream_id=stream_id,
                        from_version=events[-1].version + 1, limit=limit, **({"data": form} if form else {}))
                if more else None)
    return {"id": stream_id, "events": [event.to_dict() for event in events], "next": next_url}


@bp.get("/case-studies")
@describe(responses={200: doc.RecordPage}, errors=("projection_behind", "unknown_position"))
@requires(*RECORD_READERS)
@params.accepts(params.OneOf("status", "only records in this status", list(STATUS_LABELS)), params.CSM,
                params.Text("account", "only records of this account (its id or its name)"),
                params.Number("limit", "records per page", default=50, low=1, high=500),
                params.Text("cursor", "next_cursor of the page before", max_length=400),
                params.AsOf("as_of", "the list as known at this time: the records in the pipeline then, each "
                                     "as a replay of what had been recorded by then (default now)"),
                params.MIN_POSITION)
def list_records(status, csm, account, limit: int, cursor, as_of, min_position: int):
    """Records filtered and paginated with an opaque cursor: now from the state table (which every
    append updates, so ``min_position`` is met at once); at a past ``as_of``, from the projections."""
    filters = {"status": status, "csm": csm, "account": account}
    if as_of is not None and as_of < utcnow():
        with services().projections.view(as_of=as_of, min_position=min_position or None) as view:
            page = view.record_ids(**filters, limit=limit, cursor=cursor)
        records, next_cursor = services().store.records_as_of(page.value, as_of), page.next_cursor
        extra = {"as_of": as_of.isoformat(), "projection": page.projection()}
    else:
        page = services().records.page(**filters, limit=limit, cursor=cursor)
        records, next_cursor, extra = page.records, page.next_cursor, {}
    threshold = services().settings.candidate_kpi_improvement_pct
    next_url = None
    if next_cursor:
        given = {name: value for name, value in {**filters, "as_of": request.args.get("as_of")}.items()
                 if value is not None}
        next_url = url_for("case_studies.list_records", **given, limit=limit, cursor=next_cursor)
    return {"items": [record_json(record, threshold) for record in records],
            "next_cursor": next_cursor, "next": next_url, **extra}
