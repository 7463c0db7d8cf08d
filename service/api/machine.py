"""``GET /machine``: the life cycle as the state machine itself declares it, for people and tools.

The README's table of events is the Markdown this module writes (a test keeps the two equal), and
the OpenAPI document describes each event request from the same table (events/schemas.py).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from service.api import params
from service.api import responses as doc
from service.api.openapi import Body, describe
from service.domain import STATUS_LABELS
from service.domain.machine import NEW, mermaid, table
from service.events.schemas import DATA_SCHEMAS, SYSTEM_SCHEMAS, data_fields

bp = Blueprint("machine", __name__)

FORMATS = ("json", "mermaid", "md")


def description() -> dict[str, Any]:
    """Statuses, and each event with its data and its transitions (from, to, guards); ``by`` says who
    appends it: a client, or the service itself (an erasure's ``personal_data_erased``)."""
    rows = table()
    return {
        "initial": NEW,
        "statuses": [{"status": status, "label": label} for status, label in STATUS_LABELS.items()],
        "events": [{"type": event_type, "data": data_fields(model),
                    "by": "service" if event_type in SYSTEM_SCHEMAS else "client",
                    "transitions": [{key: row[key] for key in ("from", "to", "guards")}
                                    for row in rows if row["event"] == event_type]}
                   for event_type, model in {**DATA_SCHEMAS, **SYSTEM_SCHEMAS}.items()],
        "mermaid": mermaid(),
    }


def events_table() -> str:
    """The events as a Markdown table: where each is allowed, where it leads, its guards and its data."""
    lines = ["| event | allowed in | leads to | guard | data (required; *optional*) |", "|---|---|---|---|---|"]
    for event in description()["events"]:
        for index, move in enumerate(event["transitions"]):
            first = index == 0
            guards = "; ".join(guard["rule"] for guard in move["guards"]) or "–"
            name = f"`{event['type']}`" + (" (by the service)" if event["by"] == "service" else "")
            lines.append(f"| {name if first else ''} | {', '.join(move['from'])} | "
                         f"{move['to'] or '(stays)'} | {guards} | {(event['data'] or '–') if first else ''} |")
    return "\n".join(lines) + "\n"


@bp.get("/machine")
@describe(responses={200: [Body(doc.Machine), Body({"type": "string"}, "text/vnd.mermaid"),
                           Body({"type": "string"}, "text/markdown")]}, tag="operations")
@params.accepts(params.OneOf("format", "json (default), mermaid (the state diagram) or md (the events table)",
                             FORMATS, arg="fmt"))
def machine(fmt):
    """The statuses, events, transitions and guards of the case study life cycle, and its diagram."""
    if fmt == "mermaid":
        return Response(mermaid(), mimetype="text/vnd.mermaid")
    if fmt == "md":
        return Response(events_table(), mimetype="text/markdown")
    return description()
