"""The global feed: every event in an order a follower can never miss (see docs/feed.md)."""
from __future__ import annotations

from flask import Blueprint

from service.access.roles import PROJECTION_READERS
from service.api import params, services
from service.api import responses as doc
from service.api.auth import requires
from service.api.openapi import describe
from service.api.problems import Problem
from service.events.feed import NotYetReadable, UnknownPosition

bp = Blueprint("feed", __name__)

MAX_LIMIT = 1000


@bp.get("/events")
@describe(responses={200: doc.FeedEventsPage}, errors=("unknown_position", "position_not_readable"))
@requires(*PROJECTION_READERS)
@params.accepts(params.Number("after", "the position to continue from (next_after of the page before; 0 at first)",
                              default=0, low=0, high=9_999_999_999),
                params.Number("limit", "events per page", default=100, low=1, high=MAX_LIMIT),
                params.EventTypes("type", "only events of these types", arg="types"))
def feed(after: int, limit: int, types):
    """Events after position ``after``, in feed order, with the position to continue from."""
    try:
        page = services().feed.read(after=after, limit=limit, types=types)
    except UnknownPosition as error:
        raise Problem("unknown_position", f"{error}: pass 0 or a position this feed handed out",
                      parameter="after") from None
    except NotYetReadable as error:
        raise Problem("position_not_readable", f"{error}; pass a position this feed handed out",
                      parameter="after") from None
    return {"after": after, "count": len(page.events), "events": [e.to_dict() for e in page.events],
            "next_after": page.next_after, "head": page.head.to_dict()}
