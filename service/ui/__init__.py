"""The dashboard under /ui/: server-rendered pages on the read models the API answers from, with
htmx, charts and the life-cycle diagram as enhancements (every page reads without JavaScript).

A person signs in once with an API key; the session cookie keeps only the key's id, and every page
looks the key up again. Every form carries a CSRF token (Flask-WTF); the key-authenticated API does
not use cookies and is not checked.

The top of the house, beside the API: may import the API (its parameters, problem mapping and
append path), the capability packages, the event store, the domain and the shared leaves; never the CLI.
"""
from __future__ import annotations

import secrets
from datetime import timedelta

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

from service.config import Settings


class _SessionCookies(SecureCookieSessionInterface):
    """Signed session cookies, ``Secure`` whenever the page was served over HTTPS (directly or, as
    the proxy in deploy/ says, behind it) or the service's public address is HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure
                    or request.headers.get("X-Forwarded-Proto") == "https")


def register(app: Flask, settings: Settings) -> None:
    """Serve the dashboard from ``app``."""
    from service.ui import board, operations, record, review, signin  # noqa: F401  (their pages)
    from service.ui.web import bp, csrf

    app.secret_key = settings.session_secret or secrets.token_urlsafe(32)  # one process: its own
    app.session_interface = _SessionCookies()
    app.config.update(
        SESSION_COOKIE_NAME="casestudies_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=(settings.public_base_url or "").startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        WTF_CSRF_CHECK_DEFAULT=False,  # only the dashboard's forms are checked (web.py)
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as its session
        # Pages send no Referer (Referrer-Policy: no-referrer), which the HTTPS Referer check needs;
        # the token and the SameSite=Lax cookie are the defence.
        WTF_CSRF_SSL_STRICT=False,
    )
    csrf.init_app(app)
    app.register_blueprint(bp)
