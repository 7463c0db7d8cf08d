"""The case study pipeline service: event-sourced case study records over HTTP."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from service.config import Settings
from service.logs import configure_logging

if TYPE_CHECKING:
    from service.bootstrap import Services


def create_app(settings: Settings | None = None, services: "Services | None" = None) -> Flask:
    """Build the Flask app; nothing connects to the database until a request needs it."""
    # Imported here, not at the top: `casestudies serve` must set PROMETHEUS_MULTIPROC_DIR before
    # anything imports prometheus_client (through the store), and it imports this package first.
    from service.api import register
    from service.api.jsonprovider import OrjsonProvider
    from service.api.params import MAX_BODY_BYTES
    from service.bootstrap import build
    from service.ui import register as register_dashboard

    settings = settings or (services.settings if services else Settings.from_env())
    configure_logging(settings.log_format, settings.log_level)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["casestudies"] = services or build(settings, serving=True)
    register(app)
    register_dashboard(app, settings)
    return app
