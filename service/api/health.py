"""Liveness and readiness, open to all."""
from __future__ import annotations

from flask import Blueprint
from sqlalchemy.exc import SQLAlchemyError

from service import migrations
from service.api import responses as doc
from service.api import services
from service.api.openapi import describe
from service.api.problems import Problem

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
