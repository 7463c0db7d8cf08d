"""The weekly review as JSON, Markdown or HTML."""
from __future__ import annotations

from flask import Blueprint, Response, request

from service.access.roles import PROJECTION_READERS
from service.api import params, services
from service.api import responses as doc
from service.api.auth import requires
from service.api.limits import costly
from service.api.openapi import Body, describe
from service.reports.weekly import to_html, to_markdown, weekly_report

bp = Blueprint("reports", __name__)

FORMATS = {"json": "application/json", "md": "text/markdown", "html": "text/html"}


def _format(chosen: str | None) -> str:
    if chosen:
        return chosen
    best = request.accept_mimetypes.best_match(list(FORMATS.values()), default="application/json")
    return next(name for name, mimetype in FORMATS.items() if mimetype == best)


@bp.get("/reports/weekly")
@describe(responses={200: [Body(doc.WeeklyReport), Body({"type": "string"}, "text/markdown"),
                           Body({"type": "string"}, "text/html")]}, errors=("projection_behind", "unknown_position"))
@requires(*PROJECTION_READERS)
@costly
@params.accepts(params.OneOf("format", "json, md or html; without it, the Accept header decides", tuple(FORMATS),
                             arg="chosen"),
                params.AsOf("as_of", "the end of the week to report (default now), as known then"),
                params.MIN_POSITION)
def weekly(chosen, as_of, min_position):
    """The weekly review for the week ending at ``as_of`` (default now; a date means its end): a summary,
    with links to the long lists."""
    fmt = _format(chosen)
    wired = services()
    with wired.projections.view(as_of=as_of, min_position=min_position or None) as view:
        report = weekly_report(view, wired.links, as_of=view.reference)
    if fmt == "md":
        return Response(to_markdown(report), mimetype="text/markdown")
    if fmt == "html":
        return Response(to_html(report), mimetype="text/html")
    return report
