"""Integrations: closed deals from CRM workflow tools, outgoing webhooks, and the outbox behind them."""
from __future__ import annotations

from typing import Annotated, Literal

from flask import Blueprint, g, request, url_for
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.access.roles import ADMINS, WRITERS
from service.api import params, services
from service.api import responses as doc
from service.api.auth import requires
from service.api.openapi import Body, describe
from service.api.problems import Problem
from service.domain import EVENT_TYPES, SYSTEM_EVENT_TYPES
from service.events.schemas import Url
from service.intake import deals
from service.links import record_path
from service.notifications.outbox import DESTINATIONS, STATUSES
from service.notifications.subscriptions import ALL_TYPES, SubscriptionError
from service.times import utcnow

bp = Blueprint("integrations", __name__)


@bp.post("/integrations/deals")
@describe(responses={201: Body(doc.DealDecision, description="created"),
                     200: Body(doc.DealDecision, description="created before, or not created (see decision)")},
          body=deals.Deal, errors=("invalid_deal", "already_exists"),
          links={201: {"record": ("case_studies.get_record", {"stream_id": "$response.body#/id"}),
                       "events": ("case_studies.post_event", {"stream_id": "$response.body#/id"})}})
@requires(*WRITERS)
def post_deal():
    """Take a closed deal: an accepted commitment creates its case study once; others store nothing."""
    deal = deals.parse_deal(params.json_body("the deal"))
    intake = deals.take(services().store, deal, actor=g.principal.name, now=utcnow())
    body = intake.to_dict()
    headers = {}
    if intake.record is not None:
        body["url"] = services().links.record(intake.stream_id)
        headers["Location"] = request.script_root + record_path(intake.stream_id)
    return body, (201 if intake.decision == "created" else 200), headers


# -- outgoing webhooks ---------------------------------------------------------------------------
SUBSCRIBABLE = (ALL_TYPES, *EVENT_TYPES, *SYSTEM_EVENT_TYPES)  # what a subscription may ask for


class WebhookRequest(BaseModel):
    """A subscription: where to deliver, which event types (or ``*``), and optionally its secret."""

    model_config = ConfigDict(extra="forbid", strict=True)
    url: Url
    types: Annotated[list[Literal[SUBSCRIBABLE]], Field(min_length=1, max_length=20)]  # type: ignore[valid-type]
    secret: Annotated[str, StringConstraints(min_length=16, max_length=200)] | None = None


@bp.get("/webhooks")
@describe(responses={200: doc.WebhookSubscriptions})
@requires(*ADMINS)
@params.accepts(params.OneOf("include_removed", "true: also removed subscriptions", ("true", "false")))
def list_webhooks(include_removed):
    """Webhook subscriptions (never their secrets)."""
    include_removed = include_removed == "true"
    return {"items": [s.to_dict() for s in services().subscriptions.list(include_removed=include_removed)]}


@bp.post("/webhooks")
@describe(responses={201: doc.NewWebhookSubscription}, body=WebhookRequest, errors=("invalid_request",),
          links={201: {"subscription": ("integrations.get_webhook", {"subscription_id": "$response.body#/id"}),
                       "remove": ("integrations.remove_webhook", {"subscription_id": "$response.body#/id"})}})
@requires(*ADMINS)
def add_webhook():
    """Subscribe a URL to event types; the secret is shown in this answer only."""
    wanted = params.json_model(WebhookRequest, "the subscription")
    try:
        subscription, secret = services().subscriptions.add(wanted.url, wanted.types, wanted.secret)
    except SubscriptionError as error:
        raise Problem("invalid_request", str(error), errors=[{"field": "", "message": str(error)}]) from None
    return {**subscription.to_dict(), "secret": secret}, 201, {"Location": url_for("integrations.get_webhook", subscription_id=subscription.id)}


@bp.get("/webhooks/<int:subscription_id>")
@describe(responses={200: doc.WebhookSubscription}, errors=("not_found",))
@requires(*ADMINS)
def get_webhook(subscription_id: int):
    """One subscription."""
    subscription = services().subscriptions.get(subscription_id)
    if subscription is None:
        raise Problem("not_found", f"no webhook subscription {subscription_id}")
    return subscription.to_dict()


@bp.delete("/webhooks/<int:subscription_id>")
@describe(responses={200: doc.WebhookSubscription}, errors=("not_found",))
@requires(*ADMINS)
def remove_webhook(subscription_id: int):
    """Stop delivering to a subscription; its undelivered messages become dead."""
    try:
        return services().subscriptions.remove(subscription_id).to_dict()
    except SubscriptionError as error:
        raise Problem("not_found", str(error)) from None


# -- the outbox ------------------------------------------------------------------------------------
@bp.get("/notifications")
@describe(responses={200: doc.Notifications})
@requires(*ADMINS)
@params.accepts(params.OneOf("status", "only messages in this state", STATUSES),
                params.OneOf("destination", "only messages to Slack, or to webhooks", DESTINATIONS),
                params.Number("limit", "messages per page", default=100, low=1, high=1000),
                params.Text("cursor", "next_cursor of the page before", max_length=100))
def list_notifications(status, destination, limit: int, cursor):
    """Outbox messages oldest first: pending, sent and dead, with attempts and the last error."""
    filters = {"status": status, "destination": destination}
    outbox = services().outbox
    found, next_cursor = outbox.list(**filters, limit=limit, cursor=cursor)
    given = {name: value for name, value in filters.items() if value}
    depth = outbox.depth()
    return {"items": [item.to_dict() for item in found], "next_cursor": next_cursor,
            "next": url_for("integrations.list_notifications", **given, limit=limit, cursor=next_cursor)
            if next_cursor else None,
            "counts": depth.by_status,
            "oldest_pending_at": depth.oldest_pending_at.isoformat() if depth.oldest_pending_at else None}


def _message(message_id: int):
    found = services().outbox.get(message_id)
    if found is None:
        raise Problem("not_found", f"no notification {message_id}")
    return found


@bp.get("/notifications/<int:message_id>")
@describe(responses={200: doc.Notification}, errors=("not_found",))
@requires(*ADMINS)
def get_notification(message_id: int):
    """One outbox message."""
    return _message(message_id).to_dict()


@bp.post("/notifications/<int:message_id>/retry")
@describe(responses={200: doc.Notification}, errors=("not_found", "not_dead"))
@requires(*ADMINS)
def retry_notification(message_id: int):
    """Queue a dead message again, with its attempts reset."""
    found = _message(message_id)
    if not services().outbox.retry(message_id=message_id):
        raise Problem("not_dead", f"notification {message_id} is {found.status}; only dead ones are retried",
                      status_now=found.status)
    return _message(message_id).to_dict()


@bp.delete("/notifications/<int:message_id>")
@describe(responses={200: doc.Notification}, errors=("not_found", "not_dead"))
@requires(*ADMINS)
def discard_notification(message_id: int):
    """Delete a dead message for good (its payload too); answers the message as it was."""
    discarded = services().outbox.discard(message_id)
    if discarded is None:
        found = _message(message_id)  # 404 when there is no such message at all
        raise Problem("not_dead", f"notification {message_id} is {found.status}; only dead ones are discarded",
                      status_now=found.status)
    return discarded.to_dict()
