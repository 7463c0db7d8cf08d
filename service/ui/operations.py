"""Operations (admin): how far the projections have read, the outbox, and webhook subscriptions."""
from __future__ import annotations

from flask import flash, redirect, url_for

from service.access.roles import ADMINS
from service.api import services
from service.api.problems import Problem
from service.notifications.outbox import DESTINATIONS, STATUSES
from service.ui import web
from service.ui.web import bp, page, render

OUTBOX_PAGE = 50


@bp.get("/operations")
@page(*ADMINS)
def operations():
    """Projection status and lag, the outbox by state (a page of its messages), and the subscriptions."""
    wired = services()
    filters = {"status": web.choice("status", STATUSES) or "dead", "destination": web.choice("destination",
                                                                                             DESTINATIONS)}
    messages, next_cursor = wired.outbox.list(**filters, limit=OUTBOX_PAGE, cursor=web.cursor())
    return render("operations.html", projection_status=wired.runner.status(), depth=wired.outbox.depth(), messages=messages,
                  filters=filters, statuses=STATUSES, destinations=DESTINATIONS,
                  pages=web.page_links("ui.operations", next_cursor, **filters),
                  subscriptions=wired.subscriptions.list(include_removed=False))


@bp.post("/operations/notifications/<int:message_id>/retry")
@page(*ADMINS)
def retry_notification(message_id: int):
    """Queue a dead message again (as POST /notifications/{id}/retry does)."""
    outbox = services().outbox
    found = outbox.get(message_id)
    if found is None:
        raise Problem("not_found", f"no notification {message_id}")
    if not outbox.retry(message_id=message_id):
        raise Problem("not_dead", f"notification {message_id} is {found.status}; only dead ones are retried")
    flash(f"Notification {message_id} is queued again; the dispatcher will send it shortly.")
    return redirect(url_for("ui.operations", status="dead"), 303)


@bp.post("/operations/notifications/<int:message_id>/discard")
@page(*ADMINS)
def discard_notification(message_id: int):
    """Delete a dead message for good (as DELETE /notifications/{id} does)."""
    outbox = services().outbox
    if outbox.discard(message_id) is None:
        found = outbox.get(message_id)
        if found is None:
            raise Problem("not_found", f"no notification {message_id}")
        raise Problem("not_dead", f"notification {message_id} is {found.status}; only dead ones are discarded")
    flash(f"Notification {message_id} is discarded.")
    return redirect(url_for("ui.operations", status="dead"), 303)
