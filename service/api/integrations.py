"""Integrations: closed deals from CRM workflow tools (n8n, Zapier, HubSpot, Salesforce)."""
from __future__ import annotations

from flask import Blueprint, g, request

from service.api import params, services
from service.api.auth import WRITERS, requires
from service.events import deals
from service.events.tables import utcnow

bp = Blueprint("integrations", __name__)


@bp.post("/integrations/deals")
@requires(*WRITERS)
def post_deal():
    """Take a closed deal: an accepted commitment creates its case study once; others store nothing."""
    deal = deals.parse_deal(params.json_body("the deal"))
    intake = deals.take(services().store, deal, actor=g.principal.name, now=utcnow())
    body = intake.to_dict()
    headers = {}
    if intake.record is not None:
        body["url"] = services().settings.record_url(intake.stream_id)
        headers["Location"] = f"{request.script_root}/case-studies/{intake.stream_id}"
    return body, (201 if intake.decision == "created" else 200), headers
