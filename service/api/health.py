"""Liveness and readiness, open to all."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from service import migrations
from service.api import responses as doc
from service.api import services
from service.api.metrics import readings
from service.api.openapi import describe
from service.api.problems import Problem
from service.supervision import helpers_status
from service.times import utcnow

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@describe(responses={200: doc.Health}, tag="operations")
def healthz():
    """The process is up."""
    return {"status": "ok"}


@bp.get("/readyz")
@describe(responses={200: doc.Health}, errors=("not_ready",), tag="operations")
def readyz():
    """The database answers and is migrated to the revision this code expects."""
    head = migrations.head_revision()
    try:
        current = migrations.current_revision(services().engine)
    except SQLAlchemyError:
        raise Problem("not_ready", "the database cannot be reached") from None
    if current != head:
        raise Problem("not_ready", f"the database is at revision {current}, the code needs {head}; "
                      "run `casestudies db upgrade`", database_revision=current, code_revision=head)
    return {"status": "ready", "revision": current}


STALE_AFTER_SECONDS = 120.0  # a running helper that has finished no round for this long is reported


@bp.get("/healthz/details")
@describe(responses={200: doc.HealthDetails}, tag="operations")
def healthz_details():
    """Each helper's liveness and lag, for people and monitoring (a load balancer wants `/readyz`).

    ``supervised`` is false where this server does not run the helpers itself (they run as their
    own processes, as in docker-compose.yml): their lag still tells whether something does."""
    now = utcnow()
    reasons: list[str] = []
    supervised = helpers_status()
    helpers: dict[str, dict] = {name: {"supervised": False} for name in ("projections", "notifications")}
    for name, state in (supervised or {}).items():
        helpers[name] = {"supervised": True, **state}
        progress = state.get("last_progress_at")
        age = (now - datetime.fromisoformat(progress)).total_seconds() if progress else None
        helpers[name]["progress_age_seconds"] = None if age is None else round(age, 3)
        if not state.get("running"):
            reasons.append(f"{name} is not running (exit code {state.get('last_exit_code')}); "
                           f"restart {state.get('restarts')} due at {state.get('next_start_at')}")
        elif age is not None and age > STALE_AFTER_SECONDS:
            reasons.append(f"{name} has finished no round for {age:.0f} s")
    database: dict = {"up": True}
    try:
        depth, status = readings().read()
    except SQLAlchemyError:
        database["up"] = False
        reasons.append("the database cannot be reached")
    else:
        helpers["projections"].update(lag_events=status["lag_events"], lag_seconds=status["lag_seconds"],
                                      failing=status["failing"])
        if status["failing"]:
            reasons.append("projections are failing on an event (see /projections/status)")
        pending = sum(counts.get("pending", 0) for counts in depth.by_status.values())
        dead = sum(counts.get("dead", 0) for counts in depth.by_status.values())
        oldest = depth.oldest_pending_at
        helpers["notifications"].update(
            pending=pending, dead=dead,
            oldest_pending_age_seconds=round(max((now - oldest).total_seconds(), 0.0), 3) if oldest else 0.0)
    return {"status": "degraded" if reasons else "ok", "reasons": reasons, "database": database, "helpers": helpers}
