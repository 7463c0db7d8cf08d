"""HTTP API: thin blueprints, request parsing, problem+json in one error handler, auth by API key,
request logging, the OpenAPI document and /metrics.

The top of the house: may import any part below it (bootstrap, config, the capability packages,
the event store, the domain and the shared leaves), never the CLI.
"""
from __future__ import annotations

from flask import Flask, current_app

from service.bootstrap import Services


def services() -> Services:
    """The wired services of the running app."""
    return current_app.extensions["casestudies"]


def register(app: Flask) -> None:
    """Attach blueprints, error handlers and request logging to ``app``."""
    from service.api import (
        audit,
        case_studies,
        errors,
        feed,
        headers,
        health,
        integrations,
        machine,
        metrics,
        openapi,
        people,
        projections,
        reports,
        requestlog,
    )

    requestlog.register(app)
    headers.register(app)
    people.register(app)  # after headers' in the list, so it runs before them: the CSP hashes the page as sent
    errors.register(app)
    metrics.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(case_studies.bp)
    app.register_blueprint(projections.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(feed.bp)
    app.register_blueprint(reports.bp)
    app.register_blueprint(integrations.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(machine.bp)
    app.register_blueprint(people.bp)
    openapi.register(app)
