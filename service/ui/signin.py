"""Signing in with an API key, and out."""
from __future__ import annotations

from urllib.parse import urlsplit

import structlog
from flask import g, redirect, request, session, url_for

from service.access.roles import PROJECTION_READERS, ROLES
from service.api import services
from service.ui.web import SESSION_KEY_ID, bp, page, render, signed_in

log = structlog.get_logger("casestudies.ui")


def _landing(principal) -> str:
    """Where a person lands: the board, or the record list for a key that may not read projections."""
    return url_for("ui.board" if principal.role in PROJECTION_READERS else "ui.records")


def _safe_next(target: str | None) -> str | None:
    """``target`` when it is a path of the dashboard (never another site)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or "\\" in target:
        return None
    return target


@bp.get("/")
def home():
    principal = signed_in()
    if principal is None:
        return redirect(url_for("ui.sign_in"))
    return redirect(_landing(principal))


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    """The sign-in form: one field, ``key``."""
    wanted = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render("sign_in.html", next=wanted, message=None)
    key = (request.form.get("key") or "").strip()
    principal = services().keys.authenticate(key) if key else None
    if principal is None:
        log.info("sign_in_refused")
        return render("sign_in.html", 401, next=wanted,
                      message="That key is unknown or has been revoked. Ask an admin for a key "
                              "(casestudies keys create).")
    session.clear()
    session[SESSION_KEY_ID] = principal.key_id
    session.permanent = True
    structlog.contextvars.bind_contextvars(key=principal.name)
    log.info("signed_in", role=principal.role)
    return redirect(wanted or _landing(principal))


@bp.post("/sign-out")
@page(*ROLES)
def sign_out():
    log.info("signed_out", key=g.principal.name)
    session.clear()
    return redirect(url_for("ui.sign_in"))
