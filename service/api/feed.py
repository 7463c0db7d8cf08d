"""The global feed: every event in an order a follower can never miss (see docs/feed.md)."""
from __future__ import annotations

from flask import Blueprint, request

from service.api import params, services
from service.api.auth import PROJECTION_READERS, requires
from service.api.problems import Problem
from service.domain import EVENT_TYPES
from service.events.feed import NotYetReadable, UnknownPosition

bp = Blueprint("feed", __name__)

MAX_LIMIT = 1000


def _types() -> list[str] | None:
    """``type`` repeated or comma-separated; each must be an event type."""
    types = [t for raw in request.args.getlist("type") for t in raw.split(",") if t]
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise Problem(400, "invalid_parameter", f"type must be event types ({', '.join(EVENT_TYPES)}); "
                      f"unknown: {', '.join(unknown[:5])}"[:500], parameter="type")
    return types or None


@bp.get("/events")
@requires(*PROJECTION_READERS)
def feed():
    """Events after position ``after``, in feed order, with the position to continue from."""
    after = params.bounded_int("after", 0, 0, 9_999_999_999)
    limit = params.bounded_int("limit", 100, 1, MAX_LIMIT)
    types = _types()
    try:
        page = services().feed.read(after=after, limit=limit, types=types)
    except UnknownPosition as error:
        raise Problem(400, "unknown_position", f"{error}: pass 0 or a position this feed handed out",
                      parameter="after") from None
    except NotYetReadable as error:
        raise Problem(400, "position_not_readable", f"{error}; pass a position this feed handed out",
                      parameter="after") from None
    return {"after": after, "count": len(page.events), "events": [e.to_dict() for e in page.events],
            "next_after": page.next_after, "head": page.head.to_dict()}
