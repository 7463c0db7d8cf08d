"""What every dashboard page shares: the blueprint, who is signed in, the role check, rendering,
the query parameters of its filter forms, and refusals as pages a person can act on."""
from __future__ import annotations

from datetime import datetime
from functools import wraps
from typing import Callable

import structlog
from flask import Blueprint, Response, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from service.access.keys import Principal
from service.access.roles import ADMINS, AUDITORS, PROJECTION_READERS, RECORD_READERS, WRITERS
from service.api import params, services
from service.api.errors import to_problem
from service.api.problems import Problem

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static",
               static_url_path="/static")

SESSION_KEY_ID = "key_id"
csrf = CSRFProtect()  # checks the dashboard's forms only (WTF_CSRF_CHECK_DEFAULT is off): see below


@bp.before_request
def _check_csrf() -> None:
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()


@bp.after_request
def _page_headers(response: Response) -> Response:
    """Pages hold what a key was needed for: never cached. A page htmx fetched (after a form's
    redirect, too) tells it the address to show."""
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"
        if request.headers.get("HX-Request") and request.method == "GET":
            response.headers["HX-Push-Url"] = request.full_path.rstrip("?")
    return response


# The pages, in the order the navigation shows them, each with the roles that may open it (API.md's).
NAVIGATION: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ui.board", "Pipeline", PROJECTION_READERS),
    ("ui.stuck", "Stuck and blockers", PROJECTION_READERS),
    ("ui.weekly", "Weekly review", PROJECTION_READERS),
    ("ui.cycle_times", "Cycle times and candidates", PROJECTION_READERS),
    ("ui.records", "Records", RECORD_READERS),
    ("ui.life_cycle", "Life cycle", RECORD_READERS),
    ("ui.operations", "Operations", ADMINS),
)


def signed_in() -> Principal | None:
    """The principal of the key this session signed in with, looked up on every page (a revoked key
    signs the session out at once)."""
    key_id = session.get(SESSION_KEY_ID)
    if not isinstance(key_id, int):
        return None
    principal = services().keys.by_id(key_id)
    if principal is None:
        session.clear()
    return principal


def page(*roles: str) -> Callable:
    """Let a page be shown only to a signed-in person whose key has one of ``roles``; others are sent
    to the sign-in page, or shown why not."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args, **kwargs):
            principal = signed_in()
            if principal is None:  # back here after signing in (a form sent meanwhile is not resent)
                back = request.full_path.rstrip("?") if request.method == "GET" else None
                return redirect(url_for("ui.sign_in", next=back))
            g.principal = principal
            structlog.contextvars.bind_contextvars(key=principal.name)
            if principal.role not in roles:
                raise Problem("forbidden", f"a {principal.role} key may not open this page; it needs one of: "
                              f"{', '.join(roles)}", role=principal.role)
            return view(*args, **kwargs)

        return guarded

    return decorate


def may(roles: tuple[str, ...]) -> bool:
    """Whether the signed-in key has one of ``roles`` (what a page offers)."""
    principal = g.get("principal")
    return principal is not None and principal.role in roles


def render(template: str, code: int = 200, **context) -> tuple[str, int]:
    """A page, with the navigation the signed-in key may follow."""
    principal = g.get("principal")
    navigation = [(endpoint, label) for endpoint, label, roles in NAVIGATION
                  if principal is not None and principal.role in roles]
    return render_template(template, principal=principal, navigation=navigation, may_write=may(WRITERS),
                           may_audit=may(AUDITORS), **context), code


# -- a filter form's fields: an empty field means "no filter" -----------------------------------------
def moment(name: str = "as_of") -> datetime | None:
    return params.as_of(name)


def text(name: str) -> str | None:
    value = params.text(name)
    return (value.strip() or None) if value else None


def choice(name: str, allowed) -> str | None:
    return params.choice(name, list(allowed))


def number(name: str, default: int, low: int, high: int) -> int:
    return params.bounded_int(name, default, low, high)


def cursor() -> str | None:
    return params.text("cursor", max_length=400)


def page_links(endpoint: str, next_cursor: str | None, **given) -> dict:
    """A page's "next" link (None on the last page) and "first" link (None on the first), keeping the
    filters given that are set."""
    kept = {key: value for key, value in given.items() if value}
    return {"next": url_for(endpoint, **kept, cursor=next_cursor) if next_cursor else None,
            "first": url_for(endpoint, **kept) if cursor() else None}


def refusal(error: Exception) -> Response | tuple[str, int]:
    """Any error while serving a page, shown as a page that says what went wrong and what to do."""
    if isinstance(error, CSRFError):
        error = Problem("bad_request", f"{error.description} Open the page again and send the form from there "
                        "(a form is only taken from a page of this sign-in).")
    problem = to_problem(error)
    if problem.status == 401:
        return redirect(url_for("ui.sign_in"))
    body, status = render("error.html", problem.status, problem=problem)
    response = Response(body, status=status, mimetype="text/html")
    response.headers.update(problem.headers)
    return response


bp.register_error_handler(Exception, refusal)


@bp.app_template_filter("when")
def when(value) -> str:
    """A time as the pages show it: to the minute, in UTC."""
    if value is None:
        return "–"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M UTC")


@bp.app_template_filter("days")
def days(value) -> str:
    """A number of days as the pages show it."""
    if value is None:
        return "–"
    return f"{value:.1f}" if isinstance(value, float) else str(value)
